from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hotlap.cli import main as cli_main
from hotlap.render import drive, render_figure, render_png
from hotlap.seed import seed_store
from shared.config import Hyperparameters, ModelMetadata, RunSettings, observation_shapes
from shared.networks import ActionSpec, PolicyNetwork, architecture, state_to_bytes
from shared.run_files import RunFiles
from shared.store import ModelStore, open_store
from simulator.env import EnvSettings, StepResult, VectorRacingEnv
from simulator.track import load_track


def test_render_shows_camera_frames_and_a_full_lap(tmp_path: Path):
    output = tmp_path / "render.png"
    result = render_png(load_track("reInvent2019_track"), ("FRONT_FACING_CAMERA",), output, steps=600, frames=4)
    assert result.status == "lap_complete" and result.progress == 100.0
    with Image.open(output) as image:
        assert image.format == "PNG" and 800 <= image.size[0] <= 2000 and 600 <= image.size[1] <= 2000
        pixels = np.asarray(image.convert("RGB"))
    red = (pixels[:, :, 0] > 200) & (pixels[:, :, 1] < 80) & (pixels[:, :, 2] < 80)
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


def test_figure_shows_the_frames_and_the_trajectory_it_drove():
    track = load_track("reInvent2019_track")
    env = VectorRacingEnv(track, 1, EnvSettings(max_steps=120, round_robin_advance=0.0, stagger_starts=False),
                          reward_function=lambda params: 1.0)
    result = drive(env, 120, 3)
    figure = render_figure(result, track, "centre-line pure pursuit")
    frames = [ax for ax in figure.axes if ax.images]
    assert len(frames) == 3
    for ax, frame in zip(frames, result.frames, strict=True):
        np.testing.assert_array_equal(ax.images[0].get_array(), frame)
    (track_ax,) = [ax for ax in figure.axes if not ax.images]
    (trajectory,) = [line for line in track_ax.lines if line.get_label() == "trajectory"]
    np.testing.assert_array_equal(np.column_stack(trajectory.get_data()), result.trajectory)
    assert len(result.trajectory) == 120 and result.status == "time_up"


@pytest.mark.slow  # the trained_run fixture is a real 3-iteration training run
def test_render_drives_a_trained_model_from_a_run_folder(trained_run: Path, tmp_path: Path):
    output = tmp_path / "model.png"
    result = subprocess.run([sys.executable, "-m", "hotlap", "render", "--model", str(trained_run), "--steps", "60",
                             "--frames", "3", "--output", str(output)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"model {trained_run}" in result.stdout
    with Image.open(output) as image:
        image.verify()
