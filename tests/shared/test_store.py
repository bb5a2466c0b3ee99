"""Both backends: the local folder, and an S3-compatible server over HTTP (moto_server, as MinIO in compose)."""

import json

import pytest

from shared.store import (
    LATEST_POINTER,
    LocalStore,
    ModelStore,
    ObjectNotFound,
    S3Store,
    StoreError,
    open_store,
)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, s3_endpoint, s3_store_url) -> ModelStore:
    if request.param == "local":
        return ModelStore(open_store(f"file://{tmp_path}/prefix"))
    objects = open_store(s3_store_url, s3_endpoint)
    assert isinstance(objects, S3Store)
    objects.ensure_bucket()
    return ModelStore(objects)


def test_put_get_list_exists(store: ModelStore):
    store.put_text("reward_function.py", "def reward_function(params):\n    return 1.0\n")
    store.put_text("model/model_metadata.json", "{}")
    assert store.get_text("reward_function.py").startswith("def reward_function")
    assert store.objects.exists("model/model_metadata.json")
    assert not store.objects.exists("ip/done")
    assert store.objects.list("model/") == ["model/model_metadata.json"]
    with pytest.raises(ObjectNotFound, match="ip/hyperparameters.json"):
        store.get_text("ip/hyperparameters.json")


def test_list_info_gives_sizes_and_times(store: ModelStore):
    import time

    before = time.time()
    store.put_text("model/1/manifest.json", "{}")
    store.objects.put("model/1/policy.safetensors", b"x" * 1234)
    store.put_text("modelling.txt", "not under model/")
    infos = store.objects.list_info("model/")
    assert [(i.key, i.size) for i in infos] == [("model/1/manifest.json", 2), ("model/1/policy.safetensors", 1234)]
    assert all(before - 5 <= i.modified <= time.time() + 5 for i in infos)  # S3 keeps whole seconds
    assert [i.key for i in store.objects.list_info()] == store.objects.list()


def test_versions_are_immutable_and_pointer_written_last(store: ModelStore):
    assert store.latest_version() is None
    store.publish_version(0, b"weights-0", {"network": "x"}, optimizer=b"opt-0")
    store.publish_version(1, b"weights-1", {"network": "x"})
    assert store.latest_version() == 1
    assert store.list_versions() == [0, 1]
    v0 = store.load_version(0, with_optimizer=True)
    assert v0.weights == b"weights-0" and v0.optimizer == b"opt-0"
    assert v0.manifest["version"] == 0 and len(v0.manifest["files"]["policy.safetensors"]) == 64
    assert json.loads(store.objects.get(LATEST_POINTER)) == {"version": 1, "manifest": "model/1/manifest.json"}


def test_tampered_weights_fail_the_checksum(store: ModelStore):
    store.publish_version(0, b"weights", {})
    store.objects.put("model/0/policy.safetensors", b"evil")
    with pytest.raises(StoreError, match="sha256"):
        store.load_version(0)


def test_done_marker(store: ModelStore):
    assert not store.is_done()
    store.mark_done()
    assert store.is_done()
    assert store.objects.get("ip/done") == b"done"


def test_local_store_refuses_escaping_keys(tmp_path):
    with pytest.raises(StoreError, match="escapes"):
        LocalStore(tmp_path).put("../outside", b"x")


def test_unreachable_s3_server_names_the_store():
    objects = S3Store("bucket", "prefix", endpoint_url="http://127.0.0.1:1")
    with pytest.raises(StoreError, match="s3://bucket/prefix"):
        objects.get("model/latest.json")


def test_bad_store_urls():
    with pytest.raises(StoreError):
        open_store("ftp://x/y")
    with pytest.raises(StoreError):
        open_store("s3:///prefix")


