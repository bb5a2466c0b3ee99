"""Against a real redis-server (see conftest)."""

import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hotlap.redis_server import find_redis_server
from shared.experience import Experience
from shared.transport import RunTransport, TransportError, redis_from_url


def experience(version: int, episode: int = 0) -> Experience:
    steps = 4
    return Experience(
        run_id="r",
        worker_name="w",
        worker_index=0,
        model_version=version,
        episode=episode,
        observations={"LIDAR": np.ones((steps, 64), np.float32)},
        actions=np.zeros(steps, np.int64),
        log_probs=np.zeros(steps, np.float32),
        values=np.zeros(steps, np.float32),
        rewards=np.ones(steps, np.float32),
        terminated=True,
        bootstrap_value=0.0,
    )


def test_keys_are_namespaced_by_run(transport: RunTransport, run_id: str):
    assert transport.keys.experience == f"hotlap:{run_id}:experience"
    assert transport.keys.model == f"hotlap:{run_id}:model"
    assert transport.keys.worker("h-1") == f"hotlap:{run_id}:workers:h-1"


def test_stream_delivers_acks_and_redelivers_unacked(transport: RunTransport):
    transport.ensure_group()
    transport.ensure_group()  # idempotent
    for episode in range(3):
        transport.push_experience(experience(version=2, episode=episode))
    first = transport.read_experience("trainer", count=10)
    assert [d.experience.episode for d in first if d.experience] == [0, 1, 2]
    assert all(d.experience and d.experience.model_version == 2 for d in first)
    # Nothing new, but the unacked ones are still pending for this consumer (a restarted trainer).
    assert transport.read_experience("trainer", count=10, block_ms=10) == []
    pending = transport.read_experience("trainer", count=2, pending_after=b"0")
    assert [d.entry_id for d in pending] == [d.entry_id for d in first[:2]]
    rest = transport.read_experience("trainer", count=10, pending_after=pending[-1].entry_id)
    assert [d.entry_id for d in rest] == [first[2].entry_id]  # a cursor: nothing delivered twice
    transport.acknowledge([d.entry_id for d in first])
    assert transport.read_experience("trainer", count=10, pending_after=b"0") == []
    assert transport.backlog() == 0


def test_corrupt_entry_is_reported_not_raised(transport: RunTransport):
    transport.ensure_group()
    transport.client.xadd(transport.keys.experience, {"header": b"{not json", "payload": b""})
    transport.push_experience(experience(version=0))
    deliveries = transport.read_experience("trainer", count=10)
    assert deliveries[0].experience is None and "JSON" in (deliveries[0].error or "")
    assert deliveries[1].experience is not None


def test_version_announcement_and_pubsub(transport: RunTransport):
    assert transport.latest_version() is None
    pubsub = transport.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(transport.keys.model)
    time.sleep(0.05)
    transport.announce_version(4)
    assert transport.latest_version() == 4
    message = None
    for _ in range(50):
        message = pubsub.get_message(timeout=0.1)
        if message:
            break
    assert message is not None and int(message["data"]) == 4


def test_tickets_hand_out_exactly_the_quota(transport: RunTransport):
    assert transport.claim_ticket(0) == -1  # not opened yet
    transport.open_tickets(0, 3)
    claims = [transport.claim_ticket(0) for _ in range(5)]
    assert claims == [1, 2, 3, 0, 0]
    transport.reissue_tickets(0, received=1)  # two episodes were lost with their worker
    assert [transport.claim_ticket(0) for _ in range(3)] == [2, 3, 0]
    transport.open_tickets(0, 3)  # re-opening keeps what was claimed
    assert transport.claim_ticket(0) == 0


def test_status_progress_heartbeats_and_worker_indexes(transport: RunTransport):
    assert transport.status() is None
    transport.set_status("failed", "reward_function.py: boom")
    status = transport.status()
    assert status is not None and status.state == "failed" and status.finished and "boom" in status.reason
    with pytest.raises(ValueError):
        transport.set_status("exploded")
    assert transport.register_worker("a") == 0
    assert transport.register_worker("b") == 1
    assert transport.register_worker("a") == 0
    transport.heartbeat("a", {"version": 3}, ttl_s=5)
    assert transport.live_workers()["a"]["version"] == "3"
    assert 0 < transport.client.ttl(transport.keys.worker("a")) <= 5
    transport.set_progress({"iteration": 2})
    assert transport.progress() == {"iteration": "2"}


