"""`hotlap render`: look at what the simulator shows the car.

Drives one car — with a trained model from a store, or with a centre-line pure-pursuit driver —
and writes one PNG (matplotlib): a row of camera frames along the drive (what the network sees)
above a top-down map of the track with the car's trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from simulator.env import EnvSettings, VectorRacingEnv
from simulator.stacking import ObservationStack
from simulator.track import Track

CAMERAS = ("FRONT_FACING_CAMERA", "STEREO_CAMERAS")
LOOKAHEAD_M = 0.45
ROAD_COLOUR = "#969696"
GROUND_COLOUR = "#224622"
TRAJECTORY_COLOUR = "#e62828"
START_COLOUR = "#2878ff"


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
    camera = next((name for name in CAMERAS if name in obs), None)  # None: a lidar-only model, map only
    frames, points = [], []
    x, y, heading = env_pose(env)
    status, progress = "prepare", 0.0
    for _ in range(steps):
        if policy is not None:
            act = policy.act(policy_obs, deterministic=True)  # type: ignore[attr-defined]
            steering, target_speed = act.steering_deg, act.speed
        else:
            steering, target_speed = pure_pursuit(env.track, x, y, heading), np.full(1, speed)
        if camera is not None:
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
    return Drive([frames[i] for i in chosen] if frames else [], np.array(points), status, progress)


def env_pose(env: VectorRacingEnv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The car's pose before its first step: the start of the centre line, heading along it."""
    points, heading_rad = env.track.pose_at(np.zeros(1))
    return points[:, 0], points[:, 1], np.degrees(heading_rad)


def render_figure(result: Drive, track: Track, driver: str) -> Figure:
    """Camera frames along the drive (top row) above a top-down map of the track with the trajectory."""
    count = max(len(result.frames), 1)
    fig = Figure(figsize=(max(10.0, 2.6 * count), 10 if result.frames else 8), dpi=100, layout="constrained")
    grid = fig.add_gridspec(2, count, height_ratios=(1, 3.2) if result.frames else (0.001, 1))
    for i, frame in enumerate(result.frames):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(frame, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"frame {i + 1}", fontsize="small")
        ax.set_axis_off()
    ax = fig.add_subplot(grid[1, :])
    ax.set_facecolor(GROUND_COLOUR)
    for ring, colour in zip(track.road_rings, (ROAD_COLOUR, GROUND_COLOUR), strict=False):
        ax.fill(ring[:, 0], ring[:, 1], color=colour, zorder=0)
    for border in (track.inner, track.outer):
        ax.plot(border[:, 0], border[:, 1], color="white", linewidth=1.5, zorder=1)
    ax.plot(track.center[:, 0], track.center[:, 1], "--", color="white", linewidth=0.8, zorder=1,
            label="centre line")
    if len(result.trajectory):
        ax.plot(result.trajectory[:, 0], result.trajectory[:, 1], color=TRAJECTORY_COLOUR, linewidth=2.5,
                zorder=2, label="trajectory")
        ax.plot(result.trajectory[:1, 0], result.trajectory[:1, 1], "o", color=START_COLOUR, markersize=10,
                zorder=3, label="start")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(f"{track.name}: {driver}, {len(result.trajectory)} steps, {result.status}, "
                 f"progress {result.progress:.1f}%")
    fig.suptitle("What the car's camera sees along the drive (160x120 grayscale), and where it drove"
                 if result.frames else "Where the car drove (the model has no camera: lidar only)")
    return fig


def render_png(track: Track, sensors: tuple[str, ...], output: Path, steps: int = 400, frames: int = 6,
               policy: object | None = None, reverse: bool = False, stack_size: int = 1) -> Drive:
    env = VectorRacingEnv(track, 1, EnvSettings(sensors=sensors, max_steps=steps, reverse=reverse,
                                                round_robin_advance=0.0, stagger_starts=False),
                          reward_function=lambda params: 1.0)
    result = drive(env, steps, frames, policy, stack_size=stack_size)
    driver = "the model" if policy is not None else "centre-line pure pursuit"
    render_figure(result, env.track, driver).savefig(output)
    return result