class RecordingStore:
    """A real store (local or S3) that remembers the order of its writes: the order a reader
    polling the store would see them appear, with no reliance on object timestamps."""

    def __init__(self, inner: LocalStore | S3Store):
        self.inner, self.url = inner, inner.url
        self.writes: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)  # returns once the server stored it: readable from here on
        self.writes.append(key)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_publish_order_files_then_manifest_then_pointer(store: ModelStore):
    objects = RecordingStore(store.objects)  # type: ignore[arg-type]
    ModelStore(objects).publish_version(5, b"w", {}, optimizer=b"o")  # type: ignore[arg-type]
    assert objects.writes == [
        "model/5/policy.safetensors",
        "model/5/optimizer.pt",
        "model/5/manifest.json",
        LATEST_POINTER,
    ]


class PointerWatch:
    """A real store (local or S3) that checks, at every write and delete, that `latest.json` never
    names a version whose files are gone."""

    def __init__(self, inner: LocalStore | S3Store):
        self.inner, self.url, self.deleted = inner, inner.url, []

    def pointed(self) -> int | None:
        try:
            return json.loads(self.inner.get(LATEST_POINTER))["version"]
        except ObjectNotFound:
            return None

    def put(self, key: str, data: bytes) -> None:
        if key == LATEST_POINTER:
            version = json.loads(data)["version"]
            assert self.inner.exists(f"model/{version}/manifest.json"), f"pointer to unwritten version {version}"
        self.inner.put(key, data)

    def delete(self, key: str) -> None:
        pointed = self.pointed()
        assert not key.startswith(f"model/{pointed}/"), f"deleting {key} while latest.json names {pointed}"
        self.deleted.append(key)
        self.inner.delete(key)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)


def test_retention_keeps_the_last_versions_the_best_and_pinned_ones(store: ModelStore):
    """As the trainer runs it: publish, then prune. 12 iterations: at most 4 + best (+ pinned) versions
    stay, only the latest keeps its optimizer state, and the pointer never names a deleted version."""
    watched = ModelStore(PointerWatch(store.objects))  # type: ignore[arg-type]
    best, pinned = 3, 6
    for version in range(13):
        watched.publish_version(version, f"weights-{version}".encode(), {}, optimizer=b"opt")
        watched.prune_versions(version, keep_last=4, keep={best, pinned} if version >= pinned else {best})
        weights = [v for v in range(version + 1) if store.objects.exists(f"model/{v}/policy.safetensors")]
        assert len(weights) <= 4 + 2
        assert [v for v in weights if store.objects.exists(f"model/{v}/optimizer.pt")] == [version]
    assert store.list_versions() == [best, pinned, 9, 10, 11, 12]
    assert [k for k in store.objects.list("model/") if k.startswith("model/5/")] == []  # nothing left behind
    resumed = store.load_version(12, with_optimizer=True)  # a restarted trainer resumes from here
    assert resumed.weights == b"weights-12" and resumed.optimizer == b"opt"
    assert store.load_version(best, with_optimizer=True).optimizer is None  # pruned: weights only


def test_a_reader_of_a_pruned_version_falls_forward_to_the_latest(store: ModelStore):
    for version in range(4):
        store.publish_version(version, f"weights-{version}".encode(), {})
    store.prune_versions(3, keep_last=1, keep=set())
    with pytest.raises(ObjectNotFound):
        store.load_version(1)
    model = store.load_version_or_latest(1)  # a worker that saw version 1 announced, a while ago
    assert model.version == 3 and model.weights == b"weights-3"


def test_an_interrupted_prune_leaves_nothing_listed_and_the_next_one_finishes(store: ModelStore):
    for version in range(3):
        store.publish_version(version, b"w", {}, optimizer=b"o")
    store.objects.delete("model/0/manifest.json")  # a prune killed right after deleting the manifest
    assert store.list_versions() == [1, 2]
    assert store.prune_versions(2, keep_last=2, keep=set()) == [0]
    assert not any(k.startswith("model/0/") for k in store.objects.list("model/"))
