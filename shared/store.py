"""The model store: one interface, two backends (S3 via boto3 — MinIO in compose — and a local
folder), both laid out like a DeepRacer model prefix (see docs/architecture.md).

Model versions are immutable: `model/<version>/` holds the weights and a manifest with their
sha256, written first; `model/latest.json` is written last, so a reader never sees half a model.
Old versions are pruned as DeepRacer prunes checkpoints (`prune_versions`), strictly after the
pointer names a newer one; a reader whose version vanished falls forward to the latest.
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
ACCOUNTING_LOG = "logs/accounting.json"
# A cloned run's starting weights, copied in by the seed (hotlap/clone.py): the trainer publishes
# them as version 0. Outside model/ so they are never taken for a version.
PRETRAINED_WEIGHTS = "pretrained/policy.safetensors"
PRETRAINED_MANIFEST = "pretrained/manifest.json"
WEIGHTS_FILE = "policy.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
MANIFEST_FILE = "manifest.json"


# S3 error codes that say "not now": throttling, timeouts, server-side trouble. Every other
# client error (AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, NoSuchBucket, ...) is permanent.
TRANSIENT_S3_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "RequestLimitExceeded",
    "TooManyRequestsException", "RequestTimeout", "RequestTimeoutException", "InternalError",
    "ServiceUnavailable", "PriorRequestNotComplete",
})


class StoreError(RuntimeError):
    """The store could not be read or written; the message names the store URL and key.

    `transient` is True when waiting may help (connection trouble, timeouts, 5xx, throttling)."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class ObjectNotFound(StoreError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int  # bytes
    modified: float  # seconds since the epoch


class ObjectStore(Protocol):
    url: str

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list_info(self, prefix: str = "") -> list[ObjectInfo]: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, keys: str | Sequence[str]) -> None: ...


def _key_list(keys: str | Sequence[str]) -> list[str]:
    """One key or many (a bare string is one key, not a sequence of one-letter keys)."""
    return [keys] if isinstance(keys, str) else list(keys)


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

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Like `list`, with each object's size and modification time."""
        found = []
        for key in self.list(prefix):
            try:
                stat = (self.root / key).stat()
            except FileNotFoundError:
                continue  # removed since the listing
            found.append(ObjectInfo(key, stat.st_size, stat.st_mtime))
        return found

    def delete(self, keys: str | Sequence[str]) -> None:
        """Remove objects (absent is fine), and each one's folder once empty."""
        for key in _key_list(keys):
            path = self._path(key)
            try:
                path.unlink(missing_ok=True)
                if path.parent != self.root.resolve() and not any(path.parent.iterdir()):
                    path.parent.rmdir()
            except OSError as e:
                raise StoreError(f"{self.url}: cannot delete {key}: {e}") from e

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        keys = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith("."))


