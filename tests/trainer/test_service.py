"""The trainer service in-process, against a real redis-server and a local-folder store."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from hotlap.seed import seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings, TrainerConfig
from shared.experience import Experience
from shared.networks import architecture, state_to_bytes
from shared.run_files import RunFiles
from shared.store import ModelStore, open_store
from shared.transport import RunTransport
from trainer.ppo import PPOSettings, make_optimizer
from trainer.service import TrainerService

METADATA = {
    "action_space": [{"steering_angle": -20, "speed": 1.0}, {"steering_angle": 20, "speed": 1.0}],
    "sensor": ["FRONT_FACING_CAMERA"],
    "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
    "action_space_type": "discrete",
}
REWARD = "def reward_function(params):\n    return 1.0\n"


def run_files(episodes: int) -> RunFiles:
    return RunFiles(
        settings=RunSettings(track="reInvent2019_track", max_iterations=1, max_steps_per_episode=40),
        metadata=ModelMetadata.parse(json.dumps(METADATA)),
        hyperparameters=Hyperparameters.model_validate(
            {"num_episodes_between_training": episodes, "num_epochs": 1, "batch_size": 8}),
        reward_source=REWARD,
    )


def camera_episode(run_id: str, episode: int, steps: int = 8) -> Experience:
    rng = np.random.default_rng(episode)
    return Experience(
        run_id=run_id, worker_name="w", worker_index=0, model_version=0, episode=episode,
        observations={"FRONT_FACING_CAMERA": rng.integers(0, 256, (steps, 120, 160), dtype=np.uint8)},
        actions=rng.integers(0, 2, steps), log_probs=np.full(steps, -0.69, np.float32),
        values=np.zeros(steps, np.float32), rewards=np.ones(steps, np.float32),
        terminated=True, bootstrap_value=0.0,
    )


def test_iteration_timings_reach_the_progress_hash_and_the_manifest(
    tmp_path: Path, redis_url: str, run_id: str, transport: RunTransport
):
    store = ModelStore(open_store(f"file://{tmp_path}"))
    transport = transport.for_run(seed_store(store, run_files(episodes=3)).nonce)  # the trainer's keys
    for episode in range(3):  # already waiting in the stream: the trainer reads them from id 0
        transport.push_experience(camera_episode(run_id, episode))
    config = TrainerConfig(HOTLAP_RUN_ID=run_id, HOTLAP_REDIS_URL=redis_url, HOTLAP_STORE_URL=f"file://{tmp_path}",
                           HOTLAP_DEVICE="cpu")

    assert TrainerService(config, transport, store).run() == 0

    stats = store.load_version(1).manifest["training_stats"]
    progress = transport.progress()
    for key in ("collect_seconds", "train_seconds"):
        assert stats[key] >= 0.0
        assert float(progress[key]) == round(stats[key], 5)
    assert store.load_version(1).manifest["published_at"] > store.load_version(0).manifest["published_at"]


def test_a_trainer_stopped_while_awaiting_evaluation_publishes_its_trained_update(
    tmp_path: Path, redis_url: str, run_id: str, transport: RunTransport
):
    """Stopped (Ctrl-C, docker stop) after an update but before worker 0 evaluated the version that
    drove it: the update is published, not thrown away (no worker 0 runs here, so none will evaluate)."""
    store = ModelStore(open_store(f"file://{tmp_path}"))
    files = run_files(episodes=3)
    files.settings.max_iterations = 3
    transport = transport.for_run(seed_store(store, files).nonce)
    for episode in range(3):
        transport.push_experience(camera_episode(run_id, episode))
    config = TrainerConfig(HOTLAP_RUN_ID=run_id, HOTLAP_REDIS_URL=redis_url, HOTLAP_STORE_URL=f"file://{tmp_path}",
                           HOTLAP_DEVICE="cpu", HOTLAP_STALL_TIMEOUT_S=600)
    service = TrainerService(config, transport, store)

    def stop_once_awaiting_evaluation() -> None:  # what the SIGTERM/SIGINT handler does, at that moment
        deadline = time.monotonic() + 300
        while (transport.trainer_heartbeat() or {}).get("step") != "awaiting evaluation" \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        service.stop_requested = True

    stopper = threading.Thread(target=stop_once_awaiting_evaluation)
    stopper.start()
    result = [service.run()]  # in the main thread: it installs signal handlers
    stopper.join()

    assert result == [0]
    assert store.latest_version() == 1
    assert not store.is_done()  # stopped, not finished: a restart resumes from version 1


def test_each_iteration_s_kl_reaches_the_log_the_progress_line_the_manifest_and_tensorboard(
    tmp_path: Path, redis_url: str, run_id: str, transport: RunTransport, caplog: pytest.LogCaptureFixture
):
    """An update that blows through the trust region (learning rate 0.5) is stopped by
    hotlap_target_kl, and its KL, epochs and the stop are in every place a racer looks."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hotlap.local import _iteration_metrics

    files = run_files(episodes=3)
    files = dataclasses.replace(files, hyperparameters=files.hyperparameters.model_copy(
        update={"lr": 0.5, "num_epochs": 5, "hotlap_target_kl": 0.001}),
        settings=files.settings.model_copy(update={"min_eval_trials": 0}))  # no worker 0 to wait for
    store = ModelStore(open_store(f"file://{tmp_path / 'run'}"))
    transport = transport.for_run(seed_store(store, files).nonce)
    for episode in range(3):
        transport.push_experience(camera_episode(run_id, episode, steps=16))
    config = TrainerConfig(HOTLAP_RUN_ID=run_id, HOTLAP_REDIS_URL=redis_url, HOTLAP_DEVICE="cpu",
                           HOTLAP_STORE_URL=f"file://{tmp_path / 'run'}", HOTLAP_TENSORBOARD_DIR=str(tmp_path / "tb"))

    with caplog.at_level(logging.INFO, logger="hotlap.trainer"):
        assert TrainerService(config, transport, store).run() == 0

    stats = store.load_version(1).manifest["training_stats"]
    assert stats["stopped_early"] == 1.0 and 1 <= stats["epochs"] < 5 and stats["approx_kl_max"] > 0.0015
    progress = transport.progress()
    for key in ("approx_kl", "approx_kl_max", "epochs", "stopped_early"):
        assert float(progress[key]) == round(stats[key], 5)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("iteration 1/1"))
    assert f"kl mean {stats['approx_kl']:.4f} max {stats['approx_kl_max']:.4f}, epochs {stats['epochs']:.0f}/5 " \
           "(stopped early at kl > 0.0015)" in line
    _, shown = _iteration_metrics(transport, 3)
    assert shown["kl max"] == f"{stats['approx_kl_max']:.3f}" and shown["epochs"] == f"{stats['epochs']:.0f}*"
    assert shown["steps/s"] == f"{48 / float(progress['collect_seconds']):,.0f}"  # 3 episodes x 16 steps
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    for tag, key in (("losses/approx_kl", "approx_kl"), ("losses/approx_kl_max", "approx_kl_max"),
                     ("losses/epochs", "epochs"), ("losses/stopped_early", "stopped_early")):
        assert [e.value for e in events.Scalars(tag)] == pytest.approx([stats[key]], rel=1e-6), tag


