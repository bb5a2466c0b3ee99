"""What each setting means, and the settings of a config model as rows (name, type, default, meaning).

The names, types and defaults come from the pydantic models in `shared.config`, so they cannot
drift; the meanings come from `Field(description=...)` where a field has one, else from
DESCRIPTIONS below (keyed by the name a user writes: the environment variable, the
training_params.yaml key or the JSON key). `python -m trainer --help`, `python -m simulator --help`
and docs/configuration.md (`python -m hotlap.docs_gen`) are made from these rows.
"""

from __future__ import annotations

import argparse
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shared.config import default_worker_name

UNDOCUMENTED = "(undocumented)"
HELP_WIDTH = 100

# Defaults computed at start-up, shown as what they compute rather than one machine's value.
FACTORY_DEFAULTS: dict[Any, str] = {default_worker_name: "<hostname>-<pid>"}

DESCRIPTIONS: dict[str, str] = {
    # ------------------------------------------------------------ every process (ServiceConfig)
    "HOTLAP_RUN_ID": "run id; names the run's Redis keys (1-64 letters, digits, `_` `.` `-`)",
    "HOTLAP_REDIS_URL": "Redis holding the experience stream, model notices and status (redis://[:password@]host:port/db)",
    "HOTLAP_STORE_URL": "the run's model store: s3://bucket/prefix, file:///path or an absolute path",
    "HOTLAP_S3_ENDPOINT_URL": "S3 API endpoint for an S3-compatible store (MinIO: http://minio:9000); unset: AWS S3",
    "HOTLAP_LOG_LEVEL": "log level: DEBUG, INFO, WARNING, ERROR",
    "HOTLAP_LOG_FORMAT": "text: readable lines; json: one JSON object per line (timestamp, level, logger, process, "
                         "message). DeepRacer's SIM_TRACE_LOG and Training> lines stay bare in both. Compose and "
                         "Kubernetes set json",
    "HOTLAP_RETRY_GIVE_UP_S": "seconds a Redis or store outage is waited out (capped backoff) before the run fails",
    "HOTLAP_KEEP_VERSIONS": "model versions whose weights the store keeps (plus the best and pinned ones)",
    "HOTLAP_PINNED_VERSIONS": "comma-separated model versions the store never deletes",
    "HOTLAP_FINISHED_RUN_TTL_S": "seconds a finished (done or failed) run keeps its Redis keys",
    # ------------------------------------------------------------ simulator (WorkerConfig)
    "HOTLAP_WORKER_NAME": "this worker's name in heartbeats, logs and the episode log (unique per process)",
    "HOTLAP_CARS_PER_WORKER": "cars this simulator process steps at once (overrides the run's CARS_PER_WORKER)",
    "HOTLAP_HEARTBEAT_S": "seconds between the worker's heartbeats in Redis",
    "HOTLAP_SEED": "random seed (start positions, action sampling, network initialisation)",
    "HOTLAP_SIM_TRACE_LOG": "print DeepRacer's SIM_TRACE_LOG line for every step (false: only the simtrace CSVs)",
    "HOTLAP_STREAM_MAX_BYTES": "bytes of unacknowledged experience the Redis stream may hold; workers wait "
                               "(heartbeating) while it is full; keep it about half of Redis's maxmemory",
    # ------------------------------------------------------------ trainer (TrainerConfig)
    "HOTLAP_DEVICE": "torch device to train on: auto (a GPU if visible), cpu, cuda (stops at once without a GPU)",
    "HOTLAP_TORCH_THREADS": "torch threads of the trainer (0: torch's default, all cores)",
    "HOTLAP_STALL_TIMEOUT_S": "seconds without experience before a dead worker's episodes are handed to the others",
    "HOTLAP_TENSORBOARD_DIR": "write TensorBoard scalars (charts/episodic_return, losses/approx_kl, ...) to this "
                              "folder; needs `pip install -e '.[tensorboard]'`; unset: none",
    "HOTLAP_TRAINER_LEASE_S": "one trainer per run: seconds its lease lasts after its holder stopped renewing it",
    # ------------------------------------------------------------ training_params.yaml (RunSettings)
    "WORLD_NAME": "the track: a DeepRacer track name (`hotlap tracks`) or the name of a stored track file",
    "TRACK_FILE": "a track given as a .npy file, stored with the run under this name",
    "TRACK_SHA256": "sha256 of TRACK_FILE; workers refuse a track file that does not match",
    "REVERSE_DIR": "drive the track in the other direction",
    "CHANGE_START_POSITION": "round-robin start positions between a car's episodes (DeepRacer's default)",
    "ROUND_ROBIN_ADVANCE_DIST": "fraction of the track the start moves on between episodes",
    "START_POSITION_OFFSET": "fraction of the track where the first episode starts",
    "BEST_MODEL_METRIC": "what ranks versions in model/deepracer_checkpoints.json by their evaluation episodes: "
                         "mean progress, mean reward (higher is better) or mean laptime (lower; an unfinished "
                         "lap counts 999999 ms)",
    "MIN_EVAL_TRIALS": "greedy evaluation episodes worker 0 drives with each model version (0: no evaluation)",
    "PRETRAINED_MODEL": "clone: the run and version (<run>@<version>) whose weights are this run's version 0",
    "NUM_WORKERS": "simulator workers the run was started with (DeepRacer's NUM_WORKERS)",
    "MAX_ITERATIONS": "training iterations; the run is done after this many model versions",
    "MAX_STEPS_PER_EPISODE": "per-episode step cap (DeepRacer: 10000)",
    "CARS_PER_WORKER": "cars each simulator process steps at once",
    "SCHEDULE": "sync: DeepRacer's on-policy iterations; async: workers never wait, bounded-stale experience",
    "MAX_STALENESS": "async schedule: oldest model version (this many behind) whose episodes are still trained on",
    "REWARD_TIME_LIMIT_S": "seconds one reward_function call may take before the run stops",
    "MAX_STEPS_PER_ITERATION": "environment steps after which an iteration trains with the episodes it has "
                               "(unset: DeepRacer's cap for the network)",
    # ------------------------------------------------------------ hyperparameters.json (Hyperparameters)
    "batch_size": "PPO minibatch size (steps)",
    "beta_entropy": "entropy bonus coefficient",
    "discount_factor": "discount γ of future rewards",
    "e_greedy_value": "e-greedy exploration's ε (exploration_type e-greedy)",
    "epsilon_steps": "steps over which ε decays (exploration_type e-greedy)",
    "exploration_type": "categorical: sample the policy's action distribution; e-greedy: ε-random actions",
    "loss_type": "value loss: huber or mean squared error",
    "lr": "Adam learning rate",
    "num_episodes_between_training": "episodes per training iteration",
    "num_epochs": "PPO epochs over each iteration's experience",
    "stack_size": "observations stacked into one network input (DeepRacer ignores it; hotlap honours it)",
    "term_cond_avg_score": "DeepRacer's stop-at-average-score condition (accepted, not used)",
    "term_cond_max_episodes": "training iterations when MAX_ITERATIONS is not given (DeepRacer counts iterations)",
    "sac_alpha": "SAC's entropy temperature (accepted for DeepRacer files; hotlap trains PPO)",
    "max_sample_count": "DeepRacer's SAC replay setting (accepted, not used)",
    "sampling_frequency": "DeepRacer's SAC replay setting (accepted, not used)",
    "hotlap_shared_trunk": "hotlap's own key: one network trunk shared by the policy and value heads instead of "
                           "DeepRacer's two separate networks (faster; not DeepRacer's)",
    "hotlap_target_kl": "hotlap's own key: the PPO update stops taking minibatch steps once the approximate KL "
                        "to the behaviour policy exceeds 1.5 x this (a safeguard against an update that blows "
                        "through PPO's trust region); null: off, every epoch runs, DeepRacer's exact algorithm",
    # ------------------------------------------------------------ model_metadata.json (ModelMetadata)
    "action_space": "discrete: a list of {steering_angle, speed}; continuous: {steering_angle: {low, high}, "
                    "speed: {low, high}} (degrees, m/s)",
    "action_space_type": "discrete or continuous",
    "sensor": "one camera (FRONT_FACING_CAMERA, STEREO_CAMERAS) and optionally LIDAR or SECTOR_LIDAR; a lidar "
              "alone only with --allow-no-camera (hotlap-only: DeepRacer and the car require a camera)",
    "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW (3 conv layers), DEEP_CONVOLUTIONAL_NETWORK or _DEEP",
    "training_algorithm": "clipped_ppo (DeepRacer's sac is rejected)",
    "version": "DeepRacer's model metadata version",
    "lidar_config": "SECTOR_LIDAR options: num_sectors, num_values_per_sector, clipping_dist (m)",
}


