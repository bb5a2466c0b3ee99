"""Thin gymnasium wrappers around :class:`simulator.env.VectorRacingEnv`, following gymnasium's conventions.

- :class:`HotlapRacingEnv`: one car, a ``gymnasium.Env`` (passes ``check_env``).
- :class:`HotlapVectorEnv`: K cars, a ``gymnasium.vector.VectorEnv`` with next-step autoreset.
- Registered as ``hotlap/DeepRacer-v0`` (importing this module registers it)::

      env = gymnasium.make("simulator.gym_env:hotlap/DeepRacer-v0", track="Oval_track")
      envs = gymnasium.make_vec("simulator.gym_env:hotlap/DeepRacer-v0", num_envs=8,
                                vectorization_mode="vector_entry_point")

  Keyword arguments of the classes below are the options; the registered defaults are DeepRacer's
  default model (front camera, the 5 discrete actions of ``hotlap/defaults/model_metadata.json``).

Observations are a ``Dict`` space with one entry per DeepRacer sensor name. Cameras are images
in gymnasium's (and Stable-Baselines3's) layout, height x width x channels uint8:
FRONT_FACING_CAMERA (120, 160, 1), STEREO_CAMERAS (120, 160, 2) (left, right lens). Lidars are
float32 vectors. Actions are either discrete (an index into a list of ``(steering_deg, speed)``
pairs, like a DeepRacer discrete action space) or continuous, normalised to ``[-1, 1]`` as
gymnasium recommends: -1..1 maps linearly onto ``action_low``..``action_high`` (steering deg,
speed m/s). The per-step ``info`` holds the car's state (``status``, ``episode_number``, ``steps``,
``x``, ``y``, ...); the key ``episode`` is left to gymnasium's ``RecordEpisodeStatistics``.
As in DeepRacer, the first step of every episode is the ``prepare`` step: the car does
not move and the reward is 0. ``reset(seed=s)`` restarts the env's random stream, its
round-robin start positions and its clock, so a seeded episode is reproducible.

``reward_function`` is a callable, one callable per car, or the path of a DeepRacer
``reward_function.py``. A path is loaded once per car (DeepRacer runs one car per simulator,
so state the file keeps between calls stays per car); a single callable is shared by all cars
(right for stateless functions; pass one per car otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from simulator.env import EnvSettings, RewardCallable, StepResult, VectorRacingEnv
from simulator.reward import decode_reward_source, load_reward_functions
from simulator.sensors import CAMERA_SENSORS, LIDAR, LIDAR_FILTER_MAX, LIDAR_FILTER_MIN
from simulator.track import Track, load_track

DEFAULT_TRACK = "reInvent2019_track"
RewardInput = RewardCallable | Sequence[RewardCallable] | str | os.PathLike[str]
ENV_ID = "hotlap/DeepRacer-v0"
# DeepRacer's default discrete action space (hotlap/defaults/model_metadata.json), (steering deg, speed m/s).
DEFAULT_ACTIONS = ((-30.0, 0.8), (-15.0, 1.0), (0.0, 1.2), (15.0, 1.0), (30.0, 0.8))
# StepResult fields passed on in `info`, renamed where gymnasium reserves the name.
INFO_FIELDS = {"status": "status", "episode": "episode_number", "steps": "steps", "x": "x", "y": "y",
               "heading": "heading", "progress": "progress", "closest_waypoint": "closest_waypoint",
               "sim_time": "sim_time", "all_wheels_on_track": "all_wheels_on_track"}


def follow_center_line(params: dict[str, Any]) -> float:
    """DeepRacer's "follow the centre line" example reward (our own rendition)."""
    half_width = 0.5 * params["track_width"]
    distance = params["distance_from_center"]
    if distance <= 0.2 * half_width:
        return 1.0
    if distance <= 0.5 * half_width:
        return 0.5
    if distance <= half_width:
        return 0.1
    return 1e-3


