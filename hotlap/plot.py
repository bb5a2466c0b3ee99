"""`hotlap plot RUN`: a run's learning, driving and action choices as PNG charts (matplotlib).

Everything is read from the run's store (a local folder or S3), in DeepRacer's formats:

- ``logs/episodes.csv`` (the trainer's row per training episode): reward, progress and lap
  completion per iteration;
- ``metrics/TrainingMetrics*.json`` (deepracer-formats.md §4.1): the ``phase: "evaluation"``
  rows (reward, progress, lap completion per iteration) and the lap times;
- ``model/<v>/manifest.json`` ``training_stats`` (what PPO reported when it trained version v):
  losses, entropy, approximate KL per iteration;
- ``training-simtrace/<n>-iteration.csv`` (§5): the best and the latest episodes' paths, and the
  actions the policy chose per iteration.

Iterations are numbered from 1: iteration k trains on the episodes of model version k-1 and
publishes version k (the trainer log's "iteration k/N"). The data-building functions are public
so the tests can check them against the run files without reading pixels.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from shared.config import ConfigError, ModelMetadata, RunSettings
from shared.deepracer_logs import STATUS_LABELS
from shared.store import EPISODE_LOG, MODEL_METADATA, TRAINING_PARAMS, ModelStore, ObjectNotFound, StoreError

LAP_COMPLETE = "lap_complete"
LAP_COMPLETE_LABEL = STATUS_LABELS[LAP_COMPLETE]  # TrainingMetrics' label, "Lap complete"
SIMTRACE_KEY = re.compile(r"^(?:(\d+)/)?training-simtrace/(\d+)-iteration\.csv$")
METRICS_KEY = re.compile(r"^metrics/TrainingMetrics(?:_(\d+))?\.json$")
LEARNING_STATS = (  # manifest training_stats key, panel title, y label
    ("policy_loss", "Policy loss (clipped surrogate)", "loss"),
    ("value_loss", "Value loss", "loss (squared return error)"),
    ("entropy", "Policy entropy", "nats"),
    ("approx_kl", "Approximate KL of the update", "nats"),
    ("clip_fraction", "Clip fraction", "share of samples"),
    ("explained_variance", "Explained variance of the value", "1 = perfect"),
)
METRIC_FIELDS = (("phase", str), ("trial", int), ("reward_score", int), ("completion_percentage", int),
                 ("episode_status", str), ("elapsed_time_in_milliseconds", int))  # what the charts read (§4.1)
TRAINING_COLOUR, EVALUATION_COLOUR = "tab:blue", "tab:orange"
DPI = 100


class PlotError(StoreError):
    """A run file is missing or malformed; the message names the store and the file."""


# --------------------------------------------------------------------------- reading the run


def _text(store: ModelStore, key: str) -> str | None:
    try:
        return store.get_text(key)
    except ObjectNotFound:
        return None


def _json(store: ModelStore, key: str) -> Any:
    text = _text(store, key)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise PlotError(f"{store.url}/{key} is not valid JSON: {e}") from e


def read_episode_log(store: ModelStore) -> list[dict[str, str]]:
    """The rows of logs/episodes.csv (columns: shared.deepracer_logs.EPISODE_LOG_COLUMNS); [] if absent.

    Raises PlotError naming the line and column of a missing or non-numeric value.
    """
    text = _text(store, EPISODE_LOG)
    rows = list(csv.DictReader(io.StringIO(text))) if text else []
    for line, row in enumerate(rows, start=2):
        for column, kind in (("iteration", int), ("reward", float), ("progress", float), ("status", str)):
            try:
                kind(row[column])
            except (KeyError, TypeError, ValueError) as e:
                raise PlotError(f"{store.url}/{EPISODE_LOG} line {line}: bad {column!r} ({e})") from e
    return rows


def read_training_metrics(store: ModelStore) -> dict[int, list[dict[str, Any]]]:
    """Worker index -> that worker's TrainingMetrics records (deepracer-formats.md §4.1)."""
    found: dict[int, list[dict[str, Any]]] = {}
    for key in store.objects.list("metrics/"):
        match = METRICS_KEY.match(key)
        if not match:
            continue
        data = _json(store, key)
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), list):
            raise PlotError(f"{store.url}/{key}: no 'metrics' list")
        for i, record in enumerate(data["metrics"]):
            problems = [f"{field} must be {kind.__name__}" for field, kind in METRIC_FIELDS
                        if not isinstance(record, dict) or not isinstance(record.get(field), kind)]
            if problems:
                raise PlotError(f"{store.url}/{key}: metrics[{i}]: {', '.join(problems)}")
        found[int(match.group(1) or 0)] = data["metrics"]
    return found


