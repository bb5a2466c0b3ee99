"""Bootstrap values from a real worker (real Redis, a local-folder store): only an episode cut at
MAX_STEPS_PER_EPISODE (truncated) bootstraps from the value of its last observation; one that ended
(off track, lap, reversed) carries 0, and the worker asks the network for no value it then throws
away (bench/worker.py measured that per-step cost)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.simulator.worker_harness import async_worker

CARS = 4
REWARD = "def reward_function(params):\n    return 1.0\n"


def test_only_truncated_episodes_ask_for_a_bootstrap_value(
    redis_url: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None,
) -> None:
    # hard turns at speed leave the track within the step limit about as often as not
    metadata = {"action_space": [{"steering_angle": -30, "speed": 1.5}, {"steering_angle": 0, "speed": 0.5},
                                 {"steering_angle": 30, "speed": 1.5}],
                "sensor": ["FRONT_FACING_CAMERA"], "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
                "version": "5"}
    worker, shipped = async_worker(tmp_path, redis_url, run_id, monkeypatch, "bootstrap", metadata, REWARD, CARS,
                                   max_steps=15)
    asked: list[float] = []  # every value the worker asked the network for
    value = worker.policy.value

    def recording_value(obs: dict[str, Any]) -> np.ndarray:
        values = value(obs)
        asked.extend(values.tolist())
        return values
    monkeypatch.setattr(worker.policy, "value", recording_value)

    for _ in range(150):
        worker._claim_episodes()
        worker._ship_finished_episodes(worker._step_cars())

    truncated = [exp for exp in shipped if not exp.terminated]
    terminated = [exp for exp in shipped if exp.terminated]
    assert truncated and terminated, (len(truncated), len(terminated))  # both kinds happened
    assert all(exp.bootstrap_value == 0.0 for exp in terminated)
    assert all(exp.num_steps == 15 for exp in truncated)
    # one value per truncated episode, and it is the one the episode carries
    assert sorted(asked) == sorted(float(np.float32(exp.bootstrap_value)) for exp in truncated)
