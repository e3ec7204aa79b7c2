"""``voxline demo``: the offline stack, a few turns of real speech, and the baseline's latency table."""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc

from voxline.cli.client import Conversation, ConverseError, TurnResult, describe_rpc_error, session_config
from voxline.cli.sequential import SequentialClient
from voxline.cli.speech import QUESTIONS, QuestionSpeaker
from voxline.cli.stack import STAGES, Stack
from voxline.cli.table import LatencyRow, LatencyTable, render_baseline
from voxline.cli.up import StopRequest, print_failure, stack_config_from_args, start_stack, stop_signals


def add_demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--turns", type=int, default=5,
                        help="spoken questions to ask (default: %(default)s)")
    parser.add_argument("--target-ms", type=float, default=500.0,
                        help="a turn passes when its time to first audio is under this "
                             "(default: %(default)s)")
    parser.add_argument("--stage-deadline", type=float, default=120.0, metavar="S",
                        help="the demo measures, so it relaxes the orchestrator's per-stage deadlines to "
                             "S seconds (its own defaults fail a turn whose LLM is silent for 10 s, which "
                             "a busy CPU-only machine can hit; default: %(default)s)")
    parser.add_argument("--cache", action="store_true",
                        help="allow LLM reply-cache hits (off by default so every turn runs the LLM)")
    parser.add_argument("--no-sequential", dest="sequential", action="store_false",
                        help="skip the comparison: by default each question is also asked the "
                             "sequential way (STT, then the whole LLM reply, then TTS of all of it) "
                             "over the same services, right after its streamed turn")


@dataclass
class DemoTurn:
    question: str
    result: TurnResult
    #: The same question the sequential way (SequentialClient's figures); empty when not asked.
    sequential: dict[str, float] = field(default_factory=dict)


def sequential_client(stages: dict[str, str], ns: argparse.Namespace) -> SequentialClient:
    """The sequential path with what the demo's session gets: the orchestrator's default system
    prompt for the language, the LLM service's default sampling, the same voice and cache choice."""
    from voxline.orchestrator.config import DEFAULT_SYSTEM_PROMPT
    from voxline.orchestrator.languages import default_prompt

    language = ns.language or "en"
    return SequentialClient(stages["stt"], stages["llm"], stages["tts"],
                            default_prompt(language, DEFAULT_SYSTEM_PROMPT), None,
                            language=language, voice=ns.voice, no_cache=not ns.cache)


async def play_turns(address: str, tts_address: str, ns: argparse.Namespace, out: TextIO,
                     stages: dict[str, str] | None = None) -> list[DemoTurn]:
    """The demo's spoken turns on one conversation; with ``stages`` (stt, llm, tts addresses) each
    question is then also asked the sequential way."""
    speaker = QuestionSpeaker(tts_address)
    voice = await speaker.choose_voice()
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(ns.turns)]
    out.write(f"synthesising {len(questions)} spoken questions with the TTS service (voice {voice})...\n")
    out.flush()
    clips = [await speaker.speak(q) for q in questions]
    config = session_config(language=ns.language or "en", voice=ns.voice,
                            llm_providers=[p for p in ns.llm_providers.split(",") if p],
                            no_cache=not ns.cache)
    turns: list[DemoTurn] = []
    sequential = sequential_client(stages, ns) if stages else None
    try:
        async with Conversation(address, config) as conversation:
            for number, (question, clip) in enumerate(zip(questions, clips, strict=True), start=1):
                # The same history the conversation's LLM request carries (earlier turns).
                history = [(t.result.transcript, t.result.reply_text.strip()) for t in turns
                           if t.result.status == "COMPLETED"]
                # The two paths take turns going first, so neither always meets warm caches.
                sequential_first = sequential is not None and number % 2 == 0
                figures: dict[str, float] = {}
                if sequential is not None and sequential_first:
                    figures, _ = await sequential.turn(clip, history)
                result = await conversation.turn(audio=clip)
                if sequential is not None and not sequential_first:
                    figures, _ = await sequential.turn(clip, history)
                turn = DemoTurn(question, result, figures)
                turns.append(turn)
                out.write(describe_turn(number, question, result))
                if figures:
                    out.write(describe_sequential(figures))
                out.flush()
    finally:
        if sequential is not None:
            await sequential.close()
    return turns


def describe_sequential(m: dict[str, float]) -> str:
    return (f"        sequential: first audio {m['time_to_first_audio_ms']:.0f} ms (STT "
            f"{m['stt_ms']:.0f}, whole reply {m['llm_total_ms']:.0f}, TTS of it {m['tts_total_ms']:.0f})\n")


def describe_turn(number: int, question: str, result: TurnResult) -> str:
    """What was asked, heard and answered, and how fast."""
    m = result.metrics
    row = LatencyRow.from_metrics(str(number), m)
    outcome = (f"first audio {row.time_to_first_audio_ms:.0f} ms, total {row.total_ms:.0f} ms, "
               f"{result.audio_seconds:.1f} s of audio ({m.get('llm_provider') or '-'})")
    if result.status != "COMPLETED":
        outcome = f"{result.status.lower()}: {m.get('error') or 'no error given'}"
    return (f"turn {number}  asked:     {question}\n"
            f"        heard:     {result.transcript}\n"
            f"        assistant: {result.reply_text.strip()}\n"
            f"        {outcome}\n")


