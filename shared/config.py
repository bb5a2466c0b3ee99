"""Typed configuration: DeepRacer's user files, the run settings, and one config per process.

Every file is validated up front and every problem is reported at once, each named by its
field path, so a user fixes a broken `model_metadata.json` in one go instead of one error per run.
Process configs are built once at the entry point (from the environment) and passed down.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:  # networks imports torch; keep config light for the CLI
    from shared.networks import ActionSpec

log = logging.getLogger("hotlap.config")

# DeepRacer's physical limits: actions are clipped to these when sent to the car (simapp
# agent_ctrl/constants.py MAX_ANGLE/MIN_SPEED/MAX_SPEED; deepracer-formats.md §2). model_metadata.json
# may hold values outside them (the re:Invent 2018 action space steers ±45°): DeepRacer parses those
# and clips at drive time, and so does hotlap (simulator/car.py), with one warning per file.
MAX_STEERING_DEG = 30.0
MIN_SPEED = 0.1
MAX_SPEED = 4.0
# DeepRacer calls the reward function with no time limit while training; the only limit a racer meets is
# the reward-function validator's 5 s per call (simapp reward_func_validator/constants.py; deepracer-formats.md
# §1.1). A function may well spend a second on its first call (importing scipy, fitting a racing line).
REWARD_TIME_LIMIT_S = 5.0
# Redis memory: the server's `maxmemory` (noeviction: a full Redis refuses writes, never drops
# experience) in compose and in `hotlap train`'s own redis-server; the experience stream may hold
# half of it in message bytes, leaving headroom for Redis's per-entry overhead, the consumer
# group's pending list and every other key of the run.
REDIS_MAXMEMORY_BYTES = 1 << 30
STREAM_MAX_BYTES = REDIS_MAXMEMORY_BYTES // 2

# A bound on discrete action lists, not DeepRacer's (its console builds up to about 20 actions, and a
# hand-edited file is unbounded there): a generated file with millions of entries would build a policy
# head of that size and stall the seed instead of being refused.
MAX_DISCRETE_ACTIONS = 1000

CAMERA_SENSORS = ("FRONT_FACING_CAMERA", "STEREO_CAMERAS", "LEFT_CAMERA", "observation")
LIDAR_SENSORS = ("LIDAR", "SECTOR_LIDAR", "DISCRETIZED_SECTOR_LIDAR")
# model_metadata.json files before this version carry no sensor list DeepRacer reads (§2).
LEGACY_SENSOR_VERSION = 2.0
SUPPORTED_SENSORS = ("FRONT_FACING_CAMERA", "STEREO_CAMERAS", "LIDAR", "SECTOR_LIDAR")
# DeepRacer's simapp requires exactly one camera (deepracer-formats.md §2) and the car feeds one
# (§12): a lidar-only model trains and evaluates in hotlap, but goes nowhere else.
NO_CAMERA_NOTE = ("has no camera: DeepRacer requires exactly one (FRONT_FACING_CAMERA or STEREO_CAMERAS), so a "
                  "lidar-only model trains and evaluates in hotlap but cannot be imported into DeepRacer or "
                  "exported for a car")
NETWORKS = (
    "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
    "DEEP_CONVOLUTIONAL_NETWORK",
    "DEEP_CONVOLUTIONAL_NETWORK_DEEP",
)


class ConfigError(ValueError):
    """A configuration source is invalid. Carries every problem found, each named by field path."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is invalid ({len(problems)} problem(s)):\n{listed}")


_MAX_SHOWN_VALUE = 80


def _shown_value(value: Any) -> str:
    """A bad value as a problem line shows it: short, and with any URL's password hidden."""
    text = repr(redact_url(value) if isinstance(value, str) else value)
    return text if len(text) <= _MAX_SHOWN_VALUE else text[: _MAX_SHOWN_VALUE - 3] + "..."


def _problems_from(error: ValidationError) -> list[str]:
    """One ``field.path: message, got <value>`` line per problem (the value unless the field is
    missing, the problem is the whole object's, or it is hotlap's own check, which names it)."""
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        # hotlap's own checks (value_error) name the value themselves
        if item["loc"] and item["type"] not in ("missing", "value_error") and not isinstance(item.get("input"), dict):
            message += f", got {_shown_value(item['input'])}"
        problems.append(f"{path}: {message}")
    return problems


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: plain json.loads keeps the last of two equal keys silently."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKeyError(key)
        data[key] = value
    return data


