"""Wire the LLM gateway together: engine (providers, cache, breaker), servicer, the ServiceSpec."""

from __future__ import annotations

import grpc

from voxline.common.server import ServiceSpec
from voxline.llm.config import LlmConfig
from voxline.llm.engine import LanguageModelEngine
from voxline.llm.servicer import SERVICE_NAME, LanguageModelServicer
from voxline.v1 import llm_pb2_grpc


def build_spec(config: LlmConfig) -> ServiceSpec:
    """The ServiceSpec to serve; call it inside the server's event loop (the SDK clients bind to it)."""
    engine = LanguageModelEngine.from_config(config)
    servicer = LanguageModelServicer(engine)

    def register(server: grpc.aio.Server) -> None:
        llm_pb2_grpc.add_LanguageModelServicer_to_server(servicer, server)

    return ServiceSpec(name="voxline-llm", grpc_services=[SERVICE_NAME], register=register,
                       warm_up=engine.warm_up, close=engine.aclose)
