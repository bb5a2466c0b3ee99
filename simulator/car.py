"""Vectorised kinematic bicycle model for K DeepRacer cars (pure numpy).

Geometry, from deepracer-simapp ``bundle/urdf/deepracer/deepracer_single_cam.urdf``
(metres, car base frame: x forward, y left, origin on the ground):

- rear wheels at x = -0.081663, y = +-0.08105; front steering hinges at x = +0.082311,
  y = +-0.079601 -> wheelbase 0.164 m, wheel track ~0.16 m. These four points are the
  wheel contact points used for ``all_wheels_on_track`` and the off-track rule.
- the reward's (x, y) is the "head point" 0.14 m ahead of the base origin.

Model (one step of ``dt = 1/15 s``, DeepRacer's camera/agent rate):

- commands are clipped as DeepRacer does before sending them to Gazebo: steering to
  +-30 deg, speed to [0.1, 4.0] m/s (``MIN_SPEED``/``MAX_SPEED``).
- actuators are first-order lags, discretised exactly: speed follows the commanded speed
  with time constant 0.2 s (Gazebo's wheel velocity controllers and the car's inertia make
  the real sim car reach its commanded speed in a few tenths of a second), steering
  follows the commanded angle with 0.05 s (position-controlled hinges are fast).
- the car moves as a kinematic bicycle referenced at the rear axle: over a step it drives
  the exact distance the lagged speed covers, on a circular arc whose curvature is
  tan(mean steering over the step) / wheelbase. No slip, no collisions, flat ground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

STEP_SECONDS = 1.0 / 15.0


@dataclass(frozen=True)
class CarParams:
    """Car geometry, limits and actuator dynamics (defaults: the DeepRacer sim car)."""

    rear_axle_x: float = -0.081663
    front_axle_x: float = 0.082311
    rear_wheel_y: float = 0.08105
    front_wheel_y: float = 0.079601
    head_offset: float = 0.14  # RELATIVE_POSITION_OF_FRONT_OF_CAR
    max_steering_deg: float = 30.0
    min_speed: float = 0.1
    max_speed: float = 4.0
    speed_time_constant: float = 0.2
    steering_time_constant: float = 0.05
    dt: float = STEP_SECONDS

    @property
    def wheelbase(self) -> float:
        return self.front_axle_x - self.rear_axle_x

    @property
    def wheel_offsets(self) -> np.ndarray:
        """(4, 2) wheel contact points in the base frame: rear-left, rear-right, front-left, front-right."""
        return np.array(
            [
                [self.rear_axle_x, self.rear_wheel_y],
                [self.rear_axle_x, -self.rear_wheel_y],
                [self.front_axle_x, self.front_wheel_y],
                [self.front_axle_x, -self.front_wheel_y],
            ]
        )


@dataclass
class CarState:
    """State of K cars; every field is a (K,) float64 array."""

    x: np.ndarray  # base origin, m
    y: np.ndarray
    yaw: np.ndarray  # rad, x axis = 0, counter-clockwise positive
    speed: np.ndarray  # actual (lagged) speed, m/s
    steering: np.ndarray  # actual (lagged) steering angle, rad, + = left
    params: CarParams = field(default_factory=CarParams)

    @classmethod
    def at_rest(cls, count: int, params: CarParams | None = None) -> CarState:
        return cls(
            x=np.zeros(count),
            y=np.zeros(count),
            yaw=np.zeros(count),
            speed=np.zeros(count),
            steering=np.zeros(count),
            params=params or CarParams(),
        )

    def place(self, cars: np.ndarray, x: np.ndarray, y: np.ndarray, yaw: np.ndarray) -> None:
        """Put ``cars`` at rest at base positions (x, y) facing ``yaw``."""
        self.x[cars] = x
        self.y[cars] = y
        self.yaw[cars] = yaw
        self.speed[cars] = 0.0
        self.steering[cars] = 0.0

    def step(self, cars: np.ndarray, steering_deg: np.ndarray, speed: np.ndarray) -> None:
        """Advance ``cars`` (index array) by one dt under the commanded steering (deg) and speed (m/s)."""
        p = self.params
        limit = math.radians(p.max_steering_deg)
        steer_cmd = np.minimum(np.maximum(np.radians(steering_deg), -limit), limit)
        speed_cmd = np.minimum(np.maximum(speed, p.min_speed), p.max_speed)

        v0 = self.speed[cars]
        decay_v = math.exp(-p.dt / p.speed_time_constant)
        distance = speed_cmd * p.dt + (v0 - speed_cmd) * p.speed_time_constant * (1.0 - decay_v)
        self.speed[cars] = speed_cmd + (v0 - speed_cmd) * decay_v

        d0 = self.steering[cars]
        decay_s = math.exp(-p.dt / p.steering_time_constant)
        mean_factor = p.steering_time_constant / p.dt * (1.0 - decay_s)
        mean_steering = steer_cmd + (d0 - steer_cmd) * mean_factor
        self.steering[cars] = steer_cmd + (d0 - steer_cmd) * decay_s

        yaw0 = self.yaw[cars]
        turn = distance * np.tan(mean_steering) / p.wheelbase
        # rear axle moves along the chord of the arc: length s*sinc(turn/2), direction yaw + turn/2
        chord = distance * np.sinc(turn / (2.0 * np.pi))
        chord_dir = yaw0 + 0.5 * turn
        rear_x = self.x[cars] + p.rear_axle_x * np.cos(yaw0) + chord * np.cos(chord_dir)
        rear_y = self.y[cars] + p.rear_axle_x * np.sin(yaw0) + chord * np.sin(chord_dir)
        yaw1 = np.arctan2(np.sin(yaw0 + turn), np.cos(yaw0 + turn))
        self.x[cars] = rear_x - p.rear_axle_x * np.cos(yaw1)
        self.y[cars] = rear_y - p.rear_axle_x * np.sin(yaw1)
        self.yaw[cars] = yaw1

    def head_points(self) -> np.ndarray:
        """(K, 2) DeepRacer's reward (x, y): the point ``head_offset`` ahead of the base origin."""
        h = self.params.head_offset
        return np.stack((self.x + h * np.cos(self.yaw), self.y + h * np.sin(self.yaw)), axis=1)

    def wheel_points(self) -> np.ndarray:
        """(K, 4, 2) world positions of the four wheel contact points."""
        offsets = self.params.wheel_offsets
        cos, sin = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        wx = self.x[:, None] + cos * offsets[:, 0] - sin * offsets[:, 1]
        wy = self.y[:, None] + sin * offsets[:, 0] + cos * offsets[:, 1]
        return np.stack((wx, wy), axis=2)
