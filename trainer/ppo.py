"""Clipped PPO, the way DeepRacer trains: GAE per episode, then epochs of shuffled minibatches.

Readable top to bottom in the spirit of CleanRL's ``ppo.py``; the Redis/S3 plumbing lives elsewhere.
What comes in is a list of finished episodes (or truncated chunks) produced by the workers with the
behaviour policy; what goes out is an updated policy and a dict of metrics.

DeepRacer facts this follows (simapp ``sagemaker_graph_manager.py``, rl_coach ClippedPPO):
clip epsilon 0.2, GAE lambda 0.95, Adam with eps 1e-5, advantages normalised over the whole batch,
the minibatch size cut to the largest power of two <= the number of steps when there are fewer steps
than ``batch_size``, and only full minibatches per epoch (the remainder changes with every shuffle).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from shared.config import DEEPRACER_HYPERPARAMETER_DEFAULTS as HP_DEFAULTS
from shared.config import HOTLAP_EXTENSION_DEFAULTS, KL_STOP_FACTOR
from shared.networks import PolicyNetwork

_LOSSES: dict[str, Literal["huber", "mse"]] = {"huber": "huber", "mean squared error": "mse"}


class EpisodeData(Protocol):
    """What one received experience message exposes (one finished episode, or a chunk of one)."""

    @property
    def observations(self) -> Mapping[str, np.ndarray]:
        """(T, ...) per sensor."""

    @property
    def actions(self) -> np.ndarray:
        """(T,) int64 action indices, or (T, 2) float32 normalised-space samples as returned by act()."""

    @property
    def log_probs(self) -> np.ndarray:
        """(T,) float32 behaviour-policy log-probabilities of ``actions``."""

    @property
    def values(self) -> np.ndarray:
        """(T,) float32 behaviour-policy state values."""

    @property
    def rewards(self) -> np.ndarray:
        """(T,) float32 rewards."""

    @property
    def terminated(self) -> bool:
        """True when the episode really ended (off track, lap complete, ...): nothing to bootstrap."""

    @property
    def bootstrap_value(self) -> float:
        """Value of the state after the last step, used when not ``terminated`` (time up / chunk end)."""


@dataclass(frozen=True)
class PPOSettings:
    """PPO hyperparameters. Defaults: DeepRacer's code defaults from the one table
    (``shared.config.DEEPRACER_HYPERPARAMETER_DEFAULTS``, deepracer-formats.md §3.1) plus its fixed
    PPO settings (clip 0.2, GAE lambda 0.95)."""

    learning_rate: float = HP_DEFAULTS["lr"]
    discount: float = HP_DEFAULTS["discount_factor"]
    gae_lambda: float = 0.95
    clip_epsilon: float = 0.2
    num_epochs: int = HP_DEFAULTS["num_epochs"]
    batch_size: int = HP_DEFAULTS["batch_size"]
    entropy_coef: float = HP_DEFAULTS["beta_entropy"]
    value_loss: Literal["huber", "mse"] = _LOSSES[HP_DEFAULTS["loss_type"]]
    value_coef: float = 0.5
    # DeepRacer's clipped PPO does not clip gradients (rl_coach ClippedPPONetworkParameters
    # clip_gradients = None). When set, the norm is clipped per network (policy, value), so a large
    # value-loss gradient never shrinks the policy's step: the two networks train independently.
    max_grad_norm: float | None = None
    normalize_advantages: bool = True
    # hotlap's safeguard, not DeepRacer's (hyperparameters.json ``hotlap_target_kl``; None: off, DeepRacer's
    # exact algorithm): the update stops taking minibatch steps once the approximate KL between the
    # behaviour policy and the policy being trained exceeds KL_STOP_FACTOR x target_kl.
    target_kl: float | None = HOTLAP_EXTENSION_DEFAULTS["hotlap_target_kl"]

    def __post_init__(self) -> None:
        checks = [
            (self.learning_rate > 0 and math.isfinite(self.learning_rate),
             f"learning_rate must be > 0, got {self.learning_rate}"),
            (0.0 <= self.discount <= 1.0, f"discount must be in [0, 1], got {self.discount}"),
            (0.0 <= self.gae_lambda <= 1.0, f"gae_lambda must be in [0, 1], got {self.gae_lambda}"),
            (self.clip_epsilon > 0, f"clip_epsilon must be > 0, got {self.clip_epsilon}"),
            (self.num_epochs >= 1, f"num_epochs must be >= 1, got {self.num_epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.entropy_coef >= 0, f"entropy_coef must be >= 0, got {self.entropy_coef}"),
            (self.value_loss in ("huber", "mse"), f"value_loss must be 'huber' or 'mse', got {self.value_loss!r}"),
            (self.value_coef >= 0, f"value_coef must be >= 0, got {self.value_coef}"),
            (self.max_grad_norm is None or self.max_grad_norm > 0,
             f"max_grad_norm must be > 0, got {self.max_grad_norm}"),
            (self.target_kl is None or (self.target_kl > 0 and math.isfinite(self.target_kl)),
             f"target_kl must be > 0 or None (off), got {self.target_kl}"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ValueError("invalid PPO settings: " + "; ".join(problems))

    @classmethod
    def from_hyperparameters(cls, hp: Mapping[str, Any]) -> PPOSettings:
        """From DeepRacer's ``hyperparameters.json`` keys; unrelated keys are ignored.

        A missing key takes DeepRacer's code default from the one table
        (``shared.config.DEEPRACER_HYPERPARAMETER_DEFAULTS``): for ``loss_type`` that is
        "mean squared error", not the "huber" of DRfC's template file. hotlap's own keys
        (``hotlap_target_kl``) default from ``shared.config.HOTLAP_EXTENSION_DEFAULTS``.
        """
        def get(key: str) -> Any:
            return hp.get(key, HP_DEFAULTS[key])

        target_kl = hp.get("hotlap_target_kl", HOTLAP_EXTENSION_DEFAULTS["hotlap_target_kl"])

        loss_type = str(get("loss_type")).strip().lower()
        if loss_type not in _LOSSES:
            raise ValueError(f"loss_type must be 'huber' or 'mean squared error', got {hp['loss_type']!r}")
        return cls(
            learning_rate=float(get("lr")),
            discount=float(get("discount_factor")),
            num_epochs=int(get("num_epochs")),
            batch_size=int(get("batch_size")),
            entropy_coef=float(get("beta_entropy")),
            value_loss=_LOSSES[loss_type],
            target_kl=None if target_kl is None else float(target_kl),
        )


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    terminated: bool,
    bootstrap_value: float,
    discount: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation for one episode. Returns (advantages, returns), float32 (T,)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if rewards.shape != values.shape or rewards.ndim != 1:
        raise ValueError(f"rewards {rewards.shape} and values {values.shape} must both be (T,)")
    advantages = np.zeros_like(rewards)
    # bootstrap value if not done: the step after the last one is a real state only when truncated
    next_value = 0.0 if terminated else float(bootstrap_value)
    last_gae_lam = 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + discount * next_value - values[t]
        advantages[t] = last_gae_lam = delta + discount * gae_lambda * last_gae_lam
        next_value = values[t]
    returns = advantages + values
    return advantages.astype(np.float32), returns.astype(np.float32)


def normalise_advantages(advantages: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole batch, as rl_coach's ClippedPPO standardises them."""
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)


