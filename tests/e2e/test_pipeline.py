"""The whole loop, as separate processes against real servers:
redis-server + an S3-compatible server over HTTP, a trainer and two simulator workers."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from hotlap.seed import seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings
from shared.deepracer_logs import STATUS_LABELS
from shared.run_files import RunFiles
from shared.store import ModelStore, ObjectNotFound, StoreError, open_store
from shared.transport import TRAINER_GROUP, RunTransport

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ITERATIONS = 3
EPISODES_PER_ITERATION = 6
TINY_HYPERPARAMETERS = {
    "num_episodes_between_training": EPISODES_PER_ITERATION,
    "num_epochs": 1,
    "batch_size": 32,
    "term_cond_max_episodes": ITERATIONS,
}
METADATA = {
    "action_space": [
        {"steering_angle": -20, "speed": 1.0},
        {"steering_angle": 0, "speed": 1.5},
        {"steering_angle": 20, "speed": 1.0},
    ],
    "sensor": ["FRONT_FACING_CAMERA"],
    "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
    "training_algorithm": "clipped_ppo",
    "action_space_type": "discrete",
    "version": "5",
}
REWARD = "def reward_function(params):\n    return 1.0 - params['distance_from_center'] / params['track_width']\n"


def tiny_run_files() -> RunFiles:
    return RunFiles(
        settings=RunSettings(
            track="reInvent2019_track", max_iterations=ITERATIONS, max_steps_per_episode=40, num_workers=2
        ),
        metadata=ModelMetadata.parse(json.dumps(METADATA)),
        hyperparameters=Hyperparameters.model_validate(TINY_HYPERPARAMETERS),
        reward_source=REWARD,
    )


def service_env(run_id: str, redis_url: str, store_url: str, s3_endpoint: str | None, name: str) -> dict[str, str]:
    env = dict(
        os.environ,
        HOTLAP_RUN_ID=run_id,
        HOTLAP_REDIS_URL=redis_url,
        HOTLAP_STORE_URL=store_url,
        HOTLAP_WORKER_NAME=name,
        HOTLAP_SIM_TRACE_LOG="0",
        OMP_NUM_THREADS="1",
    )
    if s3_endpoint:
        env["HOTLAP_S3_ENDPOINT_URL"] = s3_endpoint
    return env


def episode_rows(store: ModelStore) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(store.get_text("logs/episodes.csv"))))


def assert_finished_run(store: ModelStore, worker_names: set[str] | None = None,
                        versions_per_worker: int = 2) -> None:
    assert store.list_versions() == list(range(ITERATIONS + 1))
    assert store.latest_version() == ITERATIONS
    assert store.is_done()
    rows = episode_rows(store)
    assert len(rows) == ITERATIONS * EPISODES_PER_ITERATION
    episodes = [(row["worker_id"], row["episode"]) for row in rows]
    assert len(set(episodes)) == len(episodes), "an episode was trained on twice"
    versions_by_worker: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        assert row["model_version"].isdigit(), row  # every consumed message carried its version
        assert int(row["model_version"]) == int(row["iteration"])  # sync: exactly on-policy
        versions_by_worker[row["worker_id"]].add(int(row["model_version"]))
    if worker_names is not None:
        assert set(versions_by_worker) == worker_names
    for worker, versions in versions_by_worker.items():
        assert len(versions) >= versions_per_worker, f"{worker} acted with versions {versions} only"


def assert_every_episode_consumed(store: ModelStore, transport: RunTransport | None = None) -> None:
    """A run without faults: every episode trained on was acknowledged and counted as consumed
    (logs/accounting.json), every other one produced was dropped as stale because a re-issued
    ticket had it played twice, and Redis holds no entry, delivered or not."""
    counts = json.loads(store.get_text("logs/accounting.json"))
    dropped = {k: v for k, v in counts.items() if k.startswith("dropped_") and v}
    assert counts["consumed"] == len(episode_rows(store)), counts
    assert counts["produced"] == counts["consumed"] + sum(dropped.values()), counts
    assert set(dropped) <= {"dropped_stale"} and dropped.get("dropped_stale", 0) <= counts["reissued"], counts
    if transport is not None:
        assert transport.backlog() == 0
        assert transport.client.xpending(transport.keys.experience, TRAINER_GROUP)["pending"] == 0


class PointerWatcher(threading.Thread):
    """Reads `model/latest.json` over and over while a run goes on: whenever it names a version,
    that version's manifest and weights must already be readable and match their sha256 (the
    pointer is written last). Observed from outside, with no reliance on object timestamps."""

    def __init__(self, store: ModelStore):
        super().__init__(daemon=True)
        self.store, self.done = store, threading.Event()
        self.seen: set[int] = set()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            try:
                version = self.store.latest_version()
                if version is not None:
                    self.store.load_version(version)
                    self.seen.add(version)
            except (ObjectNotFound, StoreError) as e:
                self.errors.append(f"latest.json named a version not (fully) written: {e}")
            time.sleep(0.01)

    def finish(self) -> None:
        self.done.set()
        self.join()
        assert not self.errors, self.errors[:3]
        assert self.seen == set(range(ITERATIONS + 1)), f"saw versions {sorted(self.seen)} only"


def assert_deepracer_utils_reads(filehandler, store: ModelStore) -> None:
    """deepracer-utils (the community's analysis library) sees the episodes the trainer consumed."""
    from deepracer.logs import DeepRacerLog

    log = DeepRacerLog(filehandler=filehandler)
    log.load_training_trace()
    df = log.dataframe()
    last_steps = df.sort_values("steps").groupby(["worker", "episode"]).last()
    produced = {(int(r["worker_index"]), int(r["episode"])): r for r in episode_rows(store)}
    assert len(last_steps) == len(produced) == ITERATIONS * EPISODES_PER_ITERATION
    for (worker, episode), row in last_steps.iterrows():
        expected = produced[(int(worker), int(episode))]
        assert row["episode_status"] == expected["status"]
        assert abs(row["progress"] - float(expected["progress"])) < 1e-3
    assert log.hyperparameters()["num_episodes_between_training"] == EPISODES_PER_ITERATION
    assert [a["steering_angle"] for a in log.action_space()] == [-20, 0, 20]


def test_trainer_and_two_workers_over_redis_and_s3(
    redis_url: str, s3_endpoint: str, s3_store_url: str, run_id: str, tmp_path: Path
):
    store = ModelStore(open_store(s3_store_url, s3_endpoint))
    nonce = seed_store(store, tiny_run_files()).nonce
    watcher = PointerWatcher(ModelStore(open_store(s3_store_url, s3_endpoint)))
    watcher.start()
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("trainer", "w0", "w1")}  # noqa: SIM115
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "simulator" if name != "trainer" else "trainer"],
            env=service_env(run_id, redis_url, s3_store_url, s3_endpoint, f"e2e-{name}"),
            stdout=logs[name],
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        for name in logs
    }
    deadline = time.monotonic() + 300
    try:
        for proc in procs.values():
            proc.wait(timeout=max(1, deadline - time.monotonic()))
        watcher.finish()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for f in logs.values():
            f.close()
    output = {name: (tmp_path / f"{name}.log").read_text()[-3000:] for name in logs}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{output[name]}"
    assert_finished_run(store, {"e2e-w0", "e2e-w1"})
    assert_every_episode_consumed(store, RunTransport.from_url(redis_url, run_id, nonce=nonce))

    from deepracer.logs import S3FileHandler

    handler = S3FileHandler(bucket=store.objects.bucket, prefix=store.objects.prefix, s3_endpoint_url=s3_endpoint)
    assert_deepracer_utils_reads(handler, store)


