"""Micro-benchmarks of the model contract and the PPO update (CPU unless --device says otherwise).

    .venv/bin/python bench/trainer.py                      # act() for B=1,16,64 + ppo_update 2000 steps x 3 epochs
    .venv/bin/python bench/trainer.py --threads 2 --network DEEP_CONVOLUTIONAL_NETWORK
    .venv/bin/python bench/trainer.py --trunk both         # DeepRacer's separate networks vs the shared trunk

act(): camera frames (120x160 uint8), 10 discrete actions, repeated calls after a warm-up; reported as
ms per call and frames per second (best of 5 windows). ppo_update(): episodes of 100 steps with random
frames and rewards, behaviour numbers taken from the policy itself, so the ratios start at 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.networks import SHALLOW, ActionSpec, PolicyNetwork, observation_spec_for  # noqa: E402
from trainer.ppo import PPOSettings, make_optimizer, ppo_update  # noqa: E402

ACTIONS = ActionSpec("discrete", tuple((float(s), v) for s in (-30, -15, 0, 15, 30) for v in (0.5, 1.0)))


@dataclass(frozen=True)
class Episode:
    observations: dict[str, np.ndarray]
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    terminated: bool
    bootstrap_value: float


def bench_act(policy: PolicyNetwork, batch: int, seconds: float) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    obs = {k: rng.integers(0, 256, (batch, *s), dtype=np.uint8) for k, s in policy.observation_spec.items()}
    for _ in range(3):
        policy.act(obs)
    per_call = []  # best of 5 windows: the machine may be shared
    for _ in range(5):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5:
            policy.act(obs)
            calls += 1
        per_call.append(elapsed / calls)
    return 1000 * min(per_call), batch / min(per_call)


def make_episodes(policy: PolicyNetwork, steps: int, length: int) -> list[Episode]:
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(0, steps, length):
        n = min(length, steps - i)
        obs = {k: rng.integers(0, 256, (n, *s), dtype=np.uint8) for k, s in policy.observation_spec.items()}
        result = policy.act(obs)
        rewards = rng.uniform(0, 1, n).astype(np.float32)
        episodes.append(Episode(obs, result.action, result.log_prob, result.value, rewards, i % 2 == 0, 0.5))
    return episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default=SHALLOW)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=5.0, help="per act() batch size")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-act", action="store_true")
    parser.add_argument("--skip-update", action="store_true")
    parser.add_argument("--trunk", choices=("separate", "shared", "both"), default="separate",
                        help="DeepRacer's separate policy/value networks, hotlap_shared_trunk, or both (ratio)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, {args.network}")
    trunks = ("separate", "shared") if args.trunk == "both" else (args.trunk,)
    timings = {trunk: run(args, shared_trunk=trunk == "shared") for trunk in trunks}
    if len(timings) == 2:
        act_ratio = timings["separate"][0] / timings["shared"][0] if timings["shared"][0] else float("nan")
        update_ratio = timings["separate"][1] / timings["shared"][1] if timings["shared"][1] else float("nan")
        print(f"separate / shared time: act B=64 {act_ratio:.2f}x, ppo_update {update_ratio:.2f}x")


def run(args: argparse.Namespace, shared_trunk: bool) -> tuple[float, float]:
    """Bench one variant; returns (act ms per call at B=64, ppo_update seconds), 0.0 where skipped."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    policy = PolicyNetwork(observation_spec_for(["FRONT_FACING_CAMERA"]), args.network, ACTIONS,
                           shared_trunk=shared_trunk).to(device)
    params = sum(p.numel() for p in policy.parameters())
    print(f"{'shared trunk' if shared_trunk else 'separate policy and value networks'}: "
          f"{params / 1e6:.2f}M parameters")
    act_ms = elapsed = 0.0

    if not args.skip_act:
        for batch in (1, 16, 64):
            ms, fps = bench_act(policy, batch, args.seconds)
            print(f"act  B={batch:3d}: {ms:8.2f} ms/call  {fps:8.0f} frames/s")
            act_ms = ms

    if not args.skip_update:
        episodes = make_episodes(policy, args.steps, length=100)
        settings = PPOSettings(num_epochs=args.epochs, batch_size=args.batch_size)
        optimizer = make_optimizer(policy, settings)
        start = time.perf_counter()
        metrics = ppo_update(policy, optimizer, episodes, settings, device)
        elapsed = time.perf_counter() - start
        minibatches = args.epochs * (args.steps // args.batch_size)
        print(
            f"ppo_update {args.steps} steps x {args.epochs} epochs (batch {args.batch_size}): {elapsed:.2f} s "
            f"= {1000 * elapsed / minibatches:.0f} ms/minibatch, {args.steps * args.epochs / elapsed:.0f} samples/s"
        )
        print("  " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return act_ms, elapsed


if __name__ == "__main__":
    main()
