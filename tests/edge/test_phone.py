"""The phone line: a scripted client speaks Twilio Media Streams' documented messages to the edge's
WebSocket (connected, start, media as base64 μ-law 8 kHz in 20 ms messages, mark, stop).

With the real offline stack behind the edge: the caller's narrowband question is transcribed word
for word, the reply comes back as ``media`` followed by a ``turn-1`` mark, and a second question
spoken while that reply is still unheard (its mark not yet played back) makes the edge send
``clear``; the second question is a turn of its own. With a scripted orchestrator: every malformed
message ends the call with a clean WebSocket close that says why.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from edge_support import ScriptedOrchestrator, edge_app, edge_starter, until
from speech import PHRASE, PHRASE_2, english_speech_pcm16, word_errors

from voxline.cli.stack import STAGES, Stack, StackConfig
from voxline.edge.audio import pcm16_to_ulaw, ulaw_to_pcm16

pytestmark = pytest.mark.asyncio

SID = "MZ00000000000000000000000000000001"
FRAME = 160  # 20 ms of μ-law at 8 kHz


def _start(params: dict[str, str] | None = None, encoding: str = "audio/x-mulaw") -> dict[str, Any]:
    return {"event": "start", "sequenceNumber": "1", "streamSid": SID,
            "start": {"accountSid": "AC0", "callSid": "CA0", "streamSid": SID, "tracks": ["inbound"],
                      "customParameters": params or {},
                      "mediaFormat": {"encoding": encoding, "sampleRate": 8000, "channels": 1}}}


def _media(chunk: bytes, n: int) -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(n + 2), "streamSid": SID,
                       "media": {"track": "inbound", "chunk": str(n + 1), "timestamp": str(n * 20),
                                 "payload": base64.b64encode(chunk).decode()}})


def _ulaw(text: str) -> bytes:
    return pcm16_to_ulaw(english_speech_pcm16(text, 8000))


class Caller:
    """Twilio's side of a call: streams the caller's audio in real time (silence between what it
    is told to say), collects what the edge sends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self._say: list[bytes] = []
        self._n = 0
        self.arrived = asyncio.Event()
        self.close_reason: str | None = None

    def say(self, ulaw: bytes) -> None:
        self._say.extend(ulaw[i:i + FRAME].ljust(FRAME, b"\xff") for i in range(0, len(ulaw), FRAME))

    async def stream(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            chunk = self._say.pop(0) if self._say else b"\xff" * FRAME  # 0xff: μ-law silence
            await self.ws.send_str(_media(chunk, self._n))
            self._n += 1
            await asyncio.sleep(max(0.0, start + self._n * 0.02 - loop.time()))  # real-time pacing

    async def read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message.type == aiohttp.WSMsgType.TEXT:
                self.received.append(json.loads(message.data))
                self.arrived.set()
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                  aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                if message.type == aiohttp.WSMsgType.CLOSE:
                    self.close_reason = message.extra
                self.arrived.set()  # closed
                return

    async def until(self, predicate: Any, within_s: float) -> None:
        async with asyncio.timeout(within_s):
            while not predicate(self.received):
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture(scope="module")
def orchestrator_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The offline stack (Whisper base, SmolLM2, espeak-ng) on free ports; the orchestrator's address."""
    logs = tmp_path_factory.mktemp("phone-stack")
    config = StackConfig(log_dir=Path(logs), ports=dict.fromkeys(STAGES, 0), host="127.0.0.1",
                         env={"GROQ_API_KEY": "", "CEREBRAS_API_KEY": "", "OTEL_TRACES_EXPORTER": "none"},
                         stage_args={"llm": ["--providers", "local"]}, restart=None)
    stack = Stack(config)
    stack.start()
    try:
        yield stack.address("orchestrator")
    finally:
        stack.stop()


@contextlib.asynccontextmanager
async def owned(*coroutines: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, ConnectionError):
                await task


@pytest.mark.slow
@pytest.mark.timeout(600)  # the stack's start (models loading) counts here too
async def test_a_phone_call_through_the_real_stack(orchestrator_address: str) -> None:
    async with edge_app(orchestrator_address) as start:
        running = await start(language="en", max_reply_tokens=60)
        url = f"{running.url.replace('http', 'ws')}/phone"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send_str(json.dumps(_start()))
            caller = Caller(ws)
            caller.say(_ulaw(PHRASE))
            async with owned(caller.stream(), caller.read()):
                # the reply comes back as media, then the turn's mark
                await caller.until(lambda r: any(m["event"] == "mark" for m in r), 180)
                call = next(iter(running.edge.phones.values()))
                finals = [e for e in call.events if e["type"] == "transcript"]
                # the narrowband question's words (one slip of Whisper base allowed)
                assert finals and word_errors(finals[0]["text"], PHRASE) <= 1, call.events
                media = [m for m in caller.received if m["event"] == "media"]
                assert media and all(m["streamSid"] == SID for m in caller.received)
                reply = ulaw_to_pcm16(b"".join(base64.b64decode(m["media"]["payload"]) for m in media))
                level = np.sqrt(np.mean(np.frombuffer(reply, np.int16).astype(np.float64) ** 2))
                assert len(reply) / 2 / 8000 > 0.5 and level > 300, (len(reply), level)
                mark = next(m for m in caller.received if m["event"] == "mark")
                assert mark["mark"]["name"] == "turn-1"
                assert caller.received.index(mark) > caller.received.index(media[-1])
                # the mark is not played back: the caller still hears the reply, and talks over it
                caller.say(_ulaw(PHRASE_2))
                await caller.until(lambda r: any(m["event"] == "clear" for m in r), 120)
                assert next(m for m in caller.received if m["event"] == "clear")["streamSid"] == SID
                await caller.until(lambda r: [m["event"] for m in r].count("mark") >= 2, 180)
                finals = [e for e in call.events if e["type"] == "transcript"]
                assert len(finals) == 2 and finals[1]["turn"] == 2
                assert word_errors(finals[1]["text"], PHRASE_2) <= 1, call.events
                await ws.send_str(json.dumps({"event": "stop", "sequenceNumber": "999", "streamSid": SID,
                                              "stop": {"accountSid": "AC0", "callSid": "CA0"}}))
                await caller.until(lambda r: ws.closed, 30)
        assert ws.close_code == 1000


@pytest.mark.parametrize(("messages", "code", "reason"), [
    (["{oops"], 1008, "message is not JSON"),
    ([json.dumps({"no": "event"})], 1008, "message has no 'event'"),
    ([_media(b"\xff" * FRAME, 0)], 1008, "'media' before 'start'"),
    ([json.dumps(_start()), json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "@@@"}})],
     1008, "'media' payload is not base64"),
    ([json.dumps(_start(encoding="audio/l16"))], 1008, "media format must be audio/x-mulaw, 8000 Hz, mono"),
    ([json.dumps({"event": "dance"})], 1008, "unknown event 'dance'"),
    ([b"\x00binary"], 1003, "expected text messages (JSON)"),
])
async def test_malformed_messages_end_the_call_with_a_reason(messages: list[Any], code: int,
                                                             reason: str) -> None:
    async with edge_starter(ScriptedOrchestrator()) as start:
        running = await start()
        url = f"{running.url.replace('http', 'ws')}/phone"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            for message in messages:
                await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
            closing = await ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert (ws.close_code, closing.extra) == (code, reason)
        await until(lambda: running.edge.taken == 0)  # its slot is free for the next call


