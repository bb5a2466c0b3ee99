"""SimtraceRow's two renderings: the SIM_TRACE_LOG line and the simtrace CSV row (deepracer-formats.md
§10), pinned exactly. The worker writes one log line per car-step, so these are built from the
attributes directly (no per-row deep copy); these tests keep the output what it was."""

from __future__ import annotations

from dataclasses import astuple

from shared.deepracer_logs import SIMTRACE_COLUMNS, SimtraceRow, simtrace_csv

ROW = SimtraceRow(episode=3, steps=7.0, x=1.23456789, y=-0.5, yaw=90.125, steer=-15.0, throttle=1.2, action="2",
                  reward=0.123456789, done=False, all_wheels_on_track=True, progress=12.3456789,
                  closest_waypoint=41, track_len=17.7094, tstamp=0.4666667, episode_status="in_progress",
                  wall_clock=1700000000.25)


def test_log_line_is_deepracers_format_with_integer_steps():
    assert ROW.log_line() == ("SIM_TRACE_LOG:3,7,1.2346,-0.5000,90.1250,-15.00,1.20,2,0.1235,False,True,12.3457,41,"
                              "17.71,0.4666667,in_progress,0.00,0,1700000000.2500")


def test_values_are_the_fields_in_column_order():
    assert ROW.values() == list(astuple(ROW))
    assert len(ROW.values()) == len(SIMTRACE_COLUMNS)


def test_csv_row_holds_every_value_at_full_precision():
    header, line = simtrace_csv([ROW]).splitlines()
    assert header == ",".join(SIMTRACE_COLUMNS)
    assert line == ",".join(str(v) for v in astuple(ROW))
