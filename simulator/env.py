"""The vectorised racing environment: K DeepRacer cars on one track, stepped together.

Episode rules are DeepRacer's (simapp ``rollout_agent_ctrl.py`` and ``reset/rules/``):

- after ``reset`` a car is in the PREPARE phase: its first step does not move it, reports
  status ``prepare`` and reward 0.0, and does not call the reward function.
- every later step (RUN phase) applies the action, then calls the reward function, also on
  the step that ends the episode. Episode ends, first match wins:
  ``lap_complete`` (progress >= 100), ``off_track`` (no wheel on the road; ``is_offtrack``
  is True in that call's params), ``immobilized`` (head point moved <= 0.0003 m per step for
  15 consecutive steps), ``reversed`` (progress decreased 15 consecutive steps),
  ``time_up`` (``max_steps`` steps; the only truncation). DeepRacer lets time_up win over
  the others; we let real terminations win so that learners see them.
- a done car stays done (does not move, reward 0, status unchanged) until ``reset(ids)``.
- ``progress`` is DeepRacer's ``compute_current_prog`` relative to the episode's start
  position with its wrap rules (+100 when <= 0, +-100 when it jumps by more than 50, capped
  at 100). Open tracks have no wrap: progress = 100 * (d - d_start) / (length - d_start),
  exactly 100 once the head point reaches the last waypoint whatever the track length (the
  fraction is taken first, so no rounding leaves it at 99.99999999999999).
- start positions: car k's episode e starts at fraction
  ``start_offset + k / K (stagger_starts) + e * round_robin_advance`` of the lap
  (DeepRacer's ROUND_ROBIN_ADVANCE_DIST), base origin on the centre line, heading toward
  the next waypoint. Open tracks always start at ``start_offset`` (no round robin).
- ``reverse`` drives the track the other way: waypoints reversed, ``is_reversed`` True.

The reward ``params`` dict carries every key of DeepRacer's ``RewardParam`` with its
semantics (see ``build_params``). Each call gets a freshly built dict; ``waypoints`` is a
fresh list of (x, y) tuples and the other lists are fresh too, so the user can mutate
anything without touching the env or other calls (what DeepRacer's deep copy achieves,
at a fraction of its cost). Every value is a plain Python type (``float``, ``int``, ``bool``,
lists of ``(x, y)`` tuples) and ``speed`` / ``steering_angle`` are exactly the numbers given
to ``step`` (float64 in, the same float out: a discrete action's JSON ``0.8`` arrives as
``0.8``; deepracer-formats.md §1.1). A failing reward function raises
:class:`simulator.reward.RewardFunctionError` out of ``step`` (DeepRacer fails the job).

Reward functions are per car: ``reward_function`` is either one callable per car (what
:func:`simulator.reward.load_reward_functions` gives: DeepRacer's one-module-per-simulator,
so state kept between calls is the car's own) or a single callable that every car then
shares (fine for stateless functions).

Inactive cars (``active=False``) and done cars are not moved, not rendered, do not call the
reward function, get reward 0 and keep their last reported values and status. Observation
arrays are new objects on every ``reset``/``step`` (rows of cars that did not move are
copied from the previous ones), so callers may keep them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.car import CarParams, CarState
from simulator.reward import RewardFunction
from simulator.sensors import FRONT_FACING_CAMERA, LidarConfig, LidarSpec, SensorSuite
from simulator.track import Track

STATUS_TOKENS = (
    "prepare",
    "in_progress",
    "off_track",
    "lap_complete",
    "immobilized",
    "reversed",
    "time_up",
    "crashed",
    "pause",
    "park",
)
EPISODE_STATUS_LABELS = {
    "lap_complete": "Lap complete",
    "crashed": "Crashed",
    "off_track": "Off track",
    "immobilized": "Immobilized",
    "in_progress": "In progress",
    "pause": "Pause",
    "reversed": "Reversed",
    "park": "Park",
    "time_up": "Time Up",
    "prepare": "Prepare",
}
_STATUS = {token: code for code, token in enumerate(STATUS_TOKENS)}
_STATUS_ARRAY = np.array(STATUS_TOKENS)

IMMOBILIZED_DISTANCE = 0.0003  # m per step
IMMOBILIZED_STEPS = 15  # NUM_STEPS_TO_CHECK_STUCK
REVERSED_STEPS = 15  # NUMBER_OF_REVERSE_COUNTS
LAP_PROGRESS = 100.0

_PREPARE, _RUN, _DONE = 0, 1, 2


@dataclass(frozen=True)
class EnvSettings:
    """Plain values; the caller builds it from the run config."""

    sensors: tuple[str, ...] = (FRONT_FACING_CAMERA,)
    max_steps: int = 10000
    reverse: bool = False
    round_robin_advance: float = 0.05  # fraction of the lap between a car's consecutive starts
    start_offset: float = 0.0  # fraction of the lap where car 0's first episode starts
    stagger_starts: bool = True  # car k starts k/K of the lap further on
    lidar_num_sectors: int = 8  # model_metadata lidar_config (DISCRETIZED_SECTOR_LIDAR)
    lidar_num_values_per_sector: int = 8
    lidar_clipping_dist: float = 2.0
    lidar_noise_std: float = LidarSpec.noise_std


@dataclass(frozen=True, eq=False)
class StepResult:
    """One env step: every array has one row per car (K)."""

    obs: dict[str, np.ndarray]
    reward: np.ndarray  # float64: the reward functions' floats, unrounded
    done: np.ndarray  # bool
    terminated: np.ndarray  # bool
    truncated: np.ndarray  # bool (time_up)
    status: np.ndarray  # str tokens, STATUS_TOKENS
    episode: np.ndarray  # int64, the car's episode counter (0-based)
    steps: np.ndarray  # int64, steps in the episode (params['steps'] is the same as float)
    x: np.ndarray  # head point, m
    y: np.ndarray
    heading: np.ndarray  # deg (-180, 180]
    steering_angle: np.ndarray  # commanded, deg
    speed: np.ndarray  # commanded, m/s
    progress: np.ndarray  # percent
    closest_waypoint: np.ndarray  # int64, the nearer of params['closest_waypoints']
    track_len: np.ndarray  # m
    all_wheels_on_track: np.ndarray  # bool
    sim_time: np.ndarray  # s since the env started, per car


class VectorRacingEnv:
    """K cars on one track; ``reset`` and ``step`` act on all cars (or a subset) at once."""

    def __init__(
        self,
        track: Track,
        num_cars: int,
        settings: EnvSettings,
        reward_function: RewardCallable | Sequence[RewardCallable],
        seed: int = 0,
        car_params: CarParams | None = None,
    ) -> None:
        if num_cars < 1:
            raise ValueError(f"num_cars must be >= 1, got {num_cars}")
        if settings.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {settings.max_steps}")
        self.settings = settings
        self.track = track.reversed() if settings.reverse else track
        self.num_cars = num_cars
        self.reward_functions = _per_car(reward_function, num_cars)
        lidar_config = LidarConfig(
            settings.lidar_num_sectors, settings.lidar_num_values_per_sector, settings.lidar_clipping_dist
        )
        self.sensors = SensorSuite(self.track, settings.sensors, lidar_config, settings.lidar_noise_std)
        self.observation_spec: dict[str, tuple[tuple[int, ...], np.dtype]] = self.sensors.spec
        self.cars = CarState.at_rest(num_cars, car_params)
        self._rng = np.random.default_rng(seed)
        self._waypoints = tuple((float(x), float(y)) for x, y in self.track.center)
        self._road = self.track.road_mask
        self._dt = self.cars.params.dt
        self._init_episode_state()

    def _init_episode_state(self) -> None:
        k = self.num_cars
        self._episode = np.full(k, -1, dtype=np.int64)
        self._start_distance = np.zeros(k)
        self._phase = np.full(k, -1, dtype=np.int8)  # -1: never reset
        self._status = np.zeros(k, dtype=np.int64)
        self._steps = np.zeros(k, dtype=np.int64)
        self._sim_time = np.zeros(k)
        self._progress = np.zeros(k)
        self._prev_progress = np.zeros(k)
        self._reverse_count = np.zeros(k, dtype=np.int64)
        self._immobile_count = np.zeros(k, dtype=np.int64)
        self._prev_head = np.zeros((k, 2))
        self._terminated = np.zeros(k, dtype=bool)
        self._truncated = np.zeros(k, dtype=bool)
        self._report = _Report.empty(k)
        self._obs: dict[str, np.ndarray] = {
            name: np.zeros((k, *shape), dtype=dtype) for name, (shape, dtype) in self.observation_spec.items()
        }

    def reseed(self, seed: int) -> None:
        """Restart the random stream, the round-robin start sequence and the clock.

        The next ``reset`` then starts every car's first episode again, as a new env would.
        """
        self._rng = np.random.default_rng(seed)
        self._episode[:] = -1
        self._sim_time[:] = 0.0

    # ------------------------------------------------------------------ reset
    def reset(self, car_ids: np.ndarray | None = None,
              start_fraction: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Start a new episode for ``car_ids`` (default: all cars); returns obs of ALL cars (K, ...).

        ``start_fraction`` (one per car id, fractions of the lap after ``start_offset``) places the
        cars there instead of at their round-robin starts, without advancing the round robin (the
        worker's evaluation trials); open tracks still start at ``start_offset``.
        """
        ids = self._car_index(car_ids)
        if start_fraction is None:
            self._episode[ids] += 1
            fraction = self._start_fraction(ids)
        else:
            given = np.asarray(start_fraction, dtype=np.float64).reshape(-1)
            if given.size != np.asarray(car_ids).size or ids.size != given.size:
                raise ValueError(f"start_fraction needs one value per distinct car id, got {given.size} "
                                 f"for {ids.size} car(s)")
            order = np.argsort(np.asarray(car_ids, dtype=np.int64).reshape(-1), kind="stable")
            self._episode[ids] = np.maximum(self._episode[ids], 0)
            fraction = (np.mod(self.settings.start_offset + given[order], 1.0) if self.track.closed
                        else np.full(ids.size, min(max(self.settings.start_offset, 0.0), 1.0)))
        self._start_distance[ids] = fraction * self.track.length
        points, heading = self.track.pose_at(self._start_distance[ids])
        self.cars.place(ids, points[:, 0], points[:, 1], heading)
        self._phase[ids] = _PREPARE
        self._status[ids] = _STATUS["prepare"]
        for counter in (self._steps, self._reverse_count, self._immobile_count):
            counter[ids] = 0
        self._progress[ids] = 0.0
        self._prev_progress[ids] = 0.0
        self._terminated[ids] = False
        self._truncated[ids] = False
        head = self.cars.head_points()[ids]
        self._prev_head[ids] = head
        self._report.reset_rows(ids, head, np.degrees(heading), self._sim_time[ids])
        self._observe(ids)
        return dict(self._obs)

    def _car_index(self, car_ids: np.ndarray | None) -> np.ndarray:
        if car_ids is None:
            return np.arange(self.num_cars)
        ids = np.unique(np.asarray(car_ids, dtype=np.int64).reshape(-1))
        if ids.size and (ids[0] < 0 or ids[-1] >= self.num_cars):
            raise IndexError(f"car ids must be in [0, {self.num_cars}), got {ids.tolist()}")
        return ids

    def _start_fraction(self, ids: np.ndarray) -> np.ndarray:
        s = self.settings
        if not self.track.closed:
            return np.full(len(ids), min(max(s.start_offset, 0.0), 1.0))
        stagger = ids / self.num_cars if s.stagger_starts else 0.0
        return np.mod(s.start_offset + stagger + self._episode[ids] * s.round_robin_advance, 1.0)

    def _observe(self, ids: np.ndarray) -> None:
        if ids.size == 0:
            self._obs = {name: rows.copy() for name, rows in self._obs.items()}
            return
        fresh = self.sensors.observe(self.cars, ids, self._rng)
        every_car = ids.size == self.num_cars
        for name, rows in fresh.items():
            if every_car:
                self._obs[name] = rows
            else:
                merged = self._obs[name].copy()  # fresh array: earlier results stay untouched
                merged[ids] = rows
                self._obs[name] = merged

    # ------------------------------------------------------------------ step
    def step(self, steering_deg: np.ndarray, speed: np.ndarray, active: np.ndarray | None = None) -> StepResult:
        """Apply one action per car (degrees, m/s); inactive and done cars stay as they are."""
        steering_deg = np.asarray(steering_deg, dtype=np.float64).reshape(self.num_cars)
        speed = np.asarray(speed, dtype=np.float64).reshape(self.num_cars)
        if (self._phase < 0).any():
            raise RuntimeError("reset() every car before stepping it")
        live = self._phase != _DONE
        if active is not None:
            live &= np.asarray(active, dtype=bool).reshape(self.num_cars)
        ids = np.flatnonzero(live)
        rewards = np.zeros(self.num_cars, dtype=np.float64)
        if ids.size:
            self._advance(ids, steering_deg, speed, rewards)
        self._observe(ids)
        return self._result(rewards)

    def _advance(self, ids: np.ndarray, steering_deg: np.ndarray, speed: np.ndarray, rewards: np.ndarray) -> None:
        running = ids[self._phase[ids] == _RUN]
        preparing = ids[self._phase[ids] == _PREPARE]
        if running.size:
            self.cars.step(running, steering_deg[running], speed[running])
        self._steps[ids] += 1
        self._sim_time[ids] += self._dt
        geo = self._measure(ids)
        run_mask = self._phase[ids] == _RUN
        off_track = ~geo.any_wheel_on
        moved = np.hypot(*(geo.head - self._prev_head[ids]).T)
        still = run_mask & (moved <= IMMOBILIZED_DISTANCE)
        backwards = run_mask & (geo.progress < self._prev_progress[ids])
        self._immobile_count[ids] = np.where(still, self._immobile_count[ids] + 1, 0)
        self._reverse_count[ids] = np.where(backwards, self._reverse_count[ids] + 1, 0)
        status = self._judge(ids, geo, off_track)
        self._report.update_rows(ids, geo, steering_deg[ids], speed[ids], self._sim_time[ids])
        if running.size:
            params = self._build_params(ids, geo, off_track, steering_deg, speed, run_mask)
            functions = self.reward_functions
            rewards[running] = [functions[car](p) for car, p in zip(running.tolist(), params, strict=True)]
        # DeepRacer clears rule counters in PREPARE; prev values track every step
        self._prev_progress[ids] = geo.progress
        self._prev_head[ids] = geo.head
        self._progress[ids] = geo.progress
        self._phase[preparing] = _RUN
        self._status[ids] = status
        finished = status != _STATUS["in_progress"]
        finished &= status != _STATUS["prepare"]
        done_ids = ids[finished]
        self._phase[done_ids] = _DONE
        self._truncated[done_ids] = status[finished] == _STATUS["time_up"]
        self._terminated[done_ids] = ~self._truncated[done_ids]

    def _judge(self, ids: np.ndarray, geo: _Geometry, off_track: np.ndarray) -> np.ndarray:
        run = self._phase[ids] == _RUN
        status = np.where(run, _STATUS["in_progress"], _STATUS["prepare"])
        time_up = self._steps[ids] >= self.settings.max_steps
        # later assignments win: priority lap_complete > off_track > immobilized > reversed > time_up
        status = np.where(time_up, _STATUS["time_up"], status)
        status = np.where(run & (self._reverse_count[ids] >= REVERSED_STEPS), _STATUS["reversed"], status)
        status = np.where(run & (self._immobile_count[ids] >= IMMOBILIZED_STEPS), _STATUS["immobilized"], status)
        status = np.where(run & off_track, _STATUS["off_track"], status)
        status = np.where(run & (geo.progress >= LAP_PROGRESS), _STATUS["lap_complete"], status)
        return status

    def _measure(self, ids: np.ndarray) -> _Geometry:
        track = self.track
        head = self.cars.head_points()[ids]
        projection = track.project(head)
        distance = projection.distance
        prev_wp, next_wp = track.closest_waypoints(distance)
        to_prev = np.hypot(*(head - track.center[prev_wp]).T)
        to_next = np.hypot(*(head - track.center[next_wp]).T)
        wheels = self.cars.wheel_points()[ids]
        on_road = self._road.contains(wheels.reshape(-1, 2)).reshape(-1, 4)
        return _Geometry(
            head=head,
            distance=distance,
            offset=projection.offset,
            prev_wp=prev_wp,
            next_wp=next_wp,
            nearest_wp=np.where(to_next < to_prev, next_wp, prev_wp),
            all_wheels_on=np.all(on_road, axis=1),
            any_wheel_on=np.any(on_road, axis=1),
            is_left=projection.is_left,
            width=projection.track_width,
            progress=self._progress_of(ids, distance),
            heading=_heading_degrees(self.cars.yaw[ids]),
        )

    def _progress_of(self, ids: np.ndarray, distance: np.ndarray) -> np.ndarray:
        length = self.track.length
        start = self._start_distance[ids]
        if not self.track.closed:
            # fraction first: x / x is exactly 1, while 100 * x / x is 99.99999999999999 for ~7% of lengths
            remaining = np.maximum(length - start, 1e-9)
            fraction = np.where(distance >= length, 1.0, (distance - start) / remaining)
            return np.minimum(100.0 * fraction, LAP_PROGRESS)
        prev = self._prev_progress[ids]
        current = 100.0 * ((distance - start) / length)
        current = np.where(current <= 0.0, current + 100.0, current)
        current = np.where(prev > current + 50.0, current + 100.0, current)
        current = np.where(current > prev + 50.0, current - 100.0, current)
        return np.minimum(current, LAP_PROGRESS)

    def _build_params(
        self,
        ids: np.ndarray,
        geo: _Geometry,
        off_track: np.ndarray,
        steering_deg: np.ndarray,
        speed: np.ndarray,
        run_mask: np.ndarray,
    ) -> list[dict[str, Any]]:
        """DeepRacer's reward params for the running cars among ``ids``, in order."""
        rows = np.flatnonzero(run_mask)
        cars = ids[rows]
        columns = zip(
            geo.all_wheels_on[rows].tolist(),
            geo.head[rows, 0].tolist(),
            geo.head[rows, 1].tolist(),
            geo.heading[rows].tolist(),
            geo.offset[rows].tolist(),
            geo.distance[rows].tolist(),
            geo.progress[rows].tolist(),
            self._steps[cars].astype(np.float64).tolist(),
            speed[cars].tolist(),
            steering_deg[cars].tolist(),
            geo.width[rows].tolist(),
            geo.prev_wp[rows].tolist(),
            geo.next_wp[rows].tolist(),
            geo.is_left[rows].tolist(),
            off_track[rows].tolist(),
            self._sim_time[cars].tolist(),
            strict=True,
        )
        return [
            build_params(
                all_wheels_on_track=awot,
                x=x,
                y=y,
                heading=heading,
                distance_from_center=offset,
                projection_distance=distance,
                progress=progress,
                steps=steps,
                speed=spd,
                steering_angle=steer,
                track_width=width,
                track_length=self.track.length,
                waypoints=self._waypoints,
                closest_waypoints=(prev_wp, next_wp),
                is_left_of_center=is_left,
                is_reversed=bool(self.settings.reverse),
                is_offtrack=offtrack,
                sim_time=sim_time,
            )
            for (
                awot,
                x,
                y,
                heading,
                offset,
                distance,
                progress,
                steps,
                spd,
                steer,
                width,
                prev_wp,
                next_wp,
                is_left,
                offtrack,
                sim_time,
            ) in columns
        ]

    def _result(self, rewards: np.ndarray) -> StepResult:
        r = self._report
        return StepResult(
            obs=dict(self._obs),
            reward=rewards,
            done=self._phase == _DONE,
            terminated=self._terminated.copy(),
            truncated=self._truncated.copy(),
            status=_STATUS_ARRAY[self._status],
            episode=np.maximum(self._episode, 0),
            steps=self._steps.copy(),
            x=r.x.copy(),
            y=r.y.copy(),
            heading=r.heading.copy(),
            steering_angle=r.steering.copy(),
            speed=r.speed.copy(),
            progress=self._progress.copy(),
            closest_waypoint=r.closest_waypoint.copy(),
            track_len=np.full(self.num_cars, self.track.length),
            all_wheels_on_track=r.all_wheels_on_track.copy(),
            sim_time=r.sim_time.copy(),
        )


