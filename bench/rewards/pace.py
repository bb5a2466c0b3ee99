"""Pace reward at racer scale: progress per step, plus a bonus for the lap (bench/learn.py).

The shape racers use to push lap times down (the "progress / steps" family): the reward is the lap's
mean progress per step so far, scaled so that a 10 s lap of re:Invent 2018 (150 steps at 15 steps/s,
0.67 % per step) earns 20 per step, plus 50 at the step that completes the lap. Stateless, so it runs
unchanged on DeepRacer. Params: deepracer-formats.md §1.
"""

PROGRESS_PER_STEP_SCALE = 30.0  # reward per (% of the lap per step)
LAP_BONUS = 50.0
OFF_TRACK = 1e-3


def reward_function(params):
    if params["is_offtrack"] or not params["all_wheels_on_track"]:
        return OFF_TRACK
    steps = max(params["steps"], 1)
    reward = PROGRESS_PER_STEP_SCALE * params["progress"] / steps
    if params["progress"] >= 100.0:
        reward += LAP_BONUS
    return float(max(reward, OFF_TRACK))
