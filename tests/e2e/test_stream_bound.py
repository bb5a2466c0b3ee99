"""Redis memory stays bounded while the trainer is paused, and nothing is lost when it resumes:
a redis-server with maxmemory (as `hotlap train` starts it), a trainer and 3 simulator workers."""

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

from hotlap.redis_server import redis_server
from hotlap.seed import seed_store
from shared.store import ModelStore, open_store
from shared.transport import RunTransport
from tests.e2e.test_pipeline import EPISODES_PER_ITERATION, ITERATIONS, episode_rows, tiny_run_files

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300
MAXMEMORY = 64 << 20  # the stated bound: Redis's maxmemory (noeviction)
STREAM_MAX_BYTES = 3 << 20  # the experience stream's bound: above one iteration of the tiny run's episodes
WORKERS = ("w0", "w1", "w2")


def wait_until(condition, what: str, logs: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(logs.glob("*.log")))
            pytest.fail(f"{what} never happened\n{tails}")
        time.sleep(0.1)


def stream_payload(transport: RunTransport) -> int:
    """The stream's message bytes, measured from its entries (not from the counter under test)."""
    entries = transport.client.xrange(transport.keys.experience)
    return sum(len(k) + len(v) for _id, fields in entries for k, v in fields.items())


@pytest.fixture
def procs() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    started: dict[str, subprocess.Popen[bytes]] = {}
    yield started
    for proc in started.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()


def test_paused_trainer_keeps_redis_memory_bounded_and_loses_nothing(tmp_path: Path, run_id: str,
                                                                     procs: dict[str, subprocess.Popen[bytes]]):
    files = tiny_run_files()
    files = dataclasses.replace(files, settings=files.settings.model_copy(update={"schedule": "async"}))
    store = ModelStore(open_store(f"file://{tmp_path / 'store'}"))
    nonce = seed_store(store, files).nonce
    with redis_server(maxmemory=MAXMEMORY) as url:
        transport = RunTransport.from_url(url, run_id, nonce=nonce)  # the run's keys, as the services build them
        assert transport.client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert int(transport.client.config_get("maxmemory")["maxmemory"]) == MAXMEMORY

        def start(name: str, module: str) -> None:
            env = dict(os.environ, HOTLAP_RUN_ID=run_id, HOTLAP_REDIS_URL=url, HOTLAP_STORE_URL=store.url,
                       HOTLAP_WORKER_NAME=name, HOTLAP_SIM_TRACE_LOG="0", OMP_NUM_THREADS="1",
                       HOTLAP_STREAM_MAX_BYTES=str(STREAM_MAX_BYTES), HOTLAP_HEARTBEAT_S="0.5",
                       HOTLAP_STALL_TIMEOUT_S="600",
                       # The pause must stay inside the trainer's lease: a trainer stopped past it has
                       # lost the run to whoever may have taken it, and exits instead of publishing.
                       HOTLAP_TRAINER_LEASE_S="600")
            log = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
            procs[name] = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log,
                                           stderr=subprocess.STDOUT, cwd=REPO)

        start("trainer", "trainer")
        for name in WORKERS:
            start(name, "simulator")
        wait_until(lambda: (transport.latest_version() or 0) >= 1, "version 1", tmp_path)
        procs["trainer"].send_signal(signal.SIGSTOP)

        def beats() -> dict[str, dict[str, str]]:
            return {name: transport.worker_heartbeat(name) or {} for name in WORKERS}

        at_pause = beats()
        peak_memory = 0

        def blocked() -> bool:
            # async workers wait only on a full stream: each has waited 2 s more since the pause
            nonlocal peak_memory
            peak_memory = max(peak_memory, int(transport.client.info("memory")["used_memory"]))
            assert peak_memory < MAXMEMORY, f"Redis used_memory reached {peak_memory} bytes"
            assert stream_payload(transport) <= STREAM_MAX_BYTES
            now = beats()
            return all(float(now[w].get("waiting_s", 0)) > float(at_pause[w].get("waiting_s", 0)) + 2.0
                       for w in WORKERS)

        wait_until(blocked, "every worker blocked on the full stream", tmp_path)
        blocked_beats = beats()

        def beat_again() -> bool:
            nonlocal peak_memory
            peak_memory = max(peak_memory, int(transport.client.info("memory")["used_memory"]))
            assert peak_memory < MAXMEMORY, f"Redis used_memory reached {peak_memory} bytes"
            assert stream_payload(transport) <= STREAM_MAX_BYTES
            now = beats()
            return all(float(now[w].get("last_heartbeat", 0)) > float(blocked_beats[w]["last_heartbeat"])
                       for w in WORKERS)

        wait_until(beat_again, "a heartbeat from every blocked worker", tmp_path)
        assert all(procs[w].poll() is None for w in WORKERS)
        entries = transport.client.xrange(transport.keys.experience)
        held = stream_payload(transport)
        assert held == transport.stream_bytes() <= STREAM_MAX_BYTES
        assert held > STREAM_MAX_BYTES // 2  # the bound is what stopped them, not a lack of episodes
        assert transport.client.info("stats")["evicted_keys"] == 0

        procs["trainer"].send_signal(signal.SIGCONT)
        for name in ("trainer", *WORKERS):
            code = procs[name].wait(timeout=TIMEOUT_S)
            assert code == 0, f"{name} exited {code}:\n{(tmp_path / f'{name}.log').read_text()[-3000:]}"
        # Every message held at the pause was consumed (trained on, or acknowledged as stale).
        left = {entry_id for entry_id, _ in transport.client.xrange(transport.keys.experience)}
        assert not left & {entry_id for entry_id, _ in entries}
        assert transport.client.xpending(transport.keys.experience, "trainer")["pending"] == 0
        counts = transport.accounting()
        dropped = sum(v for k, v in counts.items() if k.startswith("dropped_"))
        assert transport.backlog() == 0  # the trainer accounted for every entry at the end
        assert counts["produced"] == counts["consumed"] + dropped, counts
        assert store.is_done() and store.latest_version() == ITERATIONS
        assert len(episode_rows(store)) == ITERATIONS * EPISODES_PER_ITERATION
