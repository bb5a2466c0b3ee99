"""Bad server settings, as processes: `python -m trainer` and `python -m simulator` with wrong S3
credentials, a missing bucket, a wrong Redis password, or Redis gone for longer than the give-up
time. Each process exits non-zero with one ERROR line naming the server (password redacted),
instead of retrying forever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hotlap.seed import seed_store
from shared.store import ModelStore, open_store
from shared.transport import RunTransport
from tests.conftest import S3Credentials, private_redis
from tests.e2e.test_pipeline import tiny_run_files

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 180  # a process still running by then retries forever: the failure this file is about


def start(module: str, tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{module}.log"
    full_env = {**os.environ, "HOTLAP_RUN_ID": "errors", "HOTLAP_WORKER_NAME": "w0", "HOTLAP_SIM_TRACE_LOG": "0",
                "OMP_NUM_THREADS": "1", **env}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module], env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO)
    return proc, log


def finish(proc: subprocess.Popen[bytes], log: Path) -> str:
    try:
        proc.wait(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return log.read_text()


def the_error_line(output: str, returncode: int | None) -> str:
    """The process exited non-zero with exactly one ERROR line and no traceback; that line."""
    assert returncode not in (None, 0), f"exit code {returncode}:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


def test_wrong_s3_credentials(tmp_path: Path, s3_with_auth: S3Credentials, redis_url: str):
    env = dict(HOTLAP_STORE_URL="s3://hotlap-bucket/rl-deepracer", HOTLAP_S3_ENDPOINT_URL=s3_with_auth.endpoint,
               HOTLAP_REDIS_URL=redis_url, HOTLAP_RUN_ID=f"creds-{uuid.uuid4().hex[:8]}",
               AWS_ACCESS_KEY_ID="AKIDNOSUCHKEY", AWS_SECRET_ACCESS_KEY="whatever")
    trainer = start("trainer", tmp_path, **env)
    line = the_error_line(finish(*trainer), trainer[0].returncode)
    assert "InvalidAccessKeyId" in line
    assert f"s3://hotlap-bucket/rl-deepracer at {s3_with_auth.endpoint}" in line
    # A worker reads the run identity from the same store first, and fails the same way.
    worker = start("simulator", tmp_path, **env)
    assert "InvalidAccessKeyId" in the_error_line(finish(*worker), worker[0].returncode)


def test_missing_bucket(tmp_path: Path, s3_endpoint: str, redis_url: str, run_id: str):
    bucket = f"hotlap-missing-{uuid.uuid4().hex[:8]}"
    trainer = start("trainer", tmp_path, HOTLAP_STORE_URL=f"s3://{bucket}/rl-deepracer",
                    HOTLAP_S3_ENDPOINT_URL=s3_endpoint, HOTLAP_REDIS_URL=redis_url, HOTLAP_RUN_ID=run_id)
    line = the_error_line(finish(*trainer), trainer[0].returncode)
    assert "NoSuchBucket" in line and f"s3://{bucket}/rl-deepracer at {s3_endpoint}" in line


def test_wrong_redis_password(tmp_path: Path):
    store_url = f"file://{tmp_path / 'store'}"
    seed_store(ModelStore(open_store(store_url)), tiny_run_files())
    with private_redis(password="the-right-one") as (_, port):
        env = dict(HOTLAP_STORE_URL=store_url, HOTLAP_REDIS_URL=f"redis://:not-the-password@127.0.0.1:{port}/0")
        procs = [start("trainer", tmp_path, **env), start("simulator", tmp_path, **env)]
        for proc, log in procs:
            output = finish(proc, log)
            line = the_error_line(output, proc.returncode)
            assert f"redis://***@127.0.0.1:{port}/0" in line and "invalid username-password" in line
            assert "not-the-password" not in output


@pytest.mark.parametrize("how", ["stopped", "hung"])
def test_redis_gone_past_the_give_up_time(tmp_path: Path, how: str):
    """`stopped`: the server exits, connections are refused at once. `hung`: the server is
    SIGSTOPped, connections stay open and every call runs into the socket timeout instead."""
    store_url = f"file://{tmp_path / 'store'}"
    nonce = seed_store(ModelStore(open_store(store_url)), tiny_run_files()).nonce
    with private_redis() as (server, port):
        url = f"redis://127.0.0.1:{port}/0"
        env = dict(HOTLAP_STORE_URL=store_url, HOTLAP_REDIS_URL=url, HOTLAP_RETRY_GIVE_UP_S="3")
        procs = [start("trainer", tmp_path, **env), start("simulator", tmp_path, **env)]
        transport = RunTransport.from_url(url, "errors", nonce=nonce)
        deadline = time.monotonic() + HANG_GUARD_S
        while not transport.live_workers():  # both at work: the worker heartbeats once it plays
            assert time.monotonic() < deadline and all(p.poll() is None for p, _ in procs), \
                [log.read_text()[-2000:] for _, log in procs]
            time.sleep(0.2)
        if how == "stopped":
            server.terminate()
            server.wait()
        else:
            server.send_signal(signal.SIGSTOP)
        try:
            for proc, log in procs:
                line = the_error_line(finish(proc, log), proc.returncode)
                assert url in line and "giving up" in line
                assert ("timed out" if how == "hung" else "unreachable") in line, line
        finally:
            server.send_signal(signal.SIGCONT)
