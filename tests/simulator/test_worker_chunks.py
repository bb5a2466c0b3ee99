"""Async chunks from a real worker (real Redis, a local-folder store): an episode cut at a version
change goes out as chunks, and the message that ends it carries the whole episode's reward and steps,
which the trainer's episode statistics use (tests/trainer/test_async_chunks.py)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from shared.experience import EPISODE_REWARD, EPISODE_STEPS, FINAL_CHUNK, Experience
from tests.simulator.worker_harness import async_worker

CARS = 2
# A reward that differs step by step, so a sum over the wrong steps shows.
REWARD = "def reward_function(params):\n    return 1.0 + params['steps'] / 100.0\n"


def test_the_message_that_ends_a_cut_episode_carries_the_whole_episode(
    redis_url: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None,
) -> None:
    metadata = {"action_space": [{"steering_angle": 0, "speed": 0.5}], "sensor": ["FRONT_FACING_CAMERA"],
                "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "version": "5"}
    worker, shipped = async_worker(tmp_path, redis_url, run_id, monkeypatch, "chunks", metadata, REWARD, CARS,
                                   max_steps=30)
    worker._claim_episodes()
    for _cut in range(2):  # two version changes while the cars drive: episodes in up to three parts
        for _ in range(4):
            worker._ship_finished_episodes(worker._step_cars())
            worker._claim_episodes()
        worker._ship_chunks_of_running_episodes()  # what a version change does under async
    while any(e.extra[FINAL_CHUNK] is False for e in shipped) and worker.active.any() and len(shipped) < 50:
        worker._ship_finished_episodes(worker._step_cars())  # run the cut episodes to their end

    parts: dict[int, list[Experience]] = defaultdict(list)
    for exp in shipped:
        parts[exp.episode].append(exp)
    cut_episodes = [number for number, messages in parts.items() if len(messages) > 1]
    assert cut_episodes, "no episode was cut at a version change"
    for number in cut_episodes:
        *chunks, last = parts[number]
        assert [c.extra[FINAL_CHUNK] for c in chunks] == [False] * len(chunks) and last.extra[FINAL_CHUNK]
        steps = sum(m.num_steps for m in parts[number])
        assert last.extra[EPISODE_STEPS] == last.episode_steps == steps
        assert last.extra[EPISODE_REWARD] == pytest.approx(sum(m.total_reward for m in parts[number]), rel=1e-5)
        assert last.episode_reward > last.total_reward  # the earlier chunks' reward is in it
    # The worker's own metrics (DeepRacer's TrainingMetrics) count whole episodes only, with the same reward.
    worker.metrics.flush()
    records = {r["episode"] - 1: r for r in worker.metrics.records if r["phase"] == "training"}
    for number in cut_episodes:
        assert records[number]["reward_score"] == pytest.approx(parts[number][-1].episode_reward, abs=0.5)  # rounded
