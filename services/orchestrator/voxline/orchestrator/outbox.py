"""The events of one Converse stream on their way to the client, bounded in bytes.

Producers (the turn, the turn-taker) put events without waiting, as they always did; the turn's
TTS loop then awaits ``room()`` after each audio chunk. While more than ``max_bytes`` wait for the
client, ``room()`` waits, so the turn stops reading the TTS stream and gRPC flow control holds the
TTS service back: backpressure reaches the stage. A client that reads nothing for ``timeout_s``
while the buffer is full is not coming back for its audio: ``room()`` raises ClientNotReading and
the session ends the stream with RESOURCE_EXHAUSTED.

Memory bound per stream: ``max_bytes`` plus one TTS chunk, plus what gRPC itself buffers (its
HTTP/2 flow-control windows, toward the client and from the TTS service).
"""

from __future__ import annotations

import asyncio

from voxline.common.errors import LimitExceeded
from voxline.orchestrator.events import AudioEvent


class ClientNotReading(LimitExceeded):
    """The client left a full reply buffer unread for too long."""


def _size(item: object) -> int:
    return len(item.data) if isinstance(item, AudioEvent) else 64


class Outbox:
    """A FIFO of events (and the end marker) with a byte budget."""

    def __init__(self, max_bytes: int, timeout_s: float) -> None:
        self._queue: asyncio.Queue[tuple[object, int]] = asyncio.Queue()
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._bytes = 0
        self._room = asyncio.Event()
        self._room.set()

    def put_nowait(self, item: object) -> None:
        size = _size(item)
        self._bytes += size
        self._queue.put_nowait((item, size))
        if self._bytes > self._max_bytes:
            self._room.clear()

    async def get(self) -> object:
        item, size = await self._queue.get()
        self._bytes -= size
        if self._bytes <= self._max_bytes:
            self._room.set()
        return item

    async def room(self) -> None:
        """Return once the buffer is under budget; ClientNotReading after ``timeout_s`` without."""
        if self._room.is_set():
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._room.wait()
        except TimeoutError:
            raise ClientNotReading(
                f"the client read none of its reply for {self._timeout_s:g} s with "
                f"{self._bytes // 1024} KiB waiting (the limit is {self._max_bytes // 1024} KiB): "
                "the stream ends; read the responses as they come") from None
