"""DeepRacer-readable output: simtrace CSV rows, SIM_TRACE_LOG lines and TrainingMetrics JSON.

Column names, order and formats follow DeepRacer's simapp (see docs/architecture.md), so
deepracer-utils and the community's analysis notebooks read hotlap's runs unchanged.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import astuple, dataclass
from typing import Any

SIMTRACE_COLUMNS = (
    "episode", "steps", "X", "Y", "yaw", "steer", "throttle", "action", "reward", "done",
    "all_wheels_on_track", "progress", "closest_waypoint", "track_len", "tstamp", "episode_status",
    "pause_duration", "obstacle_crash_counter", "wall_clock",
)
# DeepRacer's exact log format, one %-field per column.
SIM_TRACE_LOG_FORMAT = "SIM_TRACE_LOG:%d,%d,%.4f,%.4f,%.4f,%.2f,%.2f,%s,%.4f,%s,%s,%.4f,%d,%.2f,%s,%s,%.2f,%d,%.4f"

STATUS_LABELS = {
    "lap_complete": "Lap complete",
    "crashed": "Crashed",
    "off_track": "Off track",
    "in_progress": "In progress",
    "immobilized": "Immobilized",
    "time_up": "Time Up",
    "pause": "Pause",
    "reversed": "Reversed",
    "park": "Park",
    "prepare": "Prepare",
}
METRICS_VERSION = 2.0


@dataclass(frozen=True)
class SimtraceRow:
    episode: int
    steps: float
    x: float
    y: float
    yaw: float
    steer: float
    throttle: float
    action: str  # discrete: the index; continuous: "[<steer> <speed>]"
    reward: float
    done: bool
    all_wheels_on_track: bool
    progress: float
    closest_waypoint: int
    track_len: float
    tstamp: float
    episode_status: str
    pause_duration: float = 0.0
    obstacle_crash_counter: int = 0
    wall_clock: float = 0.0

    def log_line(self) -> str:
        values = list(astuple(self))
        values[1] = int(values[1])
        return SIM_TRACE_LOG_FORMAT % tuple(values)


def continuous_action_label(steering: float, speed: float) -> str:
    return f"[{steering} {speed}]"


def simtrace_csv(rows: list[SimtraceRow]) -> str:
    """Each CSV has its own header, values as str(value) at full precision (as DeepRacer)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SIMTRACE_COLUMNS)
    writer.writerows(astuple(row) for row in rows)
    return buffer.getvalue()


def simtrace_key(worker_index: int, iteration: int, multi_worker: bool) -> str:
    folder = f"{worker_index}/training-simtrace" if multi_worker else "training-simtrace"
    return f"{folder}/{iteration}-iteration.csv"


def training_metrics_key(worker_index: int) -> str:
    return "metrics/TrainingMetrics.json" if worker_index == 0 else f"metrics/TrainingMetrics_{worker_index}.json"


class TrainingMetrics:
    """One worker's TrainingMetrics.json: one record per training episode."""

    def __init__(self, best_model_metric: str = "progress"):
        self.best_model_metric = best_model_metric
        self.records: list[dict[str, Any]] = []
        self.trial = 0

    def new_iteration(self) -> None:
        self.trial = 0

    def add_episode(self, *, reward: float, start_ms: int, end_ms: int, progress: float, status: str) -> None:
        self.trial += 1
        self.records.append({
            "reward_score": int(round(reward)),
            "metric_time": end_ms,
            "start_time": start_ms,
            "elapsed_time_in_milliseconds": end_ms - start_ms,
            "episode": len(self.records) + 1,
            "trial": self.trial,
            "phase": "training",
            "completion_percentage": int(progress),
            "episode_status": STATUS_LABELS.get(status, status),
        })

    def to_json(self) -> str:
        return json.dumps({"metrics": self.records, "version": METRICS_VERSION,
                           "best_model_metric": self.best_model_metric})


EPISODE_LOG_COLUMNS = ("iteration", "model_version", "worker_id", "worker_index", "episode", "steps",
                       "reward", "progress", "status")


def episode_log_csv(rows: list[tuple[Any, ...]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EPISODE_LOG_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()
