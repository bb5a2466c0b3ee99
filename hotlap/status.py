"""`hotlap status RUN`: a run as its Redis holds it now — live workers, the trainer, the experience
stream, Redis memory and the episode accounting; once, or refreshed with `--watch`; text or JSON.

RUN is the run id (HOTLAP_RUN_ID; `hotlap train` names the run folder after it and prints the
command with its Redis). The run's keys also carry its identity, the nonce its seed wrote into the
store (`hotlap:{run}:{nonce}:…`, shared.keys). `hotlap status` needs no store: it finds the
identities of RUN by their status hashes in Redis; when a run id was used for several runs (a new
model prefix, or `--overwrite`), it shows the one whose status changed last and names the others.

Everything is read through `RunTransport` (every key from `RunKeys`); nothing is written.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from hotlap.errors import CommandError
from shared.config import redact_url
from shared.transport import DROP_REASONS, HEARTBEAT_TTL_S, RunTransport, TransportError

DEFAULT_INTERVAL_S = 2.0
ERRORS_SHOWN = 5


class StatusError(CommandError):
    """The run cannot be shown: Redis unreachable or refusing, or no such run in it."""


def _number(text: str | None) -> int | float | str | None:
    """A Redis hash value as the number it holds (int or float; None for nan/inf, which JSON cannot
    hold), else the text itself."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else None


def _int(text: str | None) -> int | None:
    value = _number(text)
    return int(value) if isinstance(value, int | float) else None


def open_run_transport(redis_url: str, run_id: str) -> tuple[RunTransport, list[str]]:
    """The transport of RUN's newest identity on `redis_url`, and its other identities there.

    Raises StatusError (one line, naming the run and the Redis URL without its password) when the
    URL is malformed, Redis cannot be reached or refuses, or no identity of RUN has a status there.
    """
    shown_url = redact_url(redis_url)
    try:
        transport = RunTransport.from_url(redis_url, run_id)
    except ValueError as e:  # redis-py: an unknown scheme or a malformed URL
        raise StatusError(f"--redis-url {shown_url}: {e}") from e
    try:
        identities = list(transport.identities())
    except TransportError as e:
        raise StatusError(str(e)) from e
    if not identities:
        raise StatusError(
            f"run {run_id} is not in Redis at {transport.url}: no status of it there (a wrong run id, or a "
            f"finished run whose keys expired after HOTLAP_FINISHED_RUN_TTL_S; `hotlap runs` lists runs from "
            f"their store)")
    return transport.for_run(identities[0]), identities[1:]


def _age(now: float, stamp: str | None) -> float | None:
    value = _number(stamp)
    return round(now - value, 1) if isinstance(value, int | float) else None


def _workers(transport: RunTransport, now: float) -> list[dict[str, Any]]:
    """The workers whose heartbeat hash is in Redis, by index. A finished run's keys (heartbeats
    included) are kept for HOTLAP_FINISHED_RUN_TTL_S, so `live` says whether the last beat is
    younger than the heartbeat TTL."""
    rows = []
    for name, beat in transport.live_workers().items():
        age = _age(now, beat.get("last_heartbeat"))
        rows.append({
            "name": name, "index": _int(beat.get("index")), "host": beat.get("host"),
            "version": _int(beat.get("version")), "steps_per_s": _number(beat.get("steps_per_s")),
            "episodes": _int(beat.get("episodes")), "steps": _int(beat.get("steps")),
            "last_heartbeat": _number(beat.get("last_heartbeat")), "heartbeat_age_s": age,
            "live": age is not None and age <= HEARTBEAT_TTL_S,
        })
    return sorted(rows, key=lambda row: (row["index"] is None, row["index"] or 0, row["name"]))


