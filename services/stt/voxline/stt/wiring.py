"""Wire the STT service together: transcriber, turn detectors, servicer, the ServiceSpec."""

from __future__ import annotations

import grpc

from voxline.common.server import ServiceSpec
from voxline.stt.cloud import CloudTranscriber
from voxline.stt.config import SttConfig
from voxline.stt.detectors import TurnDetectors
from voxline.stt.engine import Transcriber, WhisperTranscriber
from voxline.stt.servicer import SERVICE_NAME, SpeechToTextServicer
from voxline.v1 import stt_pb2_grpc


def build_spec(config: SttConfig) -> ServiceSpec:
    """The ServiceSpec to serve; call it inside the server's event loop. The model is resolved,
    loaded and warmed up at warm-up, after the port is bound (health NOT_SERVING until then)."""
    engine: Transcriber = WhisperTranscriber(config.engine)
    if config.cloud.engine == "groq":
        engine = CloudTranscriber(config.cloud, fallback=engine, language=config.engine.language)
    turns = TurnDetectors(config.turns)
    servicer = SpeechToTextServicer(engine, partial_interval_s=config.partial_interval_s,
                                    max_stream_bytes=config.max_stream_bytes, turns=turns,
                                    listen_interim_interval_s=config.listen_interim_interval_s,
                                    live=config.live)

    async def warm_up() -> None:
        await engine.warm_up()
        await turns.warm_up()

    def register(server: grpc.aio.Server) -> None:
        stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, server)

    return ServiceSpec(name="voxline-stt", grpc_services=[SERVICE_NAME], register=register,
                       warm_up=warm_up, close=engine.close)
