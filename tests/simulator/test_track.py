from __future__ import annotations

import importlib.resources
import math
from pathlib import Path

import numpy as np
import pytest

from simulator.track import Track, TrackError, available_tracks, is_packaged, load_track
from tests.simulator.synthetic import (
    circle_rows,
    circle_track,
    nearest_on_polyline,
    reference_on_road,
    straight_track,
)


@pytest.fixture(scope="module")
def reinvent() -> Track:
    return load_track("reInvent2019_track")


# ---------------------------------------------------------------- loading
def test_packaged_reinvent2019_matches_deepracer_facts(reinvent: Track) -> None:
    # formats doc §8: 155 rows with one duplicate -> 154 after sanitisation, 23.1182 m, CCW
    assert reinvent.closed and reinvent.is_ccw
    assert reinvent.num_waypoints == 154
    assert reinvent.length == pytest.approx(23.1182, abs=1e-4)
    np.testing.assert_allclose(reinvent.center[0], [0.307878, 2.83060753], atol=1e-6)
    np.testing.assert_allclose(reinvent.inner[0], [0.83937341, 2.87564301], atol=1e-6)
    np.testing.assert_array_equal(reinvent.center[0], reinvent.center[-1])
    assert reinvent.row_width.min() == pytest.approx(1.0668, abs=1e-3)


# The 15 routes added last (issue 6 item 11): open, figure-eight, clockwise and building variants.
ADDED_ROUTES = {
    "2024_reinvent_champ_cw", "AWS_track", "Albert", "Austin", "Bowtie_track", "Monaco", "Monaco_building",
    "Singapore_f1", "Straight_track", "caecer_loop", "hamption_pro", "jyllandsringen_pro", "penbay_pro_cw",
    "reInvent2019_wide_cw", "red_star_pro_cw",
}


def test_available_tracks_are_all_127_deepracer_routes() -> None:
    names = available_tracks()
    assert len(names) == 127  # simapp bundle/routes, tracks.txt (deepracer-formats.md §8)
    assert ADDED_ROUTES | {"reInvent2019_track", "Oval_track", "reinvent_base", "2024_reinvent_champ_ccw"} <= set(names)
    assert names == sorted(names)
    assert all(is_packaged(name) for name in names) and not is_packaged("my_track")


def _simapp_row_count(rows: np.ndarray) -> int:
    """Rows left after the simapp's sanitisation: consecutive centre duplicates (1e-9 m) go, the closing row stays."""
    step = np.hypot(*np.diff(rows[:, 0:2], axis=0).T)
    return len(rows) - int(np.count_nonzero(step <= 1e-9))


@pytest.mark.parametrize("name", available_tracks())
def test_every_packaged_route_loads_as_the_simapp_loads_it(name: str) -> None:
    rows = np.load(importlib.resources.files("simulator") / "tracks" / f"{name}.npy", allow_pickle=False)
    track = load_track(name)
    assert track.closed == (name != "Straight_track")  # the one open strip
    assert track.num_waypoints == _simapp_row_count(rows)
    assert np.all(track.segment_length > 1e-9), name
    assert track.length > 5
    centre = track.point_at(np.linspace(0, track.length, 200, endpoint=False))
    assert track.on_road(centre).all()  # the centre line is on the road, figure-eights too


def test_load_by_path_uses_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "my_loop.npy"
    np.save(path, circle_rows())
    track = load_track(path)
    assert track.name == "my_loop" and track.closed
    assert track.length == pytest.approx(2 * math.pi * 3.0, rel=1e-3)


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(TrackError, match="reInvent2019_track"):
        load_track("reinvent2019_track")
    with pytest.raises(TrackError, match="no such track file"):
        load_track("/nonexistent/dir/x.npy")


def _with_value_at(flat_index: int, value: float) -> np.ndarray:
    rows = np.arange(60, dtype=float).reshape(10, 6)
    rows.flat[flat_index] = value
    return rows


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros(12), "2-D"),
        (np.zeros((4, 6, 1)), "2-D"),
        (np.zeros((10, 5)), "at least 6 columns"),
        (_with_value_at(13, np.nan), "non-finite value nan at row 2, column 1"),
        (_with_value_at(7, np.inf), "non-finite value inf at row 1"),
        (np.ones((10, 6)), "at least 3 distinct centre points"),
        (np.array([[0, 0, 0, 1, 0, -1], [1, 0, 1, 1, 1, -1]], dtype=float), "at least 3 rows"),
        (np.array([["a"] * 6] * 4), "expected numbers"),
    ],
)
def test_malformed_files_are_rejected_with_file_and_problem(tmp_path: Path, array: np.ndarray, problem: str) -> None:
    path = tmp_path / "broken.npy"
    np.save(path, array)
    with pytest.raises(TrackError) as caught:
        load_track(path)
    assert "broken.npy" in str(caught.value)
    assert problem in str(caught.value)


