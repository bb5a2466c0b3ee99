"""Async chunks count as chunks, not episodes: the trainer's quota, episode statistics, logs/episodes.csv,
the rl_coach CSV and the accounting, against a real redis-server and a local-folder store.

Under the async schedule a worker cuts its running episodes at a version change and ships the cut-off
part as a chunk (extra.final_chunk false); the message that later ends the episode carries the whole
episode's reward and steps. DeepRacer's trainer counts whole episodes (num_episodes_between_training).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from hotlap.seed import seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings, TrainerConfig
from shared.experience import EPISODE_REWARD, EPISODE_STEPS, FINAL_CHUNK, Experience
from shared.run_files import RunFiles
from shared.store import COACH_EPISODE_LOG, EPISODE_LOG, ModelStore, open_store
from shared.transport import Delivery, RunTransport
from trainer.intake import experience_spec, screen
from trainer.service import TrainerService

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACTIONS = [{"steering_angle": -15, "speed": 1.0}, {"steering_angle": 15, "speed": 1.0}]
QUOTA = 4


def async_files() -> RunFiles:
    metadata = {"action_space": ACTIONS, "sensor": ["FRONT_FACING_CAMERA"],
                "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW"}
    return RunFiles(
        settings=RunSettings(max_iterations=2, schedule="async", max_steps_per_episode=100),
        metadata=ModelMetadata.parse(json.dumps(metadata)),
        hyperparameters=Hyperparameters(num_episodes_between_training=QUOTA, term_cond_max_episodes=2,
                                        num_epochs=1, batch_size=16),
        reward_source="def reward_function(params):\n    return 1.0\n",
    )


def message(run_id: str, number: int, steps: int, reward: float, *, final: bool = True, progress: float = 0.0,
            status: str = "in_progress", whole: tuple[float, int] | None = None) -> Experience:
    """A message of `steps` steps of reward `reward` each; `whole`: the episode's (reward, steps)."""
    extra: dict[str, object] = {FINAL_CHUNK: final}
    if whole is not None:
        extra |= {EPISODE_REWARD: whole[0], EPISODE_STEPS: whole[1]}
    return Experience(
        run_id=run_id, worker_name="w", worker_index=0, model_version=0, episode=number,
        observations={"FRONT_FACING_CAMERA": np.zeros((steps, 120, 160), np.uint8)},
        actions=np.zeros(steps, np.int64), log_probs=np.full(steps, -0.7, np.float32),
        values=np.zeros(steps, np.float32), rewards=np.full(steps, reward, np.float32),
        terminated=final, bootstrap_value=0.0, status=status, progress=progress, extra=extra,
    )


@pytest.fixture
def trainer(tmp_path: Path, transport: RunTransport, run_id: str, redis_url: str) -> TrainerService:
    store = ModelStore(open_store(f"file://{tmp_path / 'store'}"))
    seed_store(store, async_files())
    config = TrainerConfig(run_id=run_id, redis_url=redis_url, store_url=store.url, device="cpu")
    service = TrainerService(config, transport, store)
    service._setup(service._load_files())
    return service


