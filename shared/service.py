"""Plumbing both services share: graceful stop on signals, retries with capped backoff,
and recording a run failure where every process and the user can read it.

Worker and trainer loops are short sequences of named steps; every Redis or store call in them
goes through `retrying`, so an unreachable server is waited out (logged, backed off) instead of
crashing the process, and a stop signal still ends the wait.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from shared.config import ConfigError
from shared.run_files import read_run_nonce
from shared.store import ModelStore, ObjectNotFound, StoreError
from shared.transport import Backoff, RunTransport, TransportError

T = TypeVar("T")

# Exit statuses of both services. A process that stops because the run failed (its reason is in
# the status key, the store's ip/failed and the log) exits 0: a restart policy that restarts on
# non-zero exits (compose's `restart: on-failure`, Kubernetes' OnFailure) would otherwise start it
# into the same failure again and again. Crashes still exit non-zero and get restarted.
EXIT_OK = 0
EXIT_RUN_FAILED = 0
EXIT_NOT_SEEDED = 2  # the store holds no run (ip/run.json): nothing to join
EXIT_LEASE = 3  # trainer only: another trainer holds this run's lease, or this one lost it


class StopRequested(Exception):
    """A stop signal arrived while the process was waiting on a server."""


class RunFailed(Exception):
    """The run cannot go on: bad user input, or another process failed the run."""


class ServiceLoop:
    def __init__(self, transport: RunTransport, log: logging.Logger, store: ModelStore):
        self.transport = transport
        self.store = store
        self.log = log
        self.stop_requested = False
        self.backoff = Backoff()

    def install_signal_handlers(self) -> None:
        """First SIGTERM/SIGINT: finish the current step, then stop. Second: exit at once."""

        def request_stop(signum: int, frame: FrameType | None) -> None:
            if self.stop_requested:
                raise SystemExit(1)
            self.log.info("signal %d: finishing the current step, then stopping", signum)
            self.stop_requested = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def retrying(self, what: str, func: Callable[..., T], *args: Any) -> T:
        """Redis/store trouble is transient until proven otherwise: back off, log, retry.
        A missing object is an answer, not trouble: ObjectNotFound goes straight to the caller."""
        while True:
            try:
                result = func(*args)
                self.backoff.reset()
                return result
            except ObjectNotFound:
                raise
            except (TransportError, StoreError) as e:
                if self.stop_requested:
                    raise StopRequested() from e
                delay = self.backoff.next_delay()
                self.log.warning("%s failed (%s); retrying in %.1fs", what, e, delay)
                time.sleep(delay)

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
        except TransportError:
            self.log.exception("could not record the failure in Redis")
        try:
            if self.store.failure() is None:
                self.store.mark_failed(reason)
        except StoreError:
            self.log.exception("could not record the failure in the store")
