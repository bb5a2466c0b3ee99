"""`python -m simulator`: one simulator worker, configured from HOTLAP_* environment variables."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from shared.config import ConfigError, WorkerConfig
from shared.logs import setup_logging
from shared.settings_doc import settings_parser
from shared.store import ModelStore, open_store
from shared.transport import RunTransport
from simulator.worker import SimulatorWorker


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`--help` lists the environment variables this process reads (it takes no other arguments)."""
    return settings_parser("python -m simulator", __doc__, WorkerConfig).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parse_args(argv)
    try:
        config = WorkerConfig.from_env()
    except ConfigError as e:
        print(f"simulator: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, f"simulator {config.worker_name}", config.log_format)
    transport = RunTransport.from_url(config.redis_url, config.run_id, stream_max_bytes=config.stream_max_bytes,
                                      finished_ttl_s=config.finished_run_ttl_s)
    store = ModelStore(open_store(config.store_url, config.s3_endpoint_url))
    return SimulatorWorker(config, transport, store).run()


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
