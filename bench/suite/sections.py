"""The sections of the suite, in report order, and how each is run.

Sections 2-4 (and 2b) call the reusable core of another bench module (bench/stt_decode.py,
bench/tts_stream.py, bench/llm_tail.py, bench/orchestrator_overhead.py); a missing core makes the
section say "not available: <reason>" instead of printing numbers.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from bench import replicas, turn_taking
from bench.suite import baseline, borrowed, reliability, scaling
from bench.suite.core import Context, SectionResult, md_table

TTS_TITLE = "2b. TTS: time to first audio vs whole reply, real-time factor"


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    run: Callable[[Context], SectionResult]
    #: Stacks it uses ("real", "fake"): they are stopped once no later section needs them.
    stacks: tuple[str, ...] = ()


def _unavailable(ctx: Context, result: SectionResult, why: str) -> SectionResult:
    result.status = f"not available: {why}"
    result.body = [result.status]
    ctx.echo(f"{result.title}: {result.status}")
    return result


def plain(value: Any) -> Any:
    """Dataclasses (with their float properties), lists and dicts as plain data for JSON."""
    if is_dataclass(value) and not isinstance(value, type):
        data = asdict(value)
        for name in dir(type(value)):
            if isinstance(getattr(type(value), name, None), property):
                data[name] = getattr(value, name)
        return data
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def _stt(ctx: Context) -> SectionResult:
    result = SectionResult("stt", borrowed.STT_TITLE)
    measure, why = borrowed.find_core("bench.stt_decode", ("measure",))
    if measure is None:
        return _unavailable(ctx, result, why)
    smoke = ctx.mode.name == "smoke"
    runs = ctx.mode.stt_runs
    f = measure(runs=runs, smoke=smoke)
    result.figures = dict(f)
    result.setup = [f"machine: {ctx.machine_line}",
                    f"{f.get('setup')}; clip: {f.get('clip')} ({f.get('clip_seconds')} s); {runs} runs per "
                    "path after one untimed run each, paths alternating; both in this process"
                    + ("; SMOKE RUN: no Whisper model, figures meaningless" if smoke else "")]
    tmp, mem = f["temp_file"], f["in_memory"]
    headline = (f"**In memory {mem['p50_ms']:.1f} ms vs temp file {tmp['p50_ms']:.1f} ms per request "
                f"(medians): the temp file costs {f['saved_ms']:+.1f} ms ({f['ratio']:.2f}×); getting the "
                f"audio into numpy alone is {f['decode_ratio']:.1f}× slower through the file "
                f"({tmp['decode_p50_ms']:.2f} vs {mem['decode_p50_ms']:.2f} ms).**")
    rows = [[name, f"{d['p50_ms']:.1f}", f"{d['avg_ms']:.1f}", f"{d['min_ms']:.1f}", f"{d['max_ms']:.1f}",
             f"{d['decode_p50_ms']:.2f}", f"{100 * d['decode_share']:.1f}%"]
            for name, d in (("temp file (baseline before)", tmp), ("in memory (voxline)", mem))]
    result.body = [headline, "", *md_table(["path", "p50 ms", "avg", "min", "max", "decode p50 ms",
                                            "decode share"], rows),
                   "", f"Transcripts: temp file {tmp.get('text')!r}; in memory {mem.get('text')!r}.",
                   "The baseline measured 340 ms through a temp file vs ~25 ms in memory on its GPU "
                   "(a different machine)."]
    ctx.echo(headline)
    return result


def _tts(ctx: Context) -> SectionResult:
    result = SectionResult("tts", TTS_TITLE)
    measure, why = borrowed.find_core("bench.tts_stream", ("measure_stream",))
    if measure is None:
        return _unavailable(ctx, result, why)
    import bench.tts_stream as tts_stream

    smoke = ctx.mode.name == "smoke"
    runs = ctx.mode.tts_runs
    with tempfile.TemporaryDirectory(prefix="tiny-vits-") as tiny:
        if smoke:
            from voxline.tts.espeak import EspeakVoice

            voices: list[Any] = [EspeakVoice("en")]
        else:
            from voxline.tts.tiny_vits import build_tiny_vits

            build_tiny_vits(tiny)
            voices = tts_stream.load_bench_voices(tiny, piper=True)
        figures = asyncio.run(measure(voices, runs=runs))
    data = plain(figures)
    result.figures = {"voices": data}
    result.setup = [f"machine: {ctx.machine_line}",
                    f"each voice speaks the same three-sentence reply through an in-process TTS server "
                    f"(gRPC on 127.0.0.1), PCM at its native rate; medians of {runs} runs after 1 warm-up; "
                    "tiny VITS = random weights (the VitsModel code path's floor, not MMS quality)"
                    + ("; SMOKE RUN: espeak en only" if smoke else "")]
    rows = [[d["voice"], f"{d['first_audio_ms']:.1f}", f"{d['total_ms']:.1f}", f"{d['first_share']:.2f}",
             f"{d['synthesis_ms']:.1f}", f"{d['audio_s']:.2f}", f"{d['rtf']:.3f}"] for d in data]
    lines = [f"- {d['voice']}: first audio after {d['first_audio_ms']:.0f} ms, "
             f"{d['first_share']:.2f} of the whole reply's {d['total_ms']:.0f} ms; RTF {d['rtf']:.3f}"
             for d in data]
    result.body = [*lines, "", *md_table(["voice", "first audio ms", "total ms", "first / total",
                                          "synthesis ms", "audio s", "RTF"], rows)]
    for line in lines:
        ctx.echo(line)
    return result


def _llm(ctx: Context) -> SectionResult:
    result = SectionResult("llm", borrowed.LLM_TITLE)
    run_tail, why = borrowed.find_core("bench.llm_tail", ("run_tail_bench",))
    if run_tail is None:
        return _unavailable(ctx, result, why)
    import bench.llm_tail as llm_tail

    smoke = ctx.mode.name == "smoke"
    n = ctx.mode.llm_requests
    scale = 0.1 if smoke else 1.0
    rows = plain(asyncio.run(run_tail(requests=n, scale=scale)))
    by_name = {r["scenario"]: r for r in rows}
    result.figures = {"requests": n, "scale": scale, "rows": rows}
    result.setup = [f"machine: {ctx.machine_line}",
                    "the LLM gateway's real engine and router with two in-process fake providers replaying "
                    "the baseline's Groq time to first token: triangular("
                    f"{llm_tail.TTFT_MIN_MS:.0f}, {llm_tail.TTFT_MODE_MS:.0f}, "
                    f"{llm_tail.TTFT_MAX_MS:.0f}) ms, "
                    "mean 442 ms, with 3 % fast 429s and 2 % hangs (first-token timeout "
                    f"{llm_tail.FIRST_TOKEN_TIMEOUT_MS:.0f} ms); {n} timed requests per scenario, 32 at a "
                    f"time, after 20 untimed; time scale {scale:g} (figures in baseline ms); percentiles are "
                    "over the requests that got a reply (ok %)"
                    + ("; SMOKE RUN: tiny N, 10× time-compressed" if smoke else "")]
    single, fallback = by_name.get("single provider"), by_name.get("fallback only")
    hedged = by_name.get("hedged, auto p90")
    cache = next((r for r in rows if r["scenario"].startswith("cache hit")), None)
    lines = []
    if single and hedged:
        change = 100.0 * (hedged["p95_ms"] / single["p95_ms"] - 1.0)
        others = "; ".join(f"{r['scenario']}: p95 {r['p95_ms']:.0f} ms, {r['hedged_pct']:.0f}% hedged"
                           for r in rows if r["scenario"].startswith("hedged") and r is not hedged)
        lines.append(f"**Hedging (auto delay at the p90 of recent TTFTs) takes p95 time to first token from "
                     f"{single['p95_ms']:.0f} ms (single provider, {single['ok_pct']:.0f}% replied) to "
                     f"{hedged['p95_ms']:.0f} ms ({change:+.0f}%, {hedged['ok_pct']:.0f}% replied); p99 "
                     f"{single['p99_ms']:.0f} → {hedged['p99_ms']:.0f} ms; "
                     f"{hedged['hedged_pct']:.0f}% of requests sent a hedge.** "
                     f"Other hedge settings: {others}.")
    if single and fallback:
        lines.append(f"Fallback alone: p95 {fallback['p95_ms']:.0f} ms, replies {fallback['ok_pct']:.1f}% "
                     f"(single provider {single['ok_pct']:.1f}%): it rescues failures, not the slow tail.")
    if cache:
        lines.append(f"A cache hit is served in {cache['p50_ms']:.3f} ms at p50 ({cache['p99_ms']:.3f} ms "
                     "p99), against the 442 ms mean provider TTFT.")
    table = md_table(["scenario", "n", "ok %", "p50 ms", "p95 ms", "p99 ms", "hedged %"],
                     [[r["scenario"], str(r["requests"]), f"{r['ok_pct']:.1f}",
                       *(f"{r[k]:.3f}" if r[k] < 10 else f"{r[k]:.0f}"
                         for k in ("p50_ms", "p95_ms", "p99_ms")),
                       f"{r['hedged_pct']:.1f}"] for r in rows])
    result.body = [*lines, "", *table]
    for line in lines:
        ctx.echo(line)
    return result


def _overhead(ctx: Context) -> SectionResult:
    result = SectionResult("overhead", borrowed.OVERHEAD_TITLE)
    measure, why = borrowed.find_core("bench.orchestrator_overhead", ("measure",))
    if measure is None:
        return _unavailable(ctx, result, why)
    turns, runs = ctx.mode.overhead_turns, ctx.mode.overhead_runs
    f = plain(asyncio.run(measure(turns=turns, runs=runs)))
    result.figures = f
    result.setup = [f"machine: {ctx.machine_line}",
                    f"one process: fake STT/LLM/TTS gRPC servers with scripted costs, the real orchestrator "
                    f"server and a Converse client on 127.0.0.1; {turns} one-sentence turns on one stream "
                    f"(overhead = TurnMetrics total − the fakes' own handler time); then {runs} runs of a "
                    f"{f['sentences']}-sentence reply pipelined and sequential (medians)"]
    headline = (f"**The pipeline adds {f['overhead_p50_ms']:.1f} ms per turn at p50 and "
                f"{f['overhead_p99_ms']:.1f} ms at p99** (mean {f['overhead_mean_ms']:.1f} ms; engines "
                f"p50 {f['engines_p50_ms']:.1f} ms, turn total p50 {f['total_p50_ms']:.1f} ms).")
    gain = (f"With fake engines of known cost, first audio comes {f['ttfa_gain']:.2f}× sooner pipelined "
            f"({f['pipelined_ttfa_ms']:.0f} ms) than sequential ({f['sequential_ttfa_ms']:.0f} ms); "
            f"the whole turn ends {f['total_gain']:.2f}× sooner ({f['pipelined_total_ms']:.0f} vs "
            f"{f['sequential_total_ms']:.0f} ms).")
    result.body = [headline, "", gain]
    ctx.echo(headline)
    ctx.echo(gain)
    return result


SECTIONS: tuple[Section, ...] = (
    Section("baseline", baseline.TITLE, baseline.run, ("real",)),
    Section("stt", borrowed.STT_TITLE, _stt),
    Section("tts", TTS_TITLE, _tts),
    Section("llm", borrowed.LLM_TITLE, _llm),
    Section("overhead", borrowed.OVERHEAD_TITLE, _overhead),
    Section("scaling", scaling.TITLE, scaling.run, ("fake", "real")),
    Section("gpu", borrowed.GPU_TITLE, borrowed.run_gpu),
    Section("turns", turn_taking.TITLE, turn_taking.run_section),
    Section("reliability", reliability.TITLE, reliability.run),
    Section("replicas", replicas.TITLE, replicas.run),
)
BY_KEY = {s.key: s for s in SECTIONS}


def execution_order(keys: list[str]) -> list[Section]:
    """Sections that use the stacks first (they share the started stacks), those that start the fake
    stack first among them, then the rest. (A fake stack started while the real one was up has been
    seen to abort in gRPC's poller at start-up; started first, it never did.)"""
    chosen = [BY_KEY[k] for k in keys]
    return sorted(chosen, key=lambda s: (not s.stacks, "fake" not in s.stacks, SECTIONS.index(s)))
