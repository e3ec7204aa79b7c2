"""Section 1: the baseline's table reproduced, streamed through the stack and sequential side by side.

Per run, the same spoken question (WAV made once by the TTS service) goes
- through the orchestrator's Converse stream (pipelined: the first sentence is spoken while the LLM
  still writes the rest); figures are the orchestrator's TurnMetrics;
- the sequential way, as the baseline did: STT Transcribe, then the whole LLM reply (Generate,
  collected), then TTS of the whole reply text (Synthesize, collected), timed by this client.
Both use the same system prompt, sampling (temperature 0, same token cap) and no reply cache, and
the two paths alternate run by run so drift on a shared machine hits both alike.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench import stats
from bench.suite.core import Context, SectionResult, fmt_ms, md_table
from bench.suite.plots import grouped_bars
from voxline.cli.sequential import SequentialClient, sampling

TITLE = "1. The baseline's table, reproduced (streaming vs sequential)"
TARGET_MS = 500.0
#: The baseline's own figures (DESIGN.md): a different machine (RTX 4090 + Groq API).
BASELINE = {"stt_ms": 25.0, "llm_total_ms": 442.0, "tts_ms": 115.0, "total_ms": 658.0,
            "passed": 4, "runs": 10, "llm_min_ms": 165.0, "llm_max_ms": 800.0,
            "tts_min_ms": 86.0, "tts_max_ms": 277.0, "total_best_ms": 400.0}


#: Spoken questions whose answers take a few sentences: pipelining can only start speaking before
#: the LLM has finished when the reply has more than one sentence (voxline demo's one-line questions
#: mostly get one-sentence answers, where first audio must wait for the whole reply).
QUESTIONS = (
    "Can you tell me a few things about the city of Paris?",
    "How do I make a good cup of tea?",
    "What should I pack for a weekend at the beach?",
    "Why do leaves change color in the autumn?",
    "What are some tips for sleeping better at night?",
    "How does a bicycle work?",
    "What can I cook for dinner with eggs and cheese?",
    "How should I start learning to play the guitar?",
    "Why is it important to drink enough water?",
    "What is a good way to spend a rainy Sunday?",
)


@dataclass
class Turn:
    question: str
    streamed: dict[str, float] = field(default_factory=dict)
    sequential: dict[str, float] = field(default_factory=dict)
    streamed_reply: str = ""
    sequential_reply: str = ""
    error: str = ""


async def make_clips(tts_address: str, n: int) -> tuple[list[tuple[str, bytes]], str]:
    """``n`` spoken questions (WAV bytes) from the TTS service, and the voice used."""
    from voxline.cli.speech import QuestionSpeaker

    speaker = QuestionSpeaker(tts_address)
    voice = await speaker.choose_voice()
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    return [(q, await speaker.speak(q)) for q in questions], voice


async def streamed_turn(address: str, clip: bytes, max_tokens: int) -> tuple[dict[str, float], str]:
    """One Converse turn on a fresh conversation (no history): its TurnMetrics and reply text."""
    from voxline.cli.client import Conversation, session_config

    config = session_config(language="en", no_cache=True)
    config.sampling.CopyFrom(sampling(max_tokens))
    async with Conversation(address, config) as conversation:
        result = await conversation.turn(audio=clip)
    if result.status != "COMPLETED":
        raise RuntimeError(f"turn {result.status}: {result.metrics.get('error', '')}")
    m = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float)}
    return m, result.reply_text


async def _run_turns(ctx: Context, stack: Any, n: int) -> tuple[list[Turn], str]:
    from voxline.orchestrator.config import DEFAULT_SYSTEM_PROMPT

    clips, voice = await make_clips(stack.address("tts"), n)
    seq = SequentialClient(stack.address("stt"), stack.address("llm"), stack.address("tts"),
                           DEFAULT_SYSTEM_PROMPT, sampling(ctx.mode.max_tokens))
    orchestrator = stack.address("orchestrator")
    turns: list[Turn] = []
    try:
        # Warm-up (not counted): connections, first-call allocations, in both paths.
        await streamed_turn(orchestrator, clips[0][1], ctx.mode.max_tokens)
        await seq.turn(clips[0][1])
        with ctx.steps("baseline turns", 2 * n) as advance:
            for question, clip in clips:
                turn = Turn(question)
                try:
                    turn.streamed, turn.streamed_reply = await streamed_turn(orchestrator, clip,
                                                                             ctx.mode.max_tokens)
                    advance()
                    turn.sequential, turn.sequential_reply = await seq.turn(clip)
                    advance()
                except (grpc.aio.AioRpcError, RuntimeError) as exc:
                    turn.error = str(exc)[:200]
                turns.append(turn)
    finally:
        await seq.close()
    return turns, voice


def _col(turns: list[Turn], path: str, key: str) -> list[float]:
    return [getattr(t, path).get(key, math.nan) if not t.error else math.nan for t in turns]


def _sooner(turns: list[Turn]) -> float:
    """Mean sequential total / mean streamed time to first audio over ``turns``."""
    return stats.ratio(stats.mean([t.sequential["total_ms"] for t in turns]),
                       stats.mean([t.streamed["time_to_first_audio_ms"] for t in turns]))


def run(ctx: Context) -> SectionResult:
    """Section 1."""
    from voxline.cli.table import LatencyRow, LatencyTable

    result = SectionResult("baseline", TITLE)
    stack = ctx.stack("real")
    n = ctx.mode.baseline_turns
    turns, voice = asyncio.run(_run_turns(ctx, stack, n))
    engines = "the offline defaults (" + stack.engines() + ")"
    if stack.kind == "fake":
        engines = ("SMOKE RUN: fake stt/llm/tts engines with fixed costs (voxline.testing.fake_stage), "
                   "the real orchestrator; the figures below say nothing about the real models")
    result.setup = [f"machine: {ctx.machine_line}", f"engines: {engines}",
                    f"N = {n} turns (+1 warm-up per path, not counted); user speech: spoken questions "
                    f"synthesised by the TTS service (voice {voice}); LLM temperature 0, at most "
                    f"{ctx.mode.max_tokens} tokens, reply cache off; each turn on a fresh conversation"]

    ok = [t for t in turns if not t.error]
    stream_first = _col(turns, "streamed", "time_to_first_audio_ms")
    stream_total = _col(turns, "streamed", "total_ms")
    seq_total = _col(turns, "sequential", "total_ms")
    per_run = stats.paired_ratios(seq_total, stream_first)
    headline = stats.ratio(stats.mean(seq_total), stats.mean(stream_first))
    figures: dict[str, Any] = {
        "turns": n, "failed_turns": n - len(ok),
        "streamed": {k: stats.summary(_col(turns, "streamed", k)) for k in
                     ("stt_ms", "llm_ttft_ms", "llm_total_ms", "tts_first_audio_ms", "tts_total_ms",
                      "time_to_first_audio_ms", "total_ms")},
        "sequential": {k: stats.summary(_col(turns, "sequential", k)) for k in
                       ("stt_ms", "llm_ttft_ms", "llm_total_ms", "tts_first_audio_ms", "tts_total_ms",
                        "total_ms")},
        "first_audio_sooner_x": headline,
        "first_audio_sooner_x_per_run_median": stats.percentile(per_run, 50.0),
        "sentences": stats.summary(_col(turns, "streamed", "sentences")),
        "pass_rate_first_audio": vars(stats.pass_rate(stream_first, TARGET_MS)),
        "pass_rate_streamed_total": vars(stats.pass_rate(stream_total, TARGET_MS)),
        "pass_rate_sequential_total": vars(stats.pass_rate(seq_total, TARGET_MS)),
        "baseline_other_machine": BASELINE,
        "runs": [{"question": t.question, "streamed": t.streamed, "sequential": t.sequential,
                  "error": t.error, "streamed_reply": t.streamed_reply,
                  "sequential_reply": t.sequential_reply} for t in turns],
    }
    result.figures = figures

    # The CLI's baseline-style table, printed as text (the same one `voxline demo` shows).
    table = LatencyTable(target_ms=TARGET_MS)
    seq_table = LatencyTable(target_ms=TARGET_MS)
    for i, t in enumerate(turns, start=1):
        table.add(LatencyRow.from_metrics(f"run {i}", t.streamed))
        seq_table.add(LatencyRow.from_metrics(f"run {i}", {**t.sequential, "tts_first_audio_ms":
                                                          t.sequential.get("tts_total_ms", math.nan)}))
    text = [table.render("streamed through the orchestrator (TurnMetrics)"), "",
            seq_table.render("sequential: STT, then the whole LLM reply, then TTS of the whole reply "
                             "(TTS column = whole reply)")]

    body = ["Per run (ms). *Streamed*: the orchestrator's TurnMetrics. *Sequential*: STT → whole reply "
            "→ TTS of the whole reply, nothing audible before the end.", ""]
    rows = []
    for i, t in enumerate(turns, start=1):
        s, q = t.streamed, t.sequential
        if t.error:
            rows.append([str(i), t.question, f"failed: {t.error}", *[""] * 10])
            continue
        nan = math.nan
        rows.append([str(i), t.question, fmt_ms(s.get("stt_ms", nan)), fmt_ms(s.get("llm_ttft_ms", nan)),
                     fmt_ms(s.get("tts_first_audio_ms", nan)), f"**{fmt_ms(s['time_to_first_audio_ms'])}**",
                     fmt_ms(s.get("total_ms", nan)), fmt_ms(q["stt_ms"]), fmt_ms(q["llm_total_ms"]),
                     fmt_ms(q["tts_total_ms"]), f"**{fmt_ms(q['total_ms'])}**",
                     f"{s.get('sentences', nan):.0f}",
                     f"{stats.ratio(q['total_ms'], s['time_to_first_audio_ms']):.2f}×"])
    body += md_table(["run", "question", "STT", "LLM 1st tok", "TTS 1st aud", "1st audio", "total",
                      "seq STT", "seq LLM (whole)", "seq TTS (whole)", "seq total", "sentences",
                      "seq total / 1st audio"],
                     rows)
    body += ["", "Summary (ms): AVG / MIN / MAX / P95.", ""]
    srows = []
    for label, path, key, base in (
        ("STT", "streamed", "stt_ms", BASELINE["stt_ms"]),
        ("LLM first token", "streamed", "llm_ttft_ms", None),
        ("LLM whole reply", "sequential", "llm_total_ms", BASELINE["llm_total_ms"]),
        ("TTS first audio (1st sentence)", "streamed", "tts_first_audio_ms", None),
        ("TTS whole reply", "sequential", "tts_total_ms", BASELINE["tts_ms"]),
        ("time to first audio, streamed", "streamed", "time_to_first_audio_ms", None),
        ("total, streamed", "streamed", "total_ms", None),
        ("total = first audio, sequential", "sequential", "total_ms", BASELINE["total_ms"]),
    ):
        s = figures[path][key]
        srows.append([label, path, " / ".join(fmt_ms(s[k]) for k in ("avg", "min", "max", "p95")),
                      fmt_ms(base) if base is not None else "-"])
    body += md_table(["figure", "path", "AVG / MIN / MAX / P95", "baseline AVG (other machine)"], srows)
    pr = stats.pass_rate
    body += [
        "",
        f"Pass rate against {TARGET_MS:g} ms: streamed time to first audio "
        f"{pr(stream_first, TARGET_MS)}, streamed total {pr(stream_total, TARGET_MS)}, sequential total "
        f"{pr(seq_total, TARGET_MS)}; baseline (sequential total) {BASELINE['passed']}/{BASELINE['runs']}.",
        "",
        "The baseline's figures (STT 25, LLM 442 (165–800), TTS 115 (86–277), total 658 ms, best 400, "
        "4/10 under 500 ms) come from a **different machine** (RTX 4090 GPU for STT and TTS, Groq API "
        "for the LLM); ours are CPU-only on the machine above. Compare the ratios, not the absolutes.",
        "",
        f"**First audio comes {headline:.2f}× sooner than the sequential total** (mean sequential total "
        f"{fmt_ms(stats.mean(seq_total))} ms / mean streamed time to first audio "
        f"{fmt_ms(stats.mean(stream_first))} ms; median of the per-run ratios "
        f"{stats.percentile(per_run, 50.0):.2f}×).",
    ]
    multi = [t for t in ok if t.streamed.get("sentences", 0) > 1]
    single = [t for t in ok if t.streamed.get("sentences", 0) <= 1]
    if multi and single:
        body.append(
            f"Replies of several sentences ({len(multi)} runs): first audio {_sooner(multi):.2f}× sooner; "
            f"one-sentence replies ({len(single)} runs): {_sooner(single):.2f}× (the first sentence is the "
            "whole reply, so its audio cannot start before the LLM is done).")
    elif single:
        body.append("Every reply was one sentence: its audio cannot start before the LLM has finished, so "
                    "pipelining has nothing to overlap here.")
    same = sum(1 for t in ok if t.streamed_reply.strip() == t.sequential_reply.strip())
    body.append(f"Both paths produced the same reply text in {same}/{len(ok)} runs (temperature 0).")
    if n - len(ok):
        body.append(f"{n - len(ok)} run(s) failed; their error is in the table.")
    body += ["", "```", *text, "```"]
    result.body = body
    plot = grouped_bars(ctx.out_dir / "baseline_runs.png", "Per run: streamed vs sequential",
                        [str(i) for i in range(1, n + 1)],
                        {"streamed: time to first audio": stream_first, "streamed: total": stream_total,
                         "sequential: total (= first audio)": seq_total}, target=TARGET_MS)
    result.plots = [plot.name]
    ctx.echo("\n".join(text))
    ctx.echo(f"first audio comes {headline:.2f}x sooner than the sequential total")
    return result
