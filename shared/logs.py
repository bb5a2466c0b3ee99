"""Process-wide logging set-up, called once by each entry point.

Two formats (``HOTLAP_LOG_FORMAT``): ``text`` (default; one readable line per record) and
``json`` (one JSON object per line with ``timestamp``, ``level``, ``logger``, ``process``,
``message``, for log collectors). In both, DeepRacer's own lines — the workers'
``SIM_TRACE_LOG:`` lines and the trainer's ``Training>`` / ``Policy training>`` lines — go out
bare, because DeepRacer's analysis tools (deepracer-utils, log-guru) match them from the start
of the line (deepracer-formats.md §5).
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

SIMTRACE_LOGGER = "hotlap.simtrace"
COACH_LOGGER = "hotlap.coach"
BARE_LOGGERS = (SIMTRACE_LOGGER, COACH_LOGGER)

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")


def record_formatter(log_format: LogFormat, process_name: str) -> logging.Formatter:
    """The formatter of every record except DeepRacer's bare lines."""
    if log_format == "json":
        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"process": process_name},
            timestamp=True,
        )
    return logging.Formatter(f"%(asctime)s %(levelname)s [{process_name}] %(name)s: %(message)s")


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("hotlap").critical("uncaught %s", exc_type.__name__, exc_info=(exc_type, exc, tb))


def setup_logging(level: str, process_name: str, log_format: LogFormat = "text") -> None:
    """Root logging to stdout in `log_format`; DeepRacer's lines (BARE_LOGGERS) bare, in either format.

    Python warnings and an uncaught exception's traceback go through the same formatter, so a
    JSON log stays one object per line to the end."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(record_formatter(log_format, process_name))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    for name in BARE_LOGGERS:
        bare = logging.getLogger(name)
        bare_handler = logging.StreamHandler(sys.stdout)
        bare_handler.setFormatter(logging.Formatter("%(message)s"))
        bare.handlers = [bare_handler]
        bare.propagate = False
