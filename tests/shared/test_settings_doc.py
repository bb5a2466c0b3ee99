"""`python -m simulator --help` and `python -m trainer --help` list the settings they read, without
needing any of them (shared.settings_doc.settings_parser)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from shared.config import TrainerConfig, WorkerConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("service", "config", "one_setting", "its_default"), [
    ("simulator", WorkerConfig, "HOTLAP_HEARTBEAT_S seconds between the worker", "default 2.0"),
    ("trainer", TrainerConfig, "HOTLAP_DEVICE torch device to train on", "default auto"),
])
def test_help_prints_every_variable_with_its_default_and_meaning(service: str, config: type[BaseModel],
                                                                 one_setting: str, its_default: str) -> None:
    result = subprocess.run([sys.executable, "-m", service, "--help"], capture_output=True, text=True, timeout=120,
                            cwd=REPO, env={"PYTHONPATH": str(REPO)})  # no HOTLAP_STORE_URL: help needs none
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # unwrap
    for field in config.model_fields.values():
        assert field.alias in text
    assert one_setting in text and its_default in text
    assert "HOTLAP_STORE_URL" in text and "default (required)" in text
