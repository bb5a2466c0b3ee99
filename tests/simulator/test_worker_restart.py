"""A restarted worker, or a new one that takes a free worker index, continues that index's episode
numbers, simtrace iterations and TrainingMetrics.json instead of overwriting them (real workers
in-process, a real redis-server, a local-folder store)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import simulator.worker as worker_module
from hotlap.seed import seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings, WorkerConfig
from shared.run_files import RunFiles
from shared.store import ModelStore, open_store
from shared.transport import RunTransport

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REWARD = "def reward_function(params):\n    return 1.0\n"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(open_store(f"file://{tmp_path / 'store'}"))
    metadata = {"action_space": [{"steering_angle": 0, "speed": 1.0}], "sensor": ["FRONT_FACING_CAMERA"],
                "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "version": "5"}
    seed_store(store, RunFiles(
        settings=RunSettings(track="Oval_track", cars_per_worker=2, schedule="async", max_steps_per_episode=6,
                             num_workers=1, min_eval_trials=0),
        metadata=ModelMetadata.parse(json.dumps(metadata)),
        hyperparameters=Hyperparameters(),
        reward_source=REWARD,
    ))
    return store


def worker(name: str, store: ModelStore, redis_url: str, run_id: str) -> worker_module.SimulatorWorker:
    config = WorkerConfig.model_validate({"HOTLAP_RUN_ID": run_id, "HOTLAP_REDIS_URL": redis_url,
                                          "HOTLAP_STORE_URL": store.url, "HOTLAP_WORKER_NAME": name,
                                          "HOTLAP_SIM_TRACE_LOG": "0"})
    w = worker_module.SimulatorWorker(config, RunTransport.from_url(redis_url, run_id), store)
    w._setup()
    w.policy_version = 0  # act with the initial weights; async: idle cars start at once
    return w


def play(w: worker_module.SimulatorWorker, steps: int = 14) -> None:
    for _ in range(steps):  # episodes of at most 6 steps: several end
        w._claim_episodes()
        w._ship_finished_episodes(w._step_cars())


def simtrace_episodes(store: ModelStore, iteration: int) -> list[int]:
    text = store.get_text(f"training-simtrace/{iteration}-iteration.csv")
    return sorted({int(row["episode"]) for row in csv.DictReader(io.StringIO(text))})


def metric_episodes(store: ModelStore) -> list[int]:
    return [r["episode"] for r in json.loads(store.get_text("metrics/TrainingMetrics.json"))["metrics"]]


def first_life(store: ModelStore, redis_url: str, run_id: str) -> tuple[worker_module.SimulatorWorker, dict[str, str]]:
    """Worker "w" plays two simtrace iterations and stops (SIGTERM: it uploads what it has)."""
    first = worker("w", store, redis_url, run_id)
    assert first.worker_index == 0
    play(first)
    first._finish_iteration()  # a version change: iteration 0's simtrace goes up, iteration 1 starts
    play(first)
    first._flush_logs()
    written = {key: store.get_text(key) for key in ("training-simtrace/0-iteration.csv",
                                                      "training-simtrace/1-iteration.csv",
                                                      "metrics/TrainingMetrics.json")}
    return first, written


def assert_continued(store: ModelStore, first: worker_module.SimulatorWorker, written: dict[str, str],
                     second: worker_module.SimulatorWorker) -> None:
    assert second.worker_index == first.worker_index == 0
    assert second.iteration == 2  # iterations 0 and 1 are the first worker's files
    assert second.episodes_started == first.episodes_started  # episode numbers go on, none reused
    play(second)
    second._finish_iteration()
    play(second)
    second._flush_logs()
    for key in ("training-simtrace/0-iteration.csv", "training-simtrace/1-iteration.csv"):
        assert store.get_text(key) == written[key]  # not overwritten
    earlier = simtrace_episodes(store, 0) + simtrace_episodes(store, 1)
    later = simtrace_episodes(store, 2) + simtrace_episodes(store, 3)
    assert later and min(later) >= first.episodes_started > max(earlier)
    before = [r["episode"] for r in json.loads(written["metrics/TrainingMetrics.json"])["metrics"]]
    after = metric_episodes(store)
    assert after[:len(before)] == before and len(after) > len(before)  # the earlier records kept, then more
    assert after == sorted(set(after))  # each episode once, in order


def test_a_restarted_worker_keeps_its_index_and_continues_its_files(store: ModelStore, redis_url: str,
                                                                    run_id: str):
    first, written = first_life(store, redis_url, run_id)
    # The same worker name again (a container restarted by compose keeps its host name).
    assert_continued(store, first, written, worker("w", store, redis_url, run_id))


def test_a_new_worker_on_a_free_index_continues_that_index_s_files(store: ModelStore, redis_url: str,
                                                                   run_id: str):
    first, written = first_life(store, redis_url, run_id)
    transport = RunTransport.from_url(redis_url, run_id)
    transport.client.delete(transport.keys.worker("w"))  # its heartbeat ran out: index 0 is free
    # A recreated container (a new host name) takes index 0, and with it index 0's files.
    assert_continued(store, first, written, worker("recreated", store, redis_url, run_id))
