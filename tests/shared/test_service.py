"""`ServiceLoop.retrying` against real servers: transient errors are waited out (up to the give-up
time), permanent ones fail at once with one line naming the server, password redacted."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from shared.service import ServerError, ServiceLoop
from shared.store import LocalStore, ModelStore, S3Store
from shared.transport import RunTransport, redis_from_url
from tests.conftest import S3Credentials, private_redis

GIVE_UP_S = 1.0


def loop(transport: RunTransport, give_up_s: float = GIVE_UP_S) -> ServiceLoop:
    unused_store = ModelStore(LocalStore(Path("/nonexistent/hotlap-test-service")))  # retrying never touches it
    return ServiceLoop(transport, logging.getLogger("test.service"), unused_store, give_up_s)


def counted(func: Callable[..., Any]) -> tuple[Callable[..., Any], list[int]]:
    calls: list[int] = []

    def call(*args: Any) -> Any:
        calls.append(1)
        return func(*args)

    return call, calls


def assert_fails_at_once(service: ServiceLoop, func: Callable[..., Any], *expected: str) -> str:
    call, calls = counted(func)
    with pytest.raises(ServerError) as info:
        service.retrying("doing it", call)
    message = str(info.value)
    assert len(calls) == 1, f"a permanent error was retried: {message}"
    assert "\n" not in message
    for text in expected:
        assert text in message
    return message


def test_wrongtype_and_nogroup_fail_at_once(transport: RunTransport):
    service = loop(transport)
    transport.client.set(transport.keys.status, "not a hash")
    assert_fails_at_once(service, transport.status, "WRONGTYPE", transport.url)
    # Reading the stream before the trainer created its group.
    assert_fails_at_once(service, lambda: transport.read_experience("trainer", 1, 10), "NOGROUP", transport.url)


def test_wrong_or_missing_password_and_oom_fail_at_once():
    # redis-py names WRONGPASS/NOAUTH replies AuthenticationError and drops the code from the text.
    with private_redis("--maxmemory", "1", password="s3cret-pw") as (_, port):
        wrong = RunTransport.from_url(f"redis://:not-it@127.0.0.1:{port}/0", "r")
        message = assert_fails_at_once(loop(wrong), wrong.ping, "invalid username-password", f"redis://***@127.0.0.1:{port}/0")
        assert "not-it" not in message
        nopass = RunTransport.from_url(f"redis://127.0.0.1:{port}/0", "r")
        assert_fails_at_once(loop(nopass), nopass.ping, "AuthenticationError", f"redis://127.0.0.1:{port}/0")
        right = RunTransport.from_url(f"redis://:s3cret-pw@127.0.0.1:{port}/0", "r")
        message = assert_fails_at_once(loop(right), lambda: right.announce_version(1), "OutOfMemoryError", "maxmemory")
        assert "s3cret-pw" not in message


def test_busy_server_is_waited_out():
    """A script that runs for a while makes Redis answer BUSY: transient, retried until it is done."""
    with private_redis("--lua-time-limit", "50") as (_, port):
        transport = RunTransport.from_url(f"redis://127.0.0.1:{port}/0", "r")
        script = "local t = redis.call('TIME'); local s = tonumber(t[1]) " \
                 "while tonumber(redis.call('TIME')[1]) < s + 2 do end return 1"
        blocker = threading.Thread(target=transport.client.eval, args=(script, 0))
        blocker.start()
        time.sleep(0.3)  # the script is past lua-time-limit: every other command gets BUSY now
        call, calls = counted(transport.latest_version)
        try:
            assert loop(transport, give_up_s=30).retrying("reading the version", call) is None
        finally:
            blocker.join()
        assert len(calls) > 1, "the BUSY reply was never seen"


def test_redis_gone_past_the_give_up_time_fails_naming_the_url():
    with private_redis() as (server, port):
        transport = RunTransport.from_url(f"redis://127.0.0.1:{port}/0", "r")
        transport.ping()
        server.terminate()
        server.wait()
        call, calls = counted(transport.ping)
        with pytest.raises(ServerError, match="giving up") as info:
            loop(transport).retrying("pinging", call)
    assert f"redis://127.0.0.1:{port}/0" in str(info.value) and len(calls) > 1


@contextmanager
def stopped(server: subprocess.Popen[bytes]) -> Iterator[None]:
    """The server SIGSTOPped: connections stay open and nothing ever answers (a hung host, a
    paused VM, a partition that drops packets): every call runs into the socket timeout."""
    server.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.send_signal(signal.SIGCONT)


def test_redis_that_stops_answering_past_the_give_up_time_fails_naming_the_url():
    with private_redis() as (server, port):
        url = f"redis://127.0.0.1:{port}/0"
        transport = RunTransport(redis_from_url(url, socket_timeout=0.3), "r")
        transport.ping()
        call, calls = counted(transport.ping)
        with stopped(server), pytest.raises(ServerError, match="giving up") as info:
            loop(transport).retrying("pinging", call)
    assert url in str(info.value) and "timed out" in str(info.value) and len(calls) > 1


def test_redis_that_stops_answering_for_a_while_is_waited_out():
    """Timeouts are transient: the call is retried until the server answers again."""
    with private_redis() as (server, port):
        transport = RunTransport(redis_from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.3), "r")
        transport.announce_version(4)
        call, calls = counted(transport.latest_version)
        with stopped(server):
            resume = threading.Timer(2.0, server.send_signal, (signal.SIGCONT,))
            resume.start()
            try:
                assert loop(transport, give_up_s=60).retrying("reading the version", call) == 4
            finally:
                resume.cancel()
        assert len(calls) > 1, "the server answered before it was stopped"


def s3_store(endpoint: str, bucket: str, key_id: str = "hotlap-test", secret: str = "hotlap-test-secret") -> ModelStore:
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
                          region_name="us-east-1", config=Config(retries={"max_attempts": 1}))
    return ModelStore(S3Store(bucket, "prefix", endpoint_url=endpoint, client=client))


def test_missing_bucket_fails_at_once(s3_endpoint: str, transport: RunTransport):
    store = s3_store(s3_endpoint, "hotlap-no-such-bucket")
    assert_fails_at_once(loop(transport), lambda: store.get_text("training_params.yaml"),
                         "NoSuchBucket", "s3://hotlap-no-such-bucket/prefix", s3_endpoint)


@pytest.mark.parametrize("credentials, code", [
    ("unknown key", "InvalidAccessKeyId"),
    ("wrong secret", "SignatureDoesNotMatch"),
    ("no permission", "AccessDenied"),
])
def test_bad_credentials_fail_at_once(s3_with_auth: S3Credentials, transport: RunTransport, credentials: str,
                                      code: str):
    key_id, secret = {
        "unknown key": ("AKIDNOSUCHKEY", "whatever"),
        "wrong secret": (s3_with_auth.access_key_id, "not-the-secret"),
        "no permission": (s3_with_auth.access_key_id, s3_with_auth.secret_access_key),
    }[credentials]
    store = s3_store(s3_with_auth.endpoint, "hotlap-bucket", key_id, secret)
    assert_fails_at_once(loop(transport), lambda: store.get_text("training_params.yaml"), code,
                         "s3://hotlap-bucket/prefix", s3_with_auth.endpoint)


def test_unreachable_s3_is_retried_then_given_up(transport: RunTransport):
    from hotlap.redis_server import free_port

    store = s3_store(f"http://127.0.0.1:{free_port()}", "hotlap-bucket")
    call, calls = counted(lambda: store.get_text("training_params.yaml"))
    with pytest.raises(ServerError, match="giving up"):
        loop(transport).retrying("reading", call)
    assert len(calls) > 1
