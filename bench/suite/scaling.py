"""Section 5: 1, 2, 4, 8, 16 concurrent sessions, each a Converse stream doing K turns.

On the fake engines (fixed waits, no CPU: what the pipeline itself sustains) and on the real offline
engines (CPU inference). Per level: turns per second, p95 time to first audio, failed turns, each
service's CPU (cores, from /proc/<pid>/stat between the start and the end of the level) and peak
memory (VmHWM from /proc/<pid>/status: the high-water mark since the service started).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

import grpc

from bench import stats
from bench.machine import CpuWindow, read_peak_rss_mib
from bench.suite.baseline import make_clips
from bench.suite.core import Context, SectionResult, fmt_ms, md_table
from bench.suite.plots import lines
from bench.suite.stacks import FAKE_COSTS

TITLE = "5. Scaling: concurrent sessions on fake and real engines"
LEVEL_TIMEOUT_S = 600.0
SERVICES = ("orchestrator", "stt", "llm", "tts")
#: The benchmark's own process (the clients of every session) is measured too: it shares the CPUs.
CLIENT = "client"


async def _session(address: str, clip: bytes, turns: int, max_tokens: int) -> list[dict[str, Any]]:
    """One conversation doing ``turns`` turns; each turn's metrics, or {"failed": reason}."""
    from voxline.cli.client import Conversation, session_config
    from voxline.cli.sequential import sampling

    config = session_config(language="en", no_cache=True)
    config.sampling.CopyFrom(sampling(max_tokens))
    out: list[dict[str, Any]] = []
    try:
        async with Conversation(address, config) as conversation:
            for _ in range(turns):
                result = await conversation.turn(audio=clip)
                if result.status != "COMPLETED":
                    out.append({"failed": f"{result.status}: {result.metrics.get('error', '')}"[:160]})
                else:
                    out.append(dict(result.metrics))
    except (grpc.aio.AioRpcError, RuntimeError) as exc:
        out += [{"failed": str(exc)[:160]}] * (turns - len(out))
    return out


async def _level(address: str, clip: bytes, sessions: int, turns: int, max_tokens: int
                 ) -> tuple[list[dict[str, Any]], float]:
    start = time.perf_counter()
    runs = await asyncio.wait_for(asyncio.gather(*[_session(address, clip, turns, max_tokens)
                                                   for _ in range(sessions)]), LEVEL_TIMEOUT_S)
    return [m for run in runs for m in run], time.perf_counter() - start


def measure(ctx: Context, kind: str, levels: tuple[int, ...], turns: int) -> dict[str, Any]:
    """Run every level on the ``kind`` stack; figures per level."""
    stack = ctx.stack(kind)
    clips, _ = asyncio.run(make_clips(stack.address("tts"), 1))
    clip = clips[0][1]
    address = stack.address("orchestrator")
    pids = {**stack.pids, CLIENT: os.getpid()}
    # Warm-up turn (not counted).
    asyncio.run(_level(address, clip, 1, 1, ctx.mode.max_tokens))
    out: dict[str, Any] = {"stack": stack.kind, "levels": [], "turns_per_session": turns,
                           "configuration": stack.configuration()}
    with ctx.steps(f"scaling ({stack.kind})", len(levels)) as advance:
        for n in levels:
            ctx.step(f"scaling {stack.kind}: {n} sessions")
            window = CpuWindow(pids).start()
            try:
                metrics, wall = asyncio.run(_level(address, clip, n, turns, ctx.mode.max_tokens))
            except TimeoutError:
                metrics, wall = [{"failed": "level timed out"}] * (n * turns), LEVEL_TIMEOUT_S
            cpu = window.stop()
            done = [m for m in metrics if "failed" not in m]
            first = [float(m["time_to_first_audio_ms"]) for m in done]
            out["levels"].append({
                "sessions": n, "turns": len(metrics), "completed": len(done),
                "failed": len(metrics) - len(done), "wall_s": wall,
                "turns_per_s": len(done) / wall if wall > 0 else math.nan,
                "first_audio_ms": stats.summary(first),
                "total_ms": stats.summary([float(m["total_ms"]) for m in done]),
                "cpu_cores": cpu,
                "peak_rss_mib": {s: read_peak_rss_mib(pid) for s, pid in pids.items()},
                "errors": sorted({str(m["failed"]) for m in metrics if "failed" in m})[:3],
            })
            advance()
    levels_list = [lv["sessions"] for lv in out["levels"]]
    tps = [lv["turns_per_s"] for lv in out["levels"]]
    bend = stats.find_bend(levels_list, tps) if len(levels_list) > 1 else None
    out["bend_at"] = bend
    out["efficiency"] = stats.scaling_efficiency(levels_list, tps) if levels_list else []
    return out


