"""hotlap.progress: one line per step on a pipe, a live bar on a terminal."""

from __future__ import annotations

import io

from hotlap.progress import ProgressDisplay, format_metrics


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_one_line_each_time_the_count_advances() -> None:
    out = _Pipe()
    with ProgressDisplay("training", total=3, unit="iteration", stream=out) as display:
        display.status("waiting")  # not logged
        for completed in (1, 1, 1, 2, 2, 3, 3):  # a poll every second sees the same iteration
            display.update(completed, {"reward": 1.5 * completed, "laps": f"{completed}/4"})
    lines = out.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["iteration 1/3", "iteration 2/3", "iteration 3/3"]
    assert lines[1].endswith("| reward 3.00 | laps 2/4")
    assert "ETA" in lines[0] and "\x1b[" not in out.getvalue()


def test_a_terminal_gets_a_live_bar_with_the_metrics() -> None:
    out = _Terminal()
    with ProgressDisplay("evaluating", total=5, unit="lap", stream=out) as display:
        display.update(2, {"lap time s": 12.25})
    screen = out.getvalue()
    assert "evaluating" in screen and "2/5" in screen and "laps" in screen and "lap time s 12.25" in screen
    assert "━" in screen and "\x1b[" in screen
    assert "lap 2/5 |" not in screen  # not the pipe's lines


def test_a_resumed_run_s_eta_counts_only_the_iterations_done_while_shown(monkeypatch) -> None:
    clock = iter([0.0, 0.0, 100.0, 120.0])  # created, entered, first update (iteration 6 of 10), second (7)
    monkeypatch.setattr("hotlap.progress.time.monotonic", lambda: next(clock))
    out = _Pipe()
    with ProgressDisplay("training", total=10, stream=out) as display:
        display.update(6)  # iterations 1-5 were trained before a restart
        display.update(7)
    first, second = out.getvalue().splitlines()
    assert first == "iteration 6/10 | 1:40 elapsed, ETA 6:40"  # 100 s for one iteration, 4 to go
    assert second == "iteration 7/10 | 2:00 elapsed, ETA 3:00"  # 60 s per iteration, 3 to go


def test_format_metrics_rounds_floats_and_keeps_text() -> None:
    assert format_metrics({"reward": 12.345, "laps": 4, "workers": "2"}) == "reward 12.35 | laps 4 | workers 2"


def test_the_progress_line_shows_the_iterations_collection_rate_not_a_waiting_heartbeat() -> None:
    """In sync mode a worker's heartbeat rate at an iteration's end is ~0 (it waits for the new
    version); the line shows the iteration's steps over its collection time instead."""
    from hotlap.local import collect_rate

    waiting = {"sim-0": {"steps_per_s": "0.0"}, "sim-1": {"steps_per_s": "0.0"}}
    assert collect_rate({"steps": "1200", "collect_seconds": "4.0"}, waiting) == 300.0
    assert collect_rate({}, {"sim-0": {"steps_per_s": "12.5"}, "sim-1": {"steps_per_s": "7.5"}}) == 20.0
