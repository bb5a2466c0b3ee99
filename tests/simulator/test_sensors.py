from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.car import CarState
from simulator.sensors import (
    CameraRenderer,
    LidarScanner,
    LidarSpec,
    SensorSuite,
    TextureStyle,
    discretized_sector_lidar_observation,
    lidar_observation,
    sector_lidar_observation,
)
from simulator.track import Track, load_track
from tests.simulator.synthetic import straight_track

STYLE = TextureStyle()


@pytest.fixture(scope="module")
def reinvent() -> Track:
    return load_track("reInvent2019_track")


@pytest.fixture(scope="module")
def stereo(reinvent: Track) -> CameraRenderer:
    return CameraRenderer(reinvent, (0.03, -0.03))


def start_pose(track: Track, distance: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points, heading = track.pose_at(np.array([distance]))
    return points[:, 0], points[:, 1], heading


# ---------------------------------------------------------------- camera
def test_camera_sees_road_under_the_car_and_sky_above(reinvent: Track) -> None:
    camera = CameraRenderer(reinvent)
    x, y, yaw = start_pose(reinvent, 1.0)
    image = camera.render(x, y, yaw)[0, 0]
    assert image.shape == (120, 160) and image.dtype == np.uint8
    bottom_centre = image[100:, 50:110].astype(float)
    assert abs(np.median(bottom_centre) - STYLE.road) <= STYLE.noise  # road grey (+- texture noise)
    assert np.mean(np.abs(bottom_centre - STYLE.road) <= STYLE.noise) > 0.6  # the rest: the centre dash
    assert np.all(image[: camera.ground_row] == STYLE.sky)
    assert 20 <= camera.ground_row <= 30  # 15 deg down, ~0.89 rad vertical FOV


def test_camera_image_changes_when_the_car_turns(stereo: CameraRenderer, reinvent: Track) -> None:
    x, y, yaw = start_pose(reinvent, 5.0)
    straight = stereo.render(x, y, yaw)[0, 0].astype(int)
    turned = stereo.render(x, y, yaw + math.radians(10))[0, 0].astype(int)
    assert np.mean(straight != turned) > 0.2


def test_camera_sees_white_border_and_dark_ground_when_facing_off_track(reinvent: Track) -> None:
    camera = CameraRenderer(reinvent)
    x, y, yaw = start_pose(reinvent, 3.0)
    image = camera.render(x, y, yaw + math.pi / 2)[0, 0]  # look across the track, toward the left border
    below_horizon = image[camera.ground_row + 2 :]
    assert np.any(below_horizon >= STYLE.border - 10)
    assert np.any(np.abs(below_horizon.astype(int) - STYLE.ground) <= STYLE.noise)


def test_stereo_lenses_see_slightly_different_images(stereo: CameraRenderer, reinvent: Track) -> None:
    x, y, yaw = start_pose(reinvent, 8.0)
    pair = stereo.render(x, y, yaw)
    assert pair.shape == (1, 2, 120, 160)
    left, right = pair[0, 0].astype(int), pair[0, 1].astype(int)
    assert 0.01 < np.mean(left != right) < 0.9
    single_left = CameraRenderer(reinvent, (0.03,)).render(x, y, yaw)[0, 0]
    np.testing.assert_array_equal(single_left, pair[0, 0])


def test_batch_render_equals_one_by_one(stereo: CameraRenderer, reinvent: Track) -> None:
    rng = np.random.default_rng(0)
    points, heading = reinvent.pose_at(rng.uniform(0, reinvent.length, 11))  # > one render chunk
    batch = stereo.render(points[:, 0], points[:, 1], heading)
    for k in range(11):
        one = stereo.render(points[k : k + 1, 0], points[k : k + 1, 1], heading[k : k + 1])
        np.testing.assert_array_equal(batch[k], one[0])


def test_camera_far_off_the_texture_does_not_crash(reinvent: Track) -> None:
    camera = CameraRenderer(reinvent)
    image = camera.render(np.array([500.0, -500.0]), np.array([-500.0, 0.0]), np.array([0.3, 2.0]))
    assert image.shape == (2, 1, 120, 160)


# ---------------------------------------------------------------- lidar
def expected_ranges(half_width: float, x: float, length: float, reach: float) -> np.ndarray:
    """Beam ranges from (x, 0) heading +x on a straight strip |y| <= half_width, 0 <= x <= length."""
    result = []
    for angle in LidarSpec().angles:
        sin = math.sin(angle)
        distance = math.inf if abs(sin) < 1e-12 else half_width / abs(sin)
        hit_x = x + distance * math.cos(angle)
        result.append(distance if distance <= reach and 0 <= hit_x <= length else math.inf)
    return np.array(result)


def test_lidar_ranges_to_the_borders_of_a_straight_strip() -> None:
    track = straight_track(length=10.0, width=1.0)
    scanner = LidarScanner(track, reach=2.0, spec=LidarSpec(noise_std=0.0))
    ranges = scanner.scan(np.array([5.0]), np.array([0.0]), np.array([0.0]), rng=None)[0]
    expected = expected_ranges(0.5, 5.0, 10.0, 2.0)
    finite = np.isfinite(expected)
    np.testing.assert_allclose(ranges[finite], expected[finite], rtol=1e-5)
    assert np.all(np.isinf(ranges[~finite]))
    assert ranges.dtype == np.float32 and ranges.shape == (64,)


def test_lidar_rotates_with_the_car_and_adds_noise() -> None:
    track = straight_track(length=10.0, width=1.0)
    scanner = LidarScanner(track, reach=2.0)
    facing_back = scanner.scan(np.array([5.0]), np.array([0.0]), np.array([math.pi]), rng=None)[0]
    forward = scanner.scan(np.array([5.0]), np.array([0.0]), np.array([0.0]), rng=None)[0]
    np.testing.assert_allclose(facing_back, forward[::-1], rtol=1e-5)  # mirror image: same strip
    noisy = scanner.scan(np.array([5.0]), np.array([0.0]), np.array([0.0]), rng=np.random.default_rng(0))[0]
    finite = np.isfinite(forward)
    spread = np.std(noisy[finite] - forward[finite])
    assert 0.003 < spread < 0.03


def test_lidar_on_a_real_track_matches_brute_force(reinvent: Track) -> None:
    scanner = LidarScanner(reinvent, reach=1.1, spec=LidarSpec(noise_std=0.0))
    rng = np.random.default_rng(3)
    points, heading = reinvent.pose_at(rng.uniform(0, reinvent.length, 6))
    heading = heading + rng.uniform(-0.5, 0.5, 6)
    ranges = scanner.scan(points[:, 0], points[:, 1], heading, rng=None)
    borders = [np.stack((b[:-1], b[1:]), axis=1) for b in (reinvent.inner, reinvent.outer)]
    segments = np.concatenate(borders)
    for k in range(6):
        for b, angle in enumerate(LidarSpec().angles):
            direction = np.array([math.cos(heading[k] + angle), math.sin(heading[k] + angle)])
            best = math.inf
            for a, c in segments:
                e = c - a
                denom = direction[0] * e[1] - direction[1] * e[0]
                if abs(denom) < 1e-12:
                    continue
                w = a - points[k]
                t = (w[0] * e[1] - w[1] * e[0]) / denom
                u = (w[0] * direction[1] - w[1] * direction[0]) / denom
                if t > 0 and 0 <= u <= 1:
                    best = min(best, t)
            expected = best if best <= 1.1 else math.inf
            if math.isfinite(expected):
                assert ranges[k, b] == pytest.approx(max(expected, 0.15), abs=1e-4)
            else:
                assert math.isinf(ranges[k, b])


def test_lidar_filters_like_deepracer() -> None:
    raw = np.full((2, 64), np.inf, dtype=np.float32)
    raw[0, 3] = 0.3  # sector 0
    raw[0, 20] = 0.49  # sector 2
    raw[0, 40] = 0.51  # sector 5: not below 0.5
    raw[1, 63] = 0.05
    lidar = lidar_observation(raw)
    assert lidar.dtype == np.float32 and lidar.max() == 1.0 and lidar[1, 63] == 0.15
    sectors = sector_lidar_observation(raw)
    np.testing.assert_array_equal(sectors[0], [1, 0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(sectors[1], [0, 0, 0, 0, 0, 0, 0, 1])
    one_hot = discretized_sector_lidar_observation(raw, num_sectors=8, values_per_sector=4, clipping_dist=2.0)
    assert one_hot.shape == (2, 32)
    grid = one_hot.reshape(2, 8, 4)
    np.testing.assert_array_equal(grid[0, 0], [1, 0, 0, 0])  # 0.3 m -> bucket 0 of 0.5 m buckets
    np.testing.assert_array_equal(grid[0, 5], [0, 1, 0, 0])  # 0.51 m -> bucket 1
    assert grid[0, 1].sum() == 0  # nothing within 2 m -> all zeros


# ---------------------------------------------------------------- suite
def test_sensor_suite_shapes_and_validation(reinvent: Track) -> None:
    suite = SensorSuite(reinvent, ("STEREO_CAMERAS", "SECTOR_LIDAR"))
    assert suite.spec == {
        "STEREO_CAMERAS": ((2, 120, 160), np.dtype(np.uint8)),
        "SECTOR_LIDAR": ((8,), np.dtype(np.float32)),
    }
    cars = CarState.at_rest(3)
    points, heading = reinvent.pose_at(np.array([0.0, 5.0, 10.0]))
    cars.place(np.arange(3), points[:, 0], points[:, 1], heading)
    observed = suite.observe(cars, np.array([0, 2]), np.random.default_rng(0))
    assert observed["STEREO_CAMERAS"].shape == (2, 2, 120, 160)
    assert observed["SECTOR_LIDAR"].shape == (2, 8)
    for bad in (("CAMERA",), (), ("LIDAR", "SECTOR_LIDAR"), ("FRONT_FACING_CAMERA", "LEFT_CAMERA")):
        with pytest.raises(ValueError):
            SensorSuite(reinvent, bad)
