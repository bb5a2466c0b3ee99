"""e-greedy exploration as DeepRacer runs it (hyperparameters.json exploration_type "e-greedy"):
rl_coach's LinearSchedule(1.0, e_greedy_value, epsilon_steps) and EGreedy, one schedule per car."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hotlap.seed import seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings, WorkerConfig
from shared.run_files import RunFiles
from shared.store import ModelStore, open_store
from shared.transport import RunTransport
from simulator.exploration import EpsilonSchedule
from simulator.worker import SimulatorWorker

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACTIONS = [{"steering_angle": a, "speed": 1.0} for a in (-20, -10, 0, 10, 20)]
FAVOURITE = 2  # straight ahead: the confident policy below puts ~all probability on it


def test_schedule_decays_linearly_from_one_to_e_greedy_value() -> None:
    schedule = EpsilonSchedule(final=0.05, decay_steps=10000)
    steps = np.array([0, 1, 5000, 9999, 10000, 10001, 10**6])
    np.testing.assert_allclose(schedule.epsilon(steps),
                               [1.0, 1.0 - 0.95e-4, 0.525, 0.05 + 0.95e-4, 0.05, 0.05, 0.05], rtol=1e-9)
    with pytest.raises(ValueError, match="epsilon_steps"):
        EpsilonSchedule(final=0.05, decay_steps=0)


def _worker(tmp_path: Path, transport: RunTransport, run_id: str, redis_url: str, hp: dict) -> SimulatorWorker:
    metadata = {"action_space": ACTIONS, "sensor": ["FRONT_FACING_CAMERA"]}
    files = RunFiles(settings=RunSettings(track="reInvent2019_track", max_steps_per_episode=1000),
                     metadata=ModelMetadata.parse(json.dumps(metadata)),
                     hyperparameters=Hyperparameters.model_validate(hp),
                     reward_source="def reward_function(params):\n    return 1.0\n")
    store_url = f"file://{tmp_path / 'store'}"
    seed_store(ModelStore(open_store(store_url)), files)
    config = WorkerConfig(run_id=run_id, redis_url=redis_url, store_url=store_url, worker_name="explorer",
                          cars_per_worker=12, sim_trace_log=False)
    worker = SimulatorWorker(config, transport, ModelStore(open_store(store_url)))
    worker._setup()
    with torch.no_grad():  # a policy that is sure of its favourite action, whatever it sees
        worker.policy.policy_head.weight.zero_()
        worker.policy.policy_head.bias.copy_(torch.tensor([0.0, 0.0, 20.0, 0.0, 0.0]))
    worker._start_episodes(np.arange(12))
    return worker


def _play(worker: SimulatorWorker, steps: int) -> np.ndarray:
    for _ in range(steps):
        worker._step_cars()
    return np.array([worker.episodes[car].actions for car in range(worker.num_cars)])  # (cars, steps)


def test_worker_explores_with_the_schedule_per_car(tmp_path: Path, transport: RunTransport, run_id: str,
                                                   redis_url: str) -> None:
    hp = {"exploration_type": "e-greedy", "e_greedy_value": 0.0, "epsilon_steps": 3}
    worker = _worker(tmp_path, transport, run_id, redis_url, hp)
    torch.manual_seed(0)
    actions = _play(worker, 6)
    np.testing.assert_array_equal(worker.exploration_steps, 6)
    # step 0: epsilon 1 -> uniform (12 cars all on the favourite would have odds 0.2**12)
    assert (actions[:, 0] != FAVOURITE).any()
    # from step 3 on epsilon is 0: the greedy action, every car, every step
    assert (actions[:, 3:] == FAVOURITE).all()
    # what goes to the trainer is the policy's own log-probability of the action taken
    log_probs = np.array([worker.episodes[car].log_probs for car in range(12)])
    assert (log_probs[actions != FAVOURITE] < -15).all() and (log_probs[actions == FAVOURITE] > -1e-6).all()


def test_categorical_exploration_samples_the_policy(tmp_path: Path, transport: RunTransport, run_id: str,
                                                    redis_url: str) -> None:
    worker = _worker(tmp_path, transport, run_id, redis_url, {"exploration_type": "categorical"})
    assert worker.exploration is None
    assert (_play(worker, 3) == FAVOURITE).all()
