"""infra/k8s/: every overlay renders with `kubectl kustomize`, every object validates against the
Kubernetes API schema (kubernetes-validate, offline), and the deployment keeps its promises: one
trainer replica with Recreate, credentials only from the Secret, non-root, limits everywhere, probes
that run a real `hotlap` command, the images compose runs, and the env contract of
infra/env-contract.yaml — which docker-compose.yml is checked against too, and the code's configs.

Needs kubectl (kustomize is built in). Without it the test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from hotlap.cli import build_parser
from shared.config import ServiceConfig, TrainerConfig, WorkerConfig

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
CONTRACT = yaml.safe_load((REPO / "infra" / "env-contract.yaml").read_text())
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
GPU_COMPOSE = yaml.safe_load((REPO / "infra" / "docker-compose.gpu.yml").read_text())
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
# The oldest Kubernetes the manifests promise to work on, and the newest schema the wheel ships.
SCHEMA_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
# compose service -> role in the contract; Kubernetes container name -> role
COMPOSE_ROLES = {"init": "seed", "trainer": "trainer", "simulator": "simulator"}
K8S_ROLES = {"seed": "seed", "trainer": "trainer", "simulator": "simulator", "wait-for-seed": None}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|AUTH", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"://[^/\s]*@")

KUBECTL = shutil.which("kubectl")


def _kustomize(path: Path) -> list[dict[str, Any]]:
    if KUBECTL is None:
        if os.environ.get("CI") == "true":  # CI must render the manifests, not skip them
            pytest.fail("kubectl is missing: CI must render infra/k8s/ (kubectl has kustomize built in)")
        pytest.skip("kubectl is not installed")
    result = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {path.relative_to(REPO)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


_RENDERED: dict[str, list[dict[str, Any]]] = {}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    name = request.param
    if name not in _RENDERED:
        _RENDERED[name] = _kustomize(K8S / "overlays" / name)
    return name, _RENDERED[name]


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
            for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Job")}


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _app_containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for spec in _pod_specs(objects).values() for c in _containers(spec)
            if c["image"].startswith("hotlap/")]


def _settings(objects: list[dict[str, Any]]) -> dict[str, str]:
    maps = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("hotlap-settings")]
    assert len(maps) == 1
    return maps[0]["data"]


def _compose_default(value: str) -> str:
    """`${VAR:-default}` -> default."""
    match = re.fullmatch(r"\$\{\w+:?-(.*)\}", value)
    assert match, value
    return match.group(1)


# ----------------------------------------------------------------------------- render + schema


def test_base_renders_on_its_own():
    assert {o["kind"] for o in _kustomize(K8S / "base")} >= {"Deployment", "StatefulSet", "Job", "Service"}


def test_every_object_validates_against_the_kubernetes_schema(overlay):
    name, objects = overlay
    for obj in objects:
        for version in SCHEMA_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: "
                            f"{e.message} at {'.'.join(map(str, e.path))}")


# ----------------------------------------------------------------------------- invariants


def test_one_trainer_recreated_and_scalable_simulators(overlay):
    _, objects = overlay
    trainers = [o for o in objects if o["metadata"]["name"] == "trainer"]
    assert [t["kind"] for t in trainers] == ["Deployment"]
    assert trainers[0]["spec"]["replicas"] == 1
    assert trainers[0]["spec"]["strategy"] == {"type": "Recreate"}  # never two trainers, not even in a rollout
    simulator = _one(objects, "Deployment", "simulator")  # kubectl scale deploy/simulator --replicas=N
    assert simulator["spec"]["replicas"] >= 1
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    seed = _one(objects, "Job", "seed")
    assert seed["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "hotlap", "seed"]


def test_seed_reads_the_users_files_from_a_configmap(overlay):
    _, objects = overlay
    spec = _one(objects, "Job", "seed")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    folder = next(e["value"] for e in container["env"] if e["name"] == "HOTLAP_CUSTOM_FILES")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == folder)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    # optional: without the ConfigMap the folder is empty and the embedded defaults are used
    assert volume["configMap"] == {"name": "hotlap-custom-files", "optional": True}


def test_every_pod_is_non_root_with_requests_and_limits(overlay):
    _, objects = overlay
    for where, spec in _pod_specs(objects).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, where
        for c in _containers(spec):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (where, c["name"], kind)


def test_no_credential_outside_the_secret(overlay):
    _, objects = overlay
    assert not [o for o in objects if o["kind"] == "Secret"], "the user creates the Secret; none ships"
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        for key, value in cm.get("data", {}).items():
            assert not SECRET_NAME.search(key), f"ConfigMap {cm['metadata']['name']} holds {key}"
            assert not URL_CREDENTIALS.search(value), f"ConfigMap {cm['metadata']['name']}: {key} has credentials"
    secret_vars = {k for k, v in CONTRACT["shared"].items() if v.get("secret")}
    for spec in _pod_specs(objects).values():
        for c in _containers(spec):
            from_secret = {e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
            for e in c.get("env", []):
                if e["name"] in secret_vars or SECRET_NAME.search(e["name"]):
                    if "value" in e:  # only references to variables that come from the Secret
                        refs = re.findall(r"\$\((\w+)\)", e["value"])
                        assert refs and set(refs) <= from_secret, (c["name"], e["name"], e["value"])
                    else:
                        assert "secretKeyRef" in e["valueFrom"], (c["name"], e["name"])


def test_probes_run_real_health_commands(overlay):
    _, objects = overlay
    parser = build_parser({})
    for name in ("trainer", "simulator"):
        spec = _one(objects, "Deployment", name)["spec"]["template"]["spec"]
        container = next(c for c in spec["containers"] if c["name"] == name)
        for probe in ("startupProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:3] == ["python", "-m", "hotlap"], command
            args = parser.parse_args(command[3:])  # the command exists, with these options
            assert (args.command, args.role) == ("health", name)
    init = _one(objects, "Deployment", "trainer")["spec"]["template"]["spec"]["initContainers"][0]
    args = parser.parse_args(init["command"][3:])
    assert (args.command, args.role) == ("health", "seed") and args.wait > 0


def test_redis_persists_with_password_and_memory_bound(overlay):
    _, objects = overlay
    redis = _one(objects, "StatefulSet", "redis")
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    args = " ".join(redis["spec"]["template"]["spec"]["containers"][0]["args"])
    for setting in ("--dir /data", "--appendonly yes", "--requirepass $(REDIS_PASSWORD)",
                    "--maxmemory-policy noeviction"):
        assert setting in args
    assert re.search(r"--maxmemory \d+[kmg]b", args)
    port = _one(objects, "Service", "redis")["spec"]["ports"][0]["port"]
    for c in _app_containers(objects):
        url = next(e["value"] for e in c["env"] if e["name"] == "HOTLAP_REDIS_URL")
        assert url == f"redis://:$(REDIS_PASSWORD)@redis:{port}/0"


def test_store_is_minio_or_external(overlay):
    name, objects = overlay
    settings = _settings(objects)
    minio = [o for o in objects if "minio" in o["metadata"]["name"]]
    s3_keys = {e["valueFrom"]["secretKeyRef"]["key"] for c in _app_containers(objects) for e in c["env"]
               if e["name"] in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    if "external-s3" in name:
        assert not minio
        assert "minio" not in settings["HOTLAP_S3_ENDPOINT_URL"]
        assert s3_keys == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    else:
        assert {(o["kind"], o["metadata"]["name"]) for o in minio} == {
            ("StatefulSet", "minio"), ("Service", "minio"), ("Service", "minio-console")}
        assert settings["HOTLAP_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert s3_keys == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}  # as compose: MinIO's root user
    assert settings["HOTLAP_STORE_URL"].startswith("s3://")


def test_images_are_composes(overlay):
    name, objects = overlay
    services = COMPOSE["services"]
    app = _compose_default(services["trainer"]["image"])
    gpu_app = _compose_default(GPU_COMPOSE["services"]["trainer"]["image"])
    expected = {"redis": _compose_default(services["redis"]["image"]),
                "minio": _compose_default(services["minio"]["image"])}
    for spec in _pod_specs(objects).values():
        for c in _containers(spec):
            want = expected.get(c["name"], gpu_app if (c["name"] == "trainer" and "gpu" in name) else app)
            assert c["image"] == want, (name, c["name"])


def test_gpu_only_for_the_trainer_in_gpu_overlays(overlay):
    name, objects = overlay
    settings = _settings(objects)
    for where, spec in _pod_specs(objects).items():
        for c in _containers(spec):
            gpus = c["resources"]["limits"].get("nvidia.com/gpu")
            if where == "Deployment/trainer" and c["name"] == "trainer" and "gpu" in name:
                assert gpus == 1
                assert settings["HOTLAP_DEVICE"] == "cuda"
            else:
                assert gpus is None, (where, c["name"])
    if "gpu" not in name:
        assert settings["HOTLAP_DEVICE"] == "auto"


# ----------------------------------------------------------------------------- the env contract


def _contract(role: str | None) -> dict[str, dict[str, Any]]:
    return {**CONTRACT["shared"], **(CONTRACT["roles"][role] if role else {})}


def test_k8s_containers_get_the_contracts_environment(overlay):
    _, objects = overlay
    settings = _settings(objects)
    seen_roles = set()
    for c in _app_containers(objects):
        role = K8S_ROLES[c["name"]]
        seen_roles.add(role)
        contract = _contract(role)
        env = {e["name"]: e for e in c["env"]}
        extra = set(env) - set(contract)
        assert extra <= set(CONTRACT["kubernetes_only"]), (c["name"], extra)
        assert set(contract) <= set(env), (c["name"], set(contract) - set(env))
        names = [e["name"] for e in c["env"]]
        assert names.index("REDIS_PASSWORD") < names.index("HOTLAP_REDIS_URL")  # $(VAR) needs it defined first
        for var, spec in contract.items():
            ref = env[var].get("valueFrom", {}).get("configMapKeyRef")
            if spec.get("optional"):
                assert ref and ref.get("optional") is True, (c["name"], var)
            elif ref:
                assert var in settings, f"{c['name']}: {var} is missing from settings.env"
    assert seen_roles == {"seed", "trainer", "simulator", None}


def test_compose_services_get_the_contracts_environment():
    for service, role in COMPOSE_ROLES.items():
        env = COMPOSE["services"][service]["environment"]
        contract = _contract(role)
        assert set(env) == set(contract), (service, set(env) ^ set(contract))
        for var, spec in contract.items():
            assert (env[var] is None) == bool(spec.get("optional")), (service, var, env[var])
    assert set(COMPOSE["x-hotlap-env"]) == set(CONTRACT["shared"])


class _Recorder(dict):
    """The environment the CLI's parser reads from, recording every variable it asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def _aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias for f in model.model_fields.values() if f.alias}


