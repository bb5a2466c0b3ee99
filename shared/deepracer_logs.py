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


# ---------------------------------------------------------------------------- rl_coach (trainer)
# deepracer-formats.md §5.4: the screen lines DeepRacer's trainer prints (rl_coach's
# ScreenLogger.log_dict: "<prefix>> key=value, key=value"), which SageMaker metric regexes and
# log-analysis notebooks parse (e.g. "^Policy training>.*Entropy=(.*?),").
def training_episode_line(worker: int, episode: int, total_reward: float, steps: int, iteration: int) -> str:
    """rl_coach's rollout line: ``episode`` counts from 1, ``steps`` is the running total of steps."""
    return (f"Training> Name=main_level/agent, Worker={worker}, Episode={episode}, "
            f"Total reward={round(float(total_reward), 2)}, Steps={steps}, Training iteration={iteration}")


def policy_training_line(surrogate_loss: float, kl_divergence: float, entropy: float, epoch: int,
                         learning_rate: float) -> str:
    """rl_coach ClippedPPO's per-epoch line (``epoch`` counts from 0)."""
    return (f"Policy training> Surrogate loss={float(surrogate_loss)}, KL divergence={float(kl_divergence)}, "
            f"Entropy={float(entropy)}, training epoch={epoch}, learning_rate={float(learning_rate)}")


# rl_coach's per-episode signals of ClippedPPO, in registration order; each gets /Mean, /Stdev, /Max, /Min.
COACH_SIGNALS = ("Loss", "Learning Rate", "Grads (unclipped)", "Discounted Return", "Entropy", "Advantages",
                 "Values", "Value Loss", "Policy Loss", "Value Targets", "KL Divergence", "Likelihood Ratio",
                 "Clipped Likelihood Ratio")
SIGNAL_STATS = ("Mean", "Stdev", "Max", "Min")
# The episode CSV's header exactly as the seed article shows it (rl_coach's Logger, index "Episode #").
COACH_EPISODE_COLUMNS = (
    "Episode #", "Training Iter", "In Heatup", "ER #Transitions", "ER #Episodes", "Episode Length", "Total steps",
    "Epsilon", "Shaped Training Reward", "Training Reward", "Update Target Network", "Wall-Clock Time",
    "Evaluation Reward", "Shaped Evaluation Reward", "Success Rate",
    *(f"{signal}/{stat}" for signal in COACH_SIGNALS for stat in SIGNAL_STATS),
)


def signal_stats(name: str, samples: Any) -> dict[str, float]:
    """``{"<name>/Mean": ..., "/Stdev", "/Max", "/Min"}`` of the samples, as rl_coach's Signal (np.std)."""
    import numpy as np

    values = np.asarray(samples, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return {}
    return {f"{name}/Mean": float(values.mean()), f"{name}/Stdev": float(values.std()),
            f"{name}/Max": float(values.max()), f"{name}/Min": float(values.min())}


def coach_episode_csv(rows: list[list[str]]) -> str:
    """The episode CSV: header, then rows already formatted (an empty string where rl_coach writes NaN)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COACH_EPISODE_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()


def coach_row(values: dict[str, Any]) -> list[str]:
    """One CSV row in COACH_EPISODE_COLUMNS order; missing or None values are left empty."""
    return ["" if values.get(column) is None else str(values[column]) for column in COACH_EPISODE_COLUMNS]
