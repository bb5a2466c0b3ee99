"""Loading and calling a DeepRacer ``reward_function.py``.

DeepRacer (simapp ``rollout_agent_ctrl.py``) calls ``float(reward_function(deepcopy(params)))``
and fails the job on an exception, NaN/inf, or a value outside [-1e5, 1e5]. We do the same,
with one :class:`RewardFunctionError` per failure whose message says what went wrong, where
in the user's file, and (for failures while running) with which params.

Returned values: whatever ``float()`` converts, as in DeepRacer's training loop (simapp
``rollout_agent_ctrl.py``: ``float(self._reward_(...))``): ``float``, ``int`` and numpy numbers
silently; ``bool`` and numeric strings too, with one warning per function
(returning e.g. ``params['all_wheels_on_track']`` is usually a bug, but it trains on DeepRacer).
What ``float()`` refuses (None, lists, ``'fast'``) is a :class:`RewardFunctionError`.

Time limit: DeepRacer's validator allows 5 s per call (deepracer-formats.md §1.1) and training
itself has no limit, so the default is 5 s: a first call that imports scipy or fits a racing line
must not fail here when it trains on DeepRacer. The call is timed with ``time.perf_counter``
and a call slower than the limit raises afterwards. A function that never returns is interrupted
by :func:`hang_guard`, one interval timer around a whole env step (no per-call thread or signal,
to keep the hot path cheap).

Ending the process: ``sys.exit`` and ``os._exit`` in the user's code (at load or in a call) become a
:class:`RewardFunctionError` naming the line, so the run fails with its reason instead of a process
that vanishes (no log flush, no status, no tickets handed back). Output: what one call (or the
file's loading) prints passes up to :data:`PRINT_LIMIT_BYTES`; the rest is dropped with one warning.

Params: the caller (the env) builds a fresh dict for every call whose only mutable values
are fresh lists (tuples inside), which is what DeepRacer's deep copy guarantees, so this
module does not copy again.

State per car: on DeepRacer each simulator drives one car and imports the file once, so a
reward function may keep state in module globals or objects between calls (previous
progress, lap timers). hotlap steps K cars in one process, so :func:`load_reward_functions`
runs the file K times into K separate module objects (never through ``sys.modules``): every
car sees exactly the call sequence it would see alone. Modules the file imports (``math``,
``random``, ``numpy``, ...) are shared, as they are between the files of one Python process.

Imports: DeepRacer's reward-function validator allows ``math``, ``random``, ``numpy``,
``scipy`` and ``shapely`` (deepracer-formats.md §1.1); :data:`DEEPRACER_REWARD_MODULES` names
them and hotlap's runtime dependencies (pyproject.toml) install the last three.
"""

from __future__ import annotations

import importlib.util
import inspect
import linecache
import logging
import math
import numbers
import os
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

from shared.config import REWARD_TIME_LIMIT_S
from shared.experience import REWARD_LIMIT  # DeepRacer's reward range; the trainer checks it too

# The modules DeepRacer's reward validator lets a reward function import (deepracer-formats.md §1.1).
DEEPRACER_REWARD_MODULES = ("math", "random", "numpy", "scipy", "shapely")
DEFAULT_TIME_LIMIT_S = REWARD_TIME_LIMIT_S  # DeepRacer validator's per-call limit
_MAX_VALUE_REPR = 120
log = logging.getLogger("hotlap.reward")
_MAX_PARAMS_REPR = 3000
# What one call (or the file's loading) may print; DeepRacer racers print params or a line per step
# (a few KiB, with the waypoints), and the logs keep that. Megabytes per step would fill the disk.
PRINT_LIMIT_BYTES = 64 * 1024
_REAL_OS_EXIT = os._exit
HANG_MARGIN_S = 5.0  # see hang_guard_seconds


class _ExitCalled(SystemExit):
    """Raised in place of ``os._exit`` while the user's code runs, so it fails the run with a message
    instead of ending the process without one (no log flush, no status, no tickets handed back)."""


