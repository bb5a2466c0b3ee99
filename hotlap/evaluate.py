"""`hotlap evaluate`: greedy trials of a trained model, timed and written as DeepRacer writes them.

How a trial runs (DeepRacer's stand-alone evaluation, deepracer-formats.md §12; defaults from
deepracer-for-cloud's ``defaults/template-run.env``: 3 trials, ``DR_EVAL_IS_CONTINUOUS=True``,
``DR_EVAL_OFF_TRACK_PENALTY=5.0``, ``DR_EVAL_MAX_RESETS=100``):

- the policy acts greedily (the most likely discrete action, the mean of a continuous one), on the
  observations it was trained on (``stack_size`` included);
- trial ``k`` of ``n`` starts ``k/n`` of the way round the lap (0, 1/3, 2/3 for three trials). The
  simulator is deterministic, so trials from one start would repeat one drive and prove nothing;
  spread starts show whether the model drives the whole track. Open tracks (strips) have one start;
- continuous (the default): a car that leaves the track, is immobilized or drives backwards is put
  back on the centre line where it was, heading along the track, and the trial goes on; an off-track
  adds ``off_track_penalty_s`` to the lap time, as DeepRacer's penalty pause does. After
  ``max_resets`` resets the trial ends unfinished. Not continuous: the first such event ends it;
- the lap time is simulation time at DeepRacer's 15 steps/s (the ``prepare`` step after each start or
  reset does not count) plus the penalties: a number that does not depend on the machine's speed.

Written to the run's store, where DeepRacer's tools look (§4.3, §10.2):
``metrics/evaluation/evaluation-<YYYYmmddHHMMSS>.json`` (DeepRacer's EvalMetrics, one record per
trial) and ``evaluation-<YYYYmmddHHMMSS>/evaluation-simtrace/0-iteration.csv`` (the simtrace columns of
§5.1, ``episode`` = trial, ``progress`` = the trial's progress, ``tstamp`` = the trials' clock run one
after another as DeepRacer runs them), which deepracer-utils' ``DeepRacerLog.load_evaluation_trace``
reads from a local folder or S3.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hotlap.errors import EvaluationError
from hotlap.models import TrainedModel
from shared.config import RunSettings
from shared.deepracer_logs import STATUS_LABELS, SimtraceRow, continuous_action_label, simtrace_csv
from shared.store import ModelStore, StoreError
from simulator.car import STEP_SECONDS
from simulator.env import EnvSettings, StepResult, VectorRacingEnv
from simulator.stacking import ObservationStack
from simulator.track import Track

DEFAULT_TRIALS = 3  # DR_EVAL_NUMBER_OF_TRIALS
DEFAULT_OFF_TRACK_PENALTY_S = 5.0  # DR_EVAL_OFF_TRACK_PENALTY
DEFAULT_MAX_RESETS = 100  # DR_EVAL_MAX_RESETS
DEFAULT_MAX_STEPS: int = RunSettings.model_fields["max_steps_per_episode"].default  # per trial
RESET_EVENTS = ("off_track", "immobilized", "reversed")
CAMERAS = ("FRONT_FACING_CAMERA", "STEREO_CAMERAS")


@dataclass(frozen=True)
class EvaluationSettings:
    """How to evaluate; every default in this one place (see the module docstring for the sources)."""

    trials: int = DEFAULT_TRIALS
    reverse: bool = False
    continuous: bool = True
    off_track_penalty_s: float = DEFAULT_OFF_TRACK_PENALTY_S
    max_resets: int = DEFAULT_MAX_RESETS
    max_steps: int = DEFAULT_MAX_STEPS  # running steps per trial (a car that never finishes)
    record_frames: bool = False  # keep the camera image and pose of every step (for a video)

    def problems(self) -> list[str]:
        problems = []
        if not 1 <= self.trials <= 100:
            problems.append(f"--trials {self.trials}: must be 1..100")
        if not (self.off_track_penalty_s >= 0.0 and np.isfinite(self.off_track_penalty_s)):
            problems.append(f"--off-track-penalty {self.off_track_penalty_s}: must be a finite number >= 0 s")
        if self.max_resets < 0:
            problems.append(f"--max-resets {self.max_resets}: must be >= 0")
        if self.max_steps < 1:
            problems.append(f"--max-steps {self.max_steps}: must be >= 1")
        return problems


@dataclass
class Frame:
    """One step of a trial as a video shows it."""

    camera: np.ndarray  # (120, 160) uint8, the first lens
    x: float  # head point, m
    y: float
    heading: float  # deg
    speed: float  # commanded, m/s
    progress: float  # the trial's, percent
    clock_s: float  # the trial's lap clock, s
    status: str


@dataclass
class Trial:
    """One trial's outcome; times in seconds of simulation time."""

    trial: int  # 1-based, as DeepRacer's metrics count trials
    start_fraction: float  # where on the lap it started (0..1)
    progress: float = 0.0  # percent of the lap
    completed: bool = False
    status: str = "in_progress"  # the status token that ended it (lap_complete, off_track, time_up, ...)
    steps: int = 0  # running steps
    clock_s: float = 0.0  # lap clock: steps / 15 + penalties
    off_track_count: int = 0
    immobilized_count: int = 0
    reversed_count: int = 0
    rows: list[SimtraceRow] = field(default_factory=list, repr=False)
    frames: list[Frame] = field(default_factory=list, repr=False)

    @property
    def reset_count(self) -> int:
        """DeepRacer's reset_count: the sum of crash, immobilized, off-track and reversed counts (§4.3)."""
        return self.off_track_count + self.immobilized_count + self.reversed_count

    @property
    def lap_time_s(self) -> float | None:
        return round(self.clock_s, 4) if self.completed else None

    def summary(self) -> dict[str, Any]:
        return {
            "trial": self.trial, "start_fraction": round(self.start_fraction, 6), "completed": self.completed,
            "lap_time_s": self.lap_time_s, "progress": round(self.progress, 4), "status": self.status,
            "steps": self.steps, "off_track_count": self.off_track_count,
            "immobilized_count": self.immobilized_count, "reversed_count": self.reversed_count,
            "reset_count": self.reset_count,
        }


