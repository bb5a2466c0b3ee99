"""A trainer resuming a run checks the latest version's manifest against the network it builds
(real redis-server, local-folder store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import TrainerConfig
from shared.run_files import RunFiles, save_run_files
from shared.service import RunFailed
from shared.store import ModelStore, open_store
from shared.transport import RunTransport
from tests.trainer.test_step_cap import run_files, trainer_for
from trainer.service import TrainerService

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def with_shared_trunk(files: RunFiles, shared: bool) -> RunFiles:
    hp = files.hyperparameters.model_copy(update={"hotlap_shared_trunk": shared})
    return RunFiles(settings=files.settings, metadata=files.metadata, hyperparameters=hp,
                    reward_source=files.reward_source)


def test_resuming_with_another_network_fails_the_run_naming_the_version(
        tmp_path: Path, transport: RunTransport, run_id: str, redis_url: str) -> None:
    files = run_files("DEEP_CONVOLUTIONAL_NETWORK_SHALLOW")
    first = trainer_for(with_shared_trunk(files, True), tmp_path, transport, run_id, redis_url)
    assert first.version == 0 and first.policy.shared_trunk
    # the matching network resumes
    resumed = trainer_for(with_shared_trunk(files, True), tmp_path, transport, run_id, redis_url)
    assert resumed.version == 0
    # same store, same version 0, now with DeepRacer's separate networks: the seed refuses changed
    # files, so this is ip/hyperparameters.json edited in the store by hand
    store = ModelStore(open_store(f"file://{tmp_path / 'store'}"))
    save_run_files(store, with_shared_trunk(files, False))
    config = TrainerConfig(run_id=run_id, redis_url=redis_url, store_url=store.url, device="cpu")
    changed = TrainerService(config, transport, store)
    with pytest.raises(RunFailed, match=r"model/0 was trained with another network: shared_trunk True"):
        changed._setup(changed._load_files())
    status = transport.run_state()[0]
    assert status is not None and status.state == "failed" and "shared_trunk" in status.reason
    # a failed run stays failed (issue 7): putting the files back does not resume it
    save_run_files(store, with_shared_trunk(files, True))
    again = TrainerService(config, transport, store)
    with pytest.raises(RunFailed, match="shared_trunk"):
        again._setup(again._load_files())


def test_store_holds_the_architecture_in_every_manifest(tmp_path: Path, transport: RunTransport, run_id: str,
                                                        redis_url: str) -> None:
    trainer_for(run_files("DEEP_CONVOLUTIONAL_NETWORK"), tmp_path, transport, run_id, redis_url)
    manifest = ModelStore(open_store(f"file://{tmp_path / 'store'}")).load_version(0).manifest
    assert manifest["network"] == "DEEP_CONVOLUTIONAL_NETWORK" and manifest["shared_trunk"] is False
    assert manifest["observation_spec"] == {"FRONT_FACING_CAMERA": [120, 160]}


