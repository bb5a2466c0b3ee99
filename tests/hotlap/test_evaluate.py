"""`hotlap evaluate`: trial logic with known drivers, then the command on a really trained run."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hotlap.evaluate as evaluate_module
from hotlap.cli import main as cli_main
from hotlap.evaluate import EvaluationSettings, metrics_json, run_trials, simtrace
from hotlap.models import TrainedModel, load_model, open_run, resolve_version
from shared.config import Hyperparameters, ModelMetadata, RunSettings
from shared.networks import ActionSpec, ActResult
from shared.run_files import RunFiles
from shared.store import CHECKPOINTS_INDEX, TRAINING_PARAMS, S3Store, StoreError
from simulator.env import VectorRacingEnv
from simulator.track import load_track
from tests.hotlap.conftest import upload_run

EVAL_METRICS_FIELDS = {"completion_percentage", "metric_time", "start_time", "elapsed_time_in_milliseconds",
                       "episode_status", "crash_count", "immobilized_count", "off_track_count", "reversed_count",
                       "reset_count", "trial"}  # deepracer-formats.md §4.3


# ------------------------------------------------------------------------------- known drivers


class SeenEnvs(list):  # type: ignore[type-arg]
    """The envs hotlap.evaluate built during a test (a driver reads the cars' poses from them)."""


@pytest.fixture
def envs(monkeypatch: pytest.MonkeyPatch) -> SeenEnvs:
    seen = SeenEnvs()

    class Env(VectorRacingEnv):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            seen.append(self)

    monkeypatch.setattr(evaluate_module, "VectorRacingEnv", Env)
    return seen


class Driver:
    """A stand-in policy (same act() contract) that sees the cars' poses: pure pursuit of the centre
    line (``lookahead`` m ahead), or straight ahead when ``steer`` is False. Row i of a batch is car i."""

    action_spec = ActionSpec("discrete", ((0.0, 1.0),))

    def __init__(self, envs: SeenEnvs, speed: float = 1.5, steer: bool = True, lookahead: float = 0.45):
        self.envs, self.speed, self.steer, self.lookahead = envs, speed, steer, lookahead

    def act(self, obs: dict[str, np.ndarray], deterministic: bool = False) -> ActResult:
        assert deterministic
        env = self.envs[-1]
        head, yaw = env.cars.head_points(), env.cars.yaw
        steering = np.zeros(len(head))
        if self.steer:
            ahead = env.track.point_at(env.track.project(head).distance + self.lookahead)
            bearing = np.degrees(np.arctan2(ahead[:, 1] - head[:, 1], ahead[:, 0] - head[:, 0]))
            error = (bearing - np.degrees(yaw) + 180.0) % 360.0 - 180.0
            steering = np.clip(2.0 * error, -30.0, 30.0)
        n = len(head)
        return ActResult(np.zeros(n, np.int64), np.zeros(n, np.float32), np.zeros(n, np.float32),
                         steering.astype(np.float32), np.full(n, self.speed, np.float32))


def driven_model(driver: Driver, stack_size: int = 1) -> TrainedModel:
    metadata = ModelMetadata.parse(json.dumps({"action_space": [{"steering_angle": 0, "speed": 1.0}],
                                               "sensor": ["FRONT_FACING_CAMERA"]}))
    files = RunFiles(RunSettings(), metadata, Hyperparameters.model_validate({"stack_size": stack_size}),
                     "def reward_function(params):\n    return 1.0\n")
    return TrainedModel(store=None, files=files, version=0, policy=driver)  # type: ignore[arg-type]


def rows_of(trace: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(trace)))


# ------------------------------------------------------------------------------- trial logic