def image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A camera's (H, W) or (lenses, H, W) simulator shape as gymnasium's (H, W, C) image shape."""
    if len(shape) == 2:
        return (shape[0], shape[1], 1)
    return (shape[1], shape[2], shape[0])


def to_images(observations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Camera arrays (K, H, W) / (K, lenses, H, W) as (K, H, W, C) views; other sensors unchanged."""
    images = {}
    for name, rows in observations.items():
        if name not in CAMERA_SENSORS:
            images[name] = rows
        elif rows.ndim == 3:
            images[name] = rows[..., None]
        else:
            images[name] = np.moveaxis(rows, 1, -1)
    return images


def observation_space_for(env: VectorRacingEnv) -> spaces.Dict:
    """One car's observation space: a Box per sensor; cameras as (H, W, C) uint8 images."""
    boxes: dict[str, spaces.Space[Any]] = {}
    for name, (shape, dtype) in env.observation_spec.items():
        if name in CAMERA_SENSORS:
            boxes[name] = spaces.Box(0, 255, shape=image_shape(shape), dtype=np.uint8)
        elif name == LIDAR:
            boxes[name] = spaces.Box(LIDAR_FILTER_MIN, LIDAR_FILTER_MAX, shape=shape, dtype=np.float32)
        else:
            boxes[name] = spaces.Box(0.0, 1.0, shape=shape, dtype=dtype.type)
    return spaces.Dict(boxes)


class _ActionCodec:
    """Maps gymnasium actions (an index, or [-1, 1]^2) to (steering_deg, speed) arrays."""

    def __init__(
        self,
        actions: Sequence[tuple[float, float]] | None,
        low: tuple[float, float],
        high: tuple[float, float],
    ) -> None:
        if actions is not None:
            table = np.asarray(actions, dtype=np.float64).reshape(-1, 2)
            if len(table) == 0:
                raise ValueError("a discrete action space needs at least one (steering, speed) action")
            self.table: np.ndarray | None = table
            self.space: spaces.Space[Any] = spaces.Discrete(len(table))
        else:
            self.table = None
            self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
            if not (self.low < self.high).all():
                raise ValueError(f"action_low {low} must be below action_high {high} in both steering and speed")
            self.space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    def decode(self, action: Any, count: int) -> tuple[np.ndarray, np.ndarray]:
        if self.table is not None:
            index = np.asarray(action, dtype=np.int64).reshape(count)
            if (index < 0).any() or (index >= len(self.table)).any():
                raise ValueError(f"action index out of range [0, {len(self.table)}): {index.tolist()}")
            chosen = self.table[index]
        else:
            unit = np.clip(np.asarray(action, dtype=np.float64).reshape(count, 2), -1.0, 1.0)
            chosen = self.low + (unit + 1.0) * 0.5 * (self.high - self.low)
        return chosen[:, 0], chosen[:, 1]


def _make_env(
    track: Track | str,
    num_cars: int,
    reward_function: RewardInput | None,
    settings: EnvSettings | None,
    seed: int,
) -> VectorRacingEnv:
    track = load_track(track) if isinstance(track, str) else track
    rewards: RewardCallable | Sequence[RewardCallable] = follow_center_line
    if isinstance(reward_function, str | os.PathLike):
        path = Path(reward_function)
        rewards = load_reward_functions(decode_reward_source(path.read_bytes(), str(path)), num_cars, str(path))
    elif reward_function is not None:
        rewards = reward_function
    return VectorRacingEnv(track, num_cars, settings or EnvSettings(), rewards, seed)


def _info(result: StepResult, car: int | slice) -> dict[str, Any]:
    info = {key: getattr(result, name)[car] for name, key in INFO_FIELDS.items()}
    if isinstance(car, int):
        info = {key: value.item() for key, value in info.items()}
    return info


