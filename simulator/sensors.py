"""Camera and lidar observations for K cars, by table look-ups (pure numpy).

Camera (FRONT_FACING_CAMERA, LEFT_CAMERA, ``observation``: (120, 160) uint8;
STEREO_CAMERAS: (2, 120, 160) uint8, left then right):

- DeepRacer's sim camera: horizontal FOV 1.13 rad, 15 deg pitched down, lens about
  0.145 m ahead of the car base and 0.130 m above the ground (simapp URDF joint chain),
  rendered at 640x480 and resized to 160x120 grayscale. We render 160x120 grayscale
  directly with a pinhole model (square pixels, so the vertical FOV is ~0.89 rad).
  Stereo lenses sit 3 cm left and right of the centre (6 cm baseline); LEFT_CAMERA is the
  left lens alone.
- The world is flat, so the ground point seen by each pixel is a constant offset in the
  car frame. The track is rasterised once into a top-down texture (1 cm texels: dark
  off-track ground, grey road, 5 cm white border lines, dashed light centre line, a little
  fixed noise); coarser copies (2, 4, 8, 16 cm, box-filtered) serve far pixels, chosen per
  pixel by its ground footprint, as the 640x480 -> 160x120 resize does. All levels live in
  one flat atlas, so a frame is one small matrix product (texel coordinates of every pixel
  for every car), an int conversion and a single ``take``. Rows above the horizon are sky;
  ground beyond 12 m is a constant haze texel.

Lidar (raw: 64 beams from -150 deg to +150 deg around the heading, DeepRacer's
``LIDAR_360_DEGREE_*`` constants, 0.15-12 m, Gaussian noise sigma 0.01 m, mounted at the
car's base origin — the mount offset is not in our sources). A beam measures the distance
to the nearest track border (inner/outer polylines) by vectorised ray-segment
intersection against the border segments near the car (precomputed per 0.25 m cell).
Observations, as DeepRacer's filters make them:

- LIDAR (64,) float32: ranges clipped to [0.15, 1.0] m.
- SECTOR_LIDAR (8,) float32: 8 sectors of 8 consecutive beams, 1.0 if the sector's
  minimum range is < 0.5 m else 0.0.
- DISCRETIZED_SECTOR_LIDAR (num_sectors * num_values_per_sector,) float32: per sector the
  minimum range clipped to ``clipping_dist``, bucketed into ``num_values_per_sector`` bins
  and one-hot encoded; the "nothing within clipping_dist" bin is dropped (all zeros).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simulator.car import CarState
from simulator.raster import Grid, fill_even_odd, polyline_distance_band
from simulator.track import Track

FRONT_FACING_CAMERA = "FRONT_FACING_CAMERA"
LEFT_CAMERA = "LEFT_CAMERA"
STEREO_CAMERAS = "STEREO_CAMERAS"
OBSERVATION = "observation"  # legacy (model_metadata version 1) name of the front camera
LIDAR = "LIDAR"
SECTOR_LIDAR = "SECTOR_LIDAR"
DISCRETIZED_SECTOR_LIDAR = "DISCRETIZED_SECTOR_LIDAR"

CAMERA_SENSORS = (FRONT_FACING_CAMERA, LEFT_CAMERA, STEREO_CAMERAS, OBSERVATION)
LIDAR_SENSORS = (LIDAR, SECTOR_LIDAR, DISCRETIZED_SECTOR_LIDAR)
ALL_SENSORS = CAMERA_SENSORS + LIDAR_SENSORS

LIDAR_FILTER_MIN = 0.15
LIDAR_FILTER_MAX = 1.0
SECTOR_LIDAR_SECTORS = 8
SECTOR_LIDAR_THRESHOLD = 0.5


# ============================================================================ camera
@dataclass(frozen=True)
class CameraSpec:
    width: int = 160
    height: int = 120
    horizontal_fov: float = 1.13  # rad
    pitch_deg: float = 15.0  # down
    lens_x: float = 0.145  # m ahead of the base origin
    lens_z: float = 0.130  # m above the ground
    stereo_baseline: float = 0.06  # m between the two stereo lenses
    max_distance: float = 12.0  # m; farther ground shows the haze texel


@dataclass(frozen=True)
class TextureStyle:
    resolution: float = 0.01  # m per texel of the finest level
    levels: int = 5  # 1, 2, 4, 8, 16 cm
    ground: int = 62
    road: int = 128
    border: int = 236
    center: int = 196  # yellow (255, 204, 0) in luma ~ 196
    sky: int = 206
    noise: int = 5  # +- amplitude of the fixed texture noise
    border_width: float = 0.05
    center_width: float = 0.04
    dash_length: float = 0.15
    dash_gap: float = 0.15
    slack: float = 1.0  # m around the track that cars may reach while rendered


@dataclass(frozen=True)
class _Level:
    resolution: float
    x0: float
    y0: float
    row_offset: int  # first atlas row of this level


class TrackTexture:
    """The track's top-down grayscale texture and its coarser copies, packed in one atlas."""

    def __init__(self, track: Track, style: TextureStyle, level_reach: Sequence[float]) -> None:
        """``level_reach[l]``: farthest ground distance from the car base drawn with level l."""
        lower, upper = track.bounds
        self.core_lower = lower - style.slack
        self.core_upper = upper + style.slack
        core = Grid.covering(self.core_lower, self.core_upper, style.resolution, pad=style.border_width)
        base = _paint_track(track, core, style)
        images: list[np.ndarray] = []
        self.levels: list[_Level] = []
        row = 0
        image = base.astype(np.float32)
        for level in range(style.levels):
            if level:
                image = _halve(image, float(style.ground))
            resolution = style.resolution * 2**level
            pad = int(math.ceil(level_reach[level] / resolution)) + 2  # cars are clamped to the core
            padded = np.pad(np.rint(image).astype(np.uint8), pad, constant_values=style.ground)
            self.levels.append(_Level(resolution, core.x0 - pad * resolution, core.y0 - pad * resolution, row))
            images.append(padded)
            row += padded.shape[0]
        self.width = max(image.shape[1] for image in images)
        atlas = np.full((row + 1, self.width), style.ground, dtype=np.uint8)
        for placed, image in zip(self.levels, images, strict=True):
            atlas[placed.row_offset : placed.row_offset + image.shape[0], : image.shape[1]] = image
        self.special_row = row
        self.sky_col, self.haze_col = 0, 1
        atlas[row, self.sky_col] = style.sky
        atlas[row, self.haze_col] = style.ground
        self.atlas = atlas.ravel()


