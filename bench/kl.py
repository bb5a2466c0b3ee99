"""How one PPO update's KL grows: minibatch steps per iteration, reward scale, shared trunk (issue 8 item 4).

    .venv/bin/python bench/kl.py                       # the five cases below, 10 epochs each (~5-10 min on 2 cores)
    .venv/bin/python bench/kl.py --epochs 5 --network DEEP_CONVOLUTIONAL_NETWORK

One ``trainer.ppo.ppo_update`` per case with DeepRacer's settings (minibatch 64, lr 3e-4, 10 epochs,
MSE value loss; hotlap_target_kl off, so every epoch runs), on camera frames and rewards drawn at
random (uniform in [0, scale)), behaviour numbers from the policy itself so the KL starts at 0. Per
epoch it records the mean approximate KL over that epoch's minibatches (the number in DeepRacer's
``Policy training>`` line) and the value loss. The cases separate the suspects of the collapse:

- steps per iteration (128: a car crashing early; 512: laps being driven, 4x the minibatch steps);
- reward scale (1: hotlap's centre-line default; 20: a racer-scale pace reward);
- DeepRacer's separate policy and value networks vs hotlap_shared_trunk.

Writes ``--json`` (bench/results/kl.json). Random data: the numbers show the mechanism (how the KL
scales), not the KL of a real run; the real runs' KL is in their trainer logs and bench/learn.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import machine, machine_line, print_table, write_result  # noqa: E402
from bench.trainer import ACTIONS, make_episodes  # noqa: E402
from shared.networks import SHALLOW, PolicyNetwork, observation_spec_for  # noqa: E402
from trainer.ppo import PPOSettings, make_optimizer, ppo_update  # noqa: E402

# (trunk, reward scale, steps per iteration)
CASES = [("separate", 1.0, 128), ("separate", 1.0, 512), ("separate", 20.0, 512), ("shared", 1.0, 512),
         ("shared", 20.0, 512)]


def run_case(network: str, trunk: str, scale: float, steps: int, epochs: int) -> dict[str, Any]:
    torch.manual_seed(0)
    policy = PolicyNetwork(observation_spec_for(["FRONT_FACING_CAMERA"]), network, ACTIONS,
                           shared_trunk=trunk == "shared")
    episodes = make_episodes(policy, steps, 64, reward_scale=scale, all_terminated=True)
    settings = PPOSettings(num_epochs=epochs, target_kl=None)
    per_epoch: list[dict[str, float]] = []
    torch.manual_seed(1)
    metrics = ppo_update(policy, make_optimizer(policy, settings), episodes, settings, torch.device("cpu"),
                         on_epoch=lambda _epoch, m: per_epoch.append(m))
    return {"trunk": trunk, "reward_scale": scale, "steps": steps, "minibatch_steps": metrics["minibatches"],
            "kl_per_epoch": [round(m["approx_kl"], 6) for m in per_epoch],
            "kl_first_epoch": per_epoch[0]["approx_kl"], "kl_last_epoch": per_epoch[-1]["approx_kl"],
            "approx_kl_max": metrics["approx_kl_max"], "value_loss": metrics["value_loss"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default=SHALLOW)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "kl.json")
    args = parser.parse_args(argv)
    info = machine() | {"torch": torch.__version__, "threads": torch.get_num_threads()}
    print(machine_line(info))
    rows = []
    for trunk, scale, steps in CASES:
        rows.append(run_case(args.network, trunk, scale, steps, args.epochs))
        print(f"  {trunk} x{scale:g} {steps} steps: KL per epoch {rows[-1]['kl_per_epoch']}", flush=True)
    print_table([("trunk", "trunk", "s"), ("reward_scale", "scale", "g"), ("steps", "steps", "d"),
                 ("minibatch_steps", "mb steps", ".0f"), ("kl_first_epoch", "KL ep 1", ".4f"),
                 ("kl_last_epoch", "KL last", ".4f"), ("approx_kl_max", "KL max", ".4f"),
                 ("value_loss", "value loss", ".3g")], rows)
    write_result(args.json, "kl", info, {"network": args.network, "epochs": args.epochs}, rows, {})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
