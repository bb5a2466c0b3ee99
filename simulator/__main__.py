"""`python -m simulator`: one simulator worker, configured from HOTLAP_* environment variables."""

from __future__ import annotations

import logging
import sys

from shared.config import ConfigError, WorkerConfig
from shared.logs import setup_logging
from shared.store import ModelStore, open_store
from shared.transport import RunTransport
from simulator.worker import SimulatorWorker


def main() -> int:
    try:
        config = WorkerConfig.from_env()
    except ConfigError as e:
        print(f"simulator: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, f"simulator {config.worker_name}")
    transport = RunTransport.from_url(config.redis_url, config.run_id, finished_ttl_s=config.finished_run_ttl_s)
    store = ModelStore(open_store(config.store_url, config.s3_endpoint_url))
    return SimulatorWorker(config, transport, store).run()


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