RewardCallable = Callable[[dict[str, Any]], float]


def _per_car(reward_function: RewardCallable | Sequence[RewardCallable], num_cars: int) -> tuple[RewardFunction, ...]:
    """One checked reward function per car: the K given, or the single one shared by all."""
    functions = [reward_function] * num_cars if callable(reward_function) else list(reward_function)
    if len(functions) != num_cars:
        raise ValueError(f"need one reward function per car ({num_cars}), got {len(functions)}")
    checked = {id(f): f if isinstance(f, RewardFunction) else RewardFunction(f) for f in functions}
    return tuple(checked[id(f)] for f in functions)


def build_params(
    *,
    all_wheels_on_track: bool,
    x: float,
    y: float,
    heading: float,
    distance_from_center: float,
    projection_distance: float,
    progress: float,
    steps: float,
    speed: float,
    steering_angle: float,
    track_width: float,
    track_length: float,
    waypoints: tuple[tuple[float, float], ...],
    closest_waypoints: tuple[int, int],
    is_left_of_center: bool,
    is_reversed: bool,
    is_offtrack: bool,
    sim_time: float,
) -> dict[str, Any]:
    """One fresh DeepRacer reward params dict (all RewardParam keys; time-trial object defaults)."""
    return {
        "all_wheels_on_track": all_wheels_on_track,
        "x": x,
        "y": y,
        "heading": heading,
        "distance_from_center": distance_from_center,
        "projection_distance": projection_distance,
        "progress": progress,
        "steps": steps,
        "speed": speed,
        "steering_angle": steering_angle,
        "track_width": track_width,
        "track_length": track_length,
        "waypoints": list(waypoints),
        "closest_waypoints": list(closest_waypoints),
        "is_left_of_center": is_left_of_center,
        "is_reversed": is_reversed,
        "is_offtrack": is_offtrack,
        "is_crashed": False,
        "closest_objects": [0, 0],
        "objects_location": [],
        "objects_left_of_center": [],
        "objects_speed": [],
        "objects_heading": [],
        "objects_distance_from_center": [],
        "objects_distance": [],
        "object_in_camera": False,
        "sim_time": sim_time,
    }


