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
from contextlib import contextmanager
from dataclasses import dataclass
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
    with private_redis() as (_, port):
        yield f"redis://127.0.0.1:{port}/0"


@contextmanager
def private_redis(*args: str, password: str | None = None) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A redis-server of the test's own (extra `args` such as --maxmemory), ready when entered."""
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="hotlap-test-redis-")
    auth = ["--requirepass", password] if password else []
    proc = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir, *auth, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = RunTransport.from_url(f"redis://:{password or ''}@127.0.0.1:{port}/0", "probe")
    deadline = time.monotonic() + 10
    while True:
        try:
            probe.ping()
            break
        except TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
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


@dataclass(frozen=True)
class S3Credentials:
    endpoint: str
    access_key_id: str  # a real IAM user of that server, with no permissions at all
    secret_access_key: str


@pytest.fixture(scope="session")
def s3_with_auth() -> Iterator[S3Credentials]:
    """A private moto_server that checks credentials (as MinIO and AWS do), with one IAM user who
    may do nothing: for AccessDenied, InvalidAccessKeyId and SignatureDoesNotMatch."""
    import boto3

    moto = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    port = _free_port()
    # The first two requests (creating the user and its key) go unauthenticated; every later one is checked.
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="2")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_http(url, proc)
        iam = boto3.client("iam", endpoint_url=url, aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
                           region_name="us-east-1")
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        yield S3Credentials(url, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the server accepts connections (a TCP probe: an HTTP request would count as an action)."""
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)


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
