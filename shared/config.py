"""Typed configuration: DeepRacer's user files, the run settings, and one config per process.

Every file is validated up front and every problem is reported at once, each named by its
field path, so a user fixes a broken `model_metadata.json` in one go instead of one error per run.
Process configs are built once at the entry point (from the environment) and passed down.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:  # networks imports torch; keep config light for the CLI
    from shared.networks import ActionSpec

# DeepRacer's physical limits: actions are clipped to these when sent to the car.
MAX_STEERING_DEG = 30.0
MIN_SPEED = 0.1
MAX_SPEED = 4.0

CAMERA_SENSORS = ("FRONT_FACING_CAMERA", "STEREO_CAMERAS", "LEFT_CAMERA", "observation")
LIDAR_SENSORS = ("LIDAR", "SECTOR_LIDAR", "DISCRETIZED_SECTOR_LIDAR")
SUPPORTED_SENSORS = ("FRONT_FACING_CAMERA", "STEREO_CAMERAS", "LIDAR", "SECTOR_LIDAR")
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


def _problems_from(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{path}: {message}")
    return problems


def _parse_json(text: str | bytes, source: str) -> Any:
    try:
        return json.loads(text)
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


class DiscreteAction(BaseModel):
    model_config = ConfigDict(extra="ignore")  # console files carry "index"; DeepRacer ignores it

    steering_angle: float
    speed: float

    @field_validator("steering_angle")
    @classmethod
    def _steering_in_limits(cls, value: float) -> float:
        if not math.isfinite(value) or abs(value) > MAX_STEERING_DEG:
            raise ValueError(f"steering_angle {value} is outside DeepRacer's ±{MAX_STEERING_DEG}°")
        return value

    @field_validator("speed")
    @classmethod
    def _speed_in_limits(cls, value: float) -> float:
        if not math.isfinite(value) or not MIN_SPEED <= value <= MAX_SPEED:
            raise ValueError(f"speed {value} is outside DeepRacer's [{MIN_SPEED}, {MAX_SPEED}] m/s")
        return value


class ActionRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> ActionRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"needs finite low <= high, got low={self.low} high={self.high}")
        return self


class ContinuousActionSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steering_angle: ActionRange
    speed: ActionRange

    @model_validator(mode="after")
    def _in_limits(self) -> ContinuousActionSpace:
        s, v = self.steering_angle, self.speed
        if s.low < -MAX_STEERING_DEG or s.high > MAX_STEERING_DEG:
            raise ValueError(f"steering_angle range [{s.low}, {s.high}] exceeds ±{MAX_STEERING_DEG}°")
        if v.low < MIN_SPEED or v.high > MAX_SPEED:
            raise ValueError(f"speed range [{v.low}, {v.high}] exceeds [{MIN_SPEED}, {MAX_SPEED}] m/s")
        return self


class LidarConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_sectors: int = 8
    num_values_per_sector: int = 8
    clipping_dist: float = Field(2.0, ge=0.15, le=12.0)

    @field_validator("num_sectors")
    @classmethod
    def _divides_64(cls, value: int) -> int:
        if value < 1 or 64 % value:
            raise ValueError("num_sectors must divide 64 (1, 2, 4, 8, 16, 32 or 64)")
        return value


class ModelMetadata(BaseModel):
    """DeepRacer's model_metadata.json (simapp keys and defaults)."""

    model_config = ConfigDict(extra="ignore")

    action_space: list[DiscreteAction] | ContinuousActionSpace
    action_space_type: Literal["discrete", "continuous"] = "discrete"
    sensor: list[str] = Field(default_factory=lambda: ["FRONT_FACING_CAMERA"])
    neural_network: str = "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW"
    training_algorithm: str = "clipped_ppo"
    version: str = "5"
    lidar_config: LidarConfig | None = None

    @field_validator("action_space_type", "training_algorithm", mode="before")
    @classmethod
    def _normalise_token(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
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
        problems = [f"unknown sensor {s!r}" for s in sensors if s not in CAMERA_SENSORS + LIDAR_SENSORS]
        cameras = [s for s in sensors if s in CAMERA_SENSORS]
        lidars = [s for s in sensors if s in LIDAR_SENSORS]
        if len(cameras) != 1:
            problems.append(f"exactly one camera sensor is required ({', '.join(CAMERA_SENSORS[:3])})")
        if len(lidars) > 1:
            problems.append("at most one lidar sensor is allowed")
        if "DISCRETIZED_SECTOR_LIDAR" in sensors:
            problems.append("DISCRETIZED_SECTOR_LIDAR is not supported yet (use LIDAR or SECTOR_LIDAR)")
        if problems:
            raise ValueError("; ".join(problems))
        # DeepRacer's legacy names for the single front camera.
        return ["FRONT_FACING_CAMERA" if s in ("observation", "LEFT_CAMERA") else s for s in sensors]

    @model_validator(mode="after")
    def _type_matches_space(self) -> ModelMetadata:
        is_list = isinstance(self.action_space, list)
        if self.action_space_type == "discrete" and not is_list:
            raise ValueError("action_space_type is 'discrete' but action_space is a continuous range object")
        if self.action_space_type == "continuous" and is_list:
            raise ValueError("action_space_type is 'continuous' but action_space is a list of discrete actions")
        if is_list and not self.action_space:
            raise ValueError("action_space: no actions defined")
        return self

    @classmethod
    def parse(cls, text: str | bytes, source: str = "model_metadata.json") -> ModelMetadata:
        data = _parse_json(text, source)
        if isinstance(data, dict) and "action_space" not in data:
            raise ConfigError(source, ["action_space: no action space defined"])
        metadata: ModelMetadata = _validate(cls, data, source)
        return metadata

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


class Hyperparameters(BaseModel):
    """DeepRacer's hyperparameters.json with DRfC's defaults. Unknown keys are rejected (typos)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=1)
    beta_entropy: float = Field(0.01, ge=0.0)
    discount_factor: float = Field(0.99, gt=0.0, le=1.0)
    e_greedy_value: float = Field(0.05, ge=0.0, le=1.0)
    epsilon_steps: int = Field(10000, ge=1)
    exploration_type: Literal["categorical", "e-greedy"] = "categorical"
    loss_type: Literal["huber", "mean squared error"] = "huber"
    lr: float = Field(0.0003, gt=0.0, le=1.0)
    num_episodes_between_training: int = Field(20, ge=1)
    num_epochs: int = Field(5, ge=1)
    stack_size: int = Field(1, ge=1)
    term_cond_avg_score: float = 350.0
    term_cond_max_episodes: int = Field(1000, ge=1)
    sac_alpha: float = Field(0.2, ge=0.0)
    max_sample_count: int = Field(0, ge=0)
    sampling_frequency: int = Field(1, ge=1)

    @field_validator("exploration_type", "loss_type", mode="before")
    @classmethod
    def _normalise_token(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @classmethod
    def parse(cls, text: str | bytes, source: str = "hyperparameters.json") -> Hyperparameters:
        hp: Hyperparameters = _validate(cls, _parse_json(text, source), source)
        return hp

    def to_json(self) -> str:
        # DeepRacer writes the resolved dict sorted with indent 2; deepracer-utils parses it.
        return json.dumps(self.model_dump(), indent=2, sort_keys=True)


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
    best_model_metric: Literal["progress", "reward"] = Field("progress", alias="BEST_MODEL_METRIC")
    num_workers: int = Field(1, ge=1, alias="NUM_WORKERS")
    max_iterations: int = Field(1000, ge=1, alias="MAX_ITERATIONS")
    max_steps_per_episode: int = Field(10000, ge=2, alias="MAX_STEPS_PER_EPISODE")
    cars_per_worker: int = Field(1, ge=1, le=1024, alias="CARS_PER_WORKER")
    schedule: Literal["sync", "async"] = Field("sync", alias="SCHEDULE")
    max_staleness: int = Field(1, ge=0, alias="MAX_STALENESS")
    reward_time_limit_s: float = Field(1.0, gt=0.0, alias="REWARD_TIME_LIMIT_S")
    max_steps_per_iteration: int = Field(10000, ge=1, alias="MAX_STEPS_PER_ITERATION")

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

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
            raise ValueError("run id must be 1-64 letters, digits, '_', '.', '-' (it names Redis keys)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected redis://[:password@]host:port/db, got {redact_url(value)!r}")
        return value

    @field_validator("store_url")
    @classmethod
    def _store_scheme(cls, value: str) -> str:
        if not value.startswith(("s3://", "file://")) and not value.startswith("/"):
            raise ValueError(f"expected s3://bucket/prefix, file:///path or an absolute path, got {value!r}")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Any:
        env = dict(os.environ if environ is None else environ)
        try:
            # An empty value (`HOTLAP_X=` in .env) means unset.
            return cls.model_validate({k: v for k, v in env.items() if k.startswith("HOTLAP_") and v != ""})
        except ValidationError as e:
            raise ConfigError("environment (HOTLAP_* variables)", _problems_from(e)) from e


def default_worker_name() -> str:
    """Unique per process and readable: the host (container id in compose) plus the pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerConfig(ServiceConfig):
    worker_name: str = Field(default_factory=default_worker_name, alias="HOTLAP_WORKER_NAME")
    cars_per_worker: int | None = Field(None, ge=1, le=1024, alias="HOTLAP_CARS_PER_WORKER")
    heartbeat_s: float = Field(2.0, gt=0.0, alias="HOTLAP_HEARTBEAT_S")
    seed: int = Field(0, alias="HOTLAP_SEED")
    sim_trace_log: bool = Field(True, alias="HOTLAP_SIM_TRACE_LOG")


class TrainerConfig(ServiceConfig):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", alias="HOTLAP_DEVICE")
    torch_threads: int = Field(0, ge=0, alias="HOTLAP_TORCH_THREADS")
    stall_timeout_s: float = Field(60.0, gt=0.0, alias="HOTLAP_STALL_TIMEOUT_S")
    seed: int = Field(0, alias="HOTLAP_SEED")


# Observation shapes per sensor: the contract between the simulator's renderers and the networks.
CAMERA_SHAPE = (120, 160)  # DeepRacer's TRAINING_IMAGE_SIZE (160×120), grayscale
SENSOR_SHAPES: dict[str, tuple[int, ...]] = {
    "FRONT_FACING_CAMERA": CAMERA_SHAPE,
    "STEREO_CAMERAS": (2, *CAMERA_SHAPE),
    "LIDAR": (64,),
    "SECTOR_LIDAR": (8,),
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
