"""Bootstrap values from a real worker (real Redis, a local-folder store): only an episode cut at
MAX_STEPS_PER_EPISODE (truncated) bootstraps from the value of its last observation; one that ended
(off track, lap, reversed) carries 0, and the worker asks the network for no value it then throws
away (bench/worker.py measured that per-step cost)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import simulator.worker as worker_module
from hotlap.seed import seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings, WorkerConfig
from shared.experience import Experience
from shared.run_files import RunFiles
from shared.store import ModelStore, open_store
from shared.transport import RunTransport

CARS = 4
REWARD = "def reward_function(params):\n    return 1.0\n"


def test_only_truncated_episodes_ask_for_a_bootstrap_value(
    redis_url: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None,
) -> None:
    store = ModelStore(open_store(f"file://{tmp_path / 'store'}"))
    # hard turns at speed leave the track within the step limit about as often as not
    metadata = {"action_space": [{"steering_angle": -30, "speed": 1.5}, {"steering_angle": 0, "speed": 0.5},
                                 {"steering_angle": 30, "speed": 1.5}],
                "sensor": ["FRONT_FACING_CAMERA"], "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
                "version": "5"}
    seed_store(store, RunFiles(
        settings=RunSettings(track="Oval_track", cars_per_worker=CARS, schedule="async", max_steps_per_episode=15),
        metadata=ModelMetadata.parse(json.dumps(metadata)),
        hyperparameters=Hyperparameters(),
        reward_source=REWARD,
    ))
    config = WorkerConfig.model_validate({"HOTLAP_RUN_ID": run_id, "HOTLAP_REDIS_URL": redis_url,
                                          "HOTLAP_STORE_URL": store.url, "HOTLAP_WORKER_NAME": "bootstrap",
                                          "HOTLAP_SIM_TRACE_LOG": "0"})
    worker = worker_module.SimulatorWorker(config, RunTransport.from_url(redis_url, run_id), store)
    shipped: list[Experience] = []
    monkeypatch.setattr(worker, "_push", shipped.append)
    worker._setup()
    worker.policy_version = 0
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
