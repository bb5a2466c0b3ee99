"""`hotlap health`: the container probes of infra/k8s/, run as real processes against a real
redis-server (one of them password-protected) and a real store."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotlap.redis_server import free_port
from hotlap.seed import seed_store
from shared.store import ModelStore, open_store
from shared.transport import RunTransport
from tests.conftest import private_redis
from tests.e2e.test_pipeline import tiny_run_files

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr3t-redis-pw"
WAIT_S = 120


def health(role: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotlap", "health", "--role", role, *extra], env=env,
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def service_env(run_id: str, redis_url: str, store_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLAP_")}
    return {**env, "HOTLAP_RUN_ID": run_id, "HOTLAP_REDIS_URL": redis_url, "HOTLAP_STORE_URL": store_url, **extra}


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture
def nonce(store_url: str) -> str:
    """Seed the store: the run identity every probe reads to find the run's keys."""
    return seed_store(ModelStore(open_store(store_url)), tiny_run_files()).nonce


@pytest.fixture(scope="module")
def password_redis() -> Iterator[str]:
    """A redis-server that requires PASSWORD; yields its address without credentials."""
    with private_redis(password=PASSWORD) as (_, port):
        yield f"127.0.0.1:{port}/0"


# ----------------------------------------------------------------------------- trainer


def test_trainer_unhealthy_without_heartbeat_and_healthy_with_one(redis_url: str, run_id: str, store_url: str,
                                                                 nonce: str):
    env = service_env(run_id, redis_url, store_url)
    result = health("trainer", env)
    assert result.returncode == 1
    assert "trainer unhealthy: no trainer heartbeat" in result.stderr

    RunTransport.from_url(redis_url, run_id, nonce=nonce).trainer_beat({"step": "collecting", "version": 3})
    result = health("trainer", env)
    assert result.returncode == 0, result.stderr
    assert "trainer healthy: trainer collecting version 3" in result.stdout


def test_trainer_heartbeat_expires(transport: RunTransport):
    transport.trainer_beat({"step": "collecting", "version": 0}, ttl_s=1)
    assert transport.trainer_heartbeat() is not None
    deadline = time.monotonic() + 10
    while transport.trainer_heartbeat() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert transport.trainer_heartbeat() is None


def test_finished_run_counts_as_healthy(redis_url: str, run_id: str, store_url: str, nonce: str):
    RunTransport.from_url(redis_url, run_id, nonce=nonce).set_status("failed", "reward function raised")
    assert health("trainer", service_env(run_id, redis_url, store_url)).returncode == 0
    result = health("simulator", service_env(run_id, redis_url, store_url, HOTLAP_WORKER_NAME="w0"))
    assert result.returncode == 0 and "run failed" in result.stdout


def test_unseeded_store_is_unhealthy_for_the_services(redis_url: str, run_id: str, store_url: str):
    result = health("trainer", service_env(run_id, redis_url, store_url))
    assert result.returncode == 1 and "run not seeded" in result.stderr and "ip/run.json" in result.stderr


def test_unreachable_redis_is_unhealthy(run_id: str, store_url: str, nonce: str):
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = health("trainer", service_env(run_id, url, store_url))
    assert result.returncode == 1
    assert f"Redis at {url} unreachable" in result.stderr


# ----------------------------------------------------------------------------- simulator


def test_simulator_needs_its_worker_name(redis_url: str, run_id: str, store_url: str):
    result = health("simulator", service_env(run_id, redis_url, store_url))
    assert result.returncode == 2
    assert "HOTLAP_WORKER_NAME" in result.stderr


