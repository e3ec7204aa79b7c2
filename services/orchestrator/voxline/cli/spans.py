"""Reading the JSON-lines span file (voxline.common.telemetry.span_to_dict) and finding the turns."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxline.cli.table import LatencyRow, LatencyTable

TURN_SPAN = "voxline.turn"

#: First bytes of audio files, for a clear error when one is given instead of a span file.
_AUDIO_MAGIC = {b"RIFF": "WAV", b"fLaC": "FLAC", b"OggS": "OGG", b"ID3": "MP3", b"FORM": "AIFF",
                b"\xff\xfb": "MP3", b"\xff\xf3": "MP3"}


class NotASpanFile(ValueError):
    """The file holds no JSON-lines spans (binary data, an audio file, some other text)."""


@dataclass(frozen=True)
class SpanEvent:
    """A point in time on a span (``first_token``, ...)."""

    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Span:
    """One finished span, as written by the JSON-lines exporter."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    service: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def event(self, name: str) -> SpanEvent | None:
        """The first event called ``name``, if any."""
        return next((e for e in self.events if e.name == name), None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Span:
        return cls(
            name=str(data["name"]), trace_id=str(data["trace_id"]), span_id=str(data["span_id"]),
            parent_span_id=data.get("parent_span_id") or None, service=str(data.get("service", "")),
            kind=str(data.get("kind", "")), start_ns=int(data["start_ns"]), end_ns=int(data["end_ns"]),
            status=str(data.get("status", "")), attributes=dict(data.get("attributes") or {}),
            events=tuple(SpanEvent(str(e["name"]), int(e["time_ns"]), dict(e.get("attributes") or {}))
                         for e in data.get("events") or ()),
        )


@dataclass
class SpanFile:
    """The spans of a file, plus how many lines could not be read."""

    spans: list[Span]
    bad_lines: int = 0

    def turns(self) -> list[Span]:
        """The ``voxline.turn`` root spans, oldest first."""
        return sorted((s for s in self.spans if s.name == TURN_SPAN), key=lambda s: s.start_ns)

    def trace(self, trace_id: str) -> list[Span]:
        """Every span of one trace, from every service."""
        return [s for s in self.spans if s.trace_id == trace_id]


def parse_lines(lines: Iterable[str]) -> SpanFile:
    """Spans from JSON lines; blank lines are skipped, unreadable ones counted (a process killed
    mid-write can leave half a line)."""
    spans: list[Span] = []
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            spans.append(Span.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            bad += 1
    return SpanFile(spans, bad)


def read_span_file(path: Path) -> SpanFile:
    """Read ``path``; OSError when it cannot be opened, NotASpanFile when it holds lines but no
    span (an audio file, binary data, other text)."""
    data = path.read_bytes()
    kind = next((name for magic, name in _AUDIO_MAGIC.items() if data.startswith(magic)), None)
    if kind is not None:
        raise NotASpanFile(f"{path} is a {kind} audio file, not a span file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotASpanFile(f"{path} holds binary data, not a span file") from None
    spans = parse_lines(text.splitlines())
    if not spans.spans and spans.bad_lines:
        raise NotASpanFile(f"{path} holds no span: none of its {spans.bad_lines} line(s) is a JSON span")
    return spans


def turn_label(index: int, turn: Span) -> str:
    """"1", "2", ... plus the turn's status when it did not complete."""
    status = turn.attributes.get("voxline.turn.status", "completed")
    return str(index) if status == "completed" else f"{index} ({status})"


def turns_table(turns: list[Span], target_ms: float) -> LatencyTable:
    """The latency table of these turns (figures from the turn spans' attributes)."""
    table = LatencyTable(target_ms=target_ms)
    for index, turn in enumerate(turns, start=1):
        table.add(LatencyRow.from_metrics(turn_label(index, turn), turn.attributes))
    return table


@dataclass(frozen=True)
class Node:
    """A span placed in its trace's tree: depth 0 for roots."""

    span: Span
    depth: int


def tree(spans: list[Span]) -> list[Node]:
    """Depth-first order of a trace, children by start time; a span whose parent is missing from
    the list (not exported, or another trace's) is treated as a root."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    for span in spans:
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    for siblings in children.values():
        siblings.sort(key=lambda s: (s.start_ns, s.name))

    def walk(parent: str | None, depth: int) -> Iterator[Node]:
        for span in children.get(parent, []):
            yield Node(span, depth)
            yield from walk(span.span_id, depth + 1)

    return list(walk(None, 0))


def render_tree(nodes: list[Node]) -> str:
    """The trace as indented text: offset from the first span's start and duration, ms."""
    if not nodes:
        return "(no spans)"
    t0 = min(n.span.start_ns for n in nodes)
    lines = []
    for node in nodes:
        offset = (node.span.start_ns - t0) / 1e6
        lines.append(f"{offset:8.1f} ms {node.span.duration_ms:8.1f} ms  {'  ' * node.depth}"
                     f"{node.span.name}  [{node.span.service}]")
        for event in node.span.events:
            lines.append(f"{(event.time_ns - t0) / 1e6:8.1f} ms {'':11}  {'  ' * node.depth}  "
                         f"* {event.name}")
    return "\n".join(lines)
