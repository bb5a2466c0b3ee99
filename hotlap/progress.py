"""Progress of a long command (`hotlap train`'s iterations, `hotlap evaluate`'s laps).

On a terminal: a live rich bar — done/total, elapsed, ETA and the latest metrics (laps, reward, …).
Anywhere else (a pipe, a CI log, a file): one plain line each time the count advances, so a log
holds one line per iteration, never a line per poll.

    with ProgressDisplay("training", total=10, unit="iteration") as progress:
        progress.status("waiting for the first iteration")        # shown on a terminal only
        progress.update(3, {"reward": 12.5, "laps": 4})            # one line on a pipe: iteration 3/10 ...

`update` may be called as often as wanted (e.g. every second from a polling loop): a pipe gets a
line only when `completed` changes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

Metrics = Mapping[str, float | int | str]


def format_metrics(metrics: Metrics) -> str:
    """`{"reward": 12.345, "laps": 4}` -> `reward 12.35 | laps 4` (floats to 2 decimals)."""
    parts = []
    for name, value in metrics.items():
        text = f"{value:,.2f}" if isinstance(value, float) else str(value)
        parts.append(f"{name} {text}")
    return " | ".join(parts)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


class _Line:
    """One line of text, cut with an ellipsis at the terminal's width; `text` may change while shown."""

    def __init__(self) -> None:
        self.text = ""

    def __rich__(self) -> Text:
        return Text(self.text, no_wrap=True, overflow="ellipsis")


class ProgressDisplay:
    """A progress bar on a terminal, one line per step elsewhere.

    `stream` defaults to stdout; `terminal` forces (True) or disables (False) the live display,
    default: whether `stream` is a terminal.
    """

    def __init__(self, label: str, total: int, unit: str = "iteration", stream: TextIO | None = None,
                 terminal: bool | None = None):
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stdout
        self.live = self.stream.isatty() if terminal is None else terminal
        self.completed = 0
        self.started = time.monotonic()
        self._baseline: int | None = None  # steps already done when the first update came
        self._progress: Progress | None = None
        self._live: Live | None = None
        self._metrics = _Line()
        self._task: TaskID | None = None

    # ------------------------------------------------------------------ context

    def __enter__(self) -> ProgressDisplay:
        self.started = time.monotonic()
        if self.live:
            console = Console(file=self.stream, force_terminal=True)
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn(f"{self.unit}s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=console,
            )
            self._task = self._progress.add_task(self.label, total=self.total)
            # The metrics get a line of their own under the bar: on an 80-column terminal they
            # would otherwise squeeze the bar and the count away.
            self._live = Live(Group(self._progress, self._metrics), console=console, refresh_per_second=4)
            self._live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()

    # ------------------------------------------------------------------ updates

    def status(self, text: str) -> None:
        """A transient note (e.g. waiting for workers); shown on a terminal only, never logged."""
        self._metrics.text = text

    def update(self, completed: int, metrics: Metrics | None = None) -> None:
        """`completed` of `total` done, with the latest `metrics`; a pipe gets a line when it advances."""
        metrics = metrics or {}
        if self._baseline is None:
            # A resumed run starts at k > 0: time only the steps done while shown, so the ETA holds.
            self._baseline = max(completed - 1, 0)
        if self._progress is not None and self._task is not None:
            self._metrics.text = format_metrics(metrics)
            if self._baseline and self.completed == 0:
                self._progress.reset(self._task, completed=self._baseline)
            self._progress.update(self._task, completed=completed)
        elif completed != self.completed:
            print(self.line(completed, metrics), file=self.stream, flush=True)
        self.completed = completed

    def line(self, completed: int, metrics: Metrics) -> str:
        """The plain line for a pipe: `iteration 3/10 | 0:42 elapsed, ETA 1:38 | reward 12.50 | laps 4`."""
        elapsed = time.monotonic() - self.started
        done_here = completed - (self._baseline or 0)
        eta = elapsed / done_here * (self.total - completed) if done_here > 0 else 0.0
        head = f"{self.unit} {completed}/{self.total} | {_clock(elapsed)} elapsed, ETA {_clock(eta)}"
        return f"{head} | {format_metrics(metrics)}" if metrics else head
