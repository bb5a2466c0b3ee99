"""Many producers, one Redis, one consumer: where one Redis (and one reader) stops keeping up.

    .venv/bin/python bench/scale.py              # 8, 64, 256 producers: at 0.5 msg/s each, then as fast as they can
    .venv/bin/python bench/scale.py --producers 256 1024 --rates 1 --seconds 30

No simulation: every producer sends real hotlap experience messages (`Experience.encode` of a
`--steps`-step episode of simulator-rendered camera frames and lidar, see bench/transport.py), encoded
once up front so that the load generator's CPU goes into XADDs, not into compressing. Each producer
is one thread with its own connection; the threads are spread over `--processes` processes (256
producers on a 2-core machine: 4 processes x 64 threads). Like a worker, a producer checks the
stream's room before each add and waits while it is full: `--bound bytes` (the default, what workers do)
adds with one atomic check-and-add under `--backlog` messages' bytes, `--bound count` checks the length
first (the old check: N producers overshoot by up to N; the table's peak backlog shows it); it paces itself to
each of `--rates` messages per second (open loop, random phase, no catch-up bursts; 0.5 is about
what a 4-car hotlap worker produces with 100-step episodes), and 0 means closed loop: every producer
adds as fast as Redis answers, which finds the most one Redis and one reader move.

One consumer (the trainer's reader: `RunTransport.read_experience` + decode + `acknowledge`) reads
for `--seconds`. Reported per producer count: offered and achieved messages/s and MB/s into Redis,
p50/p99 latency of one XADD as the producer sees it, the share of producer time spent waiting on
back-pressure, Redis used_memory_peak, and the CPU seconds per wall second of redis-server and the
consumer, which say which of the two saturates first.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import machine, machine_line, percentile, print_table, write_result  # noqa: E402
from bench.transport import make_experience, realistic_episode  # noqa: E402
from hotlap.redis_server import redis_server  # noqa: E402
from shared.transport import STREAM_FULL, RunTransport  # noqa: E402

MESSAGE_VARIANTS = 4
READ_COUNT = 16


def producer_thread(url: str, run_id: str, messages: list[dict[bytes, bytes]], rate: float, backlog: int,
                    bound: str, stop: Event, out: dict[str, Any]) -> None:
    transport = RunTransport.from_url(url, run_id, stream_max_bytes=backlog * max(map(message_bytes, messages)))
    client, key = transport.client, transport.keys.experience
    period = 1.0 / rate if rate > 0 else 0.0
    next_at = time.perf_counter() + random.uniform(0, period)
    latencies, sent, blocked = [], 0, 0.0
    while not stop.is_set():
        if period:
            delay = next_at - time.perf_counter()
            if delay > 0:
                stop.wait(delay)
                continue
            next_at = max(next_at + period, time.perf_counter())  # late: no burst to catch up
        waited = time.perf_counter()
        message = messages[sent % len(messages)]
        if bound == "count":  # the old worker check: a length read, then an add (racy across producers)
            while client.xlen(key) >= backlog and not stop.is_set():
                time.sleep(0.005)
            started = time.perf_counter()
            client.xadd(key, message)
        else:  # what a worker does now: one atomic check-and-add under a byte bound
            accepted = False
            while not accepted and not stop.is_set():
                started = time.perf_counter()  # the accepted attempt's latency; refusals count as blocked
                accepted = transport.push_fields(message) != STREAM_FULL
                if not accepted:
                    time.sleep(0.005)
            if not accepted:
                break
        blocked += started - waited
        latencies.append(time.perf_counter() - started)
        sent += 1
    out.update(latencies=latencies, sent=sent, blocked=blocked)


def message_bytes(fields: dict[bytes, bytes]) -> int:
    """A message's size as the stream's byte bound counts it (shared.transport._PUSH_BOUNDED)."""
    return sum(len(k) + len(v) for k, v in fields.items())


def producer_process(url: str, run_id: str, threads: int, messages: list[dict[bytes, bytes]], rate: float,
                     backlog: int, bound: str, start: Event, stop: Event, results: Queue) -> None:
    outs: list[dict[str, Any]] = [{} for _ in range(threads)]
    workers = [threading.Thread(target=producer_thread,
                                args=(url, run_id, messages, rate, backlog, bound, stop, out))
               for out in outs]
    start.wait()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put([(o["sent"], o["blocked"], o["latencies"]) for o in outs])


def redis_counters(client: Any) -> tuple[float, int]:
    cpu = client.info("cpu")
    stats = client.info("stats")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), int(stats["total_net_input_bytes"])


def measure(url: str, producers: int, processes: int, messages: list[dict[bytes, bytes]], rate: float,
            args: argparse.Namespace) -> dict[str, Any]:
    run_id = f"scale-{producers}"
    transport = RunTransport.from_url(url, run_id)
    transport.ensure_group()
    ctx = mp.get_context("fork")
    start, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    per_process = [producers // processes + (1 if i < producers % processes else 0) for i in range(processes)]
    procs = [ctx.Process(target=producer_process,
                         args=(url, run_id, n, messages, rate, args.backlog, args.bound, start, stop, results))
             for n in per_process if n]
    for proc in procs:
        proc.start()
    time.sleep(0.5)
    redis_cpu0, net0 = redis_counters(transport.client)
    cpu0, started = time.process_time(), time.perf_counter()
    start.set()
    consumed = peak_backlog = 0
    while time.perf_counter() - started < args.seconds:
        peak_backlog = max(peak_backlog, transport.backlog())
        deliveries = transport.read_experience("trainer", READ_COUNT, block_ms=200)
        if any(d.experience is None for d in deliveries):
            raise RuntimeError("undecodable message")
        transport.acknowledge([d.entry_id for d in deliveries])
        consumed += len(deliveries)
    elapsed = time.perf_counter() - started
    consumer_cpu = time.process_time() - cpu0
    redis_cpu1, net1 = redis_counters(transport.client)
    stop.set()
    per_thread = [row for _ in procs for row in results.get(timeout=60)]
    for proc in procs:
        proc.join(timeout=30)
    memory = transport.client.info("memory")
    backlog_left = transport.backlog()
    transport.client.delete(transport.keys.experience)
    latencies = [x for _sent, _blocked, lat in per_thread for x in lat]
    sent = sum(s for s, _b, _l in per_thread)
    size = sum(len(v) for v in messages[0].values())
    offered = producers * rate if rate > 0 else None
    return {
        "producers": producers, "rate": rate, "processes": len(procs), "offered_msgs_per_s": offered,
        "sent_msgs_per_s": sent / elapsed, "consumed_msgs_per_s": consumed / elapsed,
        "into_redis_mb_per_s": (net1 - net0) / elapsed / 1e6, "message_bytes": size,
        "add_p50_ms": 1000 * percentile(latencies, 50), "add_p99_ms": 1000 * percentile(latencies, 99),
        "blocked_fraction": sum(b for _s, b, _l in per_thread) / (producers * elapsed),
        "backlog_at_end": backlog_left, "backlog_bound": args.backlog, "peak_backlog": peak_backlog,
        "redis_used_memory_peak_mib": int(memory["used_memory_peak"]) / 2**20,
        "redis_cpu_per_s": (redis_cpu1 - redis_cpu0) / elapsed, "consumer_cpu_per_s": consumer_cpu / elapsed,
        "loadavg_1m": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--producers", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--processes", type=int, default=4, help="producer processes (threads spread over them)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.0],
                        help="messages/s per producer; 0: as fast as possible")
    parser.add_argument("--steps", type=int, default=100, help="steps per episode (message)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per producer count")
    parser.add_argument("--backlog", type=int, default=200, help="producers wait while the stream holds this many")
    parser.add_argument("--bound", choices=("bytes", "count"), default="bytes",
                        help="bytes: a worker's atomic check-and-add under --backlog messages' bytes; "
                             "count: the old length check before each add (overshoots by up to the producers)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/scale.json"), help="result file")
    args = parser.parse_args(argv)

    info = machine()
    print(f"bench/scale.py: {machine_line(info)}")
    observations = realistic_episode(args.steps)
    messages = [make_experience(observations, i).encode() for i in range(MESSAGE_VARIANTS)]
    size = sum(len(v) for v in messages[0].values())
    print(f"message: {args.steps}-step camera+lidar episode, {size / 1e6:.3f} MB encoded")
    rows = []
    for rate in args.rates:
        for producers in args.producers:
            with redis_server() as url:  # a fresh server each time: its memory peak is this run's
                row = measure(url, producers, min(args.processes, producers), messages, rate, args)
            row["label"] = f"{producers} @ {rate:g}/s" if rate > 0 else f"{producers} closed"
            rows.append(row)
            print(f"  {row['label']} done", flush=True)
    print_table([("label", "producers", "s"), ("offered_msgs_per_s", "offered", ".1f"),
                 ("consumed_msgs_per_s", "consumed", ".1f"), ("into_redis_mb_per_s", "MB/s in", ".1f"),
                 ("add_p50_ms", "add p50 ms", ".2f"), ("add_p99_ms", "add p99 ms", ".2f"),
                 ("blocked_fraction", "blocked", ".2f"), ("peak_backlog", "peak backlog", "d"),
                 ("redis_used_memory_peak_mib", "peak MiB", ".1f"),
                 ("redis_cpu_per_s", "redis cpu", ".2f"), ("consumer_cpu_per_s", "reader cpu", ".2f"),
                 ("loadavg_1m", "load 1m", ".2f")], rows)
    closed = [r for r in rows if r["rate"] <= 0]
    summary = {"paced_saturated_at": _saturation([r for r in rows if r["rate"] > 0]),
               "closed_loop_max_msgs_per_s": max((r["consumed_msgs_per_s"] for r in closed), default=None),
               "closed_loop_max_mb_per_s": max((r["into_redis_mb_per_s"] for r in closed), default=None)}
    result = write_result(args.json, "scale", info, vars(args) | {"json": str(args.json)}, rows, summary)
    print(f"{summary}; load average at end "
          f"{', '.join(f'{x:.2f}' for x in result['machine']['loadavg_end'])}; JSON: {args.json}")
    return 0


def _saturation(rows: list[dict[str, Any]]) -> int | None:
    """The first producer count whose consumed rate falls below 90% of the offered rate."""
    for row in rows:
        if row["consumed_msgs_per_s"] < 0.9 * row["offered_msgs_per_s"]:
            return int(row["producers"])
    return None


if __name__ == "__main__":
    sys.exit(main())
