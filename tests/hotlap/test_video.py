"""`hotlap evaluate --video`: a real MP4/GIF of the trials, read back with imageio."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hotlap.cli import main as cli_main
from hotlap.errors import VideoError
from hotlap.video import FRAME_SHAPE, INSTALL_HINT, PANEL_W, check_video_path

imageio = pytest.importorskip("imageio.v3", reason="the video extra is not installed")


def test_without_the_extra_the_message_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails as if not installed
    with pytest.raises(VideoError, match=r"pip install -e '\.\[video\]'.*imageio_ffmpeg"):
        check_video_path(tmp_path / "lap.mp4")
    assert "imageio-ffmpeg" in INSTALL_HINT
    with pytest.raises(VideoError, match="use .mp4 or .gif"):
        check_video_path(tmp_path / "lap.webm")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lap.mp4", "lap.gif"])
def test_video_of_a_trained_model(name: str, run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    video = tmp_path / name
    capsys.readouterr()
    assert cli_main(["evaluate", str(run_copy), "--trials", "2", "--max-steps", "12", "--video", str(video),
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    trace = (run_copy / result["simtrace"]).read_text().splitlines()
    steps = len(trace) - 1  # one frame per simtrace row (every step of both trials), header aside
    assert result["video"] == {"path": str(video), "frames": steps}
    frames = imageio.imread(video, index=None)
    assert frames.shape == (steps, *FRAME_SHAPE)
    first = frames[0].astype(int)
    camera, track_map = first[:360, :PANEL_W], first[:360, PANEL_W:]
    tolerance = 12 if name.endswith(".mp4") else 0  # H.264's chroma is lossy
    assert np.abs(camera[..., 0] - camera[..., 1]).max() <= tolerance  # grayscale camera view
    assert camera[:60].mean() > camera[-60:].mean()  # bright sky above the road
    red = (track_map[..., 0] > 180) & (track_map[..., 1] < 90) & (track_map[..., 2] < 90)
    assert red.sum() > 20  # the car on the map
    assert not np.array_equal(frames[0], frames[-1])  # it moves
