"""The experience message: one finished episode (or chunk) of one car, as it crosses Redis.

Wire format: a small JSON header plus the raw numpy buffers, concatenated and optionally
compressed (zstd level 1; zlib, the codec of earlier builds, is still read). Decoding never
unpickles or executes anything; anything malformed raises `MessageError` (or its
`OversizeMessage`), which names what is wrong, so the trainer can drop the entry and carry on.
`ExperienceSpec.check` then holds a decoded message against the run's observation and action
spec (`InvalidExperience`).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zstandard

SCHEMA_VERSION = 1
MESSAGE_KIND = "experience"
# Only plain numeric dtypes cross the wire ("O" would need pickle).
ALLOWED_DTYPES = frozenset({"uint8", "int64", "float32", "bool"})
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024
# DeepRacer fails a reward function that returns a value outside [-1e5, 1e5]
# (deepracer-formats.md §2); no honest message carries a bigger per-step reward.
REWARD_LIMIT = 1e5
HEADER_FIELD = b"header"
PAYLOAD_FIELD = b"payload"
OBS_PREFIX = "obs/"
# Keys of the header's "extra" object that say whether a message ends its episode (async chunks).
FINAL_CHUNK = "final_chunk"
EPISODE_REWARD = "episode_reward"
EPISODE_STEPS = "episode_steps"
# zstd level 1 rather than zlib level 1: on 100 camera frames (1.9 MB) it compresses ~3.5x faster,
# decompresses ~7x faster and is as small, which took the trainer's single reader from a quarter of
# bare redis-py's rate to par (bench/transport.py, docs/scaling.md).
COMPRESSION_CODEC = "zstd"
ZSTD_LEVEL = 1


class MessageError(ValueError):
    """An experience message could not be decoded; the text says which field and why.

    `reason` is the accounting category of the drop (shared.transport.DROP_REASONS)."""

    reason = "corrupt"


class OversizeMessage(MessageError):
    """The message is bigger than the run allows (payload bytes, header bytes, or steps)."""

    reason = "oversize"


class InvalidExperience(MessageError):
    """The message decodes, but does not fit the run's observation/action spec."""

    reason = "invalid"


