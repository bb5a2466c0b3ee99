"""`hotlap export --format car`: the ``.tar.gz`` a physical DeepRacer car loads.

The archive holds ``agent/model.pb`` and ``model_metadata.json`` (deepracer-formats.md §12).
``model.pb`` is a TensorFlow-1-format frozen ``GraphDef`` (weights are ``Const`` nodes, no variables)
of the **policy network only** — the car never runs the value network — built here layer by layer from
the PyTorch weights with ``tf.compat.v1`` ops (Conv2D, BiasAdd, Relu, Reshape, MatMul, ConcatV2,
Softmax): no converter sits in between.

Names and layout are those the car's software feeds and reads (aws-deepracer-model-optimizer-pkg
``constants.py``: ``NETWORK_INPUT_FORMAT_MAPPING``, ``INPUT_SHAPE_FORMAT_MAPPING``; its optimizer node
reads ``…/network_1/ppo_head_0/policy``; deepracer-formats.md §12):

- one float32 input per sensor, ``main_level/agent/main/online/network_0/<SENSOR>/<SENSOR>``, batch
  dimension free: a camera ``(B, 120, 160, C)`` NHWC of raw 0–255 pixel values (C = 1 for
  ``FRONT_FACING_CAMERA``/``LEFT_CAMERA``/``observation``, 2 for ``STEREO_CAMERAS``, left then right),
  divided by 255 inside the graph; a lidar ``(B, N)`` (``LIDAR`` N = 64, ``SECTOR_LIDAR`` N = 8) used as is;
- one output ``main_level/agent/main/online/network_1/ppo_head_0/policy``: discrete, the action
  probabilities ``(B, num_actions)`` in ``model_metadata.json``'s order (a ``Softmax``; the car takes the
  argmax); continuous, the policy mean ``(B, 2)`` = (steering, speed) in the normalised [-1, 1] space,
  which the car clamps to [-1, 1] and maps linearly onto the metadata's low/high
  (aws-deepracer-navigation-pkg ``process_inference_data``) — hotlap's greedy action exactly.

The graph has exactly one output, so the car's OpenVINO path (which reads the *first* output) and its
TFLite path (which asks for the output by name) agree.

What the car cannot take is refused with :class:`CarExportError`: stacked observations
(``stack_size`` > 1: the car feeds 1 or 2 channels), ``DISCRETIZED_SECTOR_LIDAR`` (the car has no input
name for it) and SAC models.

TensorFlow is needed only here, from the optional extra ``hotlap[car]`` (:data:`CAR_INSTALL_HINT`).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from hotlap.errors import ExportError
from shared.config import NO_CAMERA_NOTE
from shared.networks import LIDAR_SIZE, SECTOR_LIDAR_SIZE, STEREO_CAMERA, PolicyNetwork

if TYPE_CHECKING:
    from tensorflow.core.framework.graph_pb2 import GraphDef

    from hotlap.models import TrainedModel

CAR_INSTALL_HINT = (
    "the car export needs TensorFlow, an optional extra: pip install -e '.[car]' "
    "(or: pip install 'tensorflow-cpu==2.21.0' 'openvino>=2026.4')"
)

INPUT_NAME_FORMAT = "main_level/agent/main/online/network_0/{sensor}/{sensor}"
"""Car input node per sensor (model-optimizer-pkg NETWORK_INPUT_FORMAT_MAPPING, clipped PPO head "main")."""
POLICY_OUTPUT = "main_level/agent/main/online/network_1/ppo_head_0/policy"
"""Car output node of a clipped-PPO model (deepracer-formats.md §2 and §12)."""
_POLICY_SCOPE = "main_level/agent/main/online/network_1"

CAR_CAMERAS: dict[str, int] = {"FRONT_FACING_CAMERA": 1, "LEFT_CAMERA": 1, "observation": 1, STEREO_CAMERA: 2}
"""Camera sensors the car feeds, with their channel count (model-optimizer-pkg INPUT_CHANNEL_SIZE_MAPPING)."""
CAR_LIDARS: dict[str, int] = {"LIDAR": LIDAR_SIZE, "SECTOR_LIDAR": SECTOR_LIDAR_SIZE}
"""Lidar sensors the car feeds, with their length."""

MODEL_PB = "agent/model.pb"
MODEL_METADATA_JSON = "model_metadata.json"
SELF_CHECK_TOLERANCE = 1e-4
"""Largest |TF - PyTorch| the export accepts on its self-check batch (probabilities or means)."""


class CarExportError(ExportError):
    """The model cannot be written for the car (missing extra, unsupported sensor or setting, failed self-check)."""


@dataclass(frozen=True)
class CarInput:
    """One input of the car graph: ``sensor``, node ``name``, ``shape`` with a free batch dimension (None)."""

    sensor: str
    name: str
    shape: tuple[int | None, ...]
    camera: bool


def _tf() -> Any:
    """``tensorflow.compat.v1``, or :class:`CarExportError` with the install hint."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise CarExportError(CAR_INSTALL_HINT) from e
    tf.get_logger().setLevel("ERROR")  # tf.compat.v1's "designed for TensorFlow v1" notices are the point here
    return tf.compat.v1