@dataclass
class Evaluation:
    run: str
    version: int
    track: str
    reverse: bool
    settings: EvaluationSettings
    trials: list[Trial]
    metrics_key: str | None = None
    simtrace_key: str | None = None

    @property
    def laps_completed(self) -> int:
        return sum(t.completed for t in self.trials)

    @property
    def best_lap_s(self) -> float | None:
        laps = [t.clock_s for t in self.trials if t.completed]
        return round(min(laps), 4) if laps else None

    @property
    def mean_lap_s(self) -> float | None:
        laps = [t.clock_s for t in self.trials if t.completed]
        return round(float(np.mean(laps)), 4) if laps else None

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run, "version": self.version, "track": self.track, "reverse": self.reverse,
            "continuous": self.settings.continuous, "off_track_penalty_s": self.settings.off_track_penalty_s,
            "trials": [t.summary() for t in self.trials],
            "laps_completed": self.laps_completed, "best_lap_s": self.best_lap_s, "mean_lap_s": self.mean_lap_s,
            "metrics": self.metrics_key, "simtrace": self.simtrace_key,
        }

    def table(self) -> str:
        header = f"{'trial':>5} {'start':>6} {'lap time s':>10} {'progress %':>10} {'status':>13} " \
                 f"{'off track':>9} {'resets':>6}"
        lines = [f"model version {self.version} of {self.run} on {self.track}"
                 + (" (reversed)" if self.reverse else ""), header]
        for t in self.trials:
            lap = f"{t.lap_time_s:10.3f}" if t.lap_time_s is not None else f"{'-':>10}"
            lines.append(f"{t.trial:>5} {t.start_fraction:>6.3f} {lap} {t.progress:>10.1f} "
                         f"{STATUS_LABELS.get(t.status, t.status):>13} {t.off_track_count:>9} {t.reset_count:>6}")
        best = f"{self.best_lap_s:.3f} s" if self.best_lap_s is not None else "-"
        lines.append(f"laps {self.laps_completed}/{len(self.trials)}, best lap {best}"
                     + (f", mean {self.mean_lap_s:.3f} s" if self.mean_lap_s is not None else ""))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- trials


def run_trials(model: TrainedModel, track: Track, settings: EvaluationSettings) -> list[Trial]:
    """Drive ``settings.trials`` greedy trials at once (one car each) and return them in order.

    Raises EvaluationError for settings that cannot run.
    """
    problems = settings.problems()
    if problems:
        raise EvaluationError("; ".join(problems))
    n = settings.trials
    env = VectorRacingEnv(track, n, EnvSettings(
        sensors=model.sensors, max_steps=settings.max_steps + 1, reverse=settings.reverse,
        round_robin_advance=0.0, stagger_starts=False), reward_function=_no_reward)
    driven = env.track  # reversed when settings.reverse
    starts = [k / n if driven.closed else 0.0 for k in range(n)]
    trials = [Trial(trial=k + 1, start_fraction=starts[k]) for k in range(n)]
    runner = _TrialRunner(env, model, settings, trials)
    runner.run()
    return trials


