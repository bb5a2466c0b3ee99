"""One trainer per run: a Redis lease with renewal.

The trainer takes `hotlap:{run}:{nonce}:trainer_lease` with SET NX PX before it touches the run
and renews it from a background thread every third of its lifetime. A second trainer finds the
lease held, waits one lease lifetime (the holder may be a trainer that just died) and exits
naming the holder. A trainer that cannot renew in time (paused, cut off from Redis, or its lease
taken over) stops before it publishes anything: `check()` fails once the last renewal is older
than the lease lifetime, by the monotonic clock, even before the renewal thread has noticed —
unless nobody took the expired lease meanwhile (a laptop that slept, a SIGSTOP): then the trainer
takes it again with the same SET NX and goes on, and `take_reacquired()` tells the trainer to
check that no other trainer published while it was away.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time

from shared.transport import RunTransport, TransportError

log = logging.getLogger("hotlap.trainer")

ACQUIRE_POLL_S = 0.5


class LeaseError(RuntimeError):
    """Another trainer holds this run's lease, or this trainer lost it."""


def holder_name() -> str:
    """Who holds the lease, for the message a second trainer prints: host, pid and a random
    token (a restarted container keeps its hostname and often its pid)."""
    return f"host={socket.gethostname()} pid={os.getpid()} token={secrets.token_hex(4)}"


class TrainerLease:
    def __init__(self, transport: RunTransport, lease_s: float, holder: str | None = None):
        self.transport = transport
        self.ttl_ms = int(lease_s * 1000)
        self.lease_s = lease_s
        self.holder = holder or holder_name()
        self._renewed_at = 0.0  # monotonic time of the last successful SET/renewal
        self._lost: str | None = None
        self._reacquired = False
        self._lock = threading.Lock()  # the renewal thread and check() may both try to take it back
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease, waiting at most one lease lifetime (plus a poll) for a dead holder's
        lease to expire. Raises LeaseError naming the holder when it is still held, TransportError
        when Redis fails."""
        deadline = time.monotonic() + self.lease_s + 2 * ACQUIRE_POLL_S
        announced = False
        while True:
            started = time.monotonic()
            current = self.transport.acquire_lease(self.holder, self.ttl_ms)
            if current is None:
                self._renewed_at = started
                log.info("holding the trainer lease (%s, %.0fs, renewed every %.1fs)", self.holder,
                         self.lease_s, self.lease_s / 3)
                return
            if time.monotonic() >= deadline:
                raise LeaseError(f"another trainer holds this run's lease ({current}); one trainer per run: "
                                 f"stop that one first, or wait {self.lease_s:.0f}s after it died")
            if current and not announced:
                log.warning("the trainer lease is held by %s; waiting up to %.0fs for it to expire",
                            current, self.lease_s)
                announced = True
            time.sleep(ACQUIRE_POLL_S)

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="trainer-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            started = time.monotonic()
            try:
                held = self.transport.renew_lease(self.holder, self.ttl_ms)
            except TransportError as e:
                log.warning("renewing the trainer lease failed (%s); retrying", e)
                continue  # check() fails once the lease has run out
            if held:
                self._renewed_at = started
            elif not self._take_back():
                self._lost = self._describe_loss()
                log.error("%s", self._lost)
                return

    def _take_back(self) -> bool:
        """After the lease expired under this holder: take it again if nobody else did (SET NX).
        Redis errors count as not taken (the caller then stops, as it would have)."""
        with self._lock:
            started = time.monotonic()
            try:
                current = self.transport.acquire_lease(self.holder, self.ttl_ms)
            except TransportError:
                return False
            if current == self.holder:  # the other thread took it back already: just renew it
                try:
                    held = self.transport.renew_lease(self.holder, self.ttl_ms)
                except TransportError:
                    return False
                if held:
                    self._renewed_at = started
                return held
            if current is not None:
                return False
            log.warning("the trainer lease was gone %.1fs after its last renewal (was this process paused, the "
                        "machine asleep or Redis restarted?); nobody holds it now, so this trainer takes it back "
                        "(it publishes only if no other trainer published meanwhile)", started - self._renewed_at)
            self._renewed_at, self._reacquired = started, True
            return True

    def take_reacquired(self) -> bool:
        """True once after the lease was taken back (:meth:`_take_back`); the trainer must then
        check that the store has not moved on before it publishes."""
        with self._lock:
            taken, self._reacquired = self._reacquired, False
            return taken

    def _describe_loss(self) -> str:
        try:
            current = self.transport.client.get(self.transport.keys.trainer_lease)
        except Exception:  # noqa: BLE001 - only for the message
            current = None
        now = f"now held by {current.decode()}" if current else "it expired"
        return f"lost the trainer lease ({now}); stopping without publishing"

    def check(self) -> None:
        """Raise LeaseError unless the lease is certainly still ours (call before publishing)."""
        if self._lost:
            raise LeaseError(self._lost)
        age = time.monotonic() - self._renewed_at
        if age >= self.lease_s and not self._take_back():
            raise LeaseError(f"the trainer lease was last renewed {age:.1f}s ago (lease {self.lease_s:.0f}s): "
                             f"another trainer may hold it now; stopping without publishing")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._lost is None:
            try:
                self.transport.release_lease(self.holder)
            except TransportError:
                log.warning("could not release the trainer lease; it expires in %.0fs", self.lease_s)