def _parse_json(text: str | bytes, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except _DuplicateKeyError as e:
        raise ConfigError(source, [f"key {e.key!r} appears more than once (JSON would keep only the last); "
                                   "give it once"]) from e
    except json.JSONDecodeError as e:
        raise ConfigError(source, [f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"]) from e
    except UnicodeDecodeError as e:
        raise ConfigError(source, [f"not UTF-8 text: {e}"]) from e


def _validate(model: type[BaseModel], data: Any, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(source, [f"expected a JSON object, got {type(data).__name__}"])
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, _problems_from(e)) from e


# --------------------------------------------------------------------------- model_metadata.json


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


def _not_bool(value: Any) -> Any:
    """JSON ``true``/``false`` is not a number, though Python's bool is an int (pydantic's lax mode
    would read ``"num_epochs": true`` as 1)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {json.dumps(value)}")
    return value


def _finite_number(value: Any) -> Any:
    value = _not_bool(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


Number = Annotated[float, BeforeValidator(_finite_number)]
"""A float field of a user's file: finite, and ``true``/``false`` refused."""
WholeNumber = Annotated[int, BeforeValidator(_finite_number)]
"""An int field of a user's file: ``true``/``false`` refused (pydantic still refuses 2.5, "x")."""


class DiscreteAction(BaseModel):
    """One entry of a discrete ``action_space``. Any finite values are accepted, as DeepRacer does:
    values beyond the car's limits are clipped when driving (see :meth:`ModelMetadata.outside_limits`)."""

    model_config = ConfigDict(extra="ignore")  # console files carry "index"; DeepRacer ignores it

    steering_angle: Number
    speed: Number

    _check_finite = field_validator("steering_angle", "speed")(_finite)


class ActionRange(BaseModel):
    model_config = ConfigDict(extra="ignore")

    low: Number
    high: Number

    @model_validator(mode="after")
    def _ordered(self) -> ActionRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"needs finite low <= high, got low={self.low} high={self.high}")
        return self


class ContinuousActionSpace(BaseModel):
    """``{"steering_angle": {"low", "high"}, "speed": {"low", "high"}}``; ranges beyond the car's
    limits are accepted and clipped when driving, as DeepRacer does."""

    model_config = ConfigDict(extra="ignore")

    steering_angle: ActionRange
    speed: ActionRange


def _action_space_form(value: Any) -> str | None:
    """Which form an ``action_space`` has, so that pydantic reports the errors of that form only
    (a broken discrete list must not also print the continuous form's complaints)."""
    if isinstance(value, list | tuple):
        return "discrete"
    if isinstance(value, dict | ContinuousActionSpace):
        return "continuous"
    return None


ActionSpace = Annotated[
    Annotated[list[DiscreteAction], Tag("discrete")] | Annotated[ContinuousActionSpace, Tag("continuous")],
    Discriminator(
        _action_space_form,
        custom_error_type="action_space_form",
        custom_error_message="must be a list of {steering_angle, speed} actions (discrete) or an object "
        "{steering_angle: {low, high}, speed: {low, high}} (continuous)",
    ),
]


class LidarConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")  # simapp reads only the keys it knows

    num_sectors: WholeNumber = 8
    num_values_per_sector: WholeNumber = 8
    clipping_dist: Number = Field(2.0, ge=0.15, le=12.0)

    @field_validator("num_sectors")
    @classmethod
    def _divides_64(cls, value: int) -> int:
        if value < 1 or 64 % value:
            raise ValueError(f"num_sectors must divide 64 (1, 2, 4, 8, 16, 32 or 64), got {value}")
        return value


def _version_number(data: dict[str, Any]) -> float:
    """model_metadata.json's ``version`` as the simapp reads it; 0 when absent or not a number
    (the simapp then assumes 1, or the version field's validator names the problem)."""
    try:
        return float(data["version"])
    except (KeyError, TypeError, ValueError):
        return 0.0


def _sensor_ignored_by_version(data: Any) -> bool:
    """Whether DeepRacer ignores this model_metadata.json's ``sensor`` (version before 2; §2)."""
    if not isinstance(data, dict) or "version" not in data or "sensor" not in data:
        return False
    try:
        return float(data["version"]) < LEGACY_SENSOR_VERSION
    except (TypeError, ValueError):
        return False  # the version field's validator names the problem


class ModelMetadata(BaseModel):
    """DeepRacer's model_metadata.json (simapp keys and defaults)."""

    model_config = ConfigDict(extra="ignore")

    action_space: ActionSpace
    action_space_type: Literal["discrete", "continuous"] = "discrete"
    sensor: list[str] = Field(default_factory=lambda: ["FRONT_FACING_CAMERA"])
    neural_network: str = "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW"
    training_algorithm: str = "clipped_ppo"
    version: str = "5"
    lidar_config: LidarConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_version_drives_the_camera(cls, data: Any) -> Any:
        """DeepRacer reads ``sensor`` only from files of version 2 or later; an older file's car
        drives the camera alone ("observation"), whatever ``sensor`` says (simapp
        ``model_metadata.py::parse_model_metadata``: ``float(version) >= 2``; deepracer-formats.md §2)."""
        if _sensor_ignored_by_version(data):
            return {**data, "sensor": ["observation"]}
        if isinstance(data, dict) and "sensor" not in data and _version_number(data) >= LEGACY_SENSOR_VERSION:
            # the simapp reads data["sensor"] for version >= 2 and fails without it; a file that
            # trained here must also load on DeepRacer (and on the car)
            raise ValueError(f"sensor: missing; version {data['version']!r} files list their sensors "
                             "(DeepRacer fails without it), e.g. \"sensor\": [\"FRONT_FACING_CAMERA\"]")
        return data

    @field_validator("action_space_type", "training_algorithm", mode="before")
    @classmethod
    def _normalise_token(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        try:
            float(value)
        except (TypeError, ValueError):
            raise ValueError(f"version {value!r} is not a number (DeepRacer reads it with float())") from None
        return value

    @field_validator("training_algorithm")
    @classmethod
    def _supported_algorithm(cls, value: str) -> str:
        if value == "sac":
            raise ValueError("'sac' is DeepRacer's other algorithm; hotlap trains clipped_ppo only")
        if value != "clipped_ppo":
            raise ValueError(f"unknown training_algorithm {value!r}; expected 'clipped_ppo'")
        return value

    @field_validator("neural_network")
    @classmethod
    def _known_network(cls, value: str) -> str:
        if value not in NETWORKS:
            raise ValueError(f"unknown neural_network {value!r}; expected one of {', '.join(NETWORKS)}")
        return value

    @field_validator("sensor")
    @classmethod
    def _sensor_combination(cls, sensors: list[str]) -> list[str]:
        problems = [f"unknown sensor {s!r} (known: {', '.join(SUPPORTED_SENSORS)})"
                    for s in sensors if s not in CAMERA_SENSORS + LIDAR_SENSORS]
        problems += [f"sensor {s!r} is listed {sensors.count(s)} times" for s in sorted(set(sensors))
                     if sensors.count(s) > 1]
        cameras = [s for s in sensors if s in CAMERA_SENSORS]
        lidars = [s for s in sensors if s in LIDAR_SENSORS]
        if len(cameras) > 1:
            problems.append(f"exactly one camera sensor is required ({', '.join(CAMERA_SENSORS[:3])}), "
                            f"got {len(cameras)}: {', '.join(cameras)}")
        if not sensors:
            problems.append(f"no sensor: list one camera ({', '.join(CAMERA_SENSORS[:2])}) and optionally a lidar")
        # A lidar without a camera parses (a hotlap-only model, for experiments); the seed refuses it
        # unless asked (NO_CAMERA_REFUSAL), since DeepRacer and the car require a camera.
        if len(lidars) > 1:
            problems.append(f"at most one lidar sensor is allowed, got {', '.join(lidars)}")
        if "DISCRETIZED_SECTOR_LIDAR" in sensors:
            problems.append("DISCRETIZED_SECTOR_LIDAR is not supported yet (use LIDAR or SECTOR_LIDAR)")
        if problems:
            raise ValueError("; ".join(problems))
        # DeepRacer's legacy names for the single front camera.
        return ["FRONT_FACING_CAMERA" if s in ("observation", "LEFT_CAMERA") else s for s in sensors]

    @property
    def camera(self) -> str | None:
        """The camera sensor, or None for a lidar-only model (not DeepRacer's: see NO_CAMERA_REFUSAL)."""
        return next((s for s in self.sensor if s in CAMERA_SENSORS), None)

    @model_validator(mode="after")
    def _type_matches_space(self) -> ModelMetadata:
        is_list = isinstance(self.action_space, list)
        if self.action_space_type == "discrete" and not is_list:
            raise ValueError("action_space_type is 'discrete' but action_space is a continuous range object")
        if self.action_space_type == "continuous" and is_list:
            raise ValueError("action_space_type is 'continuous' but action_space is a list of discrete actions")
        if is_list and not self.action_space:
            raise ValueError("action_space: no actions defined")
        if isinstance(self.action_space, list) and len(self.action_space) > MAX_DISCRETE_ACTIONS:
            raise ValueError(f"action_space: {len(self.action_space)} actions, more than the {MAX_DISCRETE_ACTIONS} "
                             "hotlap accepts (DeepRacer's console offers up to about 20; each action is one "
                             "output of the policy network)")
        return self

    @classmethod
    def parse(cls, text: str | bytes, source: str = "model_metadata.json") -> ModelMetadata:
        """Validate a model_metadata.json text. Raises :class:`ConfigError` listing every problem.

        Values outside the car's limits (steering ±30°, speed [0.1, 4] m/s; deepracer-formats.md §2)
        are accepted, as DeepRacer accepts them, with one warning naming the file and the values.
        """
        data = _parse_json(text, source)
        if isinstance(data, dict) and "action_space" not in data:
            raise ConfigError(source, ["action_space: no action space defined"])
        metadata: ModelMetadata = _validate(cls, data, source)
        if _sensor_ignored_by_version(data):
            log.warning("%s: version %s is before 2, so DeepRacer ignores 'sensor' %s and the car drives the "
                        "camera alone; so does hotlap", source, data["version"], data["sensor"])
        outside = metadata.outside_limits()
        if outside:
            log.warning("%s: action values outside DeepRacer's limits are clipped when driving to steering "
                        "±%g° and speed [%g, %g] m/s, as DeepRacer does (the reward function still sees the "
                        "values of the file): %s", source, MAX_STEERING_DEG, MIN_SPEED, MAX_SPEED,
                        "; ".join(outside))
        return metadata

    def outside_limits(self) -> list[str]:
        """Each action value the car will clip, e.g. ``"action 0 steering_angle 45"`` (empty if none)."""
        def steering_ok(v: float) -> bool:
            return abs(v) <= MAX_STEERING_DEG

        def speed_ok(v: float) -> bool:
            return MIN_SPEED <= v <= MAX_SPEED

        found = []
        if isinstance(self.action_space, list):
            for i, a in enumerate(self.action_space):
                if not steering_ok(a.steering_angle):
                    found.append(f"action {i} steering_angle {a.steering_angle:g}")
                if not speed_ok(a.speed):
                    found.append(f"action {i} speed {a.speed:g}")
        else:
            for name, ok in (("steering_angle", steering_ok), ("speed", speed_ok)):
                r = getattr(self.action_space, name)
                if not (ok(r.low) and ok(r.high)):
                    found.append(f"{name} range [{r.low:g}, {r.high:g}]")
        return found

    def action_spec(self) -> ActionSpec:
        from shared.networks import ActionSpec

        if isinstance(self.action_space, list):
            actions = tuple((a.steering_angle, a.speed) for a in self.action_space)
            return ActionSpec(kind="discrete", discrete_actions=actions)
        space = self.action_space
        return ActionSpec(
            kind="continuous",
            steering_range=(space.steering_angle.low, space.steering_angle.high),
            speed_range=(space.speed.low, space.speed.high),
        )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)


# --------------------------------------------------------------------------- hyperparameters.json


DEEPRACER_HYPERPARAMETER_DEFAULTS: dict[str, Any] = {
    "batch_size": 64,
    "beta_entropy": 0.01,
    "discount_factor": 0.999,
    "e_greedy_value": 0.05,
    "epsilon_steps": 10000,
    "exploration_type": "categorical",
    "loss_type": "mean squared error",
    "lr": 0.0003,
    "num_episodes_between_training": 20,
    "num_epochs": 10,
    "stack_size": 1,
    "term_cond_avg_score": 100000.0,
    "term_cond_max_episodes": 100000,
}
"""The one home of hyperparameter defaults: the value DeepRacer uses when hyperparameters.json lacks
the key (simapp ``sagemaker_graph_manager.py::get_updated_hyper_parameters`` for clipped PPO;
deepracer-formats.md §3.1). These 13 keys are also exactly what DeepRacer writes back as the resolved
``ip/hyperparameters.json``. Note DRfC's template file differs (discount 0.99, huber, 5 epochs): a key
present in the file wins, a missing key gets this value — on DeepRacer and in hotlap alike."""

OTHER_DEEPRACER_KEYS: dict[str, Any] = {"sac_alpha": 0.2, "max_sample_count": 0, "sampling_frequency": 1}
"""Keys DeepRacer reads for SAC or its optional sample collector: accepted, no effect in hotlap."""

HOTLAP_EXTENSION_DEFAULTS: dict[str, Any] = {"hotlap_shared_trunk": False, "hotlap_target_kl": 0.05}
"""hotlap's own hyperparameters.json keys (DeepRacer ignores unknown keys, so a file carrying them
still runs there). ``hotlap_shared_trunk``: one embedder+middleware shared by the policy and value
heads instead of DeepRacer's two separate networks (faster, not DeepRacer's; shared/networks.py).
``hotlap_target_kl``: the PPO update's early stop (trainer/ppo.py): an iteration takes no more
minibatch steps once the approximate KL to the behaviour policy exceeds KL_STOP_FACTOR x this; null
switches it off for DeepRacer's exact algorithm, which has no such stop (deepracer-formats.md §3.1).
The default and its measurement: docs/hyperparameters.md "hotlap_target_kl"."""

KL_STOP_FACTOR = 1.5
"""The early stop fires at this multiple of ``hotlap_target_kl``, as Stable-Baselines3's PPO and
OpenAI Spinning Up's PPO do (the target is the KL an update aims for, the stop a margin above it)."""

_D = DEEPRACER_HYPERPARAMETER_DEFAULTS

# key -> (lowest, highest hotlap accepts, DeepRacer's console range): generous headroom over the
# console ranges of deepracer-formats.md §3.2 (stack_size: DeepRacer hard-codes 1, §3.1); past
# these a run does not end (num_epochs 1e30) or cannot hold its memory (batch_size 1e9, stack_size
# 1000 camera frames per car, 1e7 episodes of experience per iteration).
HYPERPARAMETER_LIMITS: dict[str, tuple[int, int, str]] = {
    "batch_size": (1, 16384, "the console offers 32-512"),
    "num_epochs": (1, 100, "the console offers 3-10"),
    "num_episodes_between_training": (1, 10000, "the console offers 1-100"),
    "stack_size": (1, 32, "parsed, but a stack of 1 is hard-coded"),
}


class Hyperparameters(BaseModel):
    """DeepRacer's hyperparameters.json; a missing key takes DeepRacer's code default
    (:data:`DEEPRACER_HYPERPARAMETER_DEFAULTS`). Unknown keys are ignored with a warning, as DeepRacer
    ignores them (see :meth:`parse`)."""

    model_config = ConfigDict(extra="ignore")

    batch_size: WholeNumber = Field(_D["batch_size"], ge=1)
    beta_entropy: Number = Field(_D["beta_entropy"], ge=0.0)
    discount_factor: Number = Field(_D["discount_factor"], ge=0.0, le=1.0)
    e_greedy_value: Number = Field(_D["e_greedy_value"], ge=0.0, le=1.0)
    epsilon_steps: WholeNumber = Field(_D["epsilon_steps"], ge=1)
    exploration_type: Literal["categorical", "e-greedy"] = _D["exploration_type"]
    loss_type: Literal["huber", "mean squared error"] = _D["loss_type"]
    lr: Number = Field(_D["lr"], gt=0.0, le=1.0)
    num_episodes_between_training: WholeNumber = Field(_D["num_episodes_between_training"], ge=1)
    num_epochs: WholeNumber = Field(_D["num_epochs"], ge=1)
    stack_size: WholeNumber = Field(_D["stack_size"], ge=1)
    term_cond_avg_score: Number = _D["term_cond_avg_score"]
    term_cond_max_episodes: WholeNumber = Field(_D["term_cond_max_episodes"], ge=1)
    sac_alpha: Number = Field(OTHER_DEEPRACER_KEYS["sac_alpha"], ge=0.0)
    max_sample_count: WholeNumber = Field(OTHER_DEEPRACER_KEYS["max_sample_count"], ge=0)
    sampling_frequency: WholeNumber = Field(OTHER_DEEPRACER_KEYS["sampling_frequency"], ge=1)
    hotlap_shared_trunk: bool = HOTLAP_EXTENSION_DEFAULTS["hotlap_shared_trunk"]
    hotlap_target_kl: Number | None = Field(HOTLAP_EXTENSION_DEFAULTS["hotlap_target_kl"], gt=0.0, le=10.0)

    @field_validator("exploration_type", "loss_type", mode="before")
    @classmethod
    def _normalise_token(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(*HYPERPARAMETER_LIMITS, mode="before")
    @classmethod
    def _within_limit(cls, value: Any, info: ValidationInfo) -> Any:
        """Before int parsing, so that 1e30 gets this message rather than pydantic's overflow one."""
        low, high, deepracer = HYPERPARAMETER_LIMITS[str(info.field_name)]
        if isinstance(value, int | float) and not isinstance(value, bool) and value > high:
            raise ValueError(f"{value:g} is outside the {low}-{high} hotlap accepts (DeepRacer: {deepracer}, "
                             "deepracer-formats.md §3; larger values hang the run or exhaust memory)")
        return value

    @classmethod
    def parse(cls, text: str | bytes, source: str = "hyperparameters.json") -> Hyperparameters:
        """Validate a hyperparameters.json text. Raises :class:`ConfigError` listing every bad value.

        Keys DeepRacer does not know are ignored, as DeepRacer ignores them, with one warning naming
        the file and the keys (a typo such as ``learning_rate`` for ``lr`` leaves the default in force).
        """
        data = _parse_json(text, source)
        hp: Hyperparameters = _validate(cls, data, source)
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            log.warning("%s: ignoring unknown key(s) %s, as DeepRacer does; known keys: %s", source,
                        ", ".join(repr(k) for k in unknown), ", ".join(sorted(cls.model_fields)))
        return hp

    def to_json(self) -> str:
        """DeepRacer's resolved dict (its 13 clipped-PPO keys, sorted, indent 2: deepracer-utils parses
        it) plus hotlap's extension keys, which the workers read back from the store."""
        values = self.model_dump()
        keys = [*DEEPRACER_HYPERPARAMETER_DEFAULTS, *HOTLAP_EXTENSION_DEFAULTS]
        return json.dumps({k: values[k] for k in keys}, indent=2, sort_keys=True)


# DeepRacer's trainer stops collecting an iteration's experience past this many steps: its memory
# backend's MAX_MEMORY_STEPS, 10,000 for the shallow network and 3,000 for the others unless
# MAX_MEMORY_STEPS is set (deepracer-formats.md §7.3; DRfC DR_TRAIN_MAX_STEPS_PER_ITERATION).
STEP_CAP_SHALLOW = 10000
STEP_CAP_DEEPER = 3000


def max_steps_per_iteration(neural_network: str, override: int | None = None) -> int:
    """Steps per iteration the trainer collects at most: ``override`` (training_params.yaml
    ``MAX_STEPS_PER_ITERATION``) if given, else DeepRacer's cap for the network."""
    if override is not None:
        return override
    return STEP_CAP_SHALLOW if neural_network == "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW" else STEP_CAP_DEEPER


# --------------------------------------------------------------------------- training_params.yaml


class RunSettings(BaseModel):
    """The run's settings, stored as training_params.yaml with DeepRacer-style keys.

    Every process reads these from the store, so a worker started anywhere trains the same run.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    track: str = Field("reInvent2019_track", alias="WORLD_NAME")
    # A track given as a .npy file travels with the run: stored under this key next to
    # training_params.yaml, with its sha256, so every worker drives the same track.
    track_file: str | None = Field(None, alias="TRACK_FILE", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.npy$")
    track_sha256: str | None = Field(None, alias="TRACK_SHA256", pattern=r"^[0-9a-f]{64}$")
    reverse: bool = Field(False, alias="REVERSE_DIR")
    change_start_position: bool = Field(True, alias="CHANGE_START_POSITION")
    round_robin_advance: float = Field(0.05, ge=0.0, lt=1.0, alias="ROUND_ROBIN_ADVANCE_DIST")
    start_position_offset: float = Field(0.0, ge=0.0, lt=1.0, alias="START_POSITION_OFFSET")
    # DeepRacer's model picker (deepracer-formats.md §4.1-4.2): worker 0 drives MIN_EVAL_TRIALS greedy
    # evaluation episodes of each version; BEST_MODEL_METRIC ranks versions by their mean
    # (progress, reward: higher is better; laptime: lower, an unfinished lap counting 999999 ms).
    best_model_metric: Literal["progress", "reward", "laptime"] = Field("progress", alias="BEST_MODEL_METRIC")
    min_eval_trials: int = Field(5, ge=0, le=100, alias="MIN_EVAL_TRIALS")  # 0: no evaluation
    # Clone (deepracer-formats.md §3.1 pretrained_s3_*): "<run store URL>@<version>" whose weights are
    # version 0 of this run; the seed copies them into the store (shared.store.PRETRAINED_WEIGHTS).
    pretrained: str | None = Field(None, alias="PRETRAINED_MODEL")
    num_workers: int = Field(1, ge=1, alias="NUM_WORKERS")
    max_iterations: int = Field(1000, ge=1, alias="MAX_ITERATIONS")
    max_steps_per_episode: int = Field(10000, ge=2, alias="MAX_STEPS_PER_EPISODE")
    cars_per_worker: int = Field(1, ge=1, le=1024, alias="CARS_PER_WORKER")
    schedule: Literal["sync", "async"] = Field("sync", alias="SCHEDULE")
    max_staleness: int = Field(1, ge=0, alias="MAX_STALENESS")
    reward_time_limit_s: float = Field(REWARD_TIME_LIMIT_S, gt=0.0, alias="REWARD_TIME_LIMIT_S")
    # None: DeepRacer's cap for the network (max_steps_per_iteration()).
    max_steps_per_iteration: int | None = Field(None, ge=1, alias="MAX_STEPS_PER_ITERATION")

    @classmethod
    def parse(cls, text: str | bytes, source: str = "training_params.yaml") -> RunSettings:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(source, [f"not valid YAML: {e}"]) from e
        settings: RunSettings = _validate(cls, data, source)
        return settings

    def to_yaml(self, extra: Mapping[str, str] | None = None) -> str:
        data: dict[str, Any] = {**(extra or {}), **self.model_dump(by_alias=True)}
        return yaml.safe_dump(data, sort_keys=True)


# --------------------------------------------------------------------------- process configs


def redact_url(url: str) -> str:
    """`url` with its user-info (user name, password) replaced by `***`, for messages and logs.

    `redis://:secret@redis:6379/0` -> `redis://***@redis:6379/0`; a URL without `@` is unchanged.
    Works on malformed URLs too (a wrong scheme must not leak the password in its error).
    """
    head, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, slashes, _userinfo = head.rpartition("//")
    return f"{scheme}{slashes}***@{host}"


class ServiceConfig(BaseModel):
    """What every hotlap process needs to find the run: its id, Redis and the store."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    run_id: str = Field("hotlap", alias="HOTLAP_RUN_ID")
    redis_url: str = Field("redis://127.0.0.1:6379/0", alias="HOTLAP_REDIS_URL")
    store_url: str = Field(..., alias="HOTLAP_STORE_URL")
    s3_endpoint_url: str | None = Field(None, alias="HOTLAP_S3_ENDPOINT_URL")
    log_level: str = Field("INFO", alias="HOTLAP_LOG_LEVEL")
    # A run that ended (done or failed) keeps its Redis keys this long, then they expire.
    finished_run_ttl_s: int = Field(7 * 24 * 3600, ge=1, alias="HOTLAP_FINISHED_RUN_TTL_S")
    log_format: Literal["text", "json"] = Field("text", alias="HOTLAP_LOG_FORMAT")
    # How long a transient Redis/store outage is waited out (capped backoff) before the run fails.
    retry_give_up_s: float = Field(300.0, gt=0.0, alias="HOTLAP_RETRY_GIVE_UP_S")

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
            raise ValueError(f"run id must be 1-64 letters, digits, '_', '.', '-' (it names Redis keys), got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected redis://[:password@]host:port/db, got {redact_url(value)!r}")
        if value.startswith("unix://"):
            return value
        parsed = urlparse(value)
        try:
            parsed.port  # noqa: B018 - parsing it is the check (not a number, or out of range)
        except ValueError as e:
            raise ValueError(f"{e} in {redact_url(value)!r}; expected redis://[:password@]host:port/db") from None
        if not parsed.hostname or not re.fullmatch(r"/?\d*", parsed.path):
            raise ValueError(f"expected redis://[:password@]host:port/db (db a number), got {redact_url(value)!r}")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint_scheme(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"expected the S3 server as http(s)://host:port, e.g. http://minio:9000, got "
                             f"{redact_url(value)!r}")
        return value

    @field_validator("store_url")
    @classmethod
    def _store_scheme(cls, value: str) -> str:
        if not value.startswith(("s3://", "file://")) and not value.startswith("/"):
            raise ValueError(f"expected s3://bucket/prefix, file:///path or an absolute path, got {value!r}")
        if value.startswith("s3://") and not urlparse(value).netloc:
            raise ValueError(f"expected s3://bucket/prefix, got {value!r}, which names no bucket")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 source: str = "environment (HOTLAP_* variables)") -> Any:
        """The config from HOTLAP_* variables (``environ``, default the process's). Raises
        :class:`ConfigError` naming ``source`` and every bad variable with its value."""
        env = dict(os.environ if environ is None else environ)
        try:
            # An empty value (`HOTLAP_X=` in .env) means unset.
            return cls.model_validate({k: v for k, v in env.items() if k.startswith("HOTLAP_") and v != ""})
        except ValidationError as e:
            raise ConfigError(source, _problems_from(e)) from e


def default_worker_name() -> str:
    """Unique per process and readable: the host (container id in compose) plus the pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerConfig(ServiceConfig):
    worker_name: str = Field(default_factory=default_worker_name, alias="HOTLAP_WORKER_NAME")
    cars_per_worker: int | None = Field(None, ge=1, le=1024, alias="HOTLAP_CARS_PER_WORKER")
    heartbeat_s: float = Field(2.0, gt=0.0, alias="HOTLAP_HEARTBEAT_S")
    seed: int = Field(0, alias="HOTLAP_SEED")
    sim_trace_log: bool = Field(True, alias="HOTLAP_SIM_TRACE_LOG")
    # Keep under the Redis server's maxmemory with headroom (REDIS_MAXMEMORY_BYTES' comment).
    stream_max_bytes: int = Field(STREAM_MAX_BYTES, ge=1 << 16, alias="HOTLAP_STREAM_MAX_BYTES")


class TrainerConfig(ServiceConfig):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", alias="HOTLAP_DEVICE")
    torch_threads: int = Field(0, ge=0, alias="HOTLAP_TORCH_THREADS")
    stall_timeout_s: float = Field(60.0, gt=0.0, alias="HOTLAP_STALL_TIMEOUT_S")
    seed: int = Field(0, alias="HOTLAP_SEED")
    # One trainer per run: the lease expires this long after its holder stopped renewing it.
    lease_s: float = Field(10.0, ge=1.0, le=600.0, alias="HOTLAP_TRAINER_LEASE_S")
    tensorboard_dir: str | None = Field(None, alias="HOTLAP_TENSORBOARD_DIR")
    # Checkpoint retention: the store keeps the weights of the last `keep_versions` versions plus the
    # best one and the pinned ones, and the optimizer state of the latest only. DeepRacer keeps
    # NUM_MODELS_TO_KEEP = 4 plus the best (deepracer-formats.md §6).
    keep_versions: int = Field(4, ge=1, alias="HOTLAP_KEEP_VERSIONS")
    pinned_versions: frozenset[int] = Field(frozenset(), alias="HOTLAP_PINNED_VERSIONS")

    @field_validator("pinned_versions", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """`HOTLAP_PINNED_VERSIONS=3,7` (the environment is text)."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


# Observation shapes per sensor: the contract between the simulator's renderers and the networks.
CAMERA_SHAPE = (120, 160)  # DeepRacer's TRAINING_IMAGE_SIZE (160×120), grayscale
SENSOR_SHAPES: dict[str, tuple[int, ...]] = {
    "FRONT_FACING_CAMERA": CAMERA_SHAPE,
    "STEREO_CAMERAS": (2, *CAMERA_SHAPE),
    "LIDAR": (64,),
    "SECTOR_LIDAR": (8,),
}

# Per-step dtypes of those observations: camera frames are grayscale bytes, lidar ranges floats.
SENSOR_DTYPES: dict[str, str] = {
    "FRONT_FACING_CAMERA": "uint8",
    "STEREO_CAMERAS": "uint8",
    "LIDAR": "float32",
    "SECTOR_LIDAR": "float32",
}


def observation_shapes(sensors: list[str], stack_size: int = 1) -> dict[str, tuple[int, ...]]:
    """What the network sees per sensor, with `stack_size` observations stacked (simulator.stacking)."""
    shapes = {}
    for name in sensors:
        shape = SENSOR_SHAPES[name]
        if stack_size == 1:
            shapes[name] = shape
        elif len(shape) == 2:
            shapes[name] = (stack_size, *shape)
        else:
            shapes[name] = (stack_size * shape[0], *shape[1:])
    return shapes
