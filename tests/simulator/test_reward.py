from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simulator.env import EnvSettings
from simulator.gym_env import HotlapVectorEnv
from simulator.reward import (
    RewardFunction,
    RewardFunctionError,
    decode_reward_source,
    load_reward_function,
    load_reward_functions,
)

PARAMS: dict[str, Any] = {
    "progress": 12.5,
    "track_width": 1.07,
    "distance_from_center": 0.1,
    "waypoints": [(float(i), float(i)) for i in range(155)],
    "all_wheels_on_track": True,
}


def load(body: str, **kwargs: Any) -> RewardFunction:
    return load_reward_function(textwrap.dedent(body), **kwargs)


def failure(body: str, params: dict[str, Any] | None = None, **kwargs: Any) -> str:
    with pytest.raises(RewardFunctionError) as caught:
        load(body, **kwargs)(dict(params or PARAMS))
    return str(caught.value)


def test_a_valid_function_returns_floats() -> None:
    rf = load(
        """
        import math
        def reward_function(params):
            return 1.0 - params["distance_from_center"] / (0.5 * params["track_width"])
        """
    )
    assert rf(dict(PARAMS)) == pytest.approx(1 - 0.1 / 0.535)
    assert isinstance(rf(dict(PARAMS)), float)


@pytest.mark.parametrize("value", ["3", "np.float32(0.5)", "np.int64(2)", "1e5", "-1e5"])
def test_ints_and_numpy_numbers_become_float(value: str) -> None:
    rf = load(f"import numpy as np\ndef reward_function(params):\n    return {value}\n")
    result = rf({})
    assert type(result) is float and result == float(eval(value, {"np": np}))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("True", 1.0), ("False", 0.0), ("'1.5'", 1.5), ("' 2 '", 2.0), ("np.bool_(True)", 1.0)],
)
def test_what_deepracers_float_accepts_trains_with_one_warning(
    value: str, expected: float, caplog: pytest.LogCaptureFixture
) -> None:
    """DeepRacer trains on ``float(reward_function(params))`` (simapp rollout_agent_ctrl.py): a bool,
    a numeric string or a one-element array is a reward there, so it is here, warned about once."""
    rf = load(f"import numpy as np\ndef reward_function(params):\n    return {value}\n")
    with caplog.at_level("WARNING", logger="hotlap.reward"):
        results = [rf({}) for _ in range(3)]
    assert all(type(r) is float and r == expected for r in results)
    warnings = [r for r in caplog.records if "not a number" in r.getMessage()]
    assert len(warnings) == 1 and "float()" in warnings[0].getMessage()


def test_plain_numbers_are_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    rf = load("import numpy as np\ndef reward_function(params):\n    return np.float32(0.5)\n")
    with caplog.at_level("WARNING", logger="hotlap.reward"):
        rf({})
    assert not caplog.records


def test_syntax_error_names_file_and_line() -> None:
    with pytest.raises(RewardFunctionError) as caught:
        load("def reward_function(params):\n    x = 1\n    return x +\n", filename="my_reward.py")
    message = str(caught.value)
    assert message.startswith("my_reward.py:3: syntax error")
    assert "return x +" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("def reward(params):\n    return 1.0\n", "no function named 'reward_function'"),
        ("reward_function = 3\n", "'reward_function' is not callable"),
        ("def reward_function(params, other):\n    return 1.0\n", "exactly one argument"),
        ("def reward_function():\n    return 1.0\n", "exactly one argument"),
        ("import no_such_module_xyz\n", "reward_function.py:1: error while loading the file: ModuleNotFoundError"),
    ],
)
def test_unusable_files_are_rejected(body: str, expected: str) -> None:
    with pytest.raises(RewardFunctionError, match=expected.replace("(", r"\(")):
        load(body)


def test_exception_while_running_shows_user_traceback_and_params() -> None:
    message = failure(
        """
        def helper(params):
            return params["speed"] * 2

        def reward_function(params):
            return helper(params)
        """
    )
    first_line = message.splitlines()[0]
    assert first_line == "reward_function.py:3 in helper: KeyError: 'speed'"
    assert 'return params["speed"] * 2' in message  # the user's source line is quoted
    assert "reward_function.py\", line 6, in reward_function" in message
    assert "progress = 12.5" in message
    assert "waypoints = [(0.0, 0.0), (1.0, 1.0), ... (155 items)]" in message
    assert len(message) < 4000


