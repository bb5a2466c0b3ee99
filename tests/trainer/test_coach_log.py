"""DeepRacer's trainer logs (issue 6 items 13, 14): rl_coach's screen lines and episode CSV.

The lines are checked with the parsers DeepRacer users run on them: the SageMaker metric regexes of
DeepRacer's notebooks and DRfC (``Entropy=(.*?),``) and the log-analysis notebooks' split parser.
The CSV is checked against the header the seed article shows and read with pandas.
"""

from __future__ import annotations

import io
import logging
import re

import numpy as np
import pandas as pd
import pytest
import torch

from shared.deepracer_logs import COACH_EPISODE_COLUMNS, policy_training_line, training_episode_line
from shared.experience import Experience
from shared.logs import COACH_LOGGER
from shared.networks import ActionSpec, PolicyNetwork
from trainer.coach_log import CoachLog, discounted_returns
from trainer.ppo import PPOSettings, compute_gae, make_optimizer, ppo_update

# The seed article's "Extract of the Episode CSV file" (rl_coach's Logger; deepracer-formats.md §5.4).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEED_HEADER = (
    "Episode #,Training Iter,In Heatup,ER #Transitions,ER #Episodes,Episode Length,Total steps,Epsilon,"
    "Shaped Training Reward,Training Reward,Update Target Network,Wall-Clock Time,Evaluation Reward,"
    "Shaped Evaluation Reward,Success Rate,Loss/Mean,Loss/Stdev,Loss/Max,Loss/Min,Learning Rate/Mean,"
    "Learning Rate/Stdev,Learning Rate/Max,Learning Rate/Min,Grads (unclipped)/Mean,Grads (unclipped)/Stdev,"
    "Grads (unclipped)/Max,Grads (unclipped)/Min,Discounted Return/Mean,Discounted Return/Stdev,"
    "Discounted Return/Max,Discounted Return/Min,Entropy/Mean,Entropy/Stdev,Entropy/Max,Entropy/Min,"
    "Advantages/Mean,Advantages/Stdev,Advantages/Max,Advantages/Min,Values/Mean,Values/Stdev,Values/Max,"
    "Values/Min,Value Loss/Mean,Value Loss/Stdev,Value Loss/Max,Value Loss/Min,Policy Loss/Mean,"
    "Policy Loss/Stdev,Policy Loss/Max,Policy Loss/Min,Value Targets/Mean,Value Targets/Stdev,"
    "Value Targets/Max,Value Targets/Min,KL Divergence/Mean,KL Divergence/Stdev,KL Divergence/Max,"
    "KL Divergence/Min,Likelihood Ratio/Mean,Likelihood Ratio/Stdev,Likelihood Ratio/Max,"
    "Likelihood Ratio/Min,Clipped Likelihood Ratio/Mean,Clipped Likelihood Ratio/Stdev,"
    "Clipped Likelihood Ratio/Max,Clipped Likelihood Ratio/Min"
)
# SageMaker metric definitions of DeepRacer's training notebooks; DRfC's start.py uses the Entropy one.
SAGEMAKER_METRICS = {
    "reward-training": r"^Training>.*Total reward=(.*?),",
    "ppo-surrogate-loss": r"^Policy training>.*Surrogate loss=(.*?),",
    "ppo-entropy": r"^Policy training>.*Entropy=(.*?),",
}


def log_analysis_parse(line: str) -> dict[str, float]:
    """The community log-analysis notebooks' parser: split on ',' and '=' by position."""
    fields = line.split(",")
    if "Policy training>" in line:
        return {"loss": float(fields[0].split("=")[1]), "kl": float(fields[1].split("=")[1]),
                "entropy": float(fields[2].split("=")[1]), "epoch": int(fields[3].split("=")[1])}
    return {"episode": int(fields[2].split("=")[1]), "reward": float(fields[3].split("=")[1]),
            "steps": int(fields[4].split("=")[1]), "iteration": int(fields[5].split("=")[1])}