def test_pickled_object_arrays_are_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TrackError, match="evil.npy: not a readable"):
        load_track(path)
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(TrackError, match="junk.npy"):
        load_track(tmp_path / "junk.npy")


def test_extra_columns_are_ignored() -> None:
    rows = np.concatenate((circle_rows(), np.ones((181, 2))), axis=1)
    assert Track.from_array(rows, "wide").center.shape == (181, 2)


# ---------------------------------------------------------------- duplicates, direction, open tracks
def test_consecutive_duplicates_are_dropped_and_the_closing_row_kept() -> None:
    rows = circle_rows(points=61)
    with_dups = np.insert(rows, [10, 10, 30], rows[[10, 10, 30]], axis=0)  # two repeats of row 10, one of 30
    track = Track.from_array(with_dups, "dups")
    np.testing.assert_array_equal(track.center, rows[:, 0:2])
    # a duplicate of the closing row just before it: the closing row stays
    tail_dup = np.insert(rows, 60, rows[0], axis=0)
    track = Track.from_array(tail_dup, "tail")
    assert track.closed and track.num_waypoints == 61
    np.testing.assert_array_equal(track.center[-1], rows[0, 0:2])
    # near-duplicates below 1e-9 m go too
    nudged = np.insert(rows, 5, rows[5] + 1e-12, axis=0)
    assert Track.from_array(nudged, "nudged").num_waypoints == 61


def test_cw_and_ccw_and_reversed() -> None:
    ccw = circle_track(ccw=True)
    cw = circle_track(ccw=False)
    assert ccw.is_ccw and not cw.is_ccw
    back = ccw.reversed()
    assert not back.is_ccw and back.closed and back.length == pytest.approx(ccw.length)
    np.testing.assert_array_equal(back.center, ccw.center[::-1])
    np.testing.assert_array_equal(back.inner, ccw.inner[::-1])  # inner stays the loop's inner border
    assert back.reversed().is_ccw


def test_open_track() -> None:
    track = straight_track(length=10.0, points=21)
    assert not track.closed and track.is_ccw  # inner border on the left
    assert track.length == pytest.approx(10.0)
    assert not track.reversed().is_ccw
    prev, nxt = track.closest_waypoints(np.array([0.0, 4.9, 10.0]))
    assert prev.tolist() == [0, 9, 20] and nxt.tolist() == [1, 10, 0]
    np.testing.assert_allclose(track.point_at(np.array([12.0, -1.0])), [[10, 0], [0, 0]])


def test_uneven_spacing_and_reference_length() -> None:
    rows = circle_rows(points=200)
    keep = np.sort(np.random.default_rng(3).choice(np.arange(1, 199), 60, replace=False))
    uneven = rows[np.concatenate(([0], keep, [199]))]
    track = Track.from_array(uneven, "uneven")
    expected = np.sum(np.hypot(*np.diff(uneven[:, 0:2], axis=0).T))
    assert track.length == pytest.approx(expected)
    np.testing.assert_allclose(track.waypoint_distance[-1], expected)


# ---------------------------------------------------------------- geometry vs brute force
def test_projection_matches_brute_force(reinvent: Track) -> None:
    rng = np.random.default_rng(0)
    lower, upper = reinvent.bounds
    points = rng.uniform(lower, upper, size=(200, 2))
    projection = reinvent.project(points)
    for k, point in enumerate(points):
        along, distance, _, nearest = nearest_on_polyline(tuple(point), reinvent.center)
        assert projection.offset[k] == pytest.approx(distance, abs=1e-9)
        assert projection.distance[k] == pytest.approx(along, abs=1e-9)
        np.testing.assert_allclose(projection.point[k], nearest, atol=1e-9)
    np.testing.assert_array_equal(projection.is_left, reinvent.is_left_of_center(points, projection.distance))
    np.testing.assert_allclose(projection.track_width, reinvent.track_width(projection.distance))


def test_closest_waypoints_bisect_like_deepracer(reinvent: Track) -> None:
    d = reinvent.waypoint_distance
    prev, nxt = reinvent.closest_waypoints(np.array([0.0, d[5], 0.5 * (d[5] + d[6]), d[-2] + 0.01, reinvent.length]))
    last = reinvent.num_waypoints - 1
    assert prev.tolist() == [0, 5, 5, last - 1, last]
    assert nxt.tolist() == [1, 6, 6, last, 0]


