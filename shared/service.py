"""Plumbing both services share: graceful stop on signals, retries of transient server errors,
and recording a run failure where every process and the user can read it.

Worker and trainer loops are short sequences of named steps; every Redis or store call in them
goes through `retrying`. A transient error (connection refused/reset, timeouts, 5xx, throttling,
Redis LOADING/BUSY) is waited out with capped, jittered exponential backoff (tenacity) for at most
the configured give-up time; a permanent one (bad credentials, missing bucket, WRONGTYPE, NOGROUP,
OOM, NOAUTH/WRONGPASS) fails at once with `ServerError`, one line naming the server.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from shared.config import ConfigError
from shared.run_files import read_run_nonce
from shared.store import ModelStore, ObjectNotFound, StoreError
from shared.transport import RunTransport, TransportError

T = TypeVar("T")

# Exit statuses of both services. A process that stops because the run failed (its reason is in
# the status key, the store's ip/failed and the log) exits 0: a restart policy that restarts on
# non-zero exits (compose's `restart: on-failure`, Kubernetes' OnFailure) would otherwise start it
# into the same failure again and again. Crashes still exit non-zero and get restarted.
EXIT_OK = 0
EXIT_RUN_FAILED = 0
EXIT_SERVER_ERROR = 1  # Redis or the store refused for good, or stayed away past HOTLAP_RETRY_GIVE_UP_S
EXIT_NOT_SEEDED = 2  # the store holds no run (ip/run.json): nothing to join
EXIT_LEASE = 3  # trainer only: another trainer holds this run's lease, or this one lost it

# Backoff between retries: random in [0, min(cap, base * 2^attempt)] ("full jitter").
RETRY_BASE_S = 0.2
RETRY_CAP_S = 10.0


class StopRequested(Exception):
    """A stop signal arrived while the process was waiting on a server."""


class RunFailed(Exception):
    """The run cannot go on: bad user input, or another process failed the run."""


class ServerError(RunFailed):
    """Redis or the store refused for good, or stayed unreachable past the give-up time.
    The message is one line naming the step, the server (Redis URL without password, or the
    bucket and endpoint) and the error."""


class _stop_requested(stop_base):  # noqa: N801 - tenacity's naming for stop conditions
    """Stop retrying once a stop signal arrived (the first SIGTERM ends the wait)."""

    def __init__(self, loop: ServiceLoop):
        self.loop = loop

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.loop.stop_requested


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, TransportError | StoreError) and error.transient


class ServiceLoop:
    def __init__(self, transport: RunTransport, log: logging.Logger, store: ModelStore, retry_give_up_s: float):
        self.transport = transport
        self.store = store
        self.log = log
        self.stop_requested = False
        self.retry_give_up_s = retry_give_up_s

    def install_signal_handlers(self) -> None:
        """First SIGTERM/SIGINT: finish the current step, then stop. Second: exit at once.
        SIGINT is left ignored when the parent started this process with it ignored."""

        def request_stop(signum: int, frame: FrameType | None) -> None:
            if self.stop_requested:
                raise SystemExit(1)
            self.log.info("signal %d: finishing the current step, then stopping", signum)
            self.stop_requested = True

        signal.signal(signal.SIGTERM, request_stop)
        # An inherited SIG_IGN stays (the Unix convention nohup and background jobs follow): `hotlap
        # train` starts its services so, because the terminal's Ctrl-C is its to handle (it then
        # sends one SIGTERM each; a second Ctrl-C sends another, which exits at once).
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, request_stop)

    def retrying(self, what: str, func: Callable[..., T], *args: Any) -> T:
        """Call `func(*args)`, retrying transient Redis/store errors for up to the give-up time.

        Raises ServerError for a permanent error or when giving up, StopRequested when a stop
        signal arrived meanwhile. A missing object is an answer, not trouble: ObjectNotFound goes
        straight to the caller.
        """

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            self.log.warning("%s failed (%s); retrying in %.1fs", what, error, delay)

        retryer = Retrying(
            retry=retry_if_exception(_is_transient),
            wait=wait_random_exponential(multiplier=RETRY_BASE_S, max=RETRY_CAP_S),
            stop=stop_after_delay(self.retry_give_up_s) | _stop_requested(self),
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retryer(func, *args)
        except ObjectNotFound:
            raise
        except (TransportError, StoreError) as e:
            if self.stop_requested:
                raise StopRequested() from e
            if e.transient:
                raise ServerError(f"{what}: {e} (still failing after {self.retry_give_up_s:g}s; "
                                  f"giving up, HOTLAP_RETRY_GIVE_UP_S)") from e
            raise ServerError(f"{what}: {e}") from e

    def bind_run(self) -> bool:
        """Key the transport by the run identity the seed wrote into the store. False (logged)
        when the store holds no seeded run."""
        try:
            nonce = self.retrying("reading the run identity", read_run_nonce, self.store)
        except ConfigError as e:
            self.log.error("%s", e)
            return False
        self.transport = self.transport.for_run(nonce)
        return True

    def join_run(self) -> int | None:
        """`bind_run` at a process's start: None once bound, else the exit status: EXIT_NOT_SEEDED,
        EXIT_OK (a stop signal came), EXIT_SERVER_ERROR (the store refused or stayed away; there is
        no run identity yet to record the failure under, so it is logged only)."""
        try:
            return None if self.bind_run() else EXIT_NOT_SEEDED
        except StopRequested:
            return EXIT_OK
        except ServerError as e:
            self.log.error("%s", e)
            return EXIT_SERVER_ERROR

    def check_run_not_failed_in_store(self) -> None:
        """A failed run stays failed across restarts, even once Redis forgot it (its keys expire)."""
        reason = self.retrying("reading ip/failed", self.store.failure)
        if reason is not None:
            raise RunFailed(reason)

    def check_run_not_failed(self) -> None:
        status = self.retrying("reading run status", self.transport.status)
        if status is not None and status.state == "failed":
            raise RunFailed(status.reason)

    def record_failure(self, source: str, reason: str) -> None:
        """Fail the whole run visibly (status + error list in Redis, ip/failed in the store)
        instead of a silent crash loop. The first failure recorded is the one that stays."""
        self.log.error("%s", reason)
        try:
            self.transport.report_error(source, reason)
            self.transport.set_status("failed", reason)
        except TransportError as e:
            self.log.warning("could not record the failure in Redis: %s", e)
        try:
            if self.store.failure() is None:
                self.store.mark_failed(reason)
        except StoreError as e:
            self.log.warning("could not record the failure in the store: %s", e)

    def fail_on_server_error(self, source: str, error: ServerError) -> int:
        """One line for a server that refused or stayed away, recorded in Redis and the store when
        Redis is not the server at fault; the process exit code (EXIT_SERVER_ERROR)."""
        if isinstance(error.__cause__, TransportError):
            self.log.error("%s", error)
        else:
            self.record_failure(source, str(error))
        return EXIT_SERVER_ERROR
