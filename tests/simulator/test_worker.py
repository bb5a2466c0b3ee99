"""The worker's accounting of time spent on the trainer (heartbeat fields, exit log line)."""

from __future__ import annotations

import pytest

from simulator.worker import TrainerWait


def test_trainer_wait_reports_waiting_and_publish_to_use_latencies():
    wait = TrainerWait()
    assert wait.fields()["publish_to_use_mean_s"] == 0.0  # no switch yet: no division by zero
    wait.waited(0.25)
    wait.waited(0.5)
    assert wait.switched(published_at=100.0, now=100.2) == pytest.approx(0.2)
    assert wait.switched(published_at=200.0, now=200.6) == pytest.approx(0.6)

    fields = wait.fields()
    assert fields["waiting_s"] == pytest.approx(0.75)
    assert fields["version_switches"] == 2
    assert fields["publish_to_use_s"] == pytest.approx(0.6)
    assert fields["publish_to_use_max_s"] == pytest.approx(0.6)
    assert fields["publish_to_use_mean_s"] == pytest.approx(0.4)


def test_a_clock_behind_the_publishers_never_gives_a_negative_latency():
    # Worker and trainer on different machines: the worker's clock may read earlier than published_at.
    assert TrainerWait().switched(published_at=100.0, now=99.9) == 0.0
