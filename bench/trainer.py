"""The trainer's PPO update against its limits: a bare PyTorch loop and the machine's matmul FLOP/s.

    .venv/bin/python bench/trainer.py                          # SHALLOW, STANDARD, DEEP; JSON to bench/results/
    .venv/bin/python bench/trainer.py --network DEEP_CONVOLUTIONAL_NETWORK_SHALLOW --steps 512
    .venv/bin/python bench/trainer.py --options                # + threads, channels_last, torch.compile variants
    .venv/bin/python bench/trainer.py --act                    # + act() at B=1, 16, 64 (ms per call)
    .venv/bin/python bench/trainer.py --trunk both             # + hotlap_shared_trunk beside DeepRacer's two networks
    .venv/bin/python bench/trainer.py --device cuda            # bench/gpu.sh runs this

Per network (DeepRacer's separate policy and value networks, camera frames 120x160 uint8, 10 discrete
actions), in one run, each timed as the best of ``--repeats`` interleaved tries (the machine may be shared):

- trainer: ``trainer.ppo.ppo_update`` on ``--steps`` steps in episodes of 100, ``--epochs`` epochs of
  minibatches of ``--batch-size`` (hotlap_target_kl off, so every epoch runs);
- bare: the same network on the same tensors, already on the device: shuffled minibatches, the
  clipped-surrogate + value + entropy loss, plain ``torch.optim.Adam``; no GAE, checks or metrics;
- the limit: dense fp32 matmul FLOP/s of this machine (``--matmul-size`` square ``torch.mm``; a window
  before every try, the best one counts), and the network's training FLOPs per sample (forward +
  backward, counted by ``torch.utils.flop_counter``).

Printed and written (``--json``, default bench/results/trainer.json): samples/s of both, the
trainer's overhead over the bare loop (%), and the fraction of the matmul limit each reaches.
Absolute numbers depend on the machine and its load (both recorded); the claims are the ratios
measured side by side.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import machine, machine_line, print_table, write_result  # noqa: E402
from shared.networks import DEEP, DEEP_CONV, SHALLOW, ActionSpec, PolicyNetwork, observation_spec_for  # noqa: E402
from trainer.ppo import PPOSettings, compute_gae, make_optimizer, normalise_advantages, ppo_update  # noqa: E402

ACTIONS = ActionSpec("discrete", tuple((float(s), v) for s in (-30, -15, 0, 15, 30) for v in (0.5, 1.0)))
NETWORK_NAMES = {SHALLOW: "SHALLOW", DEEP_CONV: "STANDARD", DEEP: "DEEP"}
RESULT = Path(__file__).resolve().parent / "results" / "trainer.json"


@dataclass(frozen=True)
class Episode:
    observations: dict[str, np.ndarray]
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    terminated: bool
    bootstrap_value: float


def make_episodes(policy: PolicyNetwork, steps: int, length: int, reward_scale: float = 1.0,
                  all_terminated: bool = False) -> list[Episode]:
    """Random frames and rewards in [0, reward_scale); behaviour numbers from the policy itself, so
    ratios start at 1. Every other episode is truncated (bootstrap 0.5) unless ``all_terminated``."""
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(0, steps, length):
        n = min(length, steps - i)
        obs = {k: rng.integers(0, 256, (n, *s), dtype=np.uint8) for k, s in policy.observation_spec.items()}
        result = policy.act(obs)
        rewards = (reward_scale * rng.uniform(0, 1, n)).astype(np.float32)
        terminated = all_terminated or i % 2 == 0
        episodes.append(Episode(obs, result.action, result.log_prob, result.value, rewards, terminated,
                                0.0 if all_terminated else 0.5))
    return episodes


@dataclass
class Batch:
    """The flattened batch the bare loop trains on, already on the device."""

    obs: dict[str, torch.Tensor]
    actions: torch.Tensor
    log_probs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    @classmethod
    def of(cls, episodes: list[Episode], settings: PPOSettings, device: torch.device) -> Batch:
        gae = [compute_gae(e.rewards, e.values, e.terminated, e.bootstrap_value, settings.discount,
                           settings.gae_lambda) for e in episodes]
        advantages = normalise_advantages(np.concatenate([a for a, _ in gae]))

        def cat(arrays: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.concatenate(arrays)).to(device)

        return cls({k: cat([e.observations[k] for e in episodes]) for k in episodes[0].observations},
                   cat([e.actions for e in episodes]), cat([e.log_probs for e in episodes]),
                   torch.from_numpy(advantages).to(device), cat([r for _, r in gae]))


def ppo_loss(policy: PolicyNetwork, batch: Batch, idx: torch.Tensor, settings: PPOSettings) -> torch.Tensor:
    """The clipped-surrogate + value + entropy loss of one minibatch, written out plainly."""
    newlogprob, entropy, value = policy.evaluate({k: v[idx] for k, v in batch.obs.items()}, batch.actions[idx])
    ratio = (newlogprob - batch.log_probs[idx]).exp()
    adv = batch.advantages[idx]
    clipped = ratio.clamp(1 - settings.clip_epsilon, 1 + settings.clip_epsilon)
    pg_loss = torch.max(-adv * ratio, -adv * clipped).mean()
    v_loss = F.mse_loss(value, batch.returns[idx])
    return pg_loss - settings.entropy_coef * entropy.mean() + settings.value_coef * v_loss


def bare_loop(policy: PolicyNetwork, batch: Batch, settings: PPOSettings) -> None:
    """The same work as ppo_update's epochs, with no plumbing: the bound the trainer is held to."""
    optimizer = torch.optim.Adam(policy.parameters(), lr=settings.learning_rate, eps=1e-5)
    steps = len(batch.actions)
    for _ in range(settings.num_epochs):
        order = torch.randperm(steps, device=batch.actions.device)
        for start in range(0, steps - settings.batch_size + 1, settings.batch_size):
            loss = ppo_loss(policy, batch, order[start : start + settings.batch_size], settings)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(work: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


def matmul_flops(device: torch.device, n: int, seconds: float) -> float:
    """Dense fp32 matmul FLOP/s: best of 5 windows of n x n ``torch.mm`` (2 n^3 FLOPs each)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        torch.mm(a, b)
    best = 0.0
    for _ in range(5):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5:
            torch.mm(a, b)
            calls += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 * calls / elapsed)
    return best


def training_flops_per_sample(policy: PolicyNetwork, batch: Batch, settings: PPOSettings) -> float:
    """Forward + backward FLOPs of one minibatch (torch's FLOP counter: matmuls and convolutions), per sample."""
    model = copy.deepcopy(policy)
    idx = torch.arange(settings.batch_size, device=batch.actions.device)
    with FlopCounterMode(display=False) as counter:
        ppo_loss(model, batch, idx, settings).backward()
    return counter.get_total_flops() / settings.batch_size


def build(network: str, device: torch.device, channels_last: bool = False, shared_trunk: bool = False) -> PolicyNetwork:
    torch.manual_seed(0)
    policy = PolicyNetwork(observation_spec_for(["FRONT_FACING_CAMERA"]), network, ACTIONS,
                           shared_trunk=shared_trunk).to(device)
    if channels_last:
        policy = policy.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return policy


def bench_network(args: argparse.Namespace, network: str, device: torch.device, trunk: str,
                  matmul: list[float]) -> dict[str, Any]:
    """Trainer vs bare loop for one network, best of args.repeats each; each try also takes a matmul
    window (appended to ``matmul``), so the limit is sampled under the same load as the update."""
    policy = build(network, device, shared_trunk=trunk == "shared")
    settings = PPOSettings(num_epochs=args.epochs, batch_size=args.batch_size, target_kl=None)
    episodes = make_episodes(policy, args.steps, length=100)
    batch = Batch.of(episodes, settings, device)
    samples = args.epochs * (args.steps // args.batch_size) * args.batch_size
    trainer_s, bare_s = [], []
    for _ in range(args.repeats):  # fresh copies each try, made outside the timed call
        trained, bare = copy.deepcopy(policy), copy.deepcopy(policy)
        optimizer = make_optimizer(trained, settings)
        matmul.append(matmul_flops(device, args.matmul_size, args.matmul_seconds / args.repeats))
        trainer_s.append(best_seconds(functools.partial(ppo_update, trained, optimizer, episodes, settings, device),
                                      device))
        bare_s.append(best_seconds(functools.partial(bare_loop, bare, batch, settings), device))
    flops = training_flops_per_sample(policy, batch, settings)
    trainer_sps, bare_sps = samples / min(trainer_s), samples / min(bare_s)
    print(f"  {NETWORK_NAMES[network]} ({trunk}): trainer {trainer_sps:.0f}, bare {bare_sps:.0f} samples/s",
          flush=True)
    return {
        "network": NETWORK_NAMES[network], "trunk": trunk,
        "parameters_m": sum(p.numel() for p in policy.parameters()) / 1e6,
        "train_gflop_per_sample": flops / 1e9, "trainer_samples_per_s": trainer_sps, "bare_samples_per_s": bare_sps,
        "overhead_pct": 100 * (min(trainer_s) / min(bare_s) - 1),
        "trainer_gflops": trainer_sps * flops / 1e9,
    }


def with_fractions(row: dict[str, Any], limit: float) -> dict[str, Any]:
    flops = row["train_gflop_per_sample"] * 1e9
    return row | {"trainer_fraction_of_matmul": row["trainer_samples_per_s"] * flops / limit,
                  "bare_fraction_of_matmul": row["bare_samples_per_s"] * flops / limit}


def bench_option(args: argparse.Namespace, network: str, device: torch.device, option: str) -> dict[str, Any]:
    """ppo_update's samples/s with one option applied (threads=N, channels_last, compile) vs without,
    interleaved in this call so the ratio is measured side by side."""
    settings = PPOSettings(num_epochs=args.epochs, batch_size=args.batch_size, target_kl=None)
    base = build(network, device)
    episodes = make_episodes(base, args.steps, length=100)
    samples = args.epochs * (args.steps // args.batch_size) * args.batch_size
    threads_before = torch.get_num_threads()

    def variant(apply: bool) -> float:
        policy = build(network, device, channels_last=apply and option == "channels_last")
        if apply and option == "compile":
            policy.evaluate = torch.compile(policy.evaluate)  # type: ignore[method-assign]
        if apply and option.startswith("threads="):
            torch.set_num_threads(int(option.split("=")[1]))
        optimizer = make_optimizer(policy, settings)
        try:
            if apply and option == "compile":  # the first call compiles: not timed
                ppo_update(policy, optimizer, episodes[:2], settings, device)
            return best_seconds(lambda: ppo_update(policy, optimizer, episodes, settings, device), device)
        finally:
            torch.set_num_threads(threads_before)

    without, with_ = [], []
    for _ in range(args.repeats):
        without.append(variant(False))
        with_.append(variant(True))
    return {"network": NETWORK_NAMES[network], "option": option, "threads": threads_before,
            "samples_per_s_without": samples / min(without), "samples_per_s_with": samples / min(with_),
            "speedup": min(without) / min(with_)}


def bench_act(policy: PolicyNetwork, batch: int, seconds: float) -> tuple[float, float]:
    """act() ms per call and frames/s at batch size ``batch`` (best of 5 windows)."""
    rng = np.random.default_rng(0)
    obs = {k: rng.integers(0, 256, (batch, *s), dtype=np.uint8) for k, s in policy.observation_spec.items()}
    for _ in range(3):
        policy.act(obs)
    per_call = []
    for _ in range(5):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5:
            policy.act(obs)
            calls += 1
        per_call.append(elapsed / calls)
    return 1000 * min(per_call), batch / min(per_call)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", action="append", choices=list(NETWORK_NAMES),
                        help="a network to bench (repeatable; default: all three)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=1024, help="steps per update")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="minibatch size (DeepRacer's default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved tries; the best counts")
    parser.add_argument("--matmul-size", type=int, default=1024)
    parser.add_argument("--matmul-seconds", type=float, default=3.0, help="per network, spread over the tries")
    parser.add_argument("--trunk", choices=("separate", "shared", "both"), default="separate",
                        help="DeepRacer's separate policy/value networks, hotlap_shared_trunk, or both")
    parser.add_argument("--options", action="store_true",
                        help="also measure channels_last, torch.compile and the other thread count (first network)")
    parser.add_argument("--act", action="store_true", help="also time act() at B=1, 16, 64")
    parser.add_argument("--json", dest="output", type=Path, default=RESULT, help="JSON result file ('-': none)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine() | {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    print(f"{machine_line(info)}; torch {torch.__version__}, {info['threads']} threads, device {device}"
          + (f" ({info['gpu']})" if "gpu" in info else ""))
    networks = args.network or list(NETWORK_NAMES)
    trunks = ("separate", "shared") if args.trunk == "both" else (args.trunk,)
    matmul: list[float] = []
    rows = [bench_network(args, network, device, trunk, matmul) for network in networks for trunk in trunks]
    limit = max(matmul)  # the best window: what the machine can do, the nearest to unloaded
    print(f"dense fp32 matmul ({args.matmul_size}x{args.matmul_size}): {limit / 1e9:.1f} GFLOP/s best, "
          f"{min(matmul) / 1e9:.1f} worst of {len(matmul)} windows")
    rows = [with_fractions(row, limit) for row in rows]
    print(f"ppo_update vs bare loop: {args.steps} steps x {args.epochs} epochs, minibatch {args.batch_size}")
    print_table([("network", "network", "s"), ("trunk", "trunk", "s"), ("parameters_m", "params M", ".2f"),
                 ("train_gflop_per_sample", "GFLOP/sample", ".4f"), ("trainer_samples_per_s", "trainer/s", ".0f"),
                 ("bare_samples_per_s", "bare/s", ".0f"), ("overhead_pct", "overhead %", "+.1f"),
                 ("trainer_gflops", "GFLOP/s", ".1f"), ("trainer_fraction_of_matmul", "of matmul", ".1%"),
                 ("bare_fraction_of_matmul", "bare of mm", ".1%")], rows)
    options: list[dict[str, Any]] = []
    if args.options:
        other_threads = 1 if torch.get_num_threads() > 1 else os.cpu_count() or 1  # the other thread setting
        choices = ["channels_last", "compile"] + ([f"threads={other_threads}"] if device.type == "cpu" else [])
        options = [bench_option(args, networks[0], device, option) for option in choices]
        print("options (ppo_update samples/s without -> with, measured side by side):")
        print_table([("network", "network", "s"), ("option", "option", "s"),
                     ("samples_per_s_without", "without", ".0f"), ("samples_per_s_with", "with", ".0f"),
                     ("speedup", "speedup", ".2f")], options)
    act_rows = []
    if args.act:
        policy = build(networks[0], device)
        for size in (1, 16, 64):
            ms, fps = bench_act(policy, size, 5.0)
            act_rows.append({"network": NETWORK_NAMES[networks[0]], "batch": size, "ms_per_call": ms,
                             "frames_per_s": fps})
        print_table([("network", "network", "s"), ("batch", "B", "d"), ("ms_per_call", "ms/call", ".2f"),
                     ("frames_per_s", "frames/s", ".0f")], act_rows)
    settings = {k: v for k, v in vars(args).items() if k != "output"} | {"output": str(args.output)}
    summary = {"matmul_gflops": limit / 1e9, "matmul_gflops_windows": [m / 1e9 for m in matmul],
               "options": options, "act": act_rows}
    result = write_result(None if str(args.output) == "-" else args.output, "trainer", info, settings, rows, summary)
    load = ", ".join(f"{x:.2f}" for x in result["machine"]["loadavg_end"])
    print(f"load average at the end: {load}" + ("" if str(args.output) == "-" else f"; wrote {args.output}"))
    return result


if __name__ == "__main__":
    main()
