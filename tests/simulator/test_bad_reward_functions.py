"""Bad reward functions, one case each, through the paths a racer meets them on.

Seeding (`hotlap train`, `hotlap seed`, the compose init service) loads the file and calls it once on
the run's track (hotlap.seed.try_reward_function), so each of these is refused before any process
starts, with a message naming the file, the line and the value. A worker calls it inside
simulator.reward.hang_guard on every step; the cases that would end or flood the process
(os._exit, sys.exit, megabytes of print) are run there too, in a child process, since without the
guard they end the process running the test. docs/troubleshooting.md lists each case id.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hotlap.seed import SeedError, UserFiles, prepare_run_files
from shared.config import RunSettings
from simulator.reward import PRINT_LIMIT_BYTES

REPO = Path(__file__).resolve().parents[2]

# case id -> (reward_function.py body, what the message must say besides the file's path)
REFUSED_AT_SEED: dict[str, tuple[str, list[str]]] = {
    "reward-syntax": ("def reward_function(params):\n    return params['progress'] +\n",
               [":2: syntax error", "return params['progress'] +"]),
    "reward-missing-function": ("def reward(params):\n    return 1.0\n", ["no function named 'reward_function'"]),
    "reward-wrong-signature": ("def reward_function(params, speed):\n    return 1.0\n",
                        ["must take exactly one argument", "reward_function(params, speed)"]),
    "reward-exception": ("def reward_function(params):\n    return params['speedd']\n",
                  [":2 in reward_function: KeyError: 'speedd'", "progress = "]),
    "reward-not-a-number": ("def reward_function(params):\n    return 'fast'\n",
                     ["must return a number (float), got str 'fast'"]),
    "reward-none": ("def reward_function(params):\n    x = 1.0\n", ["got NoneType None"]),
    "reward-nan": ("def reward_function(params):\n    return float('nan')\n", ["returned nan (must be finite)"]),
    "reward-inf": ("def reward_function(params):\n    return 1e308 * 10\n", ["returned inf (must be finite)"]),
    "reward-huge": ("def reward_function(params):\n    return 1e6\n", ["reward 1000000.0 out of range [-1e5, 1e5]"]),
    "reward-slow": ("import time\ndef reward_function(params):\n    time.sleep(0.3)\n    return 1.0\n",
             ["over the 0.05 s limit"]),
    "reward-sys-exit": ("import sys\ndef reward_function(params):\n    sys.exit(1)\n",
                 [":3 in reward_function: reward_function called sys.exit(1)"]),
    "reward-os-exit": ("import os\ndef reward_function(params):\n    os._exit(3)\n",
                [":3 in reward_function: reward_function called os._exit(3)"]),
    "reward-sys-exit-on-load": ("import sys\nsys.exit('bye')\n",
                                [":2: error while loading the file: called sys.exit('bye')"]),
    "reward-os-exit-on-load": ("import os\nos._exit(2)\n", [":2: error while loading the file: called os._exit(2)"]),
    "reward-missing-module": ("import racing_line_helpers\n", [":1: error while loading the file: ModuleNotFoundError",
                                                       "racing_line_helpers"]),
    "reward-missing-file": ("def reward_function(params):\n    with open('racing_line.csv') as f:\n"
                     "        return float(len(f.read()))\n",
                     [":2 in reward_function: FileNotFoundError", "racing_line.csv"]),
}


def _reward_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "my_reward.py"
    path.write_text(body)
    return path


@pytest.mark.parametrize("case", sorted(REFUSED_AT_SEED))
def test_seeding_refuses_a_bad_reward_function_naming_file_line_and_value(tmp_path: Path, case: str) -> None:
    body, expected = REFUSED_AT_SEED[case]
    path = _reward_file(tmp_path, body)
    with pytest.raises(SeedError) as caught:
        prepare_run_files(UserFiles(reward_function=path), RunSettings(reward_time_limit_s=0.05), max_iterations=1)
    message = str(caught.value)
    assert str(path) in message
    for text in expected:
        assert text in message, f"{text!r} not in {message}"


def test_a_reward_function_that_never_returns_is_refused_at_seed(tmp_path: Path) -> None:
    path = _reward_file(tmp_path, "def reward_function(params):\n    while True:\n        pass\n")
    with pytest.raises(SeedError) as caught:
        prepare_run_files(UserFiles(reward_function=path), RunSettings(reward_time_limit_s=0.05), max_iterations=1)
    assert f"{path}: reward_function did not return within 5.05 s" in str(caught.value)


# A worker's step, as simulator.worker.RolloutWorker._step_cars runs it: the env calls each car's
# reward function inside hang_guard. Printed: the error, or the reward; the exit status says the rest.
WORKER_STEP = textwrap.dedent("""
    import sys
    import numpy as np
    from simulator.env import EnvSettings, VectorRacingEnv
    from simulator.reward import RewardFunctionError, hang_guard, hang_guard_seconds, load_reward_functions
    from simulator.track import load_track

    source = open(sys.argv[1]).read()
    functions = load_reward_functions(source, 2, "reward_function.py", time_limit_s=1.0)
    env = VectorRacingEnv(load_track("reInvent2019_track"), 2, EnvSettings(sensors=("SECTOR_LIDAR",)), functions)
    env.reset()
    try:
        for _ in range(3):
            with hang_guard(hang_guard_seconds(1.0, 2)):
                rewards = env.step(np.zeros(2), np.ones(2)).reward
    except RewardFunctionError as e:
        print("RewardFunctionError:", e, file=sys.stderr)
        sys.exit(7)
    print("rewards", rewards.tolist(), file=sys.stderr)
