"""DeepRacer-readable output: simtrace CSV rows, SIM_TRACE_LOG lines and TrainingMetrics JSON.

Column names, order and formats follow DeepRacer's simapp (see docs/architecture.md), so
deepracer-utils and the community's analysis notebooks read hotlap's runs unchanged.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, fields
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

    def values(self) -> list[Any]:
        """The fields' values in declaration order (the CSV's columns), not copied."""
        return [getattr(self, name) for name in _SIMTRACE_FIELDS]

    def log_line(self) -> str:
        """One SIM_TRACE_LOG line (the fields in declaration order, `steps` as an integer). Built
        from the attributes directly: `astuple` deep-copies every value, which cost a worker ~5% of
        its step time at 16 cars (bench/worker.py)."""
        values = self.values()
        values[1] = int(values[1])
        return SIM_TRACE_LOG_FORMAT % tuple(values)


_SIMTRACE_FIELDS = tuple(f.name for f in fields(SimtraceRow))


def continuous_action_label(steering: float, speed: float) -> str:
    return f"[{steering} {speed}]"


def simtrace_csv(rows: list[SimtraceRow]) -> str:
    """Each CSV has its own header, values as str(value) at full precision (as DeepRacer)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SIMTRACE_COLUMNS)
    writer.writerows(row.values() for row in rows)
    return buffer.getvalue()


def simtrace_key(worker_index: int, iteration: int, multi_worker: bool) -> str:
    folder = f"{worker_index}/training-simtrace" if multi_worker else "training-simtrace"
    return f"{folder}/{iteration}-iteration.csv"


def training_metrics_key(worker_index: int) -> str:
    return "metrics/TrainingMetrics.json" if worker_index == 0 else f"metrics/TrainingMetrics_{worker_index}.json"


class TrainingMetrics:
    """One worker's TrainingMetrics.json: one record per training episode, in episode order, and
    worker 0's evaluation episodes (:meth:`add_evaluation`).

    DeepRacer drives one car per simulator, so its records come in the order its episodes start,
    numbered 1, 2, ..., and ``metric_time`` (sim ms at the episode's end) only grows
    (deepracer-formats.md §4.1). A hotlap worker drives K cars whose episodes end out of start
    order, so records are keyed by the worker's 0-based episode number (the simtrace's and
    logs/episodes.csv's ``episode``; the record's ``episode`` is that number + 1, as DeepRacer's
    metrics count from 1 and its simtrace from 0). A record is written once every earlier episode
    has ended, and its times are those of one simulator driving the worker's episodes back to back:
    ``start_time`` = the previous record's ``metric_time``, ``metric_time`` = ``start_time`` + the
    episode's own sim time. With one car per worker that is exactly the car's clock.
    """

    def __init__(self, best_model_metric: str = "progress"):
        self.best_model_metric = best_model_metric
        self.records: list[dict[str, Any]] = []
        self.trial = 0
        self.clock_ms = 0
        self.next_episode = 0  # the episode number whose record comes next
        self.pending: dict[int, dict[str, Any]] = {}  # ended episodes waiting for an earlier one

    def new_iteration(self) -> None:
        self.trial = 0

    def resume(self, text: str, next_episode: int) -> None:
        """Go on after the records of a TrainingMetrics.json written earlier (by this worker index,
        before a restart): keep them, continue the sim clock after the last one, and write the record
        of episode `next_episode` next (episodes numbered before it that never ended are skipped).
        A resumed worker starts a new simtrace iteration, so trials count from 0 again.
        Raises ValueError when `text` is not such a file."""
        data = json.loads(text)
        records = data.get("metrics") if isinstance(data, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ValueError("no list of metric records under 'metrics'")
        clock = records[-1].get("metric_time", 0) if records else 0
        if not isinstance(clock, int):
            raise ValueError(f"the last record's metric_time {clock!r} is not an integer")
        self.records, self.clock_ms = records, clock
        self.trial, self.next_episode, self.pending = 0, next_episode, {}

    def add_episode(self, *, episode: int, reward: float, elapsed_ms: int, progress: float, status: str) -> None:
        """Record episode number ``episode`` (0-based, the simtrace's), whenever it ends.

        ``reward`` is the sum of its step rewards, ``elapsed_ms`` its sim time in ms, ``progress``
        percent at its end, ``status`` its final episode_status token. Raises ``ValueError`` for an
        episode number recorded before.
        """
        if episode < self.next_episode or episode in self.pending:
            raise ValueError(f"episode {episode} was recorded already")
        self.pending[episode] = {"reward": reward, "elapsed_ms": elapsed_ms, "progress": progress, "status": status}
        while self.next_episode in self.pending:
            self._write(self.next_episode, self.pending.pop(self.next_episode))
            self.next_episode += 1

    def flush(self) -> None:
        """Write the ended episodes still waiting: the episodes before them will never end
        (the worker stops), so their numbers are skipped."""
        for episode in sorted(self.pending):
            self._write(episode, self.pending.pop(episode))
            self.next_episode = episode + 1

    def add_evaluation(self, *, reward: float, elapsed_ms: int, progress: float, status: str) -> None:
        """Record an evaluation episode (``phase: "evaluation"``) after the training episodes written
        so far. As DeepRacer's worker 0 does (deepracer-formats.md §4.1), it repeats the last training
        record's ``episode`` and ``trial`` and does not count as a training episode. The worker runs
        evaluation only once its training episodes of the version have ended, so none is pending."""
        self._write(self.next_episode - 1, {"reward": reward, "elapsed_ms": elapsed_ms, "progress": progress,
                                            "status": status}, phase="evaluation")

    def _write(self, episode: int, ended: dict[str, Any], phase: str = "training") -> None:
        if phase == "training":
            self.trial += 1
        start_ms = self.clock_ms
        self.clock_ms += ended["elapsed_ms"]
        self.records.append({
            "reward_score": int(round(ended["reward"])),
            "metric_time": self.clock_ms,
            "start_time": start_ms,
            "elapsed_time_in_milliseconds": ended["elapsed_ms"],
            "episode": episode + 1,
            "trial": self.trial,
            "phase": phase,
            "completion_percentage": int(ended["progress"]),
            "episode_status": STATUS_LABELS.get(ended["status"], ended["status"]),
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
