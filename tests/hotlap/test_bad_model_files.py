"""Bad model files, one case each, in a run on an S3 server over HTTP (moto_server), loaded the two
ways a racer loads another version: `hotlap render/evaluate/export` (hotlap.models.load_model) and
`hotlap train --pretrained` (hotlap.clone.load_pretrained). Each is refused with a message naming
the store, the object and the value; nothing is unpickled. docs/troubleshooting.md lists each case id.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch

from hotlap.clone import load_pretrained
from hotlap.models import load_model
from hotlap.seed import SeedError, UserFiles, prepare_run_files, seed_store
from shared.config import ConfigError, Hyperparameters, RunSettings
from shared.networks import architecture, state_to_bytes
from shared.run_files import RunFiles, build_policy
from shared.store import ModelStore, StoreError, open_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WEIGHTS = "model/1/policy.safetensors"
MANIFEST = "model/1/manifest.json"


class Unpickled:
    """Unpickling this writes a file: the proof that a loader unpickled (ran) what the store held."""

    marker: Path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "unpickled"))  # type: ignore[return-value]


def _pickle_bearing(marker: Path) -> bytes:
    """What `torch.save` writes (a pickle), carrying an object whose unpickling has a side effect."""
    evil = Unpickled()
    evil.marker = marker
    return pickle.dumps({"state_dict": {}, "payload": evil})


def _replace(store: ModelStore, key: str, data: bytes, fix_manifest: bool) -> None:
    store.objects.put(key, data)
    if fix_manifest:  # as if written by the trainer: the checksum matches, the content is still wrong
        from shared.store import sha256

        manifest = json.loads(store.objects.get(MANIFEST))
        manifest["files"]["policy.safetensors"] = sha256(data)
        store.objects.put(MANIFEST, json.dumps(manifest).encode())


def _edit_manifest(store: ModelStore, **changes: object) -> None:
    manifest = json.loads(store.objects.get(MANIFEST))
    store.objects.put(MANIFEST, json.dumps({**manifest, **changes}).encode())


def _other_network_weights(files: RunFiles) -> bytes:
    other = Hyperparameters(hotlap_shared_trunk=not files.hyperparameters.hotlap_shared_trunk)
    return state_to_bytes(build_policy(files.metadata, other))


def _nan_weights(files: RunFiles) -> bytes:
    state = build_policy(files.metadata, files.hyperparameters).state_dict()
    state["value_head.bias"] = torch.tensor([float("nan")])
    return safetensors.torch.save(state)


# case id -> (how the store is spoiled (store, files, tmp_path), what the message says)
MODEL_CASES: dict[str, tuple[Callable[[ModelStore, RunFiles, Path], None], str]] = {
    "model-hash-mismatch": (lambda s, f, t: s.objects.put(WEIGHTS, b"tampered" * 100),
                            f"{WEIGHTS} does not match its manifest sha256: the file's is "),
    "model-missing-weights": (lambda s, f, t: s.objects.delete(WEIGHTS), f"no object {WEIGHTS}"),
    "model-manifest-not-json": (lambda s, f, t: s.objects.put(MANIFEST, b"{version: 1"), f"{MANIFEST} is not JSON"),
    "model-wrong-architecture-manifest": (lambda s, f, t: _edit_manifest(s, network="DEEP_CONVOLUTIONAL_NETWORK_DEEP"),
                                          "model/1 was trained with another network: network "
                                          "'DEEP_CONVOLUTIONAL_NETWORK_DEEP'"),
    "model-wrong-architecture-weights": (lambda s, f, t: _replace(s, WEIGHTS, _other_network_weights(f), True),
                                         "model weights do not match this PolicyNetwork"),
    "model-pickle-bearing-file": (lambda s, f, t: _replace(s, WEIGHTS, _pickle_bearing(t / "unpickled"), True),
                                  "model weights are not a valid safetensors file"),
    "model-nan-weights": (lambda s, f, t: _replace(s, WEIGHTS, _nan_weights(f), True),
                          "value_head.bias: contains NaN"),
}


@pytest.fixture(scope="module")
def run_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFiles, bytes, dict[str, object]]:
    """A run's files, its network's weights and architecture (built once: a camera network is big)."""
    metadata = tmp_path_factory.mktemp("files") / "model_metadata.json"
    metadata.write_text(json.dumps({"action_space": [{"steering_angle": a, "speed": 1.0} for a in (-20, 0, 20)],
                                    "sensor": ["FRONT_FACING_CAMERA"], "version": "5"}))
    files = prepare_run_files(UserFiles(model_metadata=metadata), RunSettings(), max_iterations=2)
    policy = files.build_policy()
    return files, state_to_bytes(policy), architecture(policy)


@pytest.fixture
def published(run_files: tuple[RunFiles, bytes, dict[str, object]], s3_endpoint: str,
              s3_store_url: str) -> tuple[ModelStore, RunFiles]:
    """A seeded run on S3 with version 1 published as the trainer publishes it."""
    files, weights, manifest = run_files
    store = ModelStore(open_store(s3_store_url, s3_endpoint))
    seed_store(store, files)
    store.publish_version(1, weights, dict(manifest))
    return store, files


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_a_bad_model_file_is_refused_by_every_loader_naming_object_and_value(
        published: tuple[ModelStore, RunFiles], s3_endpoint: str, s3_store_url: str, tmp_path: Path,
        case: str) -> None:
    store, files = published
    spoil, expected = MODEL_CASES[case]
    spoil(store, files, tmp_path)
    with pytest.raises((StoreError, ConfigError)) as rendered:  # hotlap render / evaluate / export
        load_model(store, "1")
    with pytest.raises(SeedError) as cloned:  # hotlap train --pretrained <run>@1
        load_pretrained(f"{s3_store_url}@1", files, s3_endpoint)
    for message in (str(rendered.value), str(cloned.value)):
        assert s3_store_url in message and expected in message, message
    assert not (tmp_path / "unpickled").exists()


def test_a_hash_mismatch_names_both_checksums(published: tuple[ModelStore, RunFiles]) -> None:
    from shared.store import sha256

    store, _ = published
    store.objects.put(WEIGHTS, b"tampered")
    stated = json.loads(store.objects.get(MANIFEST))["files"]["policy.safetensors"]
    with pytest.raises(StoreError) as caught:
        load_model(store, "1")
    assert f"the file's is {sha256(b'tampered')}, {MANIFEST} says {stated}" in str(caught.value)


def test_a_missing_version_lists_the_versions_there(published: tuple[ModelStore, RunFiles]) -> None:
    store, _ = published
    with pytest.raises(StoreError, match=r"model version 7 is not in the store.*: 1"):
        load_model(store, "7")