def _varying_width_rows() -> np.ndarray:
    angles = np.linspace(0, 2 * math.pi, 241)
    unit = np.stack((np.cos(angles), np.sin(angles)), axis=1)
    half = (0.5 + 0.25 * np.sin(2 * angles))[:, None]
    rows = np.concatenate((3 * unit, (3 - half) * unit, (3 + half) * unit), axis=1)
    rows[-1] = rows[0]
    return rows


@pytest.mark.parametrize("name", ["varying", "Oval_track", "Tokyo_Training_track"])
def test_track_width_is_the_distance_between_border_points_nearest_the_projection(name: str) -> None:
    track = Track.from_array(_varying_width_rows(), name) if name == "varying" else load_track(name)
    rng = np.random.default_rng(1)
    distances = rng.uniform(0, track.length, 60)
    widths = track.track_width(distances)
    for distance, width in zip(distances, widths, strict=True):
        centre = tuple(track.point_at(np.array([distance]))[0])
        inner = nearest_on_polyline(centre, track.inner)[3]
        outer = nearest_on_polyline(centre, track.outer)[3]
        assert width == pytest.approx(math.dist(inner, outer), abs=1e-9)
    if name == "varying":
        assert widths.min() < 0.6 and widths.max() > 1.4


def test_is_left_of_center_follows_the_driving_direction() -> None:
    inside, outside = np.array([[2.8, 0.0]]), np.array([[3.2, 0.0]])
    for track, inner_is_left in ((circle_track(ccw=True), True), (circle_track(ccw=False), False)):
        for candidate in (track, track.reversed()):
            flip = candidate is not track
            d_in = candidate.project(inside).distance
            d_out = candidate.project(outside).distance
            assert bool(candidate.is_left_of_center(inside, d_in)[0]) == (inner_is_left ^ flip)
            assert bool(candidate.is_left_of_center(outside, d_out)[0]) == (not inner_is_left) ^ flip
    straight = straight_track()
    left, right = np.array([[5.0, 0.2]]), np.array([[5.0, -0.2]])
    assert straight.is_left_of_center(left, np.array([5.0]))[0]
    assert not straight.is_left_of_center(right, np.array([5.0]))[0]


def test_pose_at_points_along_the_track() -> None:
    track = circle_track(points=721)
    points, heading = track.pose_at(np.array([0.0, track.length / 4]))
    np.testing.assert_allclose(points, [[3, 0], [0, 3]], atol=1e-3)
    assert heading[0] == pytest.approx(math.pi / 2, abs=0.01)
    assert math.cos(heading[1]) == pytest.approx(-1.0, abs=1e-3)


# ---------------------------------------------------------------- on road
def test_on_road_matches_reference_and_the_annulus() -> None:
    track = circle_track(radius=3.0, width=1.2, points=721)
    rng = np.random.default_rng(2)
    points = rng.uniform(-4, 4, size=(3000, 2))
    radius = np.hypot(points[:, 0], points[:, 1])
    clear = np.abs(np.abs(radius - 3.0) - 0.6) > 2e-3  # polygon vs circle differ by < 1e-4
    expected = np.abs(radius - 3.0) < 0.6
    np.testing.assert_array_equal(track.on_road(points)[clear], expected[clear])
    np.testing.assert_array_equal(track.road_mask.contains(points), track.on_road(points))


def test_on_road_real_and_open_tracks_match_plain_ray_casting(reinvent: Track) -> None:
    rng = np.random.default_rng(4)
    for track in (reinvent, straight_track()):
        lower, upper = track.bounds
        points = rng.uniform(lower - 0.3, upper + 0.3, size=(400, 2))
        expected = [reference_on_road(tuple(p), track) for p in points]
        np.testing.assert_array_equal(track.on_road(points), expected)
        np.testing.assert_array_equal(track.road_mask.contains(points), expected)


def test_road_mask_agrees_with_exact_test_near_the_borders(reinvent: Track) -> None:
    rng = np.random.default_rng(5)
    along = rng.uniform(0, reinvent.length, 5000)
    inner, outer = reinvent.border_points(along)
    pick = rng.integers(0, 2, 5000)[:, None]
    border = np.where(pick == 0, inner, outer)
    points = border + rng.normal(0, 0.01, size=border.shape)  # within a few cm of a border
    np.testing.assert_array_equal(reinvent.road_mask.contains(points), reinvent.on_road(points))
