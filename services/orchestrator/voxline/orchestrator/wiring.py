"""Wire the orchestrator together: gRPC stage clients, the Converse servicer, the ServiceSpec."""

from __future__ import annotations

import logging

import grpc

from voxline.common.server import ServiceSpec
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.grpc_stages import GrpcStages
from voxline.orchestrator.servicer import VoiceAssistantServicer
from voxline.v1 import voice_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "voxline-orchestrator"


def build_spec(config: OrchestratorConfig) -> ServiceSpec:
    """The Converse service over gRPC stage clients. Health turns SERVING without the stages being
    up — their health is logged at start, and each turn reports a stage that is down."""
    stages = GrpcStages(config)  # its channels open on first use, inside the server's loop

    def register(server: grpc.aio.Server) -> None:
        voice_pb2_grpc.add_VoiceAssistantServicer_to_server(VoiceAssistantServicer(stages, config), server)

    async def warm_up() -> None:
        for health in await stages.health():
            log.log(logging.INFO if health.serving else logging.WARNING, "stage health",
                    extra={"stage": health.stage, "address": health.address, "status": health.status})

    return ServiceSpec(name=SERVICE_NAME, grpc_services=["voxline.v1.VoiceAssistant"],
                       register=register, warm_up=warm_up, close=stages.close)
