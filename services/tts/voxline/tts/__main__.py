"""``python -m voxline.tts``: parse the configuration, wire the synthesizer to the server, serve.

The same shape as every voxline service: ``config.parse`` → ``wiring.build_spec`` → serve. Voices
are loaded at warm-up, after the port is bound (health NOT_SERVING until then).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from voxline.common.config import ConfigError, refuse
from voxline.tts.config import parse

PROG = "python -m voxline.tts"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the TTS service until SIGTERM/SIGINT; return the process exit status."""
    try:
        config = parse(argv)
    except ConfigError as exc:
        return refuse(PROG, exc)
    # Imported after parsing: --help and a refused configuration answer without loading grpc or
    # any engine.
    from voxline.common.server import run_service
    from voxline.tts.wiring import build_spec

    return run_service(lambda: build_spec(config), config)


if __name__ == "__main__":
    sys.exit(main())
