"""End of speech to first audio, microphone-paced: four ways of ending the user's turn, side by side.

``python -m bench.turn_taking [--runs N] [--stt whisper|baseline] [--smoke]``. Every path gets the
same utterances (real speech from the project's Piper voice, with light noise, each sentence once
whole and once with a 700 ms pause mid-sentence, where its words are unfinished), streamed as
20 ms PCM chunks at real-time pace like a microphone, in one process: the real STT servicer
(packaged Whisper base, Silero VAD, Smart Turn v3), the real orchestrator, and fake LLM and TTS
servers with fixed latencies taken from the baseline (stated in the output). The clock runs from
the last voiced sample of the utterance, as "spoken" by the client, to the first reply audio the
client receives.

Paths:
  (a) energy-600: today's server VAD (the orchestrator's former RMS detector, 600 ms of silence)
      emulated by the client: each utterance it cuts is sent with an end of utterance, and the
      server transcribes it after that (the path before this change).
  (b) turn-taking: server_vad with Silero + Smart Turn in the STT stream, no speculation.
  (c) turn-taking + speculation: (b) with the reply started at each pause.
  (d) oracle: the client marks the end of the utterance at the exact end of speech.

A control group, measured on every path and reported apart (never in the main means or the
headline): sentences paused where the words before the pause are already a complete request, so no
turn detector can know that more is coming (``CONTROL_SENTENCES``).

Two STT engines (``--stt``): ``whisper``, the packaged Whisper base on this CPU (about a second per
transcription here, so every path is STT-bound), and ``baseline``: Whisper base's own transcripts,
recorded in a first, untimed pass on this CPU, then returned after 25 ms (the baseline's STT cost
on its RTX 4090) in the timed pass (``ReplayedWhisper``): what turn-taking does with a GPU-speed
recogniser. It is not GPU Whisper: audio the first pass never sent (a *replay miss*) is transcribed
by Whisper on this CPU in the timed pass, at CPU cost; such a run is redone (its audio now
recorded, at most ``REDOS_AFTER_MISS`` times), and the misses left are counted in the output.

Per path: mean and p95, turns split (a sentence answered as more than one turn), replies spoken
early (reply audio before the user finished), speculation starts/hits/misses and tokens wasted;
and every clip's own line (``--json`` keeps them).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import hashlib
import json
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np

if TYPE_CHECKING:
    from voxline.stt.engine import AudioInput, RecognitionOptions, Transcriber, Transcript

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
#: ``--stt baseline``'s untimed recording pass: the speed of each path's microphone. Listen
#: ("turn-taking") asks for transcripts at moments that depend on timing, so it runs in real time;
#: the energy-600 and oracle paths only send utterances the client cut, the same at any speed.
#: "turn-taking+speculation" asks STT for the same work as "turn-taking" (STT only sees the audio).
RECORDING_SPEEDS = {"energy-600": 4.0, "turn-taking": 1.0, "oracle": 4.0}
#: A timed run with replay misses (timing made STT hear audio the recording never sent, e.g. the
#: words after a premature end of turn) is redone up to this many times, the misses now recorded.
REDOS_AFTER_MISS = 2
#: (sentence, where its pause goes: the word gap nearest this many seconds into the speech). The
#: pauses are where the sentence is unfinished by its words (checked with Whisper base's transcript
#: of the words before each pause), not where Smart Turn says so: after "ask" (1), "I would like to
#: know" (2), "drive from" (3), "remind me to" (4), "the pharmacy on Main" (5), "saying that" (6),
#: "near the" (7), "while I" (8). Sentence 6 was "... my sister saying that I will be late for
#: dinner tonight.", whose only word gaps (Piper voice, ``_word_gap``) fall after "Send a message",
#: "my sister", "will be late" and "for dinner": complete requests all; its new words have a gap
#: after "saying that". Every sentence is reported.
SENTENCES = (
    ("Please call Stella and ask her to bring these things with her from the store.", 1.4),
    ("I would like to know what the weather will be like tomorrow morning in London.", 0.88),
    ("Could you tell me how long it takes to drive from Boston to New York City?", 1.84),
    ("Set a timer for twenty minutes and remind me to take the bread out of the oven.", 2.26),
    ("What time does the pharmacy on Main Street close on Saturday evenings?", 1.52),
    ("Send a message to my sister saying that the train is late and I will miss dinner.", 1.94),
    ("Can you find a good Italian restaurant near the train station for four people?", 2.08),
    ("Play some relaxing music in the living room while I cook dinner.", 2.82),
)
#: The control group (pause clips only, reported apart): complete-prefix pauses, where the words
#: before the pause are a complete request (sentences 2, 6 and 8's former placements): "I would like
#: to know what the weather will be like | tomorrow ...", "Send a message to my sister | saying ...",
#: "Play some relaxing music | in the living room ...".
CONTROL_SENTENCES = (
    ("I would like to know what the weather will be like tomorrow morning in London.", 1.76),
    ("Send a message to my sister saying that I will be late for dinner tonight.", 1.88),
    ("Play some relaxing music in the living room while I cook dinner.", 1.98),
)
HUMAN_NOTE = ("Recorded human speech (voxline.testing.human_speech: moonshine-voice's readings of A Tale "
              "of Two Cities and Worstward Ho, 9.96-13.97 s each, with their natural pauses, no noise "
              "added), reported apart (not in the means or goals above). WER: the turns' transcripts "
              "joined, against the published words.")
CONTROL_NOTE = ("Control, complete-prefix pauses: the words before the pause are a complete request, "
                "so no turn detector can know more is coming (not in the means or goals above).")


@dataclasses.dataclass
class Clip:
    name: str
    pcm: bytes
    end_of_speech_s: float
    #: "main", "control" (a complete-prefix pause) or "human" (recorded speech); the last two
    #: are reported apart.
    group: str = "main"
    #: What was said (for the word error rate of the turns' transcripts).
    reference: str = ""


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
    #: (reference, the turns' transcripts joined) of each run
    heard: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def add(self, seen: Any, reference: str = "") -> None:
        """Count one paced conversation (a ``voxline.cli.realtime.RealtimeRun``)."""
        self.runs += 1
        e2fa = seen.end_of_speech_to_first_audio_ms
        if e2fa is None:
            self.no_reply += 1
        else:
            self.e2fa_ms.append(e2fa)
        self.split_turns += len([t for t in seen.turns if t.transcript]) > 1
        if reference:
            self.heard.append((reference, " ".join(t.transcript for t in seen.turns if t.transcript)))
        self.early_replies += seen.early_replies > 0
        for t in seen.turns:
            self.spec_starts += int(t.metrics.get("speculative_starts", 0) or 0)
            self.spec_hits += int(t.metrics.get("speculative_hits", 0) or 0)
            self.spec_misses += int(t.metrics.get("speculative_misses", 0) or 0)
            self.tokens_wasted += int(t.metrics.get("speculative_tokens_wasted", 0) or 0)

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
            "wer": _corpus_wer(self.heard) if self.heard else None,
        }


def _corpus_wer(pairs: list[tuple[str, str]]) -> float:
    from voxline.testing.human_speech import corpus_wer

    return corpus_wer(pairs)


def make_clips(human: bool = True) -> list[Clip]:
    from voxline.cli.realtime import last_voiced_s
    from voxline.common.audio import float_to_pcm16, resample
    from voxline.testing.speech import add_noise, english_speech, speech_with_pause

    clips = []
    rate = 16_000

    def clip(name: str, speech: np.ndarray, seed: int, group: str = "main", reference: str = "",
             noise: bool = True) -> Clip:
        audio = np.concatenate([np.zeros(int(LEAD_S * rate), np.float32), speech,
                                np.zeros(int(TRAIL_S * rate), np.float32)])
        sent = float_to_pcm16(add_noise(audio, SNR_DB, seed=seed) if noise else audio)
        return Clip(name, sent, last_voiced_s(float_to_pcm16(audio), rate), group, reference)

    for i, (text, cut) in enumerate(SENTENCES):
        samples, native = english_speech(text)
        clips.append(clip(f"s{i + 1}-whole", resample(np.asarray(samples), native, rate), i, reference=text))
        clips.append(clip(f"s{i + 1}-pause", speech_with_pause(text, PAUSE_S, rate, cut)[0], i,
                          reference=text))
    for i, (text, cut) in enumerate(CONTROL_SENTENCES):
        clips.append(clip(f"c{i + 1}-pause", speech_with_pause(text, PAUSE_S, rate, cut)[0], 100 + i,
                          "control", reference=text))
    if human:
        from voxline.testing.human_speech import utterances

        for utt in utterances():
            clips.append(clip(f"h-{utt.name}", np.asarray(utt.samples()), 0, "human", utt.reference,
                              noise=False))
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


T = TypeVar("T", bound="Transcript | None")


class ReplayedWhisper:
    """A ``Transcriber`` for ``--stt baseline``: Whisper base's own transcripts at the baseline's cost.

    Every transcript the wrapped Whisper makes is kept, keyed by the audio's bytes and the options
    that change the text; audio already heard gets its transcript back after ``BASELINE_STT_S``
    (the baseline's STT time on its GPU). A first pass *records* (Whisper on this CPU, untimed); then
    ``replay()`` starts the timed pass, in which audio never heard before (a *miss*) is still
    transcribed by Whisper, at CPU cost, and counted in ``misses``."""

    def __init__(self, inner: Transcriber) -> None:
        self._inner = inner
        self._kept: dict[tuple[object, ...], Transcript] = {}
        # Whisper calls whose caller may have gone (cancelled): they still finish and are kept
        self._running: set[asyncio.Future[Any]] = set()
        self.replaying = False
        self.misses = 0

    @property
    def max_audio_seconds(self) -> float:
        return self._inner.max_audio_seconds

    @property
    def recorded(self) -> int:
        """Transcripts kept so far."""
        return len(self._kept)

    async def warm_up(self) -> None:
        await self._inner.warm_up()

    def check_options(self, options: RecognitionOptions) -> None:
        self._inner.check_options(options)

    async def transcribe(self, audio: AudioInput, options: RecognitionOptions) -> Transcript:
        return await self._answer(audio, options, self._inner.transcribe)

    async def transcribe_if_idle(self, audio: AudioInput, options: RecognitionOptions
                                 ) -> Transcript | None:
        return await self._answer(audio, options, self._inner.transcribe_if_idle)

    async def _answer(self, audio: AudioInput, options: RecognitionOptions,
                      whisper: Callable[[AudioInput, RecognitionOptions], Awaitable[T]]) -> T | Transcript:
        key = (hashlib.sha1(audio.data).hexdigest(), audio.encoding, audio.sample_rate, audio.channels,
               options.language, options.beam_size, options.vad_filter)
        kept = self._kept.get(key)
        if kept is not None:
            await asyncio.sleep(BASELINE_STT_S)
            return dataclasses.replace(kept, processing_ms=BASELINE_STT_S * 1000.0, decode_ms=0.0)
        if self.replaying:
            self.misses += 1
        # its own task, so that a caller who cancels (a newer pause) does not lose the transcript
        work = asyncio.ensure_future(whisper(audio, options))
        self._running.add(work)
        work.add_done_callback(functools.partial(self._keep, key))
        result = await asyncio.shield(work)
        # the recogniser's cost as the stream sees it is the baseline's in both passes (the STT
        # service starts pause transcripts early only for a fast recogniser: the same requests)
        return result if result is None else dataclasses.replace(
            result, processing_ms=BASELINE_STT_S * 1000.0, decode_ms=0.0)

    def _keep(self, key: tuple[object, ...], work: asyncio.Future[Any]) -> None:
        self._running.discard(work)
        if not work.cancelled() and work.exception() is None and (result := work.result()) is not None:
            self._kept[key] = result

    async def settle(self) -> None:
        """Wait for the Whisper calls still running (their callers may have gone)."""
        await asyncio.gather(*self._running, return_exceptions=True)

    def replay(self) -> None:
        """The recording is over: count every audio not heard before from now on."""
        self.replaying, self.misses = True, 0

    async def close(self) -> None:
        for work in self._running:
            work.cancel()
        await self.settle()
        await self._inner.close()


async def _serve_stt(smoke: bool, stt: str = "whisper", encoder_window_s: float = -1.0,
                     early_transcript_max_ms: int | None = None
                     ) -> tuple[Any, Any, ReplayedWhisper | None]:
    """The STT stage: the real servicer and models (smoke: the fake, figures meaningless), its stop,
    and the ``ReplayedWhisper`` behind it for ``stt="baseline"``."""
    from voxline.testing.fake_servers import FakeStt

    if smoke:
        fake = await FakeStt().start()
        return fake, fake.stop, None
    from voxline.common.config import ServerConfig
    from voxline.common.server import ServiceSpec, start_server
    from voxline.stt.config import EngineSettings, TurnSettings
    from voxline.stt.detectors import TurnDetectors
    from voxline.stt.engine import WhisperTranscriber
    from voxline.stt.servicer import SERVICE_NAME, SpeechToTextServicer
    from voxline.v1 import stt_pb2_grpc

    whisper = WhisperTranscriber(EngineSettings(language="en", encoder_window_s=encoder_window_s))
    replayed = ReplayedWhisper(whisper) if stt == "baseline" else None
    engine: Any = replayed or whisper
    turns = TurnDetectors(TurnSettings() if early_transcript_max_ms is None
                          else TurnSettings(early_transcript_max_ms=early_transcript_max_ms))
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

    return Address(), stop, replayed


async def measure(runs: int = 1, smoke: bool = False, echo: Any = print, stt: str = "whisper",
                  encoder_window_s: float = -1.0, early_transcript_max_ms: int | None = None,
                  human: bool = True) -> dict[str, Any]:
    """Run every path over every clip ``runs`` times (paths interleaved); the figures per group and
    path, and every clip's line. ``stt="baseline"`` first records Whisper's transcripts in an untimed
    pass (``RECORDING_SPEEDS``), then replays them in the timed one. ``smoke``: the fake STT, one main
    and one control clip, paced 4x faster than real time (seconds; figures meaningless)."""
    from voxline.cli.client import Conversation
    from voxline.cli.realtime import run_paced
    from voxline.common.config import ServerConfig
    from voxline.common.server import start_server
    from voxline.orchestrator.config import OrchestratorConfig
    from voxline.orchestrator.wiring import build_spec
    from voxline.testing.fake_servers import FakeLlm, FakeTts

    clips = make_clips(human=human)
    speed = 1.0
    if smoke:
        clips, speed = [c for c in clips if c.name in ("s1-pause", "c1-pause")], 4.0
    stt_stage, stop_stt, replayed = await _serve_stt(smoke, stt, encoder_window_s, early_transcript_max_ms)
    llm = await FakeLlm(REPLY, delta_delay_s=LLM_DELTA_S, first_delay_s=LLM_FIRST_TOKEN_S).start()
    tts = await FakeTts(first_audio_s=TTS_FIRST_AUDIO_S).start()
    orchestrator = await start_server(build_spec(OrchestratorConfig(
        stt_address=stt_stage.address, llm_address=llm.address, tts_address=tts.address)),
        ServerConfig(port=0))
    await orchestrator.warm_up()
    figures = {(g, p): PathFigures(p) for g in ("main", "control", "human") for p in PATHS}
    lines: list[dict[str, Any]] = []
    kept_misses = redone = 0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
            async def converse(clip: Clip, path: str, pace: float) -> Any:
                conv = Conversation.on_channel(channel, read_timeout_s=30)
                return await run_paced(conv, config_for(path), schedule_for(path, clip),
                                       clip.end_of_speech_s, speed=pace)

            async def timed(clip: Clip, path: str) -> tuple[Any, int, int]:
                """A timed run, redone while it had replay misses: (the run, its misses, redos)."""
                for redo in range(REDOS_AFTER_MISS + 1):
                    before = replayed.misses if replayed is not None else 0
                    seen = await converse(clip, path, speed)
                    missed = replayed.misses - before if replayed is not None else 0
                    if replayed is None or not missed or redo == REDOS_AFTER_MISS:
                        break
                    await replayed.settle()
                return seen, missed, redo

            if replayed is not None:
                for clip in clips:
                    for path, pace in RECORDING_SPEEDS.items():
                        await converse(clip, path, pace)
                    echo(f"recording {clip.name}: {replayed.recorded} transcripts so far")
                await replayed.settle()
                replayed.replay()
            for run in range(runs):
                for clip in clips:
                    for path in PATHS:
                        seen, missed, redos = await timed(clip, path)
                        figures[clip.group, path].add(seen, clip.reference)
                        kept_misses, redone = kept_misses + missed, redone + redos
                        e2fa = seen.end_of_speech_to_first_audio_ms
                        spoken = [t.transcript for t in seen.turns if t.transcript]
                        lines.append({"run": run + 1, "clip": clip.name, "group": clip.group,
                                      "path": path, "e2fa_ms": e2fa, "turns": len(spoken),
                                      "early": seen.early_replies, "transcripts": spoken,
                                      "replay_misses": missed, "redone": redos})
                        echo(f"run {run + 1} {clip.name:9s} {path:24s} e2fa "
                             + (f"{e2fa:7.0f} ms" if e2fa is not None else "   none   ")
                             + f" turns {len(spoken)} early {seen.early_replies} "
                             + (f"misses {missed} redone {redos} " if missed or redos else "")
                             + " | ".join(map(repr, spoken)))
    finally:
        await orchestrator.stop(0)
        await tts.stop()
        await llm.stop()
        await stop_stt()
    out = {p: figures["main", p].summary() for p in PATHS}
    a, c = out["energy-600"]["mean_ms"], out["turn-taking+speculation"]["mean_ms"]
    d = out["oracle"]["mean_ms"]
    misses = kept_misses if replayed is not None else None
    main_clips = sum(clip.group == "main" for clip in clips)
    human_clips = sum(clip.group == "human" for clip in clips)
    from voxline.stt.config import window_for_device
    from voxline.stt.engine import resolve_device

    window_s = window_for_device(encoder_window_s, resolve_device("auto"))
    engine = "Whisper base int8 on this CPU" + (
        f", encoder window max(audio + 1 s, {window_s:g} s)" if window_s else ", full 30 s window") + (
        " (the service's default, --encoder-window-s auto)" if encoder_window_s < 0 else "") + (
        f", --early-transcript-max-ms {early_transcript_max_ms}" if early_transcript_max_ms is not None
        else "")
    if smoke:
        engine = "SMOKE: fake STT, figures meaningless"
    elif stt == "baseline":
        engine = ("Whisper base's own transcripts, recorded in a first pass on this CPU, returned after "
                  f"{BASELINE_STT_S * 1000:.0f} ms (the baseline's STT cost on its RTX 4090): what "
                  f"turn-taking does with a GPU-speed recogniser; timed pass: {redone} runs redone "
                  f"after a replay miss, {misses} replay misses in the runs kept"
                  + (" (transcribed by Whisper on this CPU, about a second each: the figures include "
                     "those waits)" if misses else ""))
    from voxline.stt.text_model import default_dir, is_model_dir

    words = ("the words' veto: word lists and the SmolLM2 text model" if is_model_dir(default_dir())
             else "the words' veto: word lists only, the text model is not built")
    return {
        "paths": out,
        "control": {p: figures["control", p].summary() for p in PATHS},
        "human": {p: figures["human", p].summary() for p in PATHS},
        "c_over_a": c / a if a else float("nan"),
        "c_minus_d_ms": c - d,
        "stt": stt,
        "replay_misses": misses,
        "redone_after_miss": redone if replayed is not None else None,
        "clips": lines,
        "setup": (f"real STT servicer ({engine}; Silero VAD, Smart Turn v3.2, {words}), real "
                  f"orchestrator, fake LLM (first token {LLM_FIRST_TOKEN_S * 1000:.0f} ms, then "
                  f"{len(REPLY) - 1} deltas {LLM_DELTA_S * 1000:.0f} ms apart) and fake TTS (first audio "
                  f"{TTS_FIRST_AUDIO_S * 1000:.0f} ms), one process; {main_clips} clips (sentences whole "
                  f"and with a {PAUSE_S * 1000:.0f} ms pause where the words are unfinished) and "
                  f"{len(clips) - main_clips - human_clips} control clips (a pause after a complete "
                  f"request), white noise at {SNR_DB:.0f} dB SNR; {human_clips} recorded human clips "
                  f"(reported apart); {runs} run(s) per clip and path, paths interleaved"),
    }


def _table(paths: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| path | mean ms | p95 ms | runs | no reply | split turns | early replies "
            "| spec. starts | hits | misses | hit rate | tokens wasted |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    with_wer = any(paths[p].get("wer") is not None for p in PATHS)
    if with_wer:
        rows = [rows[0] + " WER |", rows[1] + "---|"]
    for p in PATHS:
        s = paths[p]
        rate = f"{s['hit_rate']:.0%}" if s["hit_rate"] is not None else "-"
        wer = s.get("wer")
        tail = (f" {wer * 100:.1f}% |" if wer is not None else " - |") if with_wer else ""
        rows.append(f"| {p} | {s['mean_ms']:.0f} | {s['p95_ms']:.0f} | {s['runs']} | {s['no_reply']} "
                    f"| {s['split_turns']} | {s['early_replies']} | {s['speculative_starts']} "
                    f"| {s['speculative_hits']} | {s['speculative_misses']} | {rate} "
                    f"| {s['tokens_wasted']} |" + tail)
    return rows


def render(result: dict[str, Any]) -> list[str]:
    """The section's Markdown: the main table and its goals, then the control group's table."""
    rows = [*_table(result["paths"]), "",
            f"(c)/(a) = {result['c_over_a']:.2f} (goal <= 0.75); (c) - (d) = "
            f"{result['c_minus_d_ms']:+.0f} ms (goal <= 250 ms)."]
    if result.get("replay_misses"):
        rows.append(f"Replay misses in the timed runs kept: {result['replay_misses']} (transcribed by "
                    "Whisper on this CPU, about a second each, not in 25 ms): these figures include those "
                    "waits.")
    control = result.get("control")
    if control and any(s["runs"] for s in control.values()):
        rows += ["", CONTROL_NOTE, "", *_table(control)]
    human = result.get("human")
    if human and any(s["runs"] for s in human.values()):
        rows += ["", HUMAN_NOTE, "", *_table(human)]
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


def wer_items() -> list[tuple[str, str, str, bytes]]:
    """(set, name, reference, 16 kHz PCM16) of every utterance the WER table reads: the recorded
    human speech (``voxline.testing.human_speech``, its tuning and held-out sets) and the Piper
    clips of this benchmark (noisy as they are streamed; the paused ones with their pause)."""
    from voxline.testing.human_speech import utterances

    items = [("human (tuning)" if not u.held_out else "human (held-out)", u.name, u.reference, u.pcm16())
             for u in utterances()]
    texts = {f"s{i + 1}": text for i, (text, _) in enumerate(SENTENCES)}
    texts |= {f"c{i + 1}": text for i, (text, _) in enumerate(CONTROL_SENTENCES)}
    for clip in make_clips(human=False):
        items.append(("piper", clip.name, texts[clip.name.split("-")[0]], clip.pcm))
    return items


WER_WINDOWS: tuple[float, ...] = (0.0, 10.0)


async def measure_wer(windows: tuple[float, ...] = WER_WINDOWS, runs: int = 1) -> dict[str, Any]:
    """Word error rate and the time of one Whisper pass per encoder window, on the same utterances:
    one model per window, loaded together, each utterance passed through them in turn (so the
    machine's load falls on every window alike). Pass time: the worker's ``processing_ms``."""
    from voxline.stt.config import EngineSettings
    from voxline.stt.engine import AudioInput, RecognitionOptions, WhisperTranscriber
    from voxline.testing.human_speech import corpus_wer, normalise

    items = wer_items()
    engines = [WhisperTranscriber(EngineSettings(language="en", encoder_window_s=w)) for w in windows]
    texts: dict[float, dict[str, str]] = {w: {} for w in windows}
    pass_ms: dict[float, dict[str, list[float]]] = {w: {} for w in windows}
    try:
        for engine in engines:
            await engine.warm_up()
        for _ in range(runs):
            for _group, name, _reference, pcm in items:
                for w, engine in zip(windows, engines, strict=True):
                    result = await engine.transcribe(AudioInput(pcm, "pcm_s16le", 16_000, 1),
                                                     RecognitionOptions())
                    texts[w][name] = result.text
                    pass_ms[w].setdefault(name, []).append(result.processing_ms)
    finally:
        for engine in engines:
            await engine.close()
    groups: dict[str, Any] = {}
    for group in dict.fromkeys(g for g, *_ in items):
        members = [(name, ref, len(pcm) / 32_000) for g, name, ref, pcm in items if g == group]
        groups[group] = {
            "utterances": len(members),
            "audio_s": round(sum(seconds for *_, seconds in members), 1),
            "longest_s": round(max(seconds for *_, seconds in members), 1),
            "words": sum(len(normalise(ref)) for _, ref, _ in members),
            "windows": {str(w): {
                "wer": corpus_wer([(ref, texts[w][name]) for name, ref, _ in members]),
                "pass_ms_mean": statistics.fmean(ms for name, _, _ in members for ms in pass_ms[w][name]),
                "pass_ms_max": max(ms for name, _, _ in members for ms in pass_ms[w][name]),
            } for w in windows},
        }
    return {"windows": list(windows), "groups": groups,
            "transcripts": {str(w): texts[w] for w in windows}}


def render_wer(result: dict[str, Any]) -> list[str]:
    """The WER table: one row per set, WER and pass time per encoder window side by side."""
    windows = result["windows"]
    label = {w: ("full 30 s" if not w else f"{w:g} s") for w in windows}
    head = ["set", "utt", "audio s (longest)", "words",
            *(f"WER {label[w]}" for w in windows), *(f"pass ms {label[w]} (max)" for w in windows)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, g in result["groups"].items():
        per = [g["windows"][str(w)] for w in windows]
        rows.append("| " + " | ".join([
            group, str(g["utterances"]), f"{g['audio_s']:.1f} ({g['longest_s']:.1f})", str(g["words"]),
            *(f"{p['wer'] * 100:.1f}%" for p in per),
            *(f"{p['pass_ms_mean']:.0f} ({p['pass_ms_max']:.0f})" for p in per)]) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.turn_taking", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="runs per clip and path [default: 1]")
    parser.add_argument("--smoke", action="store_true", help="fake STT (seconds; figures meaningless)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the figures and every clip's line here")
    parser.add_argument("--stt", choices=("whisper", "baseline"), default="whisper",
                        help="whisper: Whisper base on this CPU; baseline: Whisper base's own transcripts, "
                             "recorded in a first pass on this CPU, returned after 25 ms (the baseline's "
                             "STT cost on its RTX 4090): what turn-taking does with a GPU-speed recogniser "
                             "(not GPU Whisper; VAD and Smart Turn stay real) [default: whisper]")
    from voxline.stt.config import parse_window

    parser.add_argument("--encoder-window-s", type=parse_window, default=-1.0,
                        help="the STT service's --encoder-window-s for Whisper (0: its full 30 s window; "
                             "auto: 10 s on a CPU, full on CUDA) [default: auto, the service's]")
    parser.add_argument("--early-transcript-max-ms", type=int, default=None,
                        help="the STT service's --early-transcript-max-ms [default: the service's, 600]")
    parser.add_argument("--no-human", action="store_true",
                        help="leave out the recorded human speech clips (reported apart)")
    parser.add_argument("--wer", action="store_true",
                        help="only the word error rate table: Whisper base with the full and the 10 s "
                             "encoder window on the recorded human speech and the Piper clips, and "
                             "the time of each pass, side by side")
    ns = parser.parse_args(argv)
    from voxline.common.logs import setup_logging

    setup_logging("WARNING")  # the in-process services log as they do on their own
    if ns.wer:
        wer = asyncio.run(measure_wer(runs=ns.runs))
        print("Whisper base int8 on this CPU, greedy, language en; corpus WER (lowercase, no "
              "punctuation); pass: the worker's time for one transcription")
        print("\n".join(render_wer(wer)))
        if ns.json is not None:
            ns.json.write_text(json.dumps(wer, indent=2))
        return 0
    result = asyncio.run(measure(ns.runs, ns.smoke, stt=ns.stt, encoder_window_s=ns.encoder_window_s,
                                 early_transcript_max_ms=ns.early_transcript_max_ms, human=not ns.no_human))
    print(result["setup"])
    print("\n".join(render(result)))
    if ns.json is not None:
        ns.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
