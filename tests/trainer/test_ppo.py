"""PPO math: GAE against a reference, batch-size rule, update direction, and a tiny learning check."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pytest
import torch

from shared.config import DEEPRACER_HYPERPARAMETER_DEFAULTS, Hyperparameters
from shared.networks import SHALLOW, ActionSpec, PolicyNetwork
from trainer.ppo import (
    EpisodeData,
    PPOSettings,
    compute_gae,
    make_optimizer,
    minibatch_size,
    ppo_update,
)

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SENSOR = "SECTOR_LIDAR"
METRIC_KEYS = {
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
    "learning_rate",
    "num_steps",
    "num_episodes",
    "grad_norm",
}


@dataclass(frozen=True)
class Episode:
    observations: dict[str, np.ndarray]
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    terminated: bool = True
    bootstrap_value: float = 0.0


def _is_episode_data(ep: EpisodeData) -> EpisodeData:  # mypy checks that Episode fits the protocol
    return ep


def test_every_consumer_of_hyperparameter_defaults_uses_the_one_table() -> None:
    """hyperparameters.json without a key means DeepRacer's code default (§3.1) everywhere: the
    trainer's PPO settings, the parsed file, and the file hotlap ships."""
    expected = PPOSettings(learning_rate=0.0003, discount=0.999, num_epochs=10, batch_size=64,
                           entropy_coef=0.01, value_loss="mse")
    table = DEEPRACER_HYPERPARAMETER_DEFAULTS
    assert PPOSettings() == expected
    assert PPOSettings.from_hyperparameters({}) == expected
    assert PPOSettings.from_hyperparameters(table) == expected
    assert PPOSettings.from_hyperparameters(Hyperparameters.parse("{}").model_dump()) == expected  # trainer path
    shipped = resources.files("hotlap.defaults").joinpath("hyperparameters.json").read_text()
    assert PPOSettings.from_hyperparameters(Hyperparameters.parse(shipped).model_dump()) == expected


# ---------------------------------------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------------------------------------


