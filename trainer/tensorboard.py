"""TensorBoard scalars of a training run, named as CleanRL and Stable-Baselines3 name them.

Enabled by HOTLAP_TENSORBOARD_DIR (`hotlap train --tensorboard DIR`); needs the optional
`tensorboard` package (`pip install -e '.[tensorboard]'`). The x axis is the global step: the
environment steps the trainer has consumed so far, as in CleanRL's `global_step`.

| tag | value |
| --- | --- |
| `charts/episodic_return` | each episode's total reward (one point per episode) |
| `charts/episodic_length` | each episode's steps |
| `charts/episodic_progress` | each episode's DeepRacer `progress` (%) |
| `charts/learning_rate`, `charts/SPS` | the optimizer's learning rate; environment steps per second |
| `losses/policy_loss`, `losses/value_loss`, `losses/entropy` | PPO's update means (trainer.ppo.ppo_update) |
| `losses/approx_kl`, `losses/clipfrac` | the same, of the KL estimate and the clipped fraction |
| `losses/approx_kl_max` | the largest epoch-mean KL of the update (the trust region's check) |
| `losses/epochs`, `losses/stopped_early` | epochs the update ran; 1 when `hotlap_target_kl` stopped it early |
| `losses/explained_variance` | of the value function on the batch |
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.config import ConfigError
from shared.experience import Experience

# TensorBoard tag -> key of ppo_update's metrics
UPDATE_SCALARS = {
    "losses/policy_loss": "policy_loss",
    "losses/value_loss": "value_loss",
    "losses/entropy": "entropy",
    "losses/approx_kl": "approx_kl",
    "losses/approx_kl_max": "approx_kl_max",
    "losses/epochs": "epochs",
    "losses/stopped_early": "stopped_early",
    "losses/clipfrac": "clip_fraction",
    "losses/explained_variance": "explained_variance",
    "charts/learning_rate": "learning_rate",
}


class TensorBoardLog:
    """Writes one iteration's scalars per `log_iteration` call to event files under `directory`."""

    def __init__(self, directory: str | Path):
        # tensorboard writes event files with TensorFlow when it is installed (hotlap[export] brings
        # it): seconds of start-up and native log lines that break HOTLAP_LOG_FORMAT=json. Its marker
        # module `tensorboard.compat.notf` makes it use its own TensorFlow-free writer instead.
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch imports tensorboard lazily, here
            raise ConfigError("HOTLAP_TENSORBOARD_DIR", [
                f"TensorBoard logging needs the tensorboard package ({e}); "
                "install it with: pip install -e '.[tensorboard]'"]) from e
        self.writer: Any = SummaryWriter(log_dir=str(directory))
        self.last_time = time.monotonic()

    def log_iteration(self, global_step: int, episodes: Sequence[Experience], stats: Mapping[str, float]) -> None:
        """`global_step`: environment steps consumed before this iteration's episodes."""
        step = global_step
        for episode in episodes:
            step += episode.num_steps
            if not episode.ends_episode:
                continue  # an async chunk of a running episode: its steps count, it is no episode
            self.writer.add_scalar("charts/episodic_return", episode.episode_reward, step)
            self.writer.add_scalar("charts/episodic_length", episode.episode_steps, step)
            self.writer.add_scalar("charts/episodic_progress", episode.progress, step)
        for tag, key in UPDATE_SCALARS.items():
            if key in stats:
                self.writer.add_scalar(tag, stats[key], step)
        now = time.monotonic()
        self.writer.add_scalar("charts/SPS", (step - global_step) / max(now - self.last_time, 1e-9), step)
        self.last_time = now
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
