"""The whole pipeline, measured: `hotlap train`'s own local run (a private redis-server, the trainer and
N simulator workers as separate processes, a local-folder store) for each schedule and worker count.

    .venv/bin/python bench/pipeline.py                         # sync + async x 1, 2, 4 workers (a few minutes)
    .venv/bin/python bench/pipeline.py --workers 4 8 --iterations 10 --episodes 20 --cars-per-worker 4

Each number comes from what the run records anyway, read after it ends:
- model manifests (model/<v>/manifest.json): `published_at`, and the trainer's `collect_seconds` /
  `train_seconds` of the iteration that produced the version;
- logs/episodes.csv: the steps of every episode the trainer trained on;
- the worker logs: "acting with model version v, published Xs ago" at each version switch, and
  "done: N episodes, M steps, Ws waiting on the trainer" at exit;
- the redis-server: INFO memory's used_memory_peak.

The first iteration is left out of the rates (it counts process start-up: imports, loading the
track, the first model); what remains is the steady state. "busy" is the share of the trainer's wall
time not spent waiting for experience (1 - collect/wall; collecting includes decoding messages);
"train" is the share spent in the PPO update itself. DeepRacer's reference rows are ~15 steps/s per
RoboMaker worker (the simulation's 15 Hz) and ~6.3 effective steps/s end to end (90K steps in a 4-hour
run, trainer waits included).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import multiprocessing as mp
import os
import queue
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import machine, machine_line, mean, percentile, print_table, write_result  # noqa: E402
from hotlap.local import LocalRun, train_locally  # noqa: E402
from hotlap.redis_server import redis_server  # noqa: E402
from hotlap.seed import UserFiles, prepare_run_files  # noqa: E402
from shared.config import RunSettings  # noqa: E402
from shared.run_files import RunFiles  # noqa: E402
from shared.store import ModelStore, open_store  # noqa: E402
from shared.transport import redis_from_url  # noqa: E402

DEEPRACER_STEPS_PER_S_PER_WORKER = 15.0  # RoboMaker's 15 Hz simulation
DEEPRACER_END_TO_END_STEPS_PER_S = 90_000 / (4 * 3600)  # ~6.3: a 4-hour, 90K-step console run

T = TypeVar("T")
SWITCH = re.compile(r"acting with model version (\d+), published ([0-9.]+)s ago \(loading it took ([0-9.]+)s\)")
FIRST_VERSION = re.compile(r"acting with model version (\d+)$")
DONE = re.compile(r"done: (\d+) episodes, (\d+) steps, ([0-9.]+)s waiting on the trainer")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_time(line: str) -> float | None:
    match = LOG_TIME.match(line)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def parse_worker_log(text: str) -> dict[str, Any]:
    """Version-switch latencies, steps, waiting and the playing wall time of one worker's log."""
    latencies: list[float] = []
    loads: list[float] = []
    started = ended = None
    steps = episodes = 0
    waiting = 0.0
    for line in text.splitlines():
        if (match := SWITCH.search(line)) is not None:
            latencies.append(float(match.group(2)))
            loads.append(float(match.group(3)))
        elif FIRST_VERSION.search(line) and started is None:
            started = _log_time(line)
        elif (match := DONE.search(line)) is not None:
            episodes, steps, waiting = int(match.group(1)), int(match.group(2)), float(match.group(3))
            ended = _log_time(line)
    wall = (ended - started) if started is not None and ended is not None else 0.0
    return {"latencies": latencies, "loads": loads, "steps": steps, "episodes": episodes, "waiting_s": waiting,
            "wall_s": wall}


