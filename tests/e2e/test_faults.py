"""Faults, as processes: kill a worker, restart the trainer, restart Redis, poison the stream, a NaN
loss — the run still finishes with every version published once and no episode lost or counted
twice (or fails visibly, once), and its accounting adds up: produced = consumed + dropped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from hotlap.redis_server import find_redis_server, free_port
from hotlap.seed import seed_store
from shared.experience import Experience
from shared.run_files import RunFiles
from shared.service import EXIT_RUN_FAILED
from shared.store import ModelStore, open_store
from shared.transport import RunTransport, TransportError
from tests.e2e.test_deepracer_outputs import assert_coach_csv_matches_the_episode_log
from tests.e2e.test_pipeline import EPISODES_PER_ITERATION, ITERATIONS, assert_finished_run, tiny_run_files

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300


def assert_accounting_adds_up(store: ModelStore, transport: RunTransport | None = None,
                              consumed: int | None = ITERATIONS * EPISODES_PER_ITERATION) -> dict[str, int]:
    """logs/accounting.json (and the Redis hash it was written from): every message the workers
    produced was consumed or dropped for a reason; nothing is left in the stream."""
    counts = json.loads(store.get_text("logs/accounting.json"))
    dropped = sum(v for k, v in counts.items() if k.startswith("dropped_"))
    assert counts["produced"] == counts["consumed"] + dropped, counts
    if consumed is not None:
        assert counts["consumed"] == consumed, counts
    if transport is not None:
        assert transport.accounting() == {k: v for k, v in counts.items() if k != "run_id"}
        assert transport.backlog() == 0
    return counts


class Stack:
    """A run's processes, each logging to a file under tmp_path."""

    def __init__(self, tmp_path: Path, run_id: str, redis_url: str, files: RunFiles | None = None):
        self.tmp_path, self.run_id, self.redis_url = tmp_path, run_id, redis_url
        self.store_url = f"file://{tmp_path / 'store'}"
        self.store = ModelStore(open_store(self.store_url))
        nonce = seed_store(self.store, files or tiny_run_files()).nonce
        self.transport = RunTransport.from_url(redis_url, run_id, nonce=nonce)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, module: str, **extra_env: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, HOTLAP_RUN_ID=self.run_id, HOTLAP_REDIS_URL=self.redis_url,
                   HOTLAP_STORE_URL=self.store_url, HOTLAP_WORKER_NAME=name, HOTLAP_SIM_TRACE_LOG="0",
                   HOTLAP_STALL_TIMEOUT_S="3", OMP_NUM_THREADS="1", **extra_env)
        log = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=REPO)
        return self.procs[name]

    def log(self, name: str) -> str:
        """The tail of a process's output, for failure messages."""
        return self.text(name)[-3000:]

    def text(self, name: str) -> str:
        """All of a process's output (the trainer's rl_coach lines push other lines out of any tail)."""
        return (self.tmp_path / f"{name}.log").read_text()

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
    assert_accounting_adds_up(stack.store, stack.transport)


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
    assert "resuming from model version" in stack.text("trainer")
    assert_coach_csv_matches_the_episode_log(stack.store)  # resumed: no row lost or counted twice
    assert_accounting_adds_up(stack.store, stack.transport, consumed=None)  # a kill between publish and ack


