"""`hotlap plot` on a real run: every chart is written, and what it plots is what the run's files say.

Expected values are computed here from the files with the csv/json modules, independently of
hotlap.plot's readers.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hotlap.plot import (
    action_usage,
    best_and_latest,
    episode_paths,
    evaluation_series,
    lap_times,
    learning_series,
    plot_run,
    read_episode_log,
    read_learning_stats,
    read_simtraces,
    read_training_metrics,
    training_series,
)
from hotlap.runs import open_run
from shared.config import ModelMetadata
from tests.hotlap.conftest import FIXTURE_RUN_ID

pytestmark = pytest.mark.slow  # the trained_run fixture is a real 3-iteration training run (~20-35 s)

CHARTS = ("training.png", "learning.png", "track.png", "actions.png")


def hotlap(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotlap", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def assert_sane_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()  # checksums and structure
    with Image.open(path) as image:
        width, height = image.size
        assert 600 <= width <= 2000 and 300 <= height <= 2000, (path.name, image.size)
        pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 10  # not a blank canvas


def simtrace_rows(run: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted((run / "training-simtrace").glob("*-iteration.csv")):
        iteration = int(path.name.split("-")[0]) + 1
        with path.open() as f:
            rows += [{**row, "iteration": str(iteration)} for row in csv.DictReader(f)]
    return rows


def test_plot_writes_every_chart_as_a_png(trained_run: Path, tmp_path: Path):
    result = hotlap("plot", str(trained_run), "--output", str(tmp_path / "charts"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in CHARTS:
        assert f"wrote {tmp_path / 'charts' / name}" in result.stdout
        assert_sane_png(tmp_path / "charts" / name)
    # 100-step episodes at ~1 m/s never finish a 23 m lap: the lap-time chart says why it is missing.
    assert "skipped laptimes.png: no completed lap" in result.stdout
    assert not (tmp_path / "charts" / "laptimes.png").exists()


def test_default_output_folder_is_named_after_the_run(trained_run: Path, tmp_path: Path):
    result = hotlap("plot", f"file://{trained_run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "hotlap-plots" / FIXTURE_RUN_ID).iterdir()) == sorted(CHARTS)


def test_reward_progress_and_laps_per_iteration_match_the_episode_log(trained_run: Path):
    by_iteration: dict[int, list[tuple[float, float, bool]]] = defaultdict(list)
    with (trained_run / "logs/episodes.csv").open() as f:
        for row in csv.DictReader(f):
            by_iteration[int(row["iteration"]) + 1].append(
                (float(row["reward"]), float(row["progress"]), row["status"] == "lap_complete"))
    store, _ = open_run(str(trained_run))
    series = training_series(read_episode_log(store))
    assert series.iteration.tolist() == [1, 2, 3]
    assert series.episodes.tolist() == [4, 4, 4]
    for i, it in enumerate(series.iteration):
        rewards, progress, laps = zip(*by_iteration[it], strict=True)
        assert series.reward[i] == pytest.approx(np.mean(rewards))
        assert series.progress[i] == pytest.approx(np.mean(progress))
        assert series.lap_completion[i] == pytest.approx(100 * np.mean(laps))
        # The trainer's own numbers for that iteration agree (rounded to 4 decimals in the CSV).
        stats = json.loads((trained_run / f"model/{it}/manifest.json").read_text())["training_stats"]
        assert series.reward[i] == pytest.approx(stats["mean_reward"], abs=1e-3)
        assert series.progress[i] == pytest.approx(stats["mean_progress"], abs=1e-3)
    # worker 0's evaluation rows (issue 8) form their own series, never mixed into the training one
    assert all(it >= 1 for it in evaluation_series(read_training_metrics(store)).iteration)


def test_losses_entropy_and_kl_per_iteration_match_the_manifests(trained_run: Path):
    store, _ = open_run(str(trained_run))
    series = learning_series(read_learning_stats(store))
    assert series["iteration"].tolist() == [1, 2, 3]  # version 0 is the untrained start
    for i, version in enumerate((1, 2, 3)):
        stats = json.loads((trained_run / f"model/{version}/manifest.json").read_text())["training_stats"]
        for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance"):
            assert series[key][i] == stats[key]
    assert (series["entropy"] > 0).all() and (series["approx_kl"] >= 0).all()


def test_best_and_latest_paths_come_from_the_simtrace(trained_run: Path):
    rows = simtrace_rows(trained_run)
    episodes: dict[tuple[int, int], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        episodes[(int(row["iteration"]), int(row["episode"]))].append(row)
    final = {key: max(group, key=lambda r: float(r["steps"])) for key, group in episodes.items()}
    top_progress = max(float(r["progress"]) for r in final.values())
    last_wall_clock = max(float(r["wall_clock"]) for r in final.values())

    store, _ = open_run(str(trained_run))
    best, latest = best_and_latest(episode_paths(read_simtraces(store)))
    assert best.progress == top_progress
    assert latest.wall_clock == last_wall_clock and latest.iteration == 3
    for path in (best, latest):
        group = sorted(episodes[(path.iteration, path.episode)], key=lambda r: float(r["steps"]))
        np.testing.assert_array_equal(path.x, [float(r["X"]) for r in group])
        np.testing.assert_array_equal(path.y, [float(r["Y"]) for r in group])
        # Ground speed: distance between consecutive positions over the sim-time step (1/15 s).
        dt = float(group[2]["tstamp"]) - float(group[1]["tstamp"])
        assert dt == pytest.approx(1 / 15)
        distance = np.hypot(float(group[2]["X"]) - float(group[1]["X"]), float(group[2]["Y"]) - float(group[1]["Y"]))
        assert path.speed[2] == pytest.approx(distance / dt)
        assert 0 <= path.speed.max() <= 4.5  # DeepRacer's top speed is 4 m/s


def test_action_usage_counts_the_simtrace_actions(trained_run: Path):
    rows = [r for r in simtrace_rows(trained_run) if r["episode_status"] != "prepare"]
    metadata = ModelMetadata.parse((trained_run / "model/model_metadata.json").read_text(), "model_metadata.json")
    store, _ = open_run(str(trained_run))
    (usage,) = action_usage(read_simtraces(store), metadata)
    assert usage.iteration.tolist() == [1, 2, 3]
    assert usage.labels[2] == "2: +0°, 1.2 m/s"
    for column, it in enumerate((1, 2, 3)):
        actions = [int(r["action"]) for r in rows if r["iteration"] == str(it)]
        expected = [100 * actions.count(a) / len(actions) for a in range(5)]
        np.testing.assert_allclose(usage.share[:, column], expected)


def test_evaluation_rows_and_lap_times_are_plotted_when_present(trained_run: Path, tmp_path: Path):
    """Evaluation rows in DeepRacer's TrainingMetrics format (deepracer-formats.md §4.1) added to the real
    run's file, as worker 0 writes them after each iteration: they get their own series and lap times."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    metrics_path = run / "metrics/TrainingMetrics.json"
    metrics = json.loads(metrics_path.read_text())
    # the run's own evaluation rows are replaced by these known ones
    records = [r for r in metrics["metrics"] if r.get("phase") != "evaluation"]
    with_evaluation, iteration = [], 0
    evaluation = {1: [(40, 30, "Off track", 4000)], 2: [(120, 100, "Lap complete", 19500), (110, 100, "Lap complete",
                                                                                             18250)],
                  3: [(130, 100, "Lap complete", 17000), (20, 12, "Off track", 1500)]}
    for i, record in enumerate(records):
        with_evaluation.append(record)
        last_of_iteration = i + 1 == len(records) or records[i + 1]["trial"] == 1
        iteration += record["trial"] == 1
        if last_of_iteration:
            for reward, progress, status, ms in evaluation[iteration]:
                with_evaluation.append({**record, "phase": "evaluation", "reward_score": reward,
                                        "completion_percentage": progress, "episode_status": status,
                                        "elapsed_time_in_milliseconds": ms})
    metrics_path.write_text(json.dumps({**metrics, "metrics": with_evaluation}))

    store, _ = open_run(str(run))
    series = evaluation_series(read_training_metrics(store))
    assert series.iteration.tolist() == [1, 2, 3]
    np.testing.assert_allclose(series.reward, [40, 115, 75])
    np.testing.assert_allclose(series.progress, [30, 100, 56])
    np.testing.assert_allclose(series.lap_completion, [0, 100, 50])
    laps = lap_times(read_training_metrics(store), "evaluation")
    assert laps.iteration.tolist() == [2, 2, 3] and laps.seconds.tolist() == [18.25, 19.5, 17.0]

    result = plot_run(store, tmp_path / "charts", "with-evaluation")
    assert (tmp_path / "charts" / "laptimes.png") in result.written and not result.skipped
    for path in result.written:
        assert_sane_png(path)