def analyse_run(store: ModelStore, worker_logs: list[str]) -> dict[str, Any]:
    versions = store.list_versions()
    manifests = {v: json.loads(store.objects.get(f"model/{v}/manifest.json")) for v in versions}
    published = {v: float(m["published_at"]) for v, m in manifests.items()}
    measured = [v for v in versions if v >= 2] or [v for v in versions if v >= 1]  # skip the start-up iteration
    wall = sum(published[v] - published[v - 1] for v in measured)
    collect = sum(float(manifests[v]["training_stats"]["collect_seconds"]) for v in measured)
    train = sum(float(manifests[v]["training_stats"]["train_seconds"]) for v in measured)
    rows = list(csv.DictReader(io.StringIO(store.get_text("logs/episodes.csv"))))
    # A row's `iteration` i is the iteration that produced version i + 1.
    steps_measured = sum(int(r["steps"]) for r in rows if int(r["iteration"]) + 1 in measured)
    steps_all = sum(int(r["steps"]) for r in rows)
    workers = [parse_worker_log(text) for text in worker_logs]
    latencies = [x for w in workers for x in w["latencies"]]
    loads = [x for w in workers for x in w["loads"]]
    playing = [w["steps"] / (w["wall_s"] - w["waiting_s"]) for w in workers if w["wall_s"] - w["waiting_s"] > 0]
    return {
        "iterations": len(versions) - 1,
        "measured_iterations": len(measured),
        "trained_steps": steps_all,
        "played_steps": sum(w["steps"] for w in workers),
        # Async: steps of chunks older than max_staleness are dropped, and workers play on at the end.
        "trained_share_of_played": steps_all / max(1, sum(w["steps"] for w in workers)),
        "end_to_end_steps_per_s": steps_measured / wall if wall > 0 else 0.0,
        "whole_run_steps_per_s": steps_all / (published[versions[-1]] - published[0]),
        "worker_steps_per_s_playing": mean(playing),
        "trainer_busy_fraction": 1.0 - collect / wall if wall > 0 else 0.0,
        "trainer_train_fraction": train / wall if wall > 0 else 0.0,
        "iteration_s": wall / len(measured) if measured else 0.0,
        "worker_wait_fraction": mean([w["waiting_s"] / w["wall_s"] for w in workers if w["wall_s"] > 0]),
        "worker_wait_s": mean([w["waiting_s"] for w in workers]),
        "publish_to_use_mean_s": mean(latencies),
        "publish_to_use_p50_s": percentile(latencies, 50),
        "publish_to_use_max_s": max(latencies, default=0.0),
        "model_load_mean_s": mean(loads),  # the part of publish -> use spent reading and loading the weights
        "version_switches": len(latencies),
    }


def _local_run(run_id: str, run_dir: Path, log_dir: Path, workers: int, files: RunFiles) -> tuple[int, int]:
    """`hotlap train`'s local run against a fresh redis-server; (exit code, Redis used_memory_peak)."""
    with redis_server() as redis_url:
        run = LocalRun(run_id=run_id, store_url=f"file://{run_dir}", s3_endpoint_url=None, workers=workers,
                       redis_url=redis_url, log_dir=log_dir, quiet=True)
        with contextlib.redirect_stdout(io.StringIO()):
            code = train_locally(run, files)
        return code, int(redis_from_url(redis_url).info("memory")["used_memory_peak"])


