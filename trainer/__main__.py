"""`python -m trainer`: the PPO trainer service, configured from HOTLAP_* environment variables."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shared.config import ConfigError, TrainerConfig
from shared.logs import setup_logging
from shared.settings_doc import settings_parser
from shared.store import ModelStore, open_store
from shared.transport import RunTransport
from trainer.service import DeviceError, TrainerService, resolve_device


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`--help` lists the environment variables this process reads (it takes no other arguments)."""
    return settings_parser("python -m trainer", __doc__, TrainerConfig).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parse_args(argv)
    try:
        config = TrainerConfig.from_env()
        resolve_device(config.device)  # before any work: a missing GPU is one line, not a traceback later
    except (ConfigError, DeviceError) as e:
        print(f"trainer: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, "trainer", config.log_format)
    transport = RunTransport.from_url(config.redis_url, config.run_id, finished_ttl_s=config.finished_run_ttl_s)
    store = ModelStore(open_store(config.store_url, config.s3_endpoint_url))
    return TrainerService(config, transport, store).run()


if __name__ == "__main__":
    sys.exit(main())
