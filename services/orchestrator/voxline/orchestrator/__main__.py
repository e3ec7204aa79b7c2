"""``python -m voxline.orchestrator``: parse the configuration, wire Converse to the stages, serve.

The same shape as every voxline service: ``config.parse`` → ``wiring.build_spec`` → serve.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from voxline.common.config import ConfigError, refuse
from voxline.orchestrator.config import parse

PROG = "python -m voxline.orchestrator"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the orchestrator until SIGTERM/SIGINT; return the process exit status."""
    try:
        config = parse(argv)
    except ConfigError as exc:
        return refuse(PROG, exc)
    # Imported after parsing: --help and a refused configuration answer without loading grpc or
    # any engine.
    from voxline.common.server import run_service
    from voxline.orchestrator.wiring import build_spec

    return run_service(lambda: build_spec(config), config)


if __name__ == "__main__":
    sys.exit(main())