def test_tickets_of_a_version_close_when_the_trainer_moves_on(
    tmp_path: Path, redis_url: str, run_id: str, transport: RunTransport
):
    store = ModelStore(open_store(f"file://{tmp_path}"))
    transport = transport.for_run(seed_store(store, run_files(episodes=3)).nonce)  # the trainer's keys
    transport.open_tickets(0, 5)  # e.g. re-issued after a stall: more tickets than the iteration takes
    for episode in range(3):
        transport.push_experience(camera_episode(run_id, episode))
    config = TrainerConfig(HOTLAP_RUN_ID=run_id, HOTLAP_REDIS_URL=redis_url, HOTLAP_STORE_URL=f"file://{tmp_path}",
                           HOTLAP_DEVICE="cpu")

    assert TrainerService(config, transport, store).run() == 0

    assert transport.claim_ticket(0) <= 0  # the trainer trained version 0's iteration: no stale episode
    transport.release_tickets(0, 2)  # a stopping worker handing tickets back does not reopen them
    transport.reissue_tickets(0, 1)
    assert transport.claim_ticket(0) <= 0
    assert not transport.client.exists(transport.keys.tickets(0))


def test_a_restarted_trainer_holds_the_published_weights_and_optimizer_state(
    tmp_path: Path, redis_url: str, run_id: str, transport: RunTransport
):
    """Resume: the policy a restarted trainer trains on is the latest version's, tensor by tensor,
    and so is its Adam state (moments and step counts) — not the seed's fresh initialisation."""
    base = run_files(episodes=3)
    files = RunFiles(base.settings.model_copy(update={"max_iterations": 2, "min_eval_trials": 0}), base.metadata,
                     base.hyperparameters, base.reward_source)
    store = ModelStore(open_store(f"file://{tmp_path}"))
    transport = transport.for_run(seed_store(store, files).nonce)
    # Version 2 as a trainer that trained twice would have left it: weights away from any seed's
    # initialisation, an optimizer that has taken steps.
    torch.manual_seed(1234)
    trained = files.build_policy()
    optimizer = make_optimizer(trained, PPOSettings.from_hyperparameters(files.hyperparameters.model_dump()))
    for _ in range(2):
        optimizer.zero_grad()
        sum((p.float() ** 2).sum() for p in trained.parameters()).backward()
        optimizer.step()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    manifest = {"run_id": run_id, "format": "safetensors", **architecture(trained)}
    store.publish_version(2, state_to_bytes(trained), manifest, buffer.getvalue())
    config = TrainerConfig(HOTLAP_RUN_ID=run_id, HOTLAP_REDIS_URL=redis_url, HOTLAP_STORE_URL=f"file://{tmp_path}",
                           HOTLAP_DEVICE="cpu")

    service = TrainerService(config, transport, store)
    assert service.run() == 0  # resumes at version 2 = max_iterations: nothing left to train

    published = store.load_version(2, with_optimizer=True)
    weights = safetensors.torch.load(published.weights)
    resumed = service.policy.state_dict()
    assert resumed.keys() == weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(resumed[name], tensor), f"{name} differs from model/2's"
    assert published.optimizer is not None
    saved = torch.load(io.BytesIO(published.optimizer), weights_only=True)
    state = service.optimizer.state_dict()
    assert state["param_groups"] == saved["param_groups"]
    assert state["state"].keys() == saved["state"].keys() and saved["state"]
    for index, entries in saved["state"].items():
        for key, value in entries.items():
            assert torch.equal(state["state"][index][key], value), f"optimizer state {index}/{key} differs"
