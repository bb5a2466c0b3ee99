"""The trainer credits worker 0's evaluation of a version to that version in
model/deepracer_checkpoints.json, and a restarted trainer keeps the best (real redis-server,
local-folder store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.evaluation import EvalEpisode, episodes_to_json
from shared.run_files import RunFiles
from shared.store import CHECKPOINTS_INDEX, ModelStore, open_store
from shared.transport import RunTransport
from tests.trainer.test_step_cap import run_files, trainer_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def files_with(metric: str) -> RunFiles:
    files = run_files("DEEP_CONVOLUTIONAL_NETWORK_SHALLOW")
    settings = files.settings.model_copy(update={"best_model_metric": metric, "max_iterations": 5})
    return RunFiles(settings=settings, metadata=files.metadata, hyperparameters=files.hyperparameters,
                    reward_source=files.reward_source)


def report(transport: RunTransport, version: int, *progress: float, lap_ms: int = 12_000) -> None:
    episodes = [EvalEpisode(progress=p, reward=p / 10, elapsed_ms=lap_ms if p >= 100 else 3_000,
                            status="lap_complete" if p >= 100 else "off_track") for p in progress]
    transport.report_evaluation(version, episodes_to_json(episodes))


def index(tmp_path: Path) -> dict:
    return json.loads(ModelStore(open_store(f"file://{tmp_path / 'store'}")).get_text(CHECKPOINTS_INDEX))


def test_each_evaluation_is_credited_to_the_version_that_drove_it_and_survives_a_restart(
        tmp_path: Path, transport: RunTransport, run_id: str, redis_url: str) -> None:
    trainer = trainer_for(files_with("progress"), tmp_path, transport, run_id, redis_url)
    report(transport, 0, 10.0, 20.0)
    report(transport, 1, 70.0, 90.0)
    trainer._credit_evaluations(force=True)
    assert index(tmp_path)["best_checkpoint"]["name"] == "model/1"
    assert index(tmp_path)["best_checkpoint"]["avg_eval_metric"] == 80.0
    report(transport, 2, 30.0, 40.0)
    trainer._credit_evaluations(force=True)
    assert index(tmp_path)["last_checkpoint"] == {**index(tmp_path)["last_checkpoint"], "name": "model/2",
                                                  "avg_eval_metric": 35.0}
    progress = transport.progress()
    assert (progress["eval_version"], progress["eval_progress"], progress["best_version"]) == ("2", "35.0", "1")

    # A new trainer process keeps model/1 as the best, from the store's file: here Redis lost the
    # earlier reports too (a Redis restarted without persistence).
    transport.client.delete(transport.keys.evaluations)
    restarted = trainer_for(files_with("progress"), tmp_path, transport, run_id, redis_url)
    report(transport, 3, 50.0, 60.0)
    restarted._credit_evaluations(force=True)
    assert index(tmp_path)["best_checkpoint"]["name"] == "model/1"
    assert index(tmp_path)["last_checkpoint"]["name"] == "model/3"


def test_laptime_ranks_versions_by_their_mean_lap_time(tmp_path: Path, transport: RunTransport, run_id: str,
                                                       redis_url: str) -> None:
    trainer = trainer_for(files_with("laptime"), tmp_path, transport, run_id, redis_url)
    report(transport, 0, 100.0, 100.0, lap_ms=15_000)
    report(transport, 1, 100.0, 50.0, lap_ms=9_000)  # a faster lap, but one unfinished: 999,999 ms
    report(transport, 2, 100.0, 100.0, lap_ms=14_000)
    trainer._credit_evaluations(force=True)
    assert index(tmp_path)["best_checkpoint"] == {**index(tmp_path)["best_checkpoint"], "name": "model/2",
                                                  "avg_eval_metric": 14_000}


def test_hotlap_train_shows_the_latest_evaluation_and_the_best_version(
        tmp_path: Path, transport: RunTransport, run_id: str, redis_url: str) -> None:
    from hotlap.local import _iteration_metrics

    trainer = trainer_for(files_with("progress"), tmp_path, transport, run_id, redis_url)
    transport.set_progress({"iteration": 2, "mean_reward": 1.0, "mean_progress": 5.0, "laps_completed": 0})
    report(transport, 0, 100.0, 40.0)
    report(transport, 1, 20.0, 30.0)
    trainer._credit_evaluations(force=True)
    _, shown = _iteration_metrics(transport, 20)
    assert shown["eval"] == "v1 25.0% 0/2 laps" and shown["best"] == "v0"