def test_exception_in_a_plain_callable_is_wrapped() -> None:
    def broken(params: dict[str, Any]) -> float:
        raise ValueError("boom")

    with pytest.raises(RewardFunctionError, match="ValueError: boom") as caught:
        RewardFunction(broken)(dict(PARAMS))
    assert "track_width = 1.07" in str(caught.value)


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("None", "must return a number (float), got NoneType None"),
        ("'fast'", "got str 'fast'"),
        ("{'reward': 1.0}", "got dict {'reward': 1.0}"),
        ("[1.0]", "got list [1.0]"),
        ("[1.0, 2.0]", "got list [1.0, 2.0]"),
        ("float('nan')", "returned nan (must be finite)"),
        ("float('inf')", "returned inf (must be finite)"),
        ("-float('inf')", "returned -inf"),
        ("100001.0", "reward 100001.0 out of range [-1e5, 1e5]"),
        ("-2e5", "out of range"),
    ],
)
def test_bad_return_values(returned: str, expected: str) -> None:
    message = failure(f"def reward_function(params):\n    return {returned}\n")
    assert expected in message
    assert "progress = 12.5" in message


def test_slow_function_exceeds_the_time_limit() -> None:
    message = failure(
        """
        import time
        def reward_function(params):
            time.sleep(0.05)
            return 1.0
        """,
        time_limit_s=0.01,
    )
    assert "took 0.0" in message and "over the 0.01 s limit" in message



def test_hang_guard_interrupts_a_reward_function_that_never_returns():
    import time

    from simulator.reward import hang_guard

    source = "def reward_function(params):\n    while True:\n        pass\n"
    endless = load_reward_function(source, "endless.py", time_limit_s=0.1)
    started = time.monotonic()
    with pytest.raises(RewardFunctionError, match="did not return within 0.3 s"), hang_guard(0.3, "endless.py"):
        endless({})
    assert time.monotonic() - started < 5


def test_a_slow_first_call_within_deepracers_5_s_is_not_a_failure() -> None:
    """DeepRacer has no per-call limit while training and its validator allows 5 s (deepracer-formats.md
    §1.1): a racing-line function that spends over a second on its first call (importing scipy.interpolate
    took 1.8 s on a loaded 2-core machine) trains there, so it must train here with the run's default limit."""
    from shared.config import RunSettings

    source = textwrap.dedent(
        """
        import time
        LINE = None
        def reward_function(params):
            global LINE
            if LINE is None:
                time.sleep(1.5)  # stands for: from scipy.interpolate import splprep; fit the racing line
                LINE = [params["progress"]]
            return 1.0
        """
    )
    limit = RunSettings().reward_time_limit_s
    for reward_function in load_reward_functions(source, 2, time_limit_s=limit):
        assert reward_function({"progress": 1.0}) == 1.0
    assert load_reward_function(source)({"progress": 1.0}) == 1.0


# A reward file as Windows editors save it (UTF-8 byte-order mark, CRLF), and one with a PEP 263
# coding line; Python's import (DeepRacer imports the file, deepracer-formats.md §1.1) reads both.
WINDOWS_FILE = (b"\xef\xbb\xbfimport math\r\ndef reward_function(params):\r\n    # Gr\xc3\xb6\xc3\x9fe\r\n"
                b'    return 1.0 + len("\xc3\xa9")\r\n')
LATIN1_FILE = b'# -*- coding: latin-1 -*-\ndef reward_function(params):\n    return 1.0 + len("\xe9\xe9")\n'


def _imported(tmp_path: Path, data: bytes) -> Any:
    """What Python's import makes of the bytes: the reference."""
    path = tmp_path / "imported_reward.py"
    path.write_bytes(data)
    spec = importlib.util.spec_from_file_location("imported_reward", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reward_function


@pytest.mark.parametrize(("data", "expected"), [(WINDOWS_FILE, 2.0), (LATIN1_FILE, 3.0)])
def test_a_reward_file_is_decoded_as_python_imports_it(tmp_path: Path, data: bytes, expected: float) -> None:
    assert _imported(tmp_path, data)({}) == expected  # one character each: decoded, not UTF-8 bytes
    assert load_reward_function(decode_reward_source(data))({}) == expected
    path = tmp_path / "reward_function.py"
    path.write_bytes(data)
    envs = HotlapVectorEnv(2, track="reInvent2019_track", actions=[(0.0, 1.0)], reward_function=path,
                           settings=EnvSettings(sensors=("LIDAR",)))
    envs.reset(seed=0)
    envs.step(np.zeros(2, np.int64))  # DeepRacer's prepare step: no reward call
    assert envs.step(np.zeros(2, np.int64))[1].tolist() == [expected, expected]


def test_a_reward_file_that_is_not_valid_in_its_encoding_is_refused_naming_the_file() -> None:
    with pytest.raises(RewardFunctionError, match=r"^my_reward\.py: cannot be read as Python source"):
        decode_reward_source(b"def reward_function(params):\n    return 1.0  # \xff\n", "my_reward.py")