def test_simulator_health_follows_its_own_heartbeat(redis_url: str, run_id: str, store_url: str, nonce: str):
    env = service_env(run_id, redis_url, store_url, HOTLAP_WORKER_NAME="sim-a")
    transport = RunTransport.from_url(redis_url, run_id, nonce=nonce)
    waiting = health("simulator", env)
    assert waiting.returncode == 0 and "waiting for the trainer" in waiting.stdout

    transport.set_status("running")
    transport.announce_version(0)
    transport.heartbeat("sim-b", {"version": 0, "steps_per_s": 10})  # another worker's beat does not count
    silent = health("simulator", env)
    assert silent.returncode == 1 and "no heartbeat of worker sim-a" in silent.stderr

    transport.heartbeat("sim-a", {"version": 0, "steps_per_s": 12.5})
    beating = health("simulator", env)
    assert beating.returncode == 0, beating.stderr
    assert "worker sim-a on version 0, 12.5 steps/s" in beating.stdout


# ----------------------------------------------------------------------------- seed


def test_seed_health_and_wait(redis_url: str, run_id: str, store_url: str):
    env = service_env(run_id, redis_url, store_url)
    missing = health("seed", env)
    assert missing.returncode == 1 and "seed unhealthy: not seeded yet" in missing.stderr

    waiter = subprocess.Popen([sys.executable, "-m", "hotlap", "health", "--role", "seed", "--wait", str(WAIT_S)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        seed_store(ModelStore(open_store(store_url)), tiny_run_files())
        out, err = waiter.communicate(timeout=WAIT_S + 30)
    finally:
        waiter.kill()
    assert waiter.returncode == 0, err
    assert "seed healthy: run files in" in out and "track reInvent2019_track" in out


# ----------------------------------------------------------------------------- Redis password


def test_password_in_the_redis_url_is_used_and_never_printed(password_redis: str, run_id: str, store_url: str,
                                                             nonce: str):
    good = service_env(run_id, f"redis://:{PASSWORD}@{password_redis}", store_url)
    beat = {"step": "collecting", "version": 1}
    RunTransport.from_url(good["HOTLAP_REDIS_URL"], run_id, nonce=nonce).trainer_beat(beat)
    assert health("trainer", good).returncode == 0

    for url in (f"redis://:wrong-{PASSWORD}@{password_redis}", f"redis://{password_redis}"):
        result = health("trainer", service_env(run_id, url, store_url))
        assert result.returncode == 1, result.stdout
        assert "trainer unhealthy: Redis at redis://" in result.stderr and "AuthenticationError" in result.stderr
        assert PASSWORD not in result.stdout + result.stderr


def test_a_malformed_redis_url_error_hides_the_password(run_id: str, store_url: str):
    result = health("trainer", service_env(run_id, f"http://:{PASSWORD}@redis:6379/0", store_url))
    assert result.returncode == 2
    assert "HOTLAP_REDIS_URL" in result.stderr and "***@redis:6379/0" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


# ----------------------------------------------------------------------------- the real services beat


@pytest.mark.slow
def test_running_trainer_and_simulator_pass_their_probes(tmp_path: Path, password_redis: str, run_id: str,
                                                         store_url: str):
    """A real trainer and worker on a password-protected Redis: both probes pass from their own beats."""
    files = tiny_run_files()
    seed_store(ModelStore(open_store(store_url)), dataclasses.replace(
        files, settings=files.settings.model_copy(update={"max_iterations": 500})))  # still running when probed
    env = service_env(run_id, f"redis://:{PASSWORD}@{password_redis}", store_url, HOTLAP_WORKER_NAME="sim-0",
                      HOTLAP_SIM_TRACE_LOG="0", OMP_NUM_THREADS="1", HOTLAP_TORCH_THREADS="1")
    procs = []
    try:
        for name, module in (("trainer", "trainer"), ("simulator", "simulator")):
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=REPO))
        for role, beat_says in (("trainer", "trainer collecting version"), ("simulator", "steps/s")):
            deadline = time.monotonic() + WAIT_S
            result = health(role, env)
            while beat_says not in result.stdout and time.monotonic() < deadline:
                time.sleep(1)
                result = health(role, env)
            assert result.returncode == 0 and beat_says in result.stdout, \
                (result.stderr, (tmp_path / f"{role}.log").read_text()[-2000:])
        logs = "".join((tmp_path / f"{name}.log").read_text() for name in ("trainer", "simulator"))
        assert PASSWORD not in logs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