def _no_reward(params: dict[str, Any]) -> float:
    """Evaluation computes no reward (DRfC's DR_EVAL_DEBUG_REWARD=False): the simtrace's reward is 0."""
    return 0.0


class _TrialRunner:
    """Steps every unfinished trial's car together; resets are per car."""

    def __init__(self, env: VectorRacingEnv, model: TrainedModel, settings: EvaluationSettings,
                 trials: list[Trial]) -> None:
        self.env, self.model, self.settings, self.trials = env, model, settings, trials
        self.base_settings = env.settings
        self.n = len(trials)
        self.stack = ObservationStack(model.stack_size)
        self.discrete = model.policy.action_spec.kind == "discrete"
        # None for a lidar-only model: its trials record no camera frames (no video)
        self.camera = next((name for name in CAMERAS if name in model.sensors), None)
        self.running = np.ones(self.n, dtype=bool)
        self.covered = np.zeros(self.n)  # trial progress at the start of the current segment
        self.penalty_due = np.zeros(self.n)  # pause to write in the next simtrace row
        self.obs: dict[str, np.ndarray] = {}

    def run(self) -> None:
        for car in range(self.n):
            self._place(car, self.trials[car].start_fraction, first=True)
        while self.running.any():
            self._step()

    def _place(self, car: int, fraction: float, first: bool = False) -> None:
        # The env starts a car's episode at settings.start_offset (no stagger, no round robin):
        # one car at a time, each at its own point of the lap.
        self.env.settings = replace(self.base_settings, start_offset=float(fraction) % 1.0)
        raw = self.env.reset(car_ids=np.array([car]))
        self.obs = self.stack.reset(raw) if first and car == 0 else self.stack.reset(raw, np.array([car]))

    def _step(self) -> None:
        # Every car acts (row i = trial i); finished cars are not stepped. n is small, so the few
        # wasted rows cost less than re-batching.
        act = self.model.policy.act(self.obs, deterministic=True)
        cars = np.flatnonzero(self.running)
        frames = {int(car): self.obs[self.camera][car] for car in cars} \
            if self.settings.record_frames and self.camera is not None else {}
        result = self.env.step(act.steering_deg, act.speed, self.running)
        self.obs = self.stack.push(result.obs)
        for car in cars:
            action = act.action[car]
            label = str(int(action)) if self.discrete else continuous_action_label(
                float(result.steering_angle[car]), float(result.speed[car]))
            self._record(int(car), result, label, frames.get(int(car)))

    def _record(self, car: int, result: StepResult, action: str, camera: np.ndarray | None) -> None:
        trial, status = self.trials[car], str(result.status[car])
        if status != "prepare":
            trial.steps += 1
            trial.clock_s += STEP_SECONDS
        progress = self._trial_progress(car, float(result.progress[car]))
        trial.progress = max(0.0, min(progress, 100.0))
        if trial.progress >= 100.0:
            status = "lap_complete"
        elif status == "lap_complete":  # the segment's own lap, not the trial's (cannot happen on a loop)
            status = "in_progress"
        done = status == "lap_complete" or (status in RESET_EVENTS and not self.settings.continuous)
        if status in RESET_EVENTS:
            setattr(trial, f"{status}_count", getattr(trial, f"{status}_count") + 1)
            if self.settings.continuous and trial.reset_count > self.settings.max_resets:
                done = True
        if not done and trial.steps >= self.settings.max_steps:
            status, done = "time_up", True
        self._trace(car, trial, result, action, status, done, camera)
        if done:
            trial.status, trial.completed = status, status == "lap_complete"
            self.running[car] = False
        elif status in RESET_EVENTS:
            self._reset_after(car, trial, status)

    def _reset_after(self, car: int, trial: Trial, event: str) -> None:
        """Continuous evaluation: back on the centre line where the car was, the penalty on the clock."""
        if event == "off_track":
            trial.clock_s += self.settings.off_track_penalty_s
            self.penalty_due[car] = self.settings.off_track_penalty_s
        self.covered[car] = trial.progress
        track = self.env.track
        fraction = trial.start_fraction + trial.progress / 100.0 if track.closed else trial.progress / 100.0
        self._place(car, fraction)

    def _trial_progress(self, car: int, segment_progress: float) -> float:
        """The trial's progress from the progress of the segment since the last reset (env's, relative
        to the segment's start): added on a loop, scaled to the remaining length on an open track."""
        covered = float(self.covered[car])
        if self.env.track.closed:
            return covered + segment_progress
        return covered + segment_progress * (100.0 - covered) / 100.0

    def _trace(self, car: int, trial: Trial, result: StepResult, action: str, status: str, done: bool,
               camera: np.ndarray | None) -> None:
        row = SimtraceRow(
            episode=trial.trial - 1, steps=float(len(trial.rows) + 1), x=float(result.x[car]),
            y=float(result.y[car]), yaw=float(result.heading[car]), steer=float(result.steering_angle[car]),
            throttle=float(result.speed[car]), action=action, reward=0.0, done=done,
            all_wheels_on_track=bool(result.all_wheels_on_track[car]), progress=trial.progress,
            closest_waypoint=int(result.closest_waypoint[car]), track_len=float(result.track_len[car]),
            tstamp=trial.clock_s, episode_status=status, pause_duration=float(self.penalty_due[car]),
            wall_clock=time.time())
        self.penalty_due[car] = 0.0
        trial.rows.append(row)
        if camera is not None:
            image = camera[-1] if camera.ndim == 3 and self.camera == "FRONT_FACING_CAMERA" else camera
            image = image if image.ndim == 2 else image[-2]  # stereo: the left lens of the newest pair
            trial.frames.append(Frame(image.copy(), row.x, row.y, row.yaw, row.throttle, trial.progress,
                                      trial.clock_s, status))