def test_lines_read_by_deepracer_parsers() -> None:
    rollout = training_episode_line(worker=1, episode=7, total_reward=12.345678, steps=420, iteration=3)
    assert rollout == ("Training> Name=main_level/agent, Worker=1, Episode=7, Total reward=12.35, Steps=420, "
                       "Training iteration=3")
    assert float(re.match(SAGEMAKER_METRICS["reward-training"], rollout).group(1)) == 12.35  # type: ignore[union-attr]
    assert log_analysis_parse(rollout) == {"episode": 7, "reward": 12.35, "steps": 420, "iteration": 3}

    epoch = policy_training_line(-0.0123, 0.0042, 1.5986, 2, 0.0003)
    assert epoch == ("Policy training> Surrogate loss=-0.0123, KL divergence=0.0042, Entropy=1.5986, "
                     "training epoch=2, learning_rate=0.0003")
    assert float(re.match(SAGEMAKER_METRICS["ppo-entropy"], epoch).group(1)) == 1.5986  # type: ignore[union-attr]
    assert float(re.match(SAGEMAKER_METRICS["ppo-surrogate-loss"], epoch).group(1)) == -0.0123  # type: ignore[union-attr]
    assert log_analysis_parse(epoch) == {"loss": -0.0123, "kl": 0.0042, "entropy": 1.5986, "epoch": 2}


def test_header_is_the_seed_articles() -> None:
    assert ",".join(COACH_EPISODE_COLUMNS) == SEED_HEADER


def lidar_episodes(count: int, rng: np.random.Generator) -> list[Experience]:
    episodes = []
    for i in range(count):
        steps = int(rng.integers(5, 30))
        episodes.append(Experience(
            run_id="r", worker_name=f"w{i % 2}", worker_index=i % 2, model_version=0, episode=i,
            observations={"LIDAR": rng.uniform(0.15, 1.0, (steps, 64)).astype(np.float32)},
            actions=rng.integers(0, 3, steps), log_probs=np.full(steps, np.log(1 / 3), np.float32),
            values=rng.normal(0, 1, steps).astype(np.float32), rewards=rng.uniform(0, 1, steps).astype(np.float32),
            terminated=bool(i % 3), bootstrap_value=0.5, status="off_track", progress=10.0 * i,
        ))
    return episodes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def train_two_iterations(caplog: pytest.LogCaptureFixture) -> tuple[CoachLog, list[list[Experience]],
                                                                    list[list[dict[str, float]]]]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    settings = PPOSettings(num_epochs=3, batch_size=16)
    policy = PolicyNetwork({"LIDAR": (64,)}, "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
                           ActionSpec("discrete", ((-10.0, 1.0), (0.0, 1.0), (10.0, 1.0))))
    optimizer = make_optimizer(policy, settings)
    clock = Clock()
    coach = CoachLog(settings, clock=clock)
    batches, epochs = [], []
    with caplog.at_level(logging.INFO, logger=COACH_LOGGER):
        for iteration in range(2):
            batch = lidar_episodes(4, rng)
            coach.rollouts(iteration, batch)
            seen: list[dict[str, float]] = []

            def on_epoch(epoch: int, metrics: dict[str, float], seen: list[dict[str, float]] = seen) -> None:
                seen.append(metrics)
                coach.on_epoch(epoch, metrics)

            ppo_update(policy, optimizer, batch, settings, torch.device("cpu"), on_epoch=on_epoch)
            clock.now += 7.5
            coach.add_iteration(iteration, batch)
            batches.append(batch)
            epochs.append(seen)
    return coach, batches, epochs


