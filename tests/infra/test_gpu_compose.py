"""infra/docker-compose.gpu.yml: `docker compose config` renders the stack with a GPU reserved for
the trainer (and only the trainer), the GPU image and HOTLAP_DEVICE=cuda. Needs the compose CLI
only, no engine; skips without `docker compose` v2 (infra/lib.sh's hl_ensure_compose_v2 installs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _compose_config(*files: str) -> dict:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose v2 is not installed")
    args = [a for f in files for a in ("-f", f)]
    # --env-file /dev/null: the test reads the files' own defaults, not a developer's .env
    result = subprocess.run([docker, "compose", "--env-file", "/dev/null", *args, "config", "--format", "json"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_gpu_override_reserves_a_gpu_for_the_trainer_only():
    base = _compose_config("docker-compose.yml")["services"]
    gpu = _compose_config("docker-compose.yml", "infra/docker-compose.gpu.yml")["services"]
    trainer = gpu["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert trainer["environment"]["HOTLAP_DEVICE"] == "cuda"
    assert trainer["image"] == "hotlap/app-gpu:latest" != base["trainer"]["image"]
    assert trainer["build"]["args"]["TORCH_BUILD"] == "cuda"
    assert trainer["command"] == base["trainer"]["command"]
    # the rest of the trainer's environment is compose's, unchanged
    assert {k: v for k, v in trainer["environment"].items() if k != "HOTLAP_DEVICE"} == \
        {k: v for k, v in base["trainer"]["environment"].items() if k != "HOTLAP_DEVICE"}
    for name in ("simulator", "init"):  # workers and the seed stay on the CPU image
        assert gpu[name]["image"] == base[name]["image"]
        assert "devices" not in gpu[name].get("deploy", {}).get("resources", {}).get("reservations", {})
