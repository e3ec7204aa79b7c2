"""A browser's session: an aiortc peer (Opus in and out, a data channel of events) bridged to one
Converse stream. No HTTP here: ``app`` hands the SDP offer in and the answer out.

In: the browser's 48 kHz Opus, decoded by aiortc, mixed to mono and resampled to 16 kHz for the
recogniser. Out: the voice's PCM resampled to 48 kHz, cut into 20 ms frames in a ``Playback``
queue; ``ReplyTrack`` hands aiortc one frame per 20 ms (silence when nothing is queued), so a flush
(barge-in) is heard within one frame. aiortc has no trickle ICE: the answer is returned once
gathering is complete (``setLocalDescription`` waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aioice.ice
import aiortc.sdp
import av
import grpc
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError

from voxline.edge.audio import RECOGNISER_RATE, Playback, Resampler, frame_to_mono_pcm
from voxline.edge.bridge import ConverseBridge, SessionSettings, run_owned
from voxline.edge.metrics import EdgeMetrics

log = logging.getLogger(__name__)

#: WebRTC's Opus clock and the frame the edge sends.
WEBRTC_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = WEBRTC_RATE * FRAME_MS // 1000
#: Events kept for a data channel that is not open yet.
MAX_PENDING_EVENTS = 256
#: Bytes a data channel may hold unsent before events are dropped (a stuck page).
MAX_CHANNEL_BUFFER = 1 << 20


class BadOffer(ValueError):
    """The SDP offer cannot be used; the message says why."""


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Offer exactly ``addresses`` as host ICE candidates (aioice offers every interface but
    loopback; 127.0.0.1 makes a loopback-only test work, a fixed list pins the edge's interfaces)."""
    chosen = list(addresses)
    if not chosen:
        return

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def ice_configuration(urls: Sequence[str], username: str, credential: str) -> RTCConfiguration:
    """The aiortc configuration for these STUN/TURN URLs."""
    servers = [RTCIceServer(urls=url, username=username or None, credential=credential or None)
               if url.startswith("turn") else RTCIceServer(urls=url) for url in urls]
    return RTCConfiguration(iceServers=servers)


def set_prefetch(receiver: RTCRtpReceiver, packets: int) -> None:
    """Make ``receiver``'s jitter buffer hand a frame to the decoder once ``packets`` later packets
    are in (aiortc fixes 4 for audio: 80 ms on every word before the recogniser hears it). Loss
    and reordering are handled alike at any value (its 16-packet capacity decides). aiortc has no
    setting for it, so its private attribute is replaced, before any packet arrives."""
    attribute = "_RTCRtpReceiver__jitter_buffer"
    if not hasattr(receiver, attribute):
        log.warning("this aiortc has no audio jitter buffer where expected: --rtp-prefetch ignored")
        return
    setattr(receiver, attribute, JitterBuffer(capacity=16, prefetch=packets))


class ReplyTrack(MediaStreamTrack):
    """The audio the browser hears: queued reply frames, or silence, one 20 ms frame at a time."""

    kind = "audio"

    def __init__(self, playback: Playback, on_lateness: Callable[[float], None] | None = None) -> None:
        super().__init__()
        self._playback = playback
        self._on_lateness = on_lateness
        self._start: float | None = None
        self._pts = 0
        self._silence = bytes(FRAME_SAMPLES * 2)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            due = self._start + self._pts / WEBRTC_RATE
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            if self._on_lateness is not None:
                self._on_lateness(max(0.0, time.monotonic() - due))
        data = self._playback.next_frame() or self._silence
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(data)
        frame.pts = self._pts
        frame.sample_rate = WEBRTC_RATE
        frame.time_base = fractions.Fraction(1, WEBRTC_RATE)
        return frame


