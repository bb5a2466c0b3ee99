"""Simulator throughput: car-steps per second on ONE core, camera and lidar, K = 1, 16, 64.

    .venv/bin/python bench/sim.py                 # ~3 s per configuration
    .venv/bin/python bench/sim.py --seconds 10 --track reInvent2019_track

A car-step is one car advanced by one env step, including the observation (camera render or lidar
scan), the DeepRacer episode rules, building the reward params and calling a reward function
(hotlap's default centre-line reward function, loaded from source like a user's file), and the resets
of cars whose episode ended. Actions come from a noisy pure-pursuit driver computed outside the
timed region, so episodes last like a half-trained model's (some laps, some off-tracks).

Gymnasium's CarRacing-v3 (Box2D physics + a 96x96 RGB pygame render per step, one car) is timed in the
same run as a reference, when Box2D is installed (``pip install "gymnasium[box2d]"``).

The process is pinned to one CPU and BLAS to one thread. Rates are reported per CPU second
(``time.process_time``), which is what one dedicated core would give; wall-clock rates are shown too
because on a shared machine they also count time spent waiting for the CPU.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from simulator.env import EnvSettings, VectorRacingEnv  # noqa: E402
from simulator.reward import load_reward_functions  # noqa: E402
from simulator.track import Track, load_track  # noqa: E402

# A typical centre-line reward function: the one `hotlap train` uses by default, loaded from
# source like a user's file.
FOLLOW_CENTER_LINE = (Path(__file__).resolve().parents[1] / "hotlap" / "defaults" / "reward_function.py").read_text()


@dataclass(frozen=True)
class Rate:
    cpu: float  # car-steps per CPU second
    wall: float  # car-steps per wall second
    episodes: int


def pin_to_one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"


def driver(env: VectorRacingEnv, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy pure pursuit of the centre line."""
    cars, track = env.cars, env.track
    base = np.stack((cars.x, cars.y), axis=1)
    target = track.point_at(track.project(base).distance + 0.45)
    rear_x = cars.x + cars.params.rear_axle_x * np.cos(cars.yaw)
    rear_y = cars.y + cars.params.rear_axle_x * np.sin(cars.yaw)
    alpha = np.arctan2(target[:, 1] - rear_y, target[:, 0] - rear_x) - cars.yaw
    reach = np.hypot(target[:, 0] - rear_x, target[:, 1] - rear_y)
    steering = np.degrees(np.arctan2(2 * cars.params.wheelbase * np.sin(alpha), reach))
    steering += rng.normal(0.0, 8.0, env.num_cars)
    speed = rng.uniform(1.0, 3.0, env.num_cars)
    return steering, speed


def measure_ours(track: Track, sensor: str, cars: int, seconds: float) -> Rate:
    reward = load_reward_functions(FOLLOW_CENTER_LINE, cars)  # one module per car, as the worker does
    env = VectorRacingEnv(track, cars, EnvSettings(sensors=(sensor,)), reward, seed=1)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):  # warm-up
        env.step(*driver(env, rng))
    car_steps = episodes = 0
    cpu = wall = 0.0
    while wall < seconds:
        steering, speed = driver(env, rng)
        c0, w0 = time.process_time(), time.perf_counter()
        result = env.step(steering, speed)
        finished = np.flatnonzero(result.done)
        if finished.size:
            env.reset(finished)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        car_steps += cars
        episodes += finished.size
    return Rate(car_steps / cpu, car_steps / wall, episodes)


def measure_car_racing(seconds: float) -> Rate | str:
    try:
        import gymnasium

        env = gymnasium.make("CarRacing-v3")
    except Exception as error:  # noqa: BLE001 - any failure means "not available here"
        return f"CarRacing-v3 not available ({type(error).__name__}: {error}); try: pip install \"gymnasium[box2d]\""
    env.reset(seed=0)
    env.action_space.seed(0)
    steps = episodes = 0
    cpu = wall = 0.0
    while wall < seconds:
        action = env.action_space.sample()
        c0, w0 = time.process_time(), time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
            episodes += 1
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        steps += 1
    env.close()
    return Rate(steps / cpu, steps / wall, episodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per configuration")
    parser.add_argument("--track", default="reInvent2019_track")
    parser.add_argument("--cars", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()

    print(f"bench/sim.py: {pin_to_one_core()}, numpy {np.__version__}, track {args.track}")
    reference = measure_car_racing(args.seconds)
    if isinstance(reference, str):
        print(reference)
    else:
        print(f"CarRacing-v3 (1 car, Box2D + 96x96 render): {reference.cpu:8.0f} steps/CPU-s "
              f"({reference.wall:.0f}/wall-s)")
    track = load_track(args.track)
    print(f"{'sensor':<20} {'K':>3} {'car-steps/CPU-s':>16} {'wall':>8} {'episodes':>9} {'x CarRacing':>12}")
    for sensor in ("FRONT_FACING_CAMERA", "LIDAR"):
        for cars in args.cars:
            rate = measure_ours(track, sensor, cars, args.seconds)
            ratio = "" if isinstance(reference, str) else f"{rate.cpu / reference.cpu:11.1f}x"
            print(f"{sensor:<20} {cars:>3} {rate.cpu:16.0f} {rate.wall:8.0f} {rate.episodes:9d} {ratio:>12}")


if __name__ == "__main__":
    main()
