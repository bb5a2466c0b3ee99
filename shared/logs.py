"""Process-wide logging set-up, called once by each entry point."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str, process_name: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stdout,
        format=f"%(asctime)s %(levelname)s [{process_name}] %(name)s: %(message)s",
        force=True,
    )
    # SIM_TRACE_LOG lines go out bare, as DeepRacer's analysis tools grep for them.
    trace = logging.getLogger("hotlap.simtrace")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    trace.handlers = [handler]
    trace.propagate = False
