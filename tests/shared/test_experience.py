import contextlib
import json
import zlib

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.experience import HEADER_FIELD, PAYLOAD_FIELD, Experience, MessageError, OversizeMessage


def make_experience(steps: int = 5, discrete: bool = True) -> Experience:
    rng = np.random.default_rng(0)
    return Experience(
        run_id="r",
        worker_name="host-1",
        worker_index=1,
        model_version=3,
        episode=7,
        observations={
            "FRONT_FACING_CAMERA": rng.integers(0, 255, (steps, 120, 160), dtype=np.uint8),
            "LIDAR": rng.random((steps, 64), dtype=np.float32),
        },
        actions=(rng.integers(0, 5, steps) if discrete else rng.random((steps, 2), dtype=np.float32)),
        log_probs=rng.random(steps, dtype=np.float32),
        values=rng.random(steps, dtype=np.float32),
        rewards=rng.random(steps, dtype=np.float32),
        terminated=False,
        bootstrap_value=0.25,
        status="time_up",
        progress=42.5,
        elapsed_s=1.2,
    )


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("discrete", [True, False])
def test_roundtrip_is_exact(compress: bool, discrete: bool):
    exp = make_experience(discrete=discrete)
    back = Experience.decode(exp.encode(compress=compress))
    assert back.model_version == 3 and back.worker_name == "host-1" and back.episode == 7
    assert back.terminated is False and back.bootstrap_value == 0.25 and back.status == "time_up"
    for name, arr in exp.arrays().items():
        np.testing.assert_array_equal(back.arrays()[name], arr)
        assert back.arrays()[name].dtype == arr.dtype


def _fields(exp: Experience) -> tuple[dict, bytes]:
    fields = exp.encode(compress=False)
    return json.loads(fields[HEADER_FIELD]), fields[PAYLOAD_FIELD]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda h, p: (h.pop("model_version"), p)[1], "model_version"),
        (lambda h, p: (h.update(schema=99), p)[1], "schema"),
        (lambda h, p: (h.update(kind="other"), p)[1], "kind"),
        (lambda h, p: p[:-10], "payload"),
        (lambda h, p: (h["arrays"][0].update(dtype="object"), p)[1], "dtype"),
        (lambda h, p: (h["arrays"][1].update(shape=[5, 65]), p)[1], "payload"),
        (lambda h, p: (h.update(codec="zlib"), p)[1], "zlib"),
        (lambda h, p: (h.update(codec="zstd"), p)[1], "zstd"),
        (lambda h, p: (h.update(codec="zstd"), zstandard.ZstdCompressor().compress(p)[:-8])[1], "zstd"),
        (lambda h, p: (h.update(codec="lzma"), p)[1], "codec"),
    ],
)
def test_corrupt_messages_raise_message_error(mutate, expected):
    header, payload = _fields(make_experience())
    payload = mutate(header, payload)
    with pytest.raises(MessageError, match=expected):
        Experience.decode({HEADER_FIELD: json.dumps(header).encode(), PAYLOAD_FIELD: payload})


def test_garbage_header_and_pickle_are_rejected_without_executing():
    import pickle

    with pytest.raises(MessageError):
        Experience.decode({HEADER_FIELD: pickle.dumps({"a": 1}), PAYLOAD_FIELD: b""})
    with pytest.raises(MessageError):
        Experience.decode({b"data": b"x"})


@pytest.mark.parametrize("codec, compress", [
    ("zlib", lambda data: zlib.compress(data)),
    ("zstd", lambda data: zstandard.ZstdCompressor().compress(data)),
    # A frame that does not declare its size must not be inflated either.
    ("zstd", lambda data: zstandard.ZstdCompressor(write_content_size=False).compress(data)),
])
def test_zip_bomb_is_bounded(codec, compress):
    header, payload = _fields(make_experience(steps=2))
    header["codec"] = codec
    bomb = compress(b"\0" * (50 * 1024 * 1024))
    with pytest.raises(MessageError, match="bytes"):
        Experience.decode({HEADER_FIELD: json.dumps(header).encode(), PAYLOAD_FIELD: bomb})


def test_compressed_messages_use_zstd_and_zlib_ones_from_earlier_builds_still_decode():
    exp = make_experience()
    header, payload = _fields(exp)
    assert json.loads(exp.encode()[HEADER_FIELD])["codec"] == "zstd"
    header["codec"] = "zlib"
    back = Experience.decode({HEADER_FIELD: json.dumps(header).encode(), PAYLOAD_FIELD: zlib.compress(payload, 1)})
    np.testing.assert_array_equal(back.observations["FRONT_FACING_CAMERA"], exp.observations["FRONT_FACING_CAMERA"])


def test_step_counts_must_agree():
    exp = make_experience()
    exp.values = exp.values[:3]
    with pytest.raises(MessageError, match="values"):
        Experience.decode(exp.encode())


# ----------------------------------------------------------------------------- fuzzing the decoder
# Whatever arrives in a stream entry, decoding returns an Experience or raises MessageError: never
# another exception (which would crash the trainer), never a hang. Bounded, so it runs in CI.

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


def _decodes_or_message_error(fields: dict) -> None:
    with contextlib.suppress(MessageError):
        Experience.decode(fields)


@FUZZ
@given(header=st.binary(max_size=200), payload=st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(header: bytes, payload: bytes):
    _decodes_or_message_error({HEADER_FIELD: header, PAYLOAD_FIELD: payload})


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_messages(data):
    header, payload = _fields(make_experience(steps=2))
    for _ in range(data.draw(st.integers(1, 3))):
        if data.draw(st.booleans()):
            header[data.draw(st.sampled_from(sorted(header)))] = data.draw(JSON_VALUES)
        else:
            spec = data.draw(st.sampled_from(header["arrays"])) if isinstance(header.get("arrays"), list) \
                and header["arrays"] else None
            if isinstance(spec, dict):
                spec[data.draw(st.sampled_from(["name", "dtype", "shape"]))] = data.draw(JSON_VALUES)
    payload = data.draw(st.sampled_from([payload, payload[:-3], payload + b"\x00" * 4, zlib.compress(payload, 1)]))
    _decodes_or_message_error({HEADER_FIELD: json.dumps(header).encode(), PAYLOAD_FIELD: payload})


def test_nested_json_header_is_a_message_error():
    with pytest.raises(MessageError, match="JSON"):
        Experience.decode({HEADER_FIELD: b"[" * 100_000, PAYLOAD_FIELD: b""})


def test_huge_numbers_in_the_header_are_message_errors():
    header, payload = _fields(make_experience(steps=2))
    header["bootstrap_value"] = 10**400  # float() of it overflows
    with pytest.raises(MessageError, match="bootstrap_value|wrong type"):
        Experience.decode({HEADER_FIELD: json.dumps(header).encode(), PAYLOAD_FIELD: payload})


def test_payload_above_the_runs_limit_is_oversize_before_decompressing():
    fields = make_experience(steps=4).encode()
    with pytest.raises(OversizeMessage, match="exceeds the limit of 1000"):
        Experience.decode(fields, max_payload_bytes=1000)