def _trainer(snapshot: dict[str, Any], now: float) -> dict[str, Any] | None:
    beat = snapshot["trainer"]
    if not beat:
        return None
    lease = snapshot["trainer_lease"] or ""
    return {"step": beat.get("step"), "version": _int(beat.get("version")),
            "last_heartbeat": _number(beat.get("last_heartbeat")),
            "heartbeat_age_s": _age(now, beat.get("last_heartbeat")),
            # the lease's "host=… pid=…", without its ownership token
            "holder": " ".join(part for part in lease.split() if not part.startswith("token=")) or None}


def _episodes(accounting: dict[str, str], depth: int) -> dict[str, Any]:
    """The accounting hash (shared.transport.ACCOUNTING_FIELDS), 0 for a counter never incremented."""
    count = {name: int(value) for name, value in accounting.items()}
    dropped = {reason: count.get(f"dropped_{reason}", 0) for reason in DROP_REASONS}
    return {"produced": count.get("produced", 0), "consumed": count.get("consumed", 0), "dropped": dropped,
            "reissued": count.get("reissued", 0), "in_stream": depth}


def _memory(info: dict[str, Any]) -> dict[str, Any]:
    return {"used_memory": int(info.get("used_memory", 0)), "used_memory_human": info.get("used_memory_human"),
            "maxmemory": int(info.get("maxmemory", 0)), "maxmemory_policy": info.get("maxmemory_policy")}


def read_status(transport: RunTransport, other_identities: list[str], now: float | None = None) -> dict[str, Any]:
    """One JSON-ready object describing the run now (the fields `hotlap status --json` prints).

    Times are unix seconds; ages seconds. Raises StatusError when Redis fails or the run's status
    is gone (its keys expired since it was found)."""
    now = time.time() if now is None else now
    try:
        snapshot = transport.snapshot()
        workers = _workers(transport, now)
    except TransportError as e:
        raise StatusError(str(e)) from e
    status = snapshot["status"]
    if not status:
        raise StatusError(f"run {transport.run_id} (identity {transport.keys.nonce}) is no longer in Redis at "
                          f"{transport.url}: its keys expired")
    progress = {name: _number(value) for name, value in snapshot["progress"].items()}
    return {
        "run": transport.run_id, "identity": transport.keys.nonce, "other_identities": other_identities,
        "redis": transport.url, "time": round(now, 3),
        "state": status.get("state"), "reason": status.get("reason", ""),
        "state_since": _number(status.get("updated_at")),
        "iteration": progress.get("iteration"), "max_iterations": progress.get("max_iterations"),
        "latest_version": _int(snapshot["latest_version"]),
        "trainer": _trainer(snapshot, now),
        "workers": workers, "registered_workers": len(snapshot["worker_indexes"]),
        "stream": {"depth": snapshot["stream_depth"]},
        "redis_memory": _memory(snapshot["memory"]),
        "episodes": _episodes(snapshot["accounting"], snapshot["stream_depth"]),
        "progress": progress,
        "errors": snapshot["errors"],
    }


def _ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f}s ago"


def _clock(stamp: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if isinstance(stamp, int | float) else "?"


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec) if spec and isinstance(value, int | float) else str(value)


