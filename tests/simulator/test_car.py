from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.car import STEP_SECONDS, CarParams, CarState


def drive(cars: CarState, steering_deg: float | np.ndarray, speed: float | np.ndarray, steps: int) -> None:
    k = len(cars.x)
    index = np.arange(k)
    for _ in range(steps):
        cars.step(index, np.broadcast_to(steering_deg, (k,)), np.broadcast_to(speed, (k,)))


def test_geometry_constants_match_the_deepracer_urdf() -> None:
    p = CarParams()
    assert p.wheelbase == pytest.approx(0.164, abs=1e-3)
    assert 2 * p.rear_wheel_y == pytest.approx(0.16, abs=3e-3)
    assert p.dt == pytest.approx(1 / 15)
    assert p.head_offset == 0.14


def test_speed_follows_a_first_order_lag_and_distance_is_its_integral() -> None:
    cars = CarState.at_rest(1)
    steps = 12
    drive(cars, 0.0, 2.0, steps)
    t, tau = steps * STEP_SECONDS, 0.2
    assert cars.speed[0] == pytest.approx(2.0 * (1 - math.exp(-t / tau)))
    assert cars.x[0] == pytest.approx(2.0 * t - 2.0 * tau * (1 - math.exp(-t / tau)))
    assert cars.y[0] == pytest.approx(0.0) and cars.yaw[0] == pytest.approx(0.0)


def test_commands_are_clipped_like_deepracer() -> None:
    wild, tame = CarState.at_rest(1), CarState.at_rest(1)
    drive(wild, 90.0, 10.0, 30)
    drive(tame, 30.0, 4.0, 30)
    np.testing.assert_allclose([wild.x, wild.y, wild.yaw], [tame.x, tame.y, tame.yaw])
    slow = CarState.at_rest(1)
    drive(slow, 0.0, 0.0, 60)
    assert slow.speed[0] == pytest.approx(0.1, rel=1e-6)  # MIN_SPEED


def test_steady_turn_follows_a_circle_of_radius_wheelbase_over_tan_steering() -> None:
    cars = CarState.at_rest(1)
    steering = 20.0
    drive(cars, steering, 1.0, 30)  # settle speed and steering
    radius = CarParams().wheelbase / math.tan(math.radians(steering))
    rear = []
    for _ in range(40):
        drive(cars, steering, 1.0, 1)
        rear.append((cars.x[0] + cars.params.rear_axle_x * math.cos(cars.yaw[0]),
                     cars.y[0] + cars.params.rear_axle_x * math.sin(cars.yaw[0])))
    rear_points = np.array(rear)
    # circle centre: left of the rear axle by the radius
    yaw = cars.yaw[0]
    centre = rear_points[-1] + radius * np.array([-math.sin(yaw), math.cos(yaw)])
    np.testing.assert_allclose(np.hypot(*(rear_points - centre).T), radius, rtol=1e-3)


def test_left_steering_turns_left() -> None:
    cars = CarState.at_rest(2)
    index = np.arange(2)
    for _ in range(20):
        cars.step(index, np.array([15.0, -15.0]), np.array([1.0, 1.0]))
    assert cars.yaw[0] > 0 > cars.yaw[1]
    assert cars.y[0] > 0 > cars.y[1]


def test_vectorised_step_equals_one_car_at_a_time() -> None:
    rng = np.random.default_rng(0)
    fleet = CarState.at_rest(5)
    singles = [CarState.at_rest(1) for _ in range(5)]
    for _ in range(25):
        steering, speed = rng.uniform(-40, 40, 5), rng.uniform(-1, 5, 5)
        subset = np.array([0, 2, 3])
        fleet.step(subset, steering[subset], speed[subset])
        for k in subset:
            singles[k].step(np.array([0]), steering[k : k + 1], speed[k : k + 1])
    for k, single in enumerate(singles):
        np.testing.assert_allclose([fleet.x[k], fleet.y[k], fleet.yaw[k]], [single.x[0], single.y[0], single.yaw[0]])
    assert fleet.x[1] == 0.0 and fleet.x[4] == 0.0  # not stepped


def test_yaw_stays_in_minus_pi_to_pi() -> None:
    cars = CarState.at_rest(1)
    drive(cars, 30.0, 3.0, 200)
    assert -math.pi <= cars.yaw[0] <= math.pi


def test_head_and_wheel_points() -> None:
    cars = CarState.at_rest(1)
    cars.place(np.array([0]), np.array([1.0]), np.array([2.0]), np.array([math.pi / 2]))
    np.testing.assert_allclose(cars.head_points(), [[1.0, 2.14]], atol=1e-12)
    wheels = cars.wheel_points()[0]
    # facing +y: rear-left is at -x (left of the car), behind the base
    np.testing.assert_allclose(wheels[0], [1.0 - 0.08105, 2.0 - 0.081663], atol=1e-12)
    np.testing.assert_allclose(wheels[3], [1.0 + 0.079601, 2.0 + 0.082311], atol=1e-12)