@dataclass(frozen=True)
class Simtrace:
    """One simtrace CSV (deepracer-formats.md §5.1) as columns."""

    worker: int
    iteration: int  # 1-based: the file <iteration-1>-iteration.csv
    columns: dict[str, np.ndarray]

    @property
    def num_rows(self) -> int:
        return len(self.columns["episode"])


NUMERIC_SIMTRACE_COLUMNS = ("episode", "steps", "X", "Y", "steer", "throttle", "progress", "tstamp", "wall_clock")


def parse_simtrace(text: str, worker: int, iteration: int, where: str) -> Simtrace:
    rows = list(csv.DictReader(io.StringIO(text)))
    columns: dict[str, np.ndarray] = {}
    try:
        for name in NUMERIC_SIMTRACE_COLUMNS:
            columns[name] = np.array([float(row[name]) for row in rows], dtype=np.float64)
        for name in ("action", "episode_status"):
            columns[name] = np.array([row[name] for row in rows], dtype=object)
    except (KeyError, TypeError, ValueError) as e:
        raise PlotError(f"{where}: column {name!r} is missing or not a number ({e})") from e
    return Simtrace(worker, iteration, columns)


def read_simtraces(store: ModelStore) -> list[Simtrace]:
    """Every training simtrace of the run (single- and multi-worker layouts), by iteration then worker."""
    traces = []
    for key in store.objects.list():
        match = SIMTRACE_KEY.match(key)
        if match:
            text = store.get_text(key)
            traces.append(parse_simtrace(text, int(match.group(1) or 0), int(match.group(2)) + 1,
                                         f"{store.url}/{key}"))
    return sorted(traces, key=lambda t: (t.iteration, t.worker))


def read_learning_stats(store: ModelStore) -> list[tuple[int, dict[str, float]]]:
    """(iteration, PPO's training_stats) from model/<v>/manifest.json for v >= 1."""
    found = []
    for version in store.list_versions():
        if version == 0:
            continue  # the initial weights: nothing trained yet
        manifest = _json(store, f"model/{version}/manifest.json")
        stats = manifest.get("training_stats") if isinstance(manifest, dict) else None
        if isinstance(stats, dict) and stats:
            found.append((version, {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}))
    return found


# --------------------------------------------------------------------------- figure data


@dataclass(frozen=True)
class IterationSeries:
    """Per-iteration means of a set of episodes (one entry per iteration that has episodes)."""

    iteration: np.ndarray  # int, 1-based
    episodes: np.ndarray  # int, episodes in the iteration
    reward: np.ndarray  # mean total reward per episode
    progress: np.ndarray  # mean progress, %
    lap_completion: np.ndarray  # % of the episodes that completed a lap

    @staticmethod
    def of(rows: Iterable[tuple[int, float, float, bool]]) -> IterationSeries:
        """From (iteration, reward, progress %, lap completed) per episode."""
        by_iteration: dict[int, list[tuple[float, float, bool]]] = {}
        for iteration, reward, progress, lap in rows:
            by_iteration.setdefault(iteration, []).append((reward, progress, lap))
        keys = sorted(by_iteration)
        groups = [np.array(by_iteration[k], dtype=np.float64).reshape(-1, 3) for k in keys]
        return IterationSeries(
            iteration=np.array(keys, dtype=np.int64),
            episodes=np.array([len(g) for g in groups], dtype=np.int64),
            reward=np.array([g[:, 0].mean() for g in groups]),
            progress=np.array([g[:, 1].mean() for g in groups]),
            lap_completion=np.array([100.0 * g[:, 2].mean() for g in groups]),
        )


def training_series(episode_log: list[dict[str, str]]) -> IterationSeries:
    """From logs/episodes.csv: its 0-based ``iteration`` column becomes 1-based."""
    return IterationSeries.of((int(r["iteration"]) + 1, float(r["reward"]), float(r["progress"]),
                               r["status"] == LAP_COMPLETE) for r in episode_log)


