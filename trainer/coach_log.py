"""DeepRacer's trainer-side logs, as rl_coach writes them (deepracer-formats.md §5.4).

- the screen lines: ``Training> Name=main_level/agent, Worker=…, Episode=…, Total reward=…, Steps=…,
  Training iteration=…`` for every episode the trainer consumes, then ``Policy training> Surrogate
  loss=…, KL divergence=…, Entropy=…, training epoch=…, learning_rate=…`` for every PPO epoch;
- the episode CSV (``shared.store.COACH_EPISODE_LOG``): one row per consumed episode, with the
  header the seed article shows. Columns hotlap has no quantity for are left empty (rl_coach writes
  NaN there too when it has none: evaluation columns during training).

What each column holds in hotlap (docs/compatibility.md has the table): the per-episode signals
(Discounted Return, Advantages, Values, Value Targets) are statistics over the episode's steps;
the training signals (Loss, Learning Rate, Grads (unclipped), Entropy, Value/Policy Loss, KL
Divergence, (Clipped) Likelihood Ratio) are statistics over the epochs of the update that trained
on the episode, each epoch's value being the mean over its minibatches.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from shared.deepracer_logs import (
    COACH_EPISODE_COLUMNS,
    coach_episode_csv,
    coach_row,
    policy_training_line,
    signal_stats,
    training_episode_line,
)
from shared.experience import Experience
from shared.logs import COACH_LOGGER
from trainer.ppo import PPOSettings, compute_gae, normalise_advantages

coach_log = logging.getLogger(COACH_LOGGER)

# rl_coach signal name -> key of the per-epoch metrics ppo_update reports
TRAINING_SIGNALS = {
    "Loss": "loss", "Learning Rate": "learning_rate", "Grads (unclipped)": "grad_norm", "Entropy": "entropy",
    "Value Loss": "value_loss", "Policy Loss": "policy_loss", "KL Divergence": "approx_kl",
    "Likelihood Ratio": "likelihood_ratio", "Clipped Likelihood Ratio": "clipped_likelihood_ratio",
}


def discounted_returns(rewards: np.ndarray, discount: float) -> np.ndarray:
    """(T,) discounted sum of the rewards from each step to the episode's end (rl_coach's
    ``n_step_discounted_rewards`` for whole episodes, no bootstrap)."""
    returns = np.zeros(len(rewards))
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = float(rewards[t]) + discount * running
        returns[t] = running
    return returns


class CoachLog:
    """The trainer's rl_coach lines and episode CSV over a whole run (resumable from the CSV)."""

    def __init__(self, settings: PPOSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.rows: list[list[str]] = []
        self.episodes = 0  # episodes consumed so far: rl_coach's current_episode
        self.total_steps = 0
        self.started: float | None = None  # wall clock of the first row (rl_coach: Wall-Clock Time 0)
        self.epochs: list[dict[str, float]] = []

    def resume(self, text: str, latest: int) -> None:
        """Keep the rows of the iterations that produced versions 1..latest; later ones are re-logged."""
        rows = list(csv.reader(io.StringIO(text)))[1:]
        column = {name: i for i, name in enumerate(COACH_EPISODE_COLUMNS)}
        self.rows = [row for row in rows if int(row[column["Training Iter"]]) < latest]
        if self.rows:
            last = self.rows[-1]
            self.episodes = int(last[column["Episode #"]])
            self.total_steps = int(last[column["Total steps"]])
            self.started = self.clock() - float(last[column["Wall-Clock Time"]])

    def rollouts(self, iteration: int, episodes: Sequence[Experience]) -> None:
        """Print one ``Training>`` line per episode that ended, before the update trains on them
        (an async chunk of a running episode is no episode: its steps count, it has no line)."""
        steps = self.total_steps
        number = self.episodes
        for episode in episodes:
            steps += episode.num_steps
            if episode.ends_episode:
                number += 1
                coach_log.info(training_episode_line(episode.worker_index, number, episode.episode_reward,
                                                     steps, iteration))
        self.epochs = []

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """ppo_update's per-epoch callback: print ``Policy training>`` and keep the epoch's means."""
        coach_log.info(policy_training_line(metrics["policy_loss"], metrics["approx_kl"], metrics["entropy"], epoch,
                                            metrics["learning_rate"]))
        self.epochs.append(dict(metrics))

    def add_iteration(self, iteration: int, episodes: Sequence[Experience]) -> None:
        """Append one row per episode that ended in this iteration (after its update: the training
        signals). An async chunk of a running episode adds its steps and transitions, and no row;
        the row of the message that ends the episode has the whole episode's length and reward."""
        now = self.clock()
        if self.started is None:
            self.started = now
        training: dict[str, float] = {}
        for signal, key in TRAINING_SIGNALS.items():
            training |= signal_stats(signal, [epoch[key] for epoch in self.epochs if key in epoch])
        gae = [compute_gae(e.rewards, e.values, e.terminated, e.bootstrap_value, self.settings.discount,
                           self.settings.gae_lambda) for e in episodes]
        advantages = np.concatenate([adv for adv, _ in gae]) if gae else np.zeros(0)
        if self.settings.normalize_advantages and advantages.size:
            advantages = normalise_advantages(advantages)
        in_memory = 0
        start = 0
        in_iteration = 0
        for episode, (_, value_targets) in zip(episodes, gae, strict=True):
            steps = episode.num_steps
            in_memory += steps
            self.total_steps += steps
            if not episode.ends_episode:
                start += steps
                continue
            self.episodes += 1
            in_iteration += 1
            values: dict[str, Any] = {
                "Episode #": self.episodes, "Training Iter": iteration, "In Heatup": 0,
                "ER #Transitions": in_memory, "ER #Episodes": in_iteration, "Episode Length": episode.episode_steps,
                "Total steps": self.total_steps, "Shaped Training Reward": episode.episode_reward,
                "Training Reward": episode.episode_reward, "Update Target Network": 0,
                "Wall-Clock Time": now - self.started, **training,
            }
            values |= signal_stats("Discounted Return", discounted_returns(episode.rewards, self.settings.discount))
            values |= signal_stats("Advantages", advantages[start : start + steps])
            values |= signal_stats("Values", episode.values)
            values |= signal_stats("Value Targets", value_targets)
            start += steps
            self.rows.append(coach_row(values))

    def csv(self) -> str:
        return coach_episode_csv(self.rows)
