"""The docker compose stack, end to end: redis + S3 + init + trainer + 3 simulator replicas.

`test_stack_trains_to_the_last_iteration` brings up docker-compose.yml with
infra/docker-compose.offline.yml (images built locally by infra/build-offline-images.sh), runs a
tiny training run and reads the store through the S3 server's published port, then a second run
with a new model prefix on the same Redis and run id (issue 7 item 1).
`test_a_failing_reward_function_ends_every_container_once` checks that a failed run stops every
app container with no restart loop (item 3). They skip when no
Docker engine, no `docker compose` v2 or no offline image is there, unless
HOTLAP_REQUIRE_COMPOSE=1 (infra/test.sh sets it in CI once the engine and the images are up),
in which case it fails instead. Run it through infra/test.sh, which rebuilds hotlap/app:local
when the sources changed; a bare `pytest` uses whatever image is there.

The other tests check the compose files' shape (pinned images, secrets without defaults,
loopback-only offline ports, torch's source) and need no Docker at all, except
`test_compose_refuses_to_start_without_secrets`, which needs the `docker compose` CLI only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
OFFLINE_FILE = REPO_ROOT / "infra" / "docker-compose.offline.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "infra" / "Dockerfile"
TORCH_REQUIREMENTS = REPO_ROOT / "infra" / "torch-requirements-cpu.txt"
GPU_FILE = REPO_ROOT / "infra" / "docker-compose.gpu.yml"
OFFLINE_IMAGES = ("hotlap/app:local", "hotlap/redis:local", "hotlap/s3:local")
APP_SERVICES = ("init", "trainer", "simulator")
SECRETS = ("REDIS_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "HOTLAP_S3_ACCESS_KEY",
           "HOTLAP_S3_SECRET_KEY")

# The tiny run.
SIMULATORS = 3
MAX_ITERATIONS = 3
EPISODES_PER_ITERATION = 6
MAX_STEPS = 60
BUCKET = "hotlap-compose-test"
PREFIX = "rl-deepracer-sagemaker"
ACCESS_KEY, SECRET_KEY, REGION = "hotlap-test", "hotlap-test-secret", "us-east-1"
REDIS_PASSWORD = uuid.uuid4().hex
EPISODE_HEADER = "iteration,model_version,worker_id,worker_index,episode,steps,reward,progress,status"

TRAINER_TIMEOUT_S = float(os.environ.get("HOTLAP_COMPOSE_TIMEOUT", "360"))
SIMULATOR_EXIT_GRACE_S = 90.0
# The second run (issue 7 item 1) and the failing run (item 3).
SECOND_PREFIX = "second-run"
SECOND_ITERATIONS = 2
NO_REISSUE_STALL_S = "900"  # a run that inherited claimed tickets could never finish in time
FAILURE_EXIT_S = 150.0  # every app container of a failed run has exited by then
RAISING_REWARD = ("def reward_function(params):\n"
                  "    if params['steps'] > 3:\n"
                  "        raise ValueError('broken on purpose')\n"
                  "    return 1.0\n")


# ----------------------------------------------------------------------- the files' shape


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


class _ComposeLoader(yaml.SafeLoader):
    """Reads compose's own tags (!reset, !override) as the plain value they carry."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_ComposeLoader.add_multi_constructor("!", _untagged)


def _load_override(path: Path) -> dict:
    data = yaml.load(path.read_text(), Loader=_ComposeLoader)
    assert isinstance(data, dict)
    return data