class S3Store:
    """A bucket prefix on any S3-compatible server (MinIO, AWS S3, moto_server)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None, client: Any = None):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        try:
            self.client = client or boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}),
            )
        except ValueError as e:  # botocore: "Invalid endpoint: ..."
            raise StoreError(f"{self.url}: the S3 endpoint {endpoint_url!r} is not a URL; expected "
                             f"http(s)://host:port, e.g. http://minio:9000 ({e})") from e

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, func: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, SSLError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        try:
            return func(Bucket=self.bucket, **kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(f"{self.url}: no object {key}") from e
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            transient = code in TRANSIENT_S3_CODES or status >= 500 or status == 429
            raise StoreError(f"{self.url}: cannot {what} {key}: {code} {e}", transient) from e
        except BotoCoreError as e:
            # Connection refused/reset and connect/read timeouts are worth waiting out; a bad
            # certificate, missing credentials or bad parameters will not get better by waiting.
            transient = isinstance(e, BotoConnectionError | HTTPClientError) and not isinstance(e, SSLError)
            raise StoreError(f"{self.url}: cannot {what} {key}: {e}", transient) from e

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

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Like `list`, with each object's size and modification time."""
        found: list[ObjectInfo] = []
        token: str | None = None
        base = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        while True:
            kwargs: dict[str, Any] = {"Prefix": base}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list", prefix, self.client.list_objects_v2, **kwargs)
            found.extend(ObjectInfo(obj["Key"][strip:], int(obj["Size"]), obj["LastModified"].timestamp())
                         for obj in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return sorted(found, key=lambda info: info.key)
            token = page.get("NextContinuationToken")

    def delete(self, keys: str | Sequence[str]) -> None:
        """Remove objects (absent is fine), up to 1000 per DeleteObjects request."""
        keys = _key_list(keys)
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = keys[start:start + 1000]
            reply = self._call("delete", f"{len(chunk)} objects", self.client.delete_objects,
                               Delete={"Objects": [{"Key": self._key(k)} for k in chunk], "Quiet": True})
            if reply.get("Errors"):
                first = reply["Errors"][0]
                raise StoreError(f"{self.url}: cannot delete {first.get('Key')}: {first.get('Code')} "
                                 f"{first.get('Message', '')}")

    def list(self, prefix: str = "") -> list[str]:
        return [info.key for info in self.list_info(prefix)]


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
        """Raises ObjectNotFound when the version does not exist (or was pruned), StoreError when a
        file does not match its manifest. The optimizer state is None where it was pruned."""
        base = f"model/{version}"
        try:
            manifest = json.loads(self.objects.get(f"{base}/{MANIFEST_FILE}"))
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.url}: {base}/{MANIFEST_FILE} is not JSON: {e}") from e
        weights = self._verified(base, WEIGHTS_FILE, manifest)
        optimizer = None
        if with_optimizer and OPTIMIZER_FILE in manifest.get("files", {}):
            try:
                optimizer = self._verified(base, OPTIMIZER_FILE, manifest)
            except ObjectNotFound:
                optimizer = None  # kept for the latest version only
        return ModelVersion(version, manifest, weights, optimizer)

    def load_version_or_latest(self, version: int) -> ModelVersion:
        """`version`, or the latest one when `version` was pruned meanwhile (a slow reader of an
        old announcement). The returned ModelVersion says which version it is."""
        try:
            return self.load_version(version)
        except ObjectNotFound:
            latest = self.latest_version()
            if latest is None or latest == version:
                raise
            return self.load_version(latest)

    def _verified(self, base: str, name: str, manifest: dict[str, Any]) -> bytes:
        data = self.objects.get(f"{base}/{name}")
        expected = manifest.get("files", {}).get(name)
        actual = sha256(data)
        if expected != actual:
            raise StoreError(f"{self.url}: {base}/{name} does not match its manifest sha256: the file's is "
                             f"{actual}, {base}/{MANIFEST_FILE} says {expected}")
        return data

    def list_versions(self) -> list[int]:
        """Versions with a manifest (complete, not pruned), ascending."""
        return sorted(v for v, names in self._version_files().items() if MANIFEST_FILE in names)

    def _version_files(self) -> dict[int, set[str]]:
        files: dict[int, set[str]] = {}
        for key in self.objects.list("model/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[1].isdigit():
                files.setdefault(int(parts[1]), set()).add(parts[2])
        return files

    def prune_versions(self, latest: int, keep_last: int, keep: set[int]) -> list[int]:
        """DeepRacer's checkpoint retention (deepracer-formats.md §6: the last NUM_MODELS_TO_KEEP = 4
        plus the best): delete every version but the last `keep_last` up to `latest` and those in
        `keep` (the best, pinned ones), and the optimizer state of every version but `latest`.

        Call it only after the pointer names `latest`: nothing it deletes is then reachable from
        the pointer. A version's manifest goes first, so a half-deleted version is never listed
        or loaded; leftovers of an interrupted prune are removed by the next one. Returns the
        versions deleted.
        """
        kept = set(range(latest - keep_last + 1, latest + 1)) | keep
        pruned = []
        for version, names in sorted(self._version_files().items()):
            if version > latest:
                continue  # published after `latest` by someone else: not ours to judge
            base = f"model/{version}"
            if version not in kept:
                for name in sorted(names, key=lambda n: n != MANIFEST_FILE):  # manifest first
                    self.objects.delete(f"{base}/{name}")
                pruned.append(version)
            elif version != latest and OPTIMIZER_FILE in names:
                self.objects.delete(f"{base}/{OPTIMIZER_FILE}")
        return pruned

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