def _explain(run: dict[str, Any], cores: int) -> str:
    """Where the curve bends and which resource is saturated, from the measurements."""
    levels = run["levels"]
    if len(levels) < 2:
        return "one level only: no curve."
    bend = run["bend_at"]
    last = levels[-1]
    if bend is None:
        lv = last
        head = (f"no bend up to {lv['sessions']} sessions: throughput kept growing at least half as fast "
                f"as concurrency (efficiency {run['efficiency'][-1]:.2f} of linear at {lv['sessions']}).")
    else:
        i = [lv["sessions"] for lv in levels].index(bend)
        lv = levels[min(i + 1, len(levels) - 1)]
        head = (f"the curve bends at **{bend} session(s)**: going to {lv['sessions']} multiplied "
                f"turns/s by {stats.ratio(lv['turns_per_s'], levels[i]['turns_per_s']):.2f} for "
                f"{lv['sessions'] / bend:.0f}× the sessions, and p95 time to first audio went "
                f"{fmt_ms(levels[i]['first_audio_ms']['p95'])} → {fmt_ms(lv['first_audio_ms']['p95'])} ms.")
    cpu = lv["cpu_cores"]
    kind, name = stats.saturated_resource(cpu, cores)
    usage = ", ".join(f"{s} {cpu[s]:.2f}" for s in (*SERVICES, CLIENT) if s in cpu)
    busy = cpu.get("machine_busy_fraction", math.nan)
    where = (f"At {lv['sessions']} sessions the CPU use was (cores) {usage}; the whole machine "
             f"({cores} cores) was {100 * busy:.0f}% busy (all processes, including others on this "
             "shared machine).")
    if kind == "machine_cpu":
        why = (f"Saturated resource: **the machine's {cores} CPU cores**; the biggest user is **{name}** "
               f"({cpu.get(name, math.nan):.2f} cores): more sessions only queue for CPU.")
    elif kind == "one_core":
        why = (f"Saturated resource: **one core in {name}** ({cpu.get(name, math.nan):.2f} cores): its "
               "single Python event loop / GIL-bound thread cannot use more than one core.")
    elif kind == "stage":
        share = cpu.get(name, math.nan) / sum(cpu.get(s, 0.0) for s in (*SERVICES, CLIENT))
        why = (f"Saturated resource: **the {name} stage**: it did {100 * share:.0f}% of the CPU work of the "
               f"whole stack ({cpu.get(name, math.nan):.2f} cores) while the other services idled: it works "
               "through one request at a time on the threads it was given (see its configuration in the "
               "setup), so added sessions queue in front of it and p95 time to first audio grows with "
               f"the queue. The machine was {100 * busy:.0f}% busy, so that stage also competes for CPU.")
    elif kind == "other_load":
        why = ("The CPUs were busy mostly with processes outside the benchmark, so this level's figures "
               f"are depressed by other load; of ours, {name} used the most.")
    else:
        why = (f"No CPU is saturated (busiest: {name}): the limit is waiting (the engines' fixed costs, "
               "or a stage that serialises requests), not computation.")
    if bend is None and kind != "waiting":
        why = "Not saturated yet, but nearest: " + why[0].lower() + why[1:]
    return f"{head} {where} {why}"