@dataclass(frozen=True)
class SettingRow:
    name: str  # what the user writes: environment variable, YAML or JSON key
    type: str
    default: str
    meaning: str


def type_name(annotation: Any) -> str:
    """`Literal["a", "b"]` -> `a \\| b`; `int | None` -> `int`; `list[str]` -> `list[str]`."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(str(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(annotation))}]"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        factory: Any = field.default_factory
        return FACTORY_DEFAULTS.get(factory) or repr(factory())
    if field.default is PydanticUndefined:
        return "(required)"
    if field.default is None:
        return "(unset)"
    if isinstance(field.default, bool):
        return "true" if field.default else "false"
    if isinstance(field.default, frozenset | set | tuple | list):  # as the variable is written: comma-separated
        return ",".join(str(v) for v in sorted(field.default)) or "(none)"
    return str(field.default)


def setting_rows(model: type[BaseModel], by_alias: bool = True) -> list[SettingRow]:
    """One row per field of `model`, named by its alias (env var / YAML key) or its field name."""
    rows = []
    for field_name, field in model.model_fields.items():
        name = field.alias if by_alias and field.alias else field_name
        meaning = field.description or DESCRIPTIONS.get(name, UNDOCUMENTED)
        rows.append(SettingRow(name, type_name(field.annotation), default_text(field), meaning))
    return rows


def settings_help(model: type[BaseModel]) -> str:
    """The environment variables `model` reads, as plain text for a command's --help."""
    rows = setting_rows(model)
    width = max(len(r.name) for r in rows)
    indent = " " * (width + 4)
    lines = ["environment variables (an empty value means unset):"]
    for r in rows:
        text = f"{r.name:<{width}}  {r.meaning} (type {r.type}, default {r.default})"
        lines.append(textwrap.fill(text, HELP_WIDTH, initial_indent="  ", subsequent_indent=indent))
    return "\n".join(lines)


def settings_parser(prog: str, description: str | None, model: type[BaseModel]) -> argparse.ArgumentParser:
    """A service's command line: no arguments of its own, and a `--help` that lists the environment
    variables `model` reads (a service reads its settings from the environment only)."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=settings_help(model),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
