"""A lidar-only model (no camera): a hotlap-only experiment, refused unless asked, then trained, evaluated
and rendered like any other, and refused where it cannot go (the car; a camera video).

DeepRacer requires exactly one camera (deepracer-formats.md §2); issue 8 item 5e asks how fast a
lidar-only model laps, so hotlap trains one behind ``--allow-no-camera``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hotlap.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "lidar"


def _metadata(folder: Path, sensor: list[str]) -> Path:
    metadata = json.loads((REPO / "hotlap/defaults/model_metadata.json").read_text())
    metadata["sensor"] = sensor
    path = folder / "model_metadata.json"
    path.write_text(json.dumps(metadata))
    return path


def _train(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hotlap", "train", "--max-iterations", "2", "--episodes-per-iteration", "4",
         "--max-steps", "100", "--cars-per-worker", "2", "--model-metadata", str(folder / "model_metadata.json"),
         "--runs-dir", str(folder / "runs"), "--run-id", RUN_ID, *extra],
        capture_output=True, text=True, timeout=600, cwd=folder)


@pytest.fixture(scope="module")
def lidar_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lidar")
    _metadata(folder, ["LIDAR"])
    refused = _train(folder)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "has no camera" in refused.stderr and "--allow-no-camera" in refused.stderr
    assert not (folder / "runs" / RUN_ID).exists()  # refused before anything was stored or started
    trained = _train(folder, "--allow-no-camera")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "WARNING: " in trained.stderr and "sensor ['LIDAR'] has no camera" in trained.stderr  # the warning
    assert "best model:     version " in trained.stdout and "--version best" in trained.stdout  # the summary
    return folder / "runs" / RUN_ID


def test_a_lidar_only_run_trains_and_publishes_lidar_weights(lidar_run: Path) -> None:
    assert json.loads((lidar_run / "model" / "model_metadata.json").read_text())["sensor"] == ["LIDAR"]
    manifest = json.loads((lidar_run / "model" / "2" / "manifest.json").read_text())
    assert manifest["training_stats"]["num_steps"] > 0


def test_a_lidar_only_model_is_evaluated_and_rendered_but_not_filmed(
        lidar_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["evaluate", str(lidar_run), "--trials", "2", "--max-steps", "60", "--no-write", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["trials"]) == 2 and all(trial["steps"] > 0 for trial in summary["trials"])

    video = tmp_path / "lap.mp4"
    assert cli_main(["evaluate", str(lidar_run), "--video", str(video)]) == 2
    assert "include no camera" in capsys.readouterr().err
    assert not video.exists()

    png = tmp_path / "drive.png"
    assert cli_main(["render", "--model", str(lidar_run), "--steps", "40", "--output", str(png)]) == 0
    assert png.stat().st_size > 10_000


def test_a_lidar_only_model_is_not_exported_for_a_car(lidar_run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "car.tar.gz"
    assert cli_main(["export", str(lidar_run), "--format", "car", "--output", str(output)]) == 2
    assert "has no camera: DeepRacer requires exactly one" in capsys.readouterr().err
    assert not output.exists()
