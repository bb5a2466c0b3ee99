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

from shared.store import ObjectNotFound, StoreError
from shared.transport import Backoff, RunTransport, TransportError

T = TypeVar("T")


class StopRequested(Exception):
    """A stop signal arrived while the process was waiting on a server."""


class RunFailed(Exception):
    """The run cannot go on: bad user input, or another process failed the run."""


class ServiceLoop:
    def __init__(self, transport: RunTransport, log: logging.Logger):
        self.transport = transport
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

    def check_run_not_failed(self) -> None:
        status = self.retrying("reading run status", self.transport.status)
        if status is not None and status.state == "failed":
            raise RunFailed(status.reason)

    def record_failure(self, source: str, reason: str) -> None:
        """Fail the whole run visibly (status + error list) instead of a silent crash loop."""
        self.log.error("%s", reason)
        try:
            self.transport.report_error(source, reason)
            self.transport.set_status("failed", reason)
        except TransportError:
            self.log.exception("could not record the failure in Redis")
