"""The run's user files as they sit in the store, read and validated the same way by every process."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.config import ConfigError, Hyperparameters, ModelMetadata, RunSettings, observation_shapes
from shared.store import (
    HYPERPARAMETERS,
    MODEL_METADATA,
    PRETRAINED_MANIFEST,
    PRETRAINED_WEIGHTS,
    REWARD_FUNCTION,
    RUN_IDENTITY,
    TRAINING_PARAMS,
    ModelStore,
    ObjectNotFound,
    sha256,
)

if TYPE_CHECKING:  # networks imports torch; seeding a run does not need it
    from shared.networks import PolicyNetwork


@dataclass(frozen=True)
class PretrainedModel:
    """A clone's starting point: another run's version, copied into the new run's store by the seed
    (PRETRAINED_WEIGHTS / PRETRAINED_MANIFEST) and published by the trainer as version 0."""

    source: str  # "<run>@<version>", as training_params.yaml's PRETRAINED_MODEL records it
    weights: bytes  # safetensors, as the source version stored them
    manifest: dict[str, Any] = field(default_factory=dict)  # the source version's manifest (sha256 included)


@dataclass(frozen=True)
class RunFiles:
    settings: RunSettings
    metadata: ModelMetadata
    hyperparameters: Hyperparameters
    reward_source: str
    # The bytes of a track given as a .npy file (settings.track_file names it in the store);
    # None for a packaged DeepRacer track.
    track_npy: bytes | None = None
    # Only when seeding a clone (hotlap/clone.py); the trainer reads the copy from the store.
    pretrained: PretrainedModel | None = None
    nonce: str = ""  # the run identity (RUN_IDENTITY); set by load_run_files, written by the seed

    def build_policy(self) -> PolicyNetwork:
        return build_policy(self.metadata, self.hyperparameters)

    def objects(self) -> dict[str, bytes]:
        """The store objects these files are saved as, key -> bytes, in the order they are
        written: the reward function, the track file and settings first, model metadata last."""
        objects = {REWARD_FUNCTION: self.reward_source.encode(),
                   HYPERPARAMETERS: self.hyperparameters.to_json().encode()}
        if self.track_npy is not None:
            if self.settings.track_file is None:
                raise ValueError("RunFiles.track_npy is set but settings.track_file names no key for it")
            objects[self.settings.track_file] = self.track_npy
        if self.pretrained is not None:
            objects[PRETRAINED_WEIGHTS] = self.pretrained.weights
            objects[PRETRAINED_MANIFEST] = json.dumps(self.pretrained.manifest, indent=2).encode()
        objects[TRAINING_PARAMS] = self.settings.to_yaml().encode()
        objects[MODEL_METADATA] = self.metadata.to_json().encode()
        return objects


def build_policy(metadata: ModelMetadata, hyperparameters: Hyperparameters) -> PolicyNetwork:
    """The run's network, built the same way by the trainer, every worker and ``hotlap render``:
    sensors and stacking from the files, DeepRacer's separate policy/value networks unless
    ``hotlap_shared_trunk`` is set."""
    from shared.networks import PolicyNetwork

    return PolicyNetwork(observation_shapes(metadata.sensor, hyperparameters.stack_size), metadata.neural_network,
                         metadata.action_spec(), shared_trunk=hyperparameters.hotlap_shared_trunk)


def load_run_files(store: ModelStore) -> RunFiles:
    """Raises ConfigError naming the file on bad content or a missing run identity, StoreError
    when the store can't be read."""
    settings = RunSettings.parse(store.get_text(TRAINING_PARAMS), f"{store.url}/{TRAINING_PARAMS}")
    return RunFiles(
        settings=settings,
        metadata=ModelMetadata.parse(store.get_text(MODEL_METADATA), f"{store.url}/{MODEL_METADATA}"),
        hyperparameters=Hyperparameters.parse(store.get_text(HYPERPARAMETERS), f"{store.url}/{HYPERPARAMETERS}"),
        reward_source=store.get_text(REWARD_FUNCTION),
        track_npy=_stored_track(store, settings),
        nonce=read_run_nonce(store),
    )


def _stored_track(store: ModelStore, settings: RunSettings) -> bytes | None:
    """The run's track file, checked against the sha256 recorded in training_params.yaml."""
    key = settings.track_file
    if key is None:
        return None
    where = f"{store.url}/{key}"
    try:
        data = store.objects.get(key)
    except ObjectNotFound as e:
        raise ConfigError(where, [f"the track file named by {TRAINING_PARAMS} (TRACK_FILE) is missing"]) from e
    if settings.track_sha256 is not None and sha256(data) != settings.track_sha256:
        raise ConfigError(where, [f"sha256 {sha256(data)} differs from TRACK_SHA256 {settings.track_sha256} "
                                  f"in {TRAINING_PARAMS}"])
    return data


def save_run_files(store: ModelStore, files: RunFiles) -> None:
    """Seed a run: the reward function, the track file and settings first, model metadata last."""
    for key, data in files.objects().items():
        store.objects.put(key, data)


def new_run_nonce() -> str:
    """A fresh run identity: 48 random bits, hex (a new run never meets an earlier run's keys)."""
    return secrets.token_hex(6)


def write_run_nonce(store: ModelStore, nonce: str) -> None:
    store.put_text(RUN_IDENTITY, json.dumps({"nonce": nonce}) + "\n")


def read_run_nonce(store: ModelStore) -> str:
    """The run identity the seed wrote. Raises ConfigError when it is missing or malformed."""
    source = f"{store.url}/{RUN_IDENTITY}"
    try:
        text = store.get_text(RUN_IDENTITY)
    except ObjectNotFound as e:
        raise ConfigError(source, ["missing: the run was not seeded (run `hotlap seed`, or the compose "
                                   "init service, before the trainer and the simulators)"]) from e
    try:
        nonce = json.loads(text)["nonce"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(source, [f"expected {{\"nonce\": \"<hex>\"}}, got {text[:80]!r}"]) from e
    if not isinstance(nonce, str) or not nonce.isalnum() or len(nonce) > 32:
        raise ConfigError(source, [f"nonce: expected 1-32 letters or digits, got {nonce!r}"])
    return nonce
