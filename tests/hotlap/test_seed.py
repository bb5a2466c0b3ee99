"""Seeding never silently changes a run (issue 7 item 2): the same files resume as a no-op, other
files are refused with the differing files and the option that overwrites; `--overwrite` deletes
the earlier run and starts a new one with a new run identity. Against the S3 test server (moto
over HTTP) with `hotlap seed`, and against `hotlap train`'s local folder store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared.store import ModelStore, open_store

REPO = Path(__file__).resolve().parents[2]
REWARD = "def reward_function(params):\n    return 1.0\n"
OTHER_REWARD = "def reward_function(params):\n    return 0.5\n"


def hotlap(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotlap", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=env)


def seed_env(store_url: str, s3_endpoint: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLAP_")}
    env.update(HOTLAP_STORE_URL=store_url, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_DEFAULT_REGION="us-east-1", **extra)
    if s3_endpoint:
        env["HOTLAP_S3_ENDPOINT_URL"] = s3_endpoint
    return env


def custom_files(folder: Path, reward: str, **hyperparameters: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reward_function.py").write_text(reward)
    (folder / "hyperparameters.json").write_text(json.dumps({"num_episodes_between_training": 4, **hyperparameters}))
    return folder


def nonce(store: ModelStore) -> str:
    return str(json.loads(store.get_text("ip/run.json"))["nonce"])


def test_seed_onto_an_s3_prefix_resumes_same_files_and_refuses_others(
        tmp_path: Path, s3_endpoint: str, s3_store_url: str):
    store = ModelStore(open_store(s3_store_url, s3_endpoint))
    env = seed_env(s3_store_url, s3_endpoint)
    first = custom_files(tmp_path / "first", REWARD)
    result = hotlap("seed", "--custom-files", str(first), "--track", "Oval_track", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_nonce = nonce(store)
    store.put_text("model/0/manifest.json", "{}")  # the run has started: a model version is there

    again = hotlap("seed", "--custom-files", str(first), "--track", "Oval_track", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "same files: resuming" in again.stdout
    assert nonce(store) == run_nonce  # same run: same identity, same Redis keys
    assert store.objects.exists("model/0/manifest.json")

    second = custom_files(tmp_path / "second", OTHER_REWARD, lr=0.001)
    refused = hotlap("seed", "--custom-files", str(second), "--track", "Oval_track", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "reward_function.py: differs" in refused.stderr
    assert "ip/hyperparameters.json: differs (lr: 0.0003 -> 0.001)" in refused.stderr
    assert "training_params.yaml" not in refused.stderr and "model_metadata.json" not in refused.stderr
    assert "--overwrite (HOTLAP_OVERWRITE=1)" in refused.stderr
    assert store.get_text("reward_function.py") == REWARD  # nothing changed
    assert nonce(store) == run_nonce

    track = hotlap("seed", "--custom-files", str(first), "--track", "reInvent2019_track", env=env, cwd=tmp_path)
    assert track.returncode == 2
    assert "training_params.yaml: differs (WORLD_NAME: 'Oval_track' -> 'reInvent2019_track')" in track.stderr

    overwritten = hotlap("seed", "--custom-files", str(second), "--track", "Oval_track",
                         env={**env, "HOTLAP_OVERWRITE": "1"}, cwd=tmp_path)
    assert overwritten.returncode == 0, overwritten.stderr
    assert "deleted the earlier run" in overwritten.stdout
    assert store.get_text("reward_function.py") == OTHER_REWARD
    assert nonce(store) != run_nonce  # a new run: new Redis keys
    assert not store.objects.exists("model/0/manifest.json")  # the earlier run's model is gone


def test_hotlap_train_refuses_a_local_run_folder_holding_other_files(tmp_path: Path):
    """`hotlap train --run-id X` onto an existing run folder: other files are refused before
    anything starts; --overwrite replaces the run."""
    runs = tmp_path / "runs"
    store_url = f"file://{runs / 'again'}"
    store = ModelStore(open_store(store_url))
    seeded = hotlap("seed", "--custom-files", str(custom_files(tmp_path / "first", REWARD)),
                    env=seed_env(store_url), cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    run_nonce = nonce(store)

    other = tmp_path / "other_reward.py"
    other.write_text(OTHER_REWARD)
    env = seed_env(store_url)
    del env["HOTLAP_STORE_URL"]
    refused = hotlap("train", "--run-id", "again", "--runs-dir", str(runs), "--custom-files",
                     str(tmp_path / "first"), "--reward-function", str(other), env=env, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"file://{runs / 'again'} holds a run with different files" in refused.stderr
    assert "reward_function.py: differs" in refused.stderr and "--overwrite" in refused.stderr
    assert not (runs / "again" / "logs").exists()  # no process started
    assert store.get_text("reward_function.py") == REWARD and nonce(store) == run_nonce