@dataclass(frozen=True, eq=False)
class _Geometry:
    head: np.ndarray
    distance: np.ndarray
    offset: np.ndarray
    prev_wp: np.ndarray
    next_wp: np.ndarray
    nearest_wp: np.ndarray
    all_wheels_on: np.ndarray
    any_wheel_on: np.ndarray
    is_left: np.ndarray
    width: np.ndarray
    progress: np.ndarray
    heading: np.ndarray


@dataclass(eq=False)
class _Report:
    """Last reported per-car values (kept for cars that did not step)."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    steering: np.ndarray
    speed: np.ndarray
    closest_waypoint: np.ndarray
    all_wheels_on_track: np.ndarray
    sim_time: np.ndarray

    @classmethod
    def empty(cls, k: int) -> _Report:
        return cls(
            x=np.zeros(k),
            y=np.zeros(k),
            heading=np.zeros(k),
            steering=np.zeros(k),
            speed=np.zeros(k),
            closest_waypoint=np.zeros(k, dtype=np.int64),
            all_wheels_on_track=np.ones(k, dtype=bool),
            sim_time=np.zeros(k),
        )

    def reset_rows(self, ids: np.ndarray, head: np.ndarray, heading: np.ndarray, sim_time: np.ndarray) -> None:
        self.x[ids], self.y[ids] = head[:, 0], head[:, 1]
        self.heading[ids] = _wrap_degrees(heading)
        self.steering[ids] = 0.0
        self.speed[ids] = 0.0
        self.closest_waypoint[ids] = 0
        self.all_wheels_on_track[ids] = True
        self.sim_time[ids] = sim_time

    def update_rows(
        self,
        ids: np.ndarray,
        geo: _Geometry,
        steering: np.ndarray,
        speed: np.ndarray,
        sim_time: np.ndarray,
    ) -> None:
        self.x[ids], self.y[ids] = geo.head[:, 0], geo.head[:, 1]
        self.heading[ids] = geo.heading
        self.steering[ids] = steering
        self.speed[ids] = speed
        self.closest_waypoint[ids] = geo.nearest_wp
        self.all_wheels_on_track[ids] = geo.all_wheels_on
        self.sim_time[ids] = sim_time


def _heading_degrees(yaw: np.ndarray) -> np.ndarray:
    return _wrap_degrees(np.degrees(yaw))


def _wrap_degrees(degrees: np.ndarray) -> np.ndarray:
    """Angles in (-180, 180]."""
    wrapped = np.mod(degrees + 180.0, 360.0) - 180.0
    return np.where(wrapped <= -180.0, wrapped + 360.0, wrapped)

