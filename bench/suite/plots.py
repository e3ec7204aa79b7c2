"""PNG plots for the report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def grouped_bars(path: Path, title: str, labels: Sequence[str], series: Mapping[str, Sequence[float]],
                 ylabel: str = "ms", target: float | None = None) -> Path:
    """One group of bars per label, one bar per series; an optional horizontal target line."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(labels) * max(1, len(series))), 4.0))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, [v if math.isfinite(v) else 0.0 for v in values], width, label=name)
    if target is not None:
        ax.axhline(target, color="red", linestyle="--", linewidth=1, label=f"target {target:g} {ylabel}")
    ax.set_xticks(range(len(labels)), labels, rotation=0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lines(path: Path, title: str, x: Sequence[float], series: Mapping[str, Sequence[float]],
          xlabel: str, ylabel: str, mark_x: float | None = None, log2_x: bool = False) -> Path:
    """Line plot of several series over the same x values; an optional vertical marker (the bend)."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, values in series.items():
        ax.plot(list(x), [v if math.isfinite(v) else math.nan for v in values], marker="o", label=name)
    if mark_x is not None:
        ax.axvline(mark_x, color="grey", linestyle=":", linewidth=1, label=f"bend at {mark_x:g}")
    if log2_x:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [f"{v:g}" for v in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
