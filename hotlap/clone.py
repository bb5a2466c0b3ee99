"""Clone: start a run from another run's weights, as DeepRacer's clone does.

DeepRacer's clone (console, DRfC ``DR_LOCAL_S3_PRETRAINED*``; deepracer-formats.md §3.1: the trainer
gets ``pretrained_s3_bucket/prefix/checkpoint``) keeps the sensors and the network and lets the user
change the reward function, hyperparameters and track. hotlap does the same: ``hotlap train
--pretrained RUN[@VERSION]`` (compose: ``HOTLAP_PRETRAINED``) checks that the new run builds the
same network, copies the source version's weights into the new run's store, and the trainer publishes
them as version 0 (its manifest names the source).
"""

from __future__ import annotations

import re

from hotlap.seed import SeedError
from shared.config import ConfigError, Hyperparameters, ModelMetadata
from shared.run_files import PretrainedModel, RunFiles
from shared.store import HYPERPARAMETERS, MODEL_METADATA, StoreError

_VERSION = re.compile(r"\d+|best|last")


def parse_spec(spec: str) -> tuple[str, str]:
    """``RUN[@VERSION]`` -> (RUN, VERSION); VERSION is a number, ``best`` or ``last`` (the default)."""
    run, at, version = spec.rpartition("@")
    if at and run and _VERSION.fullmatch(version):
        return run, version
    return spec, "last"


def network_differences(source: tuple[ModelMetadata, Hyperparameters],
                        target: tuple[ModelMetadata, Hyperparameters]) -> list[str]:
    """What keeps a source model's weights from loading into the target run, each naming both values.

    Sensors, network, action space type and size, stacking and the shared trunk shape the network;
    action values, the reward function, the track and the other hyperparameters may change."""
    def shape(files: tuple[ModelMetadata, Hyperparameters]) -> dict[str, object]:
        metadata, hp = files
        spec = metadata.action_spec()
        return {"sensor": sorted(metadata.sensor), "neural_network": metadata.neural_network,
                "action_space_type": metadata.action_space_type, "number of actions": spec.num_actions,
                "stack_size": hp.stack_size, "hotlap_shared_trunk": hp.hotlap_shared_trunk}

    was, now = shape(source), shape(target)
    return [f"{key}: the pretrained model has {was[key]!r}, this run {now[key]!r}"
            for key in was if was[key] != now[key]]


def load_pretrained(spec: str, files: RunFiles, s3_endpoint_url: str | None) -> PretrainedModel:
    """The source version's weights and manifest, after checking the new run builds the same network.
    Raises SeedError naming the source, the version and every difference."""
    from hotlap.models import open_run, resolve_version
    from shared.networks import ModelFormatError, check_architecture, load_state_from_bytes

    run, version_spec = parse_spec(spec)
    try:
        store = open_run(run, s3_endpoint_url)
        version = resolve_version(store, version_spec)  # hotlap evaluate's: best, last or a number
        source_files = (ModelMetadata.parse(store.get_text(MODEL_METADATA), f"{store.url}/{MODEL_METADATA}"),
                        Hyperparameters.parse(store.get_text(HYPERPARAMETERS), f"{store.url}/{HYPERPARAMETERS}"))
        model = store.load_version(version)
    except (StoreError, ConfigError) as e:
        raise SeedError(f"cannot clone {spec}: {e}") from e
    where = f"{store.url}/model/{version}"
    differences = network_differences(source_files, (files.metadata, files.hyperparameters))
    if differences:
        raise SeedError(f"cannot clone {where}: a clone needs the same sensors and network "
                        f"(the reward function, hyperparameters, track and action values may change):\n"
                        + "\n".join(f"  - {d}" for d in differences))
    policy = files.build_policy()
    try:
        check_architecture(policy, model.manifest, where)
        load_state_from_bytes(policy, model.weights)
    except (ModelFormatError, RuntimeError, ValueError) as e:
        raise SeedError(f"cannot clone {where}: {e}") from e
    return PretrainedModel(source=f"{store.url.split(' at ')[0]}@{version}", weights=model.weights,
                           manifest=model.manifest)


def with_pretrained(files: RunFiles, spec: str, s3_endpoint_url: str | None) -> RunFiles:
    """``files`` seeded as a clone of ``spec`` (training_params.yaml records PRETRAINED_MODEL)."""
    from dataclasses import replace

    pretrained = load_pretrained(spec, files, s3_endpoint_url)
    settings = files.settings.model_copy(update={"pretrained": pretrained.source})
    return replace(files, settings=settings, pretrained=pretrained)
