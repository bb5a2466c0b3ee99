"""TrainingMetrics.json records in the worker's episode order, on one monotonic clock (deepracer-formats.md §4.1)."""

from __future__ import annotations

import json

import pytest

from shared.deepracer_logs import TrainingMetrics


def end(metrics: TrainingMetrics, episode: int, elapsed_ms: int, status: str = "off_track") -> None:
    metrics.add_episode(episode=episode, reward=10.0 * episode + 0.4, elapsed_ms=elapsed_ms, progress=12.9,
                        status=status)


def test_episodes_ending_out_of_start_order_are_recorded_in_episode_order() -> None:
    metrics = TrainingMetrics()
    elapsed = {0: 900, 1: 300, 2: 1500, 3: 600}
    end(metrics, 1, elapsed[1])  # car 1's episode ends first
    assert metrics.records == []  # episode 0 still running: its record comes first
    end(metrics, 3, elapsed[3])
    end(metrics, 0, elapsed[0])
    assert [r["episode"] for r in metrics.records] == [1, 2]  # DeepRacer counts from 1, the simtrace from 0
    end(metrics, 2, elapsed[2], status="lap_complete")
    records = json.loads(metrics.to_json())["metrics"]
    assert [r["episode"] for r in records] == [1, 2, 3, 4]
    assert [r["elapsed_time_in_milliseconds"] for r in records] == [elapsed[e] for e in range(4)]
    assert [r["reward_score"] for r in records] == [0, 10, 20, 30]
    assert records[2]["episode_status"] == "Lap complete" and records[0]["completion_percentage"] == 12
    assert records[0]["start_time"] == 0
    for before, after in zip(records, records[1:], strict=False):
        assert after["start_time"] == before["metric_time"]  # one simulator driving them back to back
    for record in records:
        assert record["metric_time"] == record["start_time"] + record["elapsed_time_in_milliseconds"]
    assert [r["trial"] for r in records] == [1, 2, 3, 4]


def test_flush_writes_the_ended_episodes_after_one_that_never_ends() -> None:
    metrics = TrainingMetrics()
    end(metrics, 0, 100)
    end(metrics, 2, 200)  # episode 1 is still running when the worker stops
    end(metrics, 3, 300)
    assert [r["episode"] for r in metrics.records] == [1]
    metrics.flush()
    assert [r["episode"] for r in metrics.records] == [1, 3, 4]
    assert [r["metric_time"] for r in metrics.records] == [100, 300, 600]
    end(metrics, 4, 50)
    assert [r["episode"] for r in metrics.records] == [1, 3, 4, 5]


def test_an_episode_is_recorded_once() -> None:
    metrics = TrainingMetrics()
    end(metrics, 0, 100)
    end(metrics, 2, 100)
    for episode in (0, 2):
        with pytest.raises(ValueError, match=f"episode {episode} was recorded already"):
            end(metrics, episode, 100)


def test_a_resumed_file_keeps_its_records_and_goes_on_after_them() -> None:
    """A restarted worker (or a new one on the same index) continues the file: the earlier records
    stay, the clock goes on from the last metric_time, and numbers given out but never ended are skipped."""
    earlier = TrainingMetrics()
    end(earlier, 0, 500)
    end(earlier, 1, 700)
    resumed = TrainingMetrics()
    resumed.resume(earlier.to_json(), next_episode=4)  # episodes 2 and 3 started, never ended
    end(resumed, 4, 300)
    records = json.loads(resumed.to_json())["metrics"]
    assert [r["episode"] for r in records] == [1, 2, 5]
    assert records[2]["start_time"] == records[1]["metric_time"] == 1200 and records[2]["metric_time"] == 1500


@pytest.mark.parametrize("text", ['{"metrics": 3}', "[]", '{"metrics": [{"metric_time": "x"}]}', "not json"])
def test_resuming_a_file_that_is_not_training_metrics_raises(text: str) -> None:
    with pytest.raises(ValueError):
        TrainingMetrics().resume(text, next_episode=0)