def test_compose_file_has_the_services_and_builds_the_app_once() -> None:
    services = _load(COMPOSE_FILE)["services"]
    assert "version" not in _load(COMPOSE_FILE)
    assert {"redis", "minio", "init", "trainer", "simulator"} <= set(services)
    assert "redis:7" in services["redis"]["image"]
    assert "minio/minio" in services["minio"]["image"]
    assert "${REDIS_PASSWORD" in _load(COMPOSE_FILE)["x-hotlap-env"]["HOTLAP_REDIS_URL"]
    for name in ("redis", "minio"):
        assert "healthcheck" in services[name], f"{name} needs a healthcheck for depends_on"
    builders = [name for name, s in services.items() if "build" in s]
    assert builders == ["init"], f"exactly one service builds the app image, got {builders}"
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1, f"init, trainer and simulator must share one image, got {images}"
    for name in ("trainer", "simulator"):
        assert services[name]["pull_policy"] == "never"
        deps = services[name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["init"]["condition"] == "service_completed_successfully"
        assert services[name]["restart"].startswith("on-failure")
    assert services["init"]["depends_on"]["minio-setup"]["condition"] == "service_completed_successfully"
    assert services["minio-setup"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["init"]["command"] == ["python", "-m", "hotlap", "seed"]
    assert services["trainer"]["command"] == ["python", "-m", "trainer"]
    assert services["simulator"]["command"] == ["python", "-m", "simulator"]
    assert any(v.endswith(":/custom_files:ro") for v in services["init"]["volumes"])
    # --scale needs a service without a fixed name or host port.
    assert "container_name" not in services["simulator"] and "ports" not in services["simulator"]


def test_offline_override_swaps_in_local_images_only() -> None:
    base = _load(COMPOSE_FILE)["services"]
    override = _load_override(OFFLINE_FILE)["services"]
    assert set(override) <= set(base), "the override must not add services"
    assert {s["image"] for s in override.values()} == set(OFFLINE_IMAGES)
    assert all(s.get("pull_policy") == "never" for s in override.values())


def _default_images() -> dict[str, str]:
    """Every image a compose file or .env.example names, with the default it falls back to."""
    images = {}
    for path in (COMPOSE_FILE, OFFLINE_FILE, GPU_FILE):
        for name, service in _load_override(path)["services"].items():
            if "image" in service:
                images[f"{path.name}:{name}"] = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", service["image"])
    for key, value in re.findall(r"^(HOTLAP_[A-Z_]*IMAGE)=(.*)$", ENV_EXAMPLE.read_text(), flags=re.M):
        images[f".env.example:{key}"] = value
    for value in re.findall(r"^ARG BASE_IMAGE=(.*)$", DOCKERFILE.read_text(), flags=re.M):
        images["infra/Dockerfile:BASE_IMAGE"] = value
    return images


def test_images_are_pinned() -> None:
    """No `latest`, no floating major tag: each image names one version (issue 7 item 12)."""
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = _default_images()
    assert len(images) >= 10, images
    for where, image in images.items():
        name, _, tag = image.rpartition(":")
        assert name and tag and "/" not in tag, f"{where}: {image} has no tag"
        assert tag != "latest", f"{where}: {image}"
        if name.endswith("/local") or tag == "local":
            continue  # built on this machine by infra/build-offline-images.sh, never pulled
        if name in ("hotlap/app", "hotlap/app-gpu"):
            assert tag == version, f"{where}: the app image is tagged {tag}, the project is {version}"
        else:
            assert re.search(r"\d+\.\d+\.\d+|RELEASE\.\d{4}-", tag), f"{where}: {image} is not a pinned version"


def test_secrets_have_no_defaults() -> None:
    """Compose refuses to start without them (`${VAR:?message}`), .env.example leaves them empty,
    and the services use a bucket-scoped key, never MinIO's root user."""
    text = COMPOSE_FILE.read_text()
    for secret in SECRETS:
        uses = re.findall(r"\$\{" + secret + r"([^A-Z_][^}]*)\}", text)
        assert uses, f"{secret} is not used"
        assert all(u.startswith(":?") for u in uses), f"{secret} has a default or no message: {uses}"
        assert re.search(rf"^{secret}=$", ENV_EXAMPLE.read_text(), flags=re.M), f".env.example sets {secret}"
    app_env = _load(COMPOSE_FILE)["x-hotlap-env"]
    assert "HOTLAP_S3_ACCESS_KEY" in app_env["AWS_ACCESS_KEY_ID"]
    assert "MINIO_ROOT" not in json.dumps(app_env)
    services = _load(COMPOSE_FILE)["services"]
    root_users = sorted(n for n, s in services.items() if "MINIO_ROOT_PASSWORD" in json.dumps(s.get("environment")))
    assert root_users == ["minio", "minio-setup"], root_users
    setup = "\n".join(services["minio-setup"]["command"])
    assert "mc admin user add" in setup and "mc admin policy attach" in setup
    assert "arn:aws:s3:::$$BUCKET/*" in setup and '"Resource": ["arn:aws:s3:::*' not in setup


def test_offline_override_publishes_on_loopback_only() -> None:
    for name, service in _load_override(OFFLINE_FILE)["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"
    assert "ports" not in _load(COMPOSE_FILE)["services"]["redis"]


def test_torch_comes_from_one_pinned_hashed_source() -> None:
    dockerfile = "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.startswith("#"))
    assert "extra-index-url" not in dockerfile
    assert "--require-hashes" in dockerfile and "--index-url $TORCH_INDEX_URL" in dockerfile
    assert "--no-index --find-links /tmp/wheels" in dockerfile
    assert "torch-requirements-$TORCH_BUILD.txt" in dockerfile
    pin = next(d for d in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
               if d.startswith("torch"))
    requirements = TORCH_REQUIREMENTS.read_text()
    version = pin.split("==")[1]
    assert re.search(rf"^torch=={re.escape(version)}\+cpu \\$", requirements, flags=re.M), requirements
    assert re.search(r"--hash=sha256:[0-9a-f]{64}", requirements)


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    """MinIO never runs on default credentials: compose fails asking to set them."""
    _require_compose_cli()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTLAP_", "MINIO_", "REDIS_"))}
    base = {secret: "x" + uuid.uuid4().hex for secret in SECRETS}
    for missing in ("MINIO_ROOT_PASSWORD", "MINIO_ROOT_USER", "REDIS_PASSWORD"):
        env_file = tmp_path / f"without-{missing}.env"
        env_file.write_text("".join(f"{k}={'' if k == missing else v}\n" for k, v in base.items()))
        proc = _run(["docker", "compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
                    env=env, check=False, timeout=60)
        assert proc.returncode != 0, proc.stdout[-500:]
        assert missing in proc.stderr and "set " in proc.stderr and ".env" in proc.stderr, proc.stderr
    env_file = tmp_path / "complete.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in base.items()))
    proc = _run(["docker", "compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
                env=env, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_env_example_documents_every_variable() -> None:
    text = COMPOSE_FILE.read_text() + OFFLINE_FILE.read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    for service in _load(COMPOSE_FILE)["services"].values():  # bare keys: passed through when set
        env = service.get("environment") or {}
        used |= {k for k, v in env.items() if v is None} if isinstance(env, dict) else set()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.M))
    missing = sorted(used - documented)
    assert not missing, f".env.example does not document {missing}"


# ----------------------------------------------------------------------- the running stack


def _unavailable(reason: str) -> None:
    if os.environ.get("HOTLAP_REQUIRE_COMPOSE") == "1":
        pytest.fail(f"{reason} (HOTLAP_REQUIRE_COMPOSE=1, so this fails instead of skipping)")
    pytest.skip(reason)


def _run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 60,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    project: str
    env_file: Path
    s3_port: int
    env: dict[str, str]
    settings: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def up(self, simulators: int, **changes: str) -> None:
        """`up -d` (again, after `changes` to the env file: compose recreates what changed)."""
        self.settings.update(changes)
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.settings.items()))
        t0 = time.monotonic()
        up = self.compose("up", "-d", "--no-build", "--scale", f"simulator={simulators}", timeout=300, check=False)
        self.notes.append(f"`up -d` took {time.monotonic() - t0:.1f}s")
        if up.returncode != 0:
            self.dump_logs()
            raise AssertionError(f"docker compose up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")

    def redis_cli(self, *args: str, auth: bool = True) -> str:
        """redis-cli inside the redis container (with the password from its environment)."""
        prefix = 'REDISCLI_AUTH="$REDIS_PASSWORD" ' if auth else ""
        command = prefix + "redis-cli " + " ".join(f"'{a}'" for a in args)
        return self.compose("exec", "-T", "redis", "sh", "-c", command, timeout=60, check=False).stdout

    def s3(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.s3_port}", aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION,
                            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}))

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["docker", "compose", "-f", str(COMPOSE_FILE), "-f", str(OFFLINE_FILE),
                     "--env-file", str(self.env_file), "-p", self.project, *args],
                    env=self.env, timeout=timeout, check=check)

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-a", "-q", service).stdout
        return [line for line in out.split() if line]

    def inspect(self, container: str) -> dict:
        data = json.loads(_run(["docker", "inspect", container], env=self.env).stdout)
        assert isinstance(data, list) and data
        return dict(data[0])

    def dump_logs(self) -> None:
        """Printed on failure (pytest shows captured output of failing tests)."""
        print(f"\n===== docker compose ps -a ({self.project}) =====")
        print(self.compose("ps", "-a", check=False, timeout=30).stdout)
        logs = self.compose("logs", "--no-color", "--timestamps", "--tail", "300", check=False, timeout=60)
        print(f"===== docker compose logs ({self.project}) =====")
        print(logs.stdout, logs.stderr)
        for note in self.notes:
            print(note)