def test_trials_start_evenly_spread_over_the_lap_and_time_the_lap_in_sim_time(envs: SeenEnvs):
    track = load_track("reinvent_base")
    trials = run_trials(driven_model(Driver(envs)), track, EvaluationSettings(trials=3, max_steps=2000))
    assert [t.start_fraction for t in trials] == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert all(t.completed and t.status == "lap_complete" and t.progress == 100.0 for t in trials)
    for t in trials:
        assert t.reset_count == 0
        assert t.steps == len(t.rows) - 1  # every row but the first (prepare) step is a running step
        assert t.lap_time_s == pytest.approx(t.steps / 15.0, abs=1e-3)  # 15 steps/s, prepare step not counted
        first = t.rows[0]
        start = track.pose_at(np.array([t.start_fraction * track.length]))[0][0]
        assert first.episode_status == "prepare" and np.hypot(first.x - start[0], first.y - start[1]) < 0.2
    # a lap of re:Invent 2018 (17.7 m) at 1.5 m/s: ~12-14 s, whatever the start
    assert all(11.0 < t.lap_time_s < 15.0 for t in trials)  # type: ignore[operator]
    assert len({round(t.rows[0].x, 2) for t in trials}) == 3  # three different starts


def test_reverse_drives_the_track_the_other_way(envs: SeenEnvs):
    track = load_track("Oval_track")
    trials = run_trials(driven_model(Driver(envs)), track, EvaluationSettings(trials=2, reverse=True,
                                                                              max_steps=2000))
    assert all(t.completed for t in trials)
    path = np.array([(r.x, r.y) for r in trials[0].rows[:30]])
    along = track.project(path).distance  # on the track as stored, forward
    assert along[-1] < along[1]  # reversed: forward distance decreases


def test_continuous_evaluation_resets_the_car_where_it_left_with_a_penalty(envs: SeenEnvs):
    track = load_track("reinvent_base")
    settings = EvaluationSettings(trials=1, max_resets=3, off_track_penalty_s=5.0, max_steps=3000)
    (trial,) = run_trials(driven_model(Driver(envs, steer=False)), track, settings)
    assert trial.off_track_count == 4 and trial.reset_count == 4  # the 4th reset is one too many
    assert not trial.completed and trial.status == "off_track" and trial.lap_time_s is None
    assert trial.clock_s == pytest.approx(trial.steps / 15.0 + 3 * 5.0, abs=1e-3)  # penalties of the 3 resets
    rows = trial.rows
    offs = [i for i, r in enumerate(rows) if r.episode_status == "off_track"]
    assert len(offs) == 4 and rows[-1].done and rows[offs[-1]] is rows[-1]
    for i in offs[:-1]:
        after = rows[i + 1]  # put back on the centre line where it left, progress carried on
        assert after.episode_status == "prepare" and after.pause_duration == 5.0
        where = track.project(np.array([[after.x, after.y], [rows[i].x, rows[i].y]]))
        assert abs(where.offset[0]) < 0.05  # on the centre line
        assert abs(where.distance[0] - where.distance[1]) < 0.3  # at the point of the lap where it left
        assert after.progress == pytest.approx(rows[i].progress, abs=1.5)
    assert rows[offs[-1]].progress > rows[offs[0]].progress + 5.0  # the trial went on round the lap


def test_not_continuous_ends_the_trial_at_the_first_off_track(envs: SeenEnvs):
    settings = EvaluationSettings(trials=2, continuous=False, max_steps=3000)
    trials = run_trials(driven_model(Driver(envs, steer=False)), load_track("reinvent_base"), settings)
    for t in trials:
        assert (t.status, t.off_track_count, t.completed) == ("off_track", 1, False)
        assert t.clock_s == pytest.approx(t.steps / 15.0)  # no penalty when the trial ends there


def test_a_trial_that_never_finishes_ends_at_max_steps(envs: SeenEnvs):
    (trial,) = run_trials(driven_model(Driver(envs, speed=0.3)), load_track("reinvent_base"),
                          EvaluationSettings(trials=1, max_steps=25))
    assert (trial.status, trial.steps, trial.completed) == ("time_up", 25, False)


