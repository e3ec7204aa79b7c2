"""A waterfall picture (PNG) of one turn's spans across every service, drawn with matplotlib (Agg).

The layout is computed first, without matplotlib (``layout``), so it is tested on numbers:
- one row per span, except that a gRPC hop is one row: the caller's CLIENT span with the callee's
  SERVER span drawn inside it, labelled with the server's share of the hop (the rest is network,
  queueing and (de)serialisation);
- the turn's milestones as vertical marks: the LLM's first token, the first clause handed to TTS
  (the band between the two is the first-clause wait) and the first audio sent. They come from the
  span events of those names, or, for span files written before those events existed, from the
  ``llm`` span's time to first token, the first ``tts`` span's start and the turn's time to first
  audio.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from voxline.cli.spans import Node, Span
from voxline.common import turn_events

# One colour per service, stable across runs; unknown services get the next free one.
_PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
_KNOWN = ("voxline-orchestrator", "voxline-stt", "voxline-llm", "voxline-tts")


@dataclass(frozen=True)
class Row:
    """One bar: a span, or a client span with its server span inside (times in ms from t0)."""

    label: str
    depth: int
    service: str
    start_ms: float
    duration_ms: float
    error: bool
    #: The callee's service and its server span's start and duration, for a merged hop.
    server_service: str = ""
    server_start_ms: float = 0.0
    server_duration_ms: float = 0.0

    @property
    def merged(self) -> bool:
        return bool(self.server_service)

    @property
    def server_share(self) -> float:
        """The server span's duration as a fraction of the client's (0..1)."""
        return min(1.0, self.server_duration_ms / self.duration_ms) if self.duration_ms > 0 else 0.0

    @property
    def caption(self) -> str:
        """What is written at the bar's end."""
        if not self.merged:
            return f"{self.duration_ms:.1f} ms"
        return (f"{self.duration_ms:.1f} ms, server {self.server_duration_ms:.1f} ms "
                f"({100 * self.server_share:.0f}%)")


@dataclass(frozen=True)
class Mark:
    """A milestone of the turn: a vertical line at ``at_ms`` (ms from t0)."""

    name: str
    at_ms: float


@dataclass(frozen=True)
class Layout:
    rows: list[Row]
    marks: list[Mark]
    end_ms: float


def _short(name: str) -> str:
    return name.removeprefix("/voxline.v1.")


def _name(span: Span) -> str:
    name = _short(span.name)
    index = span.attributes.get("voxline.sentence.index")
    if span.name == "tts" and isinstance(index, int):
        name += f" sentence {index + 1}"
    return name


def _rows(nodes: list[Node], t0: int) -> Iterator[Row]:
    children: dict[str, list[Span]] = {}
    for node in nodes:
        if node.span.parent_span_id is not None:
            children.setdefault(node.span.parent_span_id, []).append(node.span)

    def ms(ns: int) -> float:
        return (ns - t0) / 1e6

    def walk(span: Span, depth: int) -> Iterator[Row]:
        below = children.get(span.span_id, [])
        servers = [c for c in below if c.kind == "SERVER"]
        error = span.status == "ERROR"
        if span.kind == "CLIENT" and len(servers) == 1:
            server = servers[0]
            callee = server.service.removeprefix("voxline-")
            yield Row(label=f"{'  ' * depth}{span.service.removeprefix('voxline-')} > {callee} · "
                            f"{_name(span)}",
                      depth=depth, service=span.service, start_ms=ms(span.start_ns),
                      duration_ms=span.duration_ms, error=error or server.status == "ERROR",
                      server_service=server.service, server_start_ms=ms(server.start_ns),
                      server_duration_ms=server.duration_ms)
            below = [c for c in below if c is not server] + children.get(server.span_id, [])
            below.sort(key=lambda s: (s.start_ns, s.name))
        else:
            kind = f" ({span.kind.lower()})" if span.kind in ("CLIENT", "SERVER") else ""
            yield Row(label=f"{'  ' * depth}{span.service.removeprefix('voxline-')} · {_name(span)}{kind}",
                      depth=depth, service=span.service, start_ms=ms(span.start_ns),
                      duration_ms=span.duration_ms, error=error)
        for child in below:
            yield from walk(child, depth + 1)

    for node in nodes:
        if node.depth == 0:
            yield from walk(node.span, 0)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _marks(spans: list[Span], turn: Span, t0: int) -> list[Mark]:
    def event_ms(name: str) -> float | None:
        for span in spans:
            event = span.event(name)
            if event is not None:
                return (event.time_ns - t0) / 1e6
        return None

    llm = next((s for s in spans if s.name == "llm" and s.kind == "INTERNAL"), None)
    first_token = event_ms(turn_events.FIRST_TOKEN)
    if first_token is None and llm is not None:
        ttft = _number(llm.attributes.get("voxline.llm.ttft_ms"))
        if ttft is not None:
            first_token = (llm.start_ns - t0) / 1e6 + ttft
    first_clause = event_ms(turn_events.FIRST_CLAUSE_TO_TTS)
    if first_clause is None:
        tts = sorted((s for s in spans if s.name == "tts"), key=lambda s: s.start_ns)
        if tts:
            first_clause = (tts[0].start_ns - t0) / 1e6
    first_audio = event_ms(turn_events.FIRST_AUDIO_SENT)
    if first_audio is None:
        ttfa = _number(turn.attributes.get("voxline.time_to_first_audio_ms"))
        if ttfa is not None:
            first_audio = (turn.start_ns - t0) / 1e6 + ttfa
    marks = [Mark(name, at) for name, at in (("first token", first_token),
                                             ("first clause to TTS", first_clause),
                                             ("first audio", first_audio)) if at is not None]
    return marks