class WebRtcSession:
    """One browser: its peer connection, its Converse bridge and the tasks that join them."""

    transport = "webrtc"

    def __init__(self, *, channel: grpc.aio.Channel, settings: SessionSettings,
                 metadata: tuple[tuple[str, str], ...], metrics: EdgeMetrics,
                 rtc_config: RTCConfiguration, max_queued_audio_s: float,
                 on_closed: Callable[[WebRtcSession], Awaitable[None]], rtp_prefetch: int = 1) -> None:
        self._metrics = metrics
        self._on_closed = on_closed
        self._rtp_prefetch = rtp_prefetch
        self.pc = RTCPeerConnection(rtc_config)
        self.playback = Playback(WEBRTC_RATE, FRAME_MS, max_queued_audio_s,
                                 on_first_frame=self._first_frame,
                                 on_dropped=lambda n: metrics.frames_dropped.labels("out").inc(n))
        self.bridge = ConverseBridge(channel, settings, self, metadata,
                                     on_dropped=lambda n: metrics.frames_dropped.labels("in").inc(n))
        self.id = self.bridge.session_id
        self.connected = asyncio.Event()
        self._track = ReplyTrack(self.playback, on_lateness=metrics.frame_lateness.observe)
        self._channel: RTCDataChannel | None = None
        self._pending: deque[str] = deque(maxlen=MAX_PENDING_EVENTS)
        self._tasks: list[asyncio.Task[None]] = []
        self._out_resampler: Resampler | None = None
        self._closing = False
        self.closed = asyncio.Event()

    # -- signalling ------------------------------------------------------------------------
    async def answer(self, sdp: str, kind: str) -> RTCSessionDescription:
        """Take the browser's offer, return the answer (ICE gathered). BadOffer for bad SDP."""
        if kind != "offer":
            raise BadOffer(f"expected an SDP offer, got type {kind!r}")
        if "m=audio" not in sdp:
            raise BadOffer("the offer has no audio (m=audio) section")
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        try:
            # aiortc's parser checks with assert statements; parsed apart, any failure is bad SDP
            aiortc.sdp.SessionDescription.parse(sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except (ValueError, AssertionError, KeyError, IndexError, TypeError, AttributeError) as exc:
            detail = str(exc) or "does not parse"
            raise BadOffer(f"unusable SDP offer: {detail[:200]}") from None
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise BadOffer("the offer has no audio transceiver")
        set_prefetch(audio[0].receiver, self._rtp_prefetch)
        audio[0].sender.replaceTrack(self._track)
        audio[0].direction = "sendrecv"
        await pc.setLocalDescription(await pc.createAnswer())
        local = pc.localDescription
        self._own(run_owned(self.bridge, self._bridge_ended), "bridge")
        return local

    def start_watchdog(self, idle_timeout_s: float, connect_timeout_s: float) -> None:
        self._own(self._watch(idle_timeout_s, connect_timeout_s), "watchdog")

    # -- peer events -----------------------------------------------------------------------
    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.on("open", self._drain_pending)
        if channel.readyState == "open":
            self._drain_pending()

    def _drain_pending(self) -> None:
        while self._pending and self._channel is not None and self._channel.readyState == "open":
            self._channel.send(self._pending.popleft())

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._own(self._read_microphone(track), "microphone")

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
            self.event({"type": "session", "id": self.id})
        elif state in ("failed", "closed"):
            await self.close(f"peer connection {state}")

    async def _read_microphone(self, track: MediaStreamTrack) -> None:
        resampler: Resampler | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            pcm, rate = frame_to_mono_pcm(frame)
            if resampler is None or resampler.src_rate != rate:
                resampler = Resampler(rate, RECOGNISER_RATE)
            self.bridge.feed(resampler.convert(pcm))

    # -- the bridge's listener -------------------------------------------------------------
    def event(self, event: dict[str, Any]) -> None:
        text = json.dumps(event)
        channel = self._channel
        if channel is None or channel.readyState != "open":
            self._pending.append(text)
            return
        if channel.bufferedAmount > MAX_CHANNEL_BUFFER:
            log.warning("data channel full; event dropped", extra={"session": self.id})
            return
        channel.send(text)

    def audio(self, turn: int, pcm: bytes, rate: int) -> None:
        if self._out_resampler is None or self._out_resampler.src_rate != rate:
            self._out_resampler = Resampler(rate, WEBRTC_RATE)
        self.playback.push(turn, self._out_resampler.convert(pcm))

    def end_of_reply_audio(self, turn: int) -> None:
        self.playback.end_turn(turn)

    def flush(self, turn: int, reason: str) -> None:
        flushed = self.playback.flush()
        self._metrics.flushes.labels(self.transport).inc()
        self.event({"type": "playback_flushed", "turn": turn, "reason": reason,
                    "flushed_ms": flushed.milliseconds(FRAME_MS)})

    def playing_turns(self) -> set[int]:
        return self.playback.queued_turns()

    def _first_frame(self, turn: int, seconds: float) -> None:
        self._metrics.first_frame.labels(self.transport).observe(seconds)
        self.event({"type": "reply_audio_sent", "turn": turn, "edge_ms": round(seconds * 1000, 2)})

    # -- lifetime --------------------------------------------------------------------------
    def _own(self, coroutine: Awaitable[None], name: str) -> None:
        async def wrapped() -> None:
            await coroutine

        self._tasks.append(asyncio.create_task(wrapped(), name=f"edge-{name}-{self.id}"))

    async def _bridge_ended(self, reason: str) -> None:
        await self.close(reason or "the orchestrator ended the conversation")

    async def _watch(self, idle_timeout_s: float, connect_timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), connect_timeout_s)
        except TimeoutError:
            await self.close(f"not connected within {connect_timeout_s:g} s")
            return
        while True:
            idle = time.monotonic() - self.bridge.last_activity
            if idle >= idle_timeout_s and not len(self.playback):
                await self.close(f"idle for {idle_timeout_s:g} s")
                return
            await asyncio.sleep(max(0.05, idle_timeout_s - idle))

    async def close(self, reason: str) -> None:
        """End the session (idempotent): tell the page why, close the peer and the stream."""
        if self._closing:
            return
        self._closing = True
        log.info("webrtc session closed", extra={"session": self.id, "reason": reason})
        self.event({"type": "closed", "reason": reason})
        self.bridge.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.pc.close()
        self.closed.set()
        await self._on_closed(self)
