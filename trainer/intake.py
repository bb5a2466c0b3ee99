"""The trainer's intake: which stream entries are trained on, and why the others are dropped.

Every delivery is either admitted or dropped with one of `shared.transport.DROP_REASONS`:

- corrupt:  it does not decode (`MessageError`);
- oversize: bigger than an episode of this run can be (payload bytes, steps);
- invalid:  it decodes, but does not fit the run's observation/action spec (shapes, dtypes,
            action indexes, NaN/inf, rewards outside DeepRacer's [-1e5, 1e5], another run's id);
- stale:    played with a model version the trainer no longer trains on.

(The trainer adds `over_cap` for admitted episodes past DeepRacer's per-iteration step cap.)

`screen` is pure (no Redis, no logging), so the fuzz tests can throw anything at it; the trainer
service acknowledges and counts each drop and logs the first drop of each reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import SENSOR_DTYPES, observation_shapes
from shared.experience import Experience, ExperienceSpec, MessageError
from shared.run_files import RunFiles
from shared.transport import Delivery


@dataclass(frozen=True)
class Verdict:
    """An admitted experience (reason ""), or why the entry is dropped and what was wrong."""

    experience: Experience | None
    reason: str = ""
    detail: str = ""


def experience_spec(run_id: str, files: RunFiles) -> ExperienceSpec:
    """What the run's workers send: the sensors of model_metadata.json stacked `stack_size` times,
    its action space, and episodes of at most MAX_STEPS_PER_EPISODE steps."""
    sensors = files.metadata.sensor
    shapes = observation_shapes(sensors, files.hyperparameters.stack_size)
    action_spec = files.metadata.action_spec()
    return ExperienceSpec(
        run_id=run_id,
        observations={name: (shape, SENSOR_DTYPES[name]) for name, shape in shapes.items()},
        action_kind=action_spec.kind,
        num_actions=action_spec.num_actions,
        max_steps=files.settings.max_steps_per_episode,
    )


def screen(delivery: Delivery, spec: ExperienceSpec, oldest_version: int, newest_version: int) -> Verdict:
    """Admit the delivery's experience, or say why it is dropped.

    `oldest_version`..`newest_version` are the model versions the current iteration trains on
    (just the current one under the sync schedule).
    """
    exp = delivery.experience
    if exp is None:
        return Verdict(None, delivery.reason or "corrupt", delivery.error or "undecodable")
    try:
        spec.check(exp)
    except MessageError as e:
        return Verdict(None, e.reason, str(e))
    if not oldest_version <= exp.model_version <= newest_version:
        return Verdict(None, "stale", f"model version {exp.model_version}, training on "
                                      f"{oldest_version}..{newest_version}")
    return Verdict(exp)
