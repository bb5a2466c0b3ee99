"""Seeding a run: validate the user's files up front, then put them in the store.

Missing files fall back to the embedded defaults (hotlap/defaults/), so a run starts with no
input at all. Every problem is reported before anything starts, naming the file and the field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from shared.config import NO_CAMERA_NOTE, ConfigError, Hyperparameters, ModelMetadata, RunSettings
from shared.run_files import RunFiles, new_run_nonce, read_run_nonce, save_run_files, write_run_nonce
from shared.store import ModelStore, ObjectNotFound, S3Store, sha256
from simulator.env import EnvSettings, VectorRacingEnv
from simulator.reward import (
    RewardFunction,
    RewardFunctionError,
    decode_reward_source,
    hang_guard,
    hang_guard_seconds,
    load_reward_function,
)
from simulator.track import Track, TrackError, read_user_track

REWARD_FILE = "reward_function.py"
METADATA_FILE = "model_metadata.json"
HYPERPARAMETERS_FILE = "hyperparameters.json"

log = logging.getLogger(__name__)


class SeedError(ValueError):
    """The user's files can't start a run; the message lists every problem found."""


@dataclass(frozen=True)
class UserFiles:
    reward_function: Path | None = None
    model_metadata: Path | None = None
    hyperparameters: Path | None = None

    @classmethod
    def from_folder(cls, folder: Path | None) -> UserFiles:
        """DeepRacer's custom_files/ folder: whichever of the three files it holds."""
        if folder is None:
            return cls()
        if not folder.is_dir():
            raise SeedError(f"custom files folder {folder} does not exist")

        expected = (REWARD_FILE, METADATA_FILE, HYPERPARAMETERS_FILE)
        not_files = [str(folder / name) for name in expected if (folder / name).exists()
                     and not (folder / name).is_file()]
        if not_files:
            raise SeedError(f"{', '.join(not_files)}: not a file")
        missing = [name for name in expected if not (folder / name).is_file()]
        # A misspelt name would silently train on the default file: say which files are defaults,
        # and name the folder's other .py/.json files (DeepRacer's custom_files holds exactly these three).
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".py", ".json") and p.name not in expected)
        if missing and others:
            log.warning("%s: no %s, so hotlap's default%s used; the folder also holds %s (misspelt?)", folder,
                        " or ".join(missing), " is" if len(missing) == 1 else "s are", ", ".join(others))

        def pick(name: str) -> Path | None:
            path = folder / name
            return path if path.is_file() else None

        return cls(pick(REWARD_FILE), pick(METADATA_FILE), pick(HYPERPARAMETERS_FILE))

    def merged(self, other: UserFiles) -> UserFiles:
        """Files named explicitly (other) win over those found in a folder (self)."""
        return UserFiles(
            other.reward_function or self.reward_function,
            other.model_metadata or self.model_metadata,
            other.hyperparameters or self.hyperparameters,
        )


def _read(path: Path | None, default_name: str) -> tuple[str, str]:
    """(text, name used in messages) of a user file, or of the embedded default.

    The reward function is decoded as Python imports it (a byte-order mark or a coding line works,
    as on DeepRacer); the JSON files as UTF-8, as the simapp's ``json.load`` reads them.
    """
    if path is None:
        text = resources.files("hotlap.defaults").joinpath(default_name).read_text(encoding="utf-8")
        return text, f"{default_name} (hotlap default)"
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SeedError(f"{path}: cannot read: {e.strerror}") from e
    if default_name == REWARD_FILE:
        try:
            return decode_reward_source(data, str(path)), str(path)
        except RewardFunctionError as e:
            raise SeedError(str(e)) from e
    try:
        return data.decode("utf-8"), str(path)
    except UnicodeDecodeError as e:
        raise SeedError(f"{path}: not UTF-8 text: {e}") from e


