import struct
import zlib
from pathlib import Path

import numpy as np

from hotlap.render import TRAJECTORY_RGB, render_png, write_png
from simulator.track import load_track


def read_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + 3 * width)
    assert (raw[:, 0] == 0).all()  # filter type None on every row
    return raw[:, 1:].reshape(height, width, 3)


def test_png_writer_roundtrip(tmp_path: Path):
    image = np.random.default_rng(1).integers(0, 255, (7, 5, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", image)
    np.testing.assert_array_equal(read_png(tmp_path / "x.png"), image)


def test_render_shows_camera_frames_and_a_full_lap(tmp_path: Path):
    output = tmp_path / "render.png"
    result = render_png(load_track("reInvent2019_track"), ("FRONT_FACING_CAMERA",), output, steps=600, frames=4)
    assert result.status == "lap_complete" and result.progress == 100.0
    image = read_png(output)
    strip_height = 240  # 120-pixel frames at scale 2
    assert image.shape[1] == 4 * 320 + 3 * 4
    frames = image[:strip_height]
    assert frames[-10:, 300:340].std() < 60 and 60 < frames[-10:, 300:340].mean() < 200  # road under the car
    top_down = image[strip_height + 8:]
    red = np.all(top_down == np.array(TRAJECTORY_RGB, np.uint8), axis=2)
    assert red.sum() > 1000  # the trajectory is drawn
