"""The trainer's intake (trainer.intake.screen) against the run's spec, fuzzed with hypothesis.

Properties: a message the workers could have sent is admitted and trains; every kind of poison is
dropped with a reason, never raised; and whatever is admitted trains without an exception other
than the non-finite-loss FloatingPointError that fails the run visibly. Bounded, so it runs in CI.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config import Hyperparameters, ModelMetadata, RunSettings, observation_shapes
from shared.experience import Experience
from shared.networks import PolicyNetwork
from shared.run_files import RunFiles
from shared.transport import RunTransport
from trainer.intake import experience_spec, screen
from trainer.ppo import PPOSettings, make_optimizer, ppo_update

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NUM_ACTIONS = 3
MAX_STEPS = 6
FILES = RunFiles(
    settings=RunSettings(max_steps_per_episode=MAX_STEPS),
    metadata=ModelMetadata.parse(json.dumps({
        "action_space": [{"steering_angle": a, "speed": 1.0} for a in (-20, 0, 20)],
        "sensor": ["FRONT_FACING_CAMERA", "LIDAR"],
    })),
    hyperparameters=Hyperparameters(batch_size=4, num_epochs=1),
    reward_source="",
)
SPEC = experience_spec("fuzz-run", FILES)


@functools.cache
def policy_and_optimizer() -> tuple[PolicyNetwork, torch.optim.Optimizer]:
    policy = PolicyNetwork(observation_shapes(FILES.metadata.sensor), FILES.metadata.neural_network,
                           FILES.metadata.action_spec())
    return policy, make_optimizer(policy, PPOSettings())


def honest_experience(seed: int, steps: int) -> Experience:
    """What a worker of this run sends."""
    rng = np.random.default_rng(seed)
    return Experience(
        run_id="fuzz-run", worker_name="w", worker_index=0, model_version=2, episode=seed % 100,
        observations={"FRONT_FACING_CAMERA": rng.integers(0, 256, (steps, 120, 160), dtype=np.uint8),
                      "LIDAR": rng.uniform(0.15, 12.0, (steps, 64)).astype(np.float32)},
        actions=rng.integers(0, NUM_ACTIONS, steps).astype(np.int64),
        log_probs=np.log(rng.uniform(0.05, 1.0, steps)).astype(np.float32),
        values=rng.normal(0, 1, steps).astype(np.float32),
        rewards=rng.uniform(-1, 1, steps).astype(np.float32),
        terminated=bool(rng.integers(2)), bootstrap_value=float(rng.normal()), status="off_track",
        progress=float(rng.uniform(-100, 100))  # negative: reversed over the start, elapsed_s=1.0,
    )


def _set(name: str, index: int, value: float):
    def mutate(exp: Experience) -> None:
        getattr(exp, name)[index] = value
    return mutate


POISON = {
    "NaN reward": _set("rewards", 0, np.nan),
    "inf value": _set("values", -1, np.inf),
    "NaN log-prob": _set("log_probs", 0, np.nan),
    "reward beyond DeepRacer's range": _set("rewards", 0, 2e5),
    "positive discrete log-prob": _set("log_probs", 0, 3.0),
    "action index too high": _set("actions", 0, NUM_ACTIONS),
    "negative action index": _set("actions", -1, -1),
    "NaN lidar range": lambda e: e.observations["LIDAR"].__setitem__((0, 5), np.nan),
    "float actions": lambda e: setattr(e, "actions", e.actions.astype(np.float32)),
    "camera of the wrong size": lambda e: e.observations.__setitem__(
        "FRONT_FACING_CAMERA", np.zeros((e.num_steps, 120, 161), np.uint8)),
    "camera as floats": lambda e: e.observations.__setitem__(
        "FRONT_FACING_CAMERA", e.observations["FRONT_FACING_CAMERA"].astype(np.float32)),
    "lidar missing": lambda e: e.observations.pop("LIDAR"),
    "an extra sensor": lambda e: e.observations.__setitem__("SECTOR_LIDAR", np.zeros((e.num_steps, 8), np.float32)),
    "values as a column": lambda e: setattr(e, "values", e.values[:, None].copy()),
    "another run's message": lambda e: setattr(e, "run_id", "other-run"),
    "negative model version": lambda e: setattr(e, "model_version", -1),
    "progress beyond 100": lambda e: setattr(e, "progress", 250.0),
    "NaN progress": lambda e: setattr(e, "progress", float("nan")),
}


def through_the_stream(exp: Experience):
    """Encode as a worker does and decode as the trainer's transport does (no server needed for that)."""
    return RunTransport._decode(b"1-0", exp.encode(), SPEC.max_payload_bytes)


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, MAX_STEPS))
def test_honest_messages_are_admitted_and_train(seed: int, steps: int):
    verdict = screen(through_the_stream(honest_experience(seed, steps)), SPEC, 2, 2)
    assert verdict.experience is not None, verdict
    policy, optimizer = policy_and_optimizer()
    stats = ppo_update(policy, optimizer, [verdict.experience], PPOSettings(batch_size=4, num_epochs=1),
                       torch.device("cpu"))
    assert np.isfinite(stats["policy_loss"])


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, MAX_STEPS), poison=st.sampled_from(sorted(POISON)))
def test_every_kind_of_poison_is_dropped_with_a_reason(seed: int, steps: int, poison: str):
    exp = honest_experience(seed, steps)
    POISON[poison](exp)
    verdict = screen(through_the_stream(exp), SPEC, 2, 2)
    assert verdict.experience is None, f"{poison} was admitted"
    assert verdict.reason in ("corrupt", "invalid", "oversize") and verdict.detail


