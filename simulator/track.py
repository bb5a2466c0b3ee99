"""DeepRacer tracks: loading, validation and vectorised geometry (pure numpy).

Track files are DeepRacer's ``.npy`` routes: float64 ``(N, 6)`` arrays of rows
``[center_x, center_y, inner_x, inner_y, outer_x, outer_y]`` in metres (extra columns
are ignored, as DeepRacer's simapp ignores them: deepracer-formats.md §8). Files are checked
before any geometry is built: plain numeric ``.npy`` only (never unpickled), at most
``MAX_TRACK_ROWS`` rows (read from the header), an extent of ``MIN_TRACK_EXTENT``-
``MAX_TRACK_EXTENT`` metres, every row at least ``MIN_TRACK_WIDTH`` wide with its centre point
between its inner and outer points, borders that do not cross themselves.
A track is closed (a loop) iff its first row equals its last row; an open
track is driven from its first waypoint to its last.

Conventions carried over from DeepRacer's simapp (``track_geom/track_data.py``):

- Consecutive centre-line duplicates (within 1e-9 m) are dropped when loading, as the
  current simapp does; the closing row of a loop is kept. So ``len(waypoints)`` equals
  the simapp's after its sanitisation (reInvent2019_track: 155 rows -> 154).
- ``inner``/``outer`` are named for the loop, not for the car's left/right: on a
  counter-clockwise loop the inner border is on the driver's left, on a clockwise one on
  the right. ``is_ccw`` is the centre ring's orientation for loops; for open tracks it is
  True when the inner border lies left of the driving direction (DeepRacer assumes True).
- ``reversed()`` drives the track the other way: all three polylines are reversed, inner
  and outer keep their names (they are still the loop's inner/outer), ``is_ccw`` flips.
- Distances along the centre line are measured from waypoint 0 (``projection_distance``);
  ``closest_waypoints`` are ``[prev, next]`` by bisection of the waypoints' distances.
- Track width at a point is the distance between the inner-border point and the
  outer-border point nearest to the point's projection on the centre line.
- The road is the region between the borders: inside the outer ring and outside the
  inner ring for loops, the polygon ``outer + reversed(inner)`` for open tracks.
"""

from __future__ import annotations

import difflib
import importlib.resources
import io
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO

import numpy as np

from simulator.raster import EvenOddRegion, Grid, fill_even_odd, polyline_distance_band

TRACK_COLUMNS = 6
DUPLICATE_EPS = 1e-9
MIN_DISTINCT_POINTS = 3
BORDER_TABLE_SPACING = 0.02  # m between centre-line samples of the track-width table
ROAD_MASK_RESOLUTION = 0.02  # m per texel of the fast on-road raster
_PROJECTION_CHUNK = 4096  # max points x segments elements per chunk ~ 4096 * N
# Plausibility limits for a track file, checked before any geometry is built (the rasters of
# RoadMask and the camera texture grow with the square of the extent). DeepRacer's 127 routes
# (deepracer-formats.md §8, /work/shared/tracks) span 5.7-24.1 m, have at most 401 rows and roads
# 0.60-1.45 m wide, with the centre point at most 0.29 widths from the middle of its row's
# inner and outer points. A 96 m track (Aragon x4) seeds in 3 s using 290 MB; a file in
# millimetres (x1000) would need a 7.65 GiB raster.
MIN_TRACK_EXTENT = 1.0  # m
MAX_TRACK_EXTENT = 100.0  # m
MAX_TRACK_ROWS = 50_000
MIN_TRACK_WIDTH = 0.1  # m between a row's inner and outer points
MAX_TRACK_FILE_BYTES = 64 << 20  # MAX_TRACK_ROWS rows of 6 float64 take 2.4 MB; room for extra columns
_NPY_MAGIC = b"\x93NUMPY"


