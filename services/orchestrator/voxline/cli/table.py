"""The baseline-style latency table shared by ``voxline demo``, ``voxline report`` and the benchmarks.

Statistics are pure functions of the rows (no I/O, no numpy), so they are unit tested on fixed numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: The baseline this project must beat (DESIGN.md): sequential STT → LLM → TTS in one process.
BASELINE = {"stt_ms": 25.0, "llm_total_ms": 442.0, "tts_ms": 115.0, "total_ms": 658.0}
BASELINE_PASSING = (4, 10)
BASELINE_TARGET_MS = 500.0


@dataclass(frozen=True)
class LatencyRow:
    """The figures of one turn, milliseconds (NaN where a stage did not run, e.g. text input)."""

    label: str
    stt_ms: float
    llm_ttft_ms: float
    llm_total_ms: float
    tts_ms: float
    time_to_first_audio_ms: float
    total_ms: float
    #: The turn completed (a failed or interrupted one never passes, however fast it ended).
    completed: bool = True
    #: Server VAD: from the user's last voiced frame to the first reply audio (NaN otherwise).
    end_of_speech_to_first_audio_ms: float = math.nan

    @classmethod
    def from_metrics(cls, label: str, metrics: Mapping[str, object]) -> LatencyRow:
        """From a mapping with the TurnMetrics / ``voxline.turn`` span figures. A missing figure, or
        0 (proto3's "unset": no STT for a typed turn, no audio for a failed one), becomes NaN."""
        def get(*keys: str) -> float:
            for key in keys:
                value = metrics.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                    return float(value)
            return math.nan

        status = metrics.get("status", metrics.get("voxline.turn.status"))
        return cls(
            label=label,
            completed=status in (None, 1, "completed", "COMPLETED"),  # TurnStatus COMPLETED is 1
            stt_ms=get("stt_ms", "voxline.stt_ms"),
            llm_ttft_ms=get("llm_ttft_ms", "voxline.llm.ttft_ms"),
            llm_total_ms=get("llm_total_ms", "voxline.llm.total_ms"),
            tts_ms=get("tts_first_audio_ms", "voxline.tts.first_audio_ms"),
            time_to_first_audio_ms=get("time_to_first_audio_ms", "voxline.time_to_first_audio_ms"),
            total_ms=get("total_ms", "voxline.total_ms"),
            end_of_speech_to_first_audio_ms=get("end_of_speech_to_first_audio_ms",
                                                "voxline.end_of_speech_to_first_audio_ms"),
        )


#: (attribute of LatencyRow, column heading), in display order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("stt_ms", "STT"),
    ("llm_ttft_ms", "LLM 1st tok"),
    ("llm_total_ms", "LLM total"),
    ("tts_ms", "TTS 1st aud"),
    ("time_to_first_audio_ms", "1st audio"),
    ("total_ms", "total"),
)
#: Shown only when some turn has it (server VAD): the latency the user feels, from the end of speech.
SPEECH_END_COLUMN = ("end_of_speech_to_first_audio_ms", "speech end→audio")


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean of the non-NaN values; NaN when there are none."""
    kept = _finite(values)
    return sum(kept) / len(kept) if kept else math.nan


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) of the non-NaN values, linear interpolation between closest
    ranks (numpy's default method); NaN when there are none."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    kept = sorted(_finite(values))
    if not kept:
        return math.nan
    position = (len(kept) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(kept) - 1)
    return kept[lower] + (kept[upper] - kept[lower]) * (position - lower)


@dataclass(frozen=True)
class PassRate:
    """How many runs came in strictly under the target."""

    passed: int
    runs: int

    @property
    def fraction(self) -> float:
        return self.passed / self.runs if self.runs else math.nan

    def __str__(self) -> str:
        if not self.runs:
            return "0/0"
        return f"{self.passed}/{self.runs} ({100 * self.fraction:.0f}%)"


@dataclass
class LatencyTable:
    """Rows of turn latencies plus the statistics the baseline reported (AVG, MIN, MAX) and p95."""

    rows: list[LatencyRow] = field(default_factory=list)
    #: A run passes when its figure is strictly below this (the baseline's "< 500 ms").
    target_ms: float = BASELINE_TARGET_MS

    def add(self, row: LatencyRow) -> None:
        self.rows.append(row)

    def column(self, name: str) -> list[float]:
        """The values of one column (a LatencyRow attribute), in row order."""
        if name not in dict((*COLUMNS, SPEECH_END_COLUMN)):
            raise KeyError(f"unknown column {name!r}")
        return [float(getattr(row, name)) for row in self.rows]

    def avg(self, name: str) -> float:
        return mean(self.column(name))

    def min(self, name: str) -> float:
        kept = _finite(self.column(name))
        return min(kept) if kept else math.nan

    def max(self, name: str) -> float:
        kept = _finite(self.column(name))
        return max(kept) if kept else math.nan

    def p95(self, name: str) -> float:
        return percentile(self.column(name), 95.0)

    def pass_rate(self, name: str = "time_to_first_audio_ms") -> PassRate:
        """Runs whose ``name`` figure is below ``target_ms``; a run without the figure, or that did
        not complete, fails."""
        values = self.column(name)
        passed = sum(1 for row, v in zip(self.rows, values, strict=True)
                     if row.completed and not math.isnan(v) and v < self.target_ms)
        return PassRate(passed, len(values))

    def render(self, title: str = "") -> str:
        """The table as monospace text: one line per run, then AVG, MIN, MAX, P95 and pass rates."""
        label_width = max([5, *(len(row.label) for row in self.rows)])
        felt = bool(_finite(self.column(SPEECH_END_COLUMN[0])))
        columns = (*COLUMNS, SPEECH_END_COLUMN) if felt else COLUMNS
        widths = [max(9, len(heading)) for _, heading in columns]

        def line(label: str, cells: Sequence[float]) -> str:
            shown = [(f"{v:.0f}" if not math.isnan(v) else "-").rjust(w) for v, w in zip(cells, widths,
                                                                                       strict=True)]
            return f"{label:<{label_width}}  " + "  ".join(shown)

        header = f"{'run':<{label_width}}  " + "  ".join(h.rjust(w) for (_, h), w in zip(columns, widths,
                                                                                         strict=True))
        rule = "-" * len(header)
        out = [title, "(milliseconds)"] if title else ["(milliseconds)"]
        out += [header, rule]
        out += [line(row.label, [float(getattr(row, name)) for name, _ in columns]) for row in self.rows]
        out.append(rule)
        for label, stat in (("AVG", self.avg), ("MIN", self.min), ("MAX", self.max), ("P95", self.p95)):
            out.append(line(label, [stat(name) for name, _ in columns]))
        out.append(rule)
        target = f"{self.target_ms:g} ms"
        out.append(f"pass rate, time to first audio < {target}: {self.pass_rate('time_to_first_audio_ms')}"
                   "   <- what the user feels")
        out.append(f"pass rate, total turn      < {target}: {self.pass_rate('total_ms')}"
                   "   (the baseline's measure)")
        if felt:
            out.append(f"pass rate, end of speech -> first audio < {target}: "
                       f"{self.pass_rate(SPEECH_END_COLUMN[0])}   <- with server VAD, the silence waited too")
        return "\n".join(out)


def render_baseline() -> str:
    """The baseline's published figures, for printing next to a voxline table."""
    passed, runs = BASELINE_PASSING
    return "\n".join([
        "baseline (sequential STT -> LLM -> TTS in one process, faster-whisper tiny + Groq + MMS-TTS):",
        f"  STT {BASELINE['stt_ms']:.0f} ms   LLM {BASELINE['llm_total_ms']:.0f} ms (full reply)   "
        f"TTS {BASELINE['tts_ms']:.0f} ms   total {BASELINE['total_ms']:.0f} ms",
        f"  pass rate, total < {BASELINE_TARGET_MS:g} ms: {passed}/{runs} ({100 * passed / runs:.0f}%)",
    ])