def metric_iterations(records: list[dict[str, Any]]) -> list[int]:
    """The iteration each TrainingMetrics record belongs to (1-based).

    A training record with ``trial == 1`` starts the worker's next iteration (DeepRacer and hotlap
    restart ``trial`` each training phase, deepracer-formats.md §4.1); evaluation records belong to
    the iteration they follow: they evaluate the version that iteration published. Evaluation
    records before any training record evaluate version 0 (iteration 0).
    """
    iteration, found = 0, []
    for record in records:
        if record.get("phase") == "training" and record.get("trial") == 1:
            iteration += 1
        found.append(iteration)
    return found


def _phase_rows(records: list[dict[str, Any]], phase: str) -> list[tuple[int, dict[str, Any]]]:
    return [(it, r) for it, r in zip(metric_iterations(records), records, strict=True) if r.get("phase") == phase]


def evaluation_series(metrics: dict[int, list[dict[str, Any]]]) -> IterationSeries:
    """Worker 0's ``phase: "evaluation"`` records per iteration (only worker 0 evaluates, §4.1)."""
    rows = _phase_rows(metrics.get(0, []), "evaluation")
    return IterationSeries.of((it, float(r["reward_score"]), float(r["completion_percentage"]),
                               r["episode_status"] == LAP_COMPLETE_LABEL) for it, r in rows)


@dataclass(frozen=True)
class LapTimes:
    iteration: np.ndarray  # int, 1-based
    seconds: np.ndarray  # lap time, s (sim time: elapsed_time_in_milliseconds / 1000)


def lap_times(metrics: dict[int, list[dict[str, Any]]], phase: str) -> LapTimes:
    """Completed laps of ``phase`` ("training": every worker; "evaluation": worker 0)."""
    workers = list(metrics) if phase == "training" else [0]
    found = [(it, r["elapsed_time_in_milliseconds"] / 1000.0)
             for w in workers for it, r in _phase_rows(metrics.get(w, []), phase)
             if r.get("episode_status") == LAP_COMPLETE_LABEL]
    found.sort()
    return LapTimes(np.array([f[0] for f in found], dtype=np.int64), np.array([f[1] for f in found]))


def learning_series(stats: list[tuple[int, dict[str, float]]]) -> dict[str, np.ndarray]:
    """``iteration`` plus one array per LEARNING_STATS key (NaN where a version lacks it)."""
    series = {"iteration": np.array([it for it, _ in stats], dtype=np.int64)}
    for key, _, _ in LEARNING_STATS:
        series[key] = np.array([s.get(key, np.nan) for _, s in stats], dtype=np.float64)
    return series


@dataclass(frozen=True)
class EpisodePath:
    worker: int
    iteration: int
    episode: int
    x: np.ndarray  # m, the head point (simtrace X)
    y: np.ndarray  # m
    speed: np.ndarray  # m/s, ground speed between consecutive rows (0 at the first row)
    progress: float  # %, at the episode's end
    status: str  # final episode_status token
    seconds: float  # sim time from the first to the last row
    wall_clock: float  # of the last row

    @property
    def label(self) -> str:
        return (f"iteration {self.iteration}, episode {self.episode}"
                + (f", worker {self.worker}" if self.worker else "")
                + f": {self.progress:.0f}% progress, {self.status}, {self.seconds:.1f} s")


def episode_paths(traces: list[Simtrace]) -> list[EpisodePath]:
    paths = []
    for trace in traces:
        c = trace.columns
        for episode in np.unique(c["episode"]):
            rows = np.flatnonzero(c["episode"] == episode)
            rows = rows[np.argsort(c["steps"][rows], kind="stable")]
            x, y, t = c["X"][rows], c["Y"][rows], c["tstamp"][rows]
            dt = np.diff(t)
            step_speed = np.hypot(np.diff(x), np.diff(y)) / np.where(dt > 0, dt, np.inf)
            paths.append(EpisodePath(
                worker=trace.worker, iteration=trace.iteration, episode=int(episode), x=x, y=y,
                speed=np.concatenate(([0.0], step_speed)), progress=float(c["progress"][rows[-1]]),
                status=str(c["episode_status"][rows[-1]]), seconds=float(t[-1] - t[0]),
                wall_clock=float(c["wall_clock"][rows[-1]])))
    return paths