def test_chunks_fill_no_quota_and_episode_statistics_use_whole_episodes(trainer: TrainerService,
                                                                        transport: RunTransport, run_id: str):
    # Episodes 0 and 1 were cut at a version change: a chunk of 10 steps each, then the part that
    # ends them (10 more steps). Episodes 2 and 3 are whole; episode 4 is one more whole episode.
    for number in (0, 1):
        transport.push_experience(message(run_id, number, 10, 1.0, final=False))
    for number in (0, 1):
        transport.push_experience(message(run_id, number, 10, 2.0, progress=40.0, status="off_track",
                                          whole=(30.0, 20)))
    for number in (2, 3, 4):
        transport.push_experience(message(run_id, number, 5, 3.0, progress=100.0, status="lap_complete",
                                          whole=(15.0, 5)))

    batch = trainer._collect(0)
    # The quota is 4 whole episodes: 0..3 end in this batch; the two chunks ride along, episode 4 waits.
    assert len(batch.episodes) == QUOTA + 2
    assert sorted(e.episode for e in batch.episodes if e.extra[FINAL_CHUNK]) == [0, 1, 2, 3]
    assert transport.backlog() == len(batch.episodes) + 1

    stats = trainer._train(0, batch)
    assert stats["mean_reward"] == pytest.approx((30 + 30 + 15 + 15) / 4)  # whole episodes' rewards
    assert stats["mean_progress"] == pytest.approx((40 + 40 + 100 + 100) / 4)  # chunks' 0 % left out
    assert stats["laps_completed"] == 2

    trainer._log_iteration(0, batch, stats)
    rows = list(csv.DictReader(io.StringIO(trainer.store.get_text(EPISODE_LOG))))
    assert [(r["episode"], r["steps"], float(r["reward"]), r["status"]) for r in rows] == [
        ("0", "20", 30.0, "off_track"), ("1", "20", 30.0, "off_track"),
        ("2", "5", 15.0, "lap_complete"), ("3", "5", 15.0, "lap_complete")]
    coach = list(csv.DictReader(io.StringIO(trainer.store.get_text(COACH_EPISODE_LOG))))
    assert [(r["Episode #"], r["Episode Length"]) for r in coach] == [("1", "20"), ("2", "20"), ("3", "5"), ("4", "5")]
    assert coach[-1]["Total steps"] == "50"  # every step trained on, chunks' included
    progress = transport.progress()
    assert (progress["episodes"], progress["chunks"]) == ("4", "2")

    trainer._acknowledge(batch)
    counts = transport.accounting()
    assert (counts["produced"], counts["consumed"]) == (7, 6)
    assert (counts["chunks_produced"], counts["chunks_consumed"], counts["chunks_dropped"]) == (2, 2, 0)


def test_an_iteration_of_chunks_alone_has_zero_means_not_nan(trainer: TrainerService, transport: RunTransport,
                                                             run_id: str):
    """A step cap filled by chunks ends an iteration with no whole episode: its means are 0, not NaN."""
    trainer.step_cap = 20
    for number in (0, 1):
        transport.push_experience(message(run_id, number, 10, 1.0, final=False))
    batch = trainer._collect(0)
    assert [e.extra[FINAL_CHUNK] for e in batch.episodes] == [False, False]
    stats = trainer._train(0, batch)
    assert (stats["mean_reward"], stats["mean_progress"], stats["laps_completed"]) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(("extra", "named"), [
    ({FINAL_CHUNK: "no"}, "extra.final_chunk 'no'"),
    ({EPISODE_REWARD: float("nan")}, "extra.episode_reward nan"),
    ({EPISODE_REWARD: "12"}, "extra.episode_reward '12'"),
    ({EPISODE_REWARD: 1e12}, "extra.episode_reward 1000000000000.0"),
    ({EPISODE_STEPS: 3}, "extra.episode_steps 3 is not in [5, 100]"),  # fewer than the message's own
    ({EPISODE_STEPS: 101}, "extra.episode_steps 101"),
    ({EPISODE_STEPS: 7.5}, "extra.episode_steps 7.5"),
])
def test_bad_chunk_fields_are_invalid_and_named(extra: dict[str, object], named: str, run_id: str):
    """The chunk fields feed the episode statistics: a message whose fields no episode of the run can
    have is dropped as invalid by the intake, with the field and value in the reason."""
    spec = experience_spec(run_id, async_files())
    exp = message(run_id, 0, 5, 1.0)
    exp.extra = extra
    verdict = screen(Delivery(b"1-0", exp), spec, 0, 0)
    assert verdict.experience is None and verdict.reason == "invalid" and named in verdict.detail
    exp.extra = {FINAL_CHUNK: True, EPISODE_REWARD: 5, EPISODE_STEPS: 5}
    assert screen(Delivery(b"1-0", exp), spec, 0, 0).experience is exp
