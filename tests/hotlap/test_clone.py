"""Clone (`--pretrained RUN[@VERSION]`, HOTLAP_PRETRAINED): a new run starts from another run's
weights, as DeepRacer's clone does; same sensors and network, new reward and hyperparameters
(real redis-server; local-folder and S3-over-HTTP stores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hotlap.cli import main
from hotlap.clone import parse_spec, with_pretrained
from hotlap.seed import SeedError, seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings, TrainerConfig
from shared.networks import architecture, load_state_from_bytes, state_to_bytes
from shared.run_files import RunFiles, load_run_files
from shared.store import CHECKPOINTS_INDEX, ModelStore, open_store
from shared.transport import RunTransport
from trainer.service import TrainerService

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACTIONS = [{"steering_angle": -15, "speed": 1.0}, {"steering_angle": 15, "speed": 2.0}]


def files(sensor: str = "FRONT_FACING_CAMERA", network: str = "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
          reward: str = "def reward_function(params):\n    return 1.0\n", lr: float = 3e-4) -> RunFiles:
    metadata = {"action_space": ACTIONS, "sensor": [sensor], "neural_network": network}
    return RunFiles(settings=RunSettings(max_iterations=2), metadata=ModelMetadata.parse(json.dumps(metadata)),
                    hyperparameters=Hyperparameters(lr=lr, term_cond_max_episodes=2), reward_source=reward)


def source_run(store: ModelStore, versions: int = 3, best: int = 1) -> list[dict[str, torch.Tensor]]:
    """A run with `versions` published versions (distinct weights, as the trainer writes them) and
    model/deepracer_checkpoints.json naming `best`; returns each version's tensors."""
    run_files = files()
    seed_store(store, run_files)
    weights = []
    for version in range(versions):
        torch.manual_seed(100 + version)
        network = run_files.build_policy()
        store.publish_version(version, state_to_bytes(network), architecture(network))
        weights.append({k: v.clone() for k, v in network.state_dict().items()})
    store.put_text(CHECKPOINTS_INDEX, json.dumps({
        "best_checkpoint": {"name": f"model/{best}", "avg_eval_metric": 90.0, "time_stamp": 1.0},
        "last_checkpoint": {"name": f"model/{versions - 1}", "avg_eval_metric": 10.0, "time_stamp": 2.0}}))
    return weights


def start_trainer(store_url: str, transport: RunTransport, run_id: str, redis_url: str,
                  s3_endpoint: str | None = None) -> TrainerService:
    config = TrainerConfig(run_id=run_id, redis_url=redis_url, store_url=store_url, s3_endpoint_url=s3_endpoint,
                           device="cpu")
    trainer = TrainerService(config, transport, ModelStore(open_store(store_url, s3_endpoint)))
    trainer._setup(trainer._load_files())  # publishes version 0
    return trainer


def version_tensors(store: ModelStore, version: int) -> dict[str, torch.Tensor]:
    network = load_run_files(store).build_policy()
    load_state_from_bytes(network, store.load_version(version).weights)
    return network.state_dict()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_spec_parsing() -> None:
    assert parse_spec("hotlap-runs/a") == ("hotlap-runs/a", "last")
    assert parse_spec("s3://bucket/run@12") == ("s3://bucket/run", "12")
    assert parse_spec("/runs/x@best") == ("/runs/x", "best")
    assert parse_spec("/runs/odd@name") == ("/runs/odd@name", "last")


