"""``python -m voxline.stt``: parse the configuration, wire the engine to the server, serve.

The model is resolved, loaded and warmed up after the port is bound (health NOT_SERVING until
then); ``--help`` imports neither faster-whisper nor grpc.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from voxline.common.config import ConfigError, describe
from voxline.stt.config import config_from_args

log = logging.getLogger("voxline.stt")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the STT service until SIGTERM/SIGINT; return the process exit status."""
    try:
        config = config_from_args(argv)
    except ConfigError as exc:
        print(f"python -m voxline.stt: error: {exc}", file=sys.stderr)
        return 2

    import grpc

    from voxline.common.logs import setup_logging
    from voxline.common.server import ServiceSpec, run
    from voxline.stt.detectors import TurnDetectors
    from voxline.stt.engine import WhisperTranscriber
    from voxline.stt.servicer import SERVICE_NAME, SpeechToTextServicer
    from voxline.v1 import stt_pb2_grpc

    setup_logging(config.server.log_level, config.server.log_format)
    log.info("configuration", extra={"config": describe(config)})

    def spec() -> ServiceSpec:
        # built inside the server's event loop
        engine = WhisperTranscriber(config.engine)
        turns = TurnDetectors(config.turns)
        servicer = SpeechToTextServicer(engine, partial_interval_s=config.partial_interval_s,
                                        max_stream_bytes=config.max_stream_bytes, turns=turns)

        async def warm_up() -> None:
            await engine.warm_up()
            await turns.warm_up()

        def register(server: grpc.aio.Server) -> None:
            stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, server)

        return ServiceSpec(name="voxline-stt", grpc_services=[SERVICE_NAME], register=register,
                           warm_up=warm_up, close=engine.close)

    return run(spec, config.server)


if __name__ == "__main__":
    sys.exit(main())