def best_and_latest(paths: list[EpisodePath]) -> tuple[EpisodePath, EpisodePath]:
    """Best: the most progress, then the fastest; latest: the last episode of the last iteration to end."""
    if not paths:
        raise PlotError("the run has no simtrace episodes yet")
    best = max(paths, key=lambda p: (p.progress, -p.seconds, p.iteration))
    latest = max(paths, key=lambda p: (p.iteration, p.wall_clock))
    return best, latest


@dataclass(frozen=True)
class ActionUsage:
    iteration: np.ndarray  # int, 1-based
    labels: list[str]  # one per row of `share`
    share: np.ndarray  # (len(labels), len(iteration)) % of the iteration's steps
    title: str


ANNOTATE_MAX_ITERATIONS = 20  # up to this many iterations the heat map cells carry their numbers
STEERING_BINS = np.linspace(-30.0, 30.0, 7)
SPEED_BINS = np.linspace(0.0, 4.0, 9)


def action_usage(traces: list[Simtrace], metadata: ModelMetadata) -> list[ActionUsage]:
    """Per iteration, the share of steps (``prepare`` rows excluded: the car does not act) per action.

    Discrete: one row per action index of model_metadata.json. Continuous: the steering angle and
    speed the policy asked for, in bins.
    """
    iterations = sorted({t.iteration for t in traces})
    acting = {it: [t.columns for t in traces if t.iteration == it] for it in iterations}

    def columns(it: int, name: str) -> np.ndarray:
        parts = [c[name][c["episode_status"] != "prepare"] for c in acting[it]]
        return np.concatenate(parts) if parts else np.array([])

    def shares(counts: list[np.ndarray]) -> np.ndarray:
        table = np.array(counts, dtype=np.float64).T
        return 100.0 * table / np.maximum(table.sum(axis=0, keepdims=True), 1.0)

    its = np.array(iterations, dtype=np.int64)
    if isinstance(metadata.action_space, list):
        labels = [f"{i}: {a.steering_angle:+.0f}°, {a.speed:.1f} m/s" for i, a in enumerate(metadata.action_space)]
        counts = [np.bincount(columns(it, "action").astype(np.int64), minlength=len(labels))[:len(labels)]
                  for it in iterations]
        return [ActionUsage(its, labels, shares(counts), "Discrete actions chosen")]
    steer = [np.histogram(columns(it, "steer"), STEERING_BINS)[0] for it in iterations]
    speed = [np.histogram(columns(it, "throttle"), SPEED_BINS)[0] for it in iterations]
    return [
        ActionUsage(its, _bin_labels(STEERING_BINS, "°"), shares(steer), "Steering angle asked for"),
        ActionUsage(its, _bin_labels(SPEED_BINS, " m/s"), shares(speed), "Speed asked for"),
    ]


