"""Every server error reaches the user with its code and message, every time.

grpc.aio loses a server's status when a write is in flight as the server ends the call: the failed
write replaces it with INTERNAL "Internal error from Core" (grpc/grpc#36066). An orchestrator that
rejects the session config (unknown voice) while the client is still sending the utterance hits
exactly that. These tests repeat it many times, many at once (the load that made it happen
four times in five here), against a real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from voxline.cli.client import Conversation, session_config
from voxline.v1 import voice_pb2, voice_pb2_grpc

VOICES = "unknown voice 'fr'; available voices: espeak:en, espeak:fr, piper:joe"
AUDIO = bytes(1_000_000)  # ~31 messages of 32 KiB: still being written when the server says no


class Rejecting(voice_pb2_grpc.VoiceAssistantServicer):
    """Rejects the config (as the orchestrator does an unknown voice), or the utterance once
    ``limit`` bytes of it have arrived (as it does one that is too large)."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit

    async def Converse(self, request_iterator: AsyncIterator[voice_pb2.ConverseRequest],
                       context: grpc.aio.ServicerContext) -> AsyncIterator[voice_pb2.ConverseResponse]:
        received = 0
        async for request in request_iterator:
            if request.WhichOneof("request") == "config" and not self.limit:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, VOICES)
            received += len(request.audio)
            if self.limit and received > self.limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "utterance over 256 KiB")
        yield voice_pb2.ConverseResponse()


async def serve(servicer: Rejecting) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    voice_pb2_grpc.add_VoiceAssistantServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def one_turn(address: str) -> str:
    try:
        async with Conversation(address, session_config(voice="fr")) as conversation:
            await conversation.turn(audio=AUDIO)
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return "no error"


@pytest.mark.parametrize(("limit", "expected"), [
    (0, f"INVALID_ARGUMENT: {VOICES}"),
    (256 * 1024, "RESOURCE_EXHAUSTED: utterance over 256 KiB"),
])
async def test_the_servers_status_survives_a_write_in_flight(limit: int, expected: str) -> None:
    server, address = await serve(Rejecting(limit))
    gate = asyncio.Semaphore(25)

    async def limited() -> str:
        async with gate:
            return await one_turn(address)

    try:
        async with asyncio.timeout(120):
            outcomes = Counter(await asyncio.gather(*(limited() for _ in range(200))))
    finally:
        await server.stop(0)
    assert outcomes == Counter({expected: 200})


async def test_voxline_talk_shows_the_code_and_the_voice_list(tmp_path: Path) -> None:
    server, address = await serve(Rejecting())
    question = tmp_path / "question.pcm"
    question.write_bytes(AUDIO)

    async def talk() -> tuple[int | None, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voxline.cli", "talk", str(question), "--rate", "16000",
            "--voice", "fr", "--address", address, "-o", str(tmp_path / "reply.wav"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        return proc.returncode, err.decode()

    try:
        async with asyncio.timeout(240):
            results = await asyncio.gather(*(talk() for _ in range(12)))  # twelve at once: a busy machine
    finally:
        await server.stop(0)
    for code, err in results:
        assert code == 1
        assert err.strip() == f"voxline talk: INVALID_ARGUMENT: {VOICES}"