def test_stacked_model_sees_its_stack(envs: SeenEnvs):
    seen: list[tuple[int, ...]] = []
    driver = Driver(envs)
    original = driver.act

    def act(obs: dict[str, np.ndarray], deterministic: bool = False) -> ActResult:
        seen.append(obs["FRONT_FACING_CAMERA"].shape)
        return original(obs, deterministic)

    driver.act = act  # type: ignore[method-assign]
    run_trials(driven_model(driver, stack_size=3), load_track("reinvent_base"),
               EvaluationSettings(trials=2, max_steps=5))
    assert seen and all(shape == (2, 3, 120, 160) for shape in seen)


def test_files_follow_deepracers_evaluation_formats(envs: SeenEnvs):
    trials = run_trials(driven_model(Driver(envs)), load_track("reinvent_base"),
                        EvaluationSettings(trials=3, max_steps=2000))
    records = json.loads(metrics_json(trials))
    assert set(records) == {"metrics"}  # EvalMetrics has no version key (§4.3)
    assert [set(r) for r in records["metrics"]] == [EVAL_METRICS_FIELDS] * 3
    assert [r["trial"] for r in records["metrics"]] == [1, 2, 3]
    for r, t in zip(records["metrics"], trials, strict=True):
        assert r["episode_status"] == "Lap complete" and r["completion_percentage"] == 100
        assert r["elapsed_time_in_milliseconds"] == round(t.clock_s * 1000)
        assert r["metric_time"] - r["start_time"] == r["elapsed_time_in_milliseconds"]
    starts = [r["start_time"] for r in records["metrics"]]
    ends = [r["metric_time"] for r in records["metrics"]]
    assert starts == [0, ends[0], ends[1]]  # one clock, trials one after another
    rows = rows_of(simtrace(trials))
    assert [int(r["episode"]) for r in rows] == sorted(int(r["episode"]) for r in rows)
    assert {r["episode"] for r in rows} == {"0", "1", "2"}
    stamps = [float(r["tstamp"]) for r in rows]
    assert stamps == sorted(stamps) and stamps[-1] == pytest.approx(ends[-1] / 1000, abs=1e-3)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("trials", 0, "--trials 0"), ("max_steps", 0, "--max-steps 0"), ("max_resets", -1, "--max-resets -1"),
    ("off_track_penalty_s", float("nan"), "--off-track-penalty nan"),
])
def test_bad_settings_are_named(field: str, value: float, message: str):
    with pytest.raises(evaluate_module.EvaluationError, match=message):
        run_trials(driven_model(Driver(SeenEnvs())), load_track("reinvent_base"),
                   EvaluationSettings(**{field: value}))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- on a trained run

