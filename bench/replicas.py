"""Replicas of the saturated stage: turns/s and p95 time to first audio with 1 vs 2 TTS processes.

Two stacks run side by side, as ``voxline up --replicas`` starts them: fake STT and LLM (fixed
waits, no CPU), and a TTS whose every sentence costs CPU time (``bench/cpu_stage.py``: one
sentence at a time per process), so TTS is the stage that saturates. Stack A has one TTS process,
stack B two, behind the orchestrator's round_robin. The same load (N concurrent conversations of K
spoken turns) runs on A and B in alternation, several rounds; each run reports turns per second,
p95 time to first audio and the cores the TTS processes used.

Two processes can only beat one by the CPU they find free: on a 2-core machine shared with the
orchestrator, the fake stages, the clients and anything else running, the gain is bounded by the
cores left over, not by voxline. ``python -m bench.replicas [--mode smoke|quick|full]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from bench import stats
from bench.machine import CpuWindow

TITLE = "9. Replicas: 1 vs 2 processes of the saturated stage (TTS costing CPU)"
#: The fake stages' waits (no CPU): small, so TTS is what saturates.
FAKE_ARGS = {"stt": ["--stt-ms", "20"], "llm": ["--llm-ttft-ms", "20", "--llm-token-ms", "2"]}


@dataclass(frozen=True)
class Sizes:
    sessions: int
    turns: int
    burn_ms: float
    rounds: int


SIZES = {"smoke": Sizes(sessions=2, turns=1, burn_ms=5.0, rounds=1),
         "quick": Sizes(sessions=8, turns=4, burn_ms=40.0, rounds=2),
         "full": Sizes(sessions=8, turns=8, burn_ms=40.0, rounds=4)}


def _command(burn_ms: float) -> Any:
    from voxline.testing.fake_stage import stack_command

    def command(stage: str) -> list[str]:
        if stage == "tts":
            return [sys.executable, "-m", "bench.cpu_stage", "--burn-ms", str(burn_ms)]
        return stack_command(stage)
    return command


@contextmanager
def _stacks(burn_ms: float, log_dir: Path) -> Iterator[dict[int, Any]]:
    """Stack A (1 TTS) and stack B (2 TTS), started together, stopped at the end."""
    from voxline.cli.stack import STAGES, Stack, StackConfig

    stacks: dict[int, Any] = {}
    try:
        for tts in (1, 2):
            config = StackConfig(
                log_dir=log_dir / f"tts{tts}", ports=dict.fromkeys(STAGES, 0), command=_command(burn_ms),
                replicas={"tts": tts}, start_timeout_s=180, env={"OTEL_TRACES_EXPORTER": "none"},
                stage_args=FAKE_ARGS)
            stacks[tts] = Stack(config)
            stacks[tts].start()
        yield stacks
    finally:
        for stack in stacks.values():
            stack.stop()


async def _conversation(address: str, turns: int) -> list[float]:
    """One conversation of ``turns`` spoken turns; each completed turn's time to first audio, ms."""
    from voxline.cli.client import session_config
    from voxline.testing.fake_servers import silence_pcm
    from voxline.v1 import voice_pb2, voice_pb2_grpc

    out: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        call = voice_pb2_grpc.VoiceAssistantStub(channel).Converse()
        await call.write(voice_pb2.ConverseRequest(config=session_config(no_cache=True, input_rate=16000)))
        for _ in range(turns):
            await call.write(voice_pb2.ConverseRequest(audio=silence_pcm(0.2)))
            await call.write(voice_pb2.ConverseRequest(end_of_utterance=voice_pb2.EndOfUtterance()))
            while True:
                event = await asyncio.wait_for(call.read(), 120)
                if event is grpc.aio.EOF:
                    return out
                if event.HasField("metrics"):
                    break
            if event.metrics.status == voice_pb2.COMPLETED:
                out.append(event.metrics.time_to_first_audio_ms)
        await call.done_writing()
        await call.code()
    return out


def _run_load(stack: Any, tts: int, sizes: Sizes) -> dict[str, Any]:
    pids = {name: service.proc.pid for name, service in stack.services.items() if name.startswith("tts")}
    window = CpuWindow(pids).start()
    started = time.perf_counter()

    async def load() -> list[list[float]]:
        address = stack.address("orchestrator")
        return list(await asyncio.gather(*(_conversation(address, sizes.turns)
                                           for _ in range(sizes.sessions))))

    runs = asyncio.run(load())
    wall = time.perf_counter() - started
    cpu = window.stop()
    ttfa = [v for run in runs for v in run]
    return {"tts_processes": tts, "turns": len(ttfa), "expected": sizes.sessions * sizes.turns,
            "wall_s": wall, "turns_per_s": len(ttfa) / wall, "ttfa_ms": ttfa,
            "tts_cores": sum(v for k, v in cpu.items() if k != "machine_busy_fraction"),
            "machine_busy": cpu.get("machine_busy_fraction", float("nan"))}


