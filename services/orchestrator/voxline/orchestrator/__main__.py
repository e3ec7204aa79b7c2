"""``python -m voxline.orchestrator``: parse flags, log the config, serve Converse."""

from __future__ import annotations

import logging
import sys

from voxline.common.config import ConfigError, describe
from voxline.common.logs import setup_logging
from voxline.common.server import run
from voxline.orchestrator.config import build_parser, config_from_args
from voxline.orchestrator.service import orchestrator_spec

log = logging.getLogger("voxline.orchestrator")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        config, server_config = config_from_args(ns)
    except ConfigError as exc:
        parser.error(str(exc))
    setup_logging(server_config.log_level, server_config.log_format)
    log.info("config", extra={"orchestrator": describe(config), "server": describe(server_config)})
    return run(lambda: orchestrator_spec(config), server_config)


if __name__ == "__main__":
    sys.exit(main())