def _require_compose_cli() -> None:
    if shutil.which("docker") is None:
        _unavailable("no docker CLI on PATH")
    if _run(["docker", "compose", "version"], timeout=30, check=False).returncode != 0:
        _unavailable("`docker compose` (v2) is not installed (infra/test.sh installs it)")


def _require_docker() -> None:
    if shutil.which("docker") is None:
        _unavailable("no docker CLI on PATH")
    try:
        info = _run(["docker", "info"], timeout=30, check=False)
    except subprocess.TimeoutExpired:
        _unavailable("`docker info` timed out")
    if info.returncode != 0:
        _unavailable(f"no Docker engine answers `docker info` (start one: infra/start-dockerd.sh): "
                     f"{info.stderr.strip()[-200:]}")
    if _run(["docker", "compose", "version"], timeout=30, check=False).returncode != 0:
        _unavailable("`docker compose` (v2) is not installed (infra/test.sh installs it)")
    missing = [img for img in OFFLINE_IMAGES
               if _run(["docker", "image", "inspect", img], timeout=30, check=False).returncode != 0]
    if missing:
        _unavailable(f"offline images missing: {', '.join(missing)} (build: bash infra/build-offline-images.sh)")


def _settings(custom_files: Path, s3_port: int, **overrides: str) -> dict[str, str]:
    settings = {
        "HOTLAP_RUN_ID": "compose-test",
        "HOTLAP_BUCKET": BUCKET,
        "HOTLAP_MODEL_PREFIX": PREFIX,
        "REDIS_PASSWORD": REDIS_PASSWORD,
        "MINIO_ROOT_USER": "hotlap-root",
        "MINIO_ROOT_PASSWORD": uuid.uuid4().hex,
        "HOTLAP_S3_ACCESS_KEY": ACCESS_KEY,
        "HOTLAP_S3_SECRET_KEY": SECRET_KEY,
        "HOTLAP_REGION": REGION,
        "HOTLAP_BIND_ADDRESS": "127.0.0.1",
        "HOTLAP_MINIO_API_PORT": str(s3_port),
        "HOTLAP_MINIO_CONSOLE_PORT": str(_free_port()),
        "HOTLAP_CUSTOM_FILES_DIR": str(custom_files),
        "HOTLAP_TRACK": "reInvent2019_track",
        "HOTLAP_MAX_ITERATIONS": str(MAX_ITERATIONS),
        "HOTLAP_EPISODES_PER_ITERATION": str(EPISODES_PER_ITERATION),
        "HOTLAP_MAX_STEPS": str(MAX_STEPS),
        "HOTLAP_CARS_PER_WORKER": "1",
        "HOTLAP_WORKERS": str(SIMULATORS),
        "HOTLAP_DEVICE": "cpu",
        "HOTLAP_SIM_TRACE_LOG": "0",
        "HOTLAP_STALL_TIMEOUT_S": "15",  # the killed worker's episode is re-issued quickly
    }
    return {**settings, **overrides}


