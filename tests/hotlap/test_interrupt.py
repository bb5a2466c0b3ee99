"""Ctrl-C on `hotlap train`, as a terminal delivers it: SIGINT to the whole foreground process group.

Only `hotlap train` acts on it: the services finish their step against a Redis that is still up,
the trainer publishes what it trained, and every process it started is gone afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.store import ModelStore, open_store

REPO = Path(__file__).resolve().parents[2]
HYPERPARAMETERS = {"num_episodes_between_training": 4, "num_epochs": 1, "batch_size": 32,
                   "term_cond_max_episodes": 4000}  # far more iterations than the test waits for

pytestmark = pytest.mark.slow


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for whoever reaps it here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def train_command(tmp_path: Path) -> list[str]:
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps(HYPERPARAMETERS))
    return [sys.executable, "-m", "hotlap", "train", "--workers", "1", "--cars-per-worker", "2", "--run-id", "r",
            "--runs-dir", str(tmp_path / "runs"), "--hyperparameters", str(hp), "--max-steps", "40"]


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOTLAP_")} | {"PYTHONPATH": str(REPO)}


# (the signal, sent to the whole group or to hotlap train alone, SIGINT ignored when it started)
STOPS = {
    "ctrl-c": (signal.SIGINT, True, False),  # a terminal's Ctrl-C: the whole foreground group
    "kill": (signal.SIGTERM, False, False),  # `kill PID`, `timeout`
    "hangup": (signal.SIGHUP, False, False),  # the terminal or SSH session closed
    "ctrl-c-background": (signal.SIGINT, True, True),  # started by a script with `&`: SIGINT inherited ignored
}


@pytest.mark.parametrize("stop", STOPS)
def test_a_stop_signal_stops_the_services_against_a_live_redis_and_leaves_nothing_running(
        tmp_path: Path, stop: str) -> None:
    signum, to_group, sigint_ignored = STOPS[stop]
    command = train_command(tmp_path)
    if sigint_ignored:
        command = ["bash", "-c", "trap '' INT; exec \"$@\"", "bash", *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env=environment(), start_new_session=True)
    store = ModelStore(open_store(f"file://{tmp_path / 'runs' / 'r'}"))
    try:
        deadline = time.monotonic() + 300
        while (store.latest_version() or 0) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        started = children(proc.pid)
        assert any("redis-server" in command_line(pid) for pid in started), [command_line(p) for p in started]
        assert any("-m trainer" in command_line(pid) for pid in started)
        if to_group:
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "interrupted" in output, output[-3000:]
    # Each service had exactly one stop request (a second one exits at once, with 1) and finished its step.
    assert "exit codes:     trainer 0, workers [0]" in output, output[-3000:]
    assert "to resume:" in output
    # Redis outlived them: nobody saw it vanish and retried.
    for log in (tmp_path / "runs" / "r" / "logs" / "processes").glob("*.log"):
        text = log.read_text()
        assert "retrying" not in text and "Connection refused" not in text, f"{log.name}:\n{text[-3000:]}"
    assert not [pid for pid in started if alive(pid)], "a process hotlap train started outlived it"


def _train_until(tmp_path: Path, version: int, *extra: str) -> str:
    """`hotlap train` (run r) until the store holds ``version``, then `kill` (SIGTERM); its output."""
    proc = subprocess.Popen([*train_command(tmp_path), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO, env=environment(), start_new_session=True)
    store = ModelStore(open_store(f"file://{tmp_path / 'runs' / 'r'}"))
    try:
        deadline = time.monotonic() + 300
        while (store.latest_version() or 0) < version and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        os.kill(proc.pid, signal.SIGTERM)
        return proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_resumed_run_appends_to_its_process_logs(tmp_path: Path) -> None:
    """The first session's lines (and why it stopped) survive a resume."""
    first = _train_until(tmp_path, 1)
    resume = next(line for line in first.splitlines() if "to resume:" in line)
    assert " -m hotlap train " in resume and resume.endswith("--max-steps 40"), resume  # as typed
    second = _train_until(tmp_path, 2)
    assert "same files: resuming run r" in second, second[-3000:]
    log = (tmp_path / "runs" / "r" / "logs" / "processes" / "trainer.log").read_text()
    assert log.count("holding the trainer lease") == 2  # both sessions' trainers
    assert log.index("signal 15") < log.rindex("holding the trainer lease")  # the first one's stop kept


def test_a_killed_hotlap_train_takes_redis_and_its_services_with_it(tmp_path: Path) -> None:
    """kill -9 of `hotlap train` (no chance to clean up): its redis-server, in its own process group
    for Ctrl-C's sake, and its services still end (PR_SET_PDEATHSIG), rather than run on as orphans."""
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps(HYPERPARAMETERS))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLAP_")} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hotlap", "train", "--workers", "1", "--cars-per-worker", "2", "--run-id", "r",
         "--runs-dir", str(tmp_path / "runs"), "--hyperparameters", str(hp), "--max-steps", "40"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
    started: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while len(started) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            started = children(proc.pid)
        assert len(started) == 3, [command_line(p) for p in started]  # redis-server, trainer, simulator
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 120  # the services stop gracefully on their SIGTERM
        while [pid for pid in started if alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [command_line(pid) for pid in started if alive(pid)]
    finally:
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_run_resumed_on_a_fresh_redis_accounts_for_the_whole_run(tmp_path: Path) -> None:
    """Each `hotlap train` session starts its own Redis: the second session adds the first one's
    counters (logs/accounting.json, written every iteration) once, so the finished run's accounting
    counts every episode of episodes.csv, and what the first Redis still held counts as dropped."""
    _train_until(tmp_path, 1, "--max-iterations", "3")
    finished = subprocess.run([*train_command(tmp_path), "--max-iterations", "3"], capture_output=True, text=True,
                              timeout=300, cwd=REPO, env=environment())
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    run = tmp_path / "runs" / "r"
    counts = json.loads((run / "logs" / "accounting.json").read_text())
    episodes = (run / "logs" / "episodes.csv").read_text().splitlines()[1:]
    assert len(episodes) == 3 * HYPERPARAMETERS["num_episodes_between_training"]
    assert counts["consumed"] == len(episodes)  # chunks are async only: every message here is an episode
    dropped = sum(v for k, v in counts.items() if k.startswith("dropped_"))
    assert counts["produced"] == counts["consumed"] + dropped, counts
    assert "accounting continues from logs/accounting.json" in (run / "logs" / "processes" / "trainer.log").read_text()
