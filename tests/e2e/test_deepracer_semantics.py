"""A real `hotlap train` run (one worker driving several cars) with a community-style reward function:
it imports every module DeepRacer allows, keeps state between calls, and the run's files say what
DeepRacer's would (issue 6, items 1, 2, 3 and 6)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from shared.deepracer_logs import STATUS_LABELS
from simulator.reward import DEEPRACER_REWARD_MODULES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CARS = 4
ITERATIONS = 2
EPISODES_PER_ITERATION = 8
ACTIONS = [
    {"steering_angle": -17.5, "speed": 0.8},
    {"steering_angle": 0.0, "speed": 1.3},
    {"steering_angle": 12.3, "speed": 0.7},
]
# Imports all five allowed modules (racing-line functions use scipy.spatial and shapely.geometry) and keeps
# state in module globals, as many community files do: it returns 0.0 when it sees a call sequence that is
# not its own car's (steps 2, 3, 4, ... restarting at 2 each episode), else 0.1 or 0.3.
REWARD = """
import math
import random

import numpy as np
import scipy.spatial
from shapely.geometry import LineString, Point

last_steps = None


def reward_function(params):
    global last_steps
    own_sequence = params["steps"] == 2.0 or (last_steps is not None and params["steps"] == last_steps + 1)
    last_steps = params["steps"]
    waypoints = np.array(params["waypoints"])
    _, nearest = scipy.spatial.cKDTree(waypoints).query([params["x"], params["y"]])
    assert nearest in range(len(waypoints)) and 0.0 <= random.random() < 1.0
    off_line = LineString(params["waypoints"]).distance(Point(params["x"], params["y"]))
    if not own_sequence:
        return 0.0
    return 0.1 if off_line < 0.25 * math.fabs(params["track_width"]) else 0.3
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("semantics")
    (folder / "reward_function.py").write_text(REWARD)
    (folder / "model_metadata.json").write_text(json.dumps({
        "action_space": ACTIONS, "sensor": ["FRONT_FACING_CAMERA"], "action_space_type": "discrete",
        "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "version": "5",
    }))
    (folder / "hyperparameters.json").write_text(json.dumps({
        "num_episodes_between_training": EPISODES_PER_ITERATION, "num_epochs": 1, "batch_size": 32,
        "term_cond_max_episodes": ITERATIONS,
    }))
    result = subprocess.run(
        [sys.executable, "-m", "hotlap", "train", "--custom-files", str(folder), "--workers", "1",
         "--cars-per-worker", str(CARS), "--run-id", "semantics", "--runs-dir", str(folder / "runs"),
         "--max-steps", "40"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder / "runs" / "semantics"


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def simtrace(run: Path) -> dict[int, list[dict[str, str]]]:
    """Simtrace rows by episode, over every iteration file (row order kept within an episode)."""
    episodes: dict[int, list[dict[str, str]]] = defaultdict(list)
    files = sorted((run / "training-simtrace").glob("*-iteration.csv"), key=lambda p: int(p.name.split("-")[0]))
    assert len(files) == ITERATIONS
    for path in files:
        for row in read_csv(path):
            episodes[int(row["episode"])].append(row)
    return episodes


def test_a_reward_function_importing_every_allowed_module_trains(run: Path) -> None:
    assert set(DEEPRACER_REWARD_MODULES) == {"math", "random", "numpy", "scipy", "shapely"}
    rows = read_csv(run / "logs" / "episodes.csv")
    assert len(rows) == ITERATIONS * EPISODES_PER_ITERATION  # the run trained on what the function returned


def test_every_car_keeps_its_own_reward_state(run: Path) -> None:
    calls = [row for rows in simtrace(run).values() for row in rows if row["episode_status"] != "prepare"]
    assert len(calls) > 100
    leaked = [row for row in calls if row["reward"] == "0.0"]
    assert leaked == []  # every call continued the sequence of its own car


def test_simtrace_carries_the_metadata_numbers_exactly(run: Path) -> None:
    for rows in simtrace(run).values():
        for row in rows:
            action = ACTIONS[int(row["action"])]
            if row["episode_status"] == "prepare":
                assert row["reward"] == "0.0"
                continue
            assert row["throttle"] == str(float(action["speed"]))  # "0.8", not "0.800000011920929"
            assert row["steer"] == str(float(action["steering_angle"]))  # "-17.5", "12.3"
            assert row["reward"] in ("0.1", "0.3")  # not "0.10000000149011612"


def test_training_metrics_episodes_are_the_simtrace_and_episode_log_episodes(run: Path) -> None:
    every = json.loads((run / "metrics" / "TrainingMetrics.json").read_text())["metrics"]
    # worker 0's evaluation episodes are in the file too; they are neither trained on nor in the simtrace
    records = [r for r in every if r["phase"] == "training"]
    assert {r["phase"] for r in every} == {"training", "evaluation"}
    trace = simtrace(run)
    logged = {int(row["episode"]): row for row in read_csv(run / "logs" / "episodes.csv")}
    assert [r["episode"] for r in records] == [n + 1 for n in sorted(trace)] == [n + 1 for n in sorted(logged)]
    times = [r["metric_time"] for r in records]
    assert times == sorted(times) and records[0]["start_time"] == 0
    for record in records:
        number = record["episode"] - 1  # DeepRacer: metrics count from 1, the simtrace from 0
        rows, log_row = trace[number], logged[number]
        assert_same_episode(record, rows, log_row)
    # several cars: some episodes ended after episodes that started later (the case that used to mix them up)
    ended_at = [float(trace[n][-1]["wall_clock"]) for n in sorted(trace)]
    assert any(a > b for a, b in zip(ended_at, ended_at[1:], strict=False))


def assert_same_episode(record: dict[str, Any], rows: list[dict[str, str]], log_row: dict[str, str]) -> None:
    steps = [int(float(row["steps"])) for row in rows]
    assert steps == list(range(1, len(rows) + 1))
    reward = sum(float(row["reward"]) for row in rows)
    last = rows[-1]
    assert record["reward_score"] == int(round(reward))
    assert record["completion_percentage"] == int(float(last["progress"]))
    assert record["episode_status"] == STATUS_LABELS[last["episode_status"]]
    # the episode's sim time: from the car's reset (one step before the prepare row) to its last row
    elapsed_ms = round(float(last["tstamp"]) * 1000) - round((float(rows[0]["tstamp"]) - 1 / 15) * 1000)
    assert abs(record["elapsed_time_in_milliseconds"] - elapsed_ms) <= 1
    assert record["metric_time"] - record["start_time"] == record["elapsed_time_in_milliseconds"]
    assert int(log_row["steps"]) == len(rows)
    assert log_row["status"] == last["episode_status"]
    assert float(log_row["progress"]) == pytest.approx(float(last["progress"]), abs=1e-4)
    assert float(log_row["reward"]) == pytest.approx(reward, abs=1e-4)
