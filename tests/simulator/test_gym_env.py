from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from simulator.env import EnvSettings
from simulator.gym_env import HotlapRacingEnv, HotlapVectorEnv, follow_center_line
from tests.simulator.synthetic import circle_track

DISCRETE = [(-30.0, 0.6), (-15.0, 0.6), (0.0, 0.6), (15.0, 0.6), (30.0, 0.6)]  # DRfC default action space


@pytest.mark.parametrize(
    "kwargs",
    [
        {"actions": DISCRETE},
        {"settings": EnvSettings(sensors=("STEREO_CAMERAS", "LIDAR"))},
        {"settings": EnvSettings(sensors=("DISCRETIZED_SECTOR_LIDAR",)), "action_low": (-20.0, 1.0)},
    ],
)
def test_single_car_env_passes_gymnasium_check_env(kwargs: dict) -> None:
    env = HotlapRacingEnv(render_mode="rgb_array", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # style advice (normalised Box actions, no spec) is not an error
        check_env(env)
    if "actions" in kwargs:
        assert env.action_space == spaces.Discrete(5)
    else:
        assert isinstance(env.action_space, spaces.Box) and env.action_space.shape == (2,)


def test_single_car_episode_and_render() -> None:
    env = HotlapRacingEnv(track=circle_track(), actions=DISCRETE, render_mode="rgb_array")
    obs, info = env.reset(seed=7)
    assert obs["FRONT_FACING_CAMERA"].shape == (120, 160) and info["status"] == "prepare"
    assert env.render().shape == (120, 160, 3)  # type: ignore[union-attr]
    _, reward, terminated, truncated, info = env.step(2)
    assert (reward, terminated, truncated, info["status"]) == (0.0, False, False, "prepare")
    for _ in range(300):
        _, reward, terminated, truncated, info = env.step(2)  # straight on: leaves the circle
        if terminated or truncated:
            break
    assert terminated and info["status"] == "off_track" and isinstance(reward, float)


def test_seeded_resets_are_reproducible() -> None:
    env = HotlapRacingEnv(settings=EnvSettings(sensors=("LIDAR",)))
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=11)
        for action in ([5.0, 1.0], [-3.0, 2.0], [0.0, 1.5]):
            obs, *_ = env.step(np.array(action, dtype=np.float32))
        runs.append(obs["LIDAR"])
    np.testing.assert_array_equal(runs[0], runs[1])


def test_vector_env_spaces_and_next_step_autoreset() -> None:
    settings = EnvSettings(sensors=("LIDAR",), stagger_starts=False)  # identical cars finish together
    envs = HotlapVectorEnv(3, track=circle_track(), actions=DISCRETE, settings=settings)
    obs, _ = envs.reset(seed=1)
    assert envs.observation_space.contains(obs)
    assert envs.action_space == spaces.MultiDiscrete([5, 5, 5])
    straight = np.full(3, 2)
    for _ in range(300):
        obs, rewards, terminated, truncated, info = envs.step(straight)
        assert envs.observation_space.contains(obs)
        if terminated.any():
            break
    assert terminated.all() and (info["status"] == "off_track").all()
    obs, rewards, terminated, truncated, info = envs.step(straight)  # autoreset step
    assert not terminated.any() and rewards.tolist() == [0.0, 0.0, 0.0]
    assert info["status"].tolist() == ["prepare"] * 3 and info["steps"].tolist() == [0, 0, 0]
    obs, rewards, terminated, truncated, info = envs.step(straight)
    assert info["status"].tolist() == ["prepare"] * 3 and rewards.tolist() == [0.0, 0.0, 0.0]


def test_follow_center_line_example() -> None:
    params = {"track_width": 1.0, "distance_from_center": 0.05}
    assert follow_center_line(params) == 1.0
    assert follow_center_line({**params, "distance_from_center": 0.2}) == 0.5
    assert follow_center_line({**params, "distance_from_center": 0.45}) == 0.1
    assert follow_center_line({**params, "distance_from_center": 0.6}) == 1e-3


@pytest.mark.parametrize(
    "sensors",
    [("FRONT_FACING_CAMERA",), ("STEREO_CAMERAS",), ("FRONT_FACING_CAMERA", "LIDAR"),
     ("STEREO_CAMERAS", "SECTOR_LIDAR"), ("FRONT_FACING_CAMERA", "DISCRETIZED_SECTOR_LIDAR")],
)
def test_observations_kept_across_steps_keep_their_values(sensors):
    """A learner's replay buffer keeps the returned arrays: later steps must not overwrite them."""
    settings = EnvSettings(sensors=sensors, max_steps=8)
    single = HotlapRacingEnv(track="Oval_track", actions=[(0.0, 1.0), (20.0, 1.0)], settings=settings)
    vector = HotlapVectorEnv(3, track="Oval_track", actions=[(0.0, 1.0), (20.0, 1.0)], settings=settings)
    for env, step in ((single, lambda: single.step(1)[0]), (vector, lambda: vector.step(np.ones(3, np.int64))[0])):
        kept = [env.reset(seed=3)[0]]
        copies = [{name: value.copy() for name, value in kept[0].items()}]
        for _ in range(12):  # through episode ends and autoresets
            obs = step()
            kept.append(obs)
            copies.append({name: value.copy() for name, value in obs.items()})
        for obs, copy in zip(kept, copies, strict=True):
            for name in sensors:
                np.testing.assert_array_equal(obs[name], copy[name])
