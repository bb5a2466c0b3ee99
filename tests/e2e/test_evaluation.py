"""Evaluation during training, in a real run: worker 0 drives greedy evaluation episodes of every
version, logged as DeepRacer's `phase: "evaluation"` rows, and model/deepracer_checkpoints.json
names the best version by their metric (deepracer-formats.md §4.1, §4.2)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from shared.store import ModelStore, open_store
from tests.e2e.test_pipeline import (
    EPISODES_PER_ITERATION,
    ITERATIONS,
    METADATA,
    REPO,
    TINY_HYPERPARAMETERS,
    episode_rows,
)

pytestmark = pytest.mark.slow

TRIALS = 3


def evaluation_blocks(records: list[dict]) -> list[list[dict]]:
    """Worker 0 evaluates every version, in order, TRIALS episodes each: block k is version k's.
    (A version may have no training record of worker 0 in between: the other worker played them all.)"""
    evaluations = [r for r in records if r["phase"] == "evaluation"]
    return [evaluations[i:i + TRIALS] for i in range(0, len(evaluations), TRIALS)]


def test_every_version_is_evaluated_and_the_best_is_the_best_evaluated(tmp_path: Path) -> None:
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps(TINY_HYPERPARAMETERS))
    metadata = tmp_path / "model_metadata.json"
    metadata.write_text(json.dumps(METADATA))
    result = subprocess.run(
        [sys.executable, "-m", "hotlap", "train", "--workers", "2", "--cars-per-worker", "2", "--run-id", "eval-e2e",
         "--runs-dir", str(tmp_path / "runs"), "--hyperparameters", str(hp), "--model-metadata", str(metadata),
         "--max-steps", "60", "--min-eval-trials", str(TRIALS), "--best-model-metric", "progress"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "runs" / "eval-e2e"
    store = ModelStore(open_store(f"file://{run}"))

    records = json.loads(store.get_text("metrics/TrainingMetrics.json"))["metrics"]
    blocks = evaluation_blocks(records)
    assert [len(b) for b in blocks] == [TRIALS] * (ITERATIONS + 1), [r["phase"] for r in records]
    assert records[-1]["phase"] == "evaluation"  # the last version trains nothing: it is only evaluated
    worker_1 = json.loads(store.get_text("metrics/TrainingMetrics_1.json"))["metrics"]
    assert all(r["phase"] == "training" for r in worker_1)  # only worker 0 evaluates

    # Evaluation is not training experience: the trainer consumed exactly the training episodes.
    rows = episode_rows(store)
    assert len(rows) == ITERATIONS * EPISODES_PER_ITERATION
    assert sum(r["phase"] == "training" for r in records) == sum(r["worker_index"] == "0" for r in rows)

    # The index's best is the best evaluated version; completion_percentage is int(progress), so a
    # version's true mean lies in [mean of its rows, that + 1).
    row_means = [statistics.mean(r["completion_percentage"] for r in block) for block in blocks]
    index = json.loads(store.get_text("model/deepracer_checkpoints.json"))
    best, last = index["best_checkpoint"], index["last_checkpoint"]
    assert last["name"] == f"model/{ITERATIONS}"
    assert row_means[ITERATIONS] <= last["avg_eval_metric"] < row_means[ITERATIONS] + 1
    best_version = int(best["name"].split("/")[1])
    assert row_means[best_version] <= best["avg_eval_metric"] < row_means[best_version] + 1
    assert all(best["avg_eval_metric"] >= mean for mean in row_means), (best, row_means)

    trainer_log = (run / "logs" / "processes" / "trainer.log").read_text()
    for version in range(ITERATIONS + 1):
        assert f"evaluation of model version {version}:" in trainer_log

    # Clone the best version into a new run with another reward function: its version 0 is those weights.
    from safetensors.torch import load as load_tensors

    reward = tmp_path / "reward_function.py"
    reward.write_text("def reward_function(params):\n    return float(params['progress']) / 100.0 + 0.01\n")
    clone = subprocess.run(
        [sys.executable, "-m", "hotlap", "train", "--workers", "1", "--run-id", "clone-e2e", "--runs-dir",
         str(tmp_path / "runs"), "--hyperparameters", str(hp), "--model-metadata", str(metadata), "--max-steps", "40",
         "--max-iterations", "1", "--min-eval-trials", "1", "--reward-function", str(reward),
         "--pretrained", f"{run}@best"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert clone.returncode == 0, clone.stdout[-3000:] + clone.stderr[-3000:]
    cloned = ModelStore(open_store(f"file://{tmp_path / 'runs' / 'clone-e2e'}"))
    source, start = load_tensors(store.load_version(best_version).weights), load_tensors(cloned.load_version(0).weights)
    assert source.keys() == start.keys() and all(source[k].equal(start[k]) for k in source)
    assert cloned.load_version(0).manifest["pretrained"]["source"] == f"file://{run}@{best_version}"
    assert cloned.latest_version() == 1 and cloned.is_done()
