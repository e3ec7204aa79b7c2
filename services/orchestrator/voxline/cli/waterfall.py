"""A waterfall picture (PNG) of one turn's spans across every service, drawn with matplotlib (Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxline.cli.spans import Node, Span

# One colour per service, stable across runs; unknown services get the next free one.
_PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
_KNOWN = ("voxline-orchestrator", "voxline-stt", "voxline-llm", "voxline-tts")


def _colour(service: str, seen: dict[str, str]) -> str:
    if service not in seen:
        index = _KNOWN.index(service) if service in _KNOWN else len(_KNOWN) + len(seen)
        seen[service] = _PALETTE[index % len(_PALETTE)]
    return seen[service]


def _label(node: Node) -> str:
    """"   tts · TextToSpeech/Synthesize (server)": indent by depth, service, short span name."""
    span = node.span
    name = span.name.removeprefix("/voxline.v1.")
    if span.name == "tts" and isinstance(span.attributes.get("voxline.sentence.index"), int):
        name += f" sentence {span.attributes['voxline.sentence.index'] + 1}"
    if span.kind in ("CLIENT", "SERVER"):
        name += f" ({span.kind.lower()})"
    return f"{'  ' * node.depth}{span.service.removeprefix('voxline-')} · {name}"


def draw_waterfall(nodes: list[Node], turn: Span, out: Path, title: str = "") -> None:
    """Write a PNG: one bar per span (indented by depth, labelled service/name, duration at the
    bar's end) on a ms axis from the turn's start, with the turn's time to first audio marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not nodes:
        raise ValueError("no spans to draw")
    t0 = min(n.span.start_ns for n in nodes)
    end_ms = max((n.span.end_ns - t0) / 1e6 for n in nodes)
    height = max(2.5, 0.34 * len(nodes) + 1.4)
    fig, ax = plt.subplots(figsize=(12, height), dpi=110)
    colours: dict[str, str] = {}
    labels = []
    for row, node in enumerate(nodes):
        span = node.span
        start = (span.start_ns - t0) / 1e6
        width = max(span.duration_ms, end_ms * 0.002)  # keep sub-pixel spans visible
        colour = _colour(span.service, colours)
        ax.barh(row, width, left=start, height=0.62, color=colour,
                edgecolor="#B00020" if span.status == "ERROR" else colour, linewidth=1.2)
        ax.text(start + width + end_ms * 0.006, row, f"{span.duration_ms:.1f} ms", va="center",
                fontsize=8, color="#333333")
        labels.append(_label(node))
    ax.set_yticks(range(len(nodes)))
    # Left-aligned monospace labels pushed out by the longest one, so the depth indent shows.
    widest = max(len(label) for label in labels)
    ax.set_yticklabels(labels, fontsize=8, family="monospace", ha="left")
    ax.tick_params(axis="y", pad=widest * 8 * 0.61 + 6, length=0)
    ax.invert_yaxis()
    ax.set_xlim(0, end_ms * 1.12)
    ax.set_xlabel("ms since the turn started")
    ax.grid(axis="x", color="#DDDDDD", linewidth=0.6)
    ax.set_axisbelow(True)
    ttfa = turn.attributes.get("voxline.time_to_first_audio_ms")
    turn_offset = (turn.start_ns - t0) / 1e6
    extra: list[Any] = []
    if isinstance(ttfa, int | float) and not isinstance(ttfa, bool):
        x = turn_offset + float(ttfa)
        ax.axvline(x, color="#B00020", linestyle="--", linewidth=1)
        extra.append(Line2D([0], [0], color="#B00020", linestyle="--",
                                label=f"first audio {float(ttfa):.0f} ms"))
    handles = [Patch(color=c, label=s) for s, c in colours.items()] + extra
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(title or f"trace {turn.trace_id}", fontsize=10, loc="left")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
