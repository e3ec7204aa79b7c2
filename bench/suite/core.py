"""What every section shares: the run mode, the section result, the progress bar and the stacks."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.machine import describe_machine, machine_line

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mode:
    """How big each section is."""

    name: str  # "smoke", "quick" or "full"
    #: Section 1: turns through the stack (each also run the sequential way).
    baseline_turns: int
    #: Section 1 and real scaling: reply length cap, tokens (same for both paths).
    max_tokens: int
    #: Section 5: concurrency levels and turns per session, fake and real engines.
    fake_levels: tuple[int, ...]
    fake_turns: int
    real_levels: tuple[int, ...]
    real_turns: int
    #: False: every stack uses fake engines (smoke), so nothing loads a model.
    real_engines: bool
    #: Sizes of the sections whose core lives in another module: runs per STT path, runs per TTS
    #: voice, LLM requests per strategy, overhead turns and pipelined/sequential runs; GPU runs.
    stt_runs: int
    tts_runs: int
    llm_requests: int
    overhead_turns: int
    overhead_runs: int
    gpu_runs: int


MODES = {
    "smoke": Mode("smoke", baseline_turns=2, max_tokens=32, fake_levels=(1, 2), fake_turns=1,
                  real_levels=(), real_turns=0, real_engines=False, stt_runs=2, tts_runs=1,
                  llm_requests=20, overhead_turns=10, overhead_runs=2, gpu_runs=1),
    "quick": Mode("quick", baseline_turns=5, max_tokens=64, fake_levels=(1, 2, 4, 8, 16), fake_turns=3,
                  real_levels=(1, 2, 4), real_turns=1, real_engines=True, stt_runs=5, tts_runs=3,
                  llm_requests=200, overhead_turns=200, overhead_runs=5, gpu_runs=3),
    "full": Mode("full", baseline_turns=20, max_tokens=80, fake_levels=(1, 2, 4, 8, 16), fake_turns=8,
                 real_levels=(1, 2, 4, 8, 16), real_turns=2, real_engines=True, stt_runs=20, tts_runs=10,
                 llm_requests=1000, overhead_turns=1000, overhead_runs=20, gpu_runs=10),
}


@dataclass
class SectionResult:
    """What a section hands to the report: setup lines, Markdown body, figures for JSON, plots."""

    key: str
    title: str
    status: str = "ok"  # "ok", "not available: <reason>", "failed: <error>"
    setup: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Context:
    """Shared by the sections of one run: mode, output folder, machine, progress, stacks."""

    def __init__(self, mode: Mode, out_dir: Path, bar: tqdm | None = None) -> None:
        self.mode = mode
        self.out_dir = out_dir
        self.machine = describe_machine()
        self.bar = bar
        self._stacks: dict[str, Any] = {}
        #: Each stack's service logs go to DIR/logs/<kind>/<stage>.log.
        self._log_root = out_dir / "logs"

    @property
    def machine_line(self) -> str:
        return machine_line(self.machine)

    # -- output -----------------------------------------------------------------------------
    def echo(self, text: str = "") -> None:
        """Print to stdout without breaking the progress bar."""
        tqdm.write(text, file=sys.stdout)

    def step(self, what: str) -> None:
        """Show what is running now next to the bar."""
        if self.bar is not None:
            self.bar.set_postfix_str(what[:60])

    @contextmanager
    def steps(self, what: str, total: int) -> Iterator[Callable[[], None]]:
        """An inner progress bar of ``total`` steps; yields the function that advances it."""
        inner = tqdm(total=total, desc=f"  {what}", leave=False, file=sys.stderr,
                     disable=self.bar is None or self.bar.disable)
        try:
            yield lambda: inner.update(1)
        finally:
            inner.close()

    # -- stacks -----------------------------------------------------------------------------
    def stack(self, kind: str) -> Any:
        """The running stack of ``kind`` ("real" or "fake"), started on first use and shared.

        "real" is the offline defaults (whisper base int8 cpu, local SmolLM2, espeak); in smoke
        mode it is the fake stack too (no model is loaded), which the report says.
        """
        if kind == "real" and not self.mode.real_engines:
            kind = "fake"
        if kind not in self._stacks:
            from bench.suite.stacks import start_stack

            self.step(f"starting the {kind} stack")
            self._stacks[kind] = start_stack(kind, self._log_root / kind)
        return self._stacks[kind]

    def release(self, kind: str) -> None:
        """Stop a stack nobody needs any more (frees its CPU and memory for later sections)."""
        stack = self._stacks.pop(kind, None)
        if stack is not None:
            stack.stop()

    def close(self) -> None:
        for kind in list(self._stacks):
            self.release(kind)


def fmt_ms(value: float) -> str:
    """Milliseconds for a table cell ("-" when missing)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def timed(fn: Callable[[], SectionResult]) -> SectionResult:
    start = time.monotonic()
    result = fn()
    result.seconds = time.monotonic() - start
    return result