def test_hotlap_seed_clones_a_local_run_and_version_0_is_its_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: RunTransport, run_id: str,
        redis_url: str) -> None:
    source = tmp_path / "source"
    weights = source_run(ModelStore(open_store(f"file://{source}")))
    reward = tmp_path / "reward_function.py"
    reward.write_text("def reward_function(params):\n    return 2.0 * params['speed']\n")
    hp = tmp_path / "hyperparameters.json"
    hp.write_text(json.dumps({"lr": 0.0001, "num_epochs": 3}))
    metadata = tmp_path / "model_metadata.json"
    metadata.write_text(json.dumps({"action_space": ACTIONS, "sensor": ["FRONT_FACING_CAMERA"]}))
    target = tmp_path / "clone"
    monkeypatch.setenv("HOTLAP_STORE_URL", f"file://{target}")
    monkeypatch.setenv("HOTLAP_PRETRAINED", f"{source}@1")  # the compose/seed form
    assert main(["seed", "--reward-function", str(reward), "--hyperparameters", str(hp),
                 "--model-metadata", str(metadata), "--max-iterations", "2"]) == 0

    trainer = start_trainer(f"file://{target}", transport, run_id, redis_url)
    assert trainer.version == 0
    store = ModelStore(open_store(f"file://{target}"))
    assert_same_weights(version_tensors(store, 0), weights[1])
    pretrained = store.load_version(0).manifest["pretrained"]
    assert pretrained["source"] == f"file://{source}@1" and pretrained["version"] == 1
    clone = load_run_files(store)
    assert clone.settings.pretrained == f"file://{source}@1"
    assert clone.hyperparameters.lr == 0.0001 and "2.0 * params" in clone.reward_source  # the new run's own


def test_hotlap_train_option_clones_the_best_version_from_s3(
        tmp_path: Path, s3_endpoint: str, s3_store_url: str, transport: RunTransport, run_id: str,
        redis_url: str) -> None:
    weights = source_run(ModelStore(open_store(s3_store_url, s3_endpoint)), versions=3, best=2)
    run = with_pretrained(files(reward="def reward_function(params):\n    return 0.5\n"), f"{s3_store_url}@best",
                          s3_endpoint)
    target = f"file://{tmp_path / 'clone'}"
    seed_store(ModelStore(open_store(target)), run)
    start_trainer(target, transport, run_id, redis_url)
    store = ModelStore(open_store(target))
    assert_same_weights(version_tensors(store, 0), weights[2])
    assert store.load_version(0).manifest["pretrained"]["source"] == f"{s3_store_url}@2"
    # last: the latest version
    last = with_pretrained(files(), s3_store_url, s3_endpoint)
    assert last.pretrained is not None and last.pretrained.source == f"{s3_store_url}@2"


@pytest.mark.parametrize(("other", "named"), [
    (files(network="DEEP_CONVOLUTIONAL_NETWORK"),
     "neural_network: the pretrained model has 'DEEP_CONVOLUTIONAL_NETWORK_SHALLOW', this run "
     "'DEEP_CONVOLUTIONAL_NETWORK'"),
    (files(sensor="STEREO_CAMERAS"),
     "sensor: the pretrained model has ['FRONT_FACING_CAMERA'], this run ['STEREO_CAMERAS']"),
])
def test_another_network_or_sensor_is_refused_naming_both(tmp_path: Path, other: RunFiles, named: str) -> None:
    source = tmp_path / "source"
    source_run(ModelStore(open_store(f"file://{source}")))
    with pytest.raises(SeedError) as error:
        with_pretrained(other, str(source), None)
    assert named in str(error.value) and f"file://{source}/model/2" in str(error.value)


def test_a_missing_version_is_refused_naming_the_versions(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source_run(ModelStore(open_store(f"file://{source}")))
    with pytest.raises(SeedError, match=r"model version 7 is not in the store \(published: 0, 1, 2\)"):
        with_pretrained(files(), f"{source}@7", None)
    with pytest.raises(SeedError, match="not a hotlap run|no such run folder"):
        with_pretrained(files(), f"{tmp_path / 'nowhere'}@1", None)


def test_hotlap_train_refuses_a_bad_clone_before_starting_anything(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "source"
    source_run(ModelStore(open_store(f"file://{source}")))
    runs = tmp_path / "runs"
    assert main(["train", "--pretrained", f"{source}@9", "--runs-dir", str(runs), "--run-id", "c"]) == 2
    assert "model version 9 is not in the store (published: 0, 1, 2)" in capsys.readouterr().err
    assert not runs.exists()  # nothing seeded, no process started