def _in_own_process_group(target: Callable[..., T], args: tuple[Any, ...], timeout_s: float, message: str) -> T:
    """Run `target` in a child process that leads its own process group, so that a run that never
    finishes (a worker that crashed, a stuck trainer) is killed with everything it started:
    trainer, workers and redis-server, instead of hanging the benchmark or leaving them behind."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()

    def child() -> None:
        os.setsid()
        results.put(target(*args))

    proc = ctx.Process(target=child)
    proc.start()
    try:
        result: T = results.get(timeout=timeout_s)
    except queue.Empty:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.join()
        raise SystemExit(message) from None
    proc.join()
    return result


def run_once(args: argparse.Namespace, schedule: str, workers: int, root: Path) -> dict[str, Any]:
    settings = RunSettings.model_validate({
        "track": args.track, "schedule": schedule, "num_workers": workers,
        "cars_per_worker": args.cars_per_worker, "max_steps_per_episode": args.max_steps,
    })
    files = prepare_run_files(UserFiles(), settings, max_iterations=args.iterations,
                              episodes_per_iteration=args.episodes)
    run_id = f"bench-{schedule}-{workers}w"
    run_dir = root / run_id
    log_dir = run_dir / "process-logs"
    started = time.monotonic()
    code, peak = _in_own_process_group(_local_run, (run_id, run_dir, log_dir, workers, files), args.run_timeout,
                                       f"{run_id}: not finished after {args.run_timeout:.0f}s; logs in {log_dir}")
    seconds = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"{run_id}: the run failed (exit {code}); process logs in {log_dir}")
    store = ModelStore(open_store(f"file://{run_dir}"))
    logs = [(log_dir / f"simulator-{i}.log").read_text() for i in range(workers)]
    return {"schedule": schedule, "workers": workers, "cars_per_worker": args.cars_per_worker,
            "run_seconds": seconds, "redis_used_memory_peak_bytes": peak,
            **analyse_run(store, logs)}


COLUMNS = [
    ("label", "run", "s"),
    ("end_to_end_steps_per_s", "e2e st/s", ".1f"),
    ("worker_steps_per_s_playing", "wkr st/s", ".1f"),
    ("trainer_busy_fraction", "busy", ".2f"),
    ("trainer_train_fraction", "train", ".2f"),
    ("worker_wait_fraction", "wkr wait", ".2f"),
    ("publish_to_use_mean_s", "pub->use", ".3f"),
    ("publish_to_use_max_s", "max", ".3f"),
    ("model_load_mean_s", "load", ".3f"),
    ("redis_peak_mib", "redis MiB", ".1f"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--schedules", nargs="+", choices=("sync", "async"), default=["sync", "async"])
    parser.add_argument("--iterations", type=int, default=3, help="training iterations per run (>= 2)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per iteration")
    parser.add_argument("--cars-per-worker", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=60, help="max steps per episode")
    parser.add_argument("--track", default="reInvent2019_track")
    parser.add_argument("--json", type=Path, default=Path("bench/results/pipeline.json"), help="result file")
    parser.add_argument("--keep", type=Path, help="keep the runs (store folders, process logs) here")
    parser.add_argument("--run-timeout", type=float, default=1200.0,
                        help="seconds before one run is given up and killed with its processes")
    args = parser.parse_args(argv)
    if args.iterations < 2:
        parser.error("--iterations must be at least 2 (the first iteration is start-up)")

    info = machine()
    settings = vars(args) | {"json": str(args.json), "keep": str(args.keep)}
    print(f"bench/pipeline.py: {machine_line(info)}")
    os.environ.setdefault("HOTLAP_SIM_TRACE_LOG", "0")  # the per-step trace lines are not what is measured
    root = args.keep or Path(tempfile.mkdtemp(prefix="hotlap-bench-pipeline-"))
    rows = []
    for workers in args.workers:  # sync and async back to back: the machine's load changes slowly
        for schedule in args.schedules:
            row = run_once(args, schedule, workers, root)
            row["label"] = f"{schedule} {workers}w x{args.cars_per_worker}"
            row["redis_peak_mib"] = row["redis_used_memory_peak_bytes"] / 2**20
            row["loadavg_1m"] = os.getloadavg()[0]
            rows.append(row)
            print(f"  {row['label']}: {row['run_seconds']:.0f}s", flush=True)
            write_result(args.json, "pipeline (partial)", info, settings, rows, {})  # survives an interrupted run
    references = [
        {"label": "DeepRacer worker", "worker_steps_per_s_playing": DEEPRACER_STEPS_PER_S_PER_WORKER},
        {"label": "DeepRacer e2e", "end_to_end_steps_per_s": DEEPRACER_END_TO_END_STEPS_PER_S},
    ]
    print_table(COLUMNS, rows + references)
    summary = _summary(rows)
    result = write_result(args.json, "pipeline", info, settings, rows, summary | {"references": references})
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in result['machine']['loadavg_end'])}; "
          f"JSON: {args.json}")
    return 0


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Target by target: async trainer busy >= 0.9 at the largest worker count; publish -> first use <= 1 s."""
    summary: dict[str, Any] = {}
    asynchronous = [r for r in rows if r["schedule"] == "async"]
    if asynchronous:
        biggest = max(asynchronous, key=lambda r: r["workers"])
        summary["async_busy_at_most_workers"] = round(biggest["trainer_busy_fraction"], 3)
        summary["async_busy_target_met"] = biggest["trainer_busy_fraction"] >= 0.9
    latencies = [r["publish_to_use_max_s"] for r in rows if r["version_switches"]]
    summary["publish_to_use_worst_s"] = round(max(latencies, default=0.0), 3)
    summary["publish_to_use_target_met"] = bool(latencies) and max(latencies) <= 1.0
    by_key = {(r["schedule"], r["workers"]): r for r in rows}
    for (schedule, workers), row in by_key.items():
        if workers != 1 and (schedule, 1) in by_key:
            one = by_key[(schedule, 1)]["end_to_end_steps_per_s"]
            summary[f"{schedule}_{workers}w_vs_1w"] = round(row["end_to_end_steps_per_s"] / one, 2) if one else None
    for workers in sorted({r["workers"] for r in rows}):
        if ("sync", workers) in by_key and ("async", workers) in by_key:
            sync = by_key[("sync", workers)]["end_to_end_steps_per_s"]
            summary[f"async_vs_sync_{workers}w"] = round(by_key[("async", workers)]["end_to_end_steps_per_s"] / sync,
                                                         2) if sync else None
    return summary


if __name__ == "__main__":
    sys.exit(main())
