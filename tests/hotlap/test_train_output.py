"""What a short real `hotlap train` shows and writes: the progress display (pipe and terminal),
the services' JSON logs with DeepRacer's bare lines, and the trainer's TensorBoard scalars."""

from __future__ import annotations

import csv
import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shared.store import ModelStore, open_store

REPO = Path(__file__).resolve().parents[2]
ITERATIONS = 3
EPISODES_PER_ITERATION = 4
HYPERPARAMETERS = {"num_episodes_between_training": EPISODES_PER_ITERATION, "num_epochs": 1, "batch_size": 32,
                   "term_cond_max_episodes": ITERATIONS}
BARE_PREFIXES = ("SIM_TRACE_LOG:", "Training>", "Policy training>")

pytestmark = pytest.mark.slow


def _train_command(tmp_path: Path, run_id: str, *extra: str) -> list[str]:
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps(HYPERPARAMETERS))
    return [sys.executable, "-m", "hotlap", "train", "--workers", "1", "--cars-per-worker", "2", "--run-id", run_id,
            "--runs-dir", str(tmp_path / "runs"), "--hyperparameters", str(hp), "--max-steps", "40", *extra]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLAP_")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One run to a pipe, services logging JSON, the trainer writing TensorBoard scalars."""
    tmp_path = tmp_path_factory.mktemp("piped")
    result = subprocess.run(_train_command(tmp_path, "piped", "--tensorboard", str(tmp_path / "tb")),
                            capture_output=True, text=True, timeout=600, cwd=REPO,
                            env=_env(HOTLAP_LOG_FORMAT="json"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path, result.stdout


def _episode_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "logs" / "episodes.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_train_to_a_pipe_prints_one_line_per_iteration(piped_run: tuple[Path, str]) -> None:
    _, stdout = piped_run
    lines = stdout.splitlines()
    iteration_lines = [line for line in lines if line.startswith("iteration ")]
    assert [line.split()[1] for line in iteration_lines] == [f"{i}/{ITERATIONS}" for i in range(1, ITERATIONS + 1)]
    assert all("reward" in line and "laps" in line and "ETA" in line for line in iteration_lines)
    nonblank = [line for line in lines if line.strip()]
    assert len(nonblank) == len(set(nonblank))  # nothing repeats: no line per poll
    assert not any("\x1b[" in line for line in lines)  # no terminal control codes in a pipe


def test_services_log_one_json_object_per_line_in_json_mode(piped_run: tuple[Path, str]) -> None:
    processes = piped_run[0] / "runs" / "piped" / "logs" / "processes"
    for name in ("trainer.log", "simulator-0.log"):
        records = [line for line in (processes / name).read_text().splitlines() if not line.startswith(BARE_PREFIXES)]
        assert records, name
        for line in records:
            record = json.loads(line)
            assert {"level", "logger", "message", "timestamp", "process"} <= record.keys(), line
    trainer = [json.loads(line) for line in (processes / "trainer.log").read_text().splitlines()
               if line.startswith("{")]
    assert any(r["logger"] == "hotlap.trainer" and r["message"].startswith(f"iteration {ITERATIONS}/")
               for r in trainer)


def test_deepracer_lines_stay_bare_and_parseable_in_json_mode(piped_run: tuple[Path, str]) -> None:
    from deepracer.logs import SimulationLogsIO

    run = piped_run[0] / "runs" / "piped"
    processes = run / "logs" / "processes"
    rows = _episode_rows(run)
    steps = SimulationLogsIO.convert_to_pandas(SimulationLogsIO.load_data(str(processes / "simulator-0.log")),
                                               EPISODES_PER_ITERATION)
    assert len(steps) == sum(int(r["steps"]) for r in rows)  # one worker played every episode
    trainer_lines = (processes / "trainer.log").read_text().splitlines()
    assert len([line for line in trainer_lines if line.startswith("Training> ")]) == len(rows)
    assert len([line for line in trainer_lines if line.startswith("Policy training> ")]) == ITERATIONS


def test_tensorboard_scalars_are_what_the_trainer_recorded(piped_run: tuple[Path, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp_path = piped_run[0]
    run = tmp_path / "runs" / "piped"
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"charts/episodic_return", "charts/episodic_length", "losses/approx_kl", "losses/value_loss",
            "losses/policy_loss", "losses/entropy", "losses/clipfrac", "charts/learning_rate", "charts/SPS"} <= tags

    rows = _episode_rows(run)
    returns = events.Scalars("charts/episodic_return")
    lengths = events.Scalars("charts/episodic_length")
    assert [e.value for e in returns] == pytest.approx([float(r["reward"]) for r in rows], abs=1e-4)
    assert [e.value for e in lengths] == [float(r["steps"]) for r in rows]
    # x axis: environment steps consumed so far, as CleanRL's global_step
    cumulative = [sum(int(r["steps"]) for r in rows[: i + 1]) for i in range(len(rows))]
    assert [e.step for e in returns] == cumulative

    store = ModelStore(open_store(f"file://{run}"))
    stats = [store.load_version(v).manifest["training_stats"] for v in range(1, ITERATIONS + 1)]
    for tag, key in (("losses/approx_kl", "approx_kl"), ("losses/value_loss", "value_loss"),
                     ("losses/policy_loss", "policy_loss"), ("losses/entropy", "entropy"),
                     ("losses/clipfrac", "clip_fraction"), ("charts/learning_rate", "learning_rate")):
        assert [e.value for e in events.Scalars(tag)] == pytest.approx([s[key] for s in stats], rel=1e-6), tag
    assert all(e.value > 0 for e in events.Scalars("charts/SPS"))


def test_train_on_a_terminal_draws_a_progress_bar(tmp_path: Path) -> None:
    command = _train_command(tmp_path, "tty", "--max-iterations", "1")
    main, child = pty.openpty()
    proc = subprocess.Popen(command, stdin=child, stdout=child, stderr=child, cwd=REPO, env=_env(TERM="xterm"))
    os.close(child)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the child side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    assert proc.wait(timeout=600) == 0
    reader.join(timeout=30)
    os.close(main)
    screen = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in screen  # a live display (cursor control), not plain lines
    assert "training" in screen and "1/1" in screen and "ETA" in screen and "laps" in screen
    assert "━" in screen  # rich's bar
    assert not any(line.startswith("iteration 1/1") for line in screen.splitlines())  # no pipe lines on a TTY
