import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from hotlap.cli import main as cli_main
from hotlap.render import TRAJECTORY_RGB, drive, render_png, write_png
from hotlap.seed import seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings, observation_shapes
from shared.networks import ActionSpec, PolicyNetwork, architecture, state_to_bytes
from shared.run_files import RunFiles
from shared.store import ModelStore, open_store
from simulator.env import EnvSettings, StepResult, VectorRacingEnv
from simulator.track import load_track


def read_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + 3 * width)
    assert (raw[:, 0] == 0).all()  # filter type None on every row
    return raw[:, 1:].reshape(height, width, 3)


def test_png_writer_roundtrip(tmp_path: Path):
    image = np.random.default_rng(1).integers(0, 255, (7, 5, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", image)
    np.testing.assert_array_equal(read_png(tmp_path / "x.png"), image)


def test_render_shows_camera_frames_and_a_full_lap(tmp_path: Path):
    output = tmp_path / "render.png"
    result = render_png(load_track("reInvent2019_track"), ("FRONT_FACING_CAMERA",), output, steps=600, frames=4)
    assert result.status == "lap_complete" and result.progress == 100.0
    image = read_png(output)
    strip_height = 240  # 120-pixel frames at scale 2
    assert image.shape[1] == 4 * 320 + 3 * 4
    frames = image[:strip_height]
    assert frames[-10:, 300:340].std() < 60 and 60 < frames[-10:, 300:340].mean() < 200  # road under the car
    top_down = image[strip_height + 8:]
    red = np.all(top_down == np.array(TRAJECTORY_RGB, np.uint8), axis=2)
    assert red.sum() > 1000  # the trajectory is drawn


class RecordingEnv(VectorRacingEnv):
    """The simulator's env, keeping a copy of every observation it returned."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.returned: list[dict[str, np.ndarray]] = []

    def reset(self, car_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
        obs = super().reset(car_ids)
        self.returned.append({name: rows[0].copy() for name, rows in obs.items()})
        return obs

    def step(self, steering_deg: np.ndarray, speed: np.ndarray, active: np.ndarray | None = None) -> StepResult:
        result = super().step(steering_deg, speed, active)
        self.returned.append({name: rows[0].copy() for name, rows in result.obs.items()})
        return result


def test_render_feeds_a_stacked_model_the_stacks_it_was_trained_on():
    """stack_size 3: at step t the model sees observations t-2, t-1, t; the strip shows frame t."""
    sensors = ["STEREO_CAMERAS", "LIDAR"]
    network = PolicyNetwork(observation_shapes(sensors, 3), "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
                            ActionSpec("discrete", ((-10.0, 1.0), (10.0, 1.0))))
    given: list[dict[str, np.ndarray]] = []

    class Recorder:
        def act(self, obs: dict[str, np.ndarray], deterministic: bool) -> Any:
            given.append({name: rows[0].copy() for name, rows in obs.items()})
            return network.act(obs, deterministic=deterministic)

    env = RecordingEnv(load_track("Oval_track"), 1, EnvSettings(sensors=tuple(sensors), max_steps=12,
                                                                 round_robin_advance=0.0, stagger_starts=False),
                       reward_function=lambda params: 1.0)
    result = drive(env, steps=12, frame_count=12, policy=Recorder(), stack_size=3)
    raw = env.returned
    assert len(given) == len(result.frames) >= 10
    for t, seen in enumerate(given):
        history = [raw[max(i, 0)] for i in range(t - 2, t + 1)]  # the first observation repeats at the start
        for name in sensors:
            np.testing.assert_array_equal(seen[name], np.concatenate([h[name] for h in history]), err_msg=f"{t}")
        np.testing.assert_array_equal(result.frames[t], raw[t]["STEREO_CAMERAS"][0])


def test_hotlap_render_loads_a_model_trained_with_stacked_observations(tmp_path: Path):
    sensors = ["FRONT_FACING_CAMERA", "SECTOR_LIDAR"]
    metadata = ModelMetadata.parse(json.dumps({"action_space": [{"steering_angle": 0, "speed": 1.0}],
                                               "sensor": sensors, "version": "5"}))
    store = ModelStore(open_store(f"file://{tmp_path / 'run'}"))
    seed_store(store, RunFiles(settings=RunSettings(), metadata=metadata,
                               hyperparameters=Hyperparameters.model_validate({"stack_size": 2}),
                               reward_source="def reward_function(params):\n    return 1.0\n"))
    network = PolicyNetwork(observation_shapes(sensors, 2), metadata.neural_network, metadata.action_spec())
    store.publish_version(0, state_to_bytes(network), architecture(network))  # as the trainer writes it
    output = tmp_path / "stacked.png"
    assert cli_main(["render", "--model", store.url, "--steps", "5", "--output", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