def test_contract_names_only_variables_the_code_reads():
    env = _Recorder()
    build_parser(env)
    reads = {
        "trainer": _aliases(TrainerConfig),
        "simulator": _aliases(WorkerConfig) | {"OMP_NUM_THREADS"},  # OMP: read by torch, one math thread
        "seed": _aliases(ServiceConfig) | env.asked,
    }
    aws = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}  # read by boto3
    for role, readers in reads.items():
        unread = set(_contract(role)) - readers - aws
        assert not unread, f"{role}: the contract passes {sorted(unread)}, which nothing reads"


def _compose_value(value: str) -> str:
    """A compose environment value with every `${VAR:-default}` replaced by its default."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def test_default_settings_are_composes_defaults():
    objects = _RENDERED.get("default") or _kustomize(K8S / "overlays" / "default")
    settings = _settings(objects)
    containers = {c["name"]: c for c in _app_containers(objects)}
    for service, role in COMPOSE_ROLES.items():
        compose_env = COMPOSE["services"][service]["environment"]
        k8s_env = {e["name"]: e for e in containers[role]["env"]}
        for var, spec in _contract(role).items():
            if spec.get("optional") or spec.get("secret"):
                continue
            entry = k8s_env[var]
            ref = entry.get("valueFrom", {}).get("configMapKeyRef")
            k8s_value = settings[ref["key"]] if ref else entry["value"]
            assert k8s_value == _compose_value(compose_env[var]), (service, var)


def test_seed_reads_a_configmap_mounted_folder(tmp_path: Path):
    """A ConfigMap volume is `..data` -> a timestamped folder, each file a symlink through `..data`."""
    mount = tmp_path / "custom_files"
    data = mount / "..2026_01_01_00_00_00.000000001"
    data.mkdir(parents=True)
    (data / "hyperparameters.json").write_text('{"num_episodes_between_training": 7}')
    (mount / "..data").symlink_to(data.name)
    (mount / "hyperparameters.json").symlink_to("..data/hyperparameters.json")
    store = tmp_path / "store"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HOTLAP_")},
           "HOTLAP_STORE_URL": f"file://{store}", "HOTLAP_CUSTOM_FILES": str(mount)}
    result = subprocess.run([sys.executable, "-m", "hotlap", "seed", "--max-iterations", "3"], env=env,
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "3 iterations of 7 episodes" in result.stdout
    assert '"num_episodes_between_training": 7' in (store / "ip" / "hyperparameters.json").read_text()