def car_inputs(policy: PolicyNetwork) -> list[CarInput]:
    """The graph inputs of ``policy``, camera first then lidar (the order the car's optimizer lists them).

    Raises :class:`CarExportError` for a sensor or observation shape the car cannot feed.
    """
    if policy.camera_sensor is None:  # the car's inference node feeds its camera to every model (§12)
        raise CarExportError(f"sensors {list(policy.observation_spec)}: the model {NO_CAMERA_NOTE}")
    inputs = []
    sensor, shape = policy.camera_sensor, policy.observation_spec[policy.camera_sensor]
    channels = 1 if len(shape) == 2 else shape[0]
    if sensor not in CAR_CAMERAS:
        raise CarExportError(f"sensor {sensor}: the car has no input for it (it takes {', '.join(CAR_CAMERAS)})")
    if channels != CAR_CAMERAS[sensor]:
        raise CarExportError(
            f"sensor {sensor}: the network sees {channels} channel(s) but the car feeds {CAR_CAMERAS[sensor]}; "
            "a model trained with stack_size > 1 cannot drive the car (hyperparameters.json stack_size)")
    inputs.append(CarInput(sensor, INPUT_NAME_FORMAT.format(sensor=sensor), (None, *shape[-2:], channels), True))
    if policy.lidar_sensor is not None:
        sensor, shape = policy.lidar_sensor, policy.observation_spec[policy.lidar_sensor]
        if sensor not in CAR_LIDARS:
            raise CarExportError(f"sensor {sensor}: the car has no input for it (it takes {', '.join(CAR_LIDARS)})")
        if shape != (CAR_LIDARS[sensor],):
            raise CarExportError(f"sensor {sensor}: the network sees {shape[0]} values but the car feeds "
                                 f"{CAR_LIDARS[sensor]}; a model trained with stack_size > 1 cannot drive the car")
        inputs.append(CarInput(sensor, INPUT_NAME_FORMAT.format(sensor=sensor), (None, shape[0]), False))
    return inputs


def car_array(batch: np.ndarray, camera: bool) -> np.ndarray:
    """One sensor's simulator batch as the car feeds it: float32, cameras NHWC with raw 0–255 values
    (``(B, H, W)`` gains a channel axis, ``(B, C, H, W)`` moves it last); other sensors unchanged."""
    array = np.asarray(batch)
    if camera:
        array = array[..., None] if array.ndim == 3 else np.moveaxis(array, 1, -1)
    return np.ascontiguousarray(array, dtype=np.float32)


