"""`hotlap export`: a trained policy in a format other tools load.

Every format starts from :class:`CarPolicy`, the policy as DeepRacer's car feeds and reads it
(deepracer-formats.md §12):

- inputs, one per sensor, named by sensor (``FRONT_FACING_CAMERA``, ``STEREO_CAMERAS``, ``LIDAR``,
  ``SECTOR_LIDAR``), batch first: a camera as NHWC float32 ``(B, 120, 160, C)`` of raw 0–255 pixel
  values, scaled by 1/255 inside the graph (C = 1 grayscale, 2 stereo, times ``stack_size``, the
  oldest observation first); a lidar as float32 ``(B, N)`` metres (N = 64 or 8, times ``stack_size``);
- one output ``policy``: for discrete actions the probabilities ``(B, num_actions)``, in
  ``model_metadata.json``'s action order (the car takes the argmax); for continuous actions the
  policy's mean ``(B, 2)`` (steering, speed) in DeepRacer's normalised [-1, 1] units, which the car
  clamps to [-1, 1] and maps linearly onto the metadata's low/high — hotlap's greedy action.

Formats are entries of :data:`EXPORTERS` (name -> function writing one file); ``onnx`` is here. A
TensorFlow ``car`` format (the ``.tar.gz`` with ``agent/model.pb``) can be added beside it and reuse
:class:`CarPolicy` and :func:`car_inputs` for the same inputs and outputs.

ONNX needs the optional extra: ``pip install -e '.[export]'`` (onnx for the checks here, onnxruntime
to run the file).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from hotlap.errors import ExportError
from hotlap.export_car import car_array, export_car_model
from hotlap.models import TrainedModel
from shared.networks import PolicyNetwork

ONNX_OPSET = 17
POLICY_OUTPUT = "policy"
ONNX_INSTALL_HINT = "ONNX export needs onnx (and onnxruntime to run the file): pip install -e '.[export]'"


@dataclass(frozen=True)
class CarInput:
    """One input of the exported graph: its name (the sensor) and shape with the batch dimension first."""

    name: str
    shape: tuple[int, ...]  # (B, H, W, C) for a camera, (B, N) for a lidar; B is dynamic
    camera: bool


def car_inputs(policy: PolicyNetwork) -> list[CarInput]:
    """The inputs of ``policy`` as the car feeds them: camera first, then lidar."""
    inputs = []
    for sensor in (policy.camera_sensor, policy.lidar_sensor):
        if sensor is None:
            continue
        shape = policy.observation_spec[sensor]
        if sensor == policy.camera_sensor:
            channels = 1 if len(shape) == 2 else shape[0]
            inputs.append(CarInput(sensor, (1, shape[-2], shape[-1], channels), True))
        else:
            inputs.append(CarInput(sensor, (1, *shape), False))
    return inputs


def car_observation(policy: PolicyNetwork, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The simulator's observation batch ``{sensor: (B, ...)}`` in the car's layout (float32, NHWC camera)."""
    return {spec.name: car_array(obs[spec.name], spec.camera) for spec in car_inputs(policy)}



class CarPolicy(nn.Module):
    """``policy`` with the car's inputs and output (see the module docstring); no value head, no sampling."""

    def __init__(self, policy: PolicyNetwork) -> None:
        super().__init__()
        self.policy = policy
        self.inputs = car_inputs(policy)
        self.discrete = policy.action_spec.kind == "discrete"

    def forward(self, *inputs: Tensor) -> Tensor:
        obs = {}
        for spec, x in zip(self.inputs, inputs, strict=True):
            if spec.camera:
                # NHWC -> the network's (B, H, W) grayscale or (B, C, H, W); it scales by 1/255 itself.
                x = x[..., 0] if len(self.policy.observation_spec[spec.name]) == 2 else x.permute(0, 3, 1, 2)
            obs[spec.name] = x
        dist, _ = self.policy(obs)
        if self.discrete:
            return torch.softmax(dist.logits, dim=-1)
        return dist.mean


def export_onnx(model: TrainedModel, output: Path) -> Path:
    """Write ``model``'s policy as an ONNX graph (opset 17) with the car's inputs and ``policy`` output.

    ``model_metadata.json`` rides along in the graph's metadata (key ``model_metadata.json``), with the
    run, version and input layout. Raises ExportError when the ``export`` extra is missing.
    """
    try:
        import onnx
    except ImportError as e:
        raise ExportError(ONNX_INSTALL_HINT) from e
    car = CarPolicy(model.policy).eval()
    examples = tuple(torch.zeros(spec.shape) for spec in car.inputs)
    names = [spec.name for spec in car.inputs]
    output.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # torch 2.13's default exporter needs onnxscript; the TorchScript one is complete for these networks.
        # The shape checks in the network's forward are constants of the trace (B is the only free axis).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(car, examples, str(output), dynamo=False, opset_version=ONNX_OPSET, input_names=names,
                          output_names=[POLICY_OUTPUT],
                          dynamic_axes={name: {0: "batch"} for name in [*names, POLICY_OUTPUT]})
    graph = onnx.load(str(output))
    props = {
        "model_metadata.json": model.files.metadata.to_json(),
        "hotlap.run": model.store.url,
        "hotlap.model_version": str(model.version),
        "hotlap.inputs": json.dumps({s.name: {"shape": ["batch", *s.shape[1:]],
                                              "layout": "NHWC, 0-255" if s.camera else "metres"} for s in car.inputs}),
        "hotlap.output": "probabilities" if car.discrete else "mean, normalised [-1, 1] (steering, speed)",
    }
    onnx.helper.set_model_props(graph, props)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(output))
    return output


DROA_REFUSAL = (
    "--format droa: DeepRacer on AWS imports only a full rl_coach TensorFlow checkpoint (.coach_checkpoint, "
    ".index, .data, .meta with rl_coach's variable names), which its validator restores into rl_coach's own "
    "graph; hotlap trains in PyTorch, has no rl_coach graph to save from and nothing here can check that an "
    "import would pass, so it does not write one (deepracer-formats.md §12; docs/export.md). "
    "For a physical car use --format car"
)

Exporter = Callable[[TrainedModel, Path], Path]
EXPORTERS: dict[str, Exporter] = {"onnx": export_onnx, "car": export_car_model}
SUFFIXES = {"onnx": ".onnx", "car": "-car.tar.gz"}


def check_format(fmt: str) -> None:
    """Raise ExportError for ``droa`` (with the reason) or an unknown format, before any model is loaded."""
    if fmt == "droa":
        raise ExportError(DROA_REFUSAL)
    if fmt not in EXPORTERS:
        raise ExportError(f"--format {fmt!r}: unknown; available: {', '.join(EXPORTERS)}")


def default_output(model: TrainedModel, fmt: str) -> Path:
    """``<run name>-v<version><suffix>`` in the current folder."""
    name = model.store.url.split(" at ")[0].rstrip("/").rsplit("/", 1)[-1] or "model"
    return Path(f"{name}-v{model.version}{SUFFIXES[fmt]}")


def export(model: TrainedModel, fmt: str, output: Path | None = None) -> Path:
    """Export in format ``fmt`` (a key of EXPORTERS). Raises ExportError for an unknown format."""
    if fmt not in EXPORTERS:
        raise ExportError(f"--format {fmt!r}: unknown; available: {', '.join(EXPORTERS)}")
    return EXPORTERS[fmt](model, output or default_output(model, fmt))