def layout(nodes: list[Node], turn: Span) -> Layout:
    """Rows and milestone marks of one turn's trace (``nodes`` as ``spans.tree`` orders them)."""
    if not nodes:
        raise ValueError("no spans to draw")
    t0 = min(n.span.start_ns for n in nodes)
    end_ms = max((n.span.end_ns - t0) / 1e6 for n in nodes)
    return Layout(list(_rows(nodes, t0)), _marks([n.span for n in nodes], turn, t0), end_ms)


def first_clause_wait_ms(marks: list[Mark]) -> float | None:
    """From the first token to the first clause handed to TTS, when both are known."""
    at = {m.name: m.at_ms for m in marks}
    if "first token" in at and "first clause to TTS" in at:
        return at["first clause to TTS"] - at["first token"]
    return None


def _colour(service: str, seen: dict[str, str]) -> str:
    if service not in seen:
        index = _KNOWN.index(service) if service in _KNOWN else len(_KNOWN) + len(seen)
        seen[service] = _PALETTE[index % len(_PALETTE)]
    return seen[service]


_MARK_STYLE: dict[str, tuple[str, Literal[":", "-.", "--"]]] = {
    "first token": ("#2E7D32", ":"), "first clause to TTS": ("#6A1B9A", "-."),
    "first audio": ("#B00020", "--")}


def draw_waterfall(nodes: list[Node], turn: Span, out: Path, title: str = "") -> None:
    """Write a PNG: one bar per span or gRPC hop (server share drawn inside the client bar),
    indented by depth, on a ms axis from the trace's start, with the turn's milestones marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plan = layout(nodes, turn)
    rows, end_ms = plan.rows, plan.end_ms
    height = max(2.5, 0.34 * len(rows) + 1.6)
    fig, ax = plt.subplots(figsize=(13, height), dpi=110)
    colours: dict[str, str] = {}
    for row_index, row in enumerate(rows):
        width = max(row.duration_ms, end_ms * 0.002)  # keep sub-pixel spans visible
        colour = _colour(row.service, colours)
        edge = "#B00020" if row.error else colour
        if row.merged:
            # The hop as the caller saw it (light), the callee's own time inside it (solid).
            server_colour = _colour(row.server_service, colours)
            ax.barh(row_index, width, left=row.start_ms, height=0.62, color=server_colour, alpha=0.28,
                    edgecolor=edge, linewidth=1.2)
            ax.barh(row_index, max(row.server_duration_ms, end_ms * 0.002), left=row.server_start_ms,
                    height=0.62, color=server_colour, edgecolor=server_colour, linewidth=0)
        else:
            ax.barh(row_index, width, left=row.start_ms, height=0.62, color=colour, edgecolor=edge,
                    linewidth=1.2)
        ax.text(row.start_ms + width + end_ms * 0.006, row_index, row.caption, va="center",
                fontsize=8, color="#333333")
    labels = [row.label for row in rows]
    ax.set_yticks(range(len(rows)))
    # Left-aligned monospace labels pushed out by the longest one, so the depth indent shows.
    widest = max(len(label) for label in labels)
    ax.set_yticklabels(labels, fontsize=8, family="monospace", ha="left")
    ax.tick_params(axis="y", pad=widest * 8 * 0.61 + 6, length=0)
    ax.invert_yaxis()
    ax.set_xlim(0, end_ms * 1.22)
    ax.set_xlabel("ms since the turn's first span started")
    ax.grid(axis="x", color="#DDDDDD", linewidth=0.6)
    ax.set_axisbelow(True)
    extra: list[Any] = []
    at = {m.name: m.at_ms for m in plan.marks}
    wait = first_clause_wait_ms(plan.marks)
    if wait is not None and wait > 0:
        ax.axvspan(at["first token"], at["first clause to TTS"], color="#6A1B9A", alpha=0.08, linewidth=0)
        extra.append(Patch(color="#6A1B9A", alpha=0.15, label=f"first-clause wait {wait:.0f} ms"))
    for mark in plan.marks:
        colour, style = _MARK_STYLE[mark.name]
        ax.axvline(mark.at_ms, color=colour, linestyle=style, linewidth=1.1)
        extra.append(Line2D([0], [0], color=colour, linestyle=style,
                            label=f"{mark.name} at {mark.at_ms:.0f} ms"))
    handles = [Patch(color=c, label=s) for s, c in colours.items()]
    if any(row.merged for row in rows):
        handles.append(Patch(facecolor="#999999", alpha=0.28, edgecolor="#999999",
                             label="gRPC hop: light = client only\n(network, queueing), solid = server"))
    ax.legend(handles=handles + extra, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
              frameon=False)
    ax.set_title(title or f"trace {turn.trace_id}", fontsize=10, loc="left")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