def car_feed(policy: PolicyNetwork, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The simulator's observation batch ``{sensor: (B, ...)}`` as the car feeds it: ``{input name: float32}``,
    cameras NHWC with raw 0–255 values (``(B, H, W)`` gains a channel axis, ``(B, C, H, W)`` moves it last)."""
    return {spec.name: car_array(obs[spec.sensor], spec.camera) for spec in car_inputs(policy)}


@torch.no_grad()
def torch_policy_output(policy: PolicyNetwork, obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """What the car graph must output for ``obs``, computed by the PyTorch policy: probabilities (B, A) or
    means (B, 2), float32."""
    tensors = {name: torch.from_numpy(np.ascontiguousarray(obs[name]))
               for name in (policy.camera_sensor, policy.lidar_sensor) if name is not None}
    dist, _ = policy(tensors)
    out = dist.probs if policy.action_spec.kind == "discrete" else dist.mean
    return np.asarray(out.float().numpy(), np.float32)


# ---------------------------------------------------------------------------------------------------------
# PyTorch layers -> TF1 ops
# ---------------------------------------------------------------------------------------------------------


class _Translator:
    """Emits TF ops for PyTorch layers. Tracks the NHWC shape of the last conv output so the first dense
    layer after a flatten gets its weight rows reordered from PyTorch's (C, H, W) flatten order to TF's
    (H, W, C) one — the graph stays NHWC end to end, with no transpose for the car's converters to keep."""

    def __init__(self, tf: Any) -> None:
        self.tf = tf
        self.pending_flatten: tuple[int, int, int] | None = None  # (C, H, W) of a flattened NHWC tensor
        self.flatten_offset = 0  # where the flattened camera features start in the next dense input
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def const(self, array: np.ndarray, kind: str) -> Any:
        return self.tf.constant(np.ascontiguousarray(array, np.float32), name=self._name(kind))

    def sequential(self, module: nn.Module, x: Any) -> Any:
        for layer in module.children() if isinstance(module, nn.Sequential) else [module]:
            x = self.layer(layer, x)
        return x

    def layer(self, layer: nn.Module, x: Any) -> Any:
        tf = self.tf
        if isinstance(layer, nn.Conv2d):
            return self.conv(layer, x)
        if isinstance(layer, nn.ReLU):
            return tf.nn.relu(x, name=self._name("relu"))
        if isinstance(layer, nn.Flatten):
            _, height, width, channels = x.shape.as_list()
            self.pending_flatten = (channels, height, width)
            return tf.reshape(x, [-1, height * width * channels], name=self._name("flatten"))
        if isinstance(layer, nn.Linear):
            return self.dense(layer, x)
        raise CarExportError(f"layer {type(layer).__name__} has no translation to the car's TensorFlow graph")

    def conv(self, conv: nn.Conv2d, x: Any) -> Any:
        if conv.padding not in ((0, 0), "valid") or conv.dilation != (1, 1) or conv.groups != 1:
            raise CarExportError(f"conv layer {conv}: only unpadded, undilated, ungrouped convolutions are exported")
        # PyTorch (out, in, kh, kw) -> TF HWIO (kh, kw, in, out)
        kernel = conv.weight.detach().cpu().numpy().transpose(2, 3, 1, 0)
        strides = [1, conv.stride[0], conv.stride[1], 1]
        y = self.tf.nn.conv2d(x, self.const(kernel, "conv_kernel"), strides, "VALID", data_format="NHWC",
                              name=self._name("conv"))
        return self._bias(y, conv.bias)

    def dense(self, linear: nn.Linear, x: Any) -> Any:
        weight = linear.weight.detach().cpu().numpy()  # (out, in)
        if self.pending_flatten is not None:
            weight = self._reorder_flattened(weight)
            self.pending_flatten = None
        y = self.tf.matmul(x, self.const(weight.T, "dense_kernel"), name=self._name("dense"))
        return self._bias(y, linear.bias)

    def _reorder_flattened(self, weight: np.ndarray) -> np.ndarray:
        """Columns [offset, offset + C·H·W) of ``weight`` from (C, H, W) order to (H, W, C) order."""
        assert self.pending_flatten is not None
        channels, height, width = self.pending_flatten
        start, stop = self.flatten_offset, self.flatten_offset + channels * height * width
        block = weight[:, start:stop].reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
        reordered = weight.copy()
        reordered[:, start:stop] = block.reshape(weight.shape[0], -1)
        return reordered

    def _bias(self, y: Any, bias: torch.Tensor | None) -> Any:
        if bias is None:
            return y
        return self.tf.nn.bias_add(y, self.const(bias.detach().cpu().numpy(), "bias"), name=self._name("bias_add"))


def build_graph_def(policy: PolicyNetwork) -> GraphDef:
    """The frozen TF1 ``GraphDef`` of ``policy``'s policy network (module docstring: names, shapes, outputs).

    Raises :class:`CarExportError` without the ``car`` extra, for what the car cannot feed, for SAC and for
    layers with no translation.
    """
    inputs = car_inputs(policy)
    tf = _tf()
    tower = policy.policy_tower
    graph = tf.Graph()
    with graph.as_default():
        placeholders = {spec.sensor: tf.placeholder(tf.float32, list(spec.shape), name=spec.name) for spec in inputs}
        translate = _Translator(tf)
        with tf.name_scope(_POLICY_SCOPE + "/"):
            parts = []
            if tower.camera is not None:
                assert policy.camera_sensor is not None
                with tf.name_scope(policy.camera_sensor):
                    pixels = placeholders[policy.camera_sensor]
                    # x / 255 as PyTorch's CameraEmbedder computes it: x * float32(1/255)
                    x = tf.multiply(pixels, np.float32(1.0 / 255.0), name="rescale")
                    x = translate.sequential(tower.camera.conv, x)
                    x = translate.sequential(tower.camera.dense, x)
                parts.append(x)
            if tower.lidar is not None:
                assert policy.lidar_sensor is not None
                camera_flat = translate.pending_flatten
                translate.pending_flatten = None  # the lidar branch's dense layers see plain lidar values
                with tf.name_scope(policy.lidar_sensor):
                    y = translate.sequential(tower.lidar, placeholders[policy.lidar_sensor])
                translate.pending_flatten = camera_flat
                parts.append(y)
            with tf.name_scope("middleware"):
                hidden = parts[0] if len(parts) == 1 else tf.concat(parts, axis=1, name="concat")
                hidden = translate.sequential(tower.middleware, hidden)
            with tf.name_scope("ppo_head_0"):
                out = translate.sequential(policy.policy_head, hidden)
        # the output node by its full name, outside any scope
        if policy.action_spec.kind == "discrete":
            tf.nn.softmax(out, name=POLICY_OUTPUT)
        else:
            tf.identity(out, name=POLICY_OUTPUT)
        graph_def = graph.as_graph_def()
    graph_def = tf.graph_util.extract_sub_graph(graph_def, [POLICY_OUTPUT])
    _strip_default_attrs(graph_def)
    return graph_def


def _strip_default_attrs(graph_def: GraphDef) -> None:
    """Drop attributes that hold their op's default value, in place.

    TF 2.x writes attributes newer than the TF 1.x the car's converters were built against (MatMul's
    ``grad_a``/``grad_b``, Conv2D's ``explicit_paddings``); an older importer rejects attributes it does not
    know, and fills defaults in for the ones left out — TensorFlow's own forward-compatibility rule
    (``strip_default_attrs`` of its SavedModel writer).
    """
    from tensorflow.python.framework import op_def_registry

    for node in graph_def.node:
        op_def = op_def_registry.get(node.op)
        for attr in op_def.attr:
            if attr.HasField("default_value") and attr.name in node.attr and node.attr[attr.name] == attr.default_value:
                del node.attr[attr.name]


def run_graph_def(graph_def: GraphDef | bytes, feed: Mapping[str, np.ndarray], batch: int = 64) -> np.ndarray:
    """Run a car ``GraphDef`` (or ``model.pb`` bytes) in TensorFlow, fetching :data:`POLICY_OUTPUT` by name.

    ``feed`` maps input names to arrays with the batch first; run in chunks of ``batch`` rows.
    """
    tf = _tf()
    parsed = tf.GraphDef()  # a copy: import_graph_def writes default attributes back into its argument
    parsed.ParseFromString(bytes(graph_def) if isinstance(graph_def, bytes | bytearray) else
                           graph_def.SerializeToString())
    graph_def = parsed
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    rows = len(next(iter(feed.values())))
    outputs = []
    with tf.Session(graph=graph) as session:
        output = graph.get_tensor_by_name(POLICY_OUTPUT + ":0")
        for start in range(0, rows, batch):
            chunk = {graph.get_tensor_by_name(name + ":0"): array[start:start + batch] for name, array in feed.items()}
            outputs.append(session.run(output, chunk))
    return np.concatenate(outputs).astype(np.float32)


def _self_check(policy: PolicyNetwork, model_pb: bytes) -> float:
    """Max |TF - PyTorch| on a small fixed batch of synthetic inputs; raises when above the tolerance."""
    rng = np.random.default_rng(0)
    obs: dict[str, np.ndarray] = {}
    for sensor in (policy.camera_sensor, policy.lidar_sensor):
        if sensor is None:
            continue
        shape = (4, *policy.observation_spec[sensor])
        camera = sensor == policy.camera_sensor
        obs[sensor] = rng.integers(0, 256, shape).astype(np.uint8) if camera else rng.random(shape, np.float32)
    diff = float(np.abs(run_graph_def(model_pb, car_feed(policy, obs)) - torch_policy_output(policy, obs)).max())
    if not diff <= SELF_CHECK_TOLERANCE:
        raise CarExportError(f"the TensorFlow graph disagrees with the PyTorch policy by {diff:.3g} "
                             f"(tolerance {SELF_CHECK_TOLERANCE}); nothing was written")
    return diff


def export_car(policy: PolicyNetwork, model_metadata: Mapping[str, Any], output: Path) -> Path:
    """Write the car's ``.tar.gz`` (``agent/model.pb`` + ``model_metadata.json``) for ``policy`` to ``output``.

    ``model_metadata`` is the run's parsed ``model_metadata.json``; it is written as is (the car reads its
    ``action_space``, ``action_space_type``, ``sensor`` and ``training_algorithm``). Before writing, the
    frozen graph is run in TensorFlow on a small batch and compared with the PyTorch policy
    (:data:`SELF_CHECK_TOLERANCE`). Raises :class:`CarExportError` (missing extra, SAC, what the car
    cannot feed, a failed self-check); nothing is written then. Returns ``output``.
    """
    algorithm = str(model_metadata.get("training_algorithm", "clipped_ppo")).strip().lower()
    if algorithm != "clipped_ppo":
        raise CarExportError(f"model_metadata.json training_algorithm {algorithm!r}: only clipped_ppo is exported")
    model_pb = build_graph_def(policy).SerializeToString()
    _self_check(policy, model_pb)
    metadata_json = (json.dumps(dict(model_metadata), indent=2) + "\n").encode()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for name, data in ((MODEL_PB, model_pb), (MODEL_METADATA_JSON, metadata_json)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    partial.replace(output)  # a half-written archive never carries the final name
    return output


def export_car_model(model: TrainedModel, output: Path) -> Path:
    """:func:`export_car` for a loaded run version (``hotlap export --format car``), with the run's own
    ``model_metadata.json``; an entry of ``hotlap.export.EXPORTERS``."""
    from shared.store import MODEL_METADATA

    return export_car(model.policy, json.loads(model.store.get_text(MODEL_METADATA)), output)


def read_car_tar(path: Path) -> tuple[bytes, dict[str, Any]]:
    """(``agent/model.pb`` bytes, parsed ``model_metadata.json``) of a car archive. Raises CarExportError
    naming the file when a member is missing."""
    with tarfile.open(path, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        missing = [name for name in (MODEL_PB, MODEL_METADATA_JSON) if name not in members]
        if missing:
            raise CarExportError(f"{path}: missing {', '.join(missing)} (has {sorted(members)})")
        model_pb = tar.extractfile(members[MODEL_PB]).read()  # type: ignore[union-attr]
        metadata = json.loads(tar.extractfile(members[MODEL_METADATA_JSON]).read())  # type: ignore[union-attr]
    return model_pb, metadata
