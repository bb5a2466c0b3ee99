"""A racer's season (issue 7): runs after runs on one Redis, failed runs, two trainers.
Real processes against a real redis-server and the store."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotlap.seed import seed_store
from shared.store import ModelStore, open_store
from shared.transport import RunTransport
from tests.e2e.test_pipeline import METADATA, TINY_HYPERPARAMETERS, tiny_run_files

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240
# Long enough that a run whose tickets were already claimed could never finish inside TIMEOUT_S:
# a stall re-issue cannot mask an inherited state.
NO_REISSUE_STALL_S = "600"


def hotlap_train(tmp_path: Path, runs_dir: Path, run_id: str, redis_url: str,
                 *extra: str) -> subprocess.CompletedProcess[str]:
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps(TINY_HYPERPARAMETERS))
    metadata = tmp_path / "model_metadata.json"
    metadata.write_text(json.dumps(METADATA))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLAP_")}
    env["HOTLAP_STALL_TIMEOUT_S"] = NO_REISSUE_STALL_S
    return subprocess.run(
        [sys.executable, "-m", "hotlap", "train", "--workers", "2", "--cars-per-worker", "1", "--run-id", run_id,
         "--runs-dir", str(runs_dir), "--redis-url", redis_url, "--hyperparameters", str(hp),
         "--model-metadata", str(metadata), "--max-iterations", "2", "--episodes-per-iteration", "3",
         "--max-steps", "30", *extra],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO, env=env,
    )


def test_a_second_run_with_a_new_prefix_on_the_same_redis_and_run_id_starts_clean(
        tmp_path: Path, redis_url: str, run_id: str):
    """Item 1: the second run inherits no status, tickets or worker indexes from the first."""
    for prefix in ("first", "second"):
        result = hotlap_train(tmp_path, tmp_path / prefix, run_id, redis_url)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        run = tmp_path / prefix / run_id
        trainer_log = (run / "logs" / "processes" / "trainer.log").read_text()
        assert "reissuing" not in trainer_log, trainer_log[-3000:]  # no iteration waited a stall timeout
        rows = list(csv.DictReader(io.StringIO((run / "logs" / "episodes.csv").read_text())))
        assert len(rows) == 2 * 3
        assert {int(r["worker_index"]) for r in rows} <= {0, 1} and 0 in {int(r["worker_index"]) for r in rows}
        assert (run / "metrics" / "TrainingMetrics.json").is_file()  # worker 0's, as DeepRacer names it
        assert json.loads((run / "model" / "latest.json").read_text())["version"] == 2

    # The same files again on a finished run's folder: nothing is trained or even started again.
    again = hotlap_train(tmp_path, tmp_path / "second", run_id, redis_url)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"run {run_id} is already finished" in again.stdout and "nothing to train" in again.stdout
    assert "already done" not in (tmp_path / "second" / run_id / "logs" / "processes" / "trainer.log").read_text()


# ------------------------------------------------------------------------------ processes


class Procs:
    def __init__(self, tmp_path: Path, run_id: str, redis_url: str, reward: str | None = None):
        self.tmp_path, self.run_id, self.redis_url = tmp_path, run_id, redis_url
        self.store_url = f"file://{tmp_path / 'store'}"
        self.store = ModelStore(open_store(self.store_url))
        files = tiny_run_files()
        if reward is not None:
            files = type(files)(files.settings, files.metadata, files.hyperparameters, reward)
        self.nonce = seed_store(self.store, files).nonce
        self.transport = RunTransport.from_url(redis_url, run_id, nonce=self.nonce)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, module: str, **env: str) -> subprocess.Popen[bytes]:
        full_env = dict(os.environ, HOTLAP_RUN_ID=self.run_id, HOTLAP_REDIS_URL=self.redis_url,
                        HOTLAP_STORE_URL=self.store_url, HOTLAP_WORKER_NAME=name, HOTLAP_SIM_TRACE_LOG="0",
                        HOTLAP_STALL_TIMEOUT_S=NO_REISSUE_STALL_S, OMP_NUM_THREADS="1", **env)
        log = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen([sys.executable, "-m", module], env=full_env, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=REPO)
        return self.procs[name]

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text()

    def wait_for_log(self, name: str, text: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while text not in self.log(name):
            assert self.procs[name].poll() is None, f"{name} exited {self.procs[name].returncode}:\n{self.log(name)}"
            assert time.monotonic() < deadline, f"{name} never logged {text!r}:\n{self.log(name)}"
            time.sleep(0.1)

    def wait(self, name: str) -> int:
        return self.procs[name].wait(timeout=TIMEOUT_S)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def procs(tmp_path: Path, redis_url: str, run_id: str) -> Iterator[Procs]:
    p = Procs(tmp_path, run_id, redis_url)
    yield p
    p.kill_all()


RAISING_REWARD = ("def reward_function(params):\n"
                  "    if params['steps'] > 3:\n"
                  "        raise ValueError('broken on purpose')\n"
                  "    return 1.0\n")


def test_a_failed_run_stays_failed_when_its_processes_are_restarted(tmp_path: Path, redis_url: str, run_id: str):
    """Item 3: the reason is kept in Redis and the store; every process exits 0 (no restart
    loop); a restarted trainer or worker does not set the run back to running."""
    p = Procs(tmp_path, run_id, redis_url, reward=RAISING_REWARD)
    try:
        p.start("trainer", "trainer")
        p.start("w0", "simulator")
        assert p.wait("w0") == 0, p.log("w0")
        assert p.wait("trainer") == 0, p.log("trainer")
        status = p.transport.status()
        assert status is not None and status.state == "failed", status
        assert "broken on purpose" in status.reason and "reward_function.py:3" in status.reason
        assert "broken on purpose" in (p.store.failure() or "")
        assert "run failed" in p.log("trainer") and "broken on purpose" in p.log("trainer")

        for name, module in (("trainer-again", "trainer"), ("w0-again", "simulator")):
            p.start(name, module)
            assert p.wait(name) == 0, p.log(name)
            assert "broken on purpose" in p.log(name)
            status = p.transport.status()
            assert status is not None and status.state == "failed" and "broken on purpose" in status.reason
        assert "acting with model version" not in p.log("w0-again")  # it never played the broken function again

        # Redis forgot the run (its keys expired): the store still says failed.
        for key in p.transport.client.scan_iter(match=p.transport.keys.pattern):
            p.transport.client.delete(key)
        p.start("trainer-third", "trainer")
        assert p.wait("trainer-third") == 0, p.log("trainer-third")
        assert "broken on purpose" in p.log("trainer-third")
        status = p.transport.status()
        assert status is None or status.state == "failed"
    finally:
        p.kill_all()


LEASE = {"HOTLAP_TRAINER_LEASE_S": "2"}


def test_a_second_trainer_exits_naming_the_holder(procs: Procs):
    """Item 8: one trainer per run."""
    first = procs.start("trainer", "trainer", **LEASE)
    procs.wait_for_log("trainer", "holding the trainer lease")
    second = procs.start("trainer-2", "trainer", **LEASE)
    assert procs.wait("trainer-2") == 3, procs.log("trainer-2")
    assert f"another trainer holds this run's lease (host={os.uname().nodename} pid={first.pid} " \
        in procs.log("trainer-2")
    assert second.returncode == 3 and first.poll() is None  # the holder trains on
    first.send_signal(signal.SIGTERM)
    assert procs.wait("trainer") == 0, procs.log("trainer")


def test_a_trainer_that_lost_its_lease_stops_without_publishing(procs: Procs):
    """A paused trainer (SIGSTOP past its lease) finds another trainer holding the run when it
    wakes, and stops instead of publishing model versions beside it."""
    first = procs.start("trainer", "trainer", **LEASE)
    procs.wait_for_log("trainer", "holding the trainer lease")
    procs.wait_for_log("trainer", "trainer on")  # set up: version 0 published, waiting for episodes
    first.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 30
        while procs.transport.client.exists(procs.transport.keys.trainer_lease):
            assert time.monotonic() < deadline, "the paused trainer's lease never expired"
            time.sleep(0.2)
        procs.start("trainer-2", "trainer", **LEASE)
        procs.wait_for_log("trainer-2", "holding the trainer lease")
    finally:
        first.send_signal(signal.SIGCONT)
    assert procs.wait("trainer") == 3, procs.log("trainer")
    assert "lost the trainer lease" in procs.log("trainer") or "last renewed" in procs.log("trainer")
    assert procs.procs["trainer-2"].poll() is None
    assert procs.store.latest_version() == 0


def _pause_past_the_lease(procs: Procs) -> subprocess.Popen[bytes]:
    """A trainer set up (version 0 published, waiting for episodes), then SIGSTOPped until Redis let
    its lease expire: a laptop that slept, a debugger, a swapped-out container."""
    first = procs.start("trainer", "trainer", **LEASE)
    procs.wait_for_log("trainer", "trainer on")
    first.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while procs.transport.client.exists(procs.transport.keys.trainer_lease):
        assert time.monotonic() < deadline, "the paused trainer's lease never expired"
        time.sleep(0.2)
    return first


def test_a_trainer_paused_past_its_lease_takes_it_back_when_nobody_else_did(procs: Procs):
    """Nobody took the run while the trainer was away: it holds its lease again and trains on."""
    first = _pause_past_the_lease(procs)
    first.send_signal(signal.SIGCONT)
    procs.wait_for_log("trainer", "so this trainer takes it back")
    time.sleep(3 * float(LEASE["HOTLAP_TRAINER_LEASE_S"]))  # renewals go on: still alive, still holding
    assert first.poll() is None, procs.log("trainer")
    assert f"pid={first.pid} " in procs.transport.client.get(procs.transport.keys.trainer_lease).decode()
    first.send_signal(signal.SIGTERM)
    assert procs.wait("trainer") == 0, procs.log("trainer")


def test_a_trainer_paused_past_its_lease_stops_if_another_published_meanwhile(procs: Procs):
    """Another trainer held the run while this one slept, published a version and stopped: the
    sleeper takes the free lease back, sees the store moved on, and stops without publishing."""
    first = _pause_past_the_lease(procs)
    try:
        procs.start("trainer-2", "trainer", **LEASE)
        procs.wait_for_log("trainer-2", "trainer on")
        version_0 = procs.store.load_version(0, with_optimizer=True)  # what trainer-2 would have trained
        procs.store.publish_version(1, version_0.weights, version_0.manifest, version_0.optimizer)
        procs.procs["trainer-2"].send_signal(signal.SIGTERM)
        assert procs.wait("trainer-2") == 0, procs.log("trainer-2")
        assert not procs.transport.client.exists(procs.transport.keys.trainer_lease)  # released
    finally:
        first.send_signal(signal.SIGCONT)
    assert procs.wait("trainer") == 3, procs.log("trainer")
    assert "another trainer published model version 1 while this one was paused" in procs.log("trainer")
    assert procs.store.latest_version() == 1


@pytest.mark.parametrize("ended_in", ["store", "redis"])
def test_a_worker_started_on_a_finished_run_exits_at_once(procs: Procs, ended_in: str):
    """A finished run started again (compose `up`, `hotlap train`) has no model version in a fresh
    Redis: a worker must not wait for one that never comes. ip/done in the store, or the status
    "done" a trainer sets on finding it, ends the worker's wait."""
    if ended_in == "store":
        procs.store.mark_done()
    else:
        procs.transport.set_status("done")
    procs.start("simulator", "simulator")
    assert procs.wait("simulator") == 0, procs.log("simulator")
    assert "is already done: nothing to play" in procs.log("simulator")
