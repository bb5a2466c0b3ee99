"""Real servers for the tests: a redis-server and an S3-compatible server (moto_server) over HTTP.

`infra/test.sh` (and so CI) starts both and passes their URLs in HOTLAP_TEST_REDIS_URL and
HOTLAP_TEST_S3_ENDPOINT; when those are unset the fixtures start private ones themselves.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotlap.redis_server import find_redis_server
from shared.transport import RunTransport, TransportError

REPO_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    external = os.environ.get("HOTLAP_TEST_REDIS_URL")
    if external:
        yield external
        return
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="hotlap-test-redis-")
    proc = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            RunTransport.from_url(url, "probe").ping()
            break
        except TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "hotlap-test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "hotlap-test-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    external = os.environ.get("HOTLAP_TEST_S3_ENDPOINT")
    if external:
        yield external
        return
    moto = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    port = _free_port()
    proc = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def run_id() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def transport(redis_url: str, run_id: str) -> RunTransport:
    return RunTransport.from_url(redis_url, run_id)


@pytest.fixture
def s3_store_url(s3_endpoint: str) -> str:
    """A fresh bucket (created by the code under test) and model prefix per test."""
    return f"s3://hotlap-test-{uuid.uuid4().hex[:12]}/rl-deepracer-sagemaker"


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small models on a shared CPU: one intra-op thread is faster and does not fight other processes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
