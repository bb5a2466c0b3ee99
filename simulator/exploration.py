"""DeepRacer's e-greedy exploration schedule (hyperparameters.json ``exploration_type: "e-greedy"``).

DeepRacer sets rl_coach's ``EGreedy`` with ``LinearSchedule(1.0, e_greedy_value, epsilon_steps)``
for discrete action spaces (simapp ``sagemaker_graph_manager.py::get_clipped_ppo_params``;
deepracer-formats.md §3.1): epsilon starts at 1.0 and falls linearly by
``(1 - e_greedy_value) / epsilon_steps`` per training step until it reaches ``e_greedy_value``.
Each DeepRacer simulator drives one car and keeps its own schedule; hotlap keeps one per car, so a
car sees the epsilon it would see alone. The action choice itself is ``PolicyNetwork.act(epsilon=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EpsilonSchedule:
    """``LinearSchedule(1.0, final, decay_steps)``: epsilon for a car that has taken ``steps`` steps."""

    final: float
    decay_steps: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.final <= 1.0 or self.decay_steps < 1:
            raise ValueError(f"need 0 <= e_greedy_value <= 1 and epsilon_steps >= 1, got {self}")

    def epsilon(self, steps: np.ndarray) -> np.ndarray:
        """(B,) epsilon per car, from its (B,) count of training steps taken so far."""
        decayed = 1.0 - np.asarray(steps, np.float64) * (1.0 - self.final) / self.decay_steps
        return np.maximum(decayed, self.final)