async def _play_until_stopped(address: str, tts_address: str, ns: argparse.Namespace, out: TextIO,
                              stop: StopRequest, stages: dict[str, str] | None = None,
                              ) -> list[DemoTurn] | None:
    """The turns, or None when a stop was requested first (the turn in flight is cancelled)."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(stopped.set)

    stop.on_set(wake)
    play = asyncio.create_task(play_turns(address, tts_address, ns, out, stages), name="demo-turns")
    watch = asyncio.create_task(stopped.wait(), name="demo-stop-watch")
    try:
        done, _ = await asyncio.wait({play, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.remove(wake)
        for task in (play, watch):
            task.cancel()
        await asyncio.gather(play, watch, return_exceptions=True)
    if play in done:
        return play.result()
    return None


def build_table(turns: list[DemoTurn], target_ms: float) -> LatencyTable:
    table = LatencyTable(target_ms=target_ms)
    for number, turn in enumerate(turns, start=1):
        status = turn.result.status
        label = str(number) if status == "COMPLETED" else f"{number} ({status.lower()})"
        table.add(LatencyRow.from_metrics(label, turn.result.metrics))
    return table


def build_sequential_table(turns: list[DemoTurn], target_ms: float) -> LatencyTable | None:
    """The sequential figures of the same questions (TTS column: the whole reply), or None."""
    if not any(t.sequential for t in turns):
        return None
    table = LatencyTable(target_ms=target_ms)
    for number, turn in enumerate(turns, start=1):
        if turn.sequential:
            table.add(LatencyRow.from_metrics(str(number), {
                **turn.sequential, "tts_first_audio_ms": turn.sequential["tts_total_ms"]}))
    return table


def comparison_line(turns: list[DemoTurn]) -> str:
    """Mean time to first audio, streamed vs sequential, over the turns both completed."""
    pairs = [(LatencyRow.from_metrics("", t.result.metrics).time_to_first_audio_ms,
              t.sequential["time_to_first_audio_ms"]) for t in turns
             if t.sequential and t.result.status == "COMPLETED"]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if not pairs:
        return "streamed vs sequential: no turn completed both ways"
    streamed = sum(a for a, _ in pairs) / len(pairs)
    sequential = sum(b for _, b in pairs) / len(pairs)
    return (f"first audio, mean of {len(pairs)} turns on this machine and these engines: streamed "
            f"{streamed:.0f} ms, sequential {sequential:.0f} ms; sequential / streamed = "
            f"{sequential / streamed:.2f} (above 1: streaming speaks sooner; a one-sentence reply "
            f"cannot start before the LLM has finished it)")


def run_demo(ns: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    if ns.turns < 1 or ns.stage_deadline <= 0:
        err.write("voxline demo: --turns must be >= 1 and --stage-deadline > 0\n")
        return 2
    temporary = ns.log_dir is None
    if temporary:
        ns.log_dir = Path(tempfile.mkdtemp(prefix="voxline-demo-"))
    try:
        code = _run_demo(ns, out, err)
    except BaseException:
        code = 1
        raise
    finally:
        if temporary:  # its logs are kept only when something failed, to be read
            if code == 0:
                shutil.rmtree(ns.log_dir, ignore_errors=True)
            else:
                err.write(f"voxline demo: the services' logs are kept in {ns.log_dir}\n")
    return code


def _run_demo(ns: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    deadline = str(ns.stage_deadline)
    relaxed = {"orchestrator": ["--stt-deadline", deadline, "--llm-first-token-deadline", deadline,
                                "--llm-deadline", deadline, "--tts-deadline", deadline]}
    config = stack_config_from_args(ns, dict.fromkeys(STAGES, 0), "127.0.0.1", relaxed)
    err.write(f"voxline demo: starting the stack on free ports (logs in {config.log_dir}); "
              "loading models...\n")
    stack = Stack(config)
    turns: list[DemoTurn] | None = None
    code = 0
    with stop_signals() as cancel:
        started = start_stack(stack, cancel, err)
        if started is not None:
            return started
        err.write(f"voxline demo: all services SERVING after {stack.progress().elapsed_s:.1f} s\n")
        try:
            stages = ({s: stack.address(s) for s in ("stt", "llm", "tts")} if ns.sequential
                      else None)
            turns = asyncio.run(_play_until_stopped(stack.address("orchestrator"), stack.address("tts"),
                                                    ns, out, cancel, stages))
        except grpc.aio.AioRpcError as exc:
            err.write(f"voxline demo: {describe_rpc_error(exc, stack.address('orchestrator'))}\n")
            code = 1
        except (ConverseError, RuntimeError) as exc:
            err.write(f"voxline demo: {exc}\n")
            code = 1
        failure = stack.exited()
        if failure is not None:
            print_failure(failure, err)
            code = 1
        err.write("voxline demo: stopping the stack...\n")
        codes = stack.stop()
        err.write("voxline demo: stack stopped ("
                  + ", ".join(f"{stage} exit {rc}" for stage, rc in codes.items()) + ")\n")
    if turns is None:
        if code == 0:
            err.write("voxline demo: stopped\n")
        return code
    table = build_table(turns, ns.target_ms)
    out.write("\n" + table.render(
        f"voxline demo: {len(turns)} spoken turns on the offline defaults; a run passes when its "
        f"time to first audio is under {ns.target_ms:g} ms") + "\n\n")
    sequential = build_sequential_table(turns, ns.target_ms)
    if sequential is not None:
        out.write(sequential.render(
            "the same questions the sequential way on the same machine and engines: STT, then the "
            "whole LLM reply, then TTS of all of it, with the same conversation history (TTS column: "
            "the whole reply; first audio = total)") + "\n\n" + comparison_line(turns) + "\n\n")
    out.write("for reference, on another machine:\n" + render_baseline() + "\n")
    if ns.span_file is not None:
        out.write(f"\nspans: {ns.span_file} (try: voxline report {ns.span_file} --png turn.png)\n")
    if any(t.result.status != "COMPLETED" for t in turns):
        return 1
    return code
