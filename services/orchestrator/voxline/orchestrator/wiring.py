"""Wire the orchestrator together: gRPC stage clients, the Converse servicer, the ServiceSpec."""

from __future__ import annotations

import asyncio
import logging

import grpc

from voxline.common.server import ServiceSpec
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.grpc_stages import GrpcStages
from voxline.orchestrator.servicer import VoiceAssistantServicer
from voxline.orchestrator.tools.mcp_servers import McpServers
from voxline.v1 import voice_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "voxline-orchestrator"
#: How often start-up asks the stages for their health while waiting for them.
_STAGE_POLL_S = 0.25


def build_spec(config: OrchestratorConfig) -> ServiceSpec:
    """The Converse service over gRPC stage clients. At start it waits up to ``--stage-wait-s`` for
    the stages to be SERVING, then turns SERVING whatever their state — their health is logged, and
    each turn reports a stage that is down."""
    stages = GrpcStages(config)  # its channels open on first use, inside the server's loop
    # the operator's MCP servers: started at warm-up, stopped at close (a client never adds one)
    mcp = McpServers(config.tools.mcp_config) if config.tools.mcp_config else None

    servicer = VoiceAssistantServicer(stages, config, mcp)

    def register(server: grpc.aio.Server) -> None:
        voice_pb2_grpc.add_VoiceAssistantServicer_to_server(servicer, server)

    async def warm_up() -> None:
        # Stages started together with the orchestrator may still be loading: wait (bounded) for
        # them, so the first turn does not meet a stage that is not listening yet.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.stage_wait_s
        healths = await stages.health()
        while not all(h.serving for h in healths) and loop.time() < deadline:
            # polling: a stage that is not listening yet cannot notify anyone
            await asyncio.sleep(_STAGE_POLL_S)
            healths = await stages.health()
        for health in healths:
            log.log(logging.INFO if health.serving else logging.WARNING, "stage health",
                    extra={"stage": health.stage, "address": health.address, "status": health.status})
        if mcp is not None:
            await mcp.start()

    async def close() -> None:
        if mcp is not None:
            await mcp.stop()
        await stages.close()

    return ServiceSpec(name=SERVICE_NAME, grpc_services=["voxline.v1.VoiceAssistant"],
                       register=register, warm_up=warm_up, close=close,
                       drain=servicer.drain)
