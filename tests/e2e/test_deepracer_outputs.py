"""A real short run, checked the way DeepRacer users check theirs (issue 6 items 11, 13, 14).

The run is seeded on one "machine" with a track given as a file path, the file is deleted, and
then a trainer and a worker run as separate processes against a real redis-server: the worker
can only drive the track stored with the run. Afterwards the trainer's output is parsed with
DeepRacer's metric regexes and the rl_coach episode CSV is read with pandas and joined with
logs/episodes.csv.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.store import COACH_EPISODE_LOG, ModelStore, open_store
from simulator.track import load_track
from tests.simulator.synthetic import circle_rows
from tests.trainer.test_coach_log import SAGEMAKER_METRICS, SEED_HEADER, log_analysis_parse

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ITERATIONS = 2
EPISODES = 4
EPOCHS = 2


def seed_on_another_machine(folder: Path, store_url: str, run_id: str) -> float:
    """`hotlap seed --track <file>` with stacked camera + lidar; returns the track's length."""
    folder.mkdir()
    rows = circle_rows(points=121)
    rows[:, [1, 3, 5]] *= 1.4  # an oval no packaged track matches
    track = folder / "seeded_oval.npy"
    np.save(track, rows)
    (folder / "hyperparameters.json").write_text(json.dumps({
        "num_episodes_between_training": EPISODES, "num_epochs": EPOCHS, "batch_size": 32,
        "term_cond_max_episodes": ITERATIONS, "stack_size": 2}))
    (folder / "model_metadata.json").write_text(json.dumps({
        "action_space": [{"steering_angle": -20, "speed": 1.0}, {"steering_angle": 20, "speed": 1.0}],
        "sensor": ["FRONT_FACING_CAMERA", "LIDAR"], "version": "5"}))
    seeded = subprocess.run(
        [sys.executable, "-m", "hotlap", "seed", "--custom-files", str(folder), "--track", str(track),
         "--max-steps", "40", "--cars-per-worker", "2"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env=dict(os.environ, HOTLAP_STORE_URL=store_url, HOTLAP_RUN_ID=run_id),
    )
    assert seeded.returncode == 0, seeded.stderr
    return load_track(track).length


def test_a_run_on_a_track_file_writes_deepracers_trainer_logs(redis_url: str, run_id: str, tmp_path: Path) -> None:
    store_url = f"file://{tmp_path / 'store'}"
    track_length = seed_on_another_machine(tmp_path / "seeder", store_url, run_id)
    shutil.rmtree(tmp_path / "seeder")  # the workers' machine has no such file

    env = dict(os.environ, HOTLAP_RUN_ID=run_id, HOTLAP_REDIS_URL=redis_url, HOTLAP_STORE_URL=store_url,
               HOTLAP_SIM_TRACE_LOG="0", OMP_NUM_THREADS="1", HOTLAP_WORKER_NAME="remote-worker")
    logs = {name: tmp_path / f"{name}.log" for name in ("trainer", "simulator")}
    procs = {name: subprocess.Popen([sys.executable, "-m", name], env=env, cwd=REPO,
                                    stdout=path.open("wb"), stderr=subprocess.STDOUT)
             for name, path in logs.items()}
    try:
        for proc in procs.values():
            proc.wait(timeout=300)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}:\n{logs[name].read_text()[-3000:]}"

    store = ModelStore(open_store(store_url))
    episodes = list(csv.DictReader(io.StringIO(store.get_text("logs/episodes.csv"))))
    assert len(episodes) == ITERATIONS * EPISODES

    # Item 11: the worker drove the stored track (simtrace track_len is the file's centre-line length).
    trace = pd.read_csv(io.StringIO(store.get_text("training-simtrace/0-iteration.csv")))
    assert trace["track_len"].to_numpy() == pytest.approx(track_length)

    # Item 13: rl_coach's lines, bare at the start of the trainer's output lines.
    output = logs["trainer"].read_text().splitlines()
    rollouts = [line for line in output if re.match(SAGEMAKER_METRICS["reward-training"], line)]
    assert [log_analysis_parse(line)["episode"] for line in rollouts] == list(range(1, len(episodes) + 1))
    # logs/episodes.csv holds the reward rounded to 4 places, so rounding it again to 2 can differ from
    # the log line's one rounding (17.28496 -> 17.285 -> 17.29); the rl_coach CSV holds the full value.
    coach_rows = csv.DictReader(io.StringIO(store.get_text(COACH_EPISODE_LOG)))
    assert [log_analysis_parse(line)["reward"] for line in rollouts] == \
        [round(float(row["Training Reward"]), 2) for row in coach_rows]
    entropies = [float(m.group(1)) for line in output if (m := re.match(SAGEMAKER_METRICS["ppo-entropy"], line))]
    assert len(entropies) == ITERATIONS * EPOCHS and all(np.isfinite(entropies))

    # Item 14: the rl_coach episode CSV, one row per episode of logs/episodes.csv.
    assert_coach_csv_matches_the_episode_log(store)
    frame = pd.read_csv(io.StringIO(store.get_text(COACH_EPISODE_LOG)))
    assert frame["Entropy/Mean"].notna().all() and frame["Evaluation Reward"].isna().all()


def assert_coach_csv_matches_the_episode_log(store: ModelStore) -> None:
    """The rl_coach episode CSV: the seed article's header, read by pandas, joined with logs/episodes.csv."""
    episodes = list(csv.DictReader(io.StringIO(store.get_text("logs/episodes.csv"))))
    text = store.get_text(COACH_EPISODE_LOG)
    assert text.splitlines()[0] == SEED_HEADER
    frame = pd.read_csv(io.StringIO(text))
    assert frame["Episode #"].tolist() == list(range(1, len(episodes) + 1))
    assert frame["Training Iter"].tolist() == [int(row["iteration"]) for row in episodes]
    assert frame["Episode Length"].tolist() == [int(row["steps"]) for row in episodes]
    assert frame["Total steps"].tolist() == np.cumsum([int(row["steps"]) for row in episodes]).tolist()
    np.testing.assert_allclose(frame["Training Reward"], [float(row["reward"]) for row in episodes], atol=1e-4)
