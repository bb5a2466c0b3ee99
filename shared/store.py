"""The model store: one interface, two backends (S3 via boto3 — MinIO in compose — and a local
folder), both laid out like a DeepRacer model prefix (see docs/architecture.md).

Model versions are immutable: `model/<version>/` holds the weights and a manifest with their
sha256, written first; `model/latest.json` is written last, so a reader never sees half a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

# Paths inside a model prefix (DeepRacer's names where DeepRacer has them).
REWARD_FUNCTION = "reward_function.py"
TRAINING_PARAMS = "training_params.yaml"
MODEL_METADATA = "model/model_metadata.json"
HYPERPARAMETERS = "ip/hyperparameters.json"
DONE_MARKER = "ip/done"
FAILED_MARKER = "ip/failed"  # the reason a run failed (hotlap's own; a failed run is not trained again)
RUN_IDENTITY = "ip/run.json"  # {"nonce": ...}: written by the seed, part of every Redis key of the run
LATEST_POINTER = "model/latest.json"
CHECKPOINTS_INDEX = "model/deepracer_checkpoints.json"
EPISODE_LOG = "logs/episodes.csv"
# rl_coach's episode CSV of the agent main_level/agent in graph multi_agent_graph (deepracer-formats.md §5.4).
COACH_EPISODE_LOG = "logs/rl_coach/multi_agent_graph.main_level.agent_0.csv"
WEIGHTS_FILE = "policy.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
MANIFEST_FILE = "manifest.json"


class StoreError(RuntimeError):
    """The store could not be read or written; the message names the store URL and key."""


class ObjectNotFound(StoreError):
    pass


class ObjectStore(Protocol):
    url: str

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, keys: Sequence[str]) -> None: ...


class LocalStore:
    """A folder laid out exactly like the S3 prefix; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path):
        self.root = root
        self.url = f"file://{root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents and path != self.root.resolve():
            raise StoreError(f"{self.url}: key {key!r} escapes the store")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            raise StoreError(f"{self.url}: cannot write {key}: {e}") from e

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as e:
            raise ObjectNotFound(f"{self.url}: no object {key}") from e
        except OSError as e:
            raise StoreError(f"{self.url}: cannot read {key}: {e}") from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith("."))

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self._path(key).unlink(missing_ok=True)
            except OSError as e:
                raise StoreError(f"{self.url}: cannot delete {key}: {e}") from e


class S3Store:
    """A bucket prefix on any S3-compatible server (MinIO, AWS S3, moto_server)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None, client: Any = None):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, func: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return func(Bucket=self.bucket, **kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(f"{self.url}: no object {key}") from e
            raise StoreError(f"{self.url}: cannot {what} {key}: {code} {e}") from e
        except BotoCoreError as e:
            raise StoreError(f"{self.url}: cannot {what} {key}: {e}") from e

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call("check bucket", "", self.client.head_bucket)
        except ObjectNotFound:
            self._call("create bucket", "", self.client.create_bucket)
        except StoreError as e:
            if isinstance(e.__cause__, ClientError) and "403" in str(e):
                raise
            self._call("create bucket", "", self.client.create_bucket)

    def put(self, key: str, data: bytes) -> None:
        self._call("write", key, self.client.put_object, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        body = self._call("read", key, self.client.get_object, Key=self._key(key))["Body"]
        data: bytes = body.read()
        return data

    def exists(self, key: str) -> bool:
        try:
            self._call("check", key, self.client.head_object, Key=self._key(key))
            return True
        except ObjectNotFound:
            return False

    def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        token: str | None = None
        base = self._key(prefix)
        while True:
            kwargs: dict[str, Any] = {"Prefix": base}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list", prefix, self.client.list_objects_v2, **kwargs)
            strip = len(self.prefix) + 1 if self.prefix else 0
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = page.get("NextContinuationToken")

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = keys[start:start + 1000]
            reply = self._call("delete", f"{len(chunk)} objects", self.client.delete_objects,
                               Delete={"Objects": [{"Key": self._key(k)} for k in chunk], "Quiet": True})
            if reply.get("Errors"):
                first = reply["Errors"][0]
                raise StoreError(f"{self.url}: cannot delete {first.get('Key')}: {first.get('Code')} "
                                 f"{first.get('Message', '')}")


def open_store(url: str, s3_endpoint_url: str | None = None) -> LocalStore | S3Store:
    """`s3://bucket/prefix` or `file:///path` (or a plain absolute path)."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"store URL {url!r} names no bucket")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=s3_endpoint_url)
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.path))
    if parsed.scheme == "" and url.startswith("/"):
        return LocalStore(Path(url))
    raise StoreError(f"unsupported store URL {url!r}: use s3://bucket/prefix or file:///path")


