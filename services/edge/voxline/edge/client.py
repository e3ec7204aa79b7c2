"""A WebRTC client of the edge in Python (aiortc): a microphone that speaks PCM you give it, the
data channel's events, and when reply audio arrives. For smoke tests, load tests and benchmarks
(``bench/edge.py``); a person uses the page.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from voxline.edge.audio import Resampler
from voxline.edge.webrtc import FRAME_MS, FRAME_SAMPLES, WEBRTC_RATE

#: RMS (of int16 samples) above which a frame counts as voiced.
VOICED_RMS = 300.0


class Microphone(MediaStreamTrack):
    """Speaks what ``say`` queued, in real time (20 ms frames at 48 kHz), silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: collections.deque[bytes] = collections.deque()
        self._start: float | None = None
        self._pts = 0
        #: perf_counter time the last voiced frame was sent (the end of speech).
        self.last_voiced_at: float | None = None
        self.spoken = asyncio.Event()

    def say(self, pcm: bytes, rate: int) -> None:
        """Queue 16-bit mono PCM to speak."""
        data = Resampler(rate, WEBRTC_RATE).convert(pcm)
        size = FRAME_SAMPLES * 2
        data += bytes(-len(data) % size)
        self.spoken.clear()
        self._queue.extend(data[i:i + size] for i in range(0, len(data), size))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / WEBRTC_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        if self._queue:
            data = self._queue.popleft()
            samples = np.frombuffer(data, dtype=np.int16)
            if np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > VOICED_RMS:
                self.last_voiced_at = time.perf_counter()
            if not self._queue:
                self.spoken.set()
        else:
            data = bytes(FRAME_SAMPLES * 2)
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(data)
        frame.pts = self._pts
        frame.sample_rate = WEBRTC_RATE
        frame.time_base = fractions.Fraction(1, WEBRTC_RATE)
        return frame


@dataclass
class HeardTurn:
    """What the client heard of one reply."""

    end_of_speech_at: float | None
    first_voiced_at: float | None = None


@dataclass
class EdgeClient:
    """One WebRTC session with the edge at ``url`` (``http://host:port``)."""

    url: str
    token: str = ""
    mic: Microphone = field(default_factory=Microphone)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: perf_counter times of received reply frames above VOICED_RMS.
    voiced_frames: list[float] = field(default_factory=list)
    _pc: RTCPeerConnection | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self) -> None:
        """Offer, answer, wait until connected and the data channel is open."""
        pc = self._pc = RTCPeerConnection()
        channel = pc.createDataChannel("events")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        channel.on("message", self._on_message)
        pc.addTrack(self.mic)
        pc.on("track", self._on_track)
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.url}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"},
                headers=headers) as response:
            body = await response.json()
            if response.status != 200:
                raise ConnectionRefusedError(f"{response.status}: {body.get('error')}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        await asyncio.wait_for(opened.wait(), 30)

    def _on_message(self, message: str | bytes) -> None:
        event = json.loads(message)
        event["received_at"] = time.perf_counter()
        self.events.append(event)
        self._changed.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        async def read() -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                assert isinstance(frame, av.AudioFrame)
                samples = frame.to_ndarray().astype(np.float64)
                if np.sqrt(np.mean(samples ** 2)) > VOICED_RMS:
                    self.voiced_frames.append(time.perf_counter())

        self._tasks.append(asyncio.create_task(read(), name="edge-client-reply"))

    async def wait_for(self, predicate: Any, within_s: float) -> dict[str, Any]:
        """The first event (from the start) for which ``predicate(event)`` holds."""
        deadline = time.monotonic() + within_s
        while True:
            for event in self.events:
                if predicate(event):
                    return event
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no such event in {within_s:g} s; got {[e['type'] for e in self.events]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def heard_after(self, moment: float) -> float | None:
        """perf_counter time of the first voiced reply frame received after ``moment``."""
        return next((t for t in self.voiced_frames if t > moment), None)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pc is not None:
            await self._pc.close()


__all__ = ["FRAME_MS", "EdgeClient", "HeardTurn", "Microphone"]