def test_unreachable_server_raises_transport_error_quickly():
    port_nobody_listens = 1
    transport = RunTransport.from_url(f"redis://127.0.0.1:{port_nobody_listens}/0", "x")
    started = time.monotonic()
    with pytest.raises(TransportError, match="unreachable"):
        transport.latest_version()
    assert time.monotonic() - started < 30


def test_a_server_that_never_answers_times_out_as_a_transient_error():
    """A listening socket that accepts connections (the kernel's backlog) and never replies: the
    call ends at the socket timeout with a transient "timed out" error, not a hang."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:
        port = silent.getsockname()[1]
        transport = RunTransport(redis_from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.5), "x")
        with pytest.raises(TransportError, match="timed out") as info:
            transport.latest_version()
    assert info.value.transient and f"redis://127.0.0.1:{port}/0" in str(info.value)


def test_client_recovers_after_redis_restart(tmp_path):
    """Kill the server, start it again on the same port: the same transport works again."""
    from hotlap.redis_server import free_port

    port = free_port()
    cmd = [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(tmp_path),
        "--appendonly",
        "yes",
        "--save",
        "",
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    transport = RunTransport.from_url(f"redis://127.0.0.1:{port}/0", "restart")
    while True:
        try:
            transport.announce_version(7)
            break
        except TransportError as e:
            assert e.transient, e
            time.sleep(0.05)
    server.terminate()
    server.wait()
    with pytest.raises(TransportError):
        transport.latest_version()
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                assert transport.latest_version() == 7  # append-only file kept it
                break
            except TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("transport did not recover after the restart")
    finally:
        server.terminate()
        server.wait()


def test_released_tickets_can_be_claimed_again(transport: RunTransport):
    transport.open_tickets(1, 2)
    assert [transport.claim_ticket(1), transport.claim_ticket(1), transport.claim_ticket(1)] == [1, 2, 0]
    transport.release_tickets(1, 1)
    assert transport.claim_ticket(1) == 2


def test_run_state_reads_status_and_version_together(transport: RunTransport):
    assert transport.run_state() == (None, None)
    transport.set_status("running")
    transport.announce_version(2)
    status, version = transport.run_state()
    assert status is not None and status.state == "running" and version == 2


# ------------------------------------------------------------ run identity and lifecycle (issue 7)


def test_runs_with_the_same_id_but_another_nonce_share_no_key(redis_url: str, run_id: str):
    """Two runs with one run id (a new model prefix) on one Redis: the second inherits nothing."""
    first = RunTransport.from_url(redis_url, run_id, nonce="aaaa")
    second = RunTransport.from_url(redis_url, run_id, nonce="bbbb")
    assert first.keys.status == f"hotlap:{run_id}:aaaa:status"
    first.set_status("done")
    first.open_tickets(0, 2)
    assert [first.claim_ticket(0), first.claim_ticket(0)] == [1, 2]
    assert first.register_worker("w") == 0 and first.register_worker("x") == 1
    first.announce_version(3)

    assert second.status() is None and second.latest_version() is None
    second.open_tickets(0, 2)
    assert second.claim_ticket(0) == 1  # the first run's claims do not count
    assert second.register_worker("x") == 0  # indexes start at 0 again
    assert second.set_status("running") == "running"


def test_a_finished_run_stays_finished(redis_url: str, run_id: str):
    """No process can set a failed (or done) run back to running, nor replace its reason."""
    transport = RunTransport.from_url(redis_url, run_id, nonce="cccc")
    assert transport.set_status("running") == "running"
    assert transport.set_status("failed", "reward_function.py:3: KeyError") == "failed"
    assert transport.set_status("running") == "failed"
    assert transport.set_status("starting") == "failed"
    assert transport.set_status("failed", "a later, different reason") == "failed"
    status = transport.status()
    assert status is not None and status.state == "failed" and status.reason == "reward_function.py:3: KeyError"

    done = RunTransport.from_url(redis_url, run_id, nonce="dddd")
    done.set_status("done")
    assert done.set_status("running") == "done"


def test_a_finished_runs_keys_expire(redis_url: str, run_id: str):
    transport = RunTransport.from_url(redis_url, run_id, nonce="eeee", finished_ttl_s=600)
    other_run = RunTransport.from_url(redis_url, run_id, nonce="ffff", finished_ttl_s=600)
    transport.set_status("running")
    transport.ensure_group()
    transport.announce_version(1)
    transport.open_tickets(1, 4)
    transport.register_worker("w")
    transport.report_error("w", "boom")
    other_run.set_status("running")
    keys = list(transport.client.scan_iter(match=transport.keys.pattern))
    assert len(keys) >= 6
    heartbeat = transport.keys.worker("w").encode()  # registering beats once: a heartbeat has its own TTL
    assert all(transport.client.ttl(k) == -1 for k in keys if k != heartbeat)  # a running run's keys never expire

    transport.set_status("failed", "boom")
    ttls = {k: transport.client.ttl(k) for k in transport.client.scan_iter(match=transport.keys.pattern)}
    assert set(ttls) == set(keys) and all(0 < t <= 600 for t in ttls.values()), ttls
    assert transport.client.ttl(other_run.keys.status) == -1  # another run is left alone


def test_trainer_lease_is_exclusive_renewable_and_released_by_its_holder_only(transport: RunTransport):
    assert transport.acquire_lease("host=a pid=1 token=x", 5000) is None
    assert transport.acquire_lease("host=b pid=2 token=y", 5000) == "host=a pid=1 token=x"
    assert transport.renew_lease("host=a pid=1 token=x", 5000)
    assert not transport.renew_lease("host=b pid=2 token=y", 5000)
    transport.release_lease("host=b pid=2 token=y")  # not the holder: no effect
    assert transport.acquire_lease("host=b pid=2 token=y", 5000) == "host=a pid=1 token=x"
    transport.release_lease("host=a pid=1 token=x")
    assert transport.acquire_lease("host=b pid=2 token=y", 200) is None
    time.sleep(0.4)  # b stopped renewing: its lease expires
    assert not transport.renew_lease("host=b pid=2 token=y", 200)
    assert transport.acquire_lease("host=a pid=1 token=x", 5000) is None
def test_accounting_counts_every_message_once(transport: RunTransport):
    """produced on push, consumed or dropped_<reason> with the ack (one transaction), and nothing is
    accepted once the run is over, so a final drop_remaining leaves produced = consumed + dropped."""
    transport.ensure_group()
    for episode in range(5):
        assert transport.push_experience(experience(version=0, episode=episode)) is not None
    first = transport.read_experience("trainer", count=3)
    transport.acknowledge([d.entry_id for d in first[:2]])
    transport.acknowledge([first[2].entry_id], "dropped_invalid")
    with pytest.raises(ValueError):
        transport.acknowledge([first[2].entry_id], "dropped_because")
    transport.set_status("done")
    assert transport.push_experience(experience(version=0, episode=9)) is None  # too late: not produced
    assert transport.drop_remaining("stale") == 2  # one delivered-but-unacked, one never read
    assert transport.backlog() == 0
    assert transport.read_experience("trainer", count=10, pending_after=b"0") == []  # nothing left pending
    counts = transport.accounting()
    assert counts == {"produced": 5, "consumed": 2, "dropped_stale": 2, "dropped_corrupt": 0,
                      "dropped_oversize": 0, "dropped_invalid": 1, "dropped_over_cap": 0, "reissued": 0,
                      "chunks_produced": 0, "chunks_consumed": 0, "chunks_dropped": 0}


def test_accounting_counts_async_chunks_as_chunks(transport: RunTransport):
    """An async chunk of a running episode (extra.final_chunk false) is a message like any other
    (produced = consumed + dropped) and is also counted as a chunk, read from the entry's own header
    when it is added and when it is acknowledged, so whole episodes = produced - chunks_produced."""
    transport.ensure_group()
    chunk = experience(version=0, episode=1)
    chunk.extra = {"final_chunk": False}
    ends = experience(version=0, episode=1)
    ends.extra = {"final_chunk": True, "episode_reward": 8.0, "episode_steps": 8}
    for exp in (chunk, chunk, ends, experience(version=0, episode=2)):
        assert transport.push_experience(exp) is not None
    transport.client.xadd(transport.keys.experience, {b"header": b"{not json", b"payload": b""})  # no chunk
    first, second, third, fourth, broken = transport.read_experience("trainer", count=10)
    transport.acknowledge([first.entry_id, third.entry_id, fourth.entry_id])
    transport.acknowledge([second.entry_id, broken.entry_id], "dropped_stale")
    counts = transport.accounting()
    assert (counts["produced"], counts["consumed"], counts["dropped_stale"]) == (4, 3, 2)  # the xadd was no push
    assert (counts["chunks_produced"], counts["chunks_consumed"], counts["chunks_dropped"]) == (2, 1, 1)


def test_reissued_tickets_are_counted(transport: RunTransport):
    transport.open_tickets(0, 4)
    for _ in range(4):
        transport.claim_ticket(0)
    assert transport.reissue_tickets(0, received=1) == 3
    assert transport.reissue_tickets(0, received=1) == 0  # nothing claimed since: nothing to re-issue
    assert transport.accounting()["reissued"] == 3


def test_the_redis_url_in_messages_has_no_password(redis_url: str):
    transport = RunTransport.from_url(redis_url.replace("redis://", "redis://:hunter2@"), "x")
    assert "hunter2" not in transport.url and "***@" in transport.url


def test_worker_indexes_are_kept_by_name_and_reused_once_free(transport: RunTransport):
    """deepracer-utils reads worker indexes 0-9: a restarted worker keeps its index, a new one takes
    the lowest index no live worker holds (its heartbeat ran out), instead of counting up forever."""
    assert [transport.register_worker(name) for name in ("a", "b", "c")] == [0, 1, 2]
    assert transport.register_worker("b") == 1  # restarted while its heartbeat lives: same index
    transport.client.delete(transport.keys.worker("b"))  # b's heartbeat ran out
    assert transport.register_worker("d") == 1  # a recreated container takes b's free index
    assert transport.register_worker("b") == 3  # b back later: 1 is d's now, so the lowest free one
    for name in ("a", "c"):
        transport.client.delete(transport.keys.worker(name))
    assert transport.register_worker("e") == 0
    assert transport.register_worker("a") == 2  # 0 is e's; a's old 0 is gone, c's 2 is free


def test_workers_registering_at_once_never_share_an_index(redis_url: str, run_id: str):
    """12 workers start together (each on its own connection): indexes 0..11, each once; past 10
    live workers the indexes go on from 10 (docs/compatibility.md)."""
    def register(name: str) -> int:
        return RunTransport.from_url(redis_url, run_id).register_worker(name)

    with ThreadPoolExecutor(12) as pool:
        indexes = list(pool.map(register, [f"w{i}" for i in range(12)]))
    assert sorted(indexes) == list(range(12))


def test_an_earlier_sessions_accounting_is_carried_once(transport: RunTransport):
    """A run resumed on a fresh Redis adds logs/accounting.json's counters once; a restarted trainer
    on the same Redis (the counters survived) adds nothing."""
    transport.ensure_group()
    assert transport.push_experience(experience(version=0, episode=0)) is not None  # this session's
    earlier = {"produced": 8, "consumed": 6, "dropped_stale": 2, "chunks_produced": 1}
    assert transport.carry_accounting(earlier)
    assert not transport.carry_accounting(earlier)
    counts = transport.accounting()
    assert counts["produced"] == 9 and counts["consumed"] == 6 and counts["dropped_stale"] == 2
    assert counts["chunks_produced"] == 1 and "carried" not in counts
