"""``python -m voxline.llm``: parse the configuration, wire the gateway to the server, serve.

The same shape as every voxline service: ``config.parse`` → ``wiring.build_spec`` → serve.
Providers are built after the port is bound; the local model (if enabled) is loaded and warmed up
before health turns SERVING. ``--help`` imports neither transformers, the SDKs nor grpc.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from voxline.common.config import ConfigError, refuse
from voxline.llm.config import parse

PROG = "python -m voxline.llm"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the LLM gateway until SIGTERM/SIGINT; return the process exit status."""
    try:
        config = parse(argv)
    except ConfigError as exc:
        return refuse(PROG, exc)
    # Imported after parsing: --help and a refused configuration answer without loading grpc or
    # any engine.
    from voxline.common.server import run_service
    from voxline.llm.wiring import build_spec

    return run_service(lambda: build_spec(config), config)


if __name__ == "__main__":
    sys.exit(main())
