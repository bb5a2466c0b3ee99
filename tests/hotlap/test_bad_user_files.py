"""Bad model_metadata.json and hyperparameters.json, one case each, through the seed (what `hotlap train`,
`hotlap seed` and the compose init service run before any process starts). Each message names the
file, the field and the bad value. docs/troubleshooting.md lists each case id.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hotlap.seed import METADATA_FILE, SeedError, UserFiles, prepare_run_files
from shared.config import MAX_DISCRETE_ACTIONS, RunSettings

REPO = Path(__file__).resolve().parents[2]
ACTIONS = [{"steering_angle": -15, "speed": 1.0}, {"steering_angle": 15, "speed": 1.0}]
CAMERA = ["FRONT_FACING_CAMERA"]


def metadata(**changes: Any) -> dict[str, Any]:
    return {"action_space": ACTIONS, "sensor": CAMERA, "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
            "training_algorithm": "clipped_ppo", "action_space_type": "discrete", "version": "5", **changes}


# case id -> (model_metadata.json content (str: the raw text), what the message must say)
METADATA_CASES: dict[str, tuple[Any, list[str]]] = {
    "metadata-invalid-json": ('{"action_space": [\n  {"steering_angle": 0, "speed": 1}\n  {"steering_angle": 5}]}',
                              ["not valid JSON: Expecting ',' delimiter at line 3 column 3"]),
    "metadata-not-an-object": ("[1, 2]", ["expected a JSON object, got list"]),
    "metadata-no-action-space": ({"sensor": CAMERA, "version": "5"}, ["action_space: no action space defined"]),
    "metadata-action-space-type": (metadata(action_space=5), ["action_space: must be a list", "got 5"]),
    "metadata-empty-action-list": (metadata(action_space=[]), ["no actions defined"]),
    "metadata-huge-action-list": (metadata(action_space=[{"steering_angle": 0, "speed": 1}] * 100_000),
                                  [f"100000 actions, more than the {MAX_DISCRETE_ACTIONS}"]),
    "metadata-action-missing-speed": (metadata(action_space=[{"steering_angle": 0}]),
                                      ["action_space.discrete.0.speed: Field required"]),
    "metadata-action-steering-text": (metadata(action_space=[{"steering_angle": "left", "speed": 1}]),
                                      ["action_space.discrete.0.steering_angle: Input should be a valid number",
                                       "got 'left'"]),
    "metadata-action-nan": ('{"action_space": [{"steering_angle": NaN, "speed": 1}], "sensor": ["LIDAR", '
                            '"FRONT_FACING_CAMERA"], "version": "5"}',
                            ["action_space.discrete.0.steering_angle: nan is not a finite number"]),
    "metadata-continuous-low-above-high": (
        metadata(action_space_type="continuous",
                 action_space={"steering_angle": {"low": -30, "high": 30}, "speed": {"low": 3, "high": 1}}),
        ["action_space.continuous.speed: needs finite low <= high, got low=3.0 high=1.0"]),
    "metadata-continuous-bound-text": (
        metadata(action_space_type="continuous",
                 action_space={"steering_angle": {"low": -30, "high": 30}, "speed": {"low": 1, "high": "fast"}}),
        ["action_space.continuous.speed.high: Input should be a valid number", "got 'fast'"]),
    "metadata-action-space-type-value": (metadata(action_space_type="box"),
                                         ["action_space_type: Input should be 'discrete' or 'continuous'",
                                          "got 'box'"]),
    "metadata-type-mismatch": (metadata(action_space_type="continuous"),
                               ["action_space_type is 'continuous' but action_space is a list"]),
    "metadata-sensor-not-a-list": (metadata(sensor="FRONT_FACING_CAMERA"),
                                   ["sensor: Input should be a valid list, got 'FRONT_FACING_CAMERA'"]),
    "metadata-unknown-sensor": (metadata(sensor=["FRONT_FACING_CAMERA", "RADAR"]), ["unknown sensor 'RADAR'"]),
    "metadata-duplicate-sensor": (metadata(sensor=["FRONT_FACING_CAMERA", "LIDAR", "LIDAR"]),
                                  ["sensor 'LIDAR' is listed 2 times"]),
    "metadata-two-cameras": (metadata(sensor=["FRONT_FACING_CAMERA", "STEREO_CAMERAS"]),
                             ["exactly one camera sensor is required", "got 2: FRONT_FACING_CAMERA, STEREO_CAMERAS"]),
    "metadata-no-sensor": (metadata(sensor=[]), ["no sensor: list one camera"]),
    "metadata-two-lidars": (metadata(sensor=["FRONT_FACING_CAMERA", "LIDAR", "SECTOR_LIDAR"]),
                            ["at most one lidar sensor is allowed, got LIDAR, SECTOR_LIDAR"]),
    "metadata-unknown-network": (metadata(neural_network="RESNET"), ["unknown neural_network 'RESNET'"]),
    "metadata-network-type": (metadata(neural_network=5), ["neural_network: Input should be a valid string, got 5"]),
    "metadata-sac": (metadata(training_algorithm="sac"), ["training_algorithm: 'sac' is DeepRacer's other"]),
    "metadata-unknown-algorithm": (metadata(training_algorithm="dqn"), ["unknown training_algorithm 'dqn'"]),
    "metadata-version-text": (metadata(version="v5"), ["version: version 'v5' is not a number"]),
    "metadata-version-missing-sensor": ({"action_space": ACTIONS, "version": "5"}, ["sensor: missing; version '5'"]),
    "metadata-lidar-sectors": (metadata(sensor=["FRONT_FACING_CAMERA", "SECTOR_LIDAR"],
                                        lidar_config={"num_sectors": 3}),
                               ["lidar_config.num_sectors: num_sectors must divide 64", "got 3"]),
    "metadata-lidar-clipping-range": (metadata(lidar_config={"clipping_dist": 20}),
                                      ["lidar_config.clipping_dist: Input should be less than or equal to 12",
                                       "got 20"]),
    "metadata-lidar-config-type": (metadata(lidar_config="far"), ["lidar_config: Input should be a valid dictionary",
                                                                   "got 'far'"]),
    "metadata-action-speed-true": (metadata(action_space=[{"steering_angle": 0, "speed": True}]),
                                   ["action_space.discrete.0.speed: expected a number, got true"]),
    "metadata-continuous-bound-true": (
        metadata(action_space_type="continuous",
                 action_space={"steering_angle": {"low": -30, "high": 30}, "speed": {"low": 1, "high": True}}),
        ["action_space.continuous.speed.high: expected a number, got true"]),
    "metadata-lidar-sectors-true": (metadata(sensor=["FRONT_FACING_CAMERA", "SECTOR_LIDAR"],
                                             lidar_config={"num_sectors": True}),
                                    ["lidar_config.num_sectors: expected a number, got true"]),
    "metadata-duplicate-key": ('{"action_space": [{"steering_angle": 0, "speed": 1}], "sensor": ["LIDAR"], '
                               '"sensor": ["FRONT_FACING_CAMERA"], "version": "5"}',
                               ["key 'sensor' appears more than once"]),
    "metadata-duplicate-nested-key": ('{"action_space": [{"steering_angle": 0, "speed": 1, "speed": 4}], '
                                      '"sensor": ["FRONT_FACING_CAMERA"], "version": "5"}',
                                      ["key 'speed' appears more than once"]),
}

# key -> a value out of range or of the wrong type, and what the message says of it
HYPERPARAMETER_CASES: dict[str, tuple[Any, list[str]]] = {
    "hp-invalid-json": ('{"batch_size": 64,\n "lr": 0.0003,,\n}', ["not valid JSON", "line 2 column 15"]),
    "hp-not-an-object": ("64", ["expected a JSON object, got int"]),
    "hp-batch_size-range": ({"batch_size": 0}, ["batch_size: Input should be greater than or equal to 1, got 0"]),
    "hp-batch_size-type": ({"batch_size": "many"}, ["batch_size: Input should be a valid integer", "got 'many'"]),
    "hp-beta_entropy-range": ({"beta_entropy": -0.1}, ["beta_entropy: Input should be greater than or equal to 0",
                                                       "got -0.1"]),
    "hp-discount_factor-range": ({"discount_factor": 1.5}, ["discount_factor: Input should be less than or equal "
                                                            "to 1, got 1.5"]),
    "hp-discount_factor-type": ({"discount_factor": [0.99]}, ["discount_factor: Input should be a valid number",
                                                              "got [0.99]"]),
    "hp-e_greedy_value-range": ({"e_greedy_value": 2}, ["e_greedy_value: Input should be less than or equal to 1",
                                                        "got 2"]),
    "hp-epsilon_steps-range": ({"epsilon_steps": 0}, ["epsilon_steps: Input should be greater than or equal to 1"]),
    "hp-exploration_type-value": ({"exploration_type": "boltzmann"},
                                  ["exploration_type: Input should be 'categorical' or 'e-greedy', got 'boltzmann'"]),
    "hp-loss_type-value": ({"loss_type": "l1"}, ["loss_type: Input should be 'huber' or 'mean squared error', "
                                                 "got 'l1'"]),
    "hp-lr-range": ({"lr": 0}, ["lr: Input should be greater than 0, got 0"]),
    "hp-lr-type": ({"lr": "fast"}, ["lr: Input should be a valid number", "got 'fast'"]),
    "hp-num_episodes_between_training-range": ({"num_episodes_between_training": 0},
                                               ["num_episodes_between_training: Input should be greater than or "
                                                "equal to 1, got 0"]),
    "hp-num_epochs-type": ({"num_epochs": 2.5}, ["num_epochs: Input should be a valid integer", "got 2.5"]),
    "hp-stack_size-range": ({"stack_size": 0}, ["stack_size: Input should be greater than or equal to 1, got 0"]),
    "hp-term_cond_avg_score-type": ({"term_cond_avg_score": "high"},
                                    ["term_cond_avg_score: Input should be a valid number", "got 'high'"]),
    "hp-term_cond_max_episodes-range": ({"term_cond_max_episodes": -5},
                                        ["term_cond_max_episodes: Input should be greater than or equal to 1, "
                                         "got -5"]),
    "hp-sac_alpha-range": ({"sac_alpha": -1}, ["sac_alpha: Input should be greater than or equal to 0, got -1"]),
    "hp-max_sample_count-range": ({"max_sample_count": -1}, ["max_sample_count: Input should be greater than or "
                                                             "equal to 0, got -1"]),
    "hp-sampling_frequency-range": ({"sampling_frequency": 0}, ["sampling_frequency: Input should be greater than "
                                                                "or equal to 1, got 0"]),
    "hp-hotlap_shared_trunk-type": ({"hotlap_shared_trunk": "maybe"},
                                    ["hotlap_shared_trunk: Input should be a valid boolean", "got 'maybe'"]),
    "hp-hotlap_target_kl-range": ({"hotlap_target_kl": 0}, ["hotlap_target_kl: Input should be greater than 0, "
                                                            "got 0"]),
    "hp-num_epochs-huge": ({"num_epochs": 1e30}, ["num_epochs: 1e+30 is outside the 1-100 hotlap accepts "
                                                  "(DeepRacer: the console offers 3-10, deepracer-formats.md §3"]),
    "hp-batch_size-huge": ({"batch_size": 1e9}, ["batch_size: 1e+09 is outside the 1-16384 hotlap accepts"]),
    "hp-stack_size-huge": ({"stack_size": 1000}, ["stack_size: 1000 is outside the 1-32 hotlap accepts"]),
    "hp-num_episodes_between_training-huge": ({"num_episodes_between_training": 1e7},
                                              ["num_episodes_between_training: 1e+07 is outside the 1-10000 "
                                               "hotlap accepts"]),
    "hp-num_epochs-true": ({"num_epochs": True}, ["num_epochs: expected a number, got true"]),
    "hp-lr-true": ({"lr": True}, ["lr: expected a number, got true"]),
    "hp-lr-nan": ('{"lr": NaN}', ["lr: nan is not a finite number"]),
    "hp-beta_entropy-infinity": ('{"beta_entropy": Infinity}', ["beta_entropy: inf is not a finite number"]),
    "hp-duplicate-key": ('{"lr": 0.0003, "num_epochs": 3, "lr": 0.3}', ["key 'lr' appears more than once"]),
}


def _write(tmp_path: Path, name: str, content: Any) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _refused(files: UserFiles) -> str:
    with pytest.raises(SeedError) as caught:
        prepare_run_files(files, RunSettings(), max_iterations=1)
    return str(caught.value)


@pytest.mark.parametrize("case", sorted(METADATA_CASES))
def test_a_bad_model_metadata_file_is_refused_naming_file_field_and_value(tmp_path: Path, case: str) -> None:
    content, expected = METADATA_CASES[case]
    path = _write(tmp_path, METADATA_FILE, content)
    message = _refused(UserFiles(model_metadata=path))
    assert f"{path} is invalid" in message
    for text in expected:
        assert text in message, f"{text!r} not in {message}"


@pytest.mark.parametrize("case", sorted(HYPERPARAMETER_CASES))
def test_a_bad_hyperparameter_is_refused_naming_file_key_and_value(tmp_path: Path, case: str) -> None:
    content, expected = HYPERPARAMETER_CASES[case]
    path = _write(tmp_path, "hyperparameters.json", content)
    message = _refused(UserFiles(hyperparameters=path))
    assert f"{path} is invalid" in message
    for text in expected:
        assert text in message, f"{text!r} not in {message}"


def test_every_hyperparameter_key_has_a_bad_value_case() -> None:
    from shared.config import Hyperparameters

    covered = {case.removeprefix("hp-").rsplit("-", 1)[0] for case in HYPERPARAMETER_CASES}
    assert set(Hyperparameters.model_fields) <= covered


def test_hotlap_train_reports_every_bad_file_at_once_and_starts_nothing(tmp_path: Path) -> None:
    """What the racer sees: all problems of all files in one message, exit status 2, no run folder."""
    meta = _write(tmp_path, METADATA_FILE, metadata(sensor=["FRONT_FACING_CAMERA", "STEREO_CAMERAS"]))
    hp = _write(tmp_path, "hyperparameters.json", {"lr": "fast", "batch_size": 0})
    result = subprocess.run(
        [sys.executable, "-m", "hotlap", "train", "--model-metadata", str(meta), "--hyperparameters", str(hp),
         "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    for text in (f"{meta} is invalid", "got 2: FRONT_FACING_CAMERA, STEREO_CAMERAS", f"{hp} is invalid (2 problem(s))",
                 "lr: Input should be a valid number, unable to parse string as a number, got 'fast'",
                 "batch_size: Input should be greater than or equal to 1, got 0"):
        assert text in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("sensor", [["LIDAR"], ["SECTOR_LIDAR"]])
def test_a_lidar_only_model_is_refused_unless_allowed_and_then_trains_with_a_warning(
        tmp_path: Path, sensor: list[str], caplog: pytest.LogCaptureFixture) -> None:
    """DeepRacer requires a camera (deepracer-formats.md §2): without --allow-no-camera the seed refuses a
    lidar-only file, naming the file, the sensors and the option; with it the run's files are prepared
    and a warning says where such a model cannot go."""
    path = _write(tmp_path, METADATA_FILE, metadata(sensor=sensor))
    message = _refused(UserFiles(model_metadata=path))
    for text in (str(path), f"sensor {sensor}", "has no camera", "--allow-no-camera", "HOTLAP_ALLOW_NO_CAMERA=1"):
        assert text in message, f"{text!r} not in {message}"
    with caplog.at_level("WARNING"):
        files = prepare_run_files(UserFiles(model_metadata=path), RunSettings(), max_iterations=1,
                                  allow_no_camera=True)
    assert files.metadata.sensor == sensor and files.metadata.camera is None
    assert f"{path}: sensor {sensor} has no camera" in caplog.text
    assert "cannot be imported into DeepRacer or exported for a car" in caplog.text


def test_a_camera_model_never_warns_about_the_camera(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, METADATA_FILE, metadata(sensor=["FRONT_FACING_CAMERA", "LIDAR"]))
    with caplog.at_level("WARNING"):
        files = prepare_run_files(UserFiles(model_metadata=path), RunSettings(), max_iterations=1)
    assert files.metadata.camera == "FRONT_FACING_CAMERA"
    assert "camera" not in caplog.text