def minibatch_size(num_steps: int, batch_size: int) -> int:
    """DeepRacer's rule: with fewer steps than ``batch_size``, use the largest power of 2 <= steps."""
    if num_steps < 1:
        raise ValueError("no steps to train on")
    if num_steps >= batch_size:
        return batch_size
    return 1 << (num_steps.bit_length() - 1)


def make_optimizer(policy: torch.nn.Module, settings: PPOSettings) -> torch.optim.Optimizer:
    """Adam with eps 1e-5 and beta2 0.999, as DeepRacer configures it.

    Create it after moving the policy to its device: the fused kernel (one pass per tensor, ~4x
    faster than the default per-op loop on CPU) is used when every parameter is on CPU or CUDA.
    """
    params = list(policy.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=settings.learning_rate, betas=(0.9, 0.999), eps=1e-5, fused=fused)


def explained_variance(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """1 - Var[y_true - y_pred] / Var[y_true]; 0.0 for constant y_true (not NaN: keeps metrics JSON-safe)."""
    var_y = float(np.var(y_true))
    return 0.0 if var_y == 0 else 1.0 - float(np.var(y_true - y_pred)) / var_y


def _sensors(policy: PolicyNetwork) -> list[str]:
    return [s for s in (policy.camera_sensor, policy.lidar_sensor) if s is not None]


def _flat(arrays: Sequence[np.ndarray], dtype: Any, device: torch.device) -> torch.Tensor:
    """Concatenate per-episode arrays along time into one tensor on ``device``."""
    array = np.concatenate([np.asarray(a, dtype) for a in arrays])
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def _check_episode(i: int, ep: EpisodeData, policy: PolicyNetwork) -> int:
    steps = len(ep.rewards)
    if steps == 0:
        raise ValueError(f"episode {i} has no steps")
    missing = [s for s in _sensors(policy) if s not in ep.observations]
    if missing:
        raise ValueError(f"episode {i}: observations lack {missing} (has {sorted(ep.observations)})")
    arrays = {"actions": ep.actions, "log_probs": ep.log_probs, "values": ep.values, "rewards": ep.rewards}
    arrays |= {f"observations[{k!r}]": v for k, v in ep.observations.items()}
    for name, array in arrays.items():
        if len(array) != steps:
            raise ValueError(f"episode {i}: {name} has {len(array)} steps, rewards has {steps}")
    for name in ("log_probs", "values", "rewards"):
        if not np.isfinite(arrays[name]).all():
            raise ValueError(f"episode {i}: {name} contains NaN or inf")
    if not ep.terminated and not math.isfinite(ep.bootstrap_value):
        raise ValueError(f"episode {i}: bootstrap_value is {ep.bootstrap_value}")
    expected_shape = (steps,) if policy.action_spec.kind == "discrete" else (steps, 2)
    if np.shape(ep.actions) != expected_shape:
        raise ValueError(f"episode {i}: actions shape {np.shape(ep.actions)}, expected {expected_shape}")
    return steps


def ppo_update(
    policy: PolicyNetwork,
    optimizer: torch.optim.Optimizer,
    episodes: Sequence[EpisodeData],
    settings: PPOSettings,
    device: torch.device,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """One PPO iteration on a batch of episodes. ``policy`` must already live on ``device``.

    ``on_epoch(epoch, metrics)``, if given, is called after every epoch that took at least one
    minibatch step, with that epoch's means (for DeepRacer's per-epoch "Policy training>" log line).

    With ``settings.target_kl`` set (hotlap's default), the update stops early — no more minibatch
    steps in this epoch or the next ones — when a minibatch's approximate KL between the behaviour
    policy and the policy being trained exceeds ``KL_STOP_FACTOR`` (1.5) x ``target_kl``, checked
    before that minibatch's step (Stable-Baselines3's ``target_kl``; Spinning Up's PPO). The first
    minibatch step always happens, so even stale (async) experience moves the policy. With
    ``target_kl`` None every epoch runs, as DeepRacer's clipped PPO does.

    Returns means over the minibatch steps taken, plus ``approx_kl_max`` (the largest epoch-mean
    KL, or the KL of the minibatch that stopped the update if larger), ``epochs`` (epochs that took a
    step), ``stopped_early`` (1.0 or 0.0) and ``minibatches`` (optimizer steps taken).
    Raises ValueError for malformed episodes, FloatingPointError for a non-finite loss.
    """
    if not episodes:
        raise ValueError("ppo_update needs at least one episode")
    num_steps = sum(_check_episode(i, ep, policy) for i, ep in enumerate(episodes))

    # ALGO LOGIC: advantages and returns, per episode (GAE)
    advantages, returns = [], []
    for ep in episodes:
        adv, ret = compute_gae(
            ep.rewards, ep.values, ep.terminated, ep.bootstrap_value, settings.discount, settings.gae_lambda
        )
        advantages.append(adv)
        returns.append(ret)

    # flatten the batch (and move it to the device once; camera frames stay uint8)
    b_obs = {k: _flat([ep.observations[k] for ep in episodes], None, device) for k in _sensors(policy)}
    action_dtype = np.int64 if policy.action_spec.kind == "discrete" else np.float32
    b_actions = _flat([ep.actions for ep in episodes], action_dtype, device)
    b_logprobs = _flat([ep.log_probs for ep in episodes], np.float32, device)
    b_values_np = np.concatenate([np.asarray(ep.values, np.float32) for ep in episodes])
    b_returns_np = np.concatenate(returns)
    b_advantages_np = np.concatenate(advantages)
    if settings.normalize_advantages:
        b_advantages_np = normalise_advantages(b_advantages_np)
    b_advantages = _flat([b_advantages_np], np.float32, device)
    b_returns = _flat([b_returns_np], np.float32, device)

    # Optimizing the policy and value network
    mb_size = minibatch_size(num_steps, settings.batch_size)
    num_minibatches = num_steps // mb_size  # full minibatches only; the shuffle decides who sits out
    param_groups = _gradient_groups(policy)
    kl_limit = math.inf if settings.target_kl is None else KL_STOP_FACTOR * settings.target_kl
    totals: dict[str, float] = dict.fromkeys(_LOSS_KEYS, 0.0)
    steps_taken, epochs_run, kl_max, stopped = 0, 0, 0.0, False
    for epoch in range(settings.num_epochs):
        b_inds = torch.randperm(num_steps).to(device)
        epoch_sums = dict.fromkeys(_LOSS_KEYS, 0.0)
        epoch_steps = 0
        for start in range(0, num_minibatches * mb_size, mb_size):
            mb_inds = b_inds[start : start + mb_size]
            mb_obs = {k: v[mb_inds] for k, v in b_obs.items()}
            newlogprob, entropy, newvalue = policy.evaluate(mb_obs, b_actions[mb_inds])
            logratio = newlogprob - b_logprobs[mb_inds]
            ratio = logratio.exp()

            with torch.no_grad():
                # http://joschu.net/blog/kl-approx.html
                approx_kl = ((ratio - 1) - logratio).mean()
                clip_fraction = ((ratio - 1.0).abs() > settings.clip_epsilon).float().mean()
            if steps_taken > 0 and approx_kl.item() > kl_limit:
                # the policy left the trust region: no more steps this iteration; the KL that
                # stopped it is the largest this update reached, so it is the one reported
                stopped, kl_max = True, max(kl_max, approx_kl.item())
                break

            pg_loss, v_loss, entropy_loss, loss, clipped_ratio = _losses(
                settings, ratio, entropy, newvalue, b_advantages[mb_inds], b_returns[mb_inds], epoch)

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = _gradient_norm(param_groups, settings.max_grad_norm)
            optimizer.step()
            steps_taken += 1
            epoch_steps += 1

            for key, value in zip(
                _LOSS_KEYS,
                (pg_loss, v_loss, entropy_loss, approx_kl, clip_fraction, grad_norm, loss, ratio.mean(),
                 clipped_ratio.mean()),
                strict=True,
            ):
                epoch_sums[key] += float(value.item())

        if epoch_steps:
            epochs_run += 1
            epoch_means = {k: v / epoch_steps for k, v in epoch_sums.items()}
            kl_max = max(kl_max, epoch_means["approx_kl"])
            for k, v in epoch_sums.items():
                totals[k] += v
            if on_epoch is not None:
                on_epoch(epoch, epoch_means | {"learning_rate": optimizer.param_groups[0]["lr"]})
        if stopped:
            break

    # metrics for logging
    metrics = {k: v / steps_taken for k, v in totals.items()}
    metrics["approx_kl_max"] = kl_max
    metrics["epochs"] = float(epochs_run)
    metrics["stopped_early"] = float(stopped)
    metrics["minibatches"] = float(steps_taken)
    metrics["explained_variance"] = explained_variance(b_values_np, b_returns_np)
    metrics["learning_rate"] = float(optimizer.param_groups[0]["lr"])
    metrics["num_steps"] = float(num_steps)
    metrics["num_episodes"] = float(len(episodes))
    metrics["minibatch_size"] = float(mb_size)
    return metrics


def _losses(settings: PPOSettings, ratio: torch.Tensor, entropy: torch.Tensor, newvalue: torch.Tensor,
            advantages: torch.Tensor, returns: torch.Tensor, epoch: int) -> tuple[torch.Tensor, ...]:
    """One minibatch's (policy loss, value loss, entropy, total loss, clipped ratio), each (B,) input.
    Raises FloatingPointError for a non-finite total loss (the caller then takes no step)."""
    # Policy loss (clipped surrogate)
    pg_loss1 = -advantages * ratio
    clipped_ratio = torch.clamp(ratio, 1 - settings.clip_epsilon, 1 + settings.clip_epsilon)
    pg_loss2 = -advantages * clipped_ratio
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

    # Value loss
    value_loss_fn = F.huber_loss if settings.value_loss == "huber" else F.mse_loss
    v_loss = value_loss_fn(newvalue, returns)

    entropy_loss = entropy.mean()
    loss = pg_loss - settings.entropy_coef * entropy_loss + settings.value_coef * v_loss
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"non-finite PPO loss in epoch {epoch} (policy {pg_loss.item()}, value {v_loss.item()}, "
            f"entropy {entropy_loss.item()}); the optimizer step was skipped"
        )
    return pg_loss, v_loss, entropy_loss, loss, clipped_ratio


def kl_summary(metrics: Mapping[str, float], settings: PPOSettings) -> str:
    """The update's KL for a log line: ``kl mean 0.0123 max 0.0310, epochs 4/10 (stopped early at
    kl > 0.03)``, from ppo_update's metrics (nats)."""
    text = (f"kl mean {metrics.get('approx_kl', 0.0):.4f} max {metrics.get('approx_kl_max', 0.0):.4f}, "
            f"epochs {metrics.get('epochs', 0.0):.0f}/{settings.num_epochs}")
    if metrics.get("stopped_early") and settings.target_kl is not None:
        text += f" (stopped early at kl > {KL_STOP_FACTOR * settings.target_kl:.4g})"
    return text


def _gradient_groups(policy: PolicyNetwork) -> list[list[torch.nn.Parameter]]:
    """The trainable parameters per network: policy (tower, head, log-std) and value (tower, head);
    one group when the trunk is shared."""
    value_ids = set()
    if policy.value_tower is not None:
        value_ids = {id(p) for m in (policy.value_tower, policy.value_head) for p in m.parameters()}
    params = [p for p in policy.parameters() if p.requires_grad]
    groups = [[p for p in params if id(p) not in value_ids], [p for p in params if id(p) in value_ids]]
    return [g for g in groups if g]


def _gradient_norm(groups: list[list[torch.nn.Parameter]], max_norm: float | None) -> torch.Tensor:
    """Total gradient norm (for the log), after clipping each group to ``max_norm`` if given."""
    norms = [torch.nn.utils.clip_grad_norm_(g, max_norm if max_norm is not None else math.inf) for g in groups]
    return torch.stack(norms).square().sum().sqrt()


# Per-minibatch quantities averaged per epoch and per update; the last three are rl_coach's
# "Loss", "Likelihood Ratio" and "Clipped Likelihood Ratio" signals (deepracer-formats.md §5.4).
_LOSS_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm", "loss",
              "likelihood_ratio", "clipped_likelihood_ratio")