def run(ctx: Context) -> SectionResult:
    """Section 5."""
    result = SectionResult("scaling", TITLE)
    mode = ctx.mode
    runs: dict[str, dict[str, Any]] = {}
    runs["fake"] = measure(ctx, "fake", mode.fake_levels, mode.fake_turns)
    if mode.real_engines and mode.real_levels:
        runs["real"] = measure(ctx, "real", mode.real_levels, mode.real_turns)
    cores = int(ctx.machine.get("cores") or 1)
    result.setup = [
        f"machine: {ctx.machine_line}",
        "each session is one Converse stream doing K turns of the same spoken question, back to back; "
        "all sessions of a level start together; reply cache off; 1 warm-up turn first",
        "fake engines (voxline.testing.fake_stage, asyncio waits, no CPU): "
        f"STT {FAKE_COSTS['stt_ms']:g} ms, LLM first token {FAKE_COSTS['llm_ttft_ms']:g} ms "
        f"then {FAKE_COSTS['llm_token_ms']:g} ms per word "
        f"(3 sentences), TTS {FAKE_COSTS['tts_ms']:g} ms per sentence; levels {list(mode.fake_levels)}, "
        f"K = {mode.fake_turns}",
    ]
    if "real" in runs:
        result.setup.append(f"real engines (offline defaults: {ctx.stack('real').engines()}): levels "
                            f"{list(mode.real_levels)}, K = {mode.real_turns}, LLM at most {mode.max_tokens} "
                            "tokens")
    else:
        result.setup.append("real engines: not run in this mode (SMOKE RUN: fake engines only)")
    body: list[str] = []
    for kind, data in runs.items():
        body += [f"**{kind} engines** ({data['stack']} stack)", ""]
        rows = []
        for lv in data["levels"]:
            cpu = lv["cpu_cores"]
            rows.append([str(lv["sessions"]), f"{lv['completed']}/{lv['turns']}", f"{lv['turns_per_s']:.2f}",
                         fmt_ms(lv["first_audio_ms"]["p50"]), fmt_ms(lv["first_audio_ms"]["p95"]),
                         " / ".join(f"{cpu.get(s, math.nan):.2f}" for s in (*SERVICES, CLIENT)),
                         f"{100 * cpu.get('machine_busy_fraction', math.nan):.0f}%",
                         " / ".join(fmt_ms(lv["peak_rss_mib"].get(s) or math.nan) for s in SERVICES)])
        body += md_table(["sessions", "turns ok", "turns/s", "1st audio p50", "1st audio p95",
                          "CPU cores orch / stt / llm / tts / client", "machine busy",
                          "peak RSS MiB orch / stt / llm / tts"], rows)
        errors = sorted({e for lv in data["levels"] for e in lv["errors"]})
        if errors:
            body.append(f"Failed turns said: {'; '.join(errors[:3])}")
        data["explanation"] = _explain(data, cores)
        body += ["", data["explanation"], ""]
    result.body = body
    result.figures = runs
    # One set of plots per engine kind: fake and real throughputs differ by ~100×.
    for kind, data in runs.items():
        xs = [lv["sessions"] for lv in data["levels"]]
        result.plots.append(lines(ctx.out_dir / f"scaling_throughput_{kind}.png",
                                  f"turns per second ({kind} engines)", xs,
                                  {"turns/s": [lv["turns_per_s"] for lv in data["levels"]]},
                                  "concurrent sessions", "turns per second", mark_x=data["bend_at"],
                                  log2_x=True).name)
        result.plots.append(lines(ctx.out_dir / f"scaling_first_audio_{kind}.png",
                                  f"time to first audio ({kind} engines)", xs,
                                  {q: [lv["first_audio_ms"][q] for lv in data["levels"]]
                                   for q in ("p50", "p95")},
                                  "concurrent sessions", "ms", mark_x=data["bend_at"], log2_x=True).name)
        mem = {s: [lv["peak_rss_mib"].get(s) or math.nan for lv in data["levels"]] for s in SERVICES}
        result.plots.append(lines(ctx.out_dir / f"scaling_memory_{kind}.png",
                                  f"peak memory per service ({kind} engines)", xs, mem,
                                  "concurrent sessions", "VmHWM, MiB", log2_x=True).name)
        cpu = {s: [lv["cpu_cores"].get(s, math.nan) for lv in data["levels"]] for s in SERVICES}
        result.plots.append(lines(ctx.out_dir / f"scaling_cpu_{kind}.png",
                                  f"CPU per service ({kind} engines)", xs, cpu,
                                  "concurrent sessions", "cores used", log2_x=True).name)
    for line in body:
        ctx.echo(line)
    return result
