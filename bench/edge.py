"""``python -m bench.edge``: what the edge adds to the latency a person feels, and what it costs.

Runs the offline stack (Whisper base, SmolLM2, espeak-ng) and the edge on 127.0.0.1 inside its own
network namespace (``unshare -n``, loopback only; re-executes itself there), then, side by side on
the same spoken clips:

1. **gRPC**: a Converse client (server VAD) streams each clip in real time; end of speech (the last
   voiced chunk sent) → first reply audio received.
2. **browser**: headless Chromium (Debian's) plays the same clips as its fake microphone, one
   session; the page's ``audio_heard.end_of_speech_to_heard_ms`` (its WebAudio level on the
   microphone and on the reply). Reported: browser minus gRPC per clip (p50), Chromium's jitter
   buffer delay apart (``getStats``), and the edge's own share (the orchestrator's first audio → the
   first RTP frame out, ``reply_audio_sent.edge_ms``).
3. **load**: 8 concurrent aiortc sessions (Python clients, not browsers), 2 turns each: turns
   dropped (a question without its transcript, reply and audio), the edge's CPU per session.

gRPC passes run before and after the browser session, so both see the same machine state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.stats import cores_used, parse_proc_stat_ticks
from voxline.cli.service_process import ServiceProcess
from voxline.cli.stack import STAGES, Stack, StackConfig
from voxline.common.audio import float_to_pcm16, resample, wav_header
from voxline.edge.loopback import bring_loopback_up
from voxline.testing.speech import english_speech, english_speech_pcm16
from voxline.v1 import audio_pb2, llm_pb2, voice_pb2, voice_pb2_grpc

CLIPS = ("What is the capital of France?", "Tell me a short joke.",
         "How far away is the moon?", "Name three colours of the rainbow.")
MAX_TOKENS = 24
#: Silence after each clip in the browser's microphone WAV: room for the reply to play out.
BROWSER_GAP_S = 12.0
FLAGS = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
         "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run"]
VOICED = 300.0  # RMS of int16 samples


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- 1. gRPC -----------------------------------------------------------------------------------
async def grpc_turn(address: str, text: str) -> tuple[float, float]:
    """End of speech → first reply audio over Converse, ms (the clip streamed in real time): as the
    client measured it, and as the orchestrator did (``end_of_speech_to_first_audio_ms``)."""
    pcm = english_speech_pcm16(text, 16_000) + bytes(16_000 * 2 * 3)
    chunk = 640  # 20 ms
    async with grpc.aio.insecure_channel(address) as channel:
        call = voice_pb2_grpc.VoiceAssistantStub(channel).Converse()
        await call.write(voice_pb2.ConverseRequest(config=voice_pb2.SessionConfig(
            input_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=16_000,
                                               channels=1),
            output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE), language="en",
            sampling=llm_pb2.SamplingOptions(max_tokens=MAX_TOKENS), server_vad=True)))
        last_voiced: list[float] = [0.0]

        async def write() -> None:
            start = time.perf_counter()
            for n, i in enumerate(range(0, len(pcm), chunk)):
                piece = pcm[i:i + chunk]
                samples = np.frombuffer(piece, np.int16).astype(np.float64)
                await call.write(voice_pb2.ConverseRequest(audio=piece))
                if samples.size and np.sqrt(np.mean(samples ** 2)) > VOICED:
                    last_voiced[0] = time.perf_counter()
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.perf_counter()))
            while True:  # silence, as a microphone goes on
                await call.write(voice_pb2.ConverseRequest(audio=bytes(chunk)))
                await asyncio.sleep(0.02)

        writer = asyncio.create_task(write())
        heard: float | None = None
        try:
            while True:
                r = await asyncio.wait_for(call.read(), 120)
                if r is grpc.aio.EOF:
                    raise RuntimeError("stream ended before the reply")
                if r.WhichOneof("event") == "audio" and heard is None:
                    heard = (time.perf_counter() - last_voiced[0]) * 1000
                if r.WhichOneof("event") == "metrics" and heard is not None:
                    return heard, r.metrics.end_of_speech_to_first_audio_ms
        finally:
            writer.cancel()
            call.cancel()


# -- 2. browser --------------------------------------------------------------------------------
def browser_session(url: str, workdir: Path) -> dict[str, Any]:
    """One Chromium session speaking every clip; the page's events and receive statistics."""
    from playwright.sync_api import sync_playwright

    rate = 48_000
    parts = [np.zeros(int(0.5 * rate), np.float32)]
    for text in CLIPS:
        samples, src = english_speech(text)
        parts += [resample(np.asarray(samples, np.float32), src, rate),
                  np.zeros(int(BROWSER_GAP_S * rate), np.float32)]
    pcm = float_to_pcm16(np.concatenate(parts))
    wav = workdir / "microphone.wav"
    wav.write_bytes(wav_header(rate, 1, len(pcm)) + pcm)
    executable = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if os.path.exists(p)),
                      shutil.which("chromium"))
    if executable is None:
        raise RuntimeError("Debian's chromium is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True,
                                    args=[*FLAGS, f"--use-file-for-fake-audio-capture={wav}%noloop"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/?raw=1")
            page.evaluate("window.voxline.start()")
            deadline = time.monotonic() + len(CLIPS) * (BROWSER_GAP_S + 10) + 60
            while time.monotonic() < deadline:
                events = page.evaluate("window.voxline.events")
                heard = {e["turn"] for e in events if e["type"] == "audio_heard"}
                if len(heard) >= len(CLIPS):
                    break
                page.wait_for_timeout(500)
            stats = page.evaluate("window.voxline.receiverStats()")
            return {"events": page.evaluate("window.voxline.events"), "stats": stats}
        finally:
            browser.close()


# -- narrowband ---------------------------------------------------------------------------------
NARROWBAND = (*CLIPS, "The quick brown fox jumps over the lazy dog.",
              "Please call Stella and ask her to bring these things with her from the store.",
              "I would like to book a table for two at eight tonight.",
              "Can you remind me to water the plants tomorrow morning?")


async def narrowband(stt_address: str) -> dict[str, Any]:
    """Word errors of the recogniser on each sentence as a phone carries it (μ-law 8 kHz, brought to
    16 kHz by the edge's own resampler) against the same sentence at 16 kHz."""
    from voxline.edge.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16
    from voxline.testing.speech import word_errors, words
    from voxline.v1 import stt_pb2, stt_pb2_grpc

    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=16_000, channels=1)
    errors = {"wideband": 0, "phone": 0}
    heard: list[dict[str, str]] = []
    async with grpc.aio.insecure_channel(stt_address) as channel:
        stub = stt_pb2_grpc.SpeechToTextStub(channel)
        for text in NARROWBAND:
            ulaw = pcm16_to_ulaw(english_speech_pcm16(text, 8000))
            phone = Resampler(8000, 16_000).convert(ulaw_to_pcm16(ulaw))
            row = {"text": text}
            for name, pcm in (("wideband", english_speech_pcm16(text, 16_000)), ("phone", phone)):
                reply = await stub.Transcribe(stt_pb2.TranscribeRequest(
                    config=stt_pb2.RecognitionConfig(format=fmt, language="en"), audio=pcm), timeout=120)
                errors[name] += word_errors(reply.text, text)
                row[name] = reply.text
            heard.append(row)
    total = sum(len(words(t)) for t in NARROWBAND)
    return {"words": total, "errors": errors, "heard": heard}


# -- 3. load -----------------------------------------------------------------------------------
async def load(url: str, edge_pid: int, sessions: int) -> dict[str, Any]:
    from voxline.edge.client import EdgeClient
    from voxline.edge.webrtc import use_host_addresses

    use_host_addresses(["127.0.0.1"])
    def ticks() -> tuple[int, float]:
        return parse_proc_stat_ticks(Path(f"/proc/{edge_pid}/stat").read_text()), time.perf_counter()

    hz = os.sysconf("SC_CLK_TCK")
    clients = [EdgeClient(url) for _ in range(sessions)]
    for c in clients:
        await c.connect()
    idle0, idle_t0 = ticks()
    await asyncio.sleep(3.0)  # connected, silent: the cost of carrying the media
    idle1, idle_t1 = ticks()
    idle_cores = cores_used(idle0, idle1, idle_t1 - idle_t0, hz)

    async def talk(i: int, c: EdgeClient) -> int:
        await asyncio.sleep(i * 1.5)  # people do not all speak at the same instant
        done = 0
        for turn, text in enumerate(CLIPS[:2], start=1):
            c.mic.say(english_speech_pcm16(text, 16_000), 16_000)
            await c.mic.spoken.wait()
            try:
                await c.wait_for(lambda e, t=turn: e["type"] == "turn_metrics" and e["turn"] == t, 240)
                await c.wait_for(lambda e, t=turn: e["type"] == "reply_audio_sent" and e["turn"] == t, 5)
                done += 1
            except TimeoutError:
                pass
            await asyncio.sleep(4.0)  # the reply plays; then the next question
        return done

    cpu0, t0 = ticks()
    completed = await asyncio.gather(*(talk(i, c) for i, c in enumerate(clients)))
    cpu1, t1 = ticks()
    edge_ms = [e["edge_ms"] for c in clients for e in c.events if e["type"] == "reply_audio_sent"]
    statuses = [e["status"] for c in clients for e in c.events if e["type"] == "turn_metrics"]
    seen = [[(e["type"], e.get("turn"), e.get("text") or e.get("status") or e.get("reason"))
             for e in c.events if e["type"] in ("transcript", "turn_metrics", "playback_flushed", "closed")]
            for c in clients]
    for c in clients:
        await c.close()
    cores = cores_used(cpu0, cpu1, t1 - t0, hz)
    return {"sessions": sessions, "turns": sessions * 2, "completed": sum(completed),
            "dropped": sessions * 2 - sum(completed), "statuses": statuses,
            "edge_cpu_cores": cores, "edge_cpu_per_session_pct": 100 * cores / sessions,
            "edge_idle_cpu_per_session_pct": 100 * idle_cores / sessions,
            "edge_ms_p50": p50(edge_ms), "wall_s": t1 - t0, "sessions_seen": seen}


def frame_lateness(url: str) -> dict[str, float]:
    """The edge's send jitter so far, from its /metrics histogram: frames, and the share of them
    that left more than 5, 20 and 50 ms after their schedule."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    buckets: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("voxline_edge_frame_lateness_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
    total = buckets.get("+Inf", 0.0)
    late = {f"over_{ms}ms": (1 - buckets[le] / total) if total else float("nan")
            for ms, le in ((5, "0.005"), (20, "0.02"), (50, "0.05"))}
    return {"frames": total, **late}


# -- driver ------------------------------------------------------------------------------------
def wait_http(url: str, proc: ServiceProcess, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise proc.failure()
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def run(args: argparse.Namespace) -> dict[str, Any]:
    bring_loopback_up()
    work = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    env = {"GROQ_API_KEY": "", "CEREBRAS_API_KEY": "", "OTEL_TRACES_EXPORTER": "none"}
    stack = Stack(StackConfig(log_dir=work / "logs", ports=dict.fromkeys(STAGES, 0), host="127.0.0.1",
                              env=env, stage_args={"llm": ["--providers", "local"]}, restart=None))
    edge: ServiceProcess | None = None
    result: dict[str, Any] = {}
    try:
        stack.start()
        orchestrator = stack.address("orchestrator")
        edge = ServiceProcess("edge", [sys.executable, "-m", "voxline.edge", "--port", "0",
                                       "--orchestrator", orchestrator, "--ice-host-addresses", "127.0.0.1",
                                       "--language", "en", "--max-reply-tokens", str(MAX_TOKENS)],
                              env, log_path=work / "logs" / "edge.log")
        url = f"http://127.0.0.1:{edge.wait_port(60)}"
        wait_http(f"{url}/health", edge)
        asyncio.run(grpc_turn(orchestrator, "Hello."))  # warm-up: first-call costs out of the figures
        grpc_ms: dict[str, list[tuple[float, float]]] = {t: [] for t in CLIPS}
        for text in CLIPS:
            grpc_ms[text].append(asyncio.run(grpc_turn(orchestrator, text)))
        if "browser" in args.sections:
            session = browser_session(url, work)
            result["browser_stats"] = session["stats"]
            events = session["events"]
            heard = {e["turn"]: e["end_of_speech_to_heard_ms"] for e in events if e["type"] == "audio_heard"}
            result["browser_heard_ms"] = [heard.get(i + 1) for i in range(len(CLIPS))]
            server = {e["turn"]: e.get("end_of_speech_to_first_audio_ms") for e in events
                      if e["type"] == "turn_metrics"}
            result["browser_server_ms"] = [server.get(i + 1) for i in range(len(CLIPS))]
            result["browser_edge_ms"] = [e["edge_ms"] for e in events if e["type"] == "reply_audio_sent"]
            result["browser_transcripts"] = [e["text"] for e in events if e["type"] == "transcript"]
            result["frame_lateness"] = frame_lateness(url)
        for text in CLIPS:
            grpc_ms[text].append(asyncio.run(grpc_turn(orchestrator, text)))
        result["grpc_ms"] = {t: v for t, v in grpc_ms.items()}
        if "narrowband" in args.sections:
            result["narrowband"] = asyncio.run(narrowband(stack.address("stt")))
        if "load" in args.sections:
            result["load"] = asyncio.run(load(url, edge.proc.pid, args.sessions))
    finally:
        if edge is not None:
            edge.stop()
        stack.stop()
    return result


def report(r: dict[str, Any]) -> None:
    print(f"clips: {len(CLIPS)} questions (Piper voice), max {MAX_TOKENS} reply tokens, espeak-ng voice")
    if "browser_heard_ms" in r:
        # STT and the LLM vary by seconds between runs on a busy CPU: each turn's own server figure
        # (the orchestrator's end of speech -> first audio sent) is taken out, leaving what the
        # transport adds on each side (up: microphone to the orchestrator; down: to the ear).
        print("\nend of speech -> first reply audio (ms): client-measured / the orchestrator's own figure")
        print(f"{'clip':<36} {'gRPC':>13} {'browser':>13}")
        grpc_over, browser_over = [], []
        for text, b, bs in zip(CLIPS, r["browser_heard_ms"], r["browser_server_ms"], strict=True):
            runs = r["grpc_ms"][text]
            g, gs = p50([c for c, _ in runs]), p50([s for _, s in runs])
            grpc_over += [c - s for c, s in runs]
            shown = "-" if b is None or bs is None else f"{b:.0f} / {bs:.0f}"
            if b is not None and bs:
                browser_over.append(b - bs)
            print(f"{text[:36]:<36} {f'{g:.0f} / {gs:.0f}':>13} {shown:>13}")
        stats = r.get("browser_stats") or {}
        extra = p50(browser_over) - p50(grpc_over)
        print(f"transport overhead p50 (client minus orchestrator): gRPC {p50(grpc_over):.0f} ms, "
              f"browser {p50(browser_over):.0f} ms")
        print(f"heard-in-browser minus gRPC, p50: {extra:.0f} ms (target <= 200)")
        lateness = r.get("frame_lateness") or {}
        if lateness:
            print(f"  the edge's send jitter: {lateness['frames']:.0f} frames, "
                  f"{100 * lateness['over_5ms']:.1f} % left > 5 ms late, {100 * lateness['over_20ms']:.1f} % "
                  f"> 20 ms, {100 * lateness['over_50ms']:.1f} % > 50 ms")
        jitter = stats.get("jitter_buffer_ms")
        print(f"  of which Chromium's jitter buffer (getStats, mean delay): "
              f"{'-' if jitter is None else f'{jitter:.0f}'} ms")
        print(f"  edge's own share (orchestrator first audio -> first RTP frame), p50: "
              f"{p50(r['browser_edge_ms']):.1f} ms (target <= 20)")
        print(f"  transcripts in the browser session: {r['browser_transcripts']}")
    if "narrowband" in r:
        nb = r["narrowband"]
        print(f"\nnarrowband (μ-law 8 kHz as a phone carries it, resampled by the edge) vs 16 kHz, "
              f"Whisper base, {len(nb['heard'])} sentences, {nb['words']} words: word errors "
              f"{nb['errors']['phone']} vs {nb['errors']['wideband']}")
        for row in nb["heard"]:
            if row["phone"] != row["wideband"]:
                print(f"  {row['text']!r}: phone {row['phone']!r}, 16 kHz {row['wideband']!r}")
    if "load" in r:
        load_r = r["load"]
        print(f"\n{load_r['sessions']} concurrent aiortc sessions x 2 turns: "
              f"{load_r['completed']}/{load_r['turns']} turns completed, {load_r['dropped']} dropped; "
              f"statuses {sorted(set(load_r['statuses']))}")
        print(f"  edge CPU: {load_r['edge_cpu_per_session_pct']:.1f}% of a core per session while talking "
              f"({load_r['edge_cpu_cores']:.2f} cores for {load_r['sessions']}), "
              f"{load_r['edge_idle_cpu_per_session_pct']:.1f}% per connected silent session")
        print(f"  edge's own share under load, p50: {load_r['edge_ms_p50']:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="browser,narrowband,load",
                        help="browser, narrowband, load [default: all]")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent aiortc sessions [default: 8]")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    args = parser.parse_args(argv)
    if os.environ.get("VOXLINE_BENCH_NETNS") != "1":
        # loopback only: neither Chromium nor aiortc offers another address
        env = {**os.environ, "VOXLINE_BENCH_NETNS": "1"}
        return subprocess.run(["unshare", "-n", sys.executable, "-m", "bench.edge", *sys.argv[1:]],
                              env=env, check=False).returncode
    result = run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