def _parse(texts: dict[str, tuple[str, str]], settings: RunSettings, track: Track | None,
           problems: list[str]) -> tuple[ModelMetadata | None, Hyperparameters | None, str]:
    """Validate the files that could be read; each problem is appended to ``problems``. The reward
    function is also called once on ``track`` (when it loaded), see :func:`try_reward_function`."""
    metadata = hyperparameters = None
    if METADATA_FILE in texts:
        try:
            metadata = ModelMetadata.parse(*texts[METADATA_FILE])
        except ConfigError as e:
            problems.append(str(e))
    if HYPERPARAMETERS_FILE in texts:
        try:
            hyperparameters = Hyperparameters.parse(*texts[HYPERPARAMETERS_FILE])
        except ConfigError as e:
            problems.append(str(e))
    reward_text = ""
    if REWARD_FILE in texts:
        reward_text, reward_name = texts[REWARD_FILE]
        try:
            reward_function = load_reward_function(reward_text, reward_name,
                                                   time_limit_s=settings.reward_time_limit_s)
            if track is not None:
                try_reward_function(reward_function, track, settings)
        except RewardFunctionError as e:
            problems.append(str(e))
    return metadata, hyperparameters, reward_text


def check_no_camera(source: str, metadata: ModelMetadata, allowed: bool, problems: list[str]) -> None:
    """A lidar-only model: a problem unless ``allowed``, else a warning (both name the file and the sensors)."""
    what = f"{source}: sensor {metadata.sensor} {NO_CAMERA_NOTE}"
    if allowed:
        log.warning("%s", what)
    else:
        problems.append(f"{what}; add a camera, or pass --allow-no-camera (HOTLAP_ALLOW_NO_CAMERA=1) to train "
                        "it anyway")


def try_reward_function(reward_function: RewardFunction, track: Track, settings: RunSettings) -> float:
    """Call the reward function once, as a worker would, on the run's track: one car at its start,
    driving straight at 1 m/s (DeepRacer's console likewise tries a reward function on sample params
    before training; deepracer-formats.md §1.1). A function that raises, returns no finite number in
    [-1e5, 1e5], is slower than the run's limit, never returns, or tries to end the process is
    refused here, before any process starts, instead of failing the run's first episode.

    Returns the reward. Raises :class:`RewardFunctionError` naming the file, the line and the params."""
    env = VectorRacingEnv(track, 1, EnvSettings(sensors=("SECTOR_LIDAR",), reverse=settings.reverse,
                                                start_offset=settings.start_position_offset), reward_function)
    env.reset()
    straight = (np.zeros(1), np.ones(1))
    env.step(*straight)  # DeepRacer's prepare step: no reward call
    with hang_guard(hang_guard_seconds(settings.reward_time_limit_s, 1), reward_function.filename):
        return float(env.step(*straight).reward[0])


def prepare_run_files(files: UserFiles, settings: RunSettings, *, max_iterations: int | None = None,
                      episodes_per_iteration: int | None = None, allow_no_camera: bool = False) -> RunFiles:
    """Read and validate everything; raise one SeedError listing every problem of every file.

    A lidar-only ``model_metadata.json`` (no camera) is refused unless ``allow_no_camera``
    (``--allow-no-camera``), and then trains with a warning: DeepRacer and the car require a camera."""
    problems: list[str] = []
    texts: dict[str, tuple[str, str]] = {}
    for path, default_name in ((files.model_metadata, METADATA_FILE), (files.hyperparameters, HYPERPARAMETERS_FILE),
                               (files.reward_function, REWARD_FILE)):
        try:  # a file that cannot be read is one problem among the others, not the only one reported
            texts[default_name] = _read(path, default_name)
        except SeedError as e:
            problems.append(str(e))
    track: Track | None = None
    track_npy = None
    try:
        track, track_npy = read_user_track(settings.track)
    except TrackError as e:
        problems.append(f"track {settings.track!r}: {e}")
    metadata, hyperparameters, reward_text = _parse(texts, settings, track, problems)
    if metadata is not None and metadata.camera is None:
        check_no_camera(texts[METADATA_FILE][1], metadata, allow_no_camera, problems)
    if problems or metadata is None or hyperparameters is None or track is None:
        raise SeedError("cannot start the run:\n" + "\n".join(problems))
    if track_npy is not None:
        # A track file travels with the run (next to training_params.yaml): workers on other
        # machines read it from the store, not from this machine's path.
        settings = settings.model_copy(update={"track": track.name, "track_file": f"{track.name}.npy",
                                               "track_sha256": sha256(track_npy)})

    # DeepRacer counts term_cond_max_episodes in training iterations; explicit overrides win.
    if episodes_per_iteration is not None:
        hyperparameters = hyperparameters.model_copy(update={"num_episodes_between_training": episodes_per_iteration})
    iterations = max_iterations if max_iterations is not None else hyperparameters.term_cond_max_episodes
    hyperparameters = hyperparameters.model_copy(update={"term_cond_max_episodes": iterations})
    settings = settings.model_copy(update={"max_iterations": iterations})
    return RunFiles(settings=settings, metadata=metadata, hyperparameters=hyperparameters,
                    reward_source=reward_text, track_npy=track_npy)


