"""What the throughput benchmarks share: the machine line, load samples, the JSON file and the table.

Every result file records the machine (CPU model, cores, memory) and the load averages before and
after, because absolute numbers from a shared machine are noisy; the claims are the ratios that one
run measures side by side.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return 0.0


def machine() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": list(os.getloadavg()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def machine_line(info: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.2f}" for x in info["loadavg_start"])
    return f"{info['cpu_model']}, {info['cores']} cores, {info['memory_gib']} GiB; load average {load}"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


def write_result(path: Path | None, name: str, info: dict[str, Any], settings: dict[str, Any],
                 rows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """The whole result as one JSON document (also returned); written to `path` when given."""
    info = {**info, "loadavg_end": list(os.getloadavg())}
    result = {"benchmark": name, "machine": info, "settings": settings, "rows": rows, "summary": summary,
              "command": [Path(sys.argv[0]).name, *sys.argv[1:]]}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(columns: Sequence[tuple[str, str, str]], rows: Sequence[dict[str, Any]]) -> None:
    """columns: (row key, header, format spec); a missing value prints as '-'."""
    widths = [max(len(header), 8) for _, header, _ in columns]
    print("  ".join(f"{header:>{w}}" for (_, header, _), w in zip(columns, widths, strict=True)))
    for row in rows:
        cells = []
        for (key, _, spec), w in zip(columns, widths, strict=True):
            value = row.get(key)
            cells.append(f"{'-' if value is None else format(value, spec):>{w}}")
        print("  ".join(cells))