@contextmanager
def _stack(reward: str | None = None, simulators: int = SIMULATORS, **overrides: str) -> Iterator[Stack]:
    _require_docker()
    # Only the env file decides: compose lets the shell's variables win over --env-file.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HOTLAP_", "MINIO_", "COMPOSE_", "AWS_", "REDIS_"))}
    workdir = Path(tempfile.mkdtemp(prefix="hotlap-compose-"))
    custom_files = workdir / "custom_files"  # empty: the seed falls back to its embedded defaults
    custom_files.mkdir()
    if reward is not None:
        (custom_files / "reward_function.py").write_text(reward)
        (custom_files / "reward_function.py").chmod(0o644)
    for path in (workdir, custom_files):
        path.chmod(0o755)  # the containers' non-root user reads the bind mount
    s3_port = _free_port()
    settings = _settings(custom_files, s3_port, HOTLAP_WORKERS=str(simulators), **overrides)
    env_file = workdir / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    project = f"hotlaptest{os.getpid()}{uuid.uuid4().hex[:6]}"
    s = Stack(project=project, env_file=env_file, s3_port=s3_port, env=env, settings=settings)
    try:
        s.up(simulators)
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def stack() -> Iterator[Stack]:
    with _stack() as s:
        yield s


def _wait_for_exit(stack: Stack, container: str, timeout: float, *, fail_on_restart: bool) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = stack.inspect(container)
        state = info["State"]
        if fail_on_restart and info.get("RestartCount", 0) > 0:
            raise AssertionError(f"{info['Name']} crashed and was restarted ({info['RestartCount']}x)")
        if state["Status"] == "exited":
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"{info['Name']} still {state['Status']} after {timeout:.0f}s")
        time.sleep(2)


