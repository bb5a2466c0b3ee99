from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import pytest

from simulator.car import CarParams
from simulator.env import EPISODE_STATUS_LABELS, STATUS_TOKENS, EnvSettings, VectorRacingEnv
from simulator.reward import RewardFunctionError
from simulator.track import Track, load_track
from tests.simulator.synthetic import (
    circle_track,
    nearest_on_polyline,
    pure_pursuit_steering,
    reference_on_road,
    straight_track,
)

LIDAR_ONLY = EnvSettings(sensors=("LIDAR",))
DEEPRACER_KEYS = {
    "all_wheels_on_track", "x", "y", "heading", "distance_from_center", "projection_distance", "progress",
    "steps", "speed", "steering_angle", "track_width", "track_length", "waypoints", "closest_waypoints",
    "is_left_of_center", "is_reversed", "is_offtrack", "is_crashed", "closest_objects", "objects_location",
    "objects_left_of_center", "objects_speed", "objects_heading", "objects_distance_from_center",
    "objects_distance", "object_in_camera", "sim_time",
}  # fmt: skip


class Recorder:
    """A reward function that keeps every params dict it was given."""

    def __init__(self, value: float = 1.0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.value = value

    def __call__(self, params: dict[str, Any]) -> float:
        self.calls.append(params)
        return self.value


@pytest.fixture(scope="module")
def reinvent() -> Track:
    return load_track("reInvent2019_track")


def pursue(env: VectorRacingEnv, lookahead: float = 0.45) -> np.ndarray:
    cars = env.cars
    return pure_pursuit_steering(env.track, cars.x, cars.y, cars.yaw, lookahead)


def run_until_done(env: VectorRacingEnv, speed: float, lookahead: float = 0.45, limit: int = 2000) -> list[Any]:
    results = []
    for _ in range(limit):
        result = env.step(pursue(env, lookahead), np.full(env.num_cars, speed))
        results.append(result)
        if result.done.all():
            break
    return results


# ---------------------------------------------------------------- phases
def test_first_step_is_prepare_without_reward_call_or_motion() -> None:
    recorder = Recorder()
    env = VectorRacingEnv(circle_track(), 2, LIDAR_ONLY, recorder)
    env.reset()
    start_x = env.cars.x.copy()
    first = env.step(np.zeros(2), np.full(2, 2.0))
    assert first.status.tolist() == ["prepare", "prepare"]
    assert first.reward.tolist() == [0.0, 0.0] and first.reward.dtype == np.float64
    assert recorder.calls == [] and np.array_equal(env.cars.x, start_x)
    assert first.steps.tolist() == [1, 1] and not first.done.any()
    second = env.step(np.zeros(2), np.full(2, 2.0))
    assert second.status.tolist() == ["in_progress", "in_progress"]
    assert len(recorder.calls) == 2 and [c["steps"] for c in recorder.calls] == [2.0, 2.0]
    assert second.reward.tolist() == [1.0, 1.0]


def test_step_before_reset_is_an_error() -> None:
    env = VectorRacingEnv(circle_track(), 1, LIDAR_ONLY, Recorder())
    with pytest.raises(RuntimeError):
        env.step(np.zeros(1), np.ones(1))


def test_status_labels_cover_every_token() -> None:
    assert set(EPISODE_STATUS_LABELS) == set(STATUS_TOKENS)
    assert EPISODE_STATUS_LABELS["lap_complete"] == "Lap complete"
    assert EPISODE_STATUS_LABELS["time_up"] == "Time Up"
    assert EPISODE_STATUS_LABELS["off_track"] == "Off track"


# ---------------------------------------------------------------- params
def test_params_carry_every_deepracer_key_with_independent_geometry() -> None:
    track = circle_track(radius=3.0, width=1.2, points=361)
    recorder = Recorder()
    env = VectorRacingEnv(track, 2, LIDAR_ONLY, recorder)
    env.reset()
    starts = np.array([0.0, track.length / 2])  # car 1 starts half a lap on (stagger 1/K)
    rng = np.random.default_rng(0)
    cumulative = list(track.waypoint_distance)
    for step in range(1, 60):
        steering = pursue(env) + rng.uniform(-4, 4, 2)
        speed = rng.uniform(0.8, 2.5, 2)
        result = env.step(steering, speed)
        if step == 1:
            continue
        for car, params in enumerate(recorder.calls[-2:]):
            assert set(params) == DEEPRACER_KEYS
            yaw = env.cars.yaw[car]
            head = (env.cars.x[car] + 0.14 * math.cos(yaw), env.cars.y[car] + 0.14 * math.sin(yaw))
            along, offset, segment, nearest = nearest_on_polyline(head, track.center)
            assert (params["x"], params["y"]) == pytest.approx(head, abs=1e-12)
            assert params["heading"] == pytest.approx(math.degrees(yaw), abs=1e-9)
            assert -180 < params["heading"] <= 180
            assert params["distance_from_center"] == pytest.approx(offset, abs=1e-9)
            assert params["projection_distance"] == pytest.approx(along, abs=1e-9)
            progress = 100 * ((along - starts[car]) % track.length) / track.length
            assert params["progress"] == pytest.approx(progress, abs=1e-9)
            assert params["steps"] == float(step) and type(params["steps"]) is float
            assert params["speed"] == speed[car] and params["steering_angle"] == steering[car]
            assert params["track_width"] == pytest.approx(1.2, abs=1e-3)
            assert params["track_length"] == pytest.approx(track.length)
            assert params["waypoints"] == [tuple(p) for p in track.center.tolist()]
            prev = bisect.bisect_right(cumulative, along) - 1
            assert params["closest_waypoints"] == [prev, (prev + 1) % len(cumulative)]
            tangent = track.center[segment + 1] - track.center[segment]
            side = tangent[0] * (head[1] - nearest[1]) - tangent[1] * (head[0] - nearest[0])
            if abs(side) > 1e-9:
                assert params["is_left_of_center"] is bool(side > 0)
            wheels = env.cars.wheel_points()[car]
            assert params["all_wheels_on_track"] is all(reference_on_road(tuple(w), track) for w in wheels)
            assert params["is_reversed"] is False and params["is_offtrack"] is False
            assert params["is_crashed"] is False and params["object_in_camera"] is False
            assert params["closest_objects"] == [0, 0]
            for key in ("objects_location", "objects_left_of_center", "objects_speed", "objects_heading",
                        "objects_distance_from_center", "objects_distance"):  # fmt: skip
                assert params[key] == []
            assert params["sim_time"] == pytest.approx(step / 15)
            nearest = min(params["closest_waypoints"], key=lambda i: math.dist(head, track.center[i]))
            assert result.closest_waypoint[car] == nearest
            assert result.x[car] == params["x"] and result.progress[car] == params["progress"]
            assert result.steering_angle[car] == steering[car] and result.speed[car] == speed[car]
            for key in ("x", "y", "heading", "distance_from_center", "progress", "track_width", "sim_time"):
                assert type(params[key]) is float, key
    assert not result.done.any()


def test_each_call_gets_fresh_params() -> None:
    seen: list[tuple[int, list[int]]] = []

    def vandal(params: dict[str, Any]) -> float:
        seen.append((len(params["waypoints"]), list(params["closest_waypoints"])))
        params["waypoints"].clear()
        params["closest_waypoints"].append(99)
        params["objects_location"].append([1, 2])
        return 0.5

    env = VectorRacingEnv(circle_track(), 2, LIDAR_ONLY, vandal)
    env.reset()
    for _ in range(4):
        env.step(pursue(env), np.ones(2))
    assert len(seen) == 6
    assert all(count == 181 and len(wps) == 2 for count, wps in seen)


def test_reward_function_errors_propagate() -> None:
    def broken(params: dict[str, Any]) -> float:
        return params["no_such_key"]

    env = VectorRacingEnv(circle_track(), 1, LIDAR_ONLY, broken)
    env.reset()
    env.step(np.zeros(1), np.ones(1))
    with pytest.raises(RewardFunctionError, match="KeyError"):
        env.step(np.zeros(1), np.ones(1))


# ---------------------------------------------------------------- episode rules
def test_driving_straight_off_a_bend_is_off_track() -> None:
    recorder = Recorder()
    env = VectorRacingEnv(circle_track(radius=3.0, width=1.2), 1, LIDAR_ONLY, recorder)
    env.reset()
    statuses, wheels = [], []
    for _ in range(200):
        result = env.step(np.zeros(1), np.ones(1))
        statuses.append(result.status[0])
        wheels.append(result.all_wheels_on_track[0])
        if result.done[0]:
            break
    assert statuses[-1] == "off_track" and result.terminated[0] and not result.truncated[0]
    assert recorder.calls[-1]["is_offtrack"] is True and recorder.calls[-1]["all_wheels_on_track"] is False
    assert not any(call["is_offtrack"] for call in recorder.calls[:-1])
    # some wheels left the road a few steps before the last one did: still in progress then
    partly_off = [s for s, w in zip(statuses, wheels, strict=True) if not w]
    assert partly_off.count("in_progress") >= 1
    # a done car stays done and frozen until reset
    calls, x = len(recorder.calls), env.cars.x.copy()
    again = env.step(np.zeros(1), np.ones(1))
    assert again.done[0] and again.status[0] == "off_track" and again.reward[0] == 0.0
    assert len(recorder.calls) == calls and np.array_equal(env.cars.x, x)
    assert again.steps[0] == result.steps[0]
    env.reset(np.array([0]))
    assert env.step(np.zeros(1), np.ones(1)).status[0] == "prepare"


def test_pure_pursuit_completes_a_lap_on_a_real_track(reinvent: Track) -> None:
    recorder = Recorder()
    env = VectorRacingEnv(reinvent, 2, LIDAR_ONLY, recorder)
    env.reset()
    results = run_until_done(env, speed=2.0)
    final = results[-1]
    assert final.status.tolist() == ["lap_complete", "lap_complete"]
    assert final.progress.tolist() == [100.0, 100.0]
    assert final.terminated.all() and not final.truncated.any()
    assert final.all_wheels_on_track.all()
    progress = np.array([r.progress for r in results])
    assert np.all(np.diff(progress, axis=0) > -1e-9)  # car 1 crosses the start line: no jump back
    assert np.all(np.diff(progress, axis=0) < 2.0)
    assert 150 < len(results) < 220  # ~23.1 m at ~2 m/s, 15 steps/s
    assert recorder.calls[-1]["progress"] == 100.0


def test_reverse_drives_the_track_the_other_way(reinvent: Track) -> None:
    recorder = Recorder()
    env = VectorRacingEnv(reinvent, 1, EnvSettings(sensors=("LIDAR",), reverse=True), recorder)
    env.reset()
    final = run_until_done(env, speed=2.0)[-1]
    assert final.status[0] == "lap_complete"
    params = recorder.calls[-1]
    assert params["is_reversed"] is True
    assert params["waypoints"] == [tuple(p) for p in reinvent.center[::-1].tolist()]
    assert env.track.is_ccw is False


def test_open_track_runs_from_first_to_last_waypoint() -> None:
    track = straight_track(length=6.0, width=1.0)
    env = VectorRacingEnv(track, 2, LIDAR_ONLY, Recorder())
    env.reset()
    results = run_until_done(env, speed=1.5)
    assert results[-1].status.tolist() == ["lap_complete", "lap_complete"]  # open tracks: no staggered starts
    halfway = next(r for r in results if r.x[0] >= 3.0)
    assert halfway.progress[0] == pytest.approx(100 * halfway.x[0] / 6.0)


def test_driving_the_wrong_way_is_reversed() -> None:
    env = VectorRacingEnv(circle_track(radius=3.0, width=1.6), 1, LIDAR_ONLY, Recorder())
    env.reset()
    results = run_until_done(env, speed=0.6, lookahead=-0.5, limit=400)  # chase a point behind: U-turn
    assert results[-1].status[0] == "reversed"
    progress = [r.progress[0] for r in results[-16:]]
    assert all(b < a for a, b in zip(progress[:-1], progress[1:], strict=True))


def test_reversing_over_the_start_line_reads_negative_progress() -> None:
    """DeepRacer's compute_current_prog (deepracer-formats.md §1.1 `progress`): 0.5% of the lap behind
    the start, coming from 0.5% ahead, is -0.5, not 99.5; the trainer's intake admits such episodes."""
    track = circle_track(radius=3.0, width=1.6)
    env = VectorRacingEnv(track, 1, LIDAR_ONLY, Recorder())
    env.reset()
    start = env._start_distance[0]
    env._prev_progress[0] = 0.5
    behind = np.array([(start - 0.005 * track.length) % track.length])
    assert env._progress_of(np.array([0]), behind)[0] == pytest.approx(-0.5)


def test_a_car_that_cannot_move_is_immobilized() -> None:
    env = VectorRacingEnv(circle_track(), 1, LIDAR_ONLY, Recorder(), car_params=CarParams(min_speed=0.0))
    env.reset()
    statuses = [env.step(np.zeros(1), np.zeros(1)).status[0] for _ in range(16)]
    assert statuses[0] == "prepare" and statuses[1:15] == ["in_progress"] * 14
    assert statuses[15] == "immobilized"  # 15 run steps with <= 0.0003 m of motion
    creeping = VectorRacingEnv(circle_track(), 1, LIDAR_ONLY, Recorder())  # DeepRacer's 0.1 m/s floor
    creeping.reset()
    assert {creeping.step(np.zeros(1), np.zeros(1)).status[0] for _ in range(30)} == {"prepare", "in_progress"}


def test_max_steps_is_time_up_and_truncated() -> None:
    env = VectorRacingEnv(circle_track(), 1, EnvSettings(sensors=("LIDAR",), max_steps=5), Recorder())
    env.reset()
    results = [env.step(pursue(env), np.ones(1)) for _ in range(5)]
    assert [r.status[0] for r in results] == ["prepare"] + ["in_progress"] * 3 + ["time_up"]
    assert results[-1].truncated[0] and not results[-1].terminated[0] and results[-1].done[0]


# ---------------------------------------------------------------- cars, resets, starts
def test_inactive_cars_do_not_move_or_call_the_reward() -> None:
    recorder = Recorder()
    env = VectorRacingEnv(circle_track(), 3, LIDAR_ONLY, recorder)
    env.reset()
    active = np.array([True, False, True])
    for _ in range(5):
        result = env.step(pursue(env), np.ones(3), active=active)
    assert result.steps.tolist() == [5, 0, 5]
    assert result.status.tolist() == ["in_progress", "prepare", "in_progress"]
    assert len(recorder.calls) == 8 and result.reward[1] == 0.0
    start, _ = env.track.pose_at(np.array([env.track.length / 3]))
    assert (env.cars.x[1], env.cars.y[1]) == pytest.approx(tuple(start[0]))


def test_round_robin_and_staggered_starts() -> None:
    track = circle_track()
    env = VectorRacingEnv(track, 2, LIDAR_ONLY, Recorder())

    def start_distance(car: int) -> float:
        return float(track.project(np.array([[env.cars.x[car], env.cars.y[car]]])).distance[0])

    env.reset()
    assert start_distance(0) == pytest.approx(0.0, abs=1e-9)
    assert start_distance(1) == pytest.approx(track.length / 2, abs=1e-6)
    for episode in (1, 2):
        env.reset(np.array([0]))
        assert start_distance(0) == pytest.approx(0.05 * episode * track.length, abs=1e-6)
    assert start_distance(1) == pytest.approx(track.length / 2, abs=1e-6)  # untouched
    fixed = VectorRacingEnv(
        track, 2, EnvSettings(sensors=("LIDAR",), start_offset=0.25, stagger_starts=False, round_robin_advance=0.0),
        Recorder(),
    )
    fixed.reset()
    fixed.reset()
    assert [pytest.approx(track.length / 4, abs=1e-6)] * 2 == [
        float(d) for d in track.project(np.stack((fixed.cars.x, fixed.cars.y), axis=1)).distance
    ]


def test_evaluation_starts_are_given_and_leave_the_round_robin_alone() -> None:
    """The worker's evaluation trials start at i/N of the lap (after start_offset) without moving the
    car's round-robin sequence of training starts."""
    track = circle_track()
    env = VectorRacingEnv(track, 2, LIDAR_ONLY, Recorder())

    def start_distance(car: int) -> float:
        return float(track.project(np.array([[env.cars.x[car], env.cars.y[car]]])).distance[0])

    env.reset()
    env.reset(np.array([1, 0]), start_fraction=np.array([0.75, 1 / 3]))  # given in car-id order of the call
    assert start_distance(0) == pytest.approx(track.length / 3, abs=1e-6)
    assert start_distance(1) == pytest.approx(track.length * 0.75, abs=1e-6)
    env.reset(np.array([0]))
    assert start_distance(0) == pytest.approx(0.05 * track.length, abs=1e-6)  # the round robin's next start
    with pytest.raises(ValueError, match="one value per distinct car id"):
        env.reset(np.array([0, 1]), start_fraction=np.array([0.5]))


def test_reset_returns_obs_for_all_cars_and_keeps_the_others(reinvent: Track) -> None:
    env = VectorRacingEnv(reinvent, 3, EnvSettings(), Recorder())
    assert env.observation_spec == {"FRONT_FACING_CAMERA": ((120, 160), np.dtype(np.uint8))}
    first = env.reset()["FRONT_FACING_CAMERA"]
    assert first.shape == (3, 120, 160)
    for _ in range(10):
        moved = env.step(pursue(env), np.full(3, 2.0)).obs["FRONT_FACING_CAMERA"]
    assert not np.array_equal(moved[0], first[0])
    again = env.reset(np.array([1]))["FRONT_FACING_CAMERA"]
    np.testing.assert_array_equal(again[0], moved[0])
    np.testing.assert_array_equal(again[2], moved[2])
    assert not np.array_equal(again[1], moved[1])
    assert moved is not again  # each call hands out fresh arrays


def test_reseed_restarts_noise_starts_and_clock() -> None:
    def rollout(env: VectorRacingEnv) -> tuple[np.ndarray, np.ndarray]:
        env.reset()
        result = None
        for _ in range(5):
            result = env.step(pursue(env), np.ones(2))
        assert result is not None
        return result.obs["LIDAR"], result.sim_time

    env = VectorRacingEnv(circle_track(), 2, LIDAR_ONLY, Recorder(), seed=3)
    lidar_a, time_a = rollout(env)
    env.reseed(3)
    lidar_b, time_b = rollout(env)
    np.testing.assert_array_equal(lidar_a, lidar_b)
    np.testing.assert_array_equal(time_a, time_b)
