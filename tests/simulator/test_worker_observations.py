"""Stacked observations the worker ships are what each car saw, step by step (issue 6 item 12).

The worker keeps every step's observation in its per-car episode buffer until the episode is
shipped. A stack that is a view of a buffer overwritten in place would make every stored step
hold the last stack; this drives a real worker (real Redis, a store) and compares each shipped
observation with an independent replay of the raw sensor readings.
"""

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
from simulator.env import StepResult, VectorRacingEnv

CARS = 3
REWARD = "def reward_function(params):\n    return 1.0\n"


def reference_stack(history: list[np.ndarray]) -> np.ndarray:
    """DeepRacer-style stack, oldest first: a new axis for a grayscale camera, else concatenated."""
    return np.stack(history) if history[0].ndim == 2 else np.concatenate(history)


class RecordingEnv(VectorRacingEnv):
    """The simulator's env, plus a plain-list replay of what each car's sensors returned."""

    stack_size = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.history: list[dict[str, list[np.ndarray]]] = [{} for _ in range(self.num_cars)]

    def reset(self, car_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
        obs = super().reset(car_ids)
        for car in range(self.num_cars) if car_ids is None else np.asarray(car_ids).tolist():
            self.history[car] = {name: [rows[car].copy()] * self.stack_size for name, rows in obs.items()}
        return obs

    def step(self, steering_deg: np.ndarray, speed: np.ndarray, active: np.ndarray | None = None) -> StepResult:
        result = super().step(steering_deg, speed, active)
        for car in range(self.num_cars):
            for name, rows in result.obs.items():
                self.history[car][name] = [*self.history[car][name][1:], rows[car].copy()]
        return result

    def seen_by(self, car: int) -> dict[str, np.ndarray]:
        if self.stack_size == 1:
            return {name: frames[0] for name, frames in self.history[car].items()}
        return {name: reference_stack(frames) for name, frames in self.history[car].items()}


@pytest.mark.parametrize("stack_size", [1, 3])
@pytest.mark.parametrize(
    "sensors",
    [["FRONT_FACING_CAMERA"], ["STEREO_CAMERAS"], ["FRONT_FACING_CAMERA", "LIDAR"], ["STEREO_CAMERAS", "SECTOR_LIDAR"]],
)
def test_shipped_observation_t_is_what_the_car_saw_at_step_t(
    sensors: list[str], stack_size: int, redis_url: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    one_torch_thread: None,
) -> None:
    store = ModelStore(open_store(f"file://{tmp_path / 'store'}"))
    metadata = {"action_space": [{"steering_angle": -15, "speed": 1.0}, {"steering_angle": 15, "speed": 1.0}],
                "sensor": sensors, "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "version": "5"}
    seed_store(store, RunFiles(
        settings=RunSettings(track="Oval_track", cars_per_worker=CARS, schedule="async", max_steps_per_episode=9),
        metadata=ModelMetadata.parse(json.dumps(metadata)),
        hyperparameters=Hyperparameters.model_validate({"stack_size": stack_size}),
        reward_source=REWARD,
    ))
    monkeypatch.setattr(RecordingEnv, "stack_size", stack_size)
    monkeypatch.setattr(worker_module, "VectorRacingEnv", RecordingEnv)
    config = WorkerConfig.model_validate({"HOTLAP_RUN_ID": run_id, "HOTLAP_REDIS_URL": redis_url,
                                          "HOTLAP_STORE_URL": store.url, "HOTLAP_WORKER_NAME": "stack-test",
                                          "HOTLAP_SIM_TRACE_LOG": "0"})
    worker = worker_module.SimulatorWorker(config, RunTransport.from_url(redis_url, run_id), store)
    shipped: list[Experience] = []
    monkeypatch.setattr(worker, "_push", shipped.append)
    worker._setup()
    worker.policy_version = 0  # act with the initial weights; async: idle cars start at once
    env = worker.env
    assert isinstance(env, RecordingEnv)

    expected: dict[int, list[dict[str, np.ndarray]]] = {}
    for _ in range(30):  # episodes of <= 9 steps: every car ships several, restarting while others run
        worker._claim_episodes()
        for car in np.flatnonzero(worker.active):
            expected.setdefault(worker.episodes[car].number, []).append(env.seen_by(int(car)))
        worker._ship_finished_episodes(worker._step_cars())

    assert len(shipped) >= 2 * CARS
    for exp in shipped:
        steps = expected[exp.episode]
        assert exp.num_steps == len(steps)
        for name in sensors:
            for t, seen in enumerate(steps):
                np.testing.assert_array_equal(exp.observations[name][t], seen[name],
                                              err_msg=f"{name}: episode {exp.episode}, step {t}")
