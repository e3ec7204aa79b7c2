"""A one-line progress display for the stack's start-up (which stage is loading, elapsed seconds)."""

from __future__ import annotations

from typing import TextIO

from voxline.cli.stack import STAGES, Progress


class StartupDisplay:
    """Redraws one status line on a terminal; elsewhere prints a line whenever a state changes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last_states: dict[str, str] = {}
        self._width = 0

    def __call__(self, progress: Progress) -> None:
        parts = []
        # replicas (stt-2, ...) next to their stage
        names = [n for s in STAGES
                 for n in (s, *sorted(k for k in progress.states if k.startswith(f"{s}-")))]
        for stage in names:
            state = progress.states.get(stage, "waiting")
            since = progress.since_s.get(stage)
            if state in ("starting", "loading") and since is not None:
                parts.append(f"{stage} {state} {since:4.1f}s")
            else:
                parts.append(f"{stage} {state}")
        line = f"[{progress.elapsed_s:5.1f}s] " + " | ".join(parts)
        if self._tty:
            padded = line.ljust(self._width)
            self._width = len(line)
            self._stream.write("\r" + padded)
            self._stream.flush()
        elif dict(progress.states) != self._last_states:
            self._last_states = dict(progress.states)
            self._stream.write(line + "\n")
            self._stream.flush()

    def done(self) -> None:
        """Ends the redrawn line so later output starts on a fresh one."""
        if self._tty and self._width:
            self._stream.write("\n")
            self._stream.flush()
            self._width = 0