def _paint_track(track: Track, grid: Grid, style: TextureStyle) -> np.ndarray:
    rng = np.random.default_rng(20190)  # fixed pattern: same texture every run
    noise = rng.integers(-style.noise, style.noise + 1, size=grid.shape, dtype=np.int16)
    road = fill_even_odd(grid, track.road_rings)
    image = np.where(road, style.road, style.ground).astype(np.int16) + noise
    half_border = style.border_width / 2
    for border in (track.inner, track.outer):
        distance, _ = polyline_distance_band(grid, border, band=half_border)
        image[distance <= half_border] = style.border
    half_center = style.center_width / 2
    distance, arc = polyline_distance_band(grid, track.center, band=half_center)
    dashed = np.mod(arc, style.dash_length + style.dash_gap) < style.dash_length
    image[(distance <= half_center) & dashed] = style.center
    return np.clip(image, 0, 255).astype(np.uint8)


def _halve(image: np.ndarray, fill: float) -> np.ndarray:
    rows, cols = image.shape
    padded = np.pad(image, ((0, rows % 2), (0, cols % 2)), constant_values=fill)
    return 0.25 * (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2])


class CameraRenderer:
    """Renders K cars' camera images at once: (K, lenses, height, width) uint8."""

    def __init__(
        self,
        track: Track,
        lens_offsets_y: Sequence[float] = (0.0,),
        spec: CameraSpec | None = None,
        style: TextureStyle | None = None,
    ) -> None:
        self.spec = spec or CameraSpec()
        self.style = style or TextureStyle()
        self.lenses = tuple(lens_offsets_y)
        self.ground_row = _first_ground_row(self.spec)
        offsets, footprint, visible = zip(*(self._ground_offsets(y) for y in self.lenses), strict=True)
        ground = np.concatenate([o.reshape(-1, 2) for o in offsets])
        footprint_all = np.concatenate([f.ravel() for f in footprint])
        visible_all = np.concatenate([v.ravel() for v in visible])
        texels = np.maximum(footprint_all / self.style.resolution, 1.0)
        level = np.clip(np.rint(np.log2(texels)), 0, self.style.levels - 1).astype(np.int64)
        reach = np.hypot(ground[:, 0], ground[:, 1])
        level_reach = [float(reach[visible_all & (level == lv)].max(initial=0.0)) for lv in range(self.style.levels)]
        self.texture = TrackTexture(track, self.style, level_reach)
        self.features = self._features(ground, level, visible_all)
        pixels = self.features.shape[1]
        self._buffers = (
            np.empty((2 * _RENDER_CHUNK, pixels), dtype=np.float32),
            np.empty((2 * _RENDER_CHUNK, pixels), dtype=np.int32),
            np.empty((_RENDER_CHUNK, pixels), dtype=np.int32),
            np.empty((_RENDER_CHUNK, pixels), dtype=np.uint8),
        )

    def _ground_offsets(self, lens_y: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ground points (car frame), footprints and visibility of the pixels below the horizon."""
        s = self.spec
        focal = (s.width / 2) / math.tan(s.horizontal_fov / 2)
        rows = np.arange(self.ground_row, s.height, dtype=np.float64)
        cols = np.arange(s.width, dtype=np.float64)
        up = -(rows[:, None] + 0.5 - s.height / 2) / focal
        left = -(cols[None, :] + 0.5 - s.width / 2) / focal
        pitch = math.radians(s.pitch_deg)
        fwd = math.cos(pitch) + up * math.sin(pitch)
        down = math.sin(pitch) - up * math.cos(pitch)  # > 0 below the horizon
        scale = s.lens_z / down
        gx = s.lens_x + scale * fwd
        gy = lens_y + scale * left
        gx, gy = np.broadcast_arrays(gx, gy)
        ground = np.stack((gx, gy), axis=-1)
        step_col = np.hypot(*np.gradient(ground, axis=1).transpose(2, 0, 1))
        step_row = np.hypot(*np.gradient(ground, axis=0).transpose(2, 0, 1)) if len(rows) > 1 else step_col
        footprint = np.sqrt(step_col * step_row)
        visible = np.hypot(gx - s.lens_x, gy - lens_y) <= s.max_distance
        return ground, footprint, visible

    def _features(self, ground: np.ndarray, level: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """(5, P) float32 per-pixel terms: col = [cos, -sin, x, 0, 1] . f, row = [sin, cos, y, 1, 0] . f."""
        tex = self.texture
        inv_res = np.array([1.0 / lv.resolution for lv in tex.levels])[level]
        row_const = np.array([lv.row_offset - lv.y0 / lv.resolution for lv in tex.levels])[level]
        col_const = np.array([-lv.x0 / lv.resolution for lv in tex.levels])[level]
        features = np.stack((ground[:, 0] * inv_res, ground[:, 1] * inv_res, inv_res, row_const, col_const))
        # haze pixels: a constant texel, whatever the pose (+0.5 keeps truncation off the edge)
        features[:, ~visible] = np.array([[0.0], [0.0], [0.0], [tex.special_row + 0.5], [tex.haze_col + 0.5]])
        return np.ascontiguousarray(features, dtype=np.float32)

    @property
    def image_shape(self) -> tuple[int, int]:
        return (self.spec.height, self.spec.width)

    def render(self, x: np.ndarray, y: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        """Images of cars with base origins (x, y) and headings ``yaw`` (rad): (K, lenses, H, W) uint8."""
        count = len(x)
        lenses, height, width = len(self.lenses), self.spec.height, self.spec.width
        images = np.empty((count, lenses, height, width), dtype=np.uint8)
        images[:, :, : self.ground_row, :] = self.style.sky
        if count == 0:
            return images
        texture = self.texture
        # keep cars inside the textured region so every index stays in the atlas
        cx = np.minimum(np.maximum(x, texture.core_lower[0]), texture.core_upper[0])
        cy = np.minimum(np.maximum(y, texture.core_lower[1]), texture.core_upper[1])
        cos, sin = np.cos(yaw), np.sin(yaw)
        rows = height - self.ground_row
        coords, as_int, flat, pixels = self._buffers
        # a few cars at a time: the intermediates then stay in cache (2x faster than all at once)
        for lo in range(0, count, _RENDER_CHUNK):
            hi = min(lo + _RENDER_CHUNK, count)
            n = hi - lo
            poses = np.zeros((2 * n, 5), dtype=np.float32)
            poses[:n, 0], poses[:n, 1], poses[:n, 2], poses[:n, 4] = cos[lo:hi], -sin[lo:hi], cx[lo:hi], 1.0
            poses[n:, 0], poses[n:, 1], poses[n:, 2], poses[n:, 3] = sin[lo:hi], cos[lo:hi], cy[lo:hi], 1.0
            np.matmul(poses, self.features, out=coords[: 2 * n])
            np.copyto(as_int[: 2 * n], coords[: 2 * n], casting="unsafe")
            np.multiply(as_int[n : 2 * n], texture.width, out=flat[:n])
            flat[:n] += as_int[:n]
            np.take(texture.atlas, flat[:n], out=pixels[:n], mode="clip")  # clip: no buffering, no checks
            images[lo:hi, :, self.ground_row :, :] = pixels[:n].reshape(n, lenses, rows, width)
        return images


_RENDER_CHUNK = 8


def _first_ground_row(spec: CameraSpec) -> int:
    """First image row whose rays point below the horizon (ray elevation depends on the row only)."""
    focal = (spec.width / 2) / math.tan(spec.horizontal_fov / 2)
    pitch = math.radians(spec.pitch_deg)
    for row in range(spec.height):
        up = -(row + 0.5 - spec.height / 2) / focal
        if math.sin(pitch) - up * math.cos(pitch) > 1e-9:
            return row
    return spec.height


# ============================================================================ lidar
@dataclass(frozen=True)
class LidarSpec:
    samples: int = 64
    min_angle: float = -2.61799  # rad, relative to the heading
    max_angle: float = 2.61799
    min_range: float = 0.15
    max_range: float = 12.0
    noise_std: float = 0.01
    mount_x: float = 0.0  # m ahead of the base origin

    @property
    def angles(self) -> np.ndarray:
        return np.linspace(self.min_angle, self.max_angle, self.samples)


class LidarScanner:
    """Raw lidar ranges of K cars against the track borders; ``inf`` where nothing is within reach."""

    def __init__(self, track: Track, reach: float, spec: LidarSpec | None = None, cell: float | None = None) -> None:
        self.spec = spec or LidarSpec()
        self.reach = min(reach, self.spec.max_range)
        cell = cell or max(0.25, self.reach / 4)  # long reach: coarser cells, the candidate lists grow anyway
        starts, deltas = [], []
        for border in (track.inner, track.outer):
            starts.append(border[:-1])
            deltas.append(np.diff(border, axis=0))
        # index len(...) is a dummy segment that no ray hits (zero direction)
        start = np.concatenate([*starts, [[0.0, 0.0]]])
        delta = np.concatenate([*deltas, [[0.0, 0.0]]])
        self._start = start.astype(np.float32)
        self._delta = delta.astype(np.float32)
        lower, upper = track.bounds
        self.grid = Grid.covering(lower, upper, cell, pad=self.reach + 1.0)
        self._candidates = _candidate_segments(self.grid, start[:-1], delta[:-1], self.reach + cell, len(start) - 1)
        self._cos = np.cos(self.spec.angles).astype(np.float32)
        self._sin = np.sin(self.spec.angles).astype(np.float32)

    def scan(self, x: np.ndarray, y: np.ndarray, yaw: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """(K, samples) float32 ranges in metres (noisy if ``rng`` is given)."""
        ox = (x + self.spec.mount_x * np.cos(yaw)).astype(np.float32)
        oy = (y + self.spec.mount_x * np.sin(yaw)).astype(np.float32)
        col, row, _ = self.grid.cell_of(np.stack((ox, oy), axis=1))
        candidates = self._candidates[row * self.grid.width + col]  # (K, M)
        px = self._start[candidates, 0] - ox[:, None]  # (K, M)
        py = self._start[candidates, 1] - oy[:, None]
        ex = self._delta[candidates, 0]
        ey = self._delta[candidates, 1]
        cos_y = np.cos(yaw).astype(np.float32)[:, None]
        sin_y = np.sin(yaw).astype(np.float32)[:, None]
        dx = (cos_y * self._cos - sin_y * self._sin)[:, :, None]  # (K, B, 1)
        dy = (sin_y * self._cos + cos_y * self._sin)[:, :, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            denom = dx * ey[:, None, :] - dy * ex[:, None, :]  # (K, B, M)
            inv = 1.0 / denom
            t = (px * ey - py * ex)[:, None, :] * inv  # distance along the ray
            u = (px[:, None, :] * dy - py[:, None, :] * dx) * inv  # position on the segment
            hit = (t > 0) & (u >= 0) & (u <= 1)
        ranges = np.where(hit, t, np.float32(np.inf)).min(axis=2)
        ranges[ranges > self.reach] = np.inf
        if rng is not None and self.spec.noise_std > 0:
            ranges += rng.normal(0.0, self.spec.noise_std, size=ranges.shape).astype(np.float32)
        np.maximum(ranges, self.spec.min_range, out=ranges)
        return ranges


def _candidate_segments(grid: Grid, start: np.ndarray, delta: np.ndarray, reach: float, dummy: int) -> np.ndarray:
    """(cells, M) int32: for each cell the segments within ``reach`` of its centre, padded with ``dummy``."""
    cx, cy = np.meshgrid(grid.column_centres(), grid.row_centres())
    centres = np.stack((cx.ravel(), cy.ravel()), axis=1)
    radius = reach + grid.resolution * math.sqrt(0.5)
    len2 = np.maximum((delta**2).sum(axis=1), 1e-18)
    near_lists = []
    chunk = max(1, 2_000_000 // max(len(start), 1))
    for lo in range(0, len(centres), chunk):
        wx = centres[lo : lo + chunk, 0:1] - start[:, 0]
        wy = centres[lo : lo + chunk, 1:2] - start[:, 1]
        t = np.clip((wx * delta[:, 0] + wy * delta[:, 1]) / len2, 0.0, 1.0)
        near_lists.append(np.hypot(wx - t * delta[:, 0], wy - t * delta[:, 1]) <= radius)
    near = np.concatenate(near_lists)
    width = max(int(near.sum(axis=1).max(initial=0)), 1)
    candidates = np.full((len(centres), width), dummy, dtype=np.int32)
    cell, segment = np.nonzero(near)
    slot = np.arange(len(cell)) - np.searchsorted(cell, cell)
    candidates[cell, slot] = segment
    return candidates


def lidar_observation(ranges: np.ndarray) -> np.ndarray:
    return np.clip(ranges, LIDAR_FILTER_MIN, LIDAR_FILTER_MAX).astype(np.float32)


def sector_lidar_observation(ranges: np.ndarray) -> np.ndarray:
    sector_min = ranges.reshape(len(ranges), SECTOR_LIDAR_SECTORS, -1).min(axis=2)
    return (sector_min < SECTOR_LIDAR_THRESHOLD).astype(np.float32)


def discretized_sector_lidar_observation(
    ranges: np.ndarray, num_sectors: int, values_per_sector: int, clipping_dist: float
) -> np.ndarray:
    spec = LidarSpec()
    clipping_dist = min(max(clipping_dist, spec.min_range), spec.max_range)
    sector_min = np.minimum(ranges.reshape(len(ranges), num_sectors, -1).min(axis=2), clipping_dist)
    bucket = np.floor(sector_min / (clipping_dist / values_per_sector)).astype(np.int64)
    one_hot = bucket[:, :, None] == np.arange(values_per_sector)  # bucket == values_per_sector -> no hit
    return one_hot.reshape(len(ranges), -1).astype(np.float32)


# ============================================================================ suite
@dataclass(frozen=True)
class LidarConfig:
    """model_metadata ``lidar_config`` (DISCRETIZED_SECTOR_LIDAR); defaults are DeepRacer's."""

    num_sectors: int = 8
    num_values_per_sector: int = 8
    clipping_dist: float = 2.0


class SensorSuite:
    """The observation arrays of one env: one entry per configured DeepRacer sensor name."""

    def __init__(
        self,
        track: Track,
        sensors: Sequence[str],
        lidar_config: LidarConfig | None = None,
        lidar_noise_std: float = LidarSpec.noise_std,
        camera_spec: CameraSpec | None = None,
    ) -> None:
        self.sensors = _validated_sensors(sensors)
        self.lidar_config = lidar_config or LidarConfig()
        _validate_lidar_config(self.lidar_config)
        self.camera: CameraRenderer | None = None
        self.lidar: LidarScanner | None = None
        camera_name = next((s for s in self.sensors if s in CAMERA_SENSORS), None)
        lidar_name = next((s for s in self.sensors if s in LIDAR_SENSORS), None)
        self.camera_name, self.lidar_name = camera_name, lidar_name
        if camera_name is not None:
            spec = camera_spec or CameraSpec()
            half = spec.stereo_baseline / 2
            lenses = {STEREO_CAMERAS: (half, -half), LEFT_CAMERA: (half,)}.get(camera_name, (0.0,))
            self.camera = CameraRenderer(track, lenses, spec)
        if lidar_name is not None:
            reach = {
                LIDAR: LIDAR_FILTER_MAX,
                SECTOR_LIDAR: SECTOR_LIDAR_THRESHOLD,
                DISCRETIZED_SECTOR_LIDAR: self.lidar_config.clipping_dist,
            }[lidar_name]
            self.lidar = LidarScanner(track, reach + 0.1, LidarSpec(noise_std=lidar_noise_std))

    @property
    def spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per sensor name: (shape of one car's observation, dtype)."""
        result: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for name in self.sensors:
            result[name] = (self._shape(name), np.dtype(np.uint8 if name in CAMERA_SENSORS else np.float32))
        return result

    def _shape(self, name: str) -> tuple[int, ...]:
        spec = self.camera.spec if self.camera else CameraSpec()
        if name == STEREO_CAMERAS:
            return (2, spec.height, spec.width)
        if name in CAMERA_SENSORS:
            return (spec.height, spec.width)
        if name == LIDAR:
            return (LidarSpec().samples,)
        if name == SECTOR_LIDAR:
            return (SECTOR_LIDAR_SECTORS,)
        return (self.lidar_config.num_sectors * self.lidar_config.num_values_per_sector,)

    def observe(self, cars: CarState, index: np.ndarray, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        """Observations of the cars ``index`` (array of car indices): name -> (len(index), ...)."""
        x, y, yaw = cars.x[index], cars.y[index], cars.yaw[index]
        observations: dict[str, np.ndarray] = {}
        if self.camera is not None and self.camera_name is not None:
            images = self.camera.render(x, y, yaw)
            observations[self.camera_name] = images if self.camera_name == STEREO_CAMERAS else images[:, 0]
        if self.lidar is not None and self.lidar_name is not None:
            ranges = self.lidar.scan(x, y, yaw, rng)
            if self.lidar_name == LIDAR:
                observations[LIDAR] = lidar_observation(ranges)
            elif self.lidar_name == SECTOR_LIDAR:
                observations[SECTOR_LIDAR] = sector_lidar_observation(ranges)
            else:
                c = self.lidar_config
                observations[DISCRETIZED_SECTOR_LIDAR] = discretized_sector_lidar_observation(
                    ranges, c.num_sectors, c.num_values_per_sector, c.clipping_dist
                )
        return observations


def _validated_sensors(sensors: Sequence[str]) -> tuple[str, ...]:
    names = tuple(sensors)
    unknown = [s for s in names if s not in ALL_SENSORS]
    if unknown:
        raise ValueError(f"unknown sensor(s) {unknown}; known: {list(ALL_SENSORS)}")
    if not names:
        raise ValueError("at least one sensor is needed")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate sensors in {list(names)}")
    if sum(s in CAMERA_SENSORS for s in names) > 1:
        raise ValueError(f"at most one camera sensor, got {list(names)}")
    if sum(s in LIDAR_SENSORS for s in names) > 1:
        raise ValueError(f"at most one lidar sensor, got {list(names)}")
    return names


def _validate_lidar_config(config: LidarConfig) -> None:
    samples = LidarSpec().samples
    if config.num_sectors < 1 or samples % config.num_sectors:
        raise ValueError(f"lidar num_sectors must divide {samples}, got {config.num_sectors}")
    if config.num_values_per_sector < 1:
        raise ValueError(f"lidar num_values_per_sector must be >= 1, got {config.num_values_per_sector}")
    if not LidarSpec().min_range <= config.clipping_dist <= LidarSpec().max_range:
        raise ValueError(f"lidar clipping_dist must be in [0.15, 12], got {config.clipping_dist}")
