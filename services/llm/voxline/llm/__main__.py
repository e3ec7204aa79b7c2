"""``python -m voxline.llm``: parse the configuration, wire the engine to the server, serve.

Providers are built after the port is bound; the local model (if enabled) is loaded and warmed up
before health turns SERVING. ``--help`` imports neither transformers, the SDKs nor grpc.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from voxline.common.config import ConfigError, describe, server_config_from_args
from voxline.llm.config import add_llm_options, llm_config_from_args

log = logging.getLogger("voxline.llm")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the LLM gateway until SIGTERM/SIGINT; return the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m voxline.llm",
        description="voxline LLM gateway: Groq, Cerebras and a local model, streamed, with "
                    "fallback, hedging, a circuit breaker and a reply cache.",
    )
    try:
        add_llm_options(parser)
        ns = parser.parse_args(argv)
        server_config = server_config_from_args(ns)
        config = llm_config_from_args(ns)
    except ConfigError as exc:
        print(f"python -m voxline.llm: error: {exc}", file=sys.stderr)
        return 2

    import grpc

    from voxline.common.logs import setup_logging
    from voxline.common.server import ServiceSpec, run
    from voxline.llm.engine import LanguageModelEngine
    from voxline.llm.servicer import SERVICE_NAME, LanguageModelServicer
    from voxline.v1 import llm_pb2_grpc

    setup_logging(server_config.log_level, server_config.log_format)
    log.info("configuration", extra={"config": describe(config)})

    def spec() -> ServiceSpec:
        # built inside the server's event loop (the SDK clients bind to it)
        engine = LanguageModelEngine.from_config(config)
        servicer = LanguageModelServicer(engine)

        def register(server: grpc.aio.Server) -> None:
            llm_pb2_grpc.add_LanguageModelServicer_to_server(servicer, server)

        return ServiceSpec(name="voxline-llm", grpc_services=[SERVICE_NAME], register=register,
                           warm_up=engine.warm_up, close=engine.aclose)

    return run(spec, server_config)


if __name__ == "__main__":
    sys.exit(main())