def test_hotlap_train_on_the_local_folder_store(tmp_path: Path):
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps(TINY_HYPERPARAMETERS))
    metadata = tmp_path / "model_metadata.json"
    metadata.write_text(json.dumps(METADATA))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hotlap",
            "train",
            "--workers",
            "2",
            "--run-id",
            "local-e2e",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--hyperparameters",
            str(hp),
            "--model-metadata",
            str(metadata),
            "--max-steps",
            "40",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "finished" in result.stdout
    store = ModelStore(open_store(f"file://{tmp_path / 'runs' / 'local-e2e'}"))
    assert_finished_run(store)
    assert_every_episode_consumed(store)
    files = store.objects.list()
    assert any(f.endswith("training-simtrace/0-iteration.csv") for f in files), files
    assert "metrics/TrainingMetrics.json" in files and "metrics/TrainingMetrics_1.json" in files
    assert "ip/hyperparameters.json" in files and "model/deepracer_checkpoints.json" in files

    from deepracer.logs import FSFileHandler

    assert_deepracer_utils_reads(FSFileHandler(model_folder=str(tmp_path / "runs" / "local-e2e")), store)

    # TrainingMetrics.json (worker 0) as deepracer-utils' metrics reader sees it.
    from deepracer.logs.metrics import TrainingMetrics

    metrics = TrainingMetrics(None, fname=str(tmp_path / "runs" / "local-e2e" / "metrics" / "TrainingMetrics.json"))
    worker0 = [r for r in episode_rows(store) if r["worker_index"] == "0"]
    training = metrics.getTraining()
    assert len(training) == len(worker0)
    assert sorted(training["complete"]) == sorted(int(r["status"] == "lap_complete") for r in worker0)

    # The workers' logs carry DeepRacer's SIM_TRACE_LOG lines, which deepracer-utils parses too.
    from deepracer.logs import SimulationLogsIO

    worker_log = tmp_path / "runs" / "local-e2e" / "logs" / "processes" / "simulator-0.log"
    steps = SimulationLogsIO.convert_to_pandas(SimulationLogsIO.load_data(str(worker_log)), EPISODES_PER_ITERATION)
    assert len(steps) > 0 and set(steps["episode_status"]) <= set(STATUS_LABELS)

    # A person can look at what the trained model does.
    png = tmp_path / "render.png"
    render = subprocess.run([sys.executable, "-m", "hotlap", "render", "--model", store.url, "--steps", "40",
                             "--output", str(png)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert render.returncode == 0, render.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hotlap_train_on_s3_with_a_continuous_action_space(tmp_path: Path, s3_endpoint: str, s3_store_url: str):
    """`hotlap train --store s3://...` seeds (and creates) the bucket; continuous actions, camera + lidar."""
    metadata = tmp_path / "model_metadata.json"
    metadata.write_text(json.dumps({
        "action_space": {"steering_angle": {"low": -25, "high": 25}, "speed": {"low": 0.8, "high": 1.6}},
        "action_space_type": "continuous", "sensor": ["FRONT_FACING_CAMERA", "LIDAR"], "version": "5",
    }))
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps({**TINY_HYPERPARAMETERS, "term_cond_max_episodes": 2}))
    result = subprocess.run(
        [sys.executable, "-m", "hotlap", "train", "--workers", "1", "--cars-per-worker", "3", "--run-id", "s3-e2e",
         "--store", s3_store_url, "--s3-endpoint-url", s3_endpoint, "--hyperparameters", str(hp),
         "--model-metadata", str(metadata), "--max-steps", "30"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    store = ModelStore(open_store(s3_store_url, s3_endpoint))
    assert store.latest_version() == 2 and store.is_done()
    manifest = store.load_version(2).manifest
    assert manifest["action_space_type"] == "continuous"
    assert manifest["observation_spec"] == {"FRONT_FACING_CAMERA": [120, 160], "LIDAR": [64]}
    trace = store.get_text("training-simtrace/0-iteration.csv").splitlines()
    action = trace[1].split(",")[7]
    assert action.startswith("[") and action.endswith("]") and len(action.split()) == 2  # "[steer speed]"


def test_async_schedule_trains_on_bounded_stale_experience(tmp_path: Path):
    """Workers never wait; the trainer takes episodes at most MAX_STALENESS (1) versions old."""
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps(TINY_HYPERPARAMETERS))
    result = subprocess.run(
        [sys.executable, "-m", "hotlap", "train", "--schedule", "async", "--workers", "2", "--run-id", "async-e2e",
         "--runs-dir", str(tmp_path / "runs"), "--hyperparameters", str(hp), "--max-steps", "30"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    store = ModelStore(open_store(f"file://{tmp_path / 'runs' / 'async-e2e'}"))
    assert store.list_versions() == list(range(ITERATIONS + 1)) and store.is_done()
    rows = episode_rows(store)
    assert len(rows) == ITERATIONS * EPISODES_PER_ITERATION
    assert all(0 <= int(r["iteration"]) - int(r["model_version"]) <= 1 for r in rows)
    # Chunks of episodes cut at a version change are no episodes: one row per whole episode, none
    # for a chunk (a chunk ends "in_progress" at 0 % progress), and the accounting counts them apart.
    assert len({(r["worker_id"], r["episode"]) for r in rows}) == len(rows)
    assert all(r["status"] != "in_progress" for r in rows)
    counts = json.loads(store.get_text("logs/accounting.json"))
    assert counts["chunks_produced"] == counts["chunks_consumed"] + counts["chunks_dropped"]
    dropped = sum(v for k, v in counts.items() if k.startswith("dropped_"))
    assert counts["produced"] == counts["consumed"] + dropped
