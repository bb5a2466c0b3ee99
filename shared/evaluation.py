"""Evaluation during training and DeepRacer's best-model bookkeeping.

DeepRacer's rollout worker 0 drives greedy evaluation episodes of each checkpoint between training
phases; their mean BEST_MODEL_METRIC ranks the checkpoints in ``model/deepracer_checkpoints.json``
(deepracer-formats.md §4.1, §4.2, §7.4; simapp ``metrics/s3_metrics.py::TrainingMetrics.update``):

- ``progress`` (default) and ``reward``: mean over the evaluation episodes, higher is better;
- ``laptime``: mean lap time in ms, lower is better, an episode that did not finish the lap
  counting :data:`UNFINISHED_LAP_MS`;
- a tie goes to the later checkpoint (the simapp compares with ``>=`` / ``<=``).

In hotlap, worker 0 reports each version's evaluation episodes to Redis
(``RunTransport.report_evaluation``) and the trainer keeps the index (:class:`CheckpointIndex`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

UNFINISHED_LAP_MS = 999999  # the simapp's laptime for an evaluation episode without a finished lap
LAP_COMPLETE = 100.0  # progress (%) of a finished lap
METRICS = ("progress", "reward", "laptime")


class EvaluationError(ValueError):
    """An evaluation report or checkpoint index that cannot be read; the message names it."""


@dataclass(frozen=True)
class EvalEpisode:
    """One greedy evaluation episode: ``progress`` in %, ``reward`` the sum of step rewards,
    ``elapsed_ms`` sim time, ``status`` the final episode_status token."""

    progress: float
    reward: float
    elapsed_ms: int
    status: str

    @property
    def lap_ms(self) -> int:
        """The lap time for BEST_MODEL_METRIC ``laptime``: elapsed ms of a finished lap, else 999999."""
        return self.elapsed_ms if self.progress >= LAP_COMPLETE else UNFINISHED_LAP_MS


def episodes_to_json(episodes: Sequence[EvalEpisode]) -> str:
    return json.dumps([asdict(e) for e in episodes])


def episodes_from_json(text: str, source: str) -> list[EvalEpisode]:
    """Raises EvaluationError naming ``source`` for anything but a list of episode objects."""
    try:
        data = json.loads(text)
        episodes = [EvalEpisode(progress=float(d["progress"]), reward=float(d["reward"]),
                                elapsed_ms=int(d["elapsed_ms"]), status=str(d["status"])) for d in data]
    except (ValueError, TypeError, KeyError) as e:
        raise EvaluationError(f"{source}: not a list of evaluation episodes: {e}") from e
    if not episodes:
        raise EvaluationError(f"{source}: no evaluation episodes")
    return episodes


def eval_metric(episodes: Sequence[EvalEpisode], metric: str) -> float:
    """The mean BEST_MODEL_METRIC of a version's evaluation episodes (simapp ``statistics.mean``)."""
    if metric == "reward":
        return statistics.mean(e.reward for e in episodes)
    if metric == "laptime":
        return statistics.mean(e.lap_ms for e in episodes)
    if metric == "progress":
        return statistics.mean(e.progress for e in episodes)
    raise ValueError(f"unknown BEST_MODEL_METRIC {metric!r}; expected one of {', '.join(METRICS)}")


def at_least_as_good(candidate: float, best: float | None, metric: str) -> bool:
    """Whether ``candidate`` replaces ``best`` (None: no best yet); ties go to the candidate."""
    if best is None:
        return True
    return candidate <= best if metric == "laptime" else candidate >= best


def checkpoint_name(version: int) -> str:
    """A version's name in deepracer_checkpoints.json (the store's ``model/<version>`` folder)."""
    return f"model/{version}"


def version_of(name: str) -> int | None:
    """The version a checkpoint name points to (``model/<v>``), None for another form."""
    head, _, tail = name.rpartition("/")
    return int(tail) if head == "model" and tail.isdigit() else None


@dataclass
class CheckpointIndex:
    """``model/deepracer_checkpoints.json``: ``{"best_checkpoint": {...}, "last_checkpoint": {...}}``,
    each ``{"name", "avg_eval_metric", "time_stamp"}`` (deepracer-formats.md §4.2)."""

    metric: str
    best: dict[str, Any] | None = None
    last: dict[str, Any] | None = None

    @property
    def last_version(self) -> int:
        """The last version credited (-1: none)."""
        version = version_of(str(self.last["name"])) if self.last else None
        return -1 if version is None else version

    @property
    def best_version(self) -> int | None:
        return version_of(str(self.best["name"])) if self.best else None

    def credit(self, version: int, value: float, time_stamp: float) -> bool:
        """Record ``version``'s mean metric as the last checkpoint; returns whether it is the new best."""
        entry = {"name": checkpoint_name(version), "avg_eval_metric": value, "time_stamp": time_stamp}
        self.last = entry
        best_value = None if self.best is None else float(self.best["avg_eval_metric"])
        if at_least_as_good(value, best_value, self.metric):
            self.best = entry
            return True
        return False

    def to_json(self) -> str:
        return json.dumps({"best_checkpoint": self.best, "last_checkpoint": self.last}, indent=2)

    @classmethod
    def parse(cls, text: str, metric: str, source: str) -> CheckpointIndex:
        """Read a stored index back (a restarted trainer keeps its best). Raises EvaluationError
        naming ``source`` when the text is not DeepRacer's form or its metric is not a number."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise EvaluationError(f"{source}: not JSON: {e}") from e
        if not isinstance(data, dict):
            raise EvaluationError(f"{source}: expected an object with best_checkpoint and last_checkpoint")
        entries: list[dict[str, Any] | None] = []
        for key in ("best_checkpoint", "last_checkpoint"):
            entry = data.get(key)
            if entry is None:
                entries.append(None)
                continue
            value = entry.get("avg_eval_metric") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                    or not isinstance(value, int | float) or not math.isfinite(value):
                raise EvaluationError(f"{source}: {key} needs a name and a numeric avg_eval_metric, got {entry!r}")
            entries.append(entry)
        return cls(metric, entries[0], entries[1])


def eval_start_fractions(trials: int) -> list[float]:
    """Where evaluation trial i starts: i/trials of the lap, so a deterministic greedy policy is
    judged on the whole track rather than one start repeated (hotlap's choice; see docs)."""
    return [i / trials for i in range(trials)]
