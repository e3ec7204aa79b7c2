"""voxline orchestrator: the VoiceAssistant.Converse stream chaining the STT, LLM and TTS services.

Modules: ``config`` (flags/env), ``domain`` (plain dataclasses and the ``StageClients`` seam),
``grpc_stages`` (``StageClients`` over gRPC), ``turn`` (one turn's pipeline, spans and metrics),
``session`` (one Converse stream: turns, barge-in), ``vad`` (server-side end of speech),
``servicer`` (protobuf mapping), ``wiring`` (``build_spec``: the ServiceSpec).
"""