def measure(sizes: Sizes, log_dir: Path) -> dict[str, Any]:
    """Alternate the load on A (1 TTS) and B (2 TTS), ``sizes.rounds`` times; figures per side."""
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with _stacks(sizes.burn_ms, log_dir) as stacks:
        for tts, stack in stacks.items():  # one untimed turn each: connections, caches
            _run_load(stack, tts, Sizes(sessions=1, turns=1, burn_ms=sizes.burn_ms, rounds=1))
        for round_ in range(sizes.rounds):
            order = (1, 2) if round_ % 2 == 0 else (2, 1)
            for tts in order:
                runs[tts].append(_run_load(stacks[tts], tts, sizes))
    sides = {}
    for tts, results in runs.items():
        ttfa = [v for r in results for v in r["ttfa_ms"]]
        sides[str(tts)] = {"turns_per_s": stats.percentile([r["turns_per_s"] for r in results], 50),
                      "p95_ttfa_ms": stats.percentile(ttfa, 95), "p50_ttfa_ms": stats.percentile(ttfa, 50),
                      "completed": sum(r["turns"] for r in results),
                      "expected": sum(r["expected"] for r in results),
                      "tts_cores": stats.mean([r["tts_cores"] for r in results]),
                      "machine_busy": stats.mean([r["machine_busy"] for r in results])}
    return {"sizes": asdict(sizes), "cores": os.cpu_count(), "sides": sides,
            "throughput_ratio": stats.ratio(sides["2"]["turns_per_s"], sides["1"]["turns_per_s"]),
            "p95_ttfa_ratio": stats.ratio(sides["2"]["p95_ttfa_ms"], sides["1"]["p95_ttfa_ms"]),
            "runs": {str(k): [{kk: vv for kk, vv in r.items() if kk != "ttfa_ms"} for r in v]
                     for k, v in runs.items()}}


def markdown(f: dict[str, Any]) -> list[str]:
    """The section's headline and table."""
    s, sides = f["sizes"], f["sides"]
    one, two = sides["1"], sides["2"]
    headline = (f"**2 TTS processes vs 1: {f['throughput_ratio']:.2f}× the turns/s "
                f"({two['turns_per_s']:.2f} vs {one['turns_per_s']:.2f}), p95 time to first audio "
                f"{f['p95_ttfa_ratio']:.2f}× ({two['p95_ttfa_ms']:.0f} vs {one['p95_ttfa_ms']:.0f} ms); "
                f"the TTS processes used {two['tts_cores']:.2f} vs {one['tts_cores']:.2f} cores "
                f"on a {f['cores']}-core machine.**")
    rows = [f"| {tts} | {d['turns_per_s']:.2f} | {d['p50_ttfa_ms']:.0f} | {d['p95_ttfa_ms']:.0f} | "
            f"{d['tts_cores']:.2f} | {100 * d['machine_busy']:.0f}% | {d['completed']}/{d['expected']} |"
            for tts, d in ((1, one), (2, two))]
    return [headline, "",
            "| TTS processes | turns/s (median run) | p50 TTFA ms | p95 TTFA ms | TTS cores | machine busy "
            "| turns completed |", "|---|---|---|---|---|---|---|", *rows, "",
            f"{s['sessions']} concurrent conversations × {s['turns']} spoken turns per run, "
            f"{s['rounds']} run(s) per side in alternation; each sentence costs {s['burn_ms']:g} ms of "
            "CPU in TTS (3 sentences a turn); STT and LLM are fixed waits. The limit is the CPU: a "
            "second TTS process helps only by the core time it finds free next to the orchestrator, "
            "the other stages and the clients on the same machine."]


def run(ctx: Any) -> Any:
    """The suite's section (``python -m bench --sections replicas``)."""
    from bench.suite.core import SectionResult

    result = SectionResult("replicas", TITLE)
    sizes = SIZES.get(ctx.mode.name, SIZES["full"])
    figures = measure(sizes, ctx.out_dir / "replicas-logs")
    result.figures = figures
    result.setup = [f"machine: {ctx.machine_line}",
                    "two stacks on 127.0.0.1 (voxline up --replicas tts=1 / tts=2): fake STT and LLM, "
                    "CPU-costing fake TTS (bench/cpu_stage.py), the real orchestrator"]
    result.body = markdown(figures)
    ctx.echo(result.body[0])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(SIZES), default="quick")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="voxline-replicas-") as tmp:
        figures = measure(SIZES[ns.mode], Path(tmp))
    print("\n".join(markdown(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
