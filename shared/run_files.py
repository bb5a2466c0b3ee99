"""The run's user files as they sit in the store, read and validated the same way by every process."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import Hyperparameters, ModelMetadata, RunSettings
from shared.store import HYPERPARAMETERS, MODEL_METADATA, REWARD_FUNCTION, TRAINING_PARAMS, ModelStore


@dataclass(frozen=True)
class RunFiles:
    settings: RunSettings
    metadata: ModelMetadata
    hyperparameters: Hyperparameters
    reward_source: str


def load_run_files(store: ModelStore) -> RunFiles:
    """Raises ConfigError naming the file on bad content, StoreError when the store can't be read."""
    return RunFiles(
        settings=RunSettings.parse(store.get_text(TRAINING_PARAMS), f"{store.url}/{TRAINING_PARAMS}"),
        metadata=ModelMetadata.parse(store.get_text(MODEL_METADATA), f"{store.url}/{MODEL_METADATA}"),
        hyperparameters=Hyperparameters.parse(store.get_text(HYPERPARAMETERS), f"{store.url}/{HYPERPARAMETERS}"),
        reward_source=store.get_text(REWARD_FUNCTION),
    )


def save_run_files(store: ModelStore, files: RunFiles) -> None:
    """Seed a run: the reward function and settings first, model metadata last."""
    store.put_text(REWARD_FUNCTION, files.reward_source)
    store.put_text(HYPERPARAMETERS, files.hyperparameters.to_json())
    store.put_text(TRAINING_PARAMS, files.settings.to_yaml())
    store.put_text(MODEL_METADATA, files.metadata.to_json())
