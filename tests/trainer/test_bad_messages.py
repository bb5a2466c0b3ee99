"""Bad experience messages, one case each, through the trainer's intake as it runs: written into a
real redis-server stream, read back by RunTransport.read_experience (the trainer's consumer group),
screened by trainer.intake.screen against the run's spec, acknowledged and counted by reason.
Each is dropped with a reason and a detail naming the field and the value; none raises, none
is trained on, and produced = consumed + dropped. (The whole trainer process against the same
poison: tests/e2e/test_faults.py::test_poison_is_dropped_counted_and_logged_once_per_kind.)
docs/troubleshooting.md lists each case id.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable

import numpy as np
import pytest

from shared.experience import HEADER_FIELD, PAYLOAD_FIELD, Experience
from shared.transport import RunTransport
from tests.trainer.test_intake import FILES, MAX_STEPS, honest_experience
from trainer.intake import experience_spec, screen

Fields = dict[bytes, bytes]


def _header_edit(edit: Callable[[dict], None]) -> Callable[[Experience], Fields]:
    def build(exp: Experience) -> Fields:
        fields = exp.encode(compress=False)
        header = json.loads(fields[HEADER_FIELD])
        edit(header)
        return {**fields, HEADER_FIELD: json.dumps(header).encode()}
    return build


def _array_edit(edit: Callable[[Experience], None]) -> Callable[[Experience], Fields]:
    def build(exp: Experience) -> Fields:
        edit(exp)
        return exp.encode()
    return build


def _set_spec(name: str, key: str, value: object) -> Callable[[dict], None]:
    def edit(header: dict) -> None:
        next(spec for spec in header["arrays"] if spec["name"] == name)[key] = value
    return edit


def _truncated_payload(exp: Experience) -> Fields:
    fields = exp.encode()
    return {**fields, PAYLOAD_FIELD: fields[PAYLOAD_FIELD][: len(fields[PAYLOAD_FIELD]) // 2]}


def _zip_bomb(exp: Experience) -> Fields:
    fields = exp.encode(compress=False)
    header = json.loads(fields[HEADER_FIELD])
    header["codec"] = "zlib"
    return {HEADER_FIELD: json.dumps(header).encode(), PAYLOAD_FIELD: zlib.compress(b"\0" * (200 * 1024 * 1024))}


def _oversize(exp: Experience) -> Fields:
    fields = exp.encode(compress=False)
    return {**fields, PAYLOAD_FIELD: fields[PAYLOAD_FIELD] + b"\0" * (64 * 1024 * 1024)}


def _camera(shape: tuple[int, ...], dtype: type) -> Callable[[Experience], None]:
    def edit(exp: Experience) -> None:
        exp.observations["FRONT_FACING_CAMERA"] = np.zeros((exp.num_steps, *shape), dtype)
    return edit


def _set(name: str, value: float) -> Callable[[Experience], None]:
    def edit(exp: Experience) -> None:
        getattr(exp, name)[1] = value
    return edit


# case id -> (how the message is built from an honest one, the drop reason, what the detail says)
MESSAGE_CASES: dict[str, tuple[Callable[[Experience], Fields], str, str]] = {
    "message-truncated-payload": (_truncated_payload, "corrupt", "payload is not valid zstd data"),
    "message-truncated-header": (lambda e: {**e.encode(), HEADER_FIELD: e.encode()[HEADER_FIELD][:40]},
                                 "corrupt", "header is not JSON"),
    "message-no-header": (lambda e: {b"data": b"x"}, "corrupt", "no b'header' field"),
    "message-pickle": (lambda e: {HEADER_FIELD: b"\x80\x04\x95\x0b\x00cos\nsystem\n.", PAYLOAD_FIELD: b""},
                       "corrupt", "header is not JSON"),
    "message-schema-version": (_header_edit(lambda h: h.update(schema=2)), "corrupt",
                               "schema version 2; this build reads 1"),
    "message-unknown-codec": (_header_edit(lambda h: h.update(codec="lzma")), "corrupt", "unknown codec 'lzma'"),
    "message-array-dtype": (_header_edit(_set_spec("rewards", "dtype", "object")), "corrupt",
                            "array 'rewards': dtype 'object' not allowed"),
    "message-array-shape": (_header_edit(_set_spec("rewards", "shape", [MAX_STEPS * 1000])), "corrupt",
                            "array 'rewards' runs past the end of the payload"),
    "message-camera-shape": (_array_edit(_camera((60, 80), np.uint8)), "invalid",
                             "array 'obs/FRONT_FACING_CAMERA' is uint8[4, 60, 80], expected uint8[4, 120, 160]"),
    "message-lidar-dtype": (_array_edit(lambda e: e.observations.__setitem__(
        "LIDAR", e.observations["LIDAR"].astype(np.int64))), "invalid",
                            "array 'obs/LIDAR' is int64[4, 64], expected float32[4, 64]"),
    "message-oversize": (_oversize, "oversize", "exceeds the limit of"),
    "message-zip-bomb": (_zip_bomb, "oversize", "exceeds the limit of"),
    "message-too-many-steps": (lambda e: honest_experience(1, MAX_STEPS + 1).encode(), "oversize",
                               "exceeds the limit of"),
    "message-nan-reward": (_array_edit(_set("rewards", np.nan)), "invalid", "rewards contains NaN or inf"),
    "message-inf-value": (_array_edit(_set("values", np.inf)), "invalid", "values contains NaN or inf"),
    "message-huge-reward": (_array_edit(_set("rewards", 3e5)), "invalid", "a reward of 300000 is outside [-1e5, 1e5]"),
    "message-action-index": (_array_edit(_set("actions", 3)), "invalid", "action index 3 outside [0, 3)"),
    "message-other-run": (_array_edit(lambda e: setattr(e, "run_id", "someone-else")), "invalid",
                          "run_id 'someone-else', expected 'fuzz-run'"),
    "message-progress": (_array_edit(lambda e: setattr(e, "progress", 250.0)), "invalid",
                         "progress 250.0 is outside [-100, 100]"),
    "message-stale-version": (_array_edit(lambda e: setattr(e, "model_version", 1)), "stale",
                              "model version 1, training on 2..2"),
}


@pytest.fixture
def intake(redis_url: str, run_id: str) -> RunTransport:
    transport = RunTransport.from_url(redis_url, run_id)
    transport.ensure_group()
    return transport


@pytest.mark.parametrize("case", sorted(MESSAGE_CASES))
def test_a_bad_message_is_dropped_counted_and_named(intake: RunTransport, case: str) -> None:
    build, reason, detail = MESSAGE_CASES[case]
    spec = experience_spec("fuzz-run", FILES)
    honest = honest_experience(0, 4)
    for fields in (build(honest_experience(0, 4)), honest.encode()):  # the bad one, then an honest one
        intake.client.xadd(intake.keys.experience, fields)
        intake.client.hincrby(intake.keys.accounting, "produced", 1)
    deliveries = intake.read_experience("trainer", 10, 1000, None, spec.max_payload_bytes)
    verdicts = [screen(delivery, spec, 2, 2) for delivery in deliveries]
    assert len(verdicts) == 2
    bad, good = verdicts
    assert bad.experience is None and bad.reason == reason and detail in bad.detail, bad
    assert good.experience is not None, good  # what follows the bad message is not lost
    intake.acknowledge([deliveries[0].entry_id], f"dropped_{reason}")
    intake.acknowledge([deliveries[1].entry_id], "consumed")
    counts = intake.accounting()
    assert counts["produced"] == 2 and counts["consumed"] == 1 and counts[f"dropped_{reason}"] == 1
    assert intake.backlog() == 0
