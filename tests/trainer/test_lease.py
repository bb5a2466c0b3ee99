"""trainer/lease.py against a real redis-server: a lease that expired while its holder was away is
taken back only when nobody else took it, and the trainer is told so once."""

from __future__ import annotations

import time

import pytest

from shared.transport import RunTransport
from trainer.lease import LeaseError, TrainerLease

LEASE_S = 1.0


def _expire(lease: TrainerLease) -> None:
    """As if the holder slept past its lease: no renewal thread runs, Redis lets the key expire."""
    time.sleep(LEASE_S + 0.3)
    assert not lease.transport.client.exists(lease.transport.keys.trainer_lease)


def test_an_expired_lease_nobody_took_is_taken_back_once(transport: RunTransport,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    lease = TrainerLease(transport, LEASE_S, holder="host=a pid=1 token=x")
    lease.acquire()
    assert not lease.take_reacquired()
    _expire(lease)
    with caplog.at_level("WARNING", logger="hotlap.trainer"):
        lease.check()  # does not raise: nobody else holds the run
    assert "nobody holds it now, so this trainer takes it back" in caplog.text
    assert transport.client.get(transport.keys.trainer_lease) == b"host=a pid=1 token=x"
    assert lease.take_reacquired() and not lease.take_reacquired()  # told once
    lease.check()  # fresh again


def test_an_expired_lease_another_trainer_took_stays_lost(transport: RunTransport) -> None:
    lease = TrainerLease(transport, LEASE_S, holder="host=a pid=1 token=x")
    lease.acquire()
    _expire(lease)
    assert transport.acquire_lease("host=b pid=2 token=y", 10_000) is None  # a second trainer took over
    with pytest.raises(LeaseError, match="last renewed"):
        lease.check()
    assert not lease.take_reacquired()
    assert transport.client.get(transport.keys.trainer_lease) == b"host=b pid=2 token=y"


def test_the_renewal_thread_takes_an_expired_lease_back(transport: RunTransport) -> None:
    """The renewal thread wakes after the pause, finds its key gone and takes it back itself."""
    lease = TrainerLease(transport, LEASE_S, holder="host=a pid=1 token=x")
    lease.acquire()
    transport.client.delete(transport.keys.trainer_lease)  # expired while the holder was away
    lease.start_renewing()
    try:
        deadline = time.monotonic() + 5
        while not lease.take_reacquired():
            assert time.monotonic() < deadline, "the renewal thread never took the lease back"
            time.sleep(0.05)
        lease.check()
        assert transport.client.get(transport.keys.trainer_lease) == b"host=a pid=1 token=x"
    finally:
        lease.release()
