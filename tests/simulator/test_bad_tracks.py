"""Bad track .npy files, one case each, through the seed (`hotlap train --track my.npy`, `hotlap seed`,
HOTLAP_TRACK in compose): refused before anything starts, naming the file, the row/column or shape
and the problem. DeepRacer's route format: deepracer-formats.md §8. docs/troubleshooting.md lists
each case id.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hotlap.seed import SeedError, UserFiles, prepare_run_files
from shared.config import RunSettings
from simulator.track import Track, available_tracks, load_track
from tests.simulator.synthetic import circle_rows


def _swap_rows(columns: slice, a: int, b: int) -> np.ndarray:
    rows = circle_rows()
    rows[[a, b], columns] = rows[[b, a], columns]
    return rows


def _with(row: int, column: int, value: float) -> np.ndarray:
    rows = circle_rows()
    rows[row, column] = value
    return rows


def _scaled(factor: float) -> np.ndarray:
    return load_track_rows("Aragon") * factor  # the widest-spanning DeepRacer track, 24.1 m


def load_track_rows(name: str) -> np.ndarray:
    return np.load(Path(__file__).resolve().parents[2] / "simulator" / "tracks" / f"{name}.npy")


def _zero_width() -> np.ndarray:
    rows = circle_rows()
    rows[:, 2:4] = rows[:, 0:2]
    rows[:, 4:6] = rows[:, 0:2]
    return rows


def _centre_off_the_road() -> np.ndarray:
    rows = circle_rows()
    rows[:, 0] += 5.0
    return rows


def _huge_header(path: Path) -> None:
    """A .npy header claiming 10^12 rows (8 TB): refused from the header, nothing allocated."""
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f8", "fortran_order": False,
                                                      "shape": (10**12, 6)})


def _sparse_huge_file(path: Path) -> None:
    with path.open("wb") as handle:
        handle.truncate(1 << 40)  # 1 TiB, sparse: nothing on disk, and never read


def _object_array(path: Path) -> None:
    np.save(path, np.array([{"center": [0, 0]}], dtype=object), allow_pickle=True)


# case id -> (what to write: an array, or a function writing the file), what the message must say
TRACK_CASES: dict[str, tuple[np.ndarray | Callable[[Path], None], str]] = {
    "track-1d": (np.zeros(12), "expected a 2-D (N, 6) array, got ndim=1 shape=(12,)"),
    "track-3d": (np.zeros((4, 6, 1)), "expected a 2-D (N, 6) array, got ndim=3"),
    "track-too-few-columns": (np.zeros((10, 4)), "expected at least 6 columns, got shape (10, 4)"),
    "track-text": (np.array([["a"] * 6] * 4), "expected numbers, got dtype <U1"),
    "track-nan": (_with(7, 3, np.nan), "non-finite value nan at row 7, column 3"),
    "track-inf": (_with(12, 0, np.inf), "non-finite value inf at row 12, column 0"),
    "track-too-few-rows": (circle_rows()[:2], "needs at least 3 rows, has 2"),
    "track-one-point": (np.ones((10, 6)), "needs at least 3 distinct centre points, has 1"),
    "track-pickle": (_object_array, "not a readable .npy array: it holds Python objects (dtype object)"),
    "track-not-npy": (lambda path: path.write_bytes(b"PK\x03\x04 a zip, not an array"), "not a readable .npy array"),
    "track-text-file": (lambda path: path.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n"),
                        "not a readable .npy array (a .npy file starts with b'\\x93NUMPY', this one with b'root:x"),
    "track-in-millimetres": (_scaled(1000), "the track spans 24081.1 m, outside the 1-100 m hotlap accepts "
                                            "(DeepRacer's tracks span 5.7-24.1 m); coordinates must be metres"),
    "track-in-micrometres": (_scaled(1e6), "the track spans 2.40811e+07 m, outside the 1-100 m"),
    "track-in-kilometres": (_scaled(1e-3), "the track spans 0.0240811 m, outside the 1-100 m"),
    "track-in-nanometres-of-metres": (_scaled(1e-9), "coordinates must be metres"),
    "track-too-many-rows": (np.zeros((465_000, 6)), "465000 rows, more than the 50000 hotlap accepts"),
    "track-huge-header": (_huge_header, "1000000000000 rows, more than the 50000 hotlap accepts"),
    "track-huge-file": (_sparse_huge_file, "1099511627776 bytes, more than the 67108864 a track file may have"),
    "track-zero-width": (_zero_width(), "row 0: the road is 0 m wide (inner and outer points that close), "
                                        "less than 0.1 m; 181 row(s) like it"),
    "track-centre-off-the-road": (_centre_off_the_road(), "row 0: the centre point is 5 m from the middle of "
                                                          "the road, outside its 1.2 m between the inner and "
                                                          "outer points"),
    "track-inner-border-crosses-itself": (_swap_rows(slice(2, 4), 50, 51),
                                          "the inner border (columns 2-3) crosses itself: its segment from row 49 "
                                          "to 50 crosses the one from row 51 to 52"),
    "track-outer-border-crosses-itself": (_swap_rows(slice(4, 6), 10, 100),
                                          "the outer border (columns 4-5) crosses itself: its segment from row 9 "
                                          "to 10 crosses the one from row 100 to 101"),
}


@pytest.mark.parametrize("case", sorted(TRACK_CASES))
def test_seeding_refuses_a_bad_track_file_naming_file_and_problem(tmp_path: Path, case: str) -> None:
    content, problem = TRACK_CASES[case]
    path = tmp_path / "my_track.npy"
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        content(path)
    with pytest.raises(SeedError) as caught:
        prepare_run_files(UserFiles(), RunSettings(track=str(path)), max_iterations=1)
    message = str(caught.value)
    assert f"{path}: " in message and problem in message, message
    assert "allow_pickle" not in message  # never advise loading a track file with pickles on


def test_no_deepracer_route_and_no_reversed_or_open_track_is_taken_for_self_crossing(tmp_path: Path) -> None:
    """The check refuses only broken files: all 127 routes load, and so do a track driven the other way
    and an open one (a LineString, not a ring)."""
    for name in available_tracks():
        load_track(name)
    Track.from_array(circle_rows()[::-1].copy(), "reversed")
    Track.from_array(circle_rows()[:90], "open")