def reference_gae(
    rewards: list[float], values: list[float], terminated: bool, bootstrap: float, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Straight from the definition: A_t = sum_k (gamma*lam)^k delta_{t+k}."""
    n = len(rewards)
    next_values = values[1:] + [0.0 if terminated else bootstrap]
    deltas = [rewards[t] + gamma * next_values[t] - values[t] for t in range(n)]
    advantages = [sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t)) for t in range(n)]
    returns = [a + v for a, v in zip(advantages, values, strict=True)]
    return np.array(advantages), np.array(returns)


@pytest.mark.parametrize(("terminated", "bootstrap"), [(True, 0.0), (True, 123.0), (False, 2.5), (False, -1.0)])
@pytest.mark.parametrize(("gamma", "lam"), [(0.999, 0.95), (0.9, 0.0), (0.99, 1.0)])
def test_gae_matches_reference(terminated: bool, bootstrap: float, gamma: float, lam: float) -> None:
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=17).tolist()
    values = rng.normal(size=17).tolist()
    advantages, returns = compute_gae(
        np.array(rewards, np.float32), np.array(values, np.float32), terminated, bootstrap, gamma, lam
    )
    ref_adv, ref_ret = reference_gae(rewards, values, terminated, bootstrap, gamma, lam)
    assert advantages.dtype == returns.dtype == np.float32 and advantages.shape == (17,)
    np.testing.assert_allclose(advantages, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns, ref_ret, rtol=1e-5, atol=1e-5)


def test_gae_special_cases() -> None:
    rewards, values = np.array([1.0, 2.0, 3.0], np.float32), np.array([0.5, 0.5, 0.5], np.float32)
    # lambda = 1: returns are the discounted Monte-Carlo return (+ discounted bootstrap when truncated)
    _, ret = compute_gae(rewards, values, terminated=True, bootstrap_value=99.0, discount=0.5, gae_lambda=1.0)
    np.testing.assert_allclose(ret, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3])
    _, ret = compute_gae(rewards, values, terminated=False, bootstrap_value=8.0, discount=0.5, gae_lambda=1.0)
    np.testing.assert_allclose(ret, [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 8, 2 + 0.5 * 3 + 0.25 * 8, 3 + 0.5 * 8])
    # lambda = 0: one-step TD errors
    adv, _ = compute_gae(rewards, values, terminated=False, bootstrap_value=8.0, discount=0.5, gae_lambda=0.0)
    np.testing.assert_allclose(adv, [1 + 0.25 - 0.5, 2 + 0.25 - 0.5, 3 + 4.0 - 0.5])
    with pytest.raises(ValueError):
        compute_gae(rewards, values[:2], True, 0.0, 0.9, 0.9)


# ---------------------------------------------------------------------------------------------------------
# Settings and batch size
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "batch", "expected"),
    [(2000, 64, 64), (64, 64, 64), (63, 64, 32), (40, 64, 32), (1, 64, 1), (100, 512, 64), (300, 256, 256)],
)
def test_minibatch_size_uses_largest_power_of_two_below_steps(steps: int, batch: int, expected: int) -> None:
    assert minibatch_size(steps, batch) == expected


def test_settings_from_deepracer_hyperparameters() -> None:
    drfc_defaults = {
        "batch_size": 64,
        "beta_entropy": 0.01,
        "discount_factor": 0.99,
        "e_greedy_value": 0.05,
        "epsilon_steps": 10000,
        "exploration_type": "categorical",
        "loss_type": "huber",
        "lr": 0.0003,
        "num_episodes_between_training": 20,
        "num_epochs": 5,
        "stack_size": 1,
        "term_cond_avg_score": 350.0,
        "term_cond_max_episodes": 1000,
    }
    settings = PPOSettings.from_hyperparameters(drfc_defaults)
    assert settings == PPOSettings(discount=0.99, num_epochs=5, value_loss="huber")
    assert (settings.clip_epsilon, settings.gae_lambda) == (0.2, 0.95)  # fixed in DeepRacer
    strings = {"lr": "0.001", "batch_size": "128", "loss_type": " Mean Squared Error "}
    assert PPOSettings.from_hyperparameters(strings) == PPOSettings(
        learning_rate=0.001, batch_size=128, value_loss="mse"
    )
    # missing keys take the simapp's code defaults (mean squared error when loss_type is absent)
    assert PPOSettings.from_hyperparameters({}) == PPOSettings(value_loss="mse")
    with pytest.raises(ValueError, match="loss_type"):
        PPOSettings.from_hyperparameters({"loss_type": "l1"})
    with pytest.raises(ValueError, match="learning_rate.*discount.*batch_size"):
        PPOSettings(learning_rate=0.0, discount=1.5, batch_size=0)


# ---------------------------------------------------------------------------------------------------------
# Update direction on a fixed batch
# ---------------------------------------------------------------------------------------------------------


def lidar_policy(action_spec: ActionSpec, seed: int = 0, size: int = 8) -> PolicyNetwork:
    torch.manual_seed(seed)
    return PolicyNetwork({SENSOR: (size,)}, SHALLOW, action_spec)


THREE = ActionSpec("discrete", ((-30.0, 1.0), (0.0, 1.0), (30.0, 1.0)))
CONT = ActionSpec("continuous", steering_range=(-30.0, 30.0), speed_range=(0.5, 1.0))


def one_step_episodes(policy: PolicyNetwork, obs: np.ndarray, reward_fn: Any) -> list[Episode]:
    """Act once per observation; every episode is one terminated step."""
    result = policy.act({SENSOR: obs})
    rewards = reward_fn(result.action, obs)
    return [
        Episode(
            {SENSOR: obs[i : i + 1]},
            result.action[i : i + 1],
            result.log_prob[i : i + 1],
            result.value[i : i + 1],
            np.asarray(rewards[i : i + 1], np.float32),
        )
        for i in range(len(obs))
    ]


def surrogate(policy: PolicyNetwork, episodes: list[Episode], advantages: np.ndarray) -> float:
    obs = {SENSOR: torch.from_numpy(np.concatenate([e.observations[SENSOR] for e in episodes]))}
    actions = torch.from_numpy(np.concatenate([e.actions for e in episodes]))
    old = torch.from_numpy(np.concatenate([e.log_probs for e in episodes]))
    with torch.no_grad():
        new, _, _ = policy.evaluate(obs, actions)
        ratio = (new - old).exp()
        adv = torch.from_numpy(advantages)
        return float(-torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean())


def test_update_moves_discrete_policy_toward_the_advantaged_action() -> None:
    policy = lidar_policy(THREE)
    obs = np.random.default_rng(0).uniform(0, 1, (128, 8)).astype(np.float32)
    torch.manual_seed(1)
    episodes = one_step_episodes(policy, obs, lambda actions, _: (actions == 2).astype(np.float32))
    advantages = np.concatenate([e.rewards - e.values for e in episodes])
    advantages = (advantages - advantages.mean()) / advantages.std()
    probs_before = policy({SENSOR: torch.from_numpy(obs)})[0].probs[:, 2].mean().item()
    surrogate_before = surrogate(policy, episodes, advantages)

    settings = PPOSettings(num_epochs=4, batch_size=32, learning_rate=1e-3)
    metrics = ppo_update(policy, make_optimizer(policy, settings), episodes, settings, CPU)

    probs_after = policy({SENSOR: torch.from_numpy(obs)})[0].probs[:, 2].mean().item()
    assert probs_after > probs_before + 0.1
    assert surrogate(policy, episodes, advantages) < surrogate_before - 0.05
    assert metrics.keys() >= METRIC_KEYS and all(math.isfinite(v) for v in metrics.values())
    assert metrics["num_steps"] == 128 and metrics["num_episodes"] == 128 and metrics["approx_kl"] > 0


@pytest.mark.parametrize("max_grad_norm", [None, 0.5])
def test_the_policy_s_update_does_not_depend_on_the_value_network(max_grad_norm: float | None) -> None:
    """DeepRacer trains separate policy and value networks (and clips no gradients): the same
    normalised advantages move the policy the same way however large the value loss is."""
    obs = np.random.default_rng(0).uniform(0, 1, (64, 8)).astype(np.float32)
    after = []
    for scale in (1.0, 1000.0):
        policy = lidar_policy(THREE, seed=3)
        torch.manual_seed(1)
        episodes = [dataclasses.replace(e, values=np.zeros(1, np.float32), rewards=e.rewards * scale)
                    for e in one_step_episodes(policy, obs, lambda a, _: (a == 2).astype(np.float32))]
        settings = PPOSettings(num_epochs=2, batch_size=16, max_grad_norm=max_grad_norm)
        torch.manual_seed(2)
        ppo_update(policy, make_optimizer(policy, settings), episodes, settings, CPU)
        after.append(policy)
    small, large = after
    for a, b in zip(small.policy_tower.parameters(), large.policy_tower.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(small.policy_head.weight, large.policy_head.weight, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(small.value_head.weight, large.value_head.weight)


def test_update_moves_continuous_policy_toward_the_advantaged_action() -> None:
    policy = lidar_policy(CONT)
    obs = np.random.default_rng(0).uniform(0, 1, (128, 8)).astype(np.float32)
    torch.manual_seed(1)
    target = 0.6  # normalised steering that pays best

    def reward(actions: np.ndarray, _: np.ndarray) -> np.ndarray:
        return -np.abs(np.clip(actions[:, 0], -1, 1) - target)

    mean_before = policy({SENSOR: torch.from_numpy(obs)})[0].mean[:, 0].mean().item()
    episodes = one_step_episodes(policy, obs, reward)
    settings = PPOSettings(num_epochs=5, batch_size=32, learning_rate=1e-3)
    optimizer = make_optimizer(policy, settings)
    metrics = ppo_update(policy, optimizer, episodes, settings, CPU)
    mean_after = policy({SENSOR: torch.from_numpy(obs)})[0].mean[:, 0].mean().item()
    assert abs(mean_after - target) < abs(mean_before - target) - 0.05
    assert all(math.isfinite(v) for v in metrics.values())


# ---------------------------------------------------------------------------------------------------------
# Learning on a toy environment
# ---------------------------------------------------------------------------------------------------------


class ToyTrackEnv:
    """A short-horizon toy: the 'lidar' shows which of 3 actions pays 1 this step (others pay 0).

    Episodes last ``horizon`` steps; the last step is time-up (truncated, bootstrapped), so both GAE
    paths are used. A random policy earns 1/3 per step.
    """

    def __init__(self, num_envs: int, horizon: int, seed: int) -> None:
        self.num_envs, self.horizon = num_envs, horizon
        self.rng = np.random.default_rng(seed)

    def observe(self, target: np.ndarray) -> np.ndarray:
        obs = np.zeros((len(target), 8), np.float32)
        obs[np.arange(len(target)), target] = 1.0
        return obs

    def rollout(self, policy: PolicyNetwork) -> tuple[list[Episode], float]:
        targets = self.rng.integers(0, 3, (self.horizon + 1, self.num_envs))
        steps = []
        for t in range(self.horizon):
            obs = self.observe(targets[t])
            result = policy.act({SENSOR: obs})
            steps.append((obs, result, (result.action == targets[t]).astype(np.float32)))
        bootstrap = policy.value({SENSOR: self.observe(targets[self.horizon])})
        episodes = [
            Episode(
                {SENSOR: np.stack([s[0][i] for s in steps])},
                np.array([s[1].action[i] for s in steps]),
                np.array([s[1].log_prob[i] for s in steps]),
                np.array([s[1].value[i] for s in steps]),
                np.array([s[2][i] for s in steps]),
                terminated=False,
                bootstrap_value=float(bootstrap[i]),
            )
            for i in range(self.num_envs)
        ]
        return episodes, float(np.mean([s[2] for s in steps]))


def test_ppo_learns_the_toy_environment() -> None:
    torch.manual_seed(0)
    policy = lidar_policy(THREE)
    env = ToyTrackEnv(num_envs=16, horizon=8, seed=0)
    settings = PPOSettings(discount=0.9, num_epochs=4, batch_size=32, learning_rate=1e-3)
    optimizer = make_optimizer(policy, settings)
    mean_rewards = []
    for _ in range(8):
        episodes, mean_reward = env.rollout(policy)
        mean_rewards.append(mean_reward)
        metrics = ppo_update(policy, optimizer, episodes, settings, CPU)
        assert all(math.isfinite(v) for v in metrics.values())
    final = np.mean([env.rollout(policy)[1] for _ in range(2)])
    assert mean_rewards[0] < 0.5 and final > 0.85, (mean_rewards, final)


# ---------------------------------------------------------------------------------------------------------
# Plumbing of ppo_update
# ---------------------------------------------------------------------------------------------------------


def record(seen: list[int], epoch: int, metrics: dict[str, float]) -> None:
    assert all(math.isfinite(v) for v in metrics.values())
    seen.append(epoch)


def test_small_batches_use_the_reduced_minibatch_and_updates_are_deterministic() -> None:
    obs = np.random.default_rng(3).uniform(0, 1, (40, 8)).astype(np.float32)
    settings = PPOSettings(num_epochs=3, batch_size=64)
    weights = []
    for _ in range(2):
        policy = lidar_policy(THREE, seed=7)
        torch.manual_seed(11)
        episodes = one_step_episodes(policy, obs, lambda a, _: (a == 0).astype(np.float32))
        optimizer = make_optimizer(policy, settings)
        epochs: list[int] = []
        metrics = ppo_update(policy, optimizer, episodes, settings, CPU, on_epoch=functools.partial(record, epochs))
        assert metrics["minibatch_size"] == 32 and epochs == [0, 1, 2]
        # 40 steps -> one full minibatch of 32 per epoch -> 3 optimizer steps
        assert int(optimizer.state[policy.value_head.weight]["step"]) == 3
        weights.append(torch.cat([p.detach().flatten() for p in policy.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_multi_step_episodes_and_metrics() -> None:
    policy = lidar_policy(CONT)
    rng = np.random.default_rng(0)
    episodes = []
    for length, terminated in [(30, True), (50, False), (5, True)]:
        obs = rng.uniform(0, 1, (length, 8)).astype(np.float32)
        result = policy.act({SENSOR: obs})
        episodes.append(
            Episode(
                {SENSOR: obs},
                result.action,
                result.log_prob,
                result.value,
                rng.normal(size=length).astype(np.float32),
                terminated,
                bootstrap_value=0.3,
            )
        )
    settings = PPOSettings(num_epochs=2, value_loss="mse")
    metrics = ppo_update(policy, make_optimizer(policy, settings), episodes, settings, CPU)
    assert metrics.keys() >= METRIC_KEYS and all(math.isfinite(v) for v in metrics.values())
    assert metrics["num_steps"] == 85 and metrics["num_episodes"] == 3 and metrics["learning_rate"] == 3e-4


def test_bad_episodes_are_rejected() -> None:
    policy = lidar_policy(THREE)
    settings = PPOSettings()
    optimizer = make_optimizer(policy, settings)
    obs = np.zeros((3, 8), np.float32)
    good: dict[str, Any] = dict(
        observations={SENSOR: obs},
        actions=np.zeros(3, np.int64),
        log_probs=np.zeros(3, np.float32),
        values=np.zeros(3, np.float32),
        rewards=np.ones(3, np.float32),
    )
    with pytest.raises(ValueError, match="at least one episode"):
        ppo_update(policy, optimizer, [], settings, CPU)
    bad_cases: dict[str, dict[str, Any]] = {
        "rewards has 3": {"values": np.zeros(2, np.float32)},
        "lack": {"observations": {"LIDAR": obs}},
        "NaN": {"rewards": np.array([1.0, np.nan, 1.0], np.float32)},
        "actions shape": {"actions": np.zeros((3, 2), np.float32)},
    }
    for message, change in bad_cases.items():
        with pytest.raises(ValueError, match=message):
            ppo_update(policy, optimizer, [Episode(**(good | change))], settings, CPU)
    _is_episode_data(Episode(**good))


# ---------------------------------------------------------------------------------------------------------
# KL early stop (hyperparameters.json hotlap_target_kl; not DeepRacer's)
# ---------------------------------------------------------------------------------------------------------


def blow_up_update(target_kl: float | None, learning_rate: float = 1.0) -> tuple[dict[str, float], list[int], int]:
    """One update, by default with a learning rate 3,000x DeepRacer's, on 128 one-step episodes
    (8 minibatches x 10 epochs): (metrics, the epochs on_epoch saw, the optimizer's steps)."""
    obs = np.random.default_rng(0).uniform(0, 1, (128, 8)).astype(np.float32)
    policy = lidar_policy(THREE, seed=5)
    torch.manual_seed(1)
    episodes = one_step_episodes(policy, obs, lambda a, _: (a == 2).astype(np.float32))
    settings = PPOSettings(num_epochs=10, batch_size=16, learning_rate=learning_rate, target_kl=target_kl)
    optimizer = make_optimizer(policy, settings)
    epochs: list[int] = []
    torch.manual_seed(2)
    metrics = ppo_update(policy, optimizer, episodes, settings, CPU, on_epoch=functools.partial(record, epochs))
    return metrics, epochs, int(optimizer.state[policy.value_head.weight]["step"])


def test_a_huge_learning_rate_stops_the_update_early_and_says_so() -> None:
    metrics, epochs, steps = blow_up_update(target_kl=0.01)
    assert metrics["stopped_early"] == 1.0
    assert 1 <= metrics["minibatches"] < 80 and steps == metrics["minibatches"]  # no step after the stop
    assert metrics["epochs"] < 10 and epochs == list(range(int(metrics["epochs"])))  # one line per epoch that ran
    # the KL that stopped it is reported: above the limit, never hidden by the means of the steps before it
    assert metrics["approx_kl_max"] > 1.5 * 0.01 and metrics["approx_kl_max"] >= metrics["approx_kl"]
    assert all(math.isfinite(v) for v in metrics.values())


def test_with_target_kl_off_every_epoch_runs_as_deepracer_does() -> None:
    metrics, epochs, steps = blow_up_update(target_kl=None)
    assert metrics["stopped_early"] == 0.0 and metrics["epochs"] == 10 and epochs == list(range(10))
    assert metrics["minibatches"] == 80 and steps == 80
    assert metrics["approx_kl_max"] > 1.5 * 0.01  # the update the safeguard stops does leave the trust region


def test_the_kl_stop_never_fires_below_its_limit_and_always_takes_a_first_step() -> None:
    quiet, _, _ = blow_up_update(target_kl=0.02, learning_rate=3e-5)  # a gentle update stays inside
    assert quiet["approx_kl_max"] < 1.5 * 0.02
    assert quiet["stopped_early"] == 0.0 and quiet["minibatches"] == 80
    obs = np.random.default_rng(0).uniform(0, 1, (32, 8)).astype(np.float32)
    policy = lidar_policy(THREE, seed=5)
    episodes = one_step_episodes(policy, obs, lambda a, _: (a == 2).astype(np.float32))
    # stale behaviour numbers (async schedule): the KL is above the limit before any step
    stale = [dataclasses.replace(e, log_probs=e.log_probs - 1.0) for e in episodes]
    settings = PPOSettings(num_epochs=3, batch_size=16, target_kl=0.01)
    metrics = ppo_update(policy, make_optimizer(policy, settings), stale, settings, CPU)
    assert metrics["minibatches"] == 1 and metrics["epochs"] == 1 and metrics["stopped_early"] == 1.0


def test_target_kl_comes_from_hyperparameters_and_is_validated() -> None:
    assert PPOSettings.from_hyperparameters({}).target_kl == 0.05  # hotlap's default: the safeguard is on
    assert PPOSettings.from_hyperparameters({"hotlap_target_kl": None}).target_kl is None  # DeepRacer-exact
    assert PPOSettings.from_hyperparameters(Hyperparameters.parse('{"hotlap_target_kl": 0.03}').model_dump()
                                            ).target_kl == 0.03
    with pytest.raises(ValueError, match="target_kl must be > 0"):
        PPOSettings(target_kl=0.0)


def test_kl_summary_names_the_epochs_and_the_stop() -> None:
    from trainer.ppo import kl_summary

    settings = PPOSettings(target_kl=0.02)
    stopped = {"approx_kl": 0.01234, "approx_kl_max": 0.0456, "epochs": 4.0, "stopped_early": 1.0}
    assert kl_summary(stopped, settings) == "kl mean 0.0123 max 0.0456, epochs 4/10 (stopped early at kl > 0.03)"
    assert kl_summary({**stopped, "epochs": 10.0, "stopped_early": 0.0}, settings) == \
        "kl mean 0.0123 max 0.0456, epochs 10/10"