OVERWRITE_HINT = "--overwrite (HOTLAP_OVERWRITE=1)"


@dataclass(frozen=True)
class SeededRun:
    """What seeding did: `new` (empty prefix), `resumed` (same files: nothing written) or
    `overwritten` (the prefix's earlier run deleted); `nonce` is the run identity in effect."""

    nonce: str
    outcome: Literal["new", "resumed", "overwritten"]


def seed_store(store: ModelStore, files: RunFiles, *, overwrite: bool = False) -> SeededRun:
    """Put a run's files in the store, never silently changing a run that is there.

    An empty prefix gets the files and a new run identity. A prefix holding the same files is a
    resume: nothing is written. A prefix holding a run with other files raises SeedError naming
    each differing file, unless `overwrite`: then every object under the prefix (models, logs,
    markers) is deleted and a new run starts there. DRfC refuses the same way (its -w wipes).
    Raises StoreError when the store can't be read or written."""
    if isinstance(store.objects, S3Store):
        store.objects.ensure_bucket()
    existing = store.objects.list()
    if existing:
        differing = _differing_files(store, files)
        if not differing:
            return SeededRun(_existing_or_new_nonce(store), "resumed")
        if not overwrite:
            raise SeedError(
                f"{store.url} holds a run with different files; seeding would silently change it:\n"
                + "\n".join(f"  - {d}" for d in differing)
                + "\nStart a new run elsewhere (hotlap train --run-id NEW; compose: a new HOTLAP_MODEL_PREFIX "
                  f"in .env), or pass {OVERWRITE_HINT} to delete the run "
                  f"there ({len(existing)} objects: models, logs, metrics) and start a new one.")
        store.objects.delete(existing)
    nonce = new_run_nonce()
    save_run_files(store, files)
    write_run_nonce(store, nonce)  # last: a run without an identity is not startable
    return SeededRun(nonce, "overwritten" if existing else "new")


def _existing_or_new_nonce(store: ModelStore) -> str:
    try:
        return read_run_nonce(store)
    except ConfigError:  # seeded by an older hotlap, or a seed that died before its last write
        nonce = new_run_nonce()
        write_run_nonce(store, nonce)
        return nonce


def _differing_files(store: ModelStore, files: RunFiles) -> list[str]:
    """One line per run file whose stored content differs from `files`, with the changed keys
    of the JSON/YAML ones."""
    differing = []
    for key, wanted in files.objects().items():
        try:
            stored = store.objects.get(key)
        except ObjectNotFound:
            differing.append(f"{key}: missing in the store")
            continue
        if stored != wanted:
            changed = _changed_keys(stored, wanted) if key.endswith((".json", ".yaml")) else []
            differing.append(f"{key}: differs" + (f" ({', '.join(changed)})" if changed else ""))
    return differing


def _changed_keys(stored: bytes, wanted: bytes) -> list[str]:
    try:
        old: Any = yaml.safe_load(stored)  # JSON is YAML
        new: Any = yaml.safe_load(wanted)
    except yaml.YAMLError:
        return []
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new), key=str)
            if old.get(k) != new.get(k)]