def test_sigterm_stops_a_worker_gracefully(stack: Stack):
    """A stopped worker exits 0 and hands its unfinished episodes back (no stall timeout needed)."""
    stack.start("trainer", "trainer")
    stack.start("w0", "simulator")
    worker = stack.start("w1", "simulator")
    stack.wait_for_version(1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    assert "signal 15: finishing the current step" in stack.text("w1")
    stack.wait_all(["trainer", "w0"])
    assert_finished_run(stack.store, versions_per_worker=1)
    assert_accounting_adds_up(stack.store, stack.transport)


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
                assert "retrying" in s.text("trainer") + s.text("w0") + s.text("w1")
                assert_accounting_adds_up(s.store, s.transport)
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
    assert_accounting_adds_up(ModelStore(open_store(f"file://{tmp_path / 'runs' / 'broken'}")), consumed=None)


def test_tickets_of_a_dead_worker_are_played_by_an_idle_worker(stack: Stack):
    """A worker that found the quota used up picks up the tickets the trainer re-issues."""
    stack.start("trainer", "trainer")
    stack.wait_for_version(0)
    for _ in range(EPISODES_PER_ITERATION):  # a worker that died right after claiming everything
        assert stack.transport.claim_ticket(0) > 0
    stack.start("w0", "simulator")
    stack.wait_all(["trainer", "w0"])
    assert_finished_run(stack.store)
    assert "reissuing" in stack.text("trainer")
    counts = assert_accounting_adds_up(stack.store, stack.transport)
    # every ticket the dead worker held was re-issued; with the 3 s stall timeout a slow live worker on
    # a loaded machine can legitimately be re-issued a ticket too, so this is a lower bound
    assert counts["reissued"] >= EPISODES_PER_ITERATION


def honest_experience(run_id: str, version: int, episode: int, steps: int = 3) -> Experience:
    """A message as a worker of tiny_run_files() sends it: camera frames, one of 3 actions."""
    rng = np.random.default_rng(episode)
    return Experience(
        run_id=run_id, worker_name="injected", worker_index=7, model_version=version, episode=episode,
        observations={"FRONT_FACING_CAMERA": rng.integers(0, 256, (steps, 120, 160), dtype=np.uint8)},
        actions=rng.integers(0, 3, steps).astype(np.int64), log_probs=np.full(steps, -1.1, np.float32),
        values=np.zeros(steps, np.float32), rewards=np.ones(steps, np.float32), terminated=True,
        bootstrap_value=0.0, status="off_track", progress=10.0,
    )


def inject(transport: RunTransport, fields: dict[bytes, bytes]) -> None:
    """A buggy or hostile producer: one stream entry, counted as produced as a worker's would be."""
    pipe = transport.client.pipeline()
    pipe.xadd(transport.keys.experience, fields)
    pipe.hincrby(transport.keys.accounting, "produced", 1)
    pipe.execute()


def poisoned(exp: Experience, how: str) -> dict[bytes, bytes]:
    if how == "nan reward":
        exp.rewards[1] = np.nan
    elif how == "action out of range":
        exp.actions[0] = 7
    elif how == "wrong camera shape":
        exp.observations["FRONT_FACING_CAMERA"] = np.zeros((exp.num_steps, 60, 80), np.uint8)
    fields = exp.encode(compress=False)
    if how == "oversize":
        fields[b"payload"] += b"\0" * (64 * 1024 * 1024)
    return fields


def test_poison_is_dropped_counted_and_logged_once_per_kind(stack: Stack):
    """Undecodable, oversize and out-of-spec messages never reach PPO: each is acknowledged,
    counted by reason and logged once per kind, and the run finishes on the honest episodes."""
    stack.start("trainer", "trainer")
    stack.wait_for_version(0)
    kinds = ["nan reward", "action out of range", "wrong camera shape", "oversize"]
    for copy in range(2):
        inject(stack.transport, {b"header": b"{not json", b"payload": b""})
        for i, how in enumerate(kinds):
            inject(stack.transport, poisoned(honest_experience(stack.run_id, 0, 100 + 10 * copy + i), how))
    stack.start("w0", "simulator")
    stack.start("w1", "simulator")
    stack.wait_all(["trainer", "w0", "w1"])
    assert_finished_run(stack.store)
    counts = assert_accounting_adds_up(stack.store, stack.transport)
    assert (counts["dropped_corrupt"], counts["dropped_oversize"], counts["dropped_invalid"]) == (2, 2, 6)
    log = stack.text("trainer")
    for reason in ("corrupt", "oversize", "invalid"):
        assert log.count(f"dropping {reason} experience") == 1, log
    assert "NaN or inf" in log or "action index 7" in log or "FRONT_FACING_CAMERA" in log


def test_non_finite_loss_fails_the_run_once_and_a_restart_does_not_loop(tmp_path: Path, redis_url: str, run_id: str):
    """Finite but absurd values (3e38) under a squared-error loss make the loss inf: the run fails
    with DeepRacer's message, and a restarted trainer reports the failure instead of training again."""
    files = tiny_run_files()
    files = RunFiles(files.settings, files.metadata,
                     files.hyperparameters.model_copy(update={"loss_type": "mean squared error"}), files.reward_source)
    stack = Stack(tmp_path, run_id, redis_url, files)
    try:
        trainer = stack.start("trainer", "trainer")
        stack.wait_for_version(0)
        for episode in range(EPISODES_PER_ITERATION):
            exp = honest_experience(run_id, 0, episode)
            exp.values[:] = 3e38
            assert stack.transport.push_experience(exp) is not None
        assert trainer.wait(timeout=TIMEOUT_S) == EXIT_RUN_FAILED  # 0: no restart loop (shared.service)
        first = (tmp_path / "trainer.log").read_text()
        assert "NaN detected in loss function, aborting training" in first and "Traceback" not in first
        status = stack.transport.status()
        assert status is not None and status.state == "failed" and "NaN detected in loss function" in status.reason
        assert stack.store.list_versions() == [0]  # nothing published from the broken update
        assert_accounting_adds_up(stack.store, stack.transport, consumed=0)

        restarted = stack.start("trainer", "trainer")  # what compose's restart policy does
        assert restarted.wait(timeout=TIMEOUT_S) == EXIT_RUN_FAILED
        second = (tmp_path / "trainer.log").read_text()[len(first):]
        assert "run failed: NaN detected in loss function" in second
        assert "Using the following hyper-parameters" not in second  # it did not set up and train again
        assert stack.transport.status().state == "failed"  # type: ignore[union-attr]
    finally:
        stack.kill_all()


def test_retention_bounds_disk_across_a_trainer_restart(tmp_path: Path, redis_url: str, run_id: str):
    """12 iterations with a trainer killed in the middle: at most the last 4 versions plus the best
    keep weights, only the latest keeps optimizer state, and the resumed run finishes."""
    base = tiny_run_files()
    files = RunFiles(base.settings.model_copy(update={"max_iterations": 12, "max_steps_per_episode": 20}),
                     base.metadata, base.hyperparameters.model_copy(update={"num_episodes_between_training": 2}),
                     base.reward_source)
    stack = Stack(tmp_path, run_id, redis_url, files)
    try:
        trainer = stack.start("trainer", "trainer")
        stack.start("w0", "simulator")
        stack.wait_for_version(6)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        stack.start("trainer", "trainer")
        stack.wait_all(["trainer", "w0"])
    finally:
        stack.kill_all()
    assert stack.store.latest_version() == 12 and stack.store.is_done()
    assert "resuming from model version" in stack.text("trainer")
    objects = stack.store.objects.list("model/")
    with_weights = sorted(int(k.split("/")[1]) for k in objects if k.endswith("/policy.safetensors"))
    best = int(json.loads(stack.store.get_text("model/deepracer_checkpoints.json"))["best_checkpoint"]["name"]
               .split("/")[1])
    assert len(with_weights) <= 5 and set(with_weights) == {9, 10, 11, 12, best}, with_weights
    assert [k for k in objects if k.endswith("/optimizer.pt")] == ["model/12/optimizer.pt"]
    assert stack.store.list_versions() == with_weights  # no half-deleted version left listed
    assert_accounting_adds_up(stack.store, stack.transport, consumed=None)
