"""Smoke tests of the throughput benchmarks: each runs with its tiniest settings and writes a JSON
result whose numbers are present, finite and positive. Not a measurement: it keeps the scripts working."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def run_bench(script: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / f"{script}.json"
    subprocess.run([sys.executable, str(REPO / "bench" / f"{script}.py"), "--json", str(out), *args],
                   cwd=tmp_path, check=True, timeout=150, stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"]
    assert len(machine["loadavg_start"]) == 3 and len(machine["loadavg_end"]) == 3
    return result


def assert_positive(row: dict[str, Any], keys: list[str]) -> None:
    for key in keys:
        value = row[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)


def test_pipeline_bench(tmp_path: Path):
    result = run_bench("pipeline", tmp_path, "--workers", "1", "--schedules", "async", "--iterations", "2",
                       "--episodes", "1", "--max-steps", "10", "--cars-per-worker", "1", "--run-timeout", "90")
    (row,) = result["rows"]
    assert (row["schedule"], row["workers"]) == ("async", 1)
    assert_positive(row, ["end_to_end_steps_per_s", "worker_steps_per_s_playing", "trainer_busy_fraction",
                          "trainer_train_fraction", "publish_to_use_mean_s", "publish_to_use_max_s",
                          "model_load_mean_s", "redis_used_memory_peak_bytes", "trained_steps", "played_steps",
                          "version_switches"])
    assert 0 < row["trainer_busy_fraction"] <= 1 and 0 <= row["worker_wait_fraction"] <= 1
    assert {"publish_to_use_worst_s", "publish_to_use_target_met", "async_busy_target_met"} <= set(result["summary"])


def test_transport_bench(tmp_path: Path):
    result = run_bench("transport", tmp_path, "--producers", "1", "2", "--steps", "4", "--messages", "6",
                       "--repeats", "1")
    assert [row["producers"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        assert_positive(row, ["raw_episodes_per_s", "hotlap_episodes_per_s", "ratio", "consumer_ratio"])
    assert_positive(result["summary"], ["message_array_bytes", "hotlap_message_bytes", "worst_ratio"])


def test_scale_bench(tmp_path: Path):
    result = run_bench("scale", tmp_path, "--producers", "2", "8", "--processes", "2", "--rates", "20", "0",
                       "--steps", "4", "--seconds", "1")
    assert [(row["producers"], row["rate"]) for row in result["rows"]] == [(2, 20), (8, 20), (2, 0), (8, 0)]
    for row in result["rows"]:
        assert_positive(row, ["sent_msgs_per_s", "consumed_msgs_per_s", "into_redis_mb_per_s", "add_p50_ms",
                              "add_p99_ms", "redis_used_memory_peak_mib"])
    assert result["summary"]["closed_loop_max_msgs_per_s"] > 0


def test_trainer_bench(tmp_path: Path):
    result = run_bench("trainer", tmp_path, "--network", "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "--steps", "64",
                       "--epochs", "1", "--repeats", "1", "--matmul-size", "128", "--matmul-seconds", "0.2",
                       "--options", "--trunk", "both")
    assert [(r["network"], r["trunk"]) for r in result["rows"]] == [("SHALLOW", "separate"), ("SHALLOW", "shared")]
    for row in result["rows"]:
        assert_positive(row, ["trainer_samples_per_s", "bare_samples_per_s", "train_gflop_per_sample",
                              "trainer_fraction_of_matmul", "bare_fraction_of_matmul"])
        assert math.isfinite(row["overhead_pct"])
    assert result["rows"][1]["train_gflop_per_sample"] < result["rows"][0]["train_gflop_per_sample"]  # one trunk
    assert_positive(result["summary"], ["matmul_gflops"])
    assert [o["option"] for o in result["summary"]["options"]][:2] == ["channels_last", "compile"]
    assert result["summary"]["options"][2]["option"].startswith("threads=")
    for option in result["summary"]["options"]:
        assert_positive(option, ["samples_per_s_without", "samples_per_s_with", "speedup"])


def test_learn_bench_stops_at_its_budget_and_evaluates_every_version(tmp_path: Path):
    """bench/learn.py end to end with a tiny budget: `hotlap train` with the waypoint-heading reward,
    stopped by --budget-s, then every version's three greedy trials, the JSON and the PNG."""
    out, png = tmp_path / "learn.json", tmp_path / "learn.png"
    subprocess.run([sys.executable, str(REPO / "bench" / "learn.py"), "--rewards", "heading", "--workers", "1",
                    "--iterations", "1000", "--budget-s", "60", "--eval-max-steps", "30", "--json", str(out),
                    "--png", str(png), "--runs-dir", str(tmp_path / "runs"), "--generalise", "Oval_track", "--",
                    "--episodes-per-iteration", "2", "--max-steps", "20", "--min-eval-trials", "0"],
                   cwd=tmp_path, check=True, timeout=400, stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    (case,) = result["rows"]
    summary = case["summary"]
    assert summary["case"] == "heading-default" and summary["reward"] == "heading"
    assert 1 <= summary["versions"] < 1001  # the budget stopped it, the store kept what it published
    versions = case["versions"]
    assert [v["version"] for v in versions] == list(range(len(versions)))
    assert all(v["trials"] == 3 for v in versions) and versions[0]["env_steps"] == 0
    steps = (tmp_path / "runs" / "heading-default" / "logs" / "episodes.csv").read_text().splitlines()[1:]
    trained = [s for s in steps if int(s.split(",")[0]) < versions[-1]["version"]]
    assert versions[-1]["env_steps"] == sum(int(s.split(",")[5]) for s in trained)
    assert all(v["approx_kl_max"] is not None for v in versions[1:])
    (general,) = case["generalisation"]
    assert general["track"] == "Oval_track" and general["trials"] == 3
    assert result["summary"]["cases"] == [summary]
    assert png.read_bytes().startswith(b"\x89PNG")
    assert summary["window_s"] == 900.0 and summary["iterations"] == versions[-1]["version"]
    in_window = [v["best_lap_s"] for v in versions if v["best_lap_s"] is not None and v["seconds"] <= 900.0]
    assert summary["best_lap_in_window_s"] == (min(in_window) if in_window else None)
    reliable = [v["best_lap_s"] for v in versions if v["best_lap_s"] is not None and v["laps"] == v["trials"]]
    assert summary["best_reliable_lap_s"] == (min(reliable) if reliable else None)

    combined = tmp_path / "combined.png"  # --combine: one table and plot of several result files
    table = subprocess.run([sys.executable, str(REPO / "bench" / "learn.py"), "--combine", str(out), str(out),
                            "--png", str(combined)], cwd=tmp_path, check=True, timeout=120, capture_output=True,
                           text=True).stdout
    assert sum(line.startswith("heading-default ") for line in table.splitlines()) == 2  # a row per case
    assert "heading-default v" in table and "on Oval_track: " in table
    assert combined.read_bytes().startswith(b"\x89PNG")


def test_worker_bench(tmp_path: Path):
    result = run_bench("worker", tmp_path, "--cars", "1", "2", "--threads", "1", "--seconds", "0.2", "--rounds", "1")
    assert [row["cars"] for row in result["rows"]] == [1, 2]
    for row in result["rows"]:
        assert_positive(row, ["worker_steps_per_cpu_s", "act_steps_per_cpu_s", "act_inference_mode_steps_per_cpu_s",
                              "sim_steps_per_cpu_s", "worker_over_act", "inference_mode_over_no_grad",
                              "act_wall_steps_per_s_threads_1"])
    assert result["summary"]["fastest_cars_per_worker"] in (1, 2)


def test_learn_combine_names_a_file_that_is_not_a_learn_result(tmp_path: Path):
    (tmp_path / "broken.json").write_text("{")
    cases = [(tmp_path / "missing.json", "cannot read it as JSON"),
             (tmp_path / "broken.json", "cannot read it as JSON"),
             (REPO / "bench" / "results" / "kl.json", "not a bench/learn.py result (its \"benchmark\" is 'kl')")]
    for path, message in cases:
        result = subprocess.run([sys.executable, str(REPO / "bench" / "learn.py"), "--combine", str(path), "--png",
                                 str(tmp_path / "out.png")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and f"--combine {path}: {message}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "out.png").exists()
