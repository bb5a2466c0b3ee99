"""The run's files are read as DeepRacer reads them (deepracer-formats.md §1.1, §2, §3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotlap.seed import SeedError, UserFiles, prepare_run_files
from shared.config import RunSettings
from simulator.reward import load_reward_function

# Windows editors write a UTF-8 byte-order mark and CRLF; DeepRacer imports the file, and Python's
# import reads both. The comment's non-ASCII text is there to be decoded, not mangled.
WINDOWS_REWARD = (b"\xef\xbb\xbfdef reward_function(params):\r\n    # Gr\xc3\xb6\xc3\x9fe\r\n"
                  b'    return float(len("\xc3\xa9"))\r\n')


def test_a_reward_file_saved_with_a_byte_order_mark_seeds_and_runs(tmp_path: Path) -> None:
    path = tmp_path / "reward_function.py"
    path.write_bytes(WINDOWS_REWARD)
    files = prepare_run_files(UserFiles(reward_function=path), RunSettings(), max_iterations=1)
    assert files.reward_source.startswith("def reward_function")  # stored without the mark
    assert load_reward_function(files.reward_source)({}) == 1.0


def test_a_reward_file_invalid_in_its_encoding_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "reward_function.py"
    path.write_bytes(b"# -*- coding: no-such-codec -*-\ndef reward_function(params):\n    return 1.0\n")
    with pytest.raises(SeedError, match=f"{path}: cannot be read as Python source"):
        prepare_run_files(UserFiles(reward_function=path), RunSettings(), max_iterations=1)


def test_files_that_cannot_be_read_are_reported_with_every_other_problem(tmp_path: Path) -> None:
    broken = tmp_path / "model_metadata.json"
    broken.write_text('{"action_space": [{"steering_angle": 0, "speed": 1}]')
    track = tmp_path / "nan_track.npy"
    track.write_bytes(b"not an npy file")
    files = UserFiles(reward_function=tmp_path / "missing_reward.py", model_metadata=broken,
                      hyperparameters=tmp_path / "missing_hp.json")
    with pytest.raises(SeedError) as info:
        prepare_run_files(files, RunSettings(track=str(track)), max_iterations=1)
    message = str(info.value)
    for name in ("missing_reward.py: cannot read", "missing_hp.json: cannot read", f"{broken} is invalid",
                 "nan_track.npy: not a readable .npy array"):
        assert name in message


def test_a_misspelt_custom_file_is_named_with_the_default_it_leaves_in_use(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "reward_fuction.py").write_text("def reward_function(params):\n    return 5.0\n")
    (tmp_path / "model_metadata.json").write_text("{}")
    with caplog.at_level("WARNING"):
        files = UserFiles.from_folder(tmp_path)
    assert files.reward_function is None and files.model_metadata == tmp_path / "model_metadata.json"
    assert "no reward_function.py or hyperparameters.json, so hotlap's defaults are used" in caplog.text
    assert "reward_fuction.py (misspelt?)" in caplog.text


def test_a_folder_holding_the_three_files_says_nothing_and_a_directory_in_a_file_s_place_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("reward_function.py", "model_metadata.json", "hyperparameters.json", "notes.json"):
        (tmp_path / name).write_text("{}")
    with caplog.at_level("WARNING"):
        UserFiles.from_folder(tmp_path)
    assert not caplog.text  # nothing defaulted: other files are the racer's business
    (tmp_path / "reward_function.py").unlink()
    (tmp_path / "reward_function.py").mkdir()
    with pytest.raises(SeedError, match=r"reward_function.py: not a file"):
        UserFiles.from_folder(tmp_path)