@dataclass
class Experience:
    """One episode (or chunk) played by one car with one model version."""

    run_id: str
    worker_name: str
    worker_index: int
    model_version: int
    episode: int  # the worker's 0-based training-episode counter
    observations: dict[str, np.ndarray]  # sensor -> (T, ...)
    actions: np.ndarray  # (T,) int64 or (T, 2) float32
    log_probs: np.ndarray  # (T,) float32
    values: np.ndarray  # (T,) float32
    rewards: np.ndarray  # (T,) float32
    terminated: bool  # the episode really ended: no bootstrap
    bootstrap_value: float  # value of the next state when not terminated
    status: str = "in_progress"  # DeepRacer episode_status token at the end
    progress: float = 0.0
    elapsed_s: float = 0.0  # sim time of the episode
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def total_reward(self) -> float:
        """Reward of this message's steps (of this chunk only, for a chunk)."""
        return float(self.rewards.sum())

    # An async worker cuts a running episode at a version change (simulator.worker): the cut-off
    # part goes out as a chunk (extra["final_chunk"] false) and the message that ends the episode
    # carries the whole episode's reward and steps (extra["episode_reward"], ["episode_steps"]).
    # Episode statistics (quota, means, logs/episodes.csv) count the messages that end an episode.

    @property
    def ends_episode(self) -> bool:
        """True for a whole episode or the last chunk of one; False for a chunk of a running episode."""
        return self.extra.get(FINAL_CHUNK, True) is not False

    @property
    def episode_reward(self) -> float:
        """Reward of the whole episode this message ends (earlier chunks included)."""
        return float(self.extra.get(EPISODE_REWARD, self.total_reward))

    @property
    def episode_steps(self) -> int:
        """Steps of the whole episode this message ends (earlier chunks included)."""
        return int(self.extra.get(EPISODE_STEPS, self.num_steps))

    # ----------------------------------------------------------------- encoding

    def arrays(self) -> dict[str, np.ndarray]:
        named = {f"{OBS_PREFIX}{name}": arr for name, arr in self.observations.items()}
        named.update(actions=self.actions, log_probs=self.log_probs, values=self.values, rewards=self.rewards)
        return named

    def encode(self, compress: bool = True) -> dict[bytes, bytes]:
        """Stream entry fields: {b"header": JSON, b"payload": raw buffers}."""
        arrays = {name: np.ascontiguousarray(arr) for name, arr in self.arrays().items()}
        for name, arr in arrays.items():
            if arr.dtype.name not in ALLOWED_DTYPES:
                raise MessageError(f"array {name!r} has dtype {arr.dtype.name}, not one of {sorted(ALLOWED_DTYPES)}")
        # Byte views of the arrays, not copies: compression reads them in place.
        buffers = [arr.reshape(-1).view(np.uint8).data for arr in arrays.values()]
        payload_bytes = sum(buf.nbytes for buf in buffers)
        header = {
            "schema": SCHEMA_VERSION,
            "kind": MESSAGE_KIND,
            "run_id": self.run_id,
            "worker_name": self.worker_name,
            "worker_index": self.worker_index,
            "model_version": self.model_version,
            "episode": self.episode,
            "terminated": self.terminated,
            "bootstrap_value": self.bootstrap_value,
            "status": self.status,
            "progress": self.progress,
            "elapsed_s": self.elapsed_s,
            "extra": self.extra,
            "codec": COMPRESSION_CODEC if compress else "none",
            "payload_bytes": payload_bytes,
            "arrays": [{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)} for n, a in arrays.items()],
        }
        if compress:
            # A compressor per call: they are cheap, and one shared compressor is not thread-safe.
            # Streamed array by array with the total size declared, so the frame states it (decode checks).
            stream = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj(size=payload_bytes)
            payload = b"".join([*(stream.compress(buf) for buf in buffers), stream.flush()])
        else:
            payload = b"".join(buffers)
        return {HEADER_FIELD: json.dumps(header).encode(), PAYLOAD_FIELD: payload}

    @classmethod
    def decode(cls, fields: dict[bytes, bytes], max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> Experience:
        """Raises MessageError (OversizeMessage when the payload exceeds `max_payload_bytes`,
        checked before anything is decompressed)."""
        header = _decode_header(fields)
        payload = _decode_payload(fields, header, max_payload_bytes)
        arrays = _split_arrays(payload, header["arrays"])
        observations = {n.removeprefix(OBS_PREFIX): a for n, a in arrays.items() if n.startswith(OBS_PREFIX)}
        try:
            exp = cls(
                run_id=str(header["run_id"]),
                worker_name=str(header["worker_name"]),
                worker_index=int(header["worker_index"]),
                model_version=int(header["model_version"]),
                episode=int(header["episode"]),
                observations=observations,
                actions=arrays["actions"],
                log_probs=arrays["log_probs"],
                values=arrays["values"],
                rewards=arrays["rewards"],
                terminated=bool(header["terminated"]),
                bootstrap_value=float(header["bootstrap_value"]),
                status=str(header.get("status", "in_progress")),
                progress=float(header.get("progress", 0.0)),
                elapsed_s=float(header.get("elapsed_s", 0.0)),
                extra=dict(header.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise MessageError(f"header field missing or of the wrong type: {e}") from e
        _check_lengths(exp)
        return exp


def _decode_header(fields: dict[bytes, bytes]) -> dict[str, Any]:
    raw = fields.get(HEADER_FIELD)
    if raw is None:
        raise MessageError(f"no {HEADER_FIELD!r} field (fields: {sorted(fields)[:5]})")
    if len(raw) > MAX_HEADER_BYTES:
        raise OversizeMessage(f"header has {len(raw)} bytes, more than {MAX_HEADER_BYTES}")
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, nesting bombs
        raise MessageError(f"header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise MessageError("header is not a JSON object")
    if header.get("kind") != MESSAGE_KIND:
        raise MessageError(f"kind is {header.get('kind')!r}, expected {MESSAGE_KIND!r}")
    if header.get("schema") != SCHEMA_VERSION:
        raise MessageError(f"schema version {header.get('schema')!r}; this build reads {SCHEMA_VERSION}")
    if not isinstance(header.get("model_version"), int):
        raise MessageError("model_version missing: every experience message must carry its policy version")
    if not isinstance(header.get("arrays"), list):
        raise MessageError("arrays list missing from header")
    return header


def _decode_payload(fields: dict[bytes, bytes], header: dict[str, Any], max_payload_bytes: int) -> bytes:
    payload = fields.get(PAYLOAD_FIELD, b"")
    expected = header.get("payload_bytes")
    if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
        raise MessageError(f"payload_bytes {expected!r} missing or out of range")
    limit = min(max_payload_bytes, MAX_PAYLOAD_BYTES)
    if expected > limit or len(payload) > limit + 1024:  # compression may add a little to incompressible data
        raise OversizeMessage(f"payload of {max(expected, len(payload))} bytes exceeds the limit of {limit}")
    codec = header.get("codec")
    if codec == "zstd":
        payload = _zstd_decompress(payload, expected)
    elif codec == "zlib":
        try:
            inflater = zlib.decompressobj()
            payload = inflater.decompress(payload, expected + 1)  # bounded: no zip bombs
        except zlib.error as e:
            raise MessageError(f"payload is not valid zlib data: {e}") from e
    elif codec != "none":
        raise MessageError(f"unknown codec {codec!r}")
    if len(payload) != expected:
        raise MessageError(f"payload has {len(payload)} bytes, header says {expected}")
    return payload


def _zstd_decompress(payload: bytes, expected: int) -> bytes:
    """Bounded like zlib: the frame must declare exactly `expected` bytes, and no more are produced."""
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as e:
        raise MessageError(f"payload is not valid zstd data: {e}") from e
    if declared != expected:
        raise MessageError(f"zstd payload declares {declared} bytes, header says {expected}")
    try:
        return zstandard.ZstdDecompressor().decompress(payload, max_output_size=expected)
    except zstandard.ZstdError as e:
        raise MessageError(f"payload is not valid zstd data: {e}") from e


def _split_arrays(payload: bytes, specs: list[Any]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        try:
            name, dtype_name, shape = str(spec["name"]), str(spec["dtype"]), tuple(int(d) for d in spec["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise MessageError(f"bad array spec {spec!r}") from e
        if dtype_name not in ALLOWED_DTYPES:
            raise MessageError(f"array {name!r}: dtype {dtype_name!r} not allowed")
        if any(d < 0 for d in shape):
            raise MessageError(f"array {name!r}: negative dimension in {shape}")
        dtype = np.dtype(dtype_name)
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes > len(payload):
            raise MessageError(f"array {name!r} runs past the end of the payload")
        try:
            arrays[name] = np.frombuffer(payload, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
        except ValueError as e:  # e.g. more dimensions than numpy supports
            raise MessageError(f"array {name!r}: shape {shape}: {e}") from e
        offset += nbytes
    if offset != len(payload):
        raise MessageError(f"{len(payload) - offset} unclaimed payload bytes")
    for required in ("actions", "log_probs", "values", "rewards"):
        if required not in arrays:
            raise MessageError(f"array {required!r} missing")
    return arrays


def _check_lengths(exp: Experience) -> None:
    if exp.rewards.ndim != 1:
        raise MessageError(f"array 'rewards' has shape {exp.rewards.shape}, expected (T,)")
    steps = exp.num_steps
    per_step = {"actions": exp.actions, "log_probs": exp.log_probs, "values": exp.values}
    per_step.update({f"obs/{k}": v for k, v in exp.observations.items()})
    for name, arr in per_step.items():
        if arr.shape[:1] != (steps,):
            raise MessageError(f"array {name!r} has {arr.shape[:1]} steps, rewards has {steps}")
    if not exp.observations:
        raise MessageError("no observations in message")
    if not math.isfinite(exp.bootstrap_value):
        raise MessageError("bootstrap_value is not finite")


@dataclass(frozen=True)
class ExperienceSpec:
    """What a valid message of one run looks like; `check` holds a decoded message against it.

    `observations` maps each sensor to its per-step (shape, dtype name), as the workers produce
    them (shared.config.observation_spec); discrete actions are int64 indexes in
    [0, num_actions), continuous ones float32 (T, 2) samples in the policy's normalised space.
    """

    run_id: str
    observations: dict[str, tuple[tuple[int, ...], str]]
    action_kind: str  # "discrete" | "continuous"
    num_actions: int
    max_steps: int  # a message holds at most one episode: max_steps_per_episode steps

    @property
    def max_payload_bytes(self) -> int:
        """The largest payload an honest message of this run can have, in bytes."""
        per_step = sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in self.observations.values())
        per_step += 8 if self.action_kind == "discrete" else 2 * 4  # int64 index | 2 float32
        per_step += 3 * 4  # log_probs, values, rewards
        return per_step * self.max_steps

    def check(self, exp: Experience) -> None:
        """Raises InvalidExperience (OversizeMessage for too many steps) naming the field and value."""
        if exp.run_id != self.run_id:
            raise InvalidExperience(f"run_id {exp.run_id!r}, expected {self.run_id!r}")
        if min(exp.model_version, exp.worker_index, exp.episode) < 0:
            raise InvalidExperience(f"negative model_version/worker_index/episode "
                                    f"({exp.model_version}, {exp.worker_index}, {exp.episode})")
        steps = exp.num_steps
        if steps < 1:
            raise InvalidExperience("no steps")
        if steps > self.max_steps:
            raise OversizeMessage(f"{steps} steps, more than max_steps_per_episode {self.max_steps}")
        self._check_observations(exp, steps)
        self._check_actions(exp.actions, steps)
        for name in ("log_probs", "values", "rewards"):
            _expect_array(name, getattr(exp, name), (steps,), "float32")
            if not np.isfinite(getattr(exp, name)).all():
                raise InvalidExperience(f"{name} contains NaN or inf")
        if np.abs(exp.rewards).max() > REWARD_LIMIT:
            raise InvalidExperience(f"a reward of {np.abs(exp.rewards).max():g} is outside [-1e5, 1e5]")
        if self.action_kind == "discrete" and exp.log_probs.max() > 1e-3:
            raise InvalidExperience(f"log_prob {exp.log_probs.max():g} > 0 for a discrete action")
        # DeepRacer's compute_current_prog reads a car that reversed over its start line as negative
        # (deepracer-formats.md §1.1 `progress`; simulator.env._progress_of): such episodes are real experience.
        if not (math.isfinite(exp.progress) and -100.0 <= exp.progress <= 100.0):
            raise InvalidExperience(f"progress {exp.progress} is outside [-100, 100]")
        if not (math.isfinite(exp.elapsed_s) and exp.elapsed_s >= 0.0):
            raise InvalidExperience(f"elapsed_s {exp.elapsed_s} is not a time")
        self._check_episode_fields(exp, steps)

    def _check_episode_fields(self, exp: Experience, steps: int) -> None:
        """The chunk fields of `extra`: a bool, and a whole episode's reward and steps that an
        episode of this run can have (at least this message's, at most max_steps)."""
        final = exp.extra.get(FINAL_CHUNK, True)
        if not isinstance(final, bool):
            raise InvalidExperience(f"extra.{FINAL_CHUNK} {final!r} is not true/false")
        reward = exp.extra.get(EPISODE_REWARD, 0.0)
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward) \
                or abs(reward) > REWARD_LIMIT * self.max_steps:
            raise InvalidExperience(f"extra.{EPISODE_REWARD} {reward!r} is not a finite reward of one episode")
        episode_steps = exp.extra.get(EPISODE_STEPS, steps)
        if isinstance(episode_steps, bool) or not isinstance(episode_steps, int) \
                or not steps <= episode_steps <= self.max_steps:
            raise InvalidExperience(f"extra.{EPISODE_STEPS} {episode_steps!r} is not in [{steps}, {self.max_steps}]")

    def _check_observations(self, exp: Experience, steps: int) -> None:
        if set(exp.observations) != set(self.observations):
            raise InvalidExperience(f"observations {sorted(exp.observations)}, expected {sorted(self.observations)}")
        for sensor, (shape, dtype) in self.observations.items():
            obs = exp.observations[sensor]
            _expect_array(f"obs/{sensor}", obs, (steps, *shape), dtype)
            if obs.dtype.kind == "f" and not np.isfinite(obs).all():
                raise InvalidExperience(f"obs/{sensor} contains NaN or inf")

    def _check_actions(self, actions: np.ndarray, steps: int) -> None:
        if self.action_kind == "discrete":
            _expect_array("actions", actions, (steps,), "int64")
            low, high = int(actions.min()), int(actions.max())
            if low < 0 or high >= self.num_actions:
                bad = low if low < 0 else high
                raise InvalidExperience(f"action index {bad} outside [0, {self.num_actions})")
        else:
            _expect_array("actions", actions, (steps, 2), "float32")
            if not np.isfinite(actions).all():
                raise InvalidExperience("actions contain NaN or inf")


def _expect_array(name: str, arr: np.ndarray, shape: tuple[int, ...], dtype: str) -> None:
    if arr.shape != shape or arr.dtype.name != dtype:
        raise InvalidExperience(f"array {name!r} is {arr.dtype.name}{list(arr.shape)}, expected {dtype}{list(shape)}")
