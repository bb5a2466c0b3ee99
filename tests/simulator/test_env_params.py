"""Reward calls and ``params`` as DeepRacer makes them (issue 6, items 1, 2, 4, 5).

Expected values are computed here independently (brute-force geometry over the ``params``' own
waypoints and the track file's borders), on tracks where each key can differ: varying width,
clockwise, reversed and open.
"""

from __future__ import annotations

import bisect
import math
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from shared.networks import ActionSpec, PolicyNetwork
from simulator.env import EnvSettings, VectorRacingEnv
from simulator.gym_env import HotlapVectorEnv
from simulator.reward import load_reward_function, load_reward_functions
from simulator.track import Track, available_tracks, load_track
from tests.simulator.synthetic import (
    nearest_on_polyline,
    pure_pursuit_steering,
    reference_track_width,
    straight_rows,
    wavy_arc_rows,
    wavy_loop_rows,
)

LIDAR_ONLY = EnvSettings(sensors=("LIDAR",))

# A community-style stateful reward function: it counts its own calls and remembers the last progress.
STATEFUL = textwrap.dedent("""
    calls = 0
    last_progress = -1.0

    def reward_function(params):
        global calls, last_progress
        calls += 1
        moved_on = params["progress"] > last_progress
        last_progress = params["progress"]
        return float(calls) + (0.5 if moved_on else 0.0)
""")


