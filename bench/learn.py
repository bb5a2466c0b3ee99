"""Time to a lap-capable model: `hotlap train` on the embedded defaults, then, per iteration,
the wall time since version 0 was published and how many of the iteration's episodes were laps.

    .venv/bin/python bench/learn.py                    # defaults: 2 workers, 10 iterations
    .venv/bin/python bench/learn.py --workers 4 --track Oval_track -- --cars-per-worker 8

Not a test: it takes minutes and its numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.store import ModelStore, open_store  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--track", default="reInvent2019_track")
    parser.add_argument("--max-iterations", type=int, default=10)
    parser.add_argument("extra", nargs="*", help="more `hotlap train` arguments (after --)")
    args = parser.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="hotlap-bench-learn-"))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "hotlap", "train", "--workers", str(args.workers), "--track",
                             args.track, "--max-iterations", str(args.max_iterations), "--runs-dir", str(runs),
                             "--run-id", "learn", *args.extra], stdout=subprocess.DEVNULL)
    total = time.monotonic() - started
    if result.returncode != 0:
        print(f"hotlap train exited {result.returncode}; logs in {runs}")
        return 1
    store = ModelStore(open_store(f"file://{runs / 'learn'}"))
    published = {v: json.loads(store.objects.get(f"model/{v}/manifest.json"))["published_at"]
                 for v in store.list_versions()}
    laps: dict[int, list[str]] = defaultdict(list)
    for row in csv.DictReader(io.StringIO(store.get_text("logs/episodes.csv"))):
        laps[int(row["model_version"])].append(row["status"])
    print(f"{os.cpu_count()} CPUs, {args.workers} workers, track {args.track}; whole run {total:.0f}s")
    print(f"{'version':>7s} {'minutes':>8s} {'laps':>7s} {'mean progress':>14s}")
    rows = list(csv.DictReader(io.StringIO(store.get_text("logs/episodes.csv"))))
    for version in sorted(laps):
        statuses = laps[version]
        progress = [float(r["progress"]) for r in rows if int(r["model_version"]) == version]
        minutes = (published[version] - published[0]) / 60
        print(f"{version:7d} {minutes:8.1f} {statuses.count('lap_complete'):3d}/{len(statuses):<3d} "
              f"{sum(progress) / len(progress):13.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
