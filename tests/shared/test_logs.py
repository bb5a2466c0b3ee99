"""shared.logs: the text and JSON log formats, with DeepRacer's lines bare in both."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging, sys
from shared.logs import COACH_LOGGER, SIMTRACE_LOGGER, setup_logging
setup_logging("INFO", "simulator w0", sys.argv[1])
logging.getLogger("hotlap.worker").info("worker %d ready", 3)
logging.getLogger("hotlap.worker").debug("not shown at INFO")
logging.getLogger(SIMTRACE_LOGGER).info("SIM_TRACE_LOG:0,1,0.5,0.1,0.0,0.0,1,True,1.0,1,2.0,reInvent2019_track,in_progress,0.0")
logging.getLogger(COACH_LOGGER).info("Training> Name=main_level/agent, Worker=0, Episode=1, Total reward=3.0, "
                                     "Steps=10, Training iteration=0")
try:
    raise ValueError("boom")
except ValueError:
    logging.getLogger("hotlap.trainer").exception("failed")
import warnings
warnings.warn("old API", DeprecationWarning, stacklevel=1)
raise RuntimeError("never caught")
"""


def _run(log_format: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", SCRIPT, log_format], capture_output=True, text=True,
                            timeout=60, cwd=REPO, env={"PYTHONPATH": str(REPO)})
    assert result.returncode == 1 and result.stderr == "", result.stderr  # the uncaught error is logged too
    return result.stdout.splitlines()


def test_json_format_writes_one_object_per_line_with_level_logger_message() -> None:
    lines = _run("json")
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(r["level"], r["logger"]) for r in records] == [
        ("INFO", "hotlap.worker"), ("ERROR", "hotlap.trainer"), ("WARNING", "py.warnings"), ("CRITICAL", "hotlap")]
    assert records[0]["message"] == "worker 3 ready" and records[1]["message"] == "failed"
    assert "DeprecationWarning: old API" in records[2]["message"]
    assert all(r["process"] == "simulator w0" and r["timestamp"] for r in records)
    assert "ValueError: boom" in records[1]["exc_info"]  # a traceback stays inside its record
    assert "RuntimeError: never caught" in records[3]["exc_info"]
    assert len(lines) == 6  # four records, two bare DeepRacer lines


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_deepracer_lines_stay_bare(log_format: str) -> None:
    lines = _run(log_format)
    assert any(line.startswith("SIM_TRACE_LOG:0,1,0.5,") for line in lines)
    assert any(line.startswith("Training> Name=main_level/agent, Worker=0, Episode=1") for line in lines)


def test_text_format_is_one_readable_line_per_record() -> None:
    lines = _run("text")
    assert any(line.endswith("INFO [simulator w0] hotlap.worker: worker 3 ready") for line in lines)
    assert "RuntimeError: never caught" in lines[-1]
    assert not any(line.startswith("{") for line in lines)
