"""The README's quick-start numbers are what `hotlap train` does with its defaults."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_readme_states_hotlap_trains_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLAP_")} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "hotlap", "train", "--runs-dir", str(tmp_path), "--run-id", "r"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        header = proc.stdout.readline()
        # Let it start its processes, then stop it as a user would (Ctrl-C).
        deadline = time.monotonic() + 120
        while not (tmp_path / "r" / "logs" / "processes" / "trainer.log").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        # What is checked is the header; how long a graceful stop takes on a loaded machine is not
        # (the trainer finishes its current step first), so a slow stop gets a second Ctrl-C.
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "1 worker(s) × 4 car(s), 10 iterations × 20 episodes" in header, header
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "runs **1 simulator worker × 4 cars**" in readme
    assert "for **10 iterations × 20 episodes**" in readme
