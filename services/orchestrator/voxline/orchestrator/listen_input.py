"""What a session's Listen stream is fed from: its input log, bounded in bytes of audio, not chunks.

Every input (an audio chunk, an end-of-turn mark, a reply that became audible, the half-close) goes
into the log in order; the current Listen stream reads it at its own cursor (``read``). What the
stream has read stays while a replay may need it (after a failure a new stream reads the log again
from the oldest entry kept), and no longer:

- a turn boundary (a reply became audible, or a turn ended without one: ``boundary``) forgets
  everything before it — STT's next speech is a new turn;
- the start of a new user turn (``new_turn``) forgets the audio before its pre-roll;
- with no turn in progress, only the last ``IDLE_KEEP_SECONDS`` of audio read are kept.

Two bounds, in bytes (each entry also costs ``ENTRY_OVERHEAD``: 5,000 three-byte chunks cost what
they cost, not 15 KB):

- the *backlog* (not yet read by STT): beyond ``BACKLOG_SECONDS`` of the stream's format (and half
  the turn limit), ``put``
  waits, which pushes back on the client's stream; long enough to ride out a stage restart
  (``--stage-retry-wait-s``) without pushing back on a real-time client. A backlog that nothing
  takes for ``stall_s`` ends the stream (DEADLINE_EXCEEDED naming STT), and a reader that stopped
  (``stop``) wakes every waiter with its error — no client hangs in ``put``;
- the whole log: a turn over ``max_bytes`` (``--max-turn-audio-mb``, and at most
  ``REPLAY_SECONDS`` of the format) ends the stream with RESOURCE_EXHAUSTED, as a client-marked
  utterance over that size does.

``release`` gives everything back when the session ends.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncIterator

from voxline.common.errors import LimitExceeded
from voxline.orchestrator.domain import ReplyStartedSignal, StageError

#: Most audio one turn may hold for a replay, seconds of the stream's format (STT's own turn limit,
#: its --max-audio-seconds, is 120 s by default).
REPLAY_SECONDS = 120.0
#: Audio not yet read by STT before the client is pushed back, seconds of the stream's format.
BACKLOG_SECONDS = 15.0
#: What one log entry costs besides its audio (the entry, its bytes object, the clock's record).
ENTRY_OVERHEAD = 160
#: With no turn in progress, audio already read that is kept: STT may not have said yet that
#: speech started in it (its events lag the audio by a worker thread's queue).
IDLE_KEEP_SECONDS = 5.0
#: Kept before a new turn's first voiced frame (STT's pre-roll is 0.3 s).
PREROLL_KEEP_SECONDS = 1.0


class Close:
    """The end of the input (the client half-closed)."""


@dataclasses.dataclass(slots=True)
class Entry:
    """One input: audio (bytes, with its arrival time) or a signal."""

    index: int
    item: object
    #: Audio bytes of the session before this entry, and this entry's own.
    offset: int
    size: int
    arrived: float = 0.0


class InputLog:
    """One session's inputs to STT (see the module doc). Not thread-safe: one event loop."""

    def __init__(self, bytes_per_second: int, max_bytes: int, stall_s: float) -> None:
        self._bps = max(bytes_per_second, 1)
        #: The most the log holds (audio and overhead), bytes.
        self.max_bytes = max(1, min(max_bytes, int(REPLAY_SECONDS * self._bps)))
        # both under the turn limit: idle audio, or a backlog STT has not taken, is not a long turn
        self._backlog_max = min(int(BACKLOG_SECONDS * self._bps), self.max_bytes // 2)
        self._idle_keep = min(int(IDLE_KEEP_SECONDS * self._bps), self.max_bytes // 4)
        self._stall_s = stall_s
        self._entries: collections.deque[Entry] = collections.deque()
        #: Bytes the entries kept cost (audio and overhead).
        self.held_bytes = 0
        self._audio_total = 0  # audio bytes ever put
        self._next = 0  # index of the next entry
        self._cursor = 0  # index of the current stream's next entry
        self._unread = 0  # bytes (audio and overhead) of the entries from the cursor on
        self._origin = 0  # audio offset of the current stream's second 0
        self._generation = 0
        self._added = asyncio.Event()
        self._taken = asyncio.Event()
        self._stopped: BaseException | None = None
        #: A user turn is in progress in STT (its audio is kept whole for a replay).
        self.holding = False
        #: The current stream has read the ``Close``.
        self.closed = False

    # ---- writers (the session) -------------------------------------------------------------------
    async def put_audio(self, data: bytes, arrived: float) -> None:
        """Add a chunk, once the backlog has room (see the module doc)."""
        await self._room(len(data) + ENTRY_OVERHEAD)
        self._append(data, len(data), arrived)

    async def put(self, item: object) -> None:
        """Add a signal (``EndTurnSignal``, ``Close``), once the backlog has room."""
        await self._room(ENTRY_OVERHEAD)
        self._append(item, 0, 0.0)

    def boundary(self) -> None:
        """A turn boundary (a reply became audible, or a turn ended without one), sent at once."""
        if self._stopped is None:
            self._append(ReplyStartedSignal(), 0, 0.0, check=False)

    def stop(self, error: BaseException) -> None:
        """The reader is gone for good: whoever waits for room, or puts later, gets ``error`` (the
        first one given)."""
        if self._stopped is None:
            self._stopped = error
        self._taken.set()

    def release(self) -> None:
        """The session ended: give the audio back."""
        self._entries.clear()
        self.held_bytes = self._unread = 0
        self._cursor = self._next

    # ---- what STT said (positions are seconds of the current stream) ------------------------------
    def new_turn(self, at_s: float) -> None:
        """A new user turn starts at ``at_s``: the audio read before its pre-roll is not needed."""
        self.holding = True
        self._forget_read_before(self._origin + int(max(0.0, at_s - PREROLL_KEEP_SECONDS) * self._bps))

    def position(self, at_s: float) -> int:
        """The session's audio offset of the current stream's second ``at_s``."""
        return self._origin + int(at_s * self._bps)

    # ---- the reader (the Listen stream) ----------------------------------------------------------
    async def read(self) -> AsyncIterator[Entry]:
        """The entries from the oldest one kept (a replay, after a failure) up to ``Close``. A stream
        that was replaced (a newer ``read``) stops without taking anything: gRPC may still hold it."""
        self._generation += 1
        generation = self._generation
        first = self._entries[0] if self._entries else None
        self._cursor = first.index if first is not None else self._next
        self._origin = first.offset if first is not None else self._audio_total
        self._unread = self.held_bytes
        self.closed = False
        self._taken.set()
        while generation == self._generation:
            if self._cursor == self._next:
                self._added.clear()
                await self._added.wait()
                continue
            entry = self._entries[self._cursor - self._entries[0].index]
            self._cursor += 1
            self._unread -= entry.size + ENTRY_OVERHEAD
            self._taken.set()
            if isinstance(entry.item, Close):
                self.closed = True
                return
            if isinstance(entry.item, ReplyStartedSignal):  # no replay before a boundary
                self.holding = False
                self._forget_read_before(None)
            yield entry

    # ---- inside ----------------------------------------------------------------------------------
    async def _room(self, cost: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stall_s
        while True:
            if self._stopped is not None:
                raise self._stopped
            if self._unread <= 0 or self._unread + cost <= self._backlog_max:
                return
            self._taken.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._taken.wait()
            except TimeoutError:
                raise StageError("stt", "DEADLINE_EXCEEDED",
                                 f"the speech recogniser took none of the audio for {self._stall_s:g} s"
                                 ) from None

    def _append(self, item: object, size: int, arrived: float, *, check: bool = True) -> None:
        cost = size + ENTRY_OVERHEAD
        if not self.holding:
            self._forget_read_before(self._read_offset() - self._idle_keep)
        if check and self.held_bytes + cost > self.max_bytes:
            raise LimitExceeded(f"the turn is over {self.max_bytes} bytes of audio (the limit); "
                                "pause sooner")
        self._entries.append(Entry(self._next, item, self._audio_total, size, arrived))
        self._next += 1
        self._audio_total += size
        self.held_bytes += cost
        self._unread += cost
        self._added.set()

    def _read_offset(self) -> int:
        """The audio offset up to which the current stream has read."""
        if self._cursor >= self._next or not self._entries:
            return self._audio_total
        return self._entries[max(0, self._cursor - self._entries[0].index)].offset

    def _forget_read_before(self, offset: int | None) -> None:
        """Drop entries already read that end at or before ``offset`` (None: every entry read)."""
        while self._entries and self._entries[0].index < self._cursor:
            first = self._entries[0]
            if offset is not None and first.offset + first.size > offset:
                return
            self._entries.popleft()
            self.held_bytes -= first.size + ENTRY_OVERHEAD