""")

# The second call (the first RUN step is call 1) ends the process or floods it, once seeding passed.
ON_A_LATER_STEP = {
    "reward-os-exit-in-a-worker": (
        "import os\ncalls = 0\ndef reward_function(params):\n    global calls\n    calls += 1\n"
        "    if calls == 2:\n        os._exit(0)\n    return 1.0\n",
        7, "reward_function.py:7 in reward_function: reward_function called os._exit(0)"),
    "reward-sys-exit-in-a-worker": (
        "import sys\ncalls = 0\ndef reward_function(params):\n    global calls\n    calls += 1\n"
        "    if calls == 2:\n        sys.exit()\n    return 1.0\n",
        7, "reward_function.py:7 in reward_function: reward_function called sys.exit(None)"),
}


def _run_worker_step(tmp_path: Path, body: str) -> subprocess.CompletedProcess[bytes]:
    path = _reward_file(tmp_path, body)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", WORKER_STEP, str(path)], capture_output=True, timeout=120, env=env,
                          cwd=tmp_path)


@pytest.mark.parametrize("case", sorted(ON_A_LATER_STEP))
def test_a_worker_reports_a_reward_function_that_ends_the_process(tmp_path: Path, case: str) -> None:
    body, status, expected = ON_A_LATER_STEP[case]
    result = _run_worker_step(tmp_path, body)
    assert result.returncode == status, result.stderr.decode()[-2000:]
    assert expected in result.stderr.decode()


def test_a_reward_function_printing_megabytes_is_capped_with_one_warning(tmp_path: Path) -> None:
    """print(params) on every step is common and fine (DeepRacer's logs keep it); 2 MB per call would
    fill the disk: the first PRINT_LIMIT_BYTES of a call pass, the rest is dropped, warned once."""
    body = "def reward_function(params):\n    print('x' * 2_000_000)\n    return 1.0\n"
    result = _run_worker_step(tmp_path, body)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert "rewards [1.0, 1.0]" in result.stderr.decode()
    assert len(result.stdout) <= 6 * PRINT_LIMIT_BYTES  # 2 cars x 2 calls, each capped (+ newline)
    warnings = [line for line in result.stderr.decode().splitlines() if "printed" in line]
    assert len(warnings) == 2  # once per car's reward function
    assert "reward_function.py: reward_function printed 2000001 characters in one call" in warnings[0]


def test_printing_a_line_per_step_is_kept_whole(tmp_path: Path) -> None:
    body = "def reward_function(params):\n    print('progress', params['progress'])\n    return 1.0\n"
    result = _run_worker_step(tmp_path, body)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode().count("progress ") == 4 and "printed" not in result.stderr.decode()


def test_hotlap_seed_shows_an_os_exit_in_the_reward_function_and_exits_2(tmp_path: Path) -> None:
    """What the racer sees: one message and status 2, not a seed that silently exits 3 (without the guard,
    os._exit in the trial call ends `hotlap seed` / `hotlap train` with no word)."""
    path = _reward_file(tmp_path, "import os\ndef reward_function(params):\n    os._exit(3)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOTLAP_STORE_URL": str(tmp_path / "store")}
    result = subprocess.run([sys.executable, "-m", "hotlap", "seed", "--reward-function", str(path)],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("hotlap seed: cannot start the run:")
    assert f"{path}:3 in reward_function: reward_function called os._exit(3)" in result.stderr
    assert not (tmp_path / "store").exists()  # nothing seeded
