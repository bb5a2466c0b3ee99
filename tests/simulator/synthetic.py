"""Synthetic tracks and independent (slow, plain-Python) reference geometry for the simulator tests."""

from __future__ import annotations

import math

import numpy as np

from simulator.track import Track


def circle_rows(
    radius: float = 3.0, width: float = 1.2, points: int = 181, ccw: bool = True, centre: tuple[float, float] = (0, 0)
) -> np.ndarray:
    """DeepRacer-format rows of a closed circular track (first row repeated at the end)."""
    angles = np.linspace(0.0, 2 * math.pi, points)
    if not ccw:
        angles = -angles
    unit = np.stack((np.cos(angles), np.sin(angles)), axis=1)
    cx, cy = centre
    offset = np.array([cx, cy])
    rows = np.concatenate(
        (offset + radius * unit, offset + (radius - width / 2) * unit, offset + (radius + width / 2) * unit), axis=1
    )
    rows[-1] = rows[0]  # exactly closed
    return rows


def circle_track(**kwargs: float | int | bool) -> Track:
    return Track.from_array(circle_rows(**kwargs), "circle")  # type: ignore[arg-type]


def straight_rows(length: float = 10.0, width: float = 1.0, points: int = 21) -> np.ndarray:
    """An open straight strip along +x from (0, 0); inner border on the left (+y)."""
    x = np.linspace(0.0, length, points)
    zeros = np.zeros_like(x)
    return np.stack((x, zeros, x, zeros + width / 2, x, zeros - width / 2), axis=1)


def straight_track(**kwargs: float | int) -> Track:
    return Track.from_array(straight_rows(**kwargs), "straight")  # type: ignore[arg-type]


def nearest_on_polyline(
    point: tuple[float, float], polyline: np.ndarray
) -> tuple[float, float, int, tuple[float, float]]:
    """(arc length, distance, segment, nearest point) by brute force over the segments."""
    px, py = point
    best = (math.inf, 0.0, 0, (0.0, 0.0))
    arc = 0.0
    for i in range(len(polyline) - 1):
        ax, ay = polyline[i]
        bx, by = polyline[i + 1]
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
        qx, qy = ax + t * dx, ay + t * dy
        distance = math.hypot(px - qx, py - qy)
        if distance < best[0] - 1e-12:
            best = (distance, arc + t * math.sqrt(length2), i, (qx, qy))
        arc += math.sqrt(length2)
    distance, along, segment, nearest = best
    return along, distance, segment, nearest


def point_in_polygon(point: tuple[float, float], polygon: np.ndarray) -> bool:
    """Even-odd ray casting, one edge at a time."""
    px, py = point
    inside = False
    count = len(polygon)
    for i in range(count):
        ax, ay = polygon[i]
        bx, by = polygon[(i + 1) % count]
        if (ay > py) != (by > py) and px < ax + (py - ay) * (bx - ax) / (by - ay):
            inside = not inside
    return inside


def reference_on_road(point: tuple[float, float], track: Track) -> bool:
    if track.closed:
        return point_in_polygon(point, track.outer[:-1]) and not point_in_polygon(point, track.inner[:-1])
    return point_in_polygon(point, np.concatenate((track.outer, track.inner[::-1])))


def pure_pursuit_steering(track: Track, x: np.ndarray, y: np.ndarray, yaw: np.ndarray, lookahead: float) -> np.ndarray:
    """Steering (deg) that chases the centre-line point ``lookahead`` metres ahead (negative: behind)."""
    wheelbase, rear = 0.164, -0.081663
    base = np.stack((x, y), axis=1)
    distance = track.project(base).distance
    target = track.point_at(distance + lookahead)
    rear_x = x + rear * np.cos(yaw)
    rear_y = y + rear * np.sin(yaw)
    alpha = np.arctan2(target[:, 1] - rear_y, target[:, 0] - rear_x) - yaw
    reach = np.hypot(target[:, 0] - rear_x, target[:, 1] - rear_y)
    return np.degrees(np.arctan2(2 * wheelbase * np.sin(alpha), reach))


def wavy_loop_rows(
    radius: float = 3.0, width: float = 1.0, amplitude: float = 0.35, lobes: int = 3, points: int = 241,
    ccw: bool = True,
) -> np.ndarray:
    """A closed circular track whose width varies with the angle: width + amplitude * sin(lobes * angle)."""
    angles = np.linspace(0.0, 2 * math.pi, points)
    if not ccw:
        angles = -angles
    unit = np.stack((np.cos(angles), np.sin(angles)), axis=1)
    half = 0.5 * (width + amplitude * np.sin(lobes * angles))[:, None]
    rows = np.concatenate((radius * unit, (radius - half) * unit, (radius + half) * unit), axis=1)
    rows[-1] = rows[0]  # exactly closed
    return rows


def wavy_arc_rows(radius: float = 4.0, sweep_deg: float = 200.0, width: float = 1.0, amplitude: float = 0.3,
                  points: int = 161) -> np.ndarray:
    """An open arc (counter-clockwise, inner border on the driver's left) whose width varies along it."""
    angles = np.linspace(-math.pi / 2, -math.pi / 2 + math.radians(sweep_deg), points)
    unit = np.stack((np.cos(angles), np.sin(angles)), axis=1)
    half = 0.5 * (width + amplitude * np.sin(3 * angles))[:, None]
    return np.concatenate((radius * unit, (radius - half) * unit, (radius + half) * unit), axis=1)


def reference_track_width(head: tuple[float, float], center: np.ndarray, inner: np.ndarray,
                          outer: np.ndarray) -> float:
    """DeepRacer's local track_width by brute force: the distance between the inner- and the outer-border
    points nearest to the head point's projection on the centre line."""
    _, _, _, projection = nearest_on_polyline(head, center)
    _, _, _, on_inner = nearest_on_polyline(projection, inner)
    _, _, _, on_outer = nearest_on_polyline(projection, outer)
    return math.dist(on_inner, on_outer)
