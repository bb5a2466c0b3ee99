"""`hotlap runs` on a real run, in a local folder and in S3: every field checked against the run's files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hotlap.runs import STALE_AFTER_S, list_runs
from tests.hotlap.conftest import FIXTURE_RUN_ID

pytestmark = pytest.mark.slow  # the trained_run fixture is a real 3-iteration training run (~20-35 s)


def hotlap(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotlap", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def folder_size(run: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(run) for f in files
               if not f.startswith("."))


def assert_describes_the_fixture(entry: dict, run: Path) -> None:
    checkpoints = json.loads((run / "model/deepracer_checkpoints.json").read_text())
    stats = json.loads((run / "model/3/manifest.json").read_text())["training_stats"]
    assert entry["track"] == "reInvent2019_track"
    assert entry["versions"] == 4 and entry["latest_version"] == 3
    assert entry["best_checkpoint"] == checkpoints["best_checkpoint"]["name"]
    assert entry["best_metric"] == checkpoints["best_checkpoint"]["avg_eval_metric"]
    assert entry["metric"] == "progress"
    assert entry["last_iteration"] == 3
    assert entry["last_reward"] == stats["mean_reward"] and entry["last_progress"] == stats["mean_progress"]
    assert entry["last_laps"] == stats["laps_completed"]


def test_runs_lists_a_local_folder_of_runs(trained_run: Path, tmp_path: Path):
    result = hotlap("runs", str(trained_run.parent), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert entry["run"] == FIXTURE_RUN_ID and entry["status"] == "done" and entry["reason"] == ""
    assert entry["url"] == f"file://{trained_run}"
    assert entry["size_bytes"] == folder_size(trained_run)
    assert_describes_the_fixture(entry, trained_run)

    table = hotlap("runs", str(trained_run.parent), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:3] == ["run", "track", "status"]
    assert row.split()[:4] == [FIXTURE_RUN_ID, "reInvent2019_track", "done", "4"]
    best = json.loads((trained_run / "model/deepracer_checkpoints.json").read_text())["best_checkpoint"]
    assert f"{best['name']} (progress {best['avg_eval_metric']:.1f})" in row


def test_default_store_is_hotlap_runs_in_the_current_folder(trained_run: Path, tmp_path: Path):
    shutil.copytree(trained_run, tmp_path / "hotlap-runs" / "copy")
    result = hotlap("runs", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [e["run"] for e in json.loads(result.stdout)] == ["copy"]


def test_a_run_without_ip_done_is_running_then_stopped(trained_run: Path, tmp_path: Path):
    shutil.copytree(trained_run, tmp_path / "runs" / "going")  # keeps the files' times
    (tmp_path / "runs" / "going" / "ip" / "done").unlink()
    shutil.copytree(trained_run, tmp_path / "runs" / "finished")
    last_write = max(p.stat().st_mtime for p in (tmp_path / "runs" / "going").rglob("*") if p.is_file())

    soon = {r.run: r for r in list_runs(str(tmp_path / "runs"), now=last_write + 60)}
    assert soon["going"].status == "running" and soon["finished"].status == "done"
    later = {r.run: r for r in list_runs(str(tmp_path / "runs"), now=last_write + STALE_AFTER_S + 60)}
    assert later["going"].status == "stopped" and "no ip/done" in later["going"].reason
    assert later["finished"].status == "done"


def test_runs_lists_an_s3_prefix(s3_runs: str, s3_endpoint: str, trained_run: Path, tmp_path: Path):
    result = hotlap("runs", s3_runs, "--s3-endpoint-url", s3_endpoint, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    entries = {e["run"]: e for e in json.loads(result.stdout)}
    assert sorted(entries) == [FIXTURE_RUN_ID, "unfinished"]
    done, going = entries[FIXTURE_RUN_ID], entries["unfinished"]
    assert done["status"] == "done" and going["status"] == "running"  # just uploaded: recent writes
    assert done["url"].startswith(f"{s3_runs}/{FIXTURE_RUN_ID} at {s3_endpoint}")
    assert done["size_bytes"] == folder_size(trained_run)
    assert going["size_bytes"] == folder_size(trained_run) - (trained_run / "ip/done").stat().st_size
    assert_describes_the_fixture(done, trained_run)
    assert_describes_the_fixture(going, trained_run)


def test_runs_names_a_missing_folder(tmp_path: Path):
    result = hotlap("runs", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 2 and f"{tmp_path / 'nowhere'}: no such folder" in result.stderr
    result = hotlap("runs", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0 and f"no runs in {tmp_path}" in result.stdout


def test_a_damaged_run_is_listed_with_what_cannot_be_read(trained_run: Path, tmp_path: Path):
    shutil.copytree(trained_run, tmp_path / "runs" / "damaged")
    (tmp_path / "runs" / "damaged" / "model" / "deepracer_checkpoints.json").write_text('{"best_checkpoint": ')
    (run,) = list_runs(str(tmp_path / "runs"))
    assert run.status == "done" and run.best_checkpoint is None and run.latest_version == 3
    assert len(run.problems) == 1 and "model/deepracer_checkpoints.json" in run.problems[0]
    table = hotlap("runs", str(tmp_path / "runs"), cwd=tmp_path)
    assert table.returncode == 0 and "damaged: cannot read model/deepracer_checkpoints.json" in table.stdout


def test_a_failed_run_is_listed_as_failed_with_its_reason(trained_run: Path, tmp_path: Path):
    """ip/failed is the store's failure marker (any failing process writes it): shown at once and
    forever, not as running and then stopped."""
    for name, reason in (("failed", b"reward_function.py line 3: ValueError: broken on purpose"), ("blank", b"")):
        shutil.copytree(trained_run, tmp_path / "runs" / name)
        (tmp_path / "runs" / name / "ip" / "done").unlink()
        (tmp_path / "runs" / name / "ip" / "failed").write_bytes(reason)
    last_write = max(p.stat().st_mtime for p in (tmp_path / "runs").rglob("*") if p.is_file())
    for now in (last_write + 60, last_write + STALE_AFTER_S + 60):
        runs = {r.run: r for r in list_runs(str(tmp_path / "runs"), now=now)}
        assert runs["failed"].status == "failed"
        assert runs["failed"].reason == "reward_function.py line 3: ValueError: broken on purpose"
        assert runs["blank"].status == "failed" and runs["blank"].reason == "(no reason recorded)"
