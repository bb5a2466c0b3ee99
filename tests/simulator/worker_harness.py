"""A real SimulatorWorker in-process (real Redis, a local-folder store), its pushes captured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import simulator.worker as worker_module
from hotlap.seed import seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings, WorkerConfig
from shared.experience import Experience
from shared.run_files import RunFiles
from shared.store import ModelStore, open_store
from shared.transport import RunTransport


def async_worker(tmp_path: Path, redis_url: str, run_id: str, monkeypatch: pytest.MonkeyPatch, name: str,
                 metadata: dict[str, Any], reward_source: str, cars: int, max_steps: int,
                 ) -> tuple[worker_module.SimulatorWorker, list[Experience]]:
    """A worker of a freshly seeded async run on Oval_track, set up to act with version 0; what it
    would push to Redis is appended to the returned list instead."""
    store = ModelStore(open_store(f"file://{tmp_path / 'store'}"))
    seed_store(store, RunFiles(
        settings=RunSettings(track="Oval_track", cars_per_worker=cars, schedule="async",
                             max_steps_per_episode=max_steps),
        metadata=ModelMetadata.parse(json.dumps(metadata)),
        hyperparameters=Hyperparameters(),
        reward_source=reward_source,
    ))
    config = WorkerConfig.model_validate({"HOTLAP_RUN_ID": run_id, "HOTLAP_REDIS_URL": redis_url,
                                          "HOTLAP_STORE_URL": store.url, "HOTLAP_WORKER_NAME": name,
                                          "HOTLAP_SIM_TRACE_LOG": "0"})
    worker = worker_module.SimulatorWorker(config, RunTransport.from_url(redis_url, run_id), store)
    shipped: list[Experience] = []
    monkeypatch.setattr(worker, "_push", shipped.append)
    worker._setup()
    worker.policy_version = 0
    return worker, shipped
