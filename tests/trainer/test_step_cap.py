"""The trainer's per-iteration step cap: DeepRacer's memory caps (10,000 steps for the shallow network,
3,000 for the others; deepracer-formats.md §7.3), against a real redis-server and a local-folder store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hotlap.seed import seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings, TrainerConfig, max_steps_per_iteration
from shared.experience import Experience
from shared.run_files import RunFiles
from shared.store import ModelStore, open_store
from shared.transport import RunTransport
from trainer.service import TrainerService

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACTIONS = [{"steering_angle": -15, "speed": 1.0}, {"steering_angle": 15, "speed": 1.0}]


def run_files(network: str, step_cap: int | None = None) -> RunFiles:
    metadata = {"action_space": ACTIONS, "sensor": ["FRONT_FACING_CAMERA"], "neural_network": network}
    return RunFiles(
        settings=RunSettings(max_iterations=1, max_steps_per_iteration=step_cap),
        metadata=ModelMetadata.parse(json.dumps(metadata)),
        hyperparameters=Hyperparameters(num_episodes_between_training=20, term_cond_max_episodes=1),
        reward_source="def reward_function(params):\n    return 1.0\n",
    )


def trainer_for(files: RunFiles, tmp_path: Path, transport: RunTransport, run_id: str,
                redis_url: str) -> TrainerService:
    store = ModelStore(open_store(f"file://{tmp_path / 'store'}"))
    seed_store(store, files)
    config = TrainerConfig(run_id=run_id, redis_url=redis_url, store_url=f"file://{tmp_path / 'store'}",
                           device="cpu")
    trainer = TrainerService(config, transport, store)
    trainer._setup(trainer._load_files())
    return trainer


def episode(run_id: str, number: int, steps: int) -> Experience:
    return Experience(
        run_id=run_id, worker_name="w", worker_index=0, model_version=0, episode=number,
        observations={"FRONT_FACING_CAMERA": np.zeros((steps, 120, 160), np.uint8)},
        actions=np.zeros(steps, np.int64), log_probs=np.full(steps, -0.7, np.float32),
        values=np.zeros(steps, np.float32), rewards=np.ones(steps, np.float32),
        terminated=True, bootstrap_value=0.0, status="off_track", progress=5.0,
    )


@pytest.mark.parametrize(("network", "cap"), [("DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", 10000),
                                              ("DEEP_CONVOLUTIONAL_NETWORK", 3000),
                                              ("DEEP_CONVOLUTIONAL_NETWORK_DEEP", 3000)])
def test_deepracer_step_cap_per_network(network: str, cap: int) -> None:
    assert max_steps_per_iteration(network) == cap
    assert max_steps_per_iteration(network, override=123) == 123


def test_trainer_stops_collecting_at_the_network_s_cap(tmp_path: Path, transport: RunTransport, run_id: str,
                                                       redis_url: str) -> None:
    trainer = trainer_for(run_files("DEEP_CONVOLUTIONAL_NETWORK"), tmp_path, transport, run_id, redis_url)
    assert trainer.step_cap == 3000
    for number in range(5):  # 5 × 1,000 steps, fewer than the 20 episodes of the iteration
        transport.push_experience(episode(run_id, number, 1000))
    batch = trainer._collect(0)
    # 3 episodes reach the cap; the rest are acknowledged and not trained on, as DeepRacer drops them.
    assert [e.episode for e in batch.episodes] == [0, 1, 2]
    assert batch.num_steps == 3000
    assert batch.dropped["over_cap"] == 2 and transport.accounting()["dropped_over_cap"] == 2
    assert transport.backlog() == 3  # the dropped two are acknowledged and deleted; the rest wait for publish


def test_a_shallow_run_takes_more_than_the_deeper_cap(tmp_path: Path, transport: RunTransport, run_id: str,
                                                      redis_url: str) -> None:
    files = run_files("DEEP_CONVOLUTIONAL_NETWORK_SHALLOW")
    files = RunFiles(settings=files.settings, metadata=files.metadata, reward_source=files.reward_source,
                     hyperparameters=files.hyperparameters.model_copy(update={"num_episodes_between_training": 5}))
    trainer = trainer_for(files, tmp_path, transport, run_id, redis_url)
    assert trainer.step_cap == 10000
    for number in range(5):
        transport.push_experience(episode(run_id, number, 1000))
    batch = trainer._collect(0)
    assert batch.num_steps == 5000 and batch.dropped["over_cap"] == 0