class TrackError(ValueError):
    """A track file or name that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, eq=False)
class CenterProjection:
    """Projection of K points on the centre line."""

    distance: np.ndarray  # (K,) metres along the centre line from waypoint 0, in [0, length]
    offset: np.ndarray  # (K,) metres from the centre line (>= 0): distance_from_center
    segment: np.ndarray  # (K,) index i of the nearest segment [waypoint i, waypoint i+1]
    point: np.ndarray  # (K, 2) nearest point on the centre line
    is_left: np.ndarray  # (K,) bool: is_left_of_center, DeepRacer's rule
    track_width: np.ndarray  # (K,) local track width at the projection


@dataclass(frozen=True, eq=False)
class Track:
    """One track: centre line and borders (N, 2) each, plus derived geometry."""

    name: str
    center: np.ndarray
    inner: np.ndarray
    outer: np.ndarray
    closed: bool
    is_ccw: bool = field(init=False)
    length: float = field(init=False)
    waypoint_distance: np.ndarray = field(init=False, repr=False)  # (N,) cumulative metres
    segment_length: np.ndarray = field(init=False, repr=False)  # (N-1,)

    def __post_init__(self) -> None:
        for label in ("center", "inner", "outer"):
            array = np.ascontiguousarray(getattr(self, label), dtype=np.float64)
            if array.ndim != 2 or array.shape[1] != 2 or len(array) < 2:
                raise TrackError(f"track {self.name!r}: {label} must have shape (N>=2, 2), got {array.shape}")
            array.setflags(write=False)
            object.__setattr__(self, label, array)
        if not self.center.shape == self.inner.shape == self.outer.shape:
            raise TrackError(f"track {self.name!r}: center, inner and outer differ in length")
        delta = np.diff(self.center, axis=0)
        seg_len = np.hypot(delta[:, 0], delta[:, 1])
        cumulative = np.concatenate(([0.0], np.cumsum(seg_len)))
        for label, value in (("segment_length", seg_len), ("waypoint_distance", cumulative)):
            value.setflags(write=False)
            object.__setattr__(self, label, value)
        object.__setattr__(self, "length", float(cumulative[-1]))
        object.__setattr__(self, "is_ccw", self._orientation_is_ccw())

    def _orientation_is_ccw(self) -> bool:
        if self.closed:
            x, y = self.center[:, 0], self.center[:, 1]
            return bool(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) > 0)
        # open: is the inner border on the left of the driving direction (majority vote)?
        tangent = np.diff(self.center, axis=0)
        to_inner = self.inner[:-1] - self.center[:-1]
        cross = tangent[:, 0] * to_inner[:, 1] - tangent[:, 1] * to_inner[:, 0]
        return bool(np.count_nonzero(cross > 0) >= np.count_nonzero(cross < 0))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_array(cls, array: np.ndarray, name: str, source: str | None = None) -> Track:
        """Validate a DeepRacer ``(N, >=6)`` route array, drop duplicate waypoints, build the Track."""
        where = source or name
        rows = _validated_rows(array, where)
        _check_distinct_points(rows, where)  # a one-point file is that, not a scale problem
        _check_extent(rows, where)  # before dropping duplicates: a file in km collapses to one point
        closed = bool(np.array_equal(rows[0], rows[-1]))
        file_rows, rows = rows, _drop_consecutive_duplicates(rows, closed)
        _check_distinct_points(rows, where)
        for label, columns in (("inner border (columns 2-3)", slice(2, 4)),
                               ("outer border (columns 4-5)", slice(4, 6))):
            _check_not_self_crossing(rows[:, columns], closed, f"{where}: the {label}")
        _check_rows_are_roads(file_rows, where)  # after: a crossing border also puts centre points off the road
        return cls(name, rows[:, 0:2].copy(), rows[:, 2:4].copy(), rows[:, 4:6].copy(), closed)

    def reversed(self) -> Track:
        """The same track driven the other way (waypoints reversed, is_ccw flipped)."""
        return Track(self.name, self.center[::-1].copy(), self.inner[::-1].copy(), self.outer[::-1].copy(), self.closed)

    # ------------------------------------------------------------------ basic queries
    @property
    def num_waypoints(self) -> int:
        return len(self.center)

    @property
    def waypoints(self) -> list[tuple[float, float]]:
        """Centre line as DeepRacer's ``params['waypoints']`` (closing point included for loops)."""
        return [(float(x), float(y)) for x, y in self.center]

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) corners of the box holding all three polylines."""
        everything = np.concatenate((self.center, self.inner, self.outer))
        return everything.min(axis=0), everything.max(axis=0)

    @property
    def row_width(self) -> np.ndarray:
        """(N,) distance between the inner and outer point of each row."""
        return np.hypot(*(self.inner - self.outer).T)

    @cached_property
    def _segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _segment_arrays(self.center)

    # ------------------------------------------------------------------ geometry
    def project(self, points: np.ndarray) -> CenterProjection:
        """Nearest point on the centre line for each of ``points`` (K, 2)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        start, delta, inv_len2 = self._segments
        segment, t, nearest = _project_on_segments(points, start, delta, inv_len2)
        distance = self.waypoint_distance[segment] + t * self.segment_length[segment]
        offset = np.hypot(points[:, 0] - nearest[:, 0], points[:, 1] - nearest[:, 1])
        inner, outer = self.border_points(distance, nearest)
        is_left = self._left_of_center(points, inner, outer)
        width = np.hypot(inner[:, 0] - outer[:, 0], inner[:, 1] - outer[:, 1])
        return CenterProjection(distance, offset, segment, nearest, is_left, width)

    def closest_waypoints(self, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(prev, next)`` waypoint indices around centre-line ``distance`` (DeepRacer bisection)."""
        distance = np.asarray(distance, dtype=np.float64)
        prev = np.searchsorted(self.waypoint_distance, distance, side="right") - 1
        nxt = prev + 1
        last = self.num_waypoints - 1
        prev = np.where(prev < 0, last, prev)
        nxt = np.where(nxt > last, 0, nxt)
        return prev, nxt

    def point_at(self, distance: np.ndarray) -> np.ndarray:
        """(K, 2) centre-line points at ``distance`` metres from waypoint 0 (wrapped for loops)."""
        distance = self._wrap_distance(np.asarray(distance, dtype=np.float64))
        x = np.interp(distance, self.waypoint_distance, self.center[:, 0])
        y = np.interp(distance, self.waypoint_distance, self.center[:, 1])
        return np.stack((x, y), axis=1)

    def pose_at(self, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start poses: centre-line points and headings (rad) toward the next waypoint.

        DeepRacer places a car with a forward difference: from the interpolated point to the
        next waypoint. Where the two coincide the segment's own direction is used.
        """
        distance = self._wrap_distance(np.asarray(distance, dtype=np.float64).reshape(-1))
        points = self.point_at(distance)
        _, nxt = self.closest_waypoints(distance)
        if not self.closed:
            nxt = np.minimum(nxt, self.num_waypoints - 1)
        to_next = self.center[nxt] - points
        seg = np.searchsorted(self.waypoint_distance, distance, side="right") - 1
        seg = np.clip(seg, 0, len(self.segment_length) - 1)
        along = self.center[seg + 1] - self.center[seg]
        tiny = np.hypot(to_next[:, 0], to_next[:, 1]) < 1e-9
        direction = np.where(tiny[:, None], along, to_next)
        return points, np.arctan2(direction[:, 1], direction[:, 0])

    def _wrap_distance(self, distance: np.ndarray) -> np.ndarray:
        if self.closed:
            return np.mod(distance, self.length)
        return np.clip(distance, 0.0, self.length)

    def border_points(
        self, distance: np.ndarray, centre: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inner- and outer-border points nearest to the centre-line point at ``distance``.

        Exact: the centre point (``centre`` if the caller has it) is projected on the few
        border segments that were nearest at the table samples (every 2 cm along the centre
        line) on either side of it, and their neighbours, instead of on every segment.
        """
        distance = self._wrap_distance(np.asarray(distance, dtype=np.float64).reshape(-1))
        centre = self.point_at(distance) if centre is None else centre
        samples, nearest_segments = self._border_table
        after = np.minimum(np.maximum(np.searchsorted(samples, distance, side="right"), 1), len(samples) - 1)
        inner, outer = (
            _nearest_on_candidates(centre, segments, table[after - 1], table[after])
            for segments, table in zip(self._border_segments, nearest_segments, strict=True)
        )
        return inner, outer

    def track_width(self, distance: np.ndarray) -> np.ndarray:
        """Local track width (m) at centre-line ``distance``, as DeepRacer's ``track_width``."""
        inner, outer = self.border_points(distance)
        return np.hypot(inner[:, 0] - outer[:, 0], inner[:, 1] - outer[:, 1])

    def is_left_of_center(self, points: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """DeepRacer's rule: (nearer to the inner than to the outer border point) XOR (not is_ccw)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        inner, outer = self.border_points(distance)
        return self._left_of_center(points, inner, outer)

    def _left_of_center(self, points: np.ndarray, inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
        to_inner = np.hypot(points[:, 0] - inner[:, 0], points[:, 1] - inner[:, 1])
        to_outer = np.hypot(points[:, 0] - outer[:, 0], points[:, 1] - outer[:, 1])
        return (to_inner < to_outer) ^ (not self.is_ccw)

    @cached_property
    def _border_segments(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        inner, outer = (_segment_arrays(border) for border in (self.inner, self.outer))
        return inner, outer

    @cached_property
    def _border_table(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """Centre-line sample distances and, per border, the nearest segment at each sample."""
        count = max(int(math.ceil(self.length / BORDER_TABLE_SPACING)), 1) + 1
        samples = np.union1d(np.linspace(0.0, self.length, count), self.waypoint_distance)
        centre = self.point_at(samples)
        segments = [_project_on_segments(centre, *arrays)[0] for arrays in self._border_segments]
        return samples, segments

    @property
    def road_rings(self) -> list[np.ndarray]:
        """Polygon rings whose even-odd interior is the road."""
        if self.closed:
            return [self.outer, self.inner]
        return [np.concatenate((self.outer, self.inner[::-1]))]

    def on_road(self, points: np.ndarray) -> np.ndarray:
        """Exact point-in-road test of ``points`` (K, 2) (crossing number over the border rings)."""
        return self._road_region.contains(points)

    @cached_property
    def _road_region(self) -> EvenOddRegion:
        return EvenOddRegion(self.road_rings)

    @cached_property
    def road_mask(self) -> RoadMask:
        """A raster-accelerated on-road test with the same answers as :meth:`on_road`."""
        return RoadMask(self)


class RoadMask:
    """Fast exact on-road test: a 2 cm raster, with the exact test only near the borders.

    Texels whose centre is farther than one texel from every border edge lie wholly on one
    side of the border, so a look-up answers for any point in them; points in the thin band
    around the borders (or outside the raster) fall back to the exact crossing test.
    """

    def __init__(self, track: Track, resolution: float = ROAD_MASK_RESOLUTION) -> None:
        lower, upper = track.bounds
        self.track = track
        self.grid = Grid.covering(lower, upper, resolution, pad=4 * resolution)
        inside = fill_even_odd(self.grid, track.road_rings)
        near_border = np.zeros(self.grid.shape, dtype=bool)
        for ring in track.road_rings:
            closed_ring = ring if np.array_equal(ring[0], ring[-1]) else np.concatenate((ring, ring[:1]))
            distance, _ = polyline_distance_band(self.grid, closed_ring, band=resolution)
            near_border |= np.isfinite(distance)
        # 0 = off road, 1 = on road, 2 = ask the exact test
        self.codes = np.where(near_border, 2, inside.astype(np.uint8)).astype(np.uint8).ravel()

    def contains(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        col, row, inside_grid = self.grid.cell_of(points)
        code = self.codes[row * self.grid.width + col]
        code = np.where(inside_grid, code, 2)
        result = code == 1
        unsure = np.flatnonzero(code == 2)
        if unsure.size:
            result[unsure] = self.track.on_road(points[unsure])
        return result


# ---------------------------------------------------------------------- loading
def _packaged_tracks() -> dict[str, importlib.resources.abc.Traversable]:
    folder = importlib.resources.files("simulator") / "tracks"
    return {entry.name[: -len(".npy")]: entry for entry in folder.iterdir() if entry.name.endswith(".npy")}


def available_tracks() -> list[str]:
    """Names of the packaged tracks, sorted: all 127 routes of DeepRacer's simapp (deepracer-formats.md §8)."""
    return sorted(_packaged_tracks())


def is_packaged(name: str) -> bool:
    """True when ``name`` is one of the DeepRacer tracks hotlap ships."""
    return name in _packaged_tracks()


def load_track(name_or_path: str | os.PathLike[str]) -> Track:
    """Load a packaged track by name (``"reInvent2019_track"``) or any ``.npy`` file by path.

    Raises TrackError naming the track or file and the problem.
    """
    text = os.fspath(name_or_path)
    packaged = _packaged_tracks()
    if text in packaged:
        with packaged[text].open("rb") as handle:
            return Track.from_array(_read_npy(handle, f"{text}.npy"), name=text, source=f"{text}.npy")
    if _looks_like_a_path(text):
        return track_from_npy_bytes(read_track_file(text), Path(text).stem, text)
    raise TrackError(f"unknown track {text!r}{_suggestions(text, packaged)}")


TRACK_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def read_user_track(name_or_path: str) -> tuple[Track, bytes | None]:
    """A run's track as the user gives it: a packaged name, or a ``.npy`` file to store with the run.

    Returns the validated Track and, for a file, its bytes (None for a packaged track). The
    track's name is the file's stem, which must be a plain name (it names the file in the store).
    Raises TrackError naming the file and the problem.
    """
    if is_packaged(name_or_path) or not _looks_like_a_path(name_or_path):
        return load_track(name_or_path), None
    data = read_track_file(name_or_path)
    name = Path(name_or_path).stem
    if not TRACK_NAME_PATTERN.fullmatch(name):
        raise TrackError(f"{name_or_path}: the file name {name!r} must be letters, digits, '_', '.', '-' "
                         "(it becomes the track's name, WORLD_NAME)")
    return track_from_npy_bytes(data, name, name_or_path), data


def read_track_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a user's track file, refused by its size before it is read. Raises TrackError."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_TRACK_FILE_BYTES:
            raise TrackError(f"{os.fspath(path)}: {size} bytes, more than the {MAX_TRACK_FILE_BYTES} a track "
                             "file may have (DeepRacer's are under 20 kB)")
        return Path(path).read_bytes()
    except FileNotFoundError as error:
        raise TrackError(f"{os.fspath(path)}: no such track file") from error
    except OSError as error:
        raise TrackError(f"{os.fspath(path)}: cannot read the track file ({error.strerror})") from error


def track_from_npy_bytes(data: bytes, name: str, source: str) -> Track:
    """Validate the bytes of a DeepRacer ``.npy`` route (never unpickled) and build the Track."""
    return Track.from_array(_read_npy(io.BytesIO(data), source), name=name, source=source)


def load_run_track(name: str, stored: bytes | None, source: str) -> Track:
    """The track a run drives: the file stored with the run when there is one, else the packaged track.

    Workers call this with what they read from the store, never with a path of the machine that
    seeded the run, so every worker drives the same track. Raises TrackError.
    """
    if stored is not None:
        return track_from_npy_bytes(stored, name, source)
    if not is_packaged(name):
        raise TrackError(f"track {name!r} is not a packaged DeepRacer track and no track file is stored "
                         f"with the run{_suggestions(name, _packaged_tracks())}")
    return load_track(name)


def _looks_like_a_path(text: str) -> bool:
    return text.endswith(".npy") or os.sep in text or Path(text).exists()


def _suggestions(text: str, packaged: Iterable[str]) -> str:
    close = difflib.get_close_matches(text, list(packaged), n=3)
    return f"; did you mean {', '.join(close)}?" if close else "; `hotlap tracks` lists the packaged tracks"


def _read_npy(handle: IO[bytes], where: str) -> np.ndarray:
    """Read one plain numeric .npy array, never unpickling, and refuse by its header (dtype, shape,
    row count) before numpy allocates anything by the file's claimed size."""
    start = handle.read(len(_NPY_MAGIC))
    if start != _NPY_MAGIC:
        raise TrackError(f"{where}: not a readable .npy array (a .npy file starts with {_NPY_MAGIC!r}, "
                         f"this one with {start!r})")
    handle.seek(0)
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:  # 3.0 only differs for non-latin-1 field names, never a numeric track
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    except (ValueError, OSError, EOFError) as error:
        raise TrackError(f"{where}: not a readable .npy array (bad header: {error})") from error
    if dtype.hasobject:
        raise TrackError(f"{where}: not a readable .npy array: it holds Python objects (dtype {dtype}), "
                         "not numbers; hotlap never unpickles a track file")
    _check_shape(tuple(shape), where)
    handle.seek(0)
    try:
        array = np.load(handle, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise TrackError(f"{where}: not a readable .npy array ({error})") from error
    if not isinstance(array, np.ndarray):
        raise TrackError(f"{where}: expected a single array, got {type(array).__name__}")
    return array


def _check_shape(shape: tuple[int, ...], where: str) -> None:
    if len(shape) != 2:
        raise TrackError(f"{where}: expected a 2-D (N, 6) array, got ndim={len(shape)} shape={shape}")
    if shape[1] < TRACK_COLUMNS:
        raise TrackError(f"{where}: expected at least {TRACK_COLUMNS} columns, got shape {shape}")
    if shape[0] > MAX_TRACK_ROWS:
        raise TrackError(f"{where}: {shape[0]} rows, more than the {MAX_TRACK_ROWS} hotlap accepts "
                         "(DeepRacer's tracks have at most 401)")


def _check_distinct_points(rows: np.ndarray, where: str) -> None:
    distinct = len(np.unique(rows[:, 0:2], axis=0))
    if distinct < MIN_DISTINCT_POINTS:
        raise TrackError(f"{where}: needs at least {MIN_DISTINCT_POINTS} distinct centre points, has {distinct}")


def _check_extent(rows: np.ndarray, where: str) -> None:
    """Refuse a track whose bounding box is implausible for DeepRacer: usually a file in millimetres
    or kilometres, whose rasters would be huge or degenerate."""
    points = rows.reshape(-1, 2)
    extent = float(np.max(points.max(axis=0) - points.min(axis=0)))
    if not MIN_TRACK_EXTENT <= extent <= MAX_TRACK_EXTENT:
        raise TrackError(f"{where}: the track spans {extent:.6g} m, outside the {MIN_TRACK_EXTENT:g}-"
                         f"{MAX_TRACK_EXTENT:g} m hotlap accepts (DeepRacer's tracks span 5.7-24.1 m); "
                         "coordinates must be metres")


def _check_rows_are_roads(rows: np.ndarray, where: str) -> None:
    """Each row is a cross-section of the road: inner and outer points at least MIN_TRACK_WIDTH
    apart, with the centre point between them (within half the width of their middle)."""
    center, inner, outer = rows[:, 0:2], rows[:, 2:4], rows[:, 4:6]
    width = np.hypot(*(outer - inner).T)
    narrow = np.flatnonzero(width < MIN_TRACK_WIDTH)
    if narrow.size:
        row = int(narrow[0])
        raise TrackError(f"{where}: row {row}: the road is {width[row]:.3g} m wide (inner and outer points that "
                         f"close), less than {MIN_TRACK_WIDTH:g} m; {narrow.size} row(s) like it")
    off = np.hypot(*(center - (inner + outer) / 2).T)
    outside = np.flatnonzero(off > width / 2)
    if outside.size:
        row = int(outside[0])
        raise TrackError(f"{where}: row {row}: the centre point is {off[row]:.3g} m from the middle of the "
                         f"road, outside its {width[row]:.3g} m between the inner and outer points; "
                         f"{outside.size} row(s) like it")


def _validated_rows(array: np.ndarray, where: str) -> np.ndarray:
    array = np.asarray(array)
    _check_shape(array.shape, where)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TrackError(f"{where}: expected numbers, got dtype {array.dtype}")
    rows = array[:, :TRACK_COLUMNS].astype(np.float64)
    bad = ~np.isfinite(rows)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise TrackError(f"{where}: non-finite value {rows[row, column]} at row {row}, column {column}")
    if len(rows) < MIN_DISTINCT_POINTS:
        raise TrackError(f"{where}: needs at least {MIN_DISTINCT_POINTS} rows, has {len(rows)}")
    return rows


def _check_not_self_crossing(border: np.ndarray, closed: bool, what: str) -> None:
    """Raise TrackError naming the two crossing segments (their row numbers) if the polyline crosses
    itself: the road between two such borders is not a strip, so on/off-track and the lidar's walls
    would be wrong. None of DeepRacer's 127 routes has one (tests/simulator/test_track.py)."""
    import shapely  # a runtime dependency (pyproject.toml); imported here to keep `import simulator.track` light

    points = border[np.concatenate(([True], np.hypot(*np.diff(border, axis=0).T) > DUPLICATE_EPS))]
    if len(points) < 3 or shapely.is_simple(shapely.linestrings(points)):
        return
    start, end = points[:-1], points[1:]
    for i in range(len(start)):
        later = np.arange(i + 2, len(start))
        if closed and i == 0:
            later = later[:-1]  # the last segment ends where the first starts
        hit = _segments_cross(start[i], end[i], start[later], end[later])
        if hit.any():
            j = int(later[np.flatnonzero(hit)[0]])
            raise TrackError(f"{what} crosses itself: its segment from row {i} to {i + 1} crosses the one "
                             f"from row {j} to {j + 1}, near ({start[i][0]:.3f}, {start[i][1]:.3f})")
    raise TrackError(f"{what} is not a simple line (it overlaps itself)")  # touching, collinear overlap


def _segments_cross(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Whether segment a-b properly crosses or touches each segment c[k]-d[k] (2-D)."""
    def side(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        pq, pr = q - p, r - p
        return np.sign(pq[..., 0] * pr[..., 1] - pq[..., 1] * pr[..., 0])

    return (side(a, b, c) * side(a, b, d) <= 0) & (side(c, d, a) * side(c, d, b) <= 0)


def _drop_consecutive_duplicates(rows: np.ndarray, closed: bool) -> np.ndarray:
    step = np.hypot(*np.diff(rows[:, 0:2], axis=0).T)
    keep = np.concatenate(([True], step > DUPLICATE_EPS))
    if closed and not keep[-1]:
        # keep the closing row (== row 0); drop the duplicate before it instead
        keep[-1] = True
        previous_kept = np.flatnonzero(keep[:-1])[-1]
        if previous_kept > 0:
            keep[previous_kept] = False
    return rows[keep]


# ---------------------------------------------------------------------- kernels
def _segment_arrays(polyline: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    start = polyline[:-1]
    delta = np.diff(polyline, axis=0)
    len2 = delta[:, 0] ** 2 + delta[:, 1] ** 2
    inv_len2 = np.where(len2 > 0, 1.0 / np.where(len2 > 0, len2, 1.0), 0.0)
    return start, delta, inv_len2


def _nearest_on_candidates(
    points: np.ndarray, segments: tuple[np.ndarray, ...], low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """Nearest point of each point on segments ``low-1 .. low+1`` and ``high-1 .. high+1``."""
    start, delta, inv_len2 = segments
    offsets = np.array([-1, 0, 1])
    candidates = np.concatenate((low[:, None] + offsets, high[:, None] + offsets), axis=1)
    candidates = np.minimum(np.maximum(candidates, 0), len(start) - 1)
    sx, sy = start[candidates, 0], start[candidates, 1]
    dx, dy = delta[candidates, 0], delta[candidates, 1]
    wx = points[:, 0:1] - sx
    wy = points[:, 1:2] - sy
    t = np.minimum(np.maximum((wx * dx + wy * dy) * inv_len2[candidates], 0.0), 1.0)
    ex, ey = wx - t * dx, wy - t * dy
    best = np.argmin(ex * ex + ey * ey, axis=1)
    rows = np.arange(len(points))
    nearest = np.empty((len(points), 2))
    nearest[:, 0] = sx[rows, best] + t[rows, best] * dx[rows, best]
    nearest[:, 1] = sy[rows, best] + t[rows, best] * dy[rows, best]
    return nearest


def _project_on_segments(
    points: np.ndarray, start: np.ndarray, delta: np.ndarray, inv_len2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(segment index, parameter t in [0, 1], nearest point) of each point on a polyline."""
    count = len(points)
    segment = np.empty(count, dtype=np.int64)
    chunk = max(1, _PROJECTION_CHUNK * 64 // max(len(start), 1))
    ax, ay = start[:, 0], start[:, 1]
    dx, dy = delta[:, 0], delta[:, 1]
    for lo in range(0, count, chunk):
        px = points[lo : lo + chunk, 0:1]
        py = points[lo : lo + chunk, 1:2]
        wx = px - ax
        wy = py - ay
        t = np.clip((wx * dx + wy * dy) * inv_len2, 0.0, 1.0)
        ex = wx - t * dx
        ey = wy - t * dy
        segment[lo : lo + chunk] = np.argmin(ex * ex + ey * ey, axis=1)
    w = points - start[segment]
    t_best = np.clip((w[:, 0] * dx[segment] + w[:, 1] * dy[segment]) * inv_len2[segment], 0.0, 1.0)
    nearest = start[segment] + t_best[:, None] * delta[segment]
    return segment, t_best, nearest
