"""docs/troubleshooting.md stays true: every test its tables name exists (a test function, or a case
of a parametrized one), every bad-input case of the table-driven tests has a row, and there are at
least 40 rows."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "troubleshooting.md"
MODULES = (
    "tests.hotlap.test_bad_user_files",
    "tests.simulator.test_bad_reward_functions",
    "tests.simulator.test_bad_tracks",
    "tests.trainer.test_bad_messages",
    "tests.hotlap.test_bad_model_files",
    "tests.shared.test_bad_endpoints",
    "tests.e2e.test_server_errors",
    "tests.e2e.test_faults",
)


def _tests_and_cases() -> tuple[set[str], set[str]]:
    """Test function names, and the string case ids of their parametrize marks."""
    names: set[str] = set()
    cases: set[str] = set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("test_") or function.__module__ != module_name:
                continue
            names.add(name)
            for mark in getattr(function, "pytestmark", []):
                if mark.name == "parametrize":
                    cases.update(value for value in mark.args[1] if isinstance(value, str))
    return names, cases


def _rows() -> list[list[str]]:
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] != "input" and not cells[0].startswith("---"):
            rows.append(cells)
    return rows


def test_every_named_test_exists_and_every_case_has_a_row() -> None:
    names, cases = _tests_and_cases()
    rows = _rows()
    assert len(rows) >= 40
    named = [test for row in rows for test in re.findall(r"`([^`]+)`", row[3])]
    assert len(named) >= len(rows)  # every row names its test
    unknown = [test for test in named if test not in names | cases]
    assert not unknown, f"docs/troubleshooting.md names tests that do not exist: {unknown}"
    without_row = sorted(cases - set(named))
    assert not without_row, f"bad-input cases with no row in docs/troubleshooting.md: {without_row}"
