"""A trained model from a run's store, for the commands that use one (`evaluate`, `export`).

A run is named as every hotlap command names it: a store URL (``file:///…``, ``s3://bucket/prefix``)
or a local run folder. A version is ``last`` (``model/latest.json``), ``best`` (the
``best_checkpoint`` of ``model/deepracer_checkpoints.json``, deepracer-formats.md §4.2) or a number.
The policy is built from the run's own ``model_metadata.json`` and ``hyperparameters.json``, the way
its workers build it, and its weights are checked against the version's manifest sha256.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.run_files import RunFiles, load_run_files
from shared.store import CHECKPOINTS_INDEX, ModelStore, ObjectNotFound, StoreError

if TYPE_CHECKING:  # torch is imported only when a policy is loaded
    from shared.networks import PolicyNetwork
    from simulator.track import Track

VERSION_CHOICES_HELP = "best (model/deepracer_checkpoints.json), last (model/latest.json) or a version number"
# DeepRacer names checkpoints "<N>_Step-<M>.ckpt" (§4.2); hotlap's trainer writes "model/<N>".
_CHECKPOINT_NAME = re.compile(r"^(?:model/)?(\d+)(?:_Step-\d+\.ckpt)?/?$")


def open_run(run: str, s3_endpoint_url: str | None = None) -> ModelStore:
    """The store of a run given as a run folder or a store URL (hotlap.runs.open_run). Raises StoreError."""
    from hotlap.runs import open_run as open_named_run

    return open_named_run(run, s3_endpoint_url)[0]


def resolve_version(store: ModelStore, spec: str) -> int:
    """``best``, ``last`` or a number -> a published version number.

    Raises StoreError naming the store and file when the version does not exist or the
    checkpoint index is missing or malformed.
    """
    text = spec.strip().lower()
    if text in ("last", "latest"):
        latest = store.latest_version()
        if latest is None:
            raise StoreError(f"{store.url}: no model version published yet")
        return latest
    if text == "best":
        return _best_version(store)
    if not text.isdigit():
        raise StoreError(f"--version {spec!r}: expected {VERSION_CHOICES_HELP}")
    version = int(text)
    if version not in store.list_versions():
        raise StoreError(f"{store.url}: model version {version} is not in the store "
                         f"(published: {_listed(store.list_versions())})")
    return version


def _best_version(store: ModelStore) -> int:
    where = f"{store.url}/{CHECKPOINTS_INDEX}"
    try:
        index = json.loads(store.get_text(CHECKPOINTS_INDEX))
    except ObjectNotFound as e:
        raise StoreError(f"{where}: missing, so there is no best checkpoint yet (use --version last or N)") from e
    except json.JSONDecodeError as e:
        raise StoreError(f"{where}: not JSON ({e.msg} at line {e.lineno})") from e
    best = index.get("best_checkpoint") if isinstance(index, dict) else None
    name = best.get("name") if isinstance(best, dict) else None
    match = _CHECKPOINT_NAME.match(name) if isinstance(name, str) else None
    if match is None:
        raise StoreError(f"{where}: best_checkpoint.name {name!r} names no model version "
                         "(expected 'model/<N>' or '<N>_Step-<M>.ckpt')")
    version = int(match.group(1))
    if version not in store.list_versions():
        raise StoreError(f"{where}: best_checkpoint {name!r} is not in the store "
                         f"(published: {_listed(store.list_versions())})")
    return version


def _listed(versions: list[int]) -> str:
    if not versions:
        return "none"
    return ", ".join(map(str, versions)) if len(versions) <= 6 else f"{versions[0]}..{versions[-1]}"


@dataclass(frozen=True)
class TrainedModel:
    """One published version of a run, ready to act: ``policy.act(obs, deterministic=True)``."""

    store: ModelStore
    files: RunFiles
    version: int
    policy: PolicyNetwork

    @property
    def sensors(self) -> tuple[str, ...]:
        return tuple(self.files.metadata.sensor)

    @property
    def stack_size(self) -> int:
        return self.files.hyperparameters.stack_size

    def run_track(self) -> Track:
        """The track the run trained on (a track file stored with the run included). Raises TrackError."""
        from simulator.track import load_run_track

        settings = self.files.settings
        return load_run_track(settings.track, self.files.track_npy, f"{self.store.url}/{settings.track_file}")


def load_model(store: ModelStore, version_spec: str = "last") -> TrainedModel:
    """Load a version (``best``/``last``/N) of the run in ``store`` as its workers would.

    Raises StoreError (missing version, bad checksum, a version trained with another network or
    weights that do not fit it) and ConfigError (bad run files).
    """
    from shared.networks import ModelFormatError, check_architecture, load_state_from_bytes

    files = load_run_files(store)
    version = resolve_version(store, version_spec)
    policy = files.build_policy()
    model = store.load_version(version)
    source = f"{store.url}/model/{version}"
    try:
        check_architecture(policy, model.manifest, source)
        load_state_from_bytes(policy, model.weights)
    except ModelFormatError as e:
        raise StoreError(f"{source}: {e}" if source not in str(e) else str(e)) from e
    policy.eval()
    return TrainedModel(store, files, version, policy)
