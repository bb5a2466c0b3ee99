"""Experience messages through hotlap's transport against bare redis-py, in the same run.

    .venv/bin/python bench/transport.py                        # 1, 2, 4 producers; 100-step camera+lidar episodes
    .venv/bin/python bench/transport.py --producers 1 8 --steps 300 --messages 400

The message is one realistic episode: `--steps` 160x120 grayscale camera frames and 64-value lidar
scans rendered by hotlap's simulator on re:Invent 2019 (a noisy pure-pursuit driver), with actions,
log-probabilities, values and rewards. Producer processes push it, one consumer process reads,
decodes and deletes it, against one private redis-server:

- hotlap: `RunTransport.push_experience(Experience)` (encode + XADD) in each producer;
  `read_experience` (XREADGROUP + decode) and `acknowledge` (XACK + XDEL) in the consumer;
- raw: redis-py XADD of the episode's array bytes as one field (pre-built, no header, no codec),
  XREADGROUP, then the same XACK + XDEL.

Both apply the same back-pressure (wait while the stream holds `--backlog` entries), as workers do.
Rates are episodes per second from the start signal to the last message consumed; modes alternate
(raw, hotlap, raw, hotlap, ...) so a change in the machine's load hits both; the ratio per producer
count is hotlap / raw over all repeats. A second measurement times the consumer alone ("read"):
the producers fill the stream first, then the consumer drains it. That is the trainer's side, the
part that does not scale out; on a machine where producers and consumer share few cores, the
end-to-end rate also pays for the producers' compression.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import machine, machine_line, print_table, write_result  # noqa: E402
from hotlap.redis_server import redis_server  # noqa: E402
from shared.experience import Experience  # noqa: E402
from shared.transport import TRAINER_GROUP, RunTransport, redis_from_url  # noqa: E402

READ_COUNT = 16  # the trainer's READ_BATCH
BACKLOG_WAIT_S = 0.002
SENSORS = ("FRONT_FACING_CAMERA", "LIDAR")


def realistic_episode(steps: int, seed: int = 1) -> dict[str, np.ndarray]:
    """`steps` camera frames and lidar scans from hotlap's simulator (cars reset when an episode ends)."""
    from bench.sim import FOLLOW_CENTER_LINE, driver
    from simulator.env import EnvSettings, VectorRacingEnv
    from simulator.reward import load_reward_function
    from simulator.track import load_track

    env = VectorRacingEnv(load_track("reInvent2019_track"), 1, EnvSettings(sensors=SENSORS),
                          load_reward_function(FOLLOW_CENTER_LINE), seed=seed)
    obs, rng = env.reset(), np.random.default_rng(seed)
    frames: dict[str, list[np.ndarray]] = {name: [] for name in obs}
    for _ in range(steps):
        for name, arr in obs.items():
            frames[name].append(arr[0].copy())
        result = env.step(*driver(env, rng))
        obs = env.reset(np.array([0])) if result.done[0] else result.obs
    return {name: np.stack(arrs) for name, arrs in frames.items()}


def make_experience(observations: dict[str, np.ndarray], episode: int) -> Experience:
    steps = next(iter(observations.values())).shape[0]
    rng = np.random.default_rng(episode)
    return Experience(
        run_id="bench", worker_name=f"producer-{os.getpid()}", worker_index=0, model_version=0, episode=episode,
        observations=observations, actions=rng.integers(0, 5, steps), log_probs=rng.normal(size=steps).astype(
            np.float32), values=rng.normal(size=steps).astype(np.float32),
        rewards=rng.uniform(size=steps).astype(np.float32), terminated=True, bootstrap_value=0.0,
        status="off_track", progress=12.5, elapsed_s=steps / 15,
    )


def raw_bytes(exp: Experience) -> bytes:
    return b"".join(np.ascontiguousarray(a).tobytes() for a in exp.arrays().values())


def _wait_for_room(client: Any, key: str, backlog: int) -> None:
    while client.xlen(key) >= backlog:
        time.sleep(BACKLOG_WAIT_S)


def produce(mode: str, url: str, run_id: str, observations: dict[str, np.ndarray], count: int, backlog: int,
            start: Event) -> None:
    transport = RunTransport.from_url(url, run_id)
    key = transport.keys.experience
    exp = make_experience(observations, 0)
    payload = raw_bytes(exp)
    start.wait()
    for i in range(count):
        _wait_for_room(transport.client, key, backlog)
        if mode == "hotlap":
            exp.episode = i  # a fresh message each time: encoding is part of what is measured
            transport.push_experience(exp)
        else:
            transport.client.xadd(key, {b"payload": payload})


def consume(mode: str, transport: RunTransport, total: int) -> int:
    """Read, decode (hotlap) and delete `total` messages; returns the wire bytes of the last one."""
    key, consumed, wire = transport.keys.experience, 0, 0
    while consumed < total:
        if mode == "hotlap":
            deliveries = transport.read_experience("trainer", READ_COUNT)
            if any(d.experience is None for d in deliveries):
                raise RuntimeError(f"undecodable message: {[d.error for d in deliveries if d.error]}")
            ids = [d.entry_id for d in deliveries]
        else:
            reply = transport.client.xreadgroup(TRAINER_GROUP, "trainer", {key: ">"}, count=READ_COUNT, block=1000)
            entries = [e for _stream, batch in reply or [] for e in batch]
            ids = [entry_id for entry_id, _fields in entries]
            if entries:
                wire = len(entries[-1][1][b"payload"])
        transport.acknowledge(ids)
        consumed += len(ids)
    return wire


