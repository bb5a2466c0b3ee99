"""`python -m simulator --help` lists the settings it reads, without needing any of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.config import WorkerConfig

REPO = Path(__file__).resolve().parents[2]


def test_help_prints_every_variable_with_its_default_and_meaning() -> None:
    result = subprocess.run([sys.executable, "-m", "simulator", "--help"], capture_output=True, text=True, timeout=120,
                            cwd=REPO, env={"PYTHONPATH": str(REPO)})  # no HOTLAP_STORE_URL: help needs none
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # unwrap
    for field in WorkerConfig.model_fields.values():
        assert field.alias in text
    assert "HOTLAP_HEARTBEAT_S seconds between the worker" in text and "default 2.0" in text
    assert "HOTLAP_STORE_URL" in text and "default (required)" in text
