"""Faults, as processes: kill a worker, restart the trainer, restart Redis — the run still finishes
with every version published once and no episode lost or counted twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hotlap.redis_server import find_redis_server, free_port
from hotlap.seed import seed_store
from shared.store import ModelStore, open_store
from shared.transport import RunTransport, TransportError
from tests.e2e.test_deepracer_outputs import assert_coach_csv_matches_the_episode_log
from tests.e2e.test_pipeline import assert_finished_run, tiny_run_files

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300


class Stack:
    """A run's processes, each logging to a file under tmp_path."""

    def __init__(self, tmp_path: Path, run_id: str, redis_url: str):
        self.tmp_path, self.run_id, self.redis_url = tmp_path, run_id, redis_url
        self.store_url = f"file://{tmp_path / 'store'}"
        self.store = ModelStore(open_store(self.store_url))
        nonce = seed_store(self.store, tiny_run_files()).nonce
        self.transport = RunTransport.from_url(redis_url, run_id, nonce=nonce)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, module: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, HOTLAP_RUN_ID=self.run_id, HOTLAP_REDIS_URL=self.redis_url,
                   HOTLAP_STORE_URL=self.store_url, HOTLAP_WORKER_NAME=name, HOTLAP_SIM_TRACE_LOG="0",
                   HOTLAP_STALL_TIMEOUT_S="3", OMP_NUM_THREADS="1")
        log = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=REPO)
        return self.procs[name]

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text()[-3000:]

    def wait_for_version(self, version: int) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                latest = self.transport.latest_version()
            except TransportError:
                latest = None
            if latest is not None and latest >= version:
                return
            time.sleep(0.1)
        pytest.fail(f"version {version} never published:\n{self.log('trainer')}")

    def wait_all(self, names: list[str]) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        for name in names:
            code = self.procs[name].wait(timeout=max(1, deadline - time.monotonic()))
            assert code == 0, f"{name} exited {code}:\n{self.log(name)}"

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, run_id: str) -> Iterator[Stack]:
    s = Stack(tmp_path, run_id, redis_url)
    yield s
    s.kill_all()


def test_killed_worker_episodes_are_played_by_the_others(stack: Stack):
    stack.start("trainer", "trainer")
    stack.start("w0", "simulator")
    victim = stack.start("w1", "simulator")
    stack.wait_for_version(1)
    victim.send_signal(signal.SIGKILL)  # dies mid-episode, holding tickets
    stack.wait_all(["trainer", "w0"])
    assert_finished_run(stack.store, versions_per_worker=1)


def test_trainer_restart_resumes_from_the_latest_version(stack: Stack):
    trainer = stack.start("trainer", "trainer")
    stack.start("w0", "simulator")
    stack.start("w1", "simulator")
    stack.wait_for_version(1)
    # Kill it while it holds delivered-but-unacked episodes of the iteration in progress.
    deadline = time.monotonic() + TIMEOUT_S
    while stack.transport.client.xpending(stack.transport.keys.experience, "trainer")["pending"] < 2:
        assert time.monotonic() < deadline, "the trainer never held pending experience"
        time.sleep(0.02)
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    stack.start("trainer", "trainer")  # resumes: weights, optimizer and unacked experience
    stack.wait_all(["trainer", "w0", "w1"])
    assert_finished_run(stack.store)
    assert "resuming from model version" in stack.log("trainer")
    assert_coach_csv_matches_the_episode_log(stack.store)  # resumed: no row lost or counted twice


def test_sigterm_stops_a_worker_gracefully(stack: Stack):
    """A stopped worker exits 0 and hands its unfinished episodes back (no stall timeout needed)."""
    stack.start("trainer", "trainer")
    stack.start("w0", "simulator")
    worker = stack.start("w1", "simulator")
    stack.wait_for_version(1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    assert "signal 15: finishing the current step" in stack.log("w1")
    stack.wait_all(["trainer", "w0"])
    assert_finished_run(stack.store, versions_per_worker=1)


@contextmanager
def own_redis(tmp_path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir",
                             str(tmp_path), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                            stdout=subprocess.DEVNULL)
    transport = RunTransport.from_url(f"redis://127.0.0.1:{port}/0", "probe")
    for _ in range(100):
        try:
            transport.ping()
            break
        except TransportError:
            time.sleep(0.05)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()


def test_redis_restart_mid_run(tmp_path: Path, run_id: str):
    port = free_port()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    with own_redis(redis_dir, port) as server:
        s = Stack(tmp_path, run_id, f"redis://127.0.0.1:{port}/0")
        try:
            s.start("trainer", "trainer")
            s.start("w0", "simulator")
            s.start("w1", "simulator")
            s.wait_for_version(1)
            server.terminate()
            server.wait()
            time.sleep(2)  # everybody sees Redis gone and backs off
            with own_redis(redis_dir, port):
                s.wait_all(["trainer", "w0", "w1"])
                assert_finished_run(s.store)
                assert "retrying" in s.log("trainer") + s.log("w0") + s.log("w1")
        finally:
            s.kill_all()


def test_reward_function_error_fails_the_run_visibly(tmp_path: Path):
    """A reward function that breaks mid-run fails the run with the reason, instead of a crash loop."""
    reward = tmp_path / "reward_function.py"
    reward.write_text("def reward_function(params):\n"
                      "    if params['steps'] > 5:\n"
                      "        return params['no_such_key']\n"
                      "    return 1.0\n")
    result = subprocess.run(
        [sys.executable, "-m", "hotlap", "train", "--workers", "2", "--run-id", "broken", "--runs-dir",
         str(tmp_path / "runs"), "--reward-function", str(reward), "--max-iterations", "2",
         "--episodes-per-iteration", "2", "--max-steps", "30"],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "FAILED" in result.stdout
    assert "reward_function.py:3" in result.stdout  # the line in the user's file
    assert "no_such_key" in result.stdout
    trainer_log = (tmp_path / "runs" / "broken" / "logs" / "processes" / "trainer.log").read_text()
    assert "run failed" in trainer_log


def test_tickets_of_a_dead_worker_are_played_by_an_idle_worker(stack: Stack):
    """A worker that found the quota used up picks up the tickets the trainer re-issues."""
    from tests.e2e.test_pipeline import EPISODES_PER_ITERATION

    stack.start("trainer", "trainer")
    stack.wait_for_version(0)
    for _ in range(EPISODES_PER_ITERATION):  # a worker that died right after claiming everything
        assert stack.transport.claim_ticket(0) > 0
    stack.start("w0", "simulator")
    stack.wait_all(["trainer", "w0"])
    assert_finished_run(stack.store)
    assert "reissuing" in stack.log("trainer")