def _bin_labels(edges: np.ndarray, unit: str) -> list[str]:
    return [f"{lo:g} to {hi:g}{unit}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


# --------------------------------------------------------------------------- figures


def _iteration_axis(ax: Axes, label: bool = True) -> None:
    if label:
        ax.set_xlabel("training iteration")
    ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
    ax.grid(alpha=0.3)


def training_figure(train: IterationSeries, evaluation: IterationSeries, episode_log: list[dict[str, str]],
                    run_name: str) -> Figure:
    fig = Figure(figsize=(10, 10), dpi=DPI, layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    every_it = np.array([int(r["iteration"]) + 1 for r in episode_log])
    panels = (("reward", "Reward per episode", "total reward", "reward"),
              ("progress", "Progress per episode", "progress (% of a lap)", "progress"),
              ("lap_completion", "Lap completion", "episodes completing a lap (%)", None))
    for ax, (field, title, ylabel, column) in zip(axes, panels, strict=True):
        if column:
            values = np.array([float(r[column]) for r in episode_log])
            ax.scatter(every_it, values, s=8, color=TRAINING_COLOUR, alpha=0.25, label="training episode")
        ax.plot(train.iteration, getattr(train, field), "o-", color=TRAINING_COLOUR, label="training (mean)")
        if len(evaluation.iteration):
            ax.plot(evaluation.iteration, getattr(evaluation, field), "s--", color=EVALUATION_COLOUR,
                    label="evaluation (mean)")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        _iteration_axis(ax, label=ax is axes[-1])
        ax.legend(loc="best", fontsize="small")
    axes[1].set_ylim(0, 105)
    axes[2].set_ylim(-5, 105)
    fig.suptitle(f"{run_name}: training" + (" and evaluation" if len(evaluation.iteration) else
                                            " (no evaluation episodes in TrainingMetrics.json)"))
    return fig


def learning_figure(series: dict[str, np.ndarray], run_name: str) -> Figure:
    fig = Figure(figsize=(12, 7), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 3, sharex=True).ravel()
    for ax, (key, title, ylabel) in zip(axes, LEARNING_STATS, strict=True):
        ax.plot(series["iteration"], series[key], "o-", color="tab:purple", label=key)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        _iteration_axis(ax, label=ax in axes[3:])
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"{run_name}: PPO update statistics per iteration (means over epochs and minibatches)")
    return fig


def _draw_track(ax: Axes, track: Any) -> None:
    for ring, colour in zip(track.road_rings, ("#b0b0b0", "#e8f0e0", "#b0b0b0"), strict=False):
        ax.fill(ring[:, 0], ring[:, 1], color=colour, zorder=0)
    for border in (track.inner, track.outer):
        ax.plot(border[:, 0], border[:, 1], color="white", linewidth=1.5, zorder=1)
    ax.plot(track.center[:, 0], track.center[:, 1], color="white", linestyle="--", linewidth=0.8, zorder=1)


def track_figure(best: EpisodePath, latest: EpisodePath, track: Any | None, run_name: str) -> Figure:
    fig = Figure(figsize=(14, 6.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2)
    top = max(float(best.speed.max()), float(latest.speed.max()), 0.5)
    lines = None
    latest_kind = "Latest episode" + (" (also the best)" if latest is best else "")
    for ax, (kind, path) in zip(axes, (("Best episode (most progress, then fastest)", best), (latest_kind, latest)),
                                strict=True):
        ax.set_facecolor("#e8f0e0")
        if track is not None:
            _draw_track(ax, track)
        points = np.stack((path.x, path.y), axis=1)
        segments = np.stack((points[:-1], points[1:]), axis=1)
        lines = LineCollection(list(segments), cmap="plasma", linewidth=3, zorder=2)
        lines.set_array(path.speed[1:])
        lines.set_clim(0.0, top)
        ax.add_collection(lines)
        ax.plot(path.x[:1], path.y[:1], "o", color="tab:green", markersize=9, zorder=3, label="start")
        ax.plot(path.x[-1:], path.y[-1:], "X", color="black", markersize=9, zorder=3, label=f"end ({path.status})")
        ax.set_title(f"{kind}\n{path.label}", fontsize="medium")
        ax.set_aspect("equal")
        ax.autoscale_view()
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.legend(loc="upper right", fontsize="small")
    assert lines is not None
    fig.colorbar(lines, ax=list(axes), label="ground speed (m/s)", shrink=0.8)
    fig.suptitle(f"{run_name}: paths on {track.name if track is not None else 'an unknown track'}, "
                 "coloured by speed")
    return fig


def actions_figure(usages: list[ActionUsage], run_name: str) -> Figure:
    fig = Figure(figsize=(10, 3 + 0.45 * sum(len(u.labels) for u in usages)), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(usages), 1))
    for ax, usage in zip(axes, usages, strict=True):
        # Columns are the iterations that have simtrace, in order (an iteration may be missing).
        image = ax.imshow(usage.share, aspect="auto", cmap="viridis", vmin=0, origin="lower")
        ax.set_yticks(range(len(usage.labels)), usage.labels)
        step = max(1, len(usage.iteration) // ANNOTATE_MAX_ITERATIONS)
        ticks = range(0, len(usage.iteration), step)
        ax.set_xticks(list(ticks), [str(usage.iteration[i]) for i in ticks])
        if len(usage.iteration) <= ANNOTATE_MAX_ITERATIONS:
            bright = 0.6 * max(float(usage.share.max()), 1e-9)  # viridis is light at the top: dark text there
            for row, column in np.ndindex(usage.share.shape):
                value = usage.share[row, column]
                ax.text(column, row, f"{value:.0f}%", ha="center", va="center", fontsize="small",
                        color="black" if value > bright else "white")
        ax.set_title(usage.title)
        ax.set_xlabel("training iteration")
        fig.colorbar(image, ax=ax, label="share of the iteration's steps (%)")
    fig.suptitle(f"{run_name}: action usage per iteration")
    return fig


def lap_time_figure(evaluation: LapTimes, training: LapTimes, run_name: str) -> Figure:
    fig = Figure(figsize=(10, 5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    if len(training.iteration):
        ax.scatter(training.iteration, training.seconds, s=12, color=TRAINING_COLOUR, alpha=0.4,
                   label="training lap")
    if len(evaluation.iteration):
        ax.scatter(evaluation.iteration, evaluation.seconds, s=30, marker="s", color=EVALUATION_COLOUR,
                   label="evaluation lap")
        its = np.unique(evaluation.iteration)
        best = [evaluation.seconds[evaluation.iteration == it].min() for it in its]
        ax.plot(its, best, "-", color=EVALUATION_COLOUR, label="best evaluation lap of the iteration")
    ax.set_title("Lap times of completed laps (sim time)")
    ax.set_ylabel("lap time (s)")
    _iteration_axis(ax)
    ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"{run_name}: lap times")
    return fig


# --------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class PlotResult:
    written: list[Path]
    skipped: list[str]  # "<file>: why", for charts the run has no data for


def _run_settings(store: ModelStore) -> tuple[RunSettings, ModelMetadata]:
    try:
        settings = RunSettings.parse(store.get_text(TRAINING_PARAMS), f"{store.url}/{TRAINING_PARAMS}")
        metadata = ModelMetadata.parse(store.get_text(MODEL_METADATA), f"{store.url}/{MODEL_METADATA}")
    except ObjectNotFound as e:
        raise PlotError(f"{e}: is {store.url} a hotlap run?") from e
    except ConfigError as e:
        raise PlotError(str(e)) from e
    return settings, metadata


def _load_track(store: ModelStore) -> Any | None:
    """The run's track as its workers load it (a track file stored with the run, else the packaged
    route); None when it cannot be loaded: the paths are then drawn without the track."""
    from shared.run_files import load_run_files
    from simulator.track import TrackError, load_run_track

    try:
        files = load_run_files(store)
        return load_run_track(files.settings.track, files.track_npy, f"{store.url}/{files.settings.track_file}")
    except (TrackError, ConfigError, StoreError, OSError):
        return None


def plot_run(store: ModelStore, output: Path, run_name: str) -> PlotResult:
    """Write the run's charts into ``output`` (created); raises PlotError / StoreError on bad run files."""
    settings, metadata = _run_settings(store)
    output.mkdir(parents=True, exist_ok=True)
    episode_log = read_episode_log(store)
    metrics = read_training_metrics(store)
    traces = read_simtraces(store)
    figures: dict[str, Figure] = {}
    skipped: list[str] = []
    if episode_log:
        figures["training.png"] = training_figure(training_series(episode_log), evaluation_series(metrics),
                                                  episode_log, run_name)
    else:
        skipped.append(f"training.png: no {EPISODE_LOG} yet")
    stats = read_learning_stats(store)
    if stats:
        figures["learning.png"] = learning_figure(learning_series(stats), run_name)
    else:
        skipped.append("learning.png: no trained model version yet")
    if traces:
        best, latest = best_and_latest(episode_paths(traces))
        figures["track.png"] = track_figure(best, latest, _load_track(store), run_name)
        figures["actions.png"] = actions_figure(action_usage(traces, metadata), run_name)
    else:
        skipped += ["track.png: no training-simtrace yet", "actions.png: no training-simtrace yet"]
    evaluation_laps, training_laps = lap_times(metrics, "evaluation"), lap_times(metrics, "training")
    if len(evaluation_laps.iteration) or len(training_laps.iteration):
        figures["laptimes.png"] = lap_time_figure(evaluation_laps, training_laps, run_name)
    else:
        skipped.append("laptimes.png: no completed lap in TrainingMetrics.json yet")
    written = []
    for name, figure in figures.items():
        figure.savefig(output / name)
        written.append(output / name)
    return PlotResult(written, skipped)
