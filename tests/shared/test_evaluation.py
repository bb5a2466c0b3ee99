"""Best-model selection by DeepRacer's BEST_MODEL_METRIC (deepracer-formats.md §4.1, §4.2) and the
checkpoint index's file format."""

from __future__ import annotations

import json

import pytest

from shared.deepracer_logs import TrainingMetrics
from shared.evaluation import (
    UNFINISHED_LAP_MS,
    CheckpointIndex,
    EvalEpisode,
    EvaluationError,
    episodes_from_json,
    episodes_to_json,
    eval_metric,
    eval_start_fractions,
)


def ep(progress: float, reward: float = 0.0, elapsed_ms: int = 10_000) -> EvalEpisode:
    return EvalEpisode(progress=progress, reward=reward, elapsed_ms=elapsed_ms,
                       status="lap_complete" if progress >= 100 else "off_track")


def best_of(metric: str, evaluations: dict[int, list[EvalEpisode]]) -> CheckpointIndex:
    index = CheckpointIndex(metric)
    for version, episodes in evaluations.items():
        index.credit(version, eval_metric(episodes, metric), time_stamp=float(version))
    return index


def test_progress_picks_the_highest_mean_and_a_tie_goes_to_the_later_version() -> None:
    index = best_of("progress", {0: [ep(10), ep(30)], 1: [ep(60), ep(40)], 2: [ep(50)], 3: [ep(20), ep(80)]})
    assert index.best == {"name": "model/3", "avg_eval_metric": 50.0, "time_stamp": 3.0}  # 50 ties version 1's
    assert index.last == {"name": "model/3", "avg_eval_metric": 50.0, "time_stamp": 3.0}
    index.credit(4, 49.9, 4.0)
    assert index.best_version == 3 and index.last_version == 4


def test_reward_picks_the_highest_mean_reward_not_progress() -> None:
    index = best_of("reward", {0: [ep(100, reward=5.0)], 1: [ep(10, reward=30.0), ep(12, reward=20.0)],
                               2: [ep(90, reward=24.0)]})
    assert index.best_version == 1 and index.best is not None and index.best["avg_eval_metric"] == 25.0
    assert index.last_version == 2


def test_laptime_picks_the_lowest_mean_and_an_unfinished_lap_counts_999999_ms() -> None:
    fast_but_one_crash = [ep(100, elapsed_ms=9_000), ep(40, elapsed_ms=2_000)]
    slow_but_steady = [ep(100, elapsed_ms=15_000), ep(100, elapsed_ms=16_000)]
    index = best_of("laptime", {0: [ep(30, elapsed_ms=1_000)], 1: fast_but_one_crash, 2: slow_but_steady,
                                3: [ep(100, elapsed_ms=15_500)]})
    assert eval_metric(fast_but_one_crash, "laptime") == (9_000 + UNFINISHED_LAP_MS) / 2
    assert index.best_version == 3  # 15,500 ms ties version 2's mean: the later one wins
    assert index.best is not None and index.best["avg_eval_metric"] == 15_500


def test_an_unknown_metric_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'speed'"):
        eval_metric([ep(10)], "speed")


def test_the_index_is_deepracers_file_and_reads_back() -> None:
    index = best_of("progress", {0: [ep(70)], 1: [ep(20)]})
    data = json.loads(index.to_json())
    assert set(data) == {"best_checkpoint", "last_checkpoint"}
    assert set(data["best_checkpoint"]) == {"name", "avg_eval_metric", "time_stamp"}
    again = CheckpointIndex.parse(index.to_json(), "progress", "x.json")
    assert (again.best_version, again.last_version) == (0, 1)
    again.credit(2, 69.0, 2.0)  # a reloaded index keeps comparing against the stored best
    assert again.best_version == 0


@pytest.mark.parametrize("text", ["[]", "{", '{"best_checkpoint": {"name": "model/1"}}',
                                  '{"last_checkpoint": {"name": 3, "avg_eval_metric": 1}}'])
def test_a_malformed_index_is_named(text: str) -> None:
    with pytest.raises(EvaluationError, match="where.json"):
        CheckpointIndex.parse(text, "progress", "where.json")


def test_evaluation_reports_round_trip_and_bad_ones_are_named() -> None:
    episodes = [ep(100, 12.5, 14_000), ep(33.3, 4.0, 3_000)]
    assert episodes_from_json(episodes_to_json(episodes), "r") == episodes
    for bad in ("[]", "{}", '[{"progress": 1}]', "nope"):
        with pytest.raises(EvaluationError, match="report 7"):
            episodes_from_json(bad, "report 7")


def test_trials_start_spread_over_the_lap() -> None:
    assert eval_start_fractions(3) == [0.0, 1 / 3, 2 / 3]


def test_evaluation_records_repeat_the_last_training_episode_and_trial() -> None:
    metrics = TrainingMetrics("laptime")
    for number in range(3):
        metrics.add_episode(episode=number, reward=1.0, elapsed_ms=1000, progress=10.0, status="off_track")
    metrics.add_evaluation(reward=7.4, elapsed_ms=500, progress=100.0, status="lap_complete")
    metrics.add_evaluation(reward=2.0, elapsed_ms=200, progress=12.7, status="off_track")
    metrics.new_iteration()
    metrics.add_episode(episode=3, reward=1.0, elapsed_ms=1000, progress=10.0, status="off_track")
    records = json.loads(metrics.to_json())["metrics"]
    assert [(r["phase"], r["episode"], r["trial"]) for r in records] == [
        ("training", 1, 1), ("training", 2, 2), ("training", 3, 3),
        ("evaluation", 3, 3), ("evaluation", 3, 3), ("training", 4, 1)]
    assert records[3] == {"reward_score": 7, "metric_time": 3500, "start_time": 3000,
                          "elapsed_time_in_milliseconds": 500, "episode": 3, "trial": 3, "phase": "evaluation",
                          "completion_percentage": 100, "episode_status": "Lap complete"}
    assert json.loads(metrics.to_json())["best_model_metric"] == "laptime"