@pytest.mark.compose
@pytest.mark.slow
def test_stack_trains_to_the_last_iteration(stack: Stack) -> None:
    try:
        _check_run(stack)
        _check_redis_requires_the_password(stack)
        _check_second_run_with_a_new_prefix(stack)
    except BaseException:
        stack.dump_logs()
        raise


def _reader(stack: Stack, prefix: str) -> Callable[[str], bytes]:
    s3 = stack.s3()

    def read(key: str) -> bytes:
        body: bytes = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read()
        return body

    return read


def _check_run(stack: Stack) -> None:
    (init,) = stack.containers("init")
    assert stack.inspect(init)["State"]["ExitCode"] == 0, "the init (seed) service failed"
    read = _reader(stack, PREFIX)

    (trainer,) = stack.containers("trainer")
    t0 = time.monotonic()
    victim = _crash_one_simulator_mid_run(stack, trainer, read)

    info = _wait_for_exit(stack, trainer, TRAINER_TIMEOUT_S, fail_on_restart=True)
    stack.notes.append(f"trainer finished {time.monotonic() - t0:.1f}s after `up`")
    assert info["State"]["ExitCode"] == 0, f"trainer exited {info['State']['ExitCode']}"
    if victim is not None:  # restart: on-failure brought the crashed worker back
        assert stack.inspect(victim)["RestartCount"] >= 1, "the killed simulator was not restarted"

    read("ip/done")  # raises NoSuchKey if the run did not finish
    latest = json.loads(read("model/latest.json"))
    assert latest["version"] == MAX_ITERATIONS, latest

    text = read("logs/episodes.csv").decode()
    assert text.splitlines()[0] == EPISODE_HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) >= MAX_ITERATIONS * EPISODES_PER_ITERATION, f"{len(rows)} episode rows"
    assert {int(r["model_version"]) for r in rows} <= set(range(MAX_ITERATIONS + 1))
    csv_hosts = {r["worker_id"].rsplit("-", 1)[0] for r in rows}

    simulators = stack.containers("simulator")
    assert len(simulators) == SIMULATORS
    hostnames = {stack.inspect(c)["Config"]["Hostname"] for c in simulators}
    assert len(hostnames) == SIMULATORS
    assert csv_hosts == hostnames, f"episode rows from {sorted(csv_hosts)}, simulators are {sorted(hostnames)}"

    # The run is done: every worker finishes its episode and exits 0 by itself.
    for c in simulators:
        sim = _wait_for_exit(stack, c, SIMULATOR_EXIT_GRACE_S, fail_on_restart=False)
        assert sim["State"]["ExitCode"] == 0, f"{sim['Name']} exited {sim['State']['ExitCode']}"
    print("\n".join(stack.notes))


def _check_redis_requires_the_password(stack: Stack) -> None:
    """Issue 7 item 12: Redis answers only with the password, and the services used it."""
    assert "NOAUTH" in stack.redis_cli("ping", auth=False)
    assert "PONG" in stack.redis_cli("ping")
    logs = stack.compose("logs", "--no-color", timeout=60).stdout
    assert REDIS_PASSWORD not in logs, "a service logged the Redis password"


def _check_second_run_with_a_new_prefix(stack: Stack) -> None:
    """Issue 7 item 1: a new model prefix on the same Redis and run id is a new run: it inherits
    no `done` status, no claimed tickets, no worker indexes. The stall timeout is longer than the
    wait, so a run that had to wait one could not pass."""
    t0 = time.monotonic()
    stack.up(SIMULATORS, HOTLAP_MODEL_PREFIX=SECOND_PREFIX, HOTLAP_MAX_ITERATIONS=str(SECOND_ITERATIONS),
             HOTLAP_STALL_TIMEOUT_S=NO_REISSUE_STALL_S)
    read = _reader(stack, SECOND_PREFIX)
    (trainer,) = stack.containers("trainer")
    info = _wait_for_exit(stack, trainer, TRAINER_TIMEOUT_S, fail_on_restart=True)
    stack.notes.append(f"second run finished {time.monotonic() - t0:.1f}s after its `up`")
    assert info["State"]["ExitCode"] == 0, f"trainer exited {info['State']['ExitCode']}"
    assert json.loads(read("model/latest.json"))["version"] == SECOND_ITERATIONS
    trainer_log = stack.compose("logs", "--no-color", "trainer", timeout=60).stdout
    assert "reissuing" not in trainer_log, "an iteration of the second run waited a stall timeout"
    rows = list(csv.DictReader(io.StringIO(read("logs/episodes.csv").decode())))
    assert len(rows) == SECOND_ITERATIONS * EPISODES_PER_ITERATION
    indexes = {int(r["worker_index"]) for r in rows}
    assert 0 in indexes and indexes <= set(range(SIMULATORS)), f"worker indexes {sorted(indexes)}"
    json.loads(read("metrics/TrainingMetrics.json"))  # worker 0's file, as DeepRacer names it
    for c in stack.containers("simulator"):
        sim = _wait_for_exit(stack, c, SIMULATOR_EXIT_GRACE_S, fail_on_restart=True)
        assert sim["State"]["ExitCode"] == 0, f"{sim['Name']} exited {sim['State']['ExitCode']}"
    print("\n".join(stack.notes))


