"""End of speech to first audio, microphone-paced: four ways of ending the user's turn, side by side.

``python -m bench.turn_taking [--runs N] [--smoke]``. Every path gets the same utterances (real
speech from the project's Piper voice, with light noise, each sentence once whole and once with a
700 ms pause mid-sentence), streamed as 20 ms PCM chunks at real-time pace like a microphone, in
one process: the real STT servicer (packaged Whisper base, Silero VAD, Smart Turn v3), the real
orchestrator, and fake LLM and TTS servers with fixed latencies taken from the baseline (stated in
the output). The clock runs from the last voiced sample of the utterance, as "spoken" by the client,
to the first reply audio the client receives.

Paths:
  (a) energy-600: today's server VAD (the orchestrator's former RMS detector, 600 ms of silence)
      emulated by the client: each utterance it cuts is sent with an end of utterance, and the
      server transcribes it after that (the path before this change).
  (b) turn-taking: server_vad with Silero + Smart Turn in the STT stream, no speculation.
  (c) turn-taking + speculation: (b) with the reply started at each pause.
  (d) oracle: the client marks the end of the utterance at the exact end of speech.

Two STT engines (``--stt``): ``whisper``, the packaged Whisper base on this CPU (about a second per
transcription here, so every path is STT-bound), and ``baseline``, the same servicer, Silero VAD and
Smart Turn with Whisper replaced by a stand-in transcriber that costs the baseline's in-memory STT
time (25 ms a call on its RTX 4090: GPU-class, NOT this CPU's Whisper; the "transcript" names the
seconds of voiced audio, so the same audio gives the same text): what the turn-taking changes when
the recogniser is as fast as the baseline's.

Per path: mean and p95, turns split (a sentence answered as more than one turn), replies spoken
early (reply audio before the user finished), speculation starts/hits/misses and tokens wasted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np

TITLE = "7. End of speech to first audio, microphone-paced (turn-taking)"
PATHS: tuple[str, ...] = ("energy-600", "turn-taking", "turn-taking+speculation", "oracle")
#: Fake stage latencies, from the baseline (DESIGN.md): the LLM's first token, then its deltas;
#: TTS's first audio of a sentence.
LLM_FIRST_TOKEN_S = 0.25
LLM_DELTA_S = 0.02
TTS_FIRST_AUDIO_S = 0.115
REPLY = ["Sure, ", "here is ", "what I ", "found for you. ", "It should ", "help."]
LEAD_S, TRAIL_S, PAUSE_S, SNR_DB = 0.5, 2.5, 0.7, 30.0
#: The baseline's STT cost (in memory, RTX 4090), for ``--stt baseline``.
BASELINE_STT_S = 0.025
#: (sentence, where its pause goes: the word gap nearest this many seconds into the speech). The
#: pauses were placed where the sentence is unfinished, by its words, and not by what Smart Turn says
#: there: after "ask" (1), "like" (2), "drive from" (3), "remind me to" (4), "Main Street" (5),
#: "my sister" (6: no gap after "saying that", the nearest is after "sister", where the words so far
#: are a complete command), "near the" (7), "relaxing music" (8). Every sentence is reported.
SENTENCES = (
    ("Please call Stella and ask her to bring these things with her from the store.", 1.4),
    ("I would like to know what the weather will be like tomorrow morning in London.", 1.76),
    ("Could you tell me how long it takes to drive from Boston to New York City?", 1.84),
    ("Set a timer for twenty minutes and remind me to take the bread out of the oven.", 2.26),
    ("What time does the pharmacy on Main Street close on Saturday evenings?", 1.52),
    ("Send a message to my sister saying that I will be late for dinner tonight.", 1.88),
    ("Can you find a good Italian restaurant near the train station for four people?", 2.08),
    ("Play some relaxing music in the living room while I cook dinner.", 1.98),
)


@dataclasses.dataclass
class Clip:
    name: str
    pcm: bytes
    end_of_speech_s: float


@dataclasses.dataclass
class PathFigures:
    path: str
    e2fa_ms: list[float] = dataclasses.field(default_factory=list)
    runs: int = 0
    no_reply: int = 0
    split_turns: int = 0
    early_replies: int = 0
    spec_starts: int = 0
    spec_hits: int = 0
    spec_misses: int = 0
    tokens_wasted: int = 0

    def summary(self) -> dict[str, Any]:
        values = sorted(self.e2fa_ms)
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))] if values else float("nan")
        return {
            "path": self.path, "runs": self.runs,
            "mean_ms": statistics.fmean(values) if values else float("nan"), "p95_ms": p95,
            "min_ms": values[0] if values else float("nan"), "max_ms": values[-1] if values else float("nan"),
            "no_reply": self.no_reply, "split_turns": self.split_turns, "early_replies": self.early_replies,
            "speculative_starts": self.spec_starts, "speculative_hits": self.spec_hits,
            "speculative_misses": self.spec_misses,
            "hit_rate": self.spec_hits / self.spec_starts if self.spec_starts else None,
            "tokens_wasted": self.tokens_wasted,
        }


def make_clips() -> list[Clip]:
    from voxline.cli.realtime import last_voiced_s
    from voxline.common.audio import float_to_pcm16, resample
    from voxline.testing.speech import add_noise, english_speech, speech_with_pause

    clips = []
    rate = 16_000
    for i, (text, cut) in enumerate(SENTENCES):
        samples, native = english_speech(text)
        whole = resample(np.asarray(samples), native, rate)
        paused, _ = speech_with_pause(text, PAUSE_S, rate, cut)
        for kind, speech in (("whole", whole), ("pause", paused)):
            audio = np.concatenate([np.zeros(int(LEAD_S * rate), np.float32), speech,
                                    np.zeros(int(TRAIL_S * rate), np.float32)])
            clean = float_to_pcm16(audio)
            noisy = float_to_pcm16(add_noise(audio, SNR_DB, seed=i))
            clips.append(Clip(f"s{i + 1}-{kind}", noisy, last_voiced_s(clean, rate)))
    return clips


def schedule_for(path: str, clip: Clip) -> list[Any]:
    """What the client sends at each 20 ms tick on ``path``."""
    from bench.legacy_vad import EnergyVad
    from voxline.cli.realtime import CHUNK_MS, chunks_of, microphone_schedule
    from voxline.v1 import voice_pb2

    if path in ("turn-taking", "turn-taking+speculation"):
        return microphone_schedule(clip.pcm, 16_000)
    ticks: list[list[voice_pb2.ConverseRequest]] = []
    eou = voice_pb2.ConverseRequest(end_of_utterance=voice_pb2.EndOfUtterance())
    if path == "oracle":
        end_tick = int(np.ceil(clip.end_of_speech_s * 1000 / CHUNK_MS)) - 1
        for i, chunk in enumerate(chunks_of(clip.pcm, 16_000)):
            if i < end_tick:
                ticks.append([voice_pb2.ConverseRequest(audio=chunk)])
            elif i == end_tick:
                ticks.append([voice_pb2.ConverseRequest(audio=chunk), eou])
            else:
                ticks.append([])  # the client ended the utterance: nothing more is sent
        return ticks
    vad = EnergyVad(16_000, 1, threshold=0.015, silence_ms=600, frame_ms=20)
    for chunk in chunks_of(clip.pcm, 16_000):
        tick: list[voice_pb2.ConverseRequest] = []
        for utterance in vad.feed(chunk).utterances:
            tick += [voice_pb2.ConverseRequest(audio=utterance[i:i + 32_000])
                     for i in range(0, len(utterance), 32_000)] + [eou]
        ticks.append(tick)
    return ticks


def config_for(path: str) -> Any:
    from voxline.v1 import audio_pb2, voice_pb2

    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=16_000, channels=1)
    config = voice_pb2.SessionConfig(input_format=fmt, language="en",
                                     output_format=audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE))
    if path.startswith("turn-taking"):
        config.server_vad = True
        config.speculative_reply = path.endswith("speculation")
    return config


class BaselineCostTranscriber:
    """A ``Transcriber`` that costs what the baseline's STT did and "transcribes" the seconds of voiced
    audio it got (deterministic: the same audio, the same text)."""

    max_audio_seconds = 120.0

    async def warm_up(self) -> None:
        return None

    def check_options(self, options: Any) -> None:
        return None

    async def transcribe(self, audio: Any, options: Any) -> Any:
        from voxline.stt.engine import Transcript

        await asyncio.sleep(BASELINE_STT_S)
        x = np.frombuffer(audio.data, dtype="<i2").astype(np.float32) / 32768.0
        frames = x[:len(x) // 160 * 160].reshape(-1, 160)
        voiced = float(np.sum(np.sqrt(np.mean(frames * frames, axis=1)) > 0.01)) * 0.01
        return Transcript(text=f"{voiced:.2f} seconds of speech", language="en", language_probability=1.0,
                          segments=(), audio_seconds=len(x) / 16_000, processing_ms=BASELINE_STT_S * 1000,
                          decode_ms=0.0)

    async def transcribe_if_idle(self, audio: Any, options: Any) -> Any:
        return await self.transcribe(audio, options)

    async def close(self) -> None:
        return None


async def _serve_stt(smoke: bool, stt: str = "whisper") -> tuple[Any, Any]:
    """The STT stage: the real servicer and models (smoke: the fake, figures meaningless)."""
    from voxline.testing.fake_servers import FakeStt

    if smoke:
        fake = await FakeStt().start()
        return fake, fake.stop
    from voxline.common.config import ServerConfig
    from voxline.common.server import ServiceSpec, start_server
    from voxline.stt.config import EngineSettings, TurnSettings
    from voxline.stt.detectors import TurnDetectors
    from voxline.stt.engine import WhisperTranscriber
    from voxline.stt.servicer import SERVICE_NAME, SpeechToTextServicer
    from voxline.v1 import stt_pb2_grpc

    engine: Any = (WhisperTranscriber(EngineSettings(language="en")) if stt == "whisper"
                   else BaselineCostTranscriber())
    turns = TurnDetectors(TurnSettings())
    servicer = SpeechToTextServicer(engine, partial_interval_s=1.0, max_stream_bytes=1 << 26, turns=turns)

    async def warm_up() -> None:
        await engine.warm_up()
        await turns.warm_up()

    def register(server: grpc.aio.Server) -> None:
        stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, server)

    running = await start_server(ServiceSpec(name="bench-stt", grpc_services=[SERVICE_NAME],
                                             register=register, warm_up=warm_up, close=engine.close),
                                 ServerConfig(port=0))
    await running.warm_up()

    class Address:
        address = f"127.0.0.1:{running.port}"

    async def stop() -> None:
        await running.stop(0)

    return Address(), stop


async def measure(runs: int = 1, smoke: bool = False, echo: Any = print, stt: str = "whisper"
                  ) -> dict[str, Any]:
    """Run every path over every clip ``runs`` times (paths interleaved); the figures per path.
    ``smoke``: the fake STT, one clip, paced 4x faster than real time (seconds; figures meaningless)."""
    from voxline.cli.client import Conversation
    from voxline.cli.realtime import run_paced
    from voxline.common.config import ServerConfig
    from voxline.common.server import start_server
    from voxline.orchestrator.config import OrchestratorConfig
    from voxline.orchestrator.wiring import build_spec
    from voxline.testing.fake_servers import FakeLlm, FakeTts

    clips = make_clips()
    speed = 1.0
    if smoke:
        clips, speed = [c for c in clips if c.name == "s1-pause"], 4.0
    stt_stage, stop_stt = await _serve_stt(smoke, stt)
    llm = await FakeLlm(REPLY, delta_delay_s=LLM_DELTA_S, first_delay_s=LLM_FIRST_TOKEN_S).start()
    tts = await FakeTts(first_audio_s=TTS_FIRST_AUDIO_S).start()
    orchestrator = await start_server(build_spec(OrchestratorConfig(
        stt_address=stt_stage.address, llm_address=llm.address, tts_address=tts.address)),
        ServerConfig(port=0))
    await orchestrator.warm_up()
    figures = {p: PathFigures(p) for p in PATHS}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            for run in range(runs):
                for clip in clips:
                    for path in PATHS:
                        conv = Conversation.on_channel(channel, read_timeout_s=30)
                        seen = await run_paced(conv, config_for(path), schedule_for(path, clip),
                                               clip.end_of_speech_s, speed=speed)
                        f = figures[path]
                        f.runs += 1
                        e2fa = seen.end_of_speech_to_first_audio_ms
                        if e2fa is None:
                            f.no_reply += 1
                        else:
                            f.e2fa_ms.append(e2fa)
                        spoken = [t for t in seen.turns if t.transcript]
                        f.split_turns += len(spoken) > 1
                        f.early_replies += seen.early_replies > 0
                        for t in seen.turns:
                            m = t.metrics
                            f.spec_starts += int(m.get("speculative_starts", 0) or 0)  # type: ignore[call-overload]
                            f.spec_hits += int(m.get("speculative_hits", 0) or 0)  # type: ignore[call-overload]
                            f.spec_misses += int(m.get("speculative_misses", 0) or 0)  # type: ignore[call-overload]
                            f.tokens_wasted += int(m.get("speculative_tokens_wasted", 0) or 0)  # type: ignore[call-overload]
                        echo(f"run {run + 1} {clip.name:9s} {path:24s} e2fa "
                             + (f"{e2fa:7.0f} ms" if e2fa is not None else "   none   ")
                             + f" turns {len(spoken)} early {seen.early_replies} "
                             + " | ".join(repr(t.transcript) for t in spoken))
    finally:
        await orchestrator.stop(0)
        await tts.stop()
        await llm.stop()
        await stop_stt()
    out = {p: figures[p].summary() for p in PATHS}
    a, c = out["energy-600"]["mean_ms"], out["turn-taking+speculation"]["mean_ms"]
    d = out["oracle"]["mean_ms"]
    return {
        "paths": out,
        "c_over_a": c / a if a else float("nan"),
        "c_minus_d_ms": c - d,
        "stt": stt,
        "setup": ("real STT servicer ("
                  + ("Whisper base int8 on this CPU" if stt == "whisper" else
                     f"NOT Whisper: a stand-in transcriber costing {BASELINE_STT_S * 1000:.0f} ms a call, "
                     "the baseline's STT cost on its GPU (RTX 4090)")
                  + f", Silero VAD, Smart Turn v3.2), real "
                  f"orchestrator, fake LLM (first token {LLM_FIRST_TOKEN_S * 1000:.0f} ms, then "
                  f"{len(REPLY) - 1} deltas {LLM_DELTA_S * 1000:.0f} ms apart) and fake TTS (first audio "
                  f"{TTS_FIRST_AUDIO_S * 1000:.0f} ms), one process; {len(clips)} clips "
                  f"({len(clips) // 2} sentences, whole "
                  f"and with a {PAUSE_S * 1000:.0f} ms pause, white noise at {SNR_DB:.0f} dB SNR), {runs} "
                  "run(s) per clip and path, paths interleaved"
                  + ("; SMOKE: fake STT, figures meaningless" if smoke else "")),
    }


def render(result: dict[str, Any]) -> list[str]:
    """The section's Markdown table."""
    rows = ["| path | mean ms | p95 ms | runs | no reply | split turns | early replies "
            "| spec. starts | hits | misses | hit rate | tokens wasted |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in PATHS:
        s = result["paths"][p]
        rate = f"{s['hit_rate']:.0%}" if s["hit_rate"] is not None else "-"
        rows.append(f"| {p} | {s['mean_ms']:.0f} | {s['p95_ms']:.0f} | {s['runs']} | {s['no_reply']} "
                    f"| {s['split_turns']} | {s['early_replies']} | {s['speculative_starts']} "
                    f"| {s['speculative_hits']} | {s['speculative_misses']} | {rate} "
                    f"| {s['tokens_wasted']} |")
    rows.append("")
    rows.append(f"(c)/(a) = {result['c_over_a']:.2f} (goal <= 0.75); (c) - (d) = "
                f"{result['c_minus_d_ms']:+.0f} ms (goal <= 250 ms).")
    return rows


def run_section(ctx: Any) -> Any:
    """The suite's section (bench/suite/sections.py): 1 run per clip and path in quick, 3 in full."""
    from bench.suite.core import SectionResult

    smoke = ctx.mode.name == "smoke"
    runs = {"smoke": 1, "quick": 1}.get(ctx.mode.name, 3)
    result = SectionResult("turns", TITLE)
    figures = asyncio.run(measure(runs, smoke, echo=lambda line: None))
    result.figures = figures
    result.setup = [f"machine: {ctx.machine_line}", figures["setup"]]
    c = figures["paths"]["turn-taking+speculation"]
    headline = (f"**With speculation the reply's first audio came {c['mean_ms']:.0f} ms after the end of "
                f"speech (mean; p95 {c['p95_ms']:.0f}): {figures['c_over_a']:.2f}x the 600 ms energy VAD, "
                f"{figures['c_minus_d_ms']:+.0f} ms from the oracle.**")
    result.body = [headline, "", *render(figures), "",
                   "Clock: the last voiced sample as the client spoke it → the first audio of the reply "
                   "to the turn that heard it. Split: a sentence answered as more than one turn. Early: "
                   "reply audio before the user finished."]
    ctx.echo(headline)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.turn_taking", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="runs per clip and path [default: 1]")
    parser.add_argument("--smoke", action="store_true", help="fake STT (seconds; figures meaningless)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--stt", choices=("whisper", "baseline"), default="whisper",
                        help="whisper: Whisper base on this CPU; baseline: a stand-in transcriber costing "
                             "the baseline's 25 ms GPU (RTX 4090) STT time, not Whisper (VAD and Smart Turn "
                             "stay real) [default: whisper]")
    ns = parser.parse_args(argv)
    result = asyncio.run(measure(ns.runs, ns.smoke, stt=ns.stt))
    print(result["setup"])
    print("\n".join(render(result)))
    if ns.json is not None:
        ns.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
