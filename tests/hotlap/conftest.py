"""A short real training run, shared by the tests of the commands that look at runs.

`hotlap train` as a user runs it — its own redis-server, a trainer and a simulator worker as
processes, a local-folder store — kept as small as it can be: 3 iterations of 4 episodes of at most
100 steps, 2 cars, DeepRacer's default camera model and action space on DeepRacer's smallest
camera network (DEEP_CONVOLUTIONAL_NETWORK_DEEP, 1.1 M parameters: ~13 MB per model version).
About 20 s on a 2-core machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shared.store import LocalStore, S3Store

REPO = Path(__file__).resolve().parents[2]
FIXTURE_RUN_ID = "fixture-run"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's folder (runs/<run-id>, the only run in runs/)."""
    root = tmp_path_factory.mktemp("trained")
    metadata = json.loads((REPO / "hotlap/defaults/model_metadata.json").read_text())
    metadata["neural_network"] = "DEEP_CONVOLUTIONAL_NETWORK_DEEP"
    (root / "model_metadata.json").write_text(json.dumps(metadata))
    result = subprocess.run(
        [sys.executable, "-m", "hotlap", "train", "--max-iterations", "3", "--episodes-per-iteration", "4",
         "--max-steps", "100", "--cars-per-worker", "2", "--model-metadata", str(root / "model_metadata.json"),
         "--runs-dir", str(root / "runs"), "--run-id", FIXTURE_RUN_ID],
        capture_output=True, text=True, timeout=600, cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "runs" / FIXTURE_RUN_ID


def upload_run(run: Path, store: S3Store, skip: tuple[str, ...] = ()) -> None:
    """Copy a run folder's files into an S3 prefix, key for key."""
    store.ensure_bucket()
    for key in LocalStore(run).list():
        if key not in skip:
            store.put(key, (run / key).read_bytes())


@pytest.fixture(scope="session")
def s3_runs(trained_run: Path, s3_endpoint: str) -> str:
    """s3://<bucket>/runs holding the fixture run twice: as it ended, and as if still going (no ip/done)."""
    url = f"s3://hotlap-runs-{uuid.uuid4().hex[:10]}/runs"
    bucket = url.split("/")[2]
    upload_run(trained_run, S3Store(bucket, f"runs/{FIXTURE_RUN_ID}", s3_endpoint))
    upload_run(trained_run, S3Store(bucket, "runs/unfinished", s3_endpoint), skip=("ip/done",))
    return url


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run that a test may write into (evaluation files, indexes)."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns("processes"))
    return copy