def test_plot_reads_a_run_in_s3(s3_runs: str, s3_endpoint: str, trained_run: Path, tmp_path: Path):
    url = f"{s3_runs}/{FIXTURE_RUN_ID}"
    result = hotlap("plot", url, "--s3-endpoint-url", s3_endpoint, "--output", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in CHARTS:
        assert_sane_png(tmp_path / name)
    s3_store, name = open_run(url, s3_endpoint)
    local_store, _ = open_run(str(trained_run))
    assert name == FIXTURE_RUN_ID
    from_s3, from_folder = training_series(read_episode_log(s3_store)), training_series(read_episode_log(local_store))
    for field in ("iteration", "episodes", "reward", "progress", "lap_completion"):
        np.testing.assert_array_equal(getattr(from_s3, field), getattr(from_folder, field))


def test_plot_names_what_is_wrong_with_a_folder_that_is_not_a_run(tmp_path: Path):
    result = hotlap("plot", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert str(tmp_path) in result.stderr and "training_params.yaml" in result.stderr
    result = hotlap("plot", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2 and "no such run folder" in result.stderr


def test_continuous_action_usage_bins_steering_and_speed(trained_run: Path):
    rows = [r for r in simtrace_rows(trained_run) if r["episode_status"] != "prepare"]
    continuous = ModelMetadata.parse(json.dumps({
        "action_space": {"steering_angle": {"low": -30, "high": 30}, "speed": {"low": 0.5, "high": 4}},
        "action_space_type": "continuous"}), "model_metadata.json")
    store, _ = open_run(str(trained_run))
    steering, speed = action_usage(read_simtraces(store), continuous)
    assert steering.labels[0] == "-30 to -20°" and speed.labels[-1] == "3.5 to 4 m/s"
    for column, it in enumerate((1, 2, 3)):
        chosen = [r for r in rows if r["iteration"] == str(it)]
        for usage, name, edges in ((steering, "steer", np.linspace(-30, 30, 7)),
                                   (speed, "throttle", np.linspace(0, 4, 9))):
            counts, _ = np.histogram([float(r[name]) for r in chosen], edges)
            np.testing.assert_allclose(usage.share[:, column], 100 * counts / len(chosen))


def test_multi_worker_simtrace_layout(trained_run: Path, tmp_path: Path):
    """DRfC's multi-worker layout <w>/training-simtrace/ (deepracer-formats.md §5.2), here as two copies."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.copytree(run / "training-simtrace", run / "1" / "training-simtrace")
    (run / "0").mkdir()
    (run / "training-simtrace").rename(run / "0" / "training-simtrace")
    store, _ = open_run(str(run))
    traces = read_simtraces(store)
    assert [(t.iteration, t.worker) for t in traces] == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    single, _ = open_run(str(trained_run))
    metadata = ModelMetadata.parse((run / "model/model_metadata.json").read_text(), "model_metadata.json")
    np.testing.assert_allclose(action_usage(traces, metadata)[0].share,
                               action_usage(read_simtraces(single), metadata)[0].share)
    best, _ = best_and_latest(episode_paths(traces))
    assert best.progress == best_and_latest(episode_paths(read_simtraces(single)))[0].progress


@pytest.mark.parametrize(("path", "damage", "message"), [
    ("logs/episodes.csv", lambda text: text.replace(",off_track", ",", 1).replace("\n1,", "\nx,", 1),
     "logs/episodes.csv line"),
    ("metrics/TrainingMetrics.json", lambda text: text.replace('"trial": 2', '"trial": "2"', 1),
     "metrics/TrainingMetrics.json: metrics[1]: trial must be int"),
    ("training-simtrace/1-iteration.csv", lambda text: text.replace(",", ";"), "training-simtrace/1-iteration.csv"),
])
def test_a_damaged_run_file_is_named(trained_run: Path, tmp_path: Path, path: str, damage, message: str):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / path).write_text(damage((run / path).read_text()))
    result = hotlap("plot", str(run), "--output", str(tmp_path / "charts"), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_the_track_map_uses_the_track_file_stored_with_the_run(trained_run: Path, tmp_path: Path):
    """A run on a user's .npy track stores the file (TRACK_FILE in training_params.yaml): the map draws it."""
    import hashlib

    from hotlap.plot import _load_track
    from simulator.track import load_track

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    data = (Path(__file__).resolve().parents[2] / "simulator/tracks/reInvent2019_track.npy").read_bytes()
    (run / "my_track.npy").write_bytes(data)
    params = (run / "training_params.yaml").read_text()
    params = params.replace("WORLD_NAME: reInvent2019_track", "WORLD_NAME: my_track")
    params += f"TRACK_FILE: my_track.npy\nTRACK_SHA256: {hashlib.sha256(data).hexdigest()}\n"
    (run / "training_params.yaml").write_text(params)
    store, _ = open_run(str(run))
    track = _load_track(store)
    assert track is not None and track.name == "my_track"
    np.testing.assert_array_equal(track.center, load_track("reInvent2019_track").center)
    result = plot_run(store, tmp_path / "charts", "custom-track")
    assert tmp_path / "charts" / "track.png" in result.written