def format_status(status: dict[str, Any]) -> str:
    """The status object as a few readable lines (what `hotlap status` prints without --json)."""
    lines = [f"run {status['run']} (identity {status['identity']}) on {status['redis']}: "
             f"{status['state']} since {_clock(status['state_since'])}"
             + (f" — {status['reason']}" if status["reason"] else "")]
    if status["other_identities"]:
        lines.append(f"  (older runs with this id in Redis: identities {', '.join(status['other_identities'])})")
    trainer = status["trainer"]
    iteration = f"iteration {_fmt(status['iteration'])}/{_fmt(status['max_iterations'])}"
    if trainer:
        lines.append(f"trainer: {trainer['step']} version {_fmt(trainer['version'])}, {iteration}, latest version "
                     f"{_fmt(status['latest_version'])}, heartbeat {_ago(trainer['heartbeat_age_s'])}"
                     + (f" ({trainer['holder']})" if trainer["holder"] else ""))
    else:
        lines.append(f"trainer: no heartbeat in Redis, {iteration}, latest version {_fmt(status['latest_version'])}")
    workers = status["workers"]
    live = sum(w["live"] for w in workers)
    lines.append(f"workers: {live} live, {status['registered_workers']} registered")
    if workers:
        lines.append(f"  {'index':>5s}  {'name':24s} {'host':20s} {'version':>7s} {'steps/s':>8s} {'episodes':>8s}  "
                     "heartbeat")
        for w in workers:
            lines.append(f"  {_fmt(w['index']):>5s}  {w['name']:24s} {_fmt(w['host']):20s} {_fmt(w['version']):>7s} "
                         f"{_fmt(w['steps_per_s'], ',.1f'):>8s} {_fmt(w['episodes']):>8s}  "
                         f"{_ago(w['heartbeat_age_s'])}{'' if w['live'] else ' (gone)'}")
    memory = status["redis_memory"]
    limit = f"maxmemory {memory['maxmemory']:,} B ({memory['maxmemory_policy']})" if memory["maxmemory"] \
        else "no maxmemory"
    lines.append(f"stream: {status['stream']['depth']} entries | Redis memory: used {memory['used_memory']:,} B "
                 f"({memory['used_memory_human']}), {limit}")
    episodes = status["episodes"]
    dropped = episodes["dropped"]
    lines.append(f"episodes: produced {episodes['produced']}, consumed {episodes['consumed']}, dropped "
                 f"{sum(dropped.values())} ({', '.join(f'{r} {n}' for r, n in dropped.items())}), re-issued "
                 f"{episodes['reissued']}, in the stream {episodes['in_stream']}")
    progress = status["progress"]
    if "mean_reward" in progress:
        lines.append(f"last iteration: reward {_fmt(progress['mean_reward'], '.2f')}, progress "
                     f"{_fmt(progress.get('mean_progress'), '.1f')}%, "
                     f"laps {_fmt(progress.get('laps_completed'), '.0f')}")
    if "eval_version" in progress:
        lines.append(f"evaluation: version {progress['eval_version']} progress "
                     f"{_fmt(progress.get('eval_progress'), '.1f')}%, laps {progress.get('eval_laps')}/"
                     f"{progress.get('eval_trials')}; best version {progress.get('best_version')}")
    for error in status["errors"][:ERRORS_SHOWN]:
        lines.append(f"error: {error}")
    return "\n".join(lines)


def show(redis_url: str, run_id: str, *, as_json: bool, watch: bool, interval_s: float, count: int,
         out: TextIO | None = None) -> int:
    """Print the run's status once, or every `interval_s` seconds with `watch` (`count` times, 0:
    until Ctrl-C, which exits 0). With `as_json`: one JSON object (indented once; one per line when
    watching). On a terminal, watching redraws in place (rich Live). Raises StatusError."""
    out = out or sys.stdout
    transport, others = open_run_transport(redis_url, run_id)
    if not watch:
        status = read_status(transport, others)
        print(json.dumps(status, indent=2) if as_json else format_status(status), file=out, flush=True)
        return 0
    live = out.isatty() and not as_json
    try:
        if live:
            _watch_live(transport, others, interval_s, count, out)
        else:
            for refresh in _refreshes(count):
                if refresh:
                    time.sleep(interval_s)
                status = read_status(transport, others)
                text = json.dumps(status) if as_json else format_status(status) + "\n"
                print(text, file=out, flush=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends
    return 0


def _refreshes(count: int) -> Iterator[int]:
    """0, 1, … (count of them; endless for 0)."""
    return iter(range(count)) if count > 0 else itertools.count()


def _watch_live(transport: RunTransport, others: list[str], interval_s: float, count: int, out: TextIO) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    def render() -> Text:
        status = read_status(transport, others)
        return Text(format_status(status) + f"\n\nevery {interval_s:g}s, Ctrl-C to stop")

    with Live(render(), console=Console(file=out), auto_refresh=False) as display:
        for refresh in _refreshes(count):
            if refresh:
                time.sleep(interval_s)
                display.update(render(), refresh=True)