@dataclass(frozen=True)
class ModelVersion:
    version: int
    manifest: dict[str, Any]
    weights: bytes
    optimizer: bytes | None = None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelStore:
    """DeepRacer's model prefix on top of an object store."""

    def __init__(self, objects: LocalStore | S3Store):
        self.objects = objects

    @property
    def url(self) -> str:
        return self.objects.url

    def put_text(self, key: str, text: str) -> None:
        self.objects.put(key, text.encode())

    def get_text(self, key: str) -> str:
        data = self.objects.get(key)
        try:
            return data.decode()
        except UnicodeDecodeError as e:
            raise StoreError(f"{self.url}: {key} is not UTF-8 text") from e

    # ------------------------------------------------------------ versions

    def publish_version(self, version: int, weights: bytes, manifest: dict[str, Any],
                        optimizer: bytes | None = None) -> None:
        """Files first, manifest next, the `latest` pointer last."""
        base = f"model/{version}"
        self.objects.put(f"{base}/{WEIGHTS_FILE}", weights)
        files = {WEIGHTS_FILE: sha256(weights)}
        if optimizer is not None:
            self.objects.put(f"{base}/{OPTIMIZER_FILE}", optimizer)
            files[OPTIMIZER_FILE] = sha256(optimizer)
        full_manifest = {**manifest, "version": version, "files": files, "published_at": time.time()}
        self.objects.put(f"{base}/{MANIFEST_FILE}", json.dumps(full_manifest, indent=2).encode())
        pointer = {"version": version, "manifest": f"{base}/{MANIFEST_FILE}"}
        self.objects.put(LATEST_POINTER, json.dumps(pointer).encode())

    def latest_version(self) -> int | None:
        try:
            pointer = json.loads(self.objects.get(LATEST_POINTER))
        except ObjectNotFound:
            return None
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.url}: {LATEST_POINTER} is not JSON: {e}") from e
        version = pointer.get("version") if isinstance(pointer, dict) else None
        if not isinstance(version, int) or version < 0:
            raise StoreError(f"{self.url}: {LATEST_POINTER} has no valid version: {pointer!r}")
        return version

    def load_version(self, version: int, with_optimizer: bool = False) -> ModelVersion:
        base = f"model/{version}"
        try:
            manifest = json.loads(self.objects.get(f"{base}/{MANIFEST_FILE}"))
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.url}: {base}/{MANIFEST_FILE} is not JSON: {e}") from e
        weights = self._verified(base, WEIGHTS_FILE, manifest)
        optimizer = None
        if with_optimizer and OPTIMIZER_FILE in manifest.get("files", {}):
            optimizer = self._verified(base, OPTIMIZER_FILE, manifest)
        return ModelVersion(version, manifest, weights, optimizer)

    def _verified(self, base: str, name: str, manifest: dict[str, Any]) -> bytes:
        data = self.objects.get(f"{base}/{name}")
        expected = manifest.get("files", {}).get(name)
        if expected != sha256(data):
            raise StoreError(f"{self.url}: {base}/{name} does not match its manifest sha256")
        return data

    def list_versions(self) -> list[int]:
        versions = set()
        for key in self.objects.list("model/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[1].isdigit() and parts[2] == MANIFEST_FILE:
                versions.add(int(parts[1]))
        return sorted(versions)

    # ------------------------------------------------------------ run end

    def mark_done(self) -> None:
        self.objects.put(DONE_MARKER, b"done")

    def is_done(self) -> bool:
        return self.objects.exists(DONE_MARKER)

    def mark_failed(self, reason: str) -> None:
        """Keep the reason with the model: a failed run stays failed after any restart."""
        self.objects.put(FAILED_MARKER, reason.encode())

    def failure(self) -> str | None:
        """The reason the run failed, or None."""
        try:
            return self.get_text(FAILED_MARKER)
        except ObjectNotFound:
            return None