class _CappedOutput:
    """A stand-in for sys.stdout/sys.stderr while the user's code runs: passes the first
    PRINT_LIMIT_BYTES of each call through, drops the rest and warns once per reward function."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.target: Any = None
        self.written = 0
        self.dropped = 0
        self.warned = False

    def start(self, target: Any) -> _CappedOutput:
        self.target, self.written, self.dropped = target, 0, 0
        return self

    def write(self, text: str) -> int:
        room = PRINT_LIMIT_BYTES - self.written
        if room > 0:
            passed = text[:room]
            self.written += len(passed)
            self.target.write(passed)
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def finish(self) -> None:
        if self.dropped and not self.warned:
            self.warned = True
            log.warning("%s: reward_function printed %d characters in one call; the %d beyond the first %d "
                        "were dropped (printing a line per step is fine; this warning is given once)",
                        self.filename, self.written + self.dropped, self.dropped, PRINT_LIMIT_BYTES)

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno...: the real stream's
        return getattr(self.target, name)


def _refuse_os_exit(status: int) -> NoReturn:
    raise _ExitCalled(f"os._exit({status!r})")


def run_user_code(output: _CappedOutput, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` with the user's reward code guarded: ``os._exit`` raises instead of ending
    the process, and what it prints is capped at PRINT_LIMIT_BYTES (both would otherwise lose the
    run's reason). Plain try/finally, not a context manager: this is on every reward call."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = output.start(stdout)
    sys.stderr = output  # one budget for both streams
    os._exit = _refuse_os_exit
    try:
        return function(*args)
    finally:
        os._exit = _REAL_OS_EXIT
        sys.stdout, sys.stderr = stdout, stderr
        output.finish()


class RewardFunctionError(Exception):
    """The user's reward function cannot be loaded or misbehaved; the message explains it."""


class RewardFunction:
    """A checked reward function: ``reward = rf(params)`` returns a finite float in [-1e5, 1e5]."""

    def __init__(
        self,
        function: Callable[[dict[str, Any]], Any],
        filename: str = "<reward_function>",
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    ) -> None:
        if not callable(function):
            raise RewardFunctionError(f"{filename}: reward_function is not callable (got {type(function).__name__})")
        self.function = function
        self.filename = filename
        self.time_limit_s = time_limit_s
        self._warned_not_a_number = False
        self._output = _CappedOutput(filename)

    def __call__(self, params: dict[str, Any]) -> float:
        started = time.perf_counter()
        try:
            value = run_user_code(self._output, self.function, params)
        except (Exception, SystemExit) as error:  # any user error becomes one clear error
            raise RewardFunctionError(self._describe_exception(error, params)) from error
        elapsed = time.perf_counter() - started
        if elapsed > self.time_limit_s:
            raise RewardFunctionError(
                f"{self.filename}: reward_function took {elapsed:.3f} s, over the {self.time_limit_s:g} s limit"
                f"\n{format_params(params)}"
            )
        reward = value if type(value) is float else self._as_float(value, params)  # float: the fast path
        if not math.isfinite(reward):
            raise RewardFunctionError(
                f"{self.filename}: reward_function returned {reward} (must be finite)\n{format_params(params)}"
            )
        if abs(reward) > REWARD_LIMIT:
            raise RewardFunctionError(
                f"{self.filename}: reward {reward!r} out of range [-1e5, 1e5]\n{format_params(params)}"
            )
        return reward

    def _as_float(self, value: Any, params: Mapping[str, Any]) -> float:
        """``float(value)`` as DeepRacer applies it; a loud warning, once, for what is not a plain number."""
        try:
            reward = float(value)
        except (TypeError, ValueError) as error:
            raise RewardFunctionError(
                f"{self.filename}: reward_function must return a number (float), got {type(value).__name__} "
                f"{_short_repr(value)}\n{format_params(params)}"
            ) from error
        plain = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not plain and not self._warned_not_a_number:
            self._warned_not_a_number = True
            log.warning("%s: reward_function returned %s %s, not a number; it is used as float() makes it, %r, "
                        "as DeepRacer does (warned once)", self.filename, type(value).__name__,
                        _short_repr(value), reward)
        return reward

    def _describe_exception(self, error: BaseException, params: Mapping[str, Any]) -> str:
        frames = traceback.extract_tb(error.__traceback__)
        user_frames = [f for f in frames if f.filename == self.filename] or frames[2:] or frames  # past run_user_code
        last = user_frames[-1]
        where = f"{last.filename}:{last.lineno} in {last.name}"
        trace = "".join(traceback.format_list(user_frames)).rstrip()
        kind = type(error).__name__
        if isinstance(error, SystemExit):  # sys.exit() or os._exit(): the process must not end
            call = str(error) if isinstance(error, _ExitCalled) else f"sys.exit({error.code!r})"
            return (f"{where}: reward_function called {call}; it must return a number, not end the process\n"
                    f"Traceback (reward function frames):\n{trace}\n{format_params(params)}")
        return (
            f"{where}: {kind}: {error}\n"
            f"Traceback (reward function frames):\n{trace}\n"
            f"{kind}: {error}\n"
            f"{format_params(params)}"
        )