def test_lines_and_csv_hold_what_the_update_saw(caplog: pytest.LogCaptureFixture) -> None:
    coach, batches, epochs = train_two_iterations(caplog)
    episodes = [e for batch in batches for e in batch]
    lines = [r.getMessage() for r in caplog.records if r.name == COACH_LOGGER]
    rollouts = [log_analysis_parse(line) for line in lines if line.startswith("Training>")]
    assert [r["episode"] for r in rollouts] == list(range(1, 9))
    assert [r["steps"] for r in rollouts] == np.cumsum([e.num_steps for e in episodes]).tolist()
    assert [r["iteration"] for r in rollouts] == [0] * 4 + [1] * 4
    assert [r["reward"] for r in rollouts] == [round(e.total_reward, 2) for e in episodes]
    entropies = [float(m.group(1)) for line in lines if (m := re.match(SAGEMAKER_METRICS["ppo-entropy"], line))]
    assert entropies == [m["entropy"] for seen in epochs for m in seen]  # one line per epoch, values exact

    text = coach.csv()
    assert text.splitlines()[0] == SEED_HEADER
    frame = pd.read_csv(io.StringIO(text), index_col="Episode #")
    assert list(frame.index) == list(range(1, 9)) and len(frame.columns) == 66
    assert frame["Training Iter"].tolist() == [0] * 4 + [1] * 4
    assert frame["ER #Episodes"].tolist() == [1, 2, 3, 4] * 2
    assert frame["Episode Length"].tolist() == [e.num_steps for e in episodes]
    assert frame["Total steps"].tolist() == np.cumsum([e.num_steps for e in episodes]).tolist()
    assert frame["ER #Transitions"].tolist() == [
        *np.cumsum([e.num_steps for e in batches[0]]), *np.cumsum([e.num_steps for e in batches[1]])]
    np.testing.assert_allclose(frame["Training Reward"], [e.total_reward for e in episodes])
    assert frame["Wall-Clock Time"].tolist() == [0.0] * 4 + [7.5] * 4
    assert frame[["Epsilon", "Evaluation Reward", "Shaped Evaluation Reward", "Success Rate"]].isna().all().all()
    assert (frame["In Heatup"] == 0).all() and (frame["Update Target Network"] == 0).all()
    for iteration, seen in enumerate(epochs):
        rows = frame[frame["Training Iter"] == iteration]
        for column, key in (("Entropy", "entropy"), ("Policy Loss", "policy_loss"), ("KL Divergence", "approx_kl"),
                            ("Learning Rate", "learning_rate"), ("Clipped Likelihood Ratio",
                                                                 "clipped_likelihood_ratio")):
            values = [m[key] for m in seen]
            np.testing.assert_allclose(rows[f"{column}/Mean"], np.mean(values))
            np.testing.assert_allclose(rows[f"{column}/Max"], max(values))
            np.testing.assert_allclose(rows[f"{column}/Stdev"], np.std(values))
    first = episodes[0]
    returns = discounted_returns(first.rewards, 0.999)
    assert frame.loc[1, "Discounted Return/Max"] == pytest.approx(returns.max())
    _, targets = compute_gae(first.rewards, first.values, first.terminated, first.bootstrap_value, 0.999, 0.95)
    assert frame.loc[1, "Value Targets/Mean"] == pytest.approx(float(targets.mean()))
    assert frame.loc[1, "Values/Min"] == pytest.approx(float(first.values.min()))
    advantages = frame.loc[1:4, "Advantages/Mean"] * frame.loc[1:4, "Episode Length"]
    assert advantages.sum() == pytest.approx(0.0, abs=1e-4)  # standardised over the iteration's batch


def test_a_resumed_trainer_continues_the_numbering(caplog: pytest.LogCaptureFixture) -> None:
    coach, _, _ = train_two_iterations(caplog)
    resumed = CoachLog(PPOSettings(), clock=Clock())
    resumed.resume(coach.csv(), latest=1)  # version 1 published; iteration 1 is trained again
    assert resumed.rows == coach.rows[:4]
    assert resumed.episodes == 4 and resumed.total_steps == sum(int(r[5]) for r in coach.rows[:4])