@pytest.mark.compose
@pytest.mark.slow
def test_a_failing_reward_function_ends_every_container_once() -> None:
    """Issue 7 item 3: a reward function that raises fails the run; every app container exits
    (0) within a bounded time and is never restarted; the reason is in the status key, the
    store's ip/failed and the trainer's log."""
    with _stack(reward=RAISING_REWARD, simulators=2) as stack:
        try:
            _check_failed_run(stack)
        except BaseException:
            stack.dump_logs()
            raise


def _check_failed_run(stack: Stack) -> None:
    containers = [*stack.containers("trainer"), *stack.containers("simulator")]
    assert len(containers) == 3
    deadline = time.monotonic() + FAILURE_EXIT_S
    for c in containers:
        info = _wait_for_exit(stack, c, max(1.0, deadline - time.monotonic()), fail_on_restart=True)
        assert info["State"]["ExitCode"] == 0, f"{info['Name']} exited {info['State']['ExitCode']}"
    time.sleep(5)  # give a restart policy the time it would take to act
    for c in containers:
        info = stack.inspect(c)
        assert info["RestartCount"] == 0 and info["State"]["Status"] == "exited", \
            f"{info['Name']}: {info['State']['Status']}, restarted {info['RestartCount']}x"

    status_keys = stack.redis_cli("--scan", "--pattern", "hotlap:compose-test:*:status").split()
    assert len(status_keys) == 1, status_keys
    status = stack.redis_cli("hget", status_keys[0], "state").strip()
    reason = stack.redis_cli("hget", status_keys[0], "reason")
    assert status == "failed" and "broken on purpose" in reason and "reward_function.py:3" in reason, reason
    assert "broken on purpose" in _reader(stack, PREFIX)("ip/failed").decode()
    trainer_log = stack.compose("logs", "--no-color", "trainer", timeout=60).stdout
    assert "run failed" in trainer_log and "broken on purpose" in trainer_log


# Kills the worker process of the first simulator container from inside it (same user, so no
# root needed): a crash, not a `docker stop`, so `restart: on-failure` must bring it back.
_KILL_WORKER = (
    'for d in /proc/[0-9]*; do '
    'if tr "\\0" " " < "$d/cmdline" 2>/dev/null | grep -q "^python -m simulator"; '
    'then kill -9 "${d#/proc/}" && echo killed "${d#/proc/}"; fi; done'
)


def _crash_one_simulator_mid_run(stack: Stack, trainer: str, read: Callable[[str], bytes]) -> str | None:
    """Once the trainer has published model version 1, SIGKILL one worker. Returns its container,
    or None (with a note) when the run ended before there was a moment to do it."""
    deadline = time.monotonic() + TRAINER_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            version = int(json.loads(read("model/latest.json"))["version"])
        except Exception:  # noqa: BLE001 - not written yet
            version = -1
        if version >= MAX_ITERATIONS or stack.inspect(trainer)["State"]["Status"] != "running":
            stack.notes.append("the run ended before a simulator could be killed mid-run")
            return None
        if version >= 1:
            victim = stack.containers("simulator")[0]
            out = _run(["docker", "exec", victim, "sh", "-c", _KILL_WORKER], env=stack.env, check=False)
            if "killed" not in out.stdout:
                stack.notes.append(f"no worker process to kill in {victim}: {out.stdout} {out.stderr}")
                return None
            stack.notes.append(f"killed the worker in {victim[:12]} at model version {version}")
            return victim
        time.sleep(0.5)
    return None
