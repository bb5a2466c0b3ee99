"""`hotlap render`: look at what the simulator shows the car.

Drives one car — with a trained model from a store, or with a centre-line pure-pursuit driver —
and writes one PNG: a strip of camera frames along the drive (what the network sees) above a
top-down map of the track with the car's trajectory.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator.env import EnvSettings, VectorRacingEnv
from simulator.stacking import ObservationStack
from simulator.track import Track

CAMERAS = ("FRONT_FACING_CAMERA", "STEREO_CAMERAS")
LOOKAHEAD_M = 0.45
ROAD_RGB = (150, 150, 150)
GROUND_RGB = (34, 70, 34)
TRAJECTORY_RGB = (230, 40, 40)
START_RGB = (40, 120, 255)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """A minimal PNG writer (8-bit RGB), so rendering needs no imaging library."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].astype(np.uint8).tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
                     + chunk(b"IEND", b""))


def pure_pursuit(track: Track, x: np.ndarray, y: np.ndarray, heading_deg: np.ndarray) -> np.ndarray:
    """Steering (deg) toward the centre-line point LOOKAHEAD_M ahead of each car."""
    points = np.stack((x, y), axis=1)
    ahead = track.point_at(track.project(points).distance + LOOKAHEAD_M)
    bearing = np.degrees(np.arctan2(ahead[:, 1] - y, ahead[:, 0] - x))
    error = (bearing - heading_deg + 180.0) % 360.0 - 180.0
    return np.clip(2.0 * error, -30.0, 30.0)


@dataclass
class Drive:
    frames: list[np.ndarray]  # camera images (120, 160) uint8
    trajectory: np.ndarray  # (T, 2) head points
    status: str
    progress: float


def drive(env: VectorRacingEnv, steps: int, frame_count: int, policy: object | None = None,
          speed: float = 1.0, stack_size: int = 1) -> Drive:
    """Drive one car; the policy sees the last `stack_size` observations, as in training."""
    obs = env.reset()
    stack = ObservationStack(stack_size)
    policy_obs = stack.reset(obs)
    camera = next(name for name in CAMERAS if name in obs)
    frames, points = [], []
    x, y, heading = env_pose(env)
    status, progress = "prepare", 0.0
    for _ in range(steps):
        if policy is not None:
            act = policy.act(policy_obs, deterministic=True)  # type: ignore[attr-defined]
            steering, target_speed = act.steering_deg, act.speed
        else:
            steering, target_speed = pure_pursuit(env.track, x, y, heading), np.full(1, speed)
        image = obs[camera][0]  # this step's frame (first lens), not the stack
        frames.append(image[0] if image.ndim == 3 else image)
        result = env.step(np.asarray(steering, np.float64), np.asarray(target_speed, np.float64))
        obs = result.obs
        policy_obs = stack.push(obs)
        x, y, heading = result.x, result.y, result.heading
        points.append((float(x[0]), float(y[0])))
        status, progress = str(result.status[0]), float(result.progress[0])
        if result.done[0]:
            break
    chosen = np.linspace(0, len(frames) - 1, min(frame_count, len(frames))).astype(int)
    return Drive([frames[i] for i in chosen], np.array(points), status, progress)


def env_pose(env: VectorRacingEnv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The car's pose before its first step: the start of the centre line, heading along it."""
    points, heading_rad = env.track.pose_at(np.zeros(1))
    return points[:, 0], points[:, 1], np.degrees(heading_rad)


def frame_strip(frames: list[np.ndarray], scale: int = 2) -> np.ndarray:
    gap = np.full((120 * scale, 4, 3), 255, np.uint8)
    tiles = []
    for frame in frames:
        big = np.kron(frame, np.ones((scale, scale), np.uint8))
        tiles += [np.repeat(big[:, :, None], 3, axis=2), gap]
    return np.concatenate(tiles[:-1], axis=1)


def track_map(track: Track, trajectory: np.ndarray, width_px: int) -> np.ndarray:
    lower, upper = track.bounds
    margin = 0.3
    lower, upper = lower - margin, upper + margin
    metres_per_px = (upper[0] - lower[0]) / width_px
    height_px = int(np.ceil((upper[1] - lower[1]) / metres_per_px))
    cols, rows = np.meshgrid(np.arange(width_px), np.arange(height_px))
    xs = lower[0] + (cols + 0.5) * metres_per_px
    ys = upper[1] - (rows + 0.5) * metres_per_px  # image rows grow downward, y grows up
    on_road = track.road_mask.contains(np.stack((xs.ravel(), ys.ravel()), axis=1)).reshape(height_px, width_px)
    image = np.where(on_road[:, :, None], np.array(ROAD_RGB, np.uint8), np.array(GROUND_RGB, np.uint8))

    def plot(points: np.ndarray, rgb: tuple[int, int, int], radius: int) -> None:
        c = ((points[:, 0] - lower[0]) / metres_per_px).astype(int)
        r = ((upper[1] - points[:, 1]) / metres_per_px).astype(int)
        for dr in range(-radius, radius + 1):
            for dc in range(-radius, radius + 1):
                rr, cc = r + dr, c + dc
                ok = (rr >= 0) & (rr < height_px) & (cc >= 0) & (cc < width_px)
                image[rr[ok], cc[ok]] = rgb

    plot(_densify(track.center, metres_per_px), (255, 255, 255), 0)
    if len(trajectory):
        plot(_densify(trajectory, metres_per_px), TRAJECTORY_RGB, 2)
        plot(trajectory[:1], START_RGB, 5)
    return image.astype(np.uint8)


def _densify(points: np.ndarray, spacing: float) -> np.ndarray:
    """Points along a polyline no more than `spacing` apart, so plotted lines have no gaps."""
    if len(points) < 2:
        return points
    seg = np.diff(points, axis=0)
    counts = np.maximum(1, (np.hypot(*seg.T) / spacing).astype(int))
    parts = [points[i] + np.outer(np.arange(n) / n, seg[i]) for i, n in enumerate(counts)]
    return np.concatenate([*parts, points[-1:]])


def render_png(track: Track, sensors: tuple[str, ...], output: Path, steps: int = 400, frames: int = 6,
               policy: object | None = None, reverse: bool = False, stack_size: int = 1) -> Drive:
    env = VectorRacingEnv(track, 1, EnvSettings(sensors=sensors, max_steps=steps, reverse=reverse,
                                                round_robin_advance=0.0, stagger_starts=False),
                          reward_function=lambda params: 1.0)
    result = drive(env, steps, frames, policy, stack_size=stack_size)
    strip = frame_strip(result.frames)
    top_down = track_map(env.track, result.trajectory, strip.shape[1])
    spacer = np.full((8, strip.shape[1], 3), 255, np.uint8)
    write_png(output, np.concatenate((strip, spacer, top_down), axis=0))
    return result
