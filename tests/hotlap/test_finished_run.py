"""`hotlap train` on a run that already ended: it says so and what to do, and starts nothing (no
Redis, no trainer, no worker that would wait for a version that never comes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotlap.cli import main as cli_main
from shared.store import ModelStore, open_store

RUN_ID = "ended"
OPTIONS = ["--max-iterations", "2", "--episodes-per-iteration", "4", "--cars-per-worker", "4"]


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    """A run seeded with the embedded defaults, as `hotlap train` seeds it (`hotlap seed`)."""
    url = f"file://{tmp_path / 'runs' / RUN_ID}"
    monkeypatch.setenv("HOTLAP_STORE_URL", url)
    monkeypatch.setenv("HOTLAP_RUN_ID", RUN_ID)
    assert cli_main(["seed", *OPTIONS]) == 0
    return ModelStore(open_store(url))


def _train_again(tmp_path: Path) -> int:
    return cli_main(["train", *OPTIONS, "--runs-dir", str(tmp_path / "runs"), "--run-id", RUN_ID])


def test_a_finished_run_is_not_trained_again_and_nothing_starts(
        seeded: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeded.publish_version(0, b"weights", {"version": 0})
    seeded.mark_done()
    assert _train_again(tmp_path) == 0
    out = capsys.readouterr().out
    assert f"run {RUN_ID} is already finished" in out and "nothing to train" in out
    for hint in (f"hotlap evaluate {seeded.url}", "--pretrained", "a new --run-id"):
        assert hint in out
    assert "live status" not in out  # no Redis was started
    assert not (tmp_path / "runs" / RUN_ID / "logs" / "processes").exists()  # no process was started


def test_a_failed_run_is_not_trained_again_and_says_why(
        seeded: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeded.mark_failed("reward_function.py line 3: ValueError: broken on purpose")
    assert _train_again(tmp_path) == 1
    out = capsys.readouterr().out
    assert "failed earlier and is not trained again: reward_function.py line 3: ValueError: broken on purpose" in out
    assert "--overwrite" in out and "live status" not in out
    assert not (tmp_path / "runs" / RUN_ID / "logs" / "processes").exists()


def test_a_run_marked_finished_without_a_model_says_so(
        seeded: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeded.mark_done()  # ip/done, but model/latest.json never written
    assert _train_again(tmp_path) == 1
    out = capsys.readouterr().out
    assert "marked finished (ip/done) but" in out and "holds no model version" in out and "hotlap evaluate" not in out
