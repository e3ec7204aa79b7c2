"""The orchestrator as a ServiceSpec for the shared server bootstrap (used by __main__ and tests)."""

from __future__ import annotations

import logging

import grpc

from voxline.common.server import ServiceSpec
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.servicer import VoiceAssistantServicer
from voxline.orchestrator.stages import Stages
from voxline.v1 import voice_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "voxline-orchestrator"


def orchestrator_spec(config: OrchestratorConfig) -> ServiceSpec:
    """The Converse service. Stage channels are created in ``register``, after telemetry is set up
    (so the gRPC client instrumentation is on them); health turns SERVING without the stages being
    up — their health is logged at start, and each turn reports a stage that is down."""
    stages: list[Stages] = []

    def register(server: grpc.aio.Server) -> None:
        stages.append(Stages(config))
        voice_pb2_grpc.add_VoiceAssistantServicer_to_server(
            VoiceAssistantServicer(stages[0], config), server)

    async def warm_up() -> None:
        for stage, status in (await stages[0].health()).items():
            address = getattr(config, f"{stage}_address")
            level = logging.INFO if status == "SERVING" else logging.WARNING
            log.log(level, "stage health", extra={"stage": stage, "address": address, "status": status})

    async def close() -> None:
        for s in stages:
            await s.close()

    return ServiceSpec(name=SERVICE_NAME, grpc_services=["voxline.v1.VoiceAssistant"],
                       register=register, warm_up=warm_up, close=close)
