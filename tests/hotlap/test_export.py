"""`hotlap export --format onnx`: the ONNX graph, run by onnxruntime, against the PyTorch policy on
1,000 real simulator frames per sensor/network/action-space combination.

Most combinations use model version 0 as a run publishes it (the run's files seeded by hotlap's seed
code, the policy built from them, its weights published through the model store): random initial
weights exercise every layer as well as trained ones. The trained run of the session is exported too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hotlap.cli import main as cli_main
from hotlap.errors import ExportError
from hotlap.export import POLICY_OUTPUT, car_inputs, car_observation, export
from hotlap.models import TrainedModel, load_model, open_run
from hotlap.seed import seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings
from shared.networks import architecture, state_to_bytes
from shared.run_files import RunFiles
from shared.store import ModelStore, StoreError, open_store
from simulator.env import EnvSettings, VectorRacingEnv
from simulator.stacking import ObservationStack
from simulator.track import load_track

ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
onnx = pytest.importorskip("onnx", reason="the export extra is not installed")

FRAMES = 1000
CARS = 20
MAX_ABS_DIFF = 1e-4
MIN_AGREEMENT = 0.999
DISCRETE = [{"steering_angle": s, "speed": v} for s, v in ((-30, 1.0), (-15, 2.0), (0, 3.5), (15, 2.0), (30, 1.0))]
CONTINUOUS = {"steering_angle": {"low": -30, "high": 30}, "speed": {"low": 0.5, "high": 4.0}}

COMBINATIONS = [  # (sensors, network, action space, stack_size)
    (("FRONT_FACING_CAMERA",), "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "discrete", 1),
    (("FRONT_FACING_CAMERA",), "DEEP_CONVOLUTIONAL_NETWORK", "discrete", 1),
    (("FRONT_FACING_CAMERA",), "DEEP_CONVOLUTIONAL_NETWORK_DEEP", "discrete", 1),
    (("FRONT_FACING_CAMERA",), "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "continuous", 1),
    (("STEREO_CAMERAS",), "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "discrete", 1),
    (("STEREO_CAMERAS", "LIDAR"), "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "continuous", 1),
    (("FRONT_FACING_CAMERA", "SECTOR_LIDAR"), "DEEP_CONVOLUTIONAL_NETWORK", "continuous", 1),
    (("FRONT_FACING_CAMERA", "LIDAR"), "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "discrete", 2),
]


def simulator_frames(sensors: tuple[str, ...], stack_size: int) -> dict[str, np.ndarray]:
    """FRAMES observations from the simulator: CARS cars on re:Invent 2018 with varied steering and
    speed, restarted when done, stacked as the workers stack them."""
    env = VectorRacingEnv(load_track("reinvent_base"), CARS, EnvSettings(sensors=sensors, max_steps=200),
                          reward_function=lambda params: 0.0, seed=3)
    stack = ObservationStack(stack_size)
    rng = np.random.default_rng(7)
    obs = stack.reset(env.reset())
    batches: dict[str, list[np.ndarray]] = {name: [] for name in obs}
    steering = rng.uniform(-12, 12, CARS)
    for _ in range(FRAMES // CARS):
        for name, rows in obs.items():
            batches[name].append(rows)
        steering = np.clip(steering + rng.normal(0, 4, CARS), -30, 30)
        result = env.step(steering, rng.uniform(0.5, 3.0, CARS))
        obs = stack.push(result.obs)
        if result.done.any():
            done = np.flatnonzero(result.done)
            obs = stack.reset(env.reset(car_ids=done), done)
    return {name: np.concatenate(rows) for name, rows in batches.items()}


def published_version_0(tmp_path: Path, sensors: tuple[str, ...], network: str, kind: str,
                        stack_size: int) -> TrainedModel:
    metadata = ModelMetadata.parse(json.dumps({
        "action_space": DISCRETE if kind == "discrete" else CONTINUOUS, "action_space_type": kind,
        "sensor": list(sensors), "neural_network": network, "version": "5"}))
    files = RunFiles(RunSettings(), metadata, Hyperparameters.model_validate({"stack_size": stack_size}),
                     "def reward_function(params):\n    return 1.0\n")
    store = ModelStore(open_store(f"file://{tmp_path / 'run'}"))
    seed_store(store, files)
    torch.manual_seed(0)
    policy = files.build_policy()
    store.publish_version(0, state_to_bytes(policy), architecture(policy))  # as the trainer's manifest has it
    return load_model(store, "last")


def compare(model: TrainedModel, onnx_file: Path, frames: dict[str, np.ndarray]) -> tuple[float, float]:
    """(max abs difference of the outputs, fraction of frames where the chosen action agrees)."""
    policy = model.policy
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [s.name for s in car_inputs(policy)]
    assert [o.name for o in session.get_outputs()] == [POLICY_OUTPUT]
    diffs, agree = [], 0
    for start in range(0, FRAMES, 250):
        batch = {name: rows[start:start + 250] for name, rows in frames.items()}
        (got,) = session.run(None, car_observation(policy, batch))
        with torch.no_grad():
            dist, _ = policy(policy._to_tensors(batch))
        greedy = policy.act(batch, deterministic=True)
        if policy.action_spec.kind == "discrete":
            want = torch.softmax(dist.logits, -1).numpy()
            assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)  # probabilities
            agree += int((got.argmax(axis=1) == greedy.action).sum())
        else:
            want = dist.mean.numpy()
            steering, speed = policy.env_actions(np.clip(got, -1.0, 1.0))  # what the car does with the output
            same = (np.abs(steering - greedy.steering_deg) < 1e-2) & (np.abs(speed - greedy.speed) < 1e-3)
            agree += int(same.sum())
        diffs.append(float(np.abs(got - want).max()))
    return max(diffs), agree / FRAMES


@pytest.mark.slow  # 8 × 1,000 frames through PyTorch and onnxruntime: ~45 s of CPU
@pytest.mark.parametrize(("sensors", "network", "kind", "stack_size"), COMBINATIONS,
                         ids=["-".join((*s, n.removeprefix("DEEP_CONVOLUTIONAL_NETWORK") or "_DEEPCONV", k,
                                        f"stack{st}")) for s, n, k, st in COMBINATIONS])
def test_onnx_matches_the_pytorch_policy_on_simulator_frames(sensors: tuple[str, ...], network: str, kind: str,
                                                             stack_size: int, tmp_path: Path, one_torch_thread: None):
    model = published_version_0(tmp_path, sensors, network, kind, stack_size)
    onnx_file = export(model, "onnx", tmp_path / "policy.onnx")
    diff, agreement = compare(model, onnx_file, simulator_frames(sensors, stack_size))
    print(f"{'+'.join(sensors)} {network} {kind} stack {stack_size}: max abs diff {diff:.2e}, "
          f"agreement {agreement:.4f}")
    assert diff <= MAX_ABS_DIFF and agreement >= MIN_AGREEMENT


def test_onnx_graph_has_the_cars_inputs_and_the_models_metadata(tmp_path: Path, one_torch_thread: None):
    model = published_version_0(tmp_path, ("STEREO_CAMERAS", "LIDAR"), "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
                                "discrete", 1)
    graph = onnx.load(str(export(model, "onnx", tmp_path / "p.onnx")))
    shapes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert shapes == {"STEREO_CAMERAS": ["batch", 120, 160, 2], "LIDAR": ["batch", 64]}  # NHWC, raw pixels
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props["model_metadata.json"])["sensor"] == ["STEREO_CAMERAS", "LIDAR"]
    assert props["hotlap.model_version"] == "0"
    # pixels are scaled inside the graph: an all-255 image gives other probabilities than an all-1 image
    session = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    lidar = np.ones((1, 64), np.float32)
    bright = session.run(None, {"STEREO_CAMERAS": np.full((1, 120, 160, 2), 255, np.float32), "LIDAR": lidar})[0]
    with torch.no_grad():
        dist, _ = model.policy({"STEREO_CAMERAS": torch.full((1, 2, 120, 160), 255, dtype=torch.uint8),
                                "LIDAR": torch.from_numpy(lidar)})
    np.testing.assert_allclose(bright, torch.softmax(dist.logits, -1).numpy(), atol=MAX_ABS_DIFF)


def test_unknown_format_and_missing_extra_are_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model = published_version_0(tmp_path, ("FRONT_FACING_CAMERA",), "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
                                "discrete", 1)
    with pytest.raises(ExportError, match="--format 'tflite': unknown; available: onnx"):
        export(model, "tflite")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ExportError, match=r"pip install -e '\.\[export\]'"):
        export(model, "onnx", tmp_path / "p.onnx")
    assert not (tmp_path / "p.onnx").exists()


@pytest.mark.slow
def test_export_the_trained_run_from_the_command_line(trained_run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str], one_torch_thread: None):
    output = tmp_path / "best.onnx"
    assert cli_main(["export", str(trained_run), "--version", "best", "--format", "onnx",
                     "--output", str(output)]) == 0
    assert "wrote" in capsys.readouterr().out
    model = load_model(open_run(str(trained_run)), "best")
    diff, agreement = compare(model, output, simulator_frames(model.sensors, model.stack_size))
    print(f"trained model version {model.version}: max abs diff {diff:.2e}, agreement {agreement:.4f}")
    assert diff <= MAX_ABS_DIFF and agreement >= MIN_AGREEMENT


def test_a_version_of_another_network_is_refused_naming_it(tmp_path: Path):
    model = published_version_0(tmp_path, ("FRONT_FACING_CAMERA",), "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
                                "discrete", 1)
    store = model.store
    store.publish_version(1, state_to_bytes(model.policy),
                          {**architecture(model.policy), "network": "DEEP_CONVOLUTIONAL_NETWORK_DEEP"})
    with pytest.raises(StoreError, match="model/1 was trained with another network"):
        load_model(store, "1")