def test_too_many_steps_is_oversize_and_old_versions_are_stale():
    assert screen(through_the_stream(honest_experience(0, MAX_STEPS + 1)), SPEC, 2, 2).reason == "oversize"
    assert screen(through_the_stream(honest_experience(0, 2)), SPEC, 3, 3).reason == "stale"
    assert screen(through_the_stream(honest_experience(0, 2)), SPEC, 1, 2).experience is not None  # async window


def test_a_message_bigger_than_an_episode_can_be_is_oversize():
    exp = honest_experience(0, MAX_STEPS)
    fields = exp.encode(compress=False)
    fields[b"payload"] += b"\0" * SPEC.max_payload_bytes
    verdict = screen(RunTransport._decode(b"1-0", fields, SPEC.max_payload_bytes), SPEC, 2, 2)
    assert verdict.reason == "oversize" and "exceeds the limit" in verdict.detail


FLOATS = st.floats(width=32, allow_nan=True, allow_infinity=True)


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 3), rewards=st.lists(FLOATS, min_size=3, max_size=3),
       values=st.lists(FLOATS, min_size=3, max_size=3), log_probs=st.lists(FLOATS, min_size=3, max_size=3),
       bootstrap=st.floats(allow_nan=True, allow_infinity=True))
def test_whatever_is_admitted_trains_or_fails_the_run_visibly(seed, steps, rewards, values, log_probs, bootstrap):
    exp = honest_experience(seed, steps)
    exp.rewards, exp.values = np.float32(rewards[:steps]), np.float32(values[:steps])
    exp.log_probs, exp.bootstrap_value = np.float32(log_probs[:steps]), bootstrap
    verdict = screen(through_the_stream(exp), SPEC, 2, 2)
    if verdict.experience is None:
        assert verdict.reason in ("corrupt", "invalid")
        return
    policy, optimizer = policy_and_optimizer()
    try:
        ppo_update(policy, optimizer, [verdict.experience], PPOSettings(batch_size=4, num_epochs=1),
                   torch.device("cpu"))
    except FloatingPointError:
        pass  # a non-finite loss: the trainer fails the run with DeepRacer's message (tests/e2e)
    finally:
        for p in policy.parameters():  # a NaN step must not poison the next example
            if not torch.isfinite(p).all():
                policy_and_optimizer.cache_clear()
                break
