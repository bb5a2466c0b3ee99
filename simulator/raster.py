"""Top-down rasterisation of track geometry onto regular grids (pure numpy).

Used twice: the camera's ground texture (simulator.sensors) and the fast road mask
behind the on-road test of the env (simulator.track.RoadMask). A texel (i, j) covers
``[x0 + i*res, x0 + (i+1)*res) x [y0 + j*res, y0 + (j+1)*res)``; every test is made
at the texel centre. Arrays are indexed ``[row=j (y), col=i (x)]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A regular grid of square texels in world coordinates (metres)."""

    x0: float
    y0: float
    resolution: float
    width: int
    height: int

    @classmethod
    def covering(cls, lower: np.ndarray, upper: np.ndarray, resolution: float, pad: float) -> Grid:
        """The grid over the box [lower, upper] grown by ``pad`` on every side."""
        x0 = float(lower[0]) - pad
        y0 = float(lower[1]) - pad
        width = int(math.ceil((float(upper[0]) + pad - x0) / resolution))
        height = int(math.ceil((float(upper[1]) + pad - y0) / resolution))
        return cls(x0, y0, resolution, max(width, 1), max(height, 1))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def column_centres(self) -> np.ndarray:
        return self.x0 + (np.arange(self.width) + 0.5) * self.resolution

    def row_centres(self) -> np.ndarray:
        return self.y0 + (np.arange(self.height) + 0.5) * self.resolution

    def cell_of(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(col, row, inside) of the texels holding ``points`` (K, 2); col/row clipped into range."""
        col = np.floor((points[:, 0] - self.x0) / self.resolution).astype(np.int64)
        row = np.floor((points[:, 1] - self.y0) / self.resolution).astype(np.int64)
        inside = (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)
        np.minimum(np.maximum(col, 0, out=col), self.width - 1, out=col)
        np.minimum(np.maximum(row, 0, out=row), self.height - 1, out=row)
        return col, row, inside


def ring_edges(ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge start and end points of a polygon ring; a repeated closing vertex is ignored."""
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    return ring, np.roll(ring, -1, axis=0)


def fill_even_odd(grid: Grid, rings: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean (height, width) mask of texel centres inside ``rings`` by the even-odd rule.

    Same half-open crossing convention as :func:`points_in_rings`, so a texel centre gets
    the same answer from both. Works by counting, per texel row, the edge crossings to the
    right of each centre (scanline parity) rather than testing every texel against every edge.
    """
    counts = np.zeros(grid.height * (grid.width + 1), dtype=np.int64)
    for ring in rings:
        start, end = ring_edges(np.asarray(ring, dtype=np.float64))
        rows, x_cross = _scanline_crossings(grid, start, end)
        # texel i has its centre left of the crossing iff i < ceil(u - 0.5)
        u = (x_cross - grid.x0) / grid.resolution
        first_right = np.clip(np.ceil(u - 0.5), 0, grid.width).astype(np.int64)
        counts += np.bincount(rows * (grid.width + 1) + first_right, minlength=counts.size)
    per_row = counts.reshape(grid.height, grid.width + 1)
    # crossings right of texel i = crossings recorded at index > i
    right_of = np.cumsum(per_row[:, ::-1], axis=1)[:, ::-1]
    return (right_of[:, 1:] % 2).astype(bool)


def _scanline_crossings(grid: Grid, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row index, x of the crossing) for every edge crossing every texel-row centre line."""
    res = grid.resolution
    # rows j with centre y_c: (ay > y_c) != (by > y_c)  <=>  min(ay, by) <= y_c < max(ay, by)
    lo = np.minimum(start[:, 1], end[:, 1])
    hi = np.maximum(start[:, 1], end[:, 1])
    first = np.ceil((lo - grid.y0) / res - 0.5).astype(np.int64)
    last = np.ceil((hi - grid.y0) / res - 0.5).astype(np.int64) - 1
    first = np.maximum(first, 0)
    last = np.minimum(last, grid.height - 1)
    count = np.maximum(last - first + 1, 0)
    edge = np.repeat(np.arange(len(start)), count)
    offset = np.arange(edge.size) - np.repeat(np.cumsum(count) - count, count)
    rows = first[edge] + offset
    y_c = grid.y0 + (rows + 0.5) * res
    ax, ay = start[edge, 0], start[edge, 1]
    bx, by = end[edge, 0], end[edge, 1]
    x_cross = ax + (y_c - ay) * (bx - ax) / (by - ay)
    return rows, x_cross


class EvenOddRegion:
    """Exact even-odd point-in-polygon test against a fixed set of rings (edges precomputed)."""

    def __init__(self, rings: Sequence[np.ndarray]) -> None:
        starts, ends = zip(*(ring_edges(np.asarray(r, dtype=np.float64)) for r in rings), strict=True)
        self._ax = np.concatenate([a[:, 0] for a in starts])
        self._ay = np.concatenate([a[:, 1] for a in starts])
        by = np.concatenate([b[:, 1] for b in ends])
        bx = np.concatenate([b[:, 0] for b in ends])
        dy = by - self._ay
        horizontal = dy == 0
        self._by = by
        self._slope = np.where(horizontal, 0.0, (bx - self._ax) / np.where(horizontal, 1.0, dy))

    def contains(self, points: np.ndarray, chunk: int = 512) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        inside = np.empty(len(points), dtype=bool)
        for lo in range(0, len(points), chunk):
            px = points[lo : lo + chunk, 0:1]
            py = points[lo : lo + chunk, 1:2]
            straddles = (self._ay > py) != (self._by > py)
            x_cross = self._ax + (py - self._ay) * self._slope
            crossings = np.count_nonzero(straddles & (px < x_cross), axis=1)
            inside[lo : lo + chunk] = (crossings % 2) == 1
        return inside


def points_in_rings(points: np.ndarray, rings: Sequence[np.ndarray]) -> np.ndarray:
    """Exact even-odd point-in-polygon test of ``points`` (K, 2) against all ``rings`` together."""
    return EvenOddRegion(rings).contains(points)


def polyline_distance_band(
    grid: Grid, vertices: np.ndarray, band: float
) -> tuple[np.ndarray, np.ndarray]:
    """Distance from texel centres to a polyline, computed only within ``band`` of it.

    Returns ``(distance, arc_length)`` float32 arrays of the grid's shape: the distance to the
    nearest point of the polyline (``inf`` outside the band) and the arc length along the
    polyline of that nearest point (used for dash patterns).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    distance = np.full(grid.shape, np.inf, dtype=np.float32)
    arc_length = np.zeros(grid.shape, dtype=np.float32)
    seg_start = vertices[:-1]
    seg_delta = np.diff(vertices, axis=0)
    seg_len = np.hypot(seg_delta[:, 0], seg_delta[:, 1])
    seg_arc = np.concatenate(([0.0], np.cumsum(seg_len)[:-1]))
    res = grid.resolution
    for start, delta, length, arc in zip(seg_start, seg_delta, seg_len, seg_arc, strict=True):
        end = start + delta
        c0 = max(int(math.floor((min(start[0], end[0]) - band - grid.x0) / res)), 0)
        c1 = min(int(math.ceil((max(start[0], end[0]) + band - grid.x0) / res)), grid.width)
        r0 = max(int(math.floor((min(start[1], end[1]) - band - grid.y0) / res)), 0)
        r1 = min(int(math.ceil((max(start[1], end[1]) + band - grid.y0) / res)), grid.height)
        if c0 >= c1 or r0 >= r1:
            continue
        xs = grid.x0 + (np.arange(c0, c1) + 0.5) * res
        ys = grid.y0 + (np.arange(r0, r1) + 0.5) * res
        wx = xs[None, :] - start[0]
        wy = ys[:, None] - start[1]
        if length > 0:
            t = np.clip((wx * delta[0] + wy * delta[1]) / (length * length), 0.0, 1.0)
        else:
            t = np.zeros((len(ys), len(xs)))
        d = np.hypot(wx - t * delta[0], wy - t * delta[1]).astype(np.float32)
        window = distance[r0:r1, c0:c1]
        closer = (d < window) & (d <= band)
        window[closer] = d[closer]
        arc_length[r0:r1, c0:c1][closer] = (arc + t * length)[closer]
    return distance, arc_length