def decode_reward_source(data: bytes, filename: str = "reward_function.py") -> str:
    """The text of a ``reward_function.py`` file, decoded as Python's import decodes it.

    DeepRacer imports the file (deepracer-formats.md §1.1), so a UTF-8 byte-order mark (what
    Windows editors often write) and a PEP 263 ``# -*- coding: ... -*-`` line work there; a plain
    UTF-8 decode would turn the mark into a syntax error. Universal newlines, as for an import.

    Raises :class:`RewardFunctionError` naming the file if the bytes are not valid in their encoding.
    """
    try:
        return importlib.util.decode_source(data)
    except (SyntaxError, UnicodeDecodeError, LookupError) as error:
        raise RewardFunctionError(f"{filename}: cannot be read as Python source: {error}") from error


def load_reward_functions(
    source: str, count: int, filename: str = "reward_function.py", time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> list[RewardFunction]:
    """``count`` independently loaded copies of the file: one per car, each in its own module
    object, so module-level state is per car as on DeepRacer (one simulator per car).

    Raises :class:`RewardFunctionError` (file and line named) if the file does not load.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    code = _compile(source, filename)
    return [_load_module(code, filename, time_limit_s) for _ in range(count)]


def load_reward_function(
    source: str, filename: str = "reward_function.py", time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> RewardFunction:
    """Compile and run ``source`` as a new module and return its checked ``reward_function``."""
    return _load_module(_compile(source, filename), filename, time_limit_s)


def _compile(source: str, filename: str) -> types.CodeType:
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as error:
        raise RewardFunctionError(_describe_syntax_error(error, filename)) from error
    # register the source so tracebacks can quote the user's lines
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return code


def _load_module(code: types.CodeType, filename: str, time_limit_s: float) -> RewardFunction:
    """Run ``code`` in a fresh module object (not registered in ``sys.modules``)."""
    module = types.ModuleType("reward_function")
    module.__file__ = filename
    try:
        # running the user's reward file is the point
        run_user_code(_CappedOutput(filename), exec, code, module.__dict__)
    except (Exception, SystemExit) as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
        line = f":{frames[-1].lineno}" if frames else ""
        what = (f"called {error}" if isinstance(error, _ExitCalled) else f"called sys.exit({error.code!r})"
                if isinstance(error, SystemExit) else f"{type(error).__name__}: {error}")
        raise RewardFunctionError(f"{filename}{line}: error while loading the file: {what}") from error
    function = module.__dict__.get("reward_function")
    if function is None:
        raise RewardFunctionError(f"{filename}: no function named 'reward_function' is defined")
    if not callable(function):
        raise RewardFunctionError(f"{filename}: 'reward_function' is not callable (it is a {type(function).__name__})")
    _check_signature(function, filename)
    return RewardFunction(function, filename, time_limit_s)


def _check_signature(function: Callable[..., Any], filename: str) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    try:
        signature.bind({})
    except TypeError as error:
        raise RewardFunctionError(
            f"{filename}: reward_function must take exactly one argument (params), its signature is "
            f"reward_function{signature} ({error})"
        ) from None


def _describe_syntax_error(error: SyntaxError, filename: str) -> str:
    line = error.lineno or 0
    message = f"{filename}:{line}: syntax error: {error.msg}"
    if error.text:
        text = error.text.rstrip("\n")
        message += f"\n    {text.strip()}"
        if error.offset:
            indent = len(text) - len(text.lstrip())
            message += "\n    " + " " * max(error.offset - 1 - indent, 0) + "^"
    return message


def _short_repr(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) > 4:
        head = ", ".join(_short_repr(v) for v in value[:2])
        return f"[{head}, ... ({len(value)} items)]"
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_REPR else text[: _MAX_VALUE_REPR - 3] + "..."


def format_params(params: Mapping[str, Any]) -> str:
    """The params as ``key=value`` lines, long values shortened, for error messages."""
    lines = [f"  {key} = {_short_repr(value)}" for key, value in params.items()]
    text = "params:\n" + "\n".join(lines)
    return text if len(text) <= _MAX_PARAMS_REPR else text[: _MAX_PARAMS_REPR - 4] + "\n..."


def hang_guard_seconds(time_limit_s: float, calls: int) -> float:
    """How long :func:`hang_guard` waits around ``calls`` reward calls of ``time_limit_s`` each: their
    limits plus a margin, so a slow but returning call is reported by the per-call timing instead."""
    return time_limit_s * calls + HANG_MARGIN_S


@contextmanager
def hang_guard(seconds: float, filename: str = "reward_function.py") -> Iterator[None]:
    """Interrupt a reward function that never returns (an endless loop), which the per-call timing
    cannot catch. One interval timer per env step, not per call, keeps the hot path cheap. Works in
    the main thread of a process (where the worker runs); elsewhere it is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise RewardFunctionError(f"{filename}: reward_function did not return within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