trained = pytest.mark.slow  # the session's training run takes ~30-60 s on a shared 2-core machine


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    assert cli_main(["evaluate", *argv, "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


@trained
def test_evaluate_a_trained_run_writes_what_deepracer_utils_reads(run_copy: Path, capsys: pytest.CaptureFixture[str]):
    from deepracer.logs import DeepRacerLog
    from deepracer.logs.handler import FSFileHandler

    index = json.loads((run_copy / CHECKPOINTS_INDEX).read_text())
    best = int(index["best_checkpoint"]["name"].split("/")[-1])
    result = cli_json(capsys, str(run_copy), "--version", "best", "--max-steps", "40")
    track = RunSettings.parse((run_copy / TRAINING_PARAMS).read_text()).track
    assert result["version"] == best and result["track"] == track
    assert [t["start_fraction"] for t in result["trials"]] == pytest.approx([0.0, 1 / 3, 2 / 3])
    for t in result["trials"]:
        assert t["steps"] <= 40 and t["reset_count"] == t["off_track_count"] + t["immobilized_count"] \
            + t["reversed_count"]
    metrics = json.loads((run_copy / result["metrics"]).read_text())["metrics"]
    assert [m["reset_count"] for m in metrics] == [t["reset_count"] for t in result["trials"]]

    log = DeepRacerLog(filehandler=FSFileHandler(model_folder=str(run_copy)))
    log.load_evaluation_trace()
    df = log.dataframe()
    stamp = result["simtrace"].split("/")[0].removeprefix("evaluation-")
    assert set(df["stream"]) == {stamp} and sorted(set(df["episode"])) == [0, 1, 2]
    assert len(df) == len(rows_of((run_copy / result["simtrace"]).read_text()))
    assert log.agent_and_network()["network"] == json.loads((run_copy / "model/model_metadata.json").read_text())[
        "neural_network"]


@trained
def test_evaluate_on_an_s3_store(trained_run: Path, s3_endpoint: str, s3_store_url: str,
                                 capsys: pytest.CaptureFixture[str]):
    from deepracer.logs import DeepRacerLog
    from deepracer.logs.handler import S3FileHandler

    bucket, prefix = s3_store_url.removeprefix("s3://").split("/", 1)
    objects = S3Store(bucket, prefix, s3_endpoint)
    upload_run(trained_run, objects)
    result = cli_json(capsys, s3_store_url, "--s3-endpoint-url", s3_endpoint, "--version", "2", "--trials", "2",
                      "--max-steps", "20", "--track", "Oval_track", "--reverse")
    assert (result["version"], result["track"], result["reverse"]) == (2, "Oval_track", True)
    assert [t["start_fraction"] for t in result["trials"]] == [0.0, 0.5]
    assert objects.exists(result["metrics"]) and objects.exists(result["simtrace"])
    log = DeepRacerLog(filehandler=S3FileHandler(bucket=bucket, prefix=prefix, s3_endpoint_url=s3_endpoint))
    log.load_evaluation_trace()
    assert sorted(set(log.dataframe()["episode"])) == [0, 1]


@trained
def test_versions_best_last_and_n(run_copy: Path):
    store = open_run(str(run_copy))
    assert resolve_version(store, "last") == 3 and resolve_version(store, "1") == 1  # 3 iterations
    index = json.loads((run_copy / CHECKPOINTS_INDEX).read_text())
    assert resolve_version(store, "best") == int(index["best_checkpoint"]["name"].split("/")[-1])
    (run_copy / CHECKPOINTS_INDEX).write_text(json.dumps({"best_checkpoint": {"name": "0_Step-1234.ckpt"}}))
    assert resolve_version(store, "best") == 0  # DeepRacer's checkpoint names too (§4.2)
    assert load_model(store, "best").version == 0
    for bad, message in [("7", "model version 7 is not in the store"), ("newest", "--version .newest.: expected best")]:
        with pytest.raises(StoreError, match=message):
            resolve_version(store, bad)
    (run_copy / CHECKPOINTS_INDEX).write_text(json.dumps({"best_checkpoint": {"name": "final"}}))
    with pytest.raises(StoreError, match="deepracer_checkpoints.json: best_checkpoint.name 'final'"):
        resolve_version(store, "best")
    (run_copy / CHECKPOINTS_INDEX).unlink()
    with pytest.raises(StoreError, match="deepracer_checkpoints.json: missing"):
        resolve_version(store, "best")


@trained
def test_cli_reports_bad_input_without_a_traceback(run_copy: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]):
    cases = [
        ([str(tmp_path / "nowhere")], "no such run folder"),
        ([str(run_copy), "--version", "9"], "model version 9 is not in the store"),
        ([str(run_copy), "--track", "reinvent_bse"], "did you mean reinvent_base"),
        ([str(run_copy), "--version", "best", "--max-steps", "0"], "--max-steps 0"),
        ([str(run_copy), "--trials", "0"], "--trials 0"),
        ([str(run_copy), "--video", str(tmp_path / "lap.avi")], "use .mp4 or .gif"),
    ]
    for argv, message in cases:
        assert cli_main(["evaluate", *argv]) == 2
        assert message in capsys.readouterr().err
    assert not (run_copy / "metrics" / "evaluation").exists()  # nothing was written by a failed command


@trained
def test_evaluate_prints_a_summary_table(run_copy: Path, capsys: pytest.CaptureFixture[str]):
    assert cli_main(["evaluate", str(run_copy), "--max-steps", "15", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "model version 3" in out and "lap time s" in out and "/3, best lap" in out
    assert not (run_copy / "metrics" / "evaluation").exists()
