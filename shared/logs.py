"""Process-wide logging set-up, called once by each entry point."""

from __future__ import annotations

import logging
import sys

SIMTRACE_LOGGER = "hotlap.simtrace"
COACH_LOGGER = "hotlap.coach"
BARE_LOGGERS = (SIMTRACE_LOGGER, COACH_LOGGER)


def setup_logging(level: str, process_name: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stdout,
        format=f"%(asctime)s %(levelname)s [{process_name}] %(name)s: %(message)s",
        force=True,
    )
    # SIM_TRACE_LOG lines and rl_coach's "Training>"/"Policy training>" lines go out bare:
    # DeepRacer's analysis tools match them from the start of the line.
    for name in BARE_LOGGERS:
        bare = logging.getLogger(name)
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        bare.handlers = [handler]
        bare.propagate = False
