"""HOTLAP_DEVICE=cuda without a visible GPU: the trainer stops at once with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hotlap.redis_server import free_port
from trainer.service import DeviceError, resolve_device

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")


def test_cuda_without_gpu_exits_before_any_work(tmp_path: Path):
    # Nothing listens on this Redis port and the store is empty: a trainer that went on to work
    # would wait for Redis forever (retrying) instead of exiting.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HOTLAP_")},
           "HOTLAP_DEVICE": "cuda", "HOTLAP_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "HOTLAP_STORE_URL": f"file://{tmp_path / 'store'}"}
    result = subprocess.run([sys.executable, "-m", "trainer"], env=env, capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trainer: HOTLAP_DEVICE=cuda but no CUDA GPU is visible (torch 2.13.0")
    assert "infra/docker-compose.gpu.yml" in lines[0] and "HOTLAP_DEVICE=cpu" in lines[0]
    assert not (tmp_path / "store").exists()


def test_auto_and_cpu_resolve_without_a_gpu():
    assert resolve_device("auto").type == "cpu"
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match="no CUDA GPU is visible"):
        resolve_device("cuda")
