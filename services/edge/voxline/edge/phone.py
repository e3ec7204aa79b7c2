"""A phone call: Twilio Media Streams' messages bridged to one Converse stream. No HTTP here:
``app`` passes each WebSocket text message to ``PhoneCall.receive`` and sends what ``outgoing()``
yields.

In (https://www.twilio.com/docs/voice/media-streams/websocket-messages): ``connected``, ``start``
(the stream's sid and media format, custom parameters), ``media`` (base64 μ-law, 8 kHz mono),
``mark`` (a mark we sent has been played), ``dtmf`` (ignored) and ``stop``. Out: ``media`` (the
reply, μ-law 8 kHz, 20 ms per message), ``mark`` (``turn-N`` after each reply's audio, so we learn
when the caller has heard it) and ``clear`` (barge-in: Twilio drops the audio it still holds).
A message that breaks the protocol ends the call with a ``ProtocolError`` naming it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from voxline.edge.audio import RECOGNISER_RATE, Resampler, pcm16_to_ulaw, ulaw_to_pcm16
from voxline.edge.bridge import ConverseBridge, SessionSettings
from voxline.edge.metrics import EdgeMetrics

#: Twilio's media: μ-law, 8 kHz, mono; 20 ms is 160 bytes.
PHONE_RATE = 8_000
FRAME_BYTES = 160
FRAME_MS = 20
#: Largest message accepted from Twilio (a media message is ~300 bytes).
MAX_MESSAGE_BYTES = 64 * 1024
#: Outgoing messages waiting for the socket (20 ms each: 60 s).
MAX_OUTGOING = 3000


class ProtocolError(ValueError):
    """The peer broke the Media Streams protocol; the message says how (sent as the close reason)."""


class PhoneCall:
    """One Twilio media stream and its conversation."""

    transport = "phone"

    def __init__(self, *, channel: grpc.aio.Channel, settings: SessionSettings,
                 metadata: tuple[tuple[str, str], ...], metrics: EdgeMetrics, token: str,
                 authorized: bool) -> None:
        self._metrics = metrics
        self._token = token
        self._authorized = authorized or not token
        self.bridge = ConverseBridge(channel, settings, self, metadata,
                                     on_dropped=lambda n: metrics.frames_dropped.labels("in").inc(n))
        self.id = self.bridge.session_id
        self.stream_sid = ""
        self.started = asyncio.Event()
        self.stopped = False
        self._outgoing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(MAX_OUTGOING)
        self._in = Resampler(PHONE_RATE, RECOGNISER_RATE)
        self._out: Resampler | None = None
        self._partial = b""
        #: Turns whose audio was sent and whose end mark has not come back yet.
        self._unheard: set[int] = set()
        self._arrived: dict[int, float] = {}
        self.events: list[dict[str, Any]] = []

    # -- in --------------------------------------------------------------------------------
    def receive(self, text: str) -> None:
        """Handle one message from Twilio; ProtocolError when it breaks the protocol."""
        if len(text) > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message over {MAX_MESSAGE_BYTES} bytes")
        try:
            message = json.loads(text)
        except ValueError:
            raise ProtocolError("message is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise ProtocolError("message has no 'event'")
        event = message["event"]
        if event == "connected":
            return
        if event == "start":
            self._start(message)
        elif event == "media":
            self._media(message)
        elif event == "mark":
            self._mark(message)
        elif event == "stop":
            self.stopped = True
            self.bridge.close()
        elif event != "dtmf":
            raise ProtocolError(f"unknown event {event[:40]!r}")

    def _start(self, message: dict[str, Any]) -> None:
        if self.started.is_set():
            raise ProtocolError("a second 'start'")
        start = message.get("start")
        if not isinstance(start, dict):
            raise ProtocolError("'start' without its 'start' object")
        sid = message.get("streamSid") or start.get("streamSid")
        if not isinstance(sid, str) or not sid:
            raise ProtocolError("'start' without a streamSid")
        fmt = start.get("mediaFormat") or {}
        if (fmt.get("encoding"), int(fmt.get("sampleRate") or 0), int(fmt.get("channels") or 1)) != (
                "audio/x-mulaw", PHONE_RATE, 1):
            raise ProtocolError("media format must be audio/x-mulaw, 8000 Hz, mono")
        params = start.get("customParameters") or {}
        if not self._authorized:
            given = params.get("token") if isinstance(params, dict) else None
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self._token.encode()):
                raise ProtocolError("missing or wrong token")
            self._authorized = True
        self.stream_sid = sid
        self.started.set()

    def _media(self, message: dict[str, Any]) -> None:
        if not self.started.is_set():
            raise ProtocolError("'media' before 'start'")
        media = message.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise ProtocolError("'media' without a payload")
        if media.get("track", "inbound") != "inbound":
            return
        try:
            ulaw = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("'media' payload is not base64") from None
        self.bridge.feed(self._in.convert(ulaw_to_pcm16(ulaw)))

    def _mark(self, message: dict[str, Any]) -> None:
        mark = message.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            raise ProtocolError("'mark' without a name")
        if name.startswith("turn-") and name[5:].isdigit():
            self._unheard.discard(int(name[5:]))

    # -- out -------------------------------------------------------------------------------
    async def outgoing(self) -> AsyncIterator[dict[str, Any]]:
        """Messages to send to Twilio, until the call ends."""
        while True:
            message = await self._outgoing.get()
            if message is None:
                return
            yield message

    def finish(self) -> None:
        """No more outgoing messages."""
        self._put(None)

    def _put(self, message: dict[str, Any] | None) -> None:
        try:
            self._outgoing.put_nowait(message)
        except asyncio.QueueFull:
            self._metrics.frames_dropped.labels("out").inc()

    def sent(self, message: dict[str, Any]) -> None:
        """Called once ``message`` is on the socket (the edge's share of latency ends here)."""
        turn = message.get("_turn")
        if isinstance(turn, int) and turn in self._arrived:
            seconds = time.perf_counter() - self._arrived.pop(turn)
            self._metrics.first_frame.labels(self.transport).observe(seconds)

    # -- the bridge's listener -------------------------------------------------------------
    def event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        del self.events[:-256]

    def audio(self, turn: int, pcm: bytes, rate: int) -> None:
        if self._out is None or self._out.src_rate != rate:
            self._out = Resampler(rate, PHONE_RATE)
        first = turn not in self._unheard
        if first:
            self._unheard.add(turn)
            self._arrived[turn] = time.perf_counter()
        data = self._partial + pcm16_to_ulaw(self._out.convert(pcm))
        whole = len(data) - len(data) % FRAME_BYTES
        for start in range(0, whole, FRAME_BYTES):
            message: dict[str, Any] = {"event": "media", "streamSid": self.stream_sid,
                                       "media": {"payload": base64.b64encode(
                                           data[start:start + FRAME_BYTES]).decode()}}
            if first:
                message["_turn"] = turn  # stripped before sending
                first = False
            self._put(message)
        self._partial = data[whole:]

    def end_of_reply_audio(self, turn: int) -> None:
        if turn not in self._unheard:
            return
        if self._partial:
            self._put({"event": "media", "streamSid": self.stream_sid,
                       "media": {"payload": base64.b64encode(self._partial).decode()}})
            self._partial = b""
        self._put({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": f"turn-{turn}"}})

    def flush(self, turn: int, reason: str) -> None:
        # drop what is still queued here, then tell Twilio to drop what it holds
        finished = False
        while not self._outgoing.empty():
            finished = finished or self._outgoing.get_nowait() is None
        self._partial = b""
        self._unheard.clear()
        self._arrived.clear()
        self._metrics.flushes.labels(self.transport).inc()
        self._put({"event": "clear", "streamSid": self.stream_sid})
        if finished:
            self._put(None)
        self.event({"type": "playback_flushed", "turn": turn, "reason": reason})

    def playing_turns(self) -> set[int]:
        return set(self._unheard)