def measure(mode: str, url: str, producers: int, messages: int, observations: dict[str, np.ndarray],
            backlog: int, tag: str, drain: bool = False) -> float:
    """Episodes per second from the start signal to the last message consumed; with `drain`, the
    producers fill the stream first and only the consumer's reading, decoding and deleting is timed."""
    transport = RunTransport(redis_from_url(url), f"bench-{tag}")
    transport.ensure_group()
    ctx = mp.get_context("fork")
    start = ctx.Event()
    shares = [messages // producers + (1 if i < messages % producers else 0) for i in range(producers)]
    procs = [ctx.Process(target=produce, args=(mode, url, f"bench-{tag}", observations, n, backlog, start))
             for n in shares]
    for proc in procs:
        proc.start()
    if drain:
        start.set()
        for proc in procs:
            proc.join(timeout=120)
    else:
        time.sleep(0.5)  # let the producers import and connect before the clock starts
    started = time.perf_counter()
    start.set()
    consume(mode, transport, messages)
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join(timeout=30)
        if proc.exitcode != 0:
            raise RuntimeError(f"{mode} producer exited with {proc.exitcode}")
    transport.client.delete(transport.keys.experience)
    return messages / elapsed


def _drain_rates(url: str, producers: int, observations: dict[str, np.ndarray],
                 args: argparse.Namespace) -> dict[str, float]:
    """The consumer alone (the trainer's side, the one part that does not scale out) on a full stream."""
    rates = {mode: sum(measure(mode, url, producers, args.messages, observations, args.messages, f"drain-{mode}-"
                               f"{producers}-{repeat}", drain=True) for repeat in range(args.repeats)) / args.repeats
             for mode in ("raw", "hotlap")}
    return {"raw_consumer_episodes_per_s": rates["raw"], "hotlap_consumer_episodes_per_s": rates["hotlap"],
            "consumer_ratio": rates["hotlap"] / rates["raw"]}


def wire_size(observations: dict[str, np.ndarray]) -> tuple[int, int, int]:
    exp = make_experience(observations, 0)
    fields = exp.encode()
    return len(raw_bytes(exp)), sum(len(v) for v in fields.values()), len(fields[b"payload"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--producers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=100, help="steps per episode (message)")
    parser.add_argument("--messages", type=int, default=120, help="messages per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per mode and producer count")
    parser.add_argument("--backlog", type=int, default=32, help="producers wait while the stream holds this many")
    parser.add_argument("--json", type=Path, default=Path("bench/results/transport.json"), help="result file")
    args = parser.parse_args(argv)

    info = machine()
    print(f"bench/transport.py: {machine_line(info)}")
    observations = realistic_episode(args.steps)
    raw, wire, payload = wire_size(observations)
    print(f"message: {args.steps} steps of {'+'.join(SENSORS)}: {raw / 1e6:.2f} MB of arrays; "
          f"hotlap's encoded message {wire / 1e6:.3f} MB")
    rows = []
    with redis_server() as url:
        for producers in args.producers:
            rates: dict[str, list[float]] = {"raw": [], "hotlap": []}
            for repeat in range(args.repeats):
                for mode in ("raw", "hotlap"):
                    tag = f"{mode}-{producers}-{repeat}"
                    rates[mode].append(measure(mode, url, producers, args.messages, observations, args.backlog, tag))
            raw_rate, hotlap_rate = (sum(rates[m]) / len(rates[m]) for m in ("raw", "hotlap"))
            row = {"producers": producers, "raw_episodes_per_s": raw_rate, "hotlap_episodes_per_s": hotlap_rate,
                   "ratio": hotlap_rate / raw_rate, "raw_mb_per_s": raw_rate * raw / 1e6,
                   **_drain_rates(url, producers, observations, args),
                   "hotlap_array_mb_per_s": hotlap_rate * raw / 1e6, "raw_runs": rates["raw"],
                   "hotlap_runs": rates["hotlap"], "loadavg_1m": os.getloadavg()[0]}
            rows.append(row)
        memory = redis_from_url(url).info("memory")
    print_table([("producers", "producers", "d"), ("raw_episodes_per_s", "raw ep/s", ".1f"),
                 ("hotlap_episodes_per_s", "hotlap ep/s", ".1f"), ("ratio", "ratio", ".2f"),
                 ("raw_consumer_episodes_per_s", "raw read/s", ".1f"),
                 ("hotlap_consumer_episodes_per_s", "hotlap read/s", ".1f"), ("consumer_ratio", "read ratio", ".2f"),
                 ("raw_mb_per_s", "raw MB/s", ".0f"), ("hotlap_array_mb_per_s", "hotlap MB/s", ".0f"),
                 ("loadavg_1m", "load 1m", ".2f")], rows)
    worst = min(r["ratio"] for r in rows)
    summary = {"message_array_bytes": raw, "hotlap_message_bytes": wire, "hotlap_payload_bytes": payload,
               "worst_ratio": round(worst, 3), "target_ratio": 0.8, "target_met": worst >= 0.8,
               "worst_consumer_ratio": round(min(r["consumer_ratio"] for r in rows), 3),
               "redis_used_memory_peak_bytes": int(memory["used_memory_peak"])}
    result = write_result(args.json, "transport", info, vars(args) | {"json": str(args.json)}, rows, summary)
    print(f"worst hotlap/raw ratio {worst:.2f} (target >= 0.80: {'met' if worst >= 0.8 else 'NOT met'}); "
          f"load average at end {', '.join(f'{x:.2f}' for x in result['machine']['loadavg_end'])}; JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
