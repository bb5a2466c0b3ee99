"""The envs as a Stable-Baselines3 or CleanRL user drives them (issue 9: SB3's PPO crashed at its first log line)."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.wrappers.vector import RecordEpisodeStatistics
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.preprocessing import is_image_space

from simulator.env import EnvSettings
from simulator.gym_env import ENV_ID

pytestmark = pytest.mark.filterwarnings("error")  # gymnasium's and SB3's checker warnings are failures


@pytest.mark.slow  # ~20 s of CPU: 3,072 camera steps through SB3's NatureCNN
def test_stable_baselines3_ppo_trains_on_the_camera_env(one_torch_thread: None) -> None:
    env = gymnasium.make(ENV_ID, settings=EnvSettings(sensors=("FRONT_FACING_CAMERA",), max_steps=150))
    sb3_check_env(env.unwrapped)
    assert is_image_space(env.observation_space["FRONT_FACING_CAMERA"], check_channels=True)
    model = PPO("MultiInputPolicy", env, n_steps=512, batch_size=128, n_epochs=2, seed=0, verbose=0)
    model.learn(total_timesteps=3072)  # logs at the end of each rollout: where it used to crash
    assert model.num_timesteps >= 3072
    assert "FRONT_FACING_CAMERA" in model.policy.features_extractor.extractors  # the CNN saw an image
    episodes = list(model.ep_info_buffer)
    assert episodes and all(isinstance(e, dict) and {"r", "l"} <= e.keys() for e in episodes)
    assert all(1 < e["l"] <= 150 for e in episodes)


def test_cleanrl_style_loop_under_record_episode_statistics() -> None:
    """CleanRL's PPO loop reads infos["episode"]["r"] / ["l"] masked by infos["_episode"]."""
    envs = gymnasium.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", actions=None,
                              settings=EnvSettings(sensors=("LIDAR",), max_steps=60))
    envs = RecordEpisodeStatistics(envs)
    envs.action_space.seed(1)
    obs, _ = envs.reset(seed=1)
    own_return, own_length = np.zeros(4), np.zeros(4, dtype=int)
    restarting = np.zeros(4, dtype=bool)
    recorded, expected = [], []
    for _ in range(400):
        obs, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())
        assert envs.observation_space.contains(obs)
        own_return = np.where(restarting, 0.0, own_return + rewards)
        own_length = np.where(restarting, 0, own_length + 1)
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                recorded.append((float(infos["episode"]["r"][i]), int(infos["episode"]["l"][i])))
        done = terminations | truncations
        expected += [(float(own_return[i]), int(own_length[i])) for i in np.flatnonzero(done)]
        restarting = done  # next-step autoreset: the next step of these cars is their reset
    assert len(recorded) >= 8
    assert [length for _, length in recorded] == [length for _, length in expected]
    np.testing.assert_allclose([r for r, _ in recorded], [r for r, _ in expected], rtol=1e-5)
    assert "episode_number" in infos and infos["episode_number"].shape == (4,)