class HotlapRacingEnv(gymnasium.Env[dict[str, np.ndarray], Any]):
    """A single DeepRacer car as a gymnasium environment."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        track: Track | str = DEFAULT_TRACK,
        reward_function: RewardInput | None = None,
        actions: Sequence[tuple[float, float]] | None = None,
        action_low: tuple[float, float] = (-30.0, 0.1),
        action_high: tuple[float, float] = (30.0, 4.0),
        settings: EnvSettings | None = None,
        render_mode: str | None = None,
        seed: int = 0,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.render_mode = render_mode
        self.racing = _make_env(track, 1, reward_function, settings, seed)
        self._codec = _ActionCodec(actions, action_low, action_high)
        self.action_space = self._codec.space
        self.observation_space = observation_space_for(self.racing)  # type: ignore[assignment]
        self._obs: dict[str, np.ndarray] = {}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.racing.reseed(seed)
        observations = to_images(self.racing.reset())
        self._obs = {name: rows[0] for name, rows in observations.items()}
        return self._obs, {"status": "prepare"}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        steering, speed = self._codec.decode(action, 1)
        result = self.racing.step(steering, speed)
        self._obs = {name: rows[0] for name, rows in to_images(result.obs).items()}
        return (
            self._obs,
            float(result.reward[0]),
            bool(result.terminated[0]),
            bool(result.truncated[0]),
            _info(result, 0),
        )

    def render(self) -> np.ndarray | None:
        """(120, 160, 3) uint8: the camera image (first lens), or without a camera a top-down view
        of the road around the car (8 x 6 m, the car in red at the centre); None unless render_mode
        is "rgb_array"."""
        if self.render_mode != "rgb_array":
            return None
        name = self.racing.sensors.camera_name
        if name is not None and name in self._obs:
            return np.repeat(self._obs[name][:, :, :1], 3, axis=2)
        return self._top_down()

    def _top_down(self, height: int = 120, width: int = 160, metres_per_px: float = 0.05) -> np.ndarray:
        x, y = float(self.racing.cars.x[0]), float(self.racing.cars.y[0])
        cols, rows = np.meshgrid(np.arange(width) - width / 2, np.arange(height) - height / 2)
        points = np.stack((x + cols.ravel() * metres_per_px, y - rows.ravel() * metres_per_px), axis=1)
        road = self.racing.track.road_mask.contains(points).reshape(height, width)
        image = np.where(road[:, :, None], np.uint8(150), np.array((34, 70, 34), np.uint8)).astype(np.uint8)
        image[height // 2 - 2:height // 2 + 3, width // 2 - 2:width // 2 + 3] = (230, 40, 40)
        return image


class HotlapVectorEnv(VectorEnv[dict[str, np.ndarray], Any, np.ndarray]):
    """K DeepRacer cars stepped together, with gymnasium's next-step autoreset."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int,
        track: Track | str = DEFAULT_TRACK,
        reward_function: RewardInput | None = None,
        actions: Sequence[tuple[float, float]] | None = None,
        action_low: tuple[float, float] = (-30.0, 0.1),
        action_high: tuple[float, float] = (30.0, 4.0),
        settings: EnvSettings | None = None,
        seed: int = 0,
    ) -> None:
        self.racing = _make_env(track, num_envs, reward_function, settings, seed)
        self.num_envs = num_envs
        self._codec = _ActionCodec(actions, action_low, action_high)
        self.single_action_space = self._codec.space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space = observation_space_for(self.racing)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._needs_reset = np.zeros(num_envs, dtype=bool)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if seed is not None:
            self.racing.reseed(seed)
            self.single_action_space.seed(seed)
        self._needs_reset[:] = False
        return to_images(self.racing.reset()), {}

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        steering, speed = self._codec.decode(actions, self.num_envs)
        restarting = self._needs_reset.copy()
        if restarting.any():
            self.racing.reset(np.flatnonzero(restarting))
        result = self.racing.step(steering, speed, active=~restarting)
        terminated = result.terminated & ~restarting
        truncated = result.truncated & ~restarting
        rewards = np.where(restarting, 0.0, result.reward)
        self._needs_reset = terminated | truncated
        return to_images(result.obs), rewards, terminated, truncated, _info(result, slice(None))


gymnasium.register(
    ENV_ID,
    entry_point="simulator.gym_env:HotlapRacingEnv",
    vector_entry_point="simulator.gym_env:HotlapVectorEnv",
    kwargs={"track": DEFAULT_TRACK, "actions": DEFAULT_ACTIONS},
)
