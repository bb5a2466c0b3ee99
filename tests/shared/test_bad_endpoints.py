"""Wrong server settings, one case each, as the processes a racer starts (`python -m trainer`,
`python -m simulator`, `hotlap train`, `hotlap evaluate`): each exits non-zero within the give-up time
with one message naming the variable or the server and the bad value, passwords hidden, and no
traceback. Wrong credentials, a missing bucket, a wrong Redis password and Redis gone mid-run are
tests/e2e/test_server_errors.py (slow); docs/troubleshooting.md lists every case id.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hotlap.redis_server import free_port
from hotlap.seed import seed_store
from shared.store import ModelStore, open_store
from tests.e2e.test_pipeline import tiny_run_files

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-pw"
GIVE_UP = {"HOTLAP_RETRY_GIVE_UP_S": "2"}

# case id -> (command, environment ({store}: a seeded file store, {port}: a closed port), what stderr/stdout says)
ENDPOINT_CASES: dict[str, tuple[list[str], dict[str, str], str]] = {
    "endpoint-store-url-scheme": (["-m", "trainer"], {"HOTLAP_STORE_URL": "ftp://models/run"},
                                  "HOTLAP_STORE_URL: expected s3://bucket/prefix, file:///path or an absolute path, "
                                  "got 'ftp://models/run'"),
    "endpoint-store-url-no-bucket": (["-m", "simulator"], {"HOTLAP_STORE_URL": "s3:///run"},
                                     "HOTLAP_STORE_URL: expected s3://bucket/prefix, got 's3:///run', which names "
                                     "no bucket"),
    "endpoint-redis-url-port": (["-m", "trainer"], {"HOTLAP_STORE_URL": "{store}",
                                                    "HOTLAP_REDIS_URL": f"redis://:{SECRET}@redis:port/0"},
                                "HOTLAP_REDIS_URL: Port could not be cast to integer value as 'port' in "
                                "'redis://***@redis:port/0'"),
    "endpoint-redis-url-scheme": (["-m", "simulator"], {"HOTLAP_STORE_URL": "{store}",
                                                        "HOTLAP_REDIS_URL": f"http://:{SECRET}@redis:6379"},
                                  "HOTLAP_REDIS_URL: expected redis://[:password@]host:port/db, got "
                                  "'http://***@redis:6379'"),
    "endpoint-s3-endpoint-not-a-url": (["-m", "trainer"], {"HOTLAP_STORE_URL": "s3://models/run",
                                                           "HOTLAP_S3_ENDPOINT_URL": "minio:9000"},
                                       "HOTLAP_S3_ENDPOINT_URL: expected the S3 server as http(s)://host:port, "
                                       "e.g. http://minio:9000, got 'minio:9000'"),
    "endpoint-evaluate-s3-endpoint-not-a-url": (["-m", "hotlap", "evaluate", "s3://models/run",
                                                 "--s3-endpoint-url", "minio:9000"], {},
                                                "hotlap evaluate: s3://models/run at minio:9000: the S3 endpoint "
                                                "'minio:9000' is not a URL; expected http(s)://host:port"),
    "endpoint-train-redis-url": (["-m", "hotlap", "train", "--redis-url", f"http://:{SECRET}@redis:6379",
                                  "--max-iterations", "1"], {},
                                 "hotlap train settings (--run-id, --store, --s3-endpoint-url, --redis-url) is "
                                 "invalid (1 problem(s)):\n  - HOTLAP_REDIS_URL: expected "
                                 "redis://[:password@]host:port/db, got 'http://***@redis:6379'"),
    "endpoint-s3-unreachable": (["-m", "trainer"], {"HOTLAP_STORE_URL": "s3://models/run",
                                                    "HOTLAP_S3_ENDPOINT_URL": "http://127.0.0.1:{port}", **GIVE_UP},
                                "s3://models/run at http://127.0.0.1:{port}: cannot read ip/run.json: Could not "
                                "connect to the endpoint URL"),
    "endpoint-redis-unreachable": (["-m", "simulator"], {"HOTLAP_STORE_URL": "{store}", **GIVE_UP,
                                                         "HOTLAP_REDIS_URL": f"redis://:{SECRET}@127.0.0.1:{{port}}/0"},
                                   "redis://***@127.0.0.1:{port}/0"),
}


@pytest.mark.parametrize("case", sorted(ENDPOINT_CASES))
def test_a_wrong_endpoint_fails_at_once_with_one_message_naming_it(tmp_path: Path, case: str) -> None:
    args, env_template, expected = ENDPOINT_CASES[case]
    store = f"file://{tmp_path / 'store'}"
    seed_store(ModelStore(open_store(store)), tiny_run_files())
    port = str(free_port())
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOTLAP_RUN_ID": "endpoints", "HOTLAP_SIM_TRACE_LOG": "0",
           "AWS_ACCESS_KEY_ID": "hotlap-test", "AWS_SECRET_ACCESS_KEY": "hotlap-test-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("HOTLAP_S3_ENDPOINT_URL", None)
    env.update({key: value.format(store=store, port=port) for key, value in env_template.items()})
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, env=env,
                            cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert expected.format(port=port) in output, output[-3000:]
    assert "Traceback" not in output and SECRET not in output, output[-3000:]