# --------------------------------------------------------------------------------------------- files


def metrics_json(trials: list[Trial]) -> str:
    """DeepRacer's EvalMetrics file (§4.3): {"metrics": [one record per trial]}, no version key.

    The trials run on one clock, one after another, as DeepRacer runs them: ``start_time`` of
    trial k+1 is ``metric_time`` of trial k (ms).
    """
    records, clock_ms = [], 0
    for t in trials:
        elapsed = int(round(t.clock_s * 1000))
        records.append({
            "completion_percentage": int(t.progress), "metric_time": clock_ms + elapsed, "start_time": clock_ms,
            "elapsed_time_in_milliseconds": elapsed, "episode_status": STATUS_LABELS.get(t.status, t.status),
            "crash_count": 0, "immobilized_count": t.immobilized_count, "off_track_count": t.off_track_count,
            "reversed_count": t.reversed_count, "reset_count": t.reset_count, "trial": t.trial,
        })
        clock_ms += elapsed
    return json.dumps({"metrics": records})


def simtrace(trials: list[Trial]) -> str:
    """All trials' steps in one simtrace CSV, tstamp on the same consecutive clock as the metrics."""
    rows, offset = [], 0.0
    for t in trials:
        rows += [replace(row, tstamp=round(offset + row.tstamp, 6)) for row in t.rows]
        offset += round(t.clock_s * 1000) / 1000.0
    return simtrace_csv(rows)


def evaluation_keys(store: ModelStore, now: Callable[[], float] = time.time) -> tuple[str, str]:
    """(metrics key, simtrace key) named by a UTC YYYYmmddHHMMSS stamp not used in this run yet."""
    stamp = int(now())
    while True:
        name = time.strftime("%Y%m%d%H%M%S", time.gmtime(stamp))
        metrics = f"metrics/evaluation/evaluation-{name}.json"
        trace = f"evaluation-{name}/evaluation-simtrace/0-iteration.csv"
        if not (store.objects.exists(metrics) or store.objects.exists(trace)):
            return metrics, trace
        stamp += 1


def evaluate(model: TrainedModel, track: Track, settings: EvaluationSettings, write: bool = True) -> Evaluation:
    """Run the trials and (``write``) store DeepRacer's evaluation files in the model's run.

    Raises EvaluationError (settings) and StoreError (the store cannot be written).
    """
    trials = run_trials(model, track, settings)
    result = Evaluation(run=model.store.url, version=model.version, track=track.name, reverse=settings.reverse,
                        settings=settings, trials=trials)
    if write:
        metrics_key, trace_key = evaluation_keys(model.store)
        try:
            model.store.put_text(trace_key, simtrace(trials))
            model.store.put_text(metrics_key, metrics_json(trials))
        except StoreError as e:
            raise StoreError(f"{e} (the trials ran; --no-write skips storing their files)") from e
        result.metrics_key, result.simtrace_key = metrics_key, trace_key
    return result
