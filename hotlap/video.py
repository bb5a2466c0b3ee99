"""Lap video of an evaluation: the camera view beside a top-down map with the car.

What deepracer-for-cloud's evaluation MP4 gives racers, from hotlap's simulator: each frame is one
simulation step (15 frames per second of video = real time), the trials one after another. Left:
what the network sees (the 160×120 grayscale camera, the left lens of a stereo pair), scaled 3×.
Right: the track (road grey, centre line white) with the trial's path so far (yellow) and the car
(red, with a heading tick). Bottom: trial, lap clock, progress, speed and status.

Encoded with imageio (MP4 through the imageio-ffmpeg wheel, which bundles an ffmpeg binary; GIF
through Pillow): ``pip install -e '.[video]'``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hotlap.errors import VideoError
from hotlap.evaluate import Frame, Trial
from simulator.track import Track

FPS = 15  # DeepRacer's camera / agent step rate
CAMERA_SCALE = 3
PANEL_H, PANEL_W = 120 * CAMERA_SCALE, 160 * CAMERA_SCALE  # 360 × 480 each
INFO_H = 40
FRAME_SHAPE = (PANEL_H + INFO_H, 2 * PANEL_W, 3)  # (400, 960, 3): multiples of 8 for the H.264 encoder
MAP_MARGIN_PX = 12
ROAD_RGB, GROUND_RGB, CENTRE_RGB = (128, 128, 128), (40, 80, 40), (235, 235, 235)
PATH_RGB, CAR_RGB, TEXT_RGB, INFO_RGB = (250, 210, 40), (230, 30, 30), (255, 255, 255), (20, 20, 20)
FORMATS = (".mp4", ".gif")
INSTALL_HINT = "lap videos need imageio and imageio-ffmpeg: pip install -e '.[video]'"


def check_video_path(path: Path) -> None:
    """Fail before any trial runs: a known extension and the optional libraries installed."""
    if path.suffix.lower() not in FORMATS:
        raise VideoError(f"--video {path}: unknown format {path.suffix!r}; use .mp4 or .gif")
    try:
        import imageio  # noqa: F401
        if path.suffix.lower() == ".mp4":
            import imageio_ffmpeg  # noqa: F401
    except ImportError as e:
        raise VideoError(f"--video {path}: {INSTALL_HINT} (missing module {e.name})") from e


class TrackMap:
    """The track drawn once; world metres -> pixel coordinates of the map panel."""

    def __init__(self, track: Track, height: int = PANEL_H, width: int = PANEL_W) -> None:
        lower, upper = track.bounds
        span = np.maximum(upper - lower, 1e-6)
        self.scale = min((width - 2 * MAP_MARGIN_PX) / span[0], (height - 2 * MAP_MARGIN_PX) / span[1])  # px per m
        self.origin = np.array([(width - span[0] * self.scale) / 2, (height - span[1] * self.scale) / 2])
        self.lower, self.height = lower, height
        cols, rows = np.meshgrid(np.arange(width), np.arange(height))
        world = self.to_world(np.stack((cols.ravel() + 0.5, rows.ravel() + 0.5), axis=1))
        on_road = track.road_mask.contains(world).reshape(height, width)
        self.image = np.where(on_road[:, :, None], np.array(ROAD_RGB, np.uint8), np.array(GROUND_RGB, np.uint8))
        self.centre = [tuple(p) for p in self.to_pixels(track.center)]

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) metres -> (N, 2) pixel (column, row); rows grow downward, y grows up."""
        px = (np.asarray(points, float) - self.lower) * self.scale
        return np.stack((self.origin[0] + px[:, 0], self.height - self.origin[1] - px[:, 1]), axis=1)

    def to_world(self, pixels: np.ndarray) -> np.ndarray:
        col = (pixels[:, 0] - self.origin[0]) / self.scale + self.lower[0]
        y = (self.height - self.origin[1] - pixels[:, 1]) / self.scale + self.lower[1]
        return np.stack((col, y), axis=1)


def frames_of(trials: Sequence[Trial], track: Track) -> Iterator[np.ndarray]:
    """One RGB frame (400, 960, 3) uint8 per recorded step of every trial, trial after trial."""
    from PIL import Image, ImageDraw

    track_map = TrackMap(track)
    background = Image.fromarray(track_map.image)
    ImageDraw.Draw(background).line(track_map.centre, fill=CENTRE_RGB, width=1)
    for trial in trials:
        paths: list[list[tuple[float, float]]] = []
        for frame in trial.frames:
            if frame.status == "prepare" or not paths:  # a start or a reset: the path jumps, no line across
                paths.append([])
            paths[-1].append(tuple(track_map.to_pixels(np.array([[frame.x, frame.y]]))[0]))
            yield _compose(frame, trial, background, paths)


def _compose(frame: Frame, trial: Trial, background: Any, paths: list[list[tuple[float, float]]]) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (FRAME_SHAPE[1], FRAME_SHAPE[0]), INFO_RGB)
    camera = np.kron(frame.camera, np.ones((CAMERA_SCALE, CAMERA_SCALE), np.uint8))
    canvas.paste(Image.fromarray(camera).convert("RGB"), (0, 0))
    panel = background.copy()
    draw = ImageDraw.Draw(panel)
    for path in paths:
        if len(path) > 1:
            draw.line(path, fill=PATH_RGB, width=2)
    cx, cy = paths[-1][-1]
    heading = math.radians(frame.heading)
    draw.line([(cx, cy), (cx + 12 * math.cos(heading), cy - 12 * math.sin(heading))], fill=CAR_RGB, width=3)
    draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=CAR_RGB)
    canvas.paste(panel, (PANEL_W, 0))
    info = (f"trial {trial.trial}   lap clock {frame.clock_s:6.2f} s   progress {frame.progress:5.1f} %   "
            f"speed {frame.speed:4.2f} m/s   {frame.status}")
    ImageDraw.Draw(canvas).text((10, PANEL_H + 12), info, fill=TEXT_RGB)
    return np.asarray(canvas)


def write_video(path: Path, trials: Sequence[Trial], track: Track) -> int:
    """Encode the trials' recorded frames to ``path`` (.mp4 H.264 or .gif) at 15 fps; returns the frame count.

    Raises VideoError when the format is unknown, the extra is missing or no frame was recorded.
    """
    check_video_path(path)
    import imageio.v2 as imageio

    if not any(t.frames for t in trials):
        raise VideoError(f"--video {path}: no frames were recorded")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".mp4":
        writer = imageio.get_writer(path, mode="I", fps=FPS, codec="libx264", quality=7,
                                    macro_block_size=8, pixelformat="yuv420p")
    else:
        writer = imageio.get_writer(path, mode="I", duration=1000.0 / FPS, loop=0)
    count = 0
    with writer:
        for image in frames_of(trials, track):
            writer.append_data(image)
            count += 1
    return count
