"""The GPU trainer's image and compose override.

- infra/Dockerfile's TORCH_BUILD guard (run here on the venv's CPU torch: the image build cannot
  run here, and a CUDA build of torch is gigabytes): `cpu` passes, `cuda` fails with one line.
- infra/docker-compose.gpu.yml: `docker compose config` renders the stack with a GPU reserved for
  the trainer (and only the trainer), the GPU image and HOTLAP_DEVICE=cuda. Needs the compose CLI
  only, no engine; skips without `docker compose` v2 (infra/lib.sh's hl_ensure_compose_v2 installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _torch_build_guard() -> str:
    """The `python -c` program infra/Dockerfile runs after installing torch (continuation lines joined)."""
    dockerfile = (REPO / "infra" / "Dockerfile").read_text().replace("\\\n", "")
    match = re.search(r'python -c "(import sys, torch;[^"]*)" "\$TORCH_BUILD"', dockerfile)
    assert match, "infra/Dockerfile no longer checks torch's build against TORCH_BUILD"
    return match.group(1)


@pytest.mark.skipif(torch.version.cuda is not None, reason="the venv holds a CUDA build of torch")
def test_dockerfile_refuses_a_torch_build_other_than_asked():
    guard = _torch_build_guard()
    cpu = subprocess.run([sys.executable, "-c", guard, "cpu"], capture_output=True, text=True, timeout=120)
    assert cpu.returncode == 0, cpu.stderr
    assert cpu.stdout.strip() == f"torch {torch.__version__} cpu"
    cuda = subprocess.run([sys.executable, "-c", guard, "cuda"], capture_output=True, text=True, timeout=120)
    assert cuda.returncode == 1
    assert cuda.stderr.strip() == f"torch {torch.__version__} is a cpu build; TORCH_BUILD=cuda"


def _compose_config(*files: str) -> dict:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose v2 is not installed")
    args = [a for f in files for a in ("-f", f)]
    # An env file of the required secrets only: the test reads the files' own defaults, not a
    # developer's .env (compose refuses to render the stack without the secrets, docs/security.md)
    secrets = ("REDIS_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "HOTLAP_S3_ACCESS_KEY",
               "HOTLAP_S3_SECRET_KEY")
    with tempfile.NamedTemporaryFile("w", suffix=".env") as env_file:
        env_file.write("".join(f"{name}=test-{name.lower()}\n" for name in secrets))
        env_file.flush()
        result = subprocess.run([docker, "compose", "--env-file", env_file.name, *args, "config", "--format", "json"],
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
    assert trainer["image"] == "hotlap/app-gpu:0.1.0" != base["trainer"]["image"]
    assert trainer["build"]["args"]["TORCH_BUILD"] == "cuda"
    assert Path(trainer["build"]["context"]) == REPO  # paths resolve from the project, not infra/
    assert trainer["command"] == base["trainer"]["command"]
    # the rest of the trainer's environment is compose's, unchanged
    assert {k: v for k, v in trainer["environment"].items() if k != "HOTLAP_DEVICE"} == \
        {k: v for k, v in base["trainer"]["environment"].items() if k != "HOTLAP_DEVICE"}
    for name in ("simulator", "init"):  # workers and the seed stay on the CPU image
        assert gpu[name]["image"] == base[name]["image"]
        assert "devices" not in gpu[name].get("deploy", {}).get("resources", {}).get("reservations", {})
