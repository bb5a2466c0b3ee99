"""The gymnasium envs follow gymnasium's conventions: any warning of gymnasium's checkers fails a test here."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from simulator.env import EnvSettings
from simulator.gym_env import ENV_ID, HotlapRacingEnv, HotlapVectorEnv, follow_center_line
from tests.simulator.synthetic import circle_track

pytestmark = pytest.mark.filterwarnings("error")  # gymnasium's checker warnings are failures

DISCRETE = [(-30.0, 0.6), (-15.0, 0.6), (0.0, 0.6), (15.0, 0.6), (30.0, 0.6)]  # DRfC default action space


@pytest.mark.parametrize(
    "kwargs",
    [
        {"actions": DISCRETE},
        {"actions": None, "settings": EnvSettings(sensors=("STEREO_CAMERAS", "LIDAR"))},
        {"actions": None, "settings": EnvSettings(sensors=("DISCRETIZED_SECTOR_LIDAR",)), "action_low": (-20.0, 1.0)},
    ],
)
def test_registered_env_passes_gymnasium_check_env(kwargs: dict) -> None:
    env = gymnasium.make(ENV_ID, render_mode="rgb_array", **kwargs)
    assert env.spec is not None and env.spec.id == ENV_ID
    check_env(env.unwrapped)
    if kwargs["actions"]:
        assert env.action_space == spaces.Discrete(5)
    else:
        assert env.action_space == spaces.Box(-1.0, 1.0, (2,), np.float32)


def test_cameras_are_height_width_channel_images() -> None:
    env = gymnasium.make(ENV_ID, settings=EnvSettings(sensors=("FRONT_FACING_CAMERA",)))
    stereo = gymnasium.make(ENV_ID, settings=EnvSettings(sensors=("STEREO_CAMERAS",)))
    assert env.observation_space["FRONT_FACING_CAMERA"].shape == (120, 160, 1)
    assert stereo.observation_space["STEREO_CAMERAS"].shape == (120, 160, 2)
    obs, _ = stereo.reset(seed=0)
    for _ in range(5):
        obs, *_ = stereo.step(2)
    raw = stereo.unwrapped.racing._obs["STEREO_CAMERAS"][0]  # (lenses, H, W) as the simulator renders
    np.testing.assert_array_equal(obs["STEREO_CAMERAS"][:, :, 0], raw[0])  # left lens
    np.testing.assert_array_equal(obs["STEREO_CAMERAS"][:, :, 1], raw[1])  # right lens


@pytest.mark.parametrize("sensors", [("FRONT_FACING_CAMERA",), ("STEREO_CAMERAS", "LIDAR"), ("SECTOR_LIDAR",),
                                     ("DISCRETIZED_SECTOR_LIDAR",)])
def test_observations_stay_inside_the_declared_space(sensors: tuple[str, ...]) -> None:
    """A random drive with resets, under gymnasium.make's passive checker (its warnings are errors here)."""
    env = gymnasium.make(ENV_ID, actions=None, settings=EnvSettings(sensors=sensors, max_steps=40))
    env.action_space.seed(3)
    obs, _ = env.reset(seed=3)
    for _ in range(120):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs), {k: (v.dtype, v.shape) for k, v in obs.items()}
        assert isinstance(reward, float) and "episode" not in info
        if terminated or truncated:
            obs, _ = env.reset()


def test_continuous_actions_are_normalised_to_the_given_bounds() -> None:
    env = HotlapRacingEnv(settings=EnvSettings(sensors=("LIDAR",)), action_low=(-20.0, 1.0), action_high=(10.0, 3.0))
    steering, speed = env._codec.decode(np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [5.0, -7.0]]), 4)
    np.testing.assert_allclose(steering, [-20.0, 10.0, -5.0, 10.0])  # out-of-box actions are clipped
    np.testing.assert_allclose(speed, [1.0, 3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="action_low"):
        HotlapRacingEnv(settings=EnvSettings(sensors=("LIDAR",)), action_low=(10.0, 1.0), action_high=(-10.0, 3.0))


def test_single_car_episode_and_render() -> None:
    env = HotlapRacingEnv(track=circle_track(), actions=DISCRETE, render_mode="rgb_array")
    obs, info = env.reset(seed=7)
    assert obs["FRONT_FACING_CAMERA"].shape == (120, 160, 1) and info["status"] == "prepare"
    assert env.render().shape == (120, 160, 3)  # type: ignore[union-attr]
    _, reward, terminated, truncated, info = env.step(2)
    assert (reward, terminated, truncated, info["status"]) == (0.0, False, False, "prepare")
    for _ in range(300):
        _, reward, terminated, truncated, info = env.step(2)  # straight on: leaves the circle
        if terminated or truncated:
            break
    assert terminated and info["status"] == "off_track" and isinstance(reward, float)
    assert info["episode_number"] == 0 and "episode" not in info  # gymnasium reserves `episode`


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
