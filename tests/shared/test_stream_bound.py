"""The experience stream's byte bound: one atomic check-and-add in Redis (against a real redis-server)."""

import threading

import numpy as np

from shared.experience import Experience
from shared.transport import STREAM_FULL, RunTransport


def message(episode: int = 0, steps: int = 4) -> dict[bytes, bytes]:
    return Experience(
        run_id="r", worker_name="w", worker_index=0, model_version=0, episode=episode,
        observations={"LIDAR": np.random.default_rng(episode).random((steps, 64), np.float32)},
        actions=np.zeros(steps, np.int64), log_probs=np.zeros(steps, np.float32),
        values=np.zeros(steps, np.float32), rewards=np.ones(steps, np.float32),
        terminated=True, bootstrap_value=0.0,
    ).encode()


def size(fields: dict[bytes, bytes]) -> int:
    return sum(len(k) + len(v) for k, v in fields.items())


def stream_payload_bytes(transport: RunTransport) -> int:
    """Measured from the entries themselves, not from the counter under test."""
    return sum(size(fields) for _id, fields in transport.client.xrange(transport.keys.experience))


def test_concurrent_producers_never_exceed_the_byte_bound(redis_url: str, run_id: str):
    fields = message()
    fits = 5
    bound = fits * size(fields) + size(fields) // 2  # room for 5 messages, not 6
    producers = 24
    start = threading.Barrier(producers)
    accepted: list[bytes] = []
    lock = threading.Lock()

    def produce() -> None:
        transport = RunTransport.from_url(redis_url, run_id, stream_max_bytes=bound)  # own connection
        transport.ping()
        start.wait()
        for _ in range(3):  # each producer tries a few times, all at once
            entry_id = transport.push_fields(fields)
            if entry_id != STREAM_FULL:
                with lock:
                    accepted.append(entry_id)

    threads = [threading.Thread(target=produce) for _ in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    transport = RunTransport.from_url(redis_url, run_id, stream_max_bytes=bound)
    assert len(accepted) == fits
    assert stream_payload_bytes(transport) == transport.stream_bytes() == fits * size(fields) <= bound


def test_acknowledging_frees_exactly_the_acked_bytes_once(redis_url: str, run_id: str):
    fields = message()
    transport = RunTransport.from_url(redis_url, run_id, stream_max_bytes=2 * size(fields))
    transport.ensure_group()
    assert transport.push_fields(fields) not in (None, STREAM_FULL)
    assert transport.push_fields(message(1)) not in (None, STREAM_FULL)
    assert transport.push_fields(message(2)) == STREAM_FULL
    first, second = transport.read_experience("trainer", count=10)
    transport.acknowledge([first.entry_id])
    transport.acknowledge([first.entry_id])  # a repeated ack frees nothing twice
    assert transport.stream_bytes() == stream_payload_bytes(transport) == size(message(1))
    assert transport.push_fields(message(2)) not in (None, STREAM_FULL)  # room again
    transport.acknowledge([second.entry_id])
    assert transport.stream_bytes() == stream_payload_bytes(transport) == size(message(2))
    assert transport.accounting()["produced"] == 3
    assert transport.accounting()["consumed"] == 2  # the repeated ack counted once


def test_nothing_enters_the_stream_once_the_run_is_over(redis_url: str, run_id: str):
    transport = RunTransport.from_url(redis_url, run_id)
    transport.set_status("done")
    assert transport.push_fields(message()) is None
    assert transport.stream_bytes() == 0


def test_a_message_larger_than_the_bound_fits_an_empty_stream(redis_url: str, run_id: str):
    big = message(steps=64)
    transport = RunTransport.from_url(redis_url, run_id, stream_max_bytes=size(big) // 4)
    assert transport.push_fields(big) not in (None, STREAM_FULL)  # else it would wait forever
    assert transport.push_fields(message()) == STREAM_FULL
