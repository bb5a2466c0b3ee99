"""Bad user files stop a run at start, with a message naming the file and the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def hotlap(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotlap", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_malformed_model_metadata_stops_the_run(tmp_path: Path):
    bad = tmp_path / "model_metadata.json"
    bad.write_text(json.dumps({"action_space": [{"steering_angle": "hard left", "speed": 1}], "sensor": ["SONAR"]}))
    result = hotlap("train", "--model-metadata", str(bad), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "steering_angle" in result.stderr and "SONAR" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing started


def test_truncated_model_metadata_json(tmp_path: Path):
    bad = tmp_path / "model_metadata.json"
    bad.write_text('{"action_space": [')
    result = hotlap("train", "--model-metadata", str(bad), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2
    assert str(bad) in result.stderr and "not valid JSON" in result.stderr


def test_reward_function_syntax_error_stops_the_run(tmp_path: Path):
    bad = tmp_path / "reward_function.py"
    bad.write_text("def reward_function(params):\n    return 1.0 +\n")
    result = hotlap("train", "--reward-function", str(bad), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{bad}:2" in result.stderr  # file:line
    assert not (tmp_path / "runs").exists()


def test_every_bad_file_is_reported_at_once(tmp_path: Path):
    (tmp_path / "reward_function.py").write_text("def not_the_right_name(params):\n    return 1.0\n")
    (tmp_path / "hyperparameters.json").write_text(json.dumps({"lr": -1}))
    result = hotlap("seed", "--custom-files", str(tmp_path), "--track", "No_such_track", cwd=tmp_path)
    assert result.returncode == 2
    assert "reward_function" in result.stderr and "lr" in result.stderr and "No_such_track" in result.stderr


def test_seed_uploads_the_run_files_to_the_store(tmp_path: Path):
    store = tmp_path / "store"
    result = subprocess.run(
        [sys.executable, "-m", "hotlap", "seed", "--track", "Oval_track", "--max-iterations", "7"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"HOTLAP_STORE_URL": f"file://{store}", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert (store / "reward_function.py").is_file()
    assert json.loads((store / "ip/hyperparameters.json").read_text())["term_cond_max_episodes"] == 7
    assert "WORLD_NAME: Oval_track" in (store / "training_params.yaml").read_text()
    assert (store / "model/model_metadata.json").is_file()


def test_tracks_lists_name_length_width_and_direction(tmp_path: Path):
    result = hotlap("tracks", cwd=tmp_path)
    assert result.returncode == 0
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert len(rows) == 127  # every DeepRacer route (deepracer-formats.md §8)
    assert rows["reInvent2019_track"][1:] == ["23.12", "1.07", "loop", "ccw"]
    assert rows["2022_april_open_cw"][-1] == "cw"
    assert rows["Straight_track"][-2:] == ["open", "ccw"] and rows["penbay_pro_cw"][-1] == "cw"


def test_seed_accepts_deepracer_s_legacy_files_with_one_warning_each(tmp_path: Path):
    """The re:Invent 2018 model_metadata.json (steering ±45°, nothing but action_space) and a
    hyperparameters.json with a key DeepRacer does not know both start a run, as on DeepRacer."""
    metadata = tmp_path / "model_metadata.json"
    metadata.write_text(json.dumps({"action_space": [{"steering_angle": 45, "speed": 0.8},
                                                     {"steering_angle": -45, "speed": 0.8},
                                                     {"steering_angle": 0, "speed": 0.4}]}))
    hyperparameters = tmp_path / "hyperparameters.json"
    hyperparameters.write_text(json.dumps({"lr": 0.001, "my_comment": "tuned in 2019"}))
    store = tmp_path / "store"
    result = subprocess.run(
        [sys.executable, "-m", "hotlap", "seed", "--model-metadata", str(metadata),
         "--hyperparameters", str(hyperparameters)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"HOTLAP_STORE_URL": f"file://{store}", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len([w for w in warnings if str(metadata) in w]) == 1
    assert "action 0 steering_angle 45" in result.stderr and "action 1 steering_angle -45" in result.stderr
    assert len([w for w in warnings if str(hyperparameters) in w]) == 1 and "'my_comment'" in result.stderr
    stored = json.loads((store / "ip/hyperparameters.json").read_text())
    assert stored["lr"] == 0.001 and "my_comment" not in stored
    assert json.loads((store / "model/model_metadata.json").read_text())["action_space"][0]["steering_angle"] == 45


def test_the_resume_command_names_the_run_it_resumes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Without --run-id the same command starts a new run, so the summary's resume line adds it."""
    from hotlap.cli import resume_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(tmp_path / ".venv" / "bin" / "hotlap"), "train"])
    assert resume_command(["train", "--max-iterations", "3"], "hotlap-1") == \
        ".venv/bin/hotlap train --max-iterations 3 --run-id hotlap-1"
    assert resume_command(["train", "--run-id", "mine", "--track", "my track.npy"], "mine") == \
        ".venv/bin/hotlap train --run-id mine --track 'my track.npy'"
    assert resume_command(["train", "--run-id=mine"], "mine").endswith("train --run-id=mine")
    monkeypatch.setattr(sys, "argv", ["/x/hotlap/__main__.py", "train"])
    assert resume_command(["train"], "r").endswith(" -m hotlap train --run-id r")
