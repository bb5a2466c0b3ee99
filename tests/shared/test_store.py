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


class RecordingStore(LocalStore):
    """A real local store that remembers the order of writes."""

    def __init__(self, root):
        super().__init__(root)
        self.writes: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.writes.append(key)
        super().put(key, data)


def test_publish_order_files_then_manifest_then_pointer(tmp_path):
    objects = RecordingStore(tmp_path)
    ModelStore(objects).publish_version(5, b"w", {}, optimizer=b"o")
    assert objects.writes == [
        "model/5/policy.safetensors",
        "model/5/optimizer.pt",
        "model/5/manifest.json",
        LATEST_POINTER,
    ]