class Recorder:
    def __init__(self, value: float = 1.0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.value = value

    def __call__(self, params: dict[str, Any]) -> float:
        self.calls.append(params)
        return self.value


def pursue(env: VectorRacingEnv, lookahead: float = 0.45) -> np.ndarray:
    cars = env.cars
    return pure_pursuit_steering(env.track, cars.x, cars.y, cars.yaw, lookahead)


# ---------------------------------------------------------------- 1. reward-function state is per car
K = 8
SPEEDS = np.array([1.0, 1.4, 2.2, 0.8, 3.0, 1.8, 2.6, 1.2])
BIAS_DEG = np.array([0.0, 6.0, -6.0, 0.0, 12.0, -3.0, 0.0, 9.0])  # some cars leave the road: episodes of many lengths


def drive_stateful(env: VectorRacingEnv, cars: list[int], steps: int) -> tuple[dict[int, list[float]], int]:
    """Drive ``env`` (its cars are ``cars`` of the K-car fleet) with restarts: each car's rewards in order,
    and how many episodes ended."""
    rewards: dict[int, list[float]] = {car: [] for car in cars}
    ended = 0
    env.reset()
    for _ in range(steps):
        result = env.step(pursue(env) + BIAS_DEG[cars], SPEEDS[cars])
        for row, car in enumerate(cars):
            if result.status[row] != "prepare":
                rewards[car].append(float(result.reward[row]))
        if result.done.any():
            ended += int(result.done.sum())
            env.reset(np.flatnonzero(result.done))
    return rewards, ended


def test_each_car_sees_the_call_sequence_it_would_see_alone() -> None:
    track = load_track("reInvent2019_track")
    settings = EnvSettings(sensors=("LIDAR",), max_steps=45)
    fleet = VectorRacingEnv(track, K, settings, load_reward_functions(STATEFUL, K))
    together, ended = drive_stateful(fleet, list(range(K)), steps=150)
    assert ended >= 2 * K  # the state carries across episodes too
    alone: dict[int, list[float]] = {}
    for car in range(K):  # K one-car simulators, car k starting where the fleet's car k starts
        single = EnvSettings(sensors=("LIDAR",), max_steps=45, start_offset=car / K, stagger_starts=False)
        env = VectorRacingEnv(track, 1, single, load_reward_functions(STATEFUL, 1))
        alone.update(drive_stateful(env, [car], steps=150)[0])
    for car in range(K):
        assert together[car] == alone[car], f"car {car}"
        assert together[car][:3] == [1.5, 2.5, 3.5]  # its own counter, its own last progress
    # the bug this replaces: one module for all cars mixes their state
    shared = VectorRacingEnv(track, K, settings, load_reward_function(STATEFUL))
    mixed, _ = drive_stateful(shared, list(range(K)), steps=150)
    assert sum(a != b for car in range(K) for a, b in zip(mixed[car], alone[car], strict=False)) > 100


def test_load_reward_functions_gives_independent_modules() -> None:
    first, second = load_reward_functions(STATEFUL, 2)
    params = {"progress": 1.0}
    assert [first(params), first(params), first(params)] == [1.5, 2.0, 3.0]
    assert second(params) == 1.5  # untouched by the other car's calls
    assert first.function.__globals__ is not second.function.__globals__
    assert "reward_function" not in sys.modules


def test_gym_vector_env_loads_a_reward_file_once_per_car(tmp_path: Path) -> None:
    path = tmp_path / "reward_function.py"
    path.write_text(STATEFUL)
    envs = HotlapVectorEnv(3, track="reInvent2019_track", actions=[(0.0, 1.0)],
                           reward_function=path, settings=LIDAR_ONLY)
    envs.reset(seed=0)
    rewards = [envs.step(np.zeros(3, np.int64))[1].tolist() for _ in range(4)]
    assert rewards == [[0.0] * 3, [1.5] * 3, [2.5] * 3, [3.5] * 3]  # every car counts only its own calls


# ---------------------------------------------------------------- 2. DeepRacer's values, plain Python types
FLOAT_KEYS = ("x", "y", "heading", "distance_from_center", "projection_distance", "progress", "steps", "speed",
              "steering_angle", "track_width", "track_length", "sim_time")
BOOL_KEYS = ("all_wheels_on_track", "is_left_of_center", "is_reversed", "is_offtrack", "is_crashed",
             "object_in_camera")
EMPTY_LIST_KEYS = ("objects_location", "objects_left_of_center", "objects_speed", "objects_heading",
                   "objects_distance_from_center", "objects_distance")


def assert_plain_types(params: dict[str, Any]) -> None:
    """Every key's exact Python type as DeepRacer's RewardParam gives it (deepracer-formats.md §1.1)."""
    assert set(params) == {*FLOAT_KEYS, *BOOL_KEYS, *EMPTY_LIST_KEYS, "waypoints", "closest_waypoints",
                           "closest_objects"}
    for key in FLOAT_KEYS:
        assert type(params[key]) is float, (key, type(params[key]))  # not numpy.float64/float32
    for key in BOOL_KEYS:
        assert type(params[key]) is bool, (key, type(params[key]))
    for key in EMPTY_LIST_KEYS:
        assert type(params[key]) is list and params[key] == [], key
    assert type(params["waypoints"]) is list
    assert all(type(p) is tuple and len(p) == 2 and all(type(v) is float for v in p) for p in params["waypoints"])
    for key in ("closest_waypoints", "closest_objects"):
        assert type(params[key]) is list and len(params[key]) == 2, key
        assert all(type(i) is int for i in params[key]), key


DISCRETE = ActionSpec("discrete", ((-30.0, 0.6), (-15.0, 0.8), (0.0, 1.1), (15.0, 0.8), (30.0, 0.6), (7.3, 2.7)))


def test_discrete_actions_arrive_as_the_json_numbers_through_the_policy() -> None:
    """model_metadata's {"speed": 0.8} is params["speed"] == 0.8, the simtrace's number too (no float32)."""
    torch.manual_seed(0)
    policy = PolicyNetwork({"LIDAR": (64,)}, "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", DISCRETE)
    recorder = Recorder(0.1)
    env = VectorRacingEnv(load_track("reInvent2019_track"), 4, LIDAR_ONLY, recorder)
    obs = env.reset()
    for _ in range(15):
        act = policy.act(obs)
        chosen = [DISCRETE.discrete_actions[i] for i in act.action.tolist()]
        before = len(recorder.calls)
        result = env.step(act.steering_deg, act.speed)
        assert list(zip(result.steering_angle.tolist(), result.speed.tolist(), strict=True)) == chosen
        called = [car for car in range(4) if result.status[car] != "prepare"]
        assert [(p["steering_angle"], p["speed"]) for p in recorder.calls[before:]] == [chosen[c] for c in called]
        assert result.reward.tolist() == [0.1 if car in called else 0.0 for car in range(4)]  # not 0.10000000149
        obs = env.reset(np.flatnonzero(result.done)) if result.done.any() else result.obs
    assert {0.6, 0.8} <= {p["speed"] for p in recorder.calls}  # values float32 cannot hold
    for params in recorder.calls:
        assert_plain_types(params)


def test_continuous_actions_arrive_as_the_scaled_value() -> None:
    torch.manual_seed(0)
    spec = ActionSpec("continuous", steering_range=(-25.0, 20.0), speed_range=(0.7, 2.3))
    policy = PolicyNetwork({"LIDAR": (64,)}, "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", spec)
    recorder = Recorder()
    env = VectorRacingEnv(load_track("reInvent2019_track"), 3, LIDAR_ONLY, recorder)
    obs = env.reset()
    for _ in range(3):
        act = policy.act(obs)
        obs = env.step(act.steering_deg, act.speed).obs
    for params in recorder.calls:
        assert_plain_types(params)
    last = recorder.calls[-3:]
    for params, (u_steer, u_speed) in zip(last, np.asarray(act.action, np.float64).tolist(), strict=True):
        u_steer, u_speed = min(max(u_steer, -1.0), 1.0), min(max(u_speed, -1.0), 1.0)
        assert params["steering_angle"] == -25.0 + (u_steer + 1.0) * 0.5 * 45.0
        assert params["speed"] == 0.7 + (u_speed + 1.0) * 0.5 * (2.3 - 0.7)


# ---------------------------------------------------------------- 4. open tracks finish at exactly 100
def odd_straight(length: float) -> Track:
    return Track.from_array(straight_rows(length=length, width=1.0, points=22), f"straight-{length}")


def hits_rounding(track: Track, start_offset: float) -> bool:
    """Does the end of the track (the head point projected at the end of the last segment) give
    100 * (d - s) / (L - s) < 100 by float rounding, as hotlap computed progress before?"""
    start = start_offset * track.length
    end = track.waypoint_distance[-2] + 1.0 * track.segment_length[-1]
    return 100.0 * (end - start) / (track.length - start) < 100.0


def odd_lengths(start_offset: float) -> list[float]:
    """Straight_track's length and odd lengths: 6 that hit the rounding, 3 that do not."""
    pool = [round(2.0 + 0.0137 * i, 4) for i in range(600)]
    hit = [length for length in pool if hits_rounding(odd_straight(length), start_offset)]
    miss = [length for length in pool if not hits_rounding(odd_straight(length), start_offset)]
    return [5.707379853510635, *hit[::len(hit) // 6][:6], *miss[:: len(miss) // 3][:3]]


def packaged_open_tracks() -> list[str]:
    return [name for name in available_tracks() if not load_track(name).closed]


@pytest.mark.parametrize(("start_offset", "length"), [(o, length) for o in (0.0, 0.3) for length in odd_lengths(o)])
def test_an_open_track_of_any_length_ends_with_progress_exactly_100(start_offset: float, length: float) -> None:
    assert_open_track_finishes(odd_straight(length), start_offset)


def test_the_odd_lengths_do_hit_the_rounding() -> None:
    for start_offset in (0.0, 0.3):
        hits = [length for length in odd_lengths(start_offset) if hits_rounding(odd_straight(length), start_offset)]
        assert len(hits) >= 6  # where today's 100 * (d - s) / (L - s) gives 99.99999999999999 at the end
    assert hits_rounding(odd_straight(5.707379853510635), 0.0)  # Straight_track's length


@pytest.mark.parametrize("name", packaged_open_tracks())
def test_every_packaged_open_track_finishes(name: str) -> None:
    assert_open_track_finishes(load_track(name), 0.0)
    assert_open_track_finishes(load_track(name), 0.0, reverse=True)


def assert_open_track_finishes(track: Track, start_offset: float, reverse: bool = False) -> None:
    recorder = Recorder()
    settings = EnvSettings(sensors=("LIDAR",), start_offset=start_offset, reverse=reverse)
    env = VectorRacingEnv(track, 1, settings, recorder)
    env.reset()
    for _ in range(3000):
        result = env.step(pursue(env, 0.3), np.full(1, 1.5))
        if result.done[0]:
            break
    assert result.status[0] == "lap_complete", (track.name, result.status[0], result.progress[0])
    assert result.progress[0] == 100.0 and recorder.calls[-1]["progress"] == 100.0
    assert all(call["progress"] < 100.0 for call in recorder.calls[:-1])


# ---------------------------------------------------------------- 5. every key where it can differ
def wavy(ccw: bool = True) -> Track:
    return Track.from_array(wavy_loop_rows(ccw=ccw), "wavy-ccw" if ccw else "wavy-cw")


def arc() -> Track:
    return Track.from_array(wavy_arc_rows(), "wavy-arc")


CASES = {
    "varying width, counter-clockwise": (wavy, False),
    "varying width, clockwise": (lambda: wavy(ccw=False), False),
    "varying width, reversed": (wavy, True),
    "varying width, open": (arc, False),
    "varying width, open, reversed": (arc, True),
    "reInvent2019_track_cw": (lambda: load_track("reInvent2019_track_cw"), False),
    "reInvent2019_track reversed": (lambda: load_track("reInvent2019_track"), True),
    "LGSWide reversed": (lambda: load_track("LGSWide"), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_key_matches_independent_geometry(case: str) -> None:
    make, reverse = CASES[case]
    source = make()
    recorder = Recorder()
    env = VectorRacingEnv(source, 2, EnvSettings(sensors=("LIDAR",), reverse=reverse), recorder)
    env.reset()
    waypoints = source.center[::-1] if reverse else source.center
    expected_waypoints = [(float(x), float(y)) for x, y in waypoints]
    cumulative = [0.0]
    for a, b in zip(expected_waypoints[:-1], expected_waypoints[1:], strict=True):
        cumulative.append(cumulative[-1] + math.dist(a, b))
    length = cumulative[-1]
    starts = [nearest_on_polyline((env.cars.x[car], env.cars.y[car]), waypoints)[0] for car in range(2)]
    rng = np.random.default_rng(1)
    checked = {"left": 0, "right": 0}
    widths: list[float] = []
    for _ in range(160):
        before = len(recorder.calls)
        result = env.step(pursue(env) + rng.uniform(-14, 14, 2), np.full(2, 1.6))
        running = [car for car in range(2) if result.status[car] != "prepare"]
        for params, car in zip(recorder.calls[before:], running, strict=True):
            assert_plain_types(params)
            yaw = env.cars.yaw[car]
            head = (env.cars.x[car] + 0.14 * math.cos(yaw), env.cars.y[car] + 0.14 * math.sin(yaw))
            along, offset, segment, nearest = nearest_on_polyline(head, waypoints)
            assert params["waypoints"] == expected_waypoints
            assert params["is_reversed"] is reverse
            assert (params["x"], params["y"]) == pytest.approx(head, abs=1e-12)
            assert params["distance_from_center"] == pytest.approx(offset, abs=1e-9)
            assert params["projection_distance"] == pytest.approx(along, abs=1e-9)
            assert params["track_length"] == pytest.approx(length, abs=1e-9)
            width = reference_track_width(head, waypoints, source.inner, source.outer)
            assert params["track_width"] == pytest.approx(width, abs=1e-9)
            widths.append(width)
            prev = bisect.bisect_right(cumulative, along) - 1
            last = len(expected_waypoints) - 1
            assert params["closest_waypoints"] == [prev, prev + 1 if prev < last else 0]
            if source.closed:
                progress = 100 * ((along - starts[car]) % length) / length
            else:
                progress = 100 * (along - starts[car]) / (length - starts[car])
            if 0.5 < progress < 99.5:  # away from the start line's wrap
                assert params["progress"] == pytest.approx(progress, abs=1e-9)
            # heading: the car's yaw in degrees, and driving along the params' waypoints (reversed ones too)
            assert params["heading"] == pytest.approx(math.degrees(math.atan2(math.sin(yaw), math.cos(yaw))))
            tangent = np.subtract(waypoints[segment + 1], waypoints[segment])
            tangent /= np.hypot(*tangent)
            bearing = math.degrees(math.atan2(tangent[1], tangent[0]))
            assert abs((params["heading"] - bearing + 180) % 360 - 180) < 60
            # is_left_of_center: left of the centre line as the car drives it (cross product)
            side = tangent[0] * (head[1] - nearest[1]) - tangent[1] * (head[0] - nearest[0])
            if abs(side) > 0.03 and params["all_wheels_on_track"]:  # clearly on one side
                assert params["is_left_of_center"] is bool(side > 0)
                checked["left" if side > 0 else "right"] += 1
        if result.done.any():
            env.reset(np.flatnonzero(result.done))
            for car in np.flatnonzero(result.done):  # round robin: the next episode starts further on
                starts[car] = nearest_on_polyline((env.cars.x[car], env.cars.y[car]), waypoints)[0]
    assert checked["left"] > 20 and checked["right"] > 20, checked
    if case.startswith("varying width"):
        # the local width, not the mean: these values differ by far more than any rounding
        assert max(widths) - min(widths) > 0.3
