"""``python -m voxline.tts``: parse the configuration, load the voices at warm-up, serve."""

from __future__ import annotations

import logging
import sys

from voxline.common.config import ConfigError, describe
from voxline.common.logs import setup_logging
from voxline.tts.config import config_from_args

log = logging.getLogger("voxline.tts")


def main() -> int:
    """Entry point; returns the process exit status."""
    try:
        config = config_from_args()
    except ConfigError as exc:
        print(f"voxline.tts: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.server.log_level, config.server.log_format)
    log.info("configuration", extra={"config": describe(config)})
    # Imported after parsing: --help and a refused configuration answer without loading grpc,
    # scipy or any engine.
    from voxline.common.server import run
    from voxline.tts.service import build_service

    return run(lambda: build_service(config)[0], config.server)


if __name__ == "__main__":
    sys.exit(main())