async def test_token_in_the_streams_custom_parameters(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret")
    async with edge_starter(ScriptedOrchestrator()) as start:
        running = await start(auth_token_file=str(token))
        url = f"{running.url.replace('http', 'ws')}/phone"
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url) as ws:
                await ws.send_str(json.dumps(_start({"token": "wrong"})))
                closing = await ws.receive(timeout=10)
                assert (ws.close_code, closing.extra) == (1008, "missing or wrong token")
            async with http.ws_connect(url) as ws:
                await ws.send_str(json.dumps(_start({"token": "s3cret"})))
                await ws.send_str(_media(b"\xff" * FRAME, 0))
                await ws.send_str(json.dumps({"event": "stop", "streamSid": SID, "stop": {}}))
                closing = await ws.receive(timeout=10)
                assert ws.close_code == 1000


async def test_a_call_with_no_speech_and_no_reply_is_closed_as_idle() -> None:
    async with edge_starter(ScriptedOrchestrator(speech_chunks=10**9)) as start:
        running = await start(idle_timeout_s=0.5)
        url = f"{running.url.replace('http', 'ws')}/phone"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str(json.dumps(_start()))
            caller = Caller(ws)  # the line stays open: silence every 20 ms, as Twilio sends it
            async with owned(caller.stream(), caller.read()):
                await caller.until(lambda r: ws.closed, 10)
        assert (ws.close_code, caller.close_reason) == (1008, "idle for 0.5 s")
        await until(lambda: running.edge.taken == 0)
