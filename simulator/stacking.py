"""Observation stacking (hyperparameters.json `stack_size`): the last N observations per car.

DeepRacer parses `stack_size` but hard-codes a stack of 1; hotlap honours it. Layout, the oldest
first: a camera (H, W) becomes (N, H, W); stereo (2, H, W) becomes (2N, H, W); a lidar (L,)
becomes (N·L,). `shared.config.observation_shapes` declares the same shapes for the networks.

Every array handed out is a new array that is never written again (and is read-only): callers
keep observations across steps (the worker's episode buffers, `hotlap render`), so a stack must
not be a view of a buffer that the next step overwrites in place.
"""

from __future__ import annotations

import numpy as np


class ObservationStack:
    """The last `size` observations of K cars, per sensor.

    `reset`/`push` take ``{sensor: (K, *shape)}`` and return ``{sensor: (K, *stacked_shape)}``.
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"stack_size must be >= 1, got {size}")
        self.size = size
        self.history: dict[str, np.ndarray] = {}  # sensor -> (K, N, *shape), never written after creation

    def reset(self, obs: dict[str, np.ndarray], car_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Fill the history of `car_ids` (all cars when None) with their current observation."""
        if self.size == 1:
            return obs
        for name, arr in obs.items():
            if name not in self.history or car_ids is None:
                history = np.repeat(arr[:, None], self.size, axis=1)
            else:
                history = self.history[name].copy()  # earlier stacks stay as they were handed out
                history[car_ids] = arr[car_ids, None]
            self._keep(name, history)
        return self.stacked()

    def push(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Append one step's observation of every car, dropping the oldest."""
        if self.size == 1:
            return obs
        for name, arr in obs.items():
            self._keep(name, np.concatenate((self.history[name][:, 1:], arr[:, None]), axis=1))
        return self.stacked()

    def _keep(self, name: str, history: np.ndarray) -> None:
        history.setflags(write=False)
        self.history[name] = history

    def stacked(self) -> dict[str, np.ndarray]:
        out = {}
        for name, history in self.history.items():
            cars, size, *shape = history.shape
            if len(shape) == 2:  # grayscale image: the stack is the channel axis
                out[name] = history
            else:  # stereo channels or lidar values: concatenate along the first feature axis
                out[name] = history.reshape(cars, size * shape[0], *shape[1:])
        return out
