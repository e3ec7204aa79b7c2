"""Configuration of the STT service: flags, with defaults from ``VOXLINE_STT_*`` env vars."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from voxline.common.config import (
    ConfigError,
    ServerConfig,
    add_server_options,
    option,
    server_config_from_args,
)
from voxline.stt.models import PACKAGED_MODEL, default_cache_dir
from voxline.stt.text_model import UNLIKELY

DEVICES = ("auto", "cpu", "cuda")
COMPUTE_TYPES = ("auto", "default", "int8", "int8_float16", "int8_float32", "int8_bfloat16",
                 "int16", "float16", "bfloat16", "float32")
#: Largest beam a request or the server may ask for (cost grows with it, accuracy barely).
MAX_BEAM_SIZE = 10
#: ``--encoder-window-s auto``: chosen by the device the model runs on (``window_for_device``).
AUTO_WINDOW = -1.0
#: The window ``auto`` gives on a CPU, seconds (the full 30 s on CUDA).
CPU_WINDOW_S = 10.0


def parse_window(value: str) -> float:
    """``--encoder-window-s``: "auto" or seconds."""
    if value.strip().lower() == "auto":
        return AUTO_WINDOW
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or seconds, got {value!r}") from None


def window_for_device(encoder_window_s: float, device: str) -> float:
    """The encoder window a model on ``device`` ("cpu"/"cuda") uses: an explicit setting as is;
    ``auto``: CPU_WINDOW_S on a CPU (the encoder is most of a short utterance's cost there), the
    full window (0) on CUDA (it costs little there, and the full window is what Whisper learnt)."""
    if encoder_window_s != AUTO_WINDOW:
        return encoder_window_s
    return 0.0 if device == "cuda" else CPU_WINDOW_S


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """How the faster-whisper engine is loaded and what a request gets by default."""

    #: Local CTranslate2 directory, faster-whisper model name, or "base" (the packaged model).
    model: str = PACKAGED_MODEL
    #: Where the packaged model is assembled (in its "whisper-base" subdirectory).
    cache_dir: Path = dataclasses.field(default_factory=default_cache_dir)
    device: str = "auto"
    #: "auto": int8 on cpu, float16 on cuda.
    compute_type: str = "auto"
    #: 1 (greedy): the lowest latency; Whisper base is as accurate on short, clean utterances.
    beam_size: int = 1
    #: Default language ("" auto-detects); a request's language overrides it.
    language: str = ""
    #: CTranslate2 threads per worker; 0 lets CTranslate2 choose.
    cpu_threads: int = 0
    #: Transcriptions that run at once (CTranslate2 workers, and the executor's threads).
    num_workers: int = 1
    #: Requests allowed to wait for a worker before RESOURCE_EXHAUSTED.
    max_queued: int = 8
    #: Drop silence with Silero VAD by default (a request may override).
    vad_filter: bool = False
    #: Longest audio accepted, seconds (RESOURCE_EXHAUSTED beyond).
    max_audio_seconds: float = 120.0
    #: Shortest Whisper encoder window, seconds: a clip is encoded in max(its length + 1 s, this),
    #: capped at 30 s, instead of Whisper's fixed 30 s; 0: always the full 30 s; AUTO_WINDOW: by
    #: device (``window_for_device``: 10 s on a CPU, the full window on CUDA).
    encoder_window_s: float = AUTO_WINDOW

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.compute_type not in COMPUTE_TYPES:
            raise ConfigError(f"--compute-type must be one of {', '.join(COMPUTE_TYPES)}")
        if not 1 <= self.beam_size <= MAX_BEAM_SIZE:
            raise ConfigError(f"--beam-size must be 1..{MAX_BEAM_SIZE}, got {self.beam_size}")
        if self.cpu_threads < 0:
            raise ConfigError("--cpu-threads must be >= 0")
        if self.num_workers < 1 or self.max_queued < 0:
            raise ConfigError("--num-workers must be >= 1 and --max-queued >= 0")
        if self.max_audio_seconds <= 0:
            raise ConfigError("--max-audio-seconds must be positive")
        if self.encoder_window_s != AUTO_WINDOW and not 0 <= self.encoder_window_s <= 30:
            raise ConfigError("--encoder-window-s must be 'auto' or 0..30")


@dataclasses.dataclass(frozen=True)
class LiveLimits:
    """What one Listen stream may cost: every bound in seconds of audio, time or messages, never in
    chunks of whatever size (``voxline.stt.listen``). Past one: RESOURCE_EXHAUSTED, except a rate
    under ``min_rate_hz`` (INVALID_ARGUMENT at the config)."""

    #: Lowest sample rate a stream may declare, Hz: below it a byte is so many seconds that a small
    #: message is a long recording (1 kHz: 8 MiB = 70 min of audio, 1.3 GB once at 16 kHz).
    min_rate_hz: int = 8_000
    #: Shortest average chunk, ms: each message costs a hop to a worker thread whatever it holds
    #: (2-byte chunks streamed at 0.11x real time while costing other streams); past a slack of
    #: ``CHUNK_SLACK`` messages, a stream's messages may not outnumber its audio / this.
    min_chunk_ms: float = 10.0
    #: Fastest sustained audio, x real time, after ``burst_s`` seconds of audio ahead of the clock
    #: (a reconnecting client replays its turn at once).
    max_speed: float = 2.0
    burst_s: float = 120.0
    #: Recognition time a stream's optional passes (pause and interim transcripts) may take per
    #: second of its audio, and the most it may save up, s: past it, a turn is transcribed once,
    #: at its end, so no stream's work grows with the square of its turn.
    recognition_budget: float = 1.0
    recognition_burst_s: float = 10.0

    #: Messages a stream may send beyond ``min_chunk_ms``'s rule (a config, turn ends, odd chunks).
    CHUNK_SLACK = 100

    def __post_init__(self) -> None:
        if not 1_000 <= self.min_rate_hz <= 48_000:
            raise ConfigError("--listen-min-rate-hz must be 1000..48000")
        if not 0 <= self.min_chunk_ms <= 1_000:
            raise ConfigError("--listen-min-chunk-ms must be 0..1000 (0: no minimum)")
        if self.max_speed < 1 or self.burst_s < 0:
            raise ConfigError("--listen-max-speed must be >= 1 and --listen-burst-s >= 0")
        if self.recognition_budget < 0 or self.recognition_burst_s < 0:
            raise ConfigError("--listen-recognition-budget and --listen-recognition-burst-s must be >= 0")


#: --engine: local (faster-whisper here) or groq (Groq's hosted Whisper, voxline.stt.cloud).
ENGINES = ("local", "groq")
KEY_ENV = "GROQ_API_KEY"
BASE_URL_ENV = "GROQ_BASE_URL"
DEFAULT_BASE_URL = "https://api.groq.com"
DEFAULT_MODEL = "whisper-large-v3-turbo"


@dataclasses.dataclass(frozen=True)
class CloudSettings:
    """Which engine transcribes, and how Groq is reached."""

    #: "local" (faster-whisper in this process) or "groq" (hosted, the local model as fallback).
    engine: str = "local"
    model: str = DEFAULT_MODEL
    base_url: str = DEFAULT_BASE_URL
    #: From GROQ_API_KEY only.
    api_key: str = dataclasses.field(default="", repr=False)
    #: Longest wait for Groq's answer before the local model transcribes instead, seconds.
    timeout_s: float = 3.0
    #: Failures in a row that open the circuit, and how long it stays open, seconds.
    failures: int = 3
    cooldown_s: float = 30.0
    #: Requests to Groq outstanding at once; more are transcribed locally.
    max_in_flight: int = 8

    def problems(self) -> list[str]:
        """What makes these settings unusable (empty when fine), for ConfigError."""
        out = []
        if self.engine not in ENGINES:
            out.append(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "groq" and not self.api_key:
            out.append(f"--engine groq needs an API key: set {KEY_ENV} in the service's environment")
        if not self.model.strip():
            out.append("--groq-model must not be empty")
        if not self.base_url.startswith(("http://", "https://")):
            out.append("--groq-base-url must be an http(s) URL")
        if not 0 < self.timeout_s <= 120:
            out.append("--cloud-timeout-s must be in (0, 120]")
        if self.failures < 1 or self.cooldown_s < 0:
            out.append("--cloud-failures must be >= 1 and --cloud-cooldown-s >= 0")
        if self.max_in_flight < 1:
            out.append("--cloud-max-in-flight must be >= 1")
        return out


TURN_DETECTORS = ("smart_turn", "silero_vad", "energy_vad")


@dataclasses.dataclass(frozen=True)
class TurnSettings:
    """Turn-taking defaults of the Listen stream (a stream's TurnConfig may override the first four)."""

    #: smart_turn (Silero VAD + Smart Turn v3), silero_vad (Silero, fixed silence), energy_vad (RMS).
    detector: str = "smart_turn"
    #: smart_turn: silence that ends a complete / an incomplete sentence, ms.
    complete_silence_ms: int = 200
    incomplete_silence_ms: int = 1500
    #: silero_vad / energy_vad: silence that ends a turn, ms.
    silence_ms: int = 600
    #: Silence after speech that counts as a pause (the judgement and the pause transcript), ms.
    pause_ms: int = 96
    #: Silence after which the pause transcript starts (and a speculative reply on it), before the
    #: pause is certain; 0: at ``pause_ms``. Speech within ``pause_ms`` makes that transcript stale.
    early_pause_ms: int = 32
    #: Slowest recogniser (moving average, ms) whose pause transcript still starts at the early
    #: pause; a slower one starts at the pause (voxline.stt.listen.RecognitionCost).
    early_transcript_max_ms: int = 600
    #: energy_vad: RMS over which a 20 ms frame is speech.
    energy_threshold: float = 0.015
    #: smart_turn: the pause transcript's words may veto a "complete" (voxline.stt.text_turn).
    text_veto: bool = True
    #: smart_turn: silence of a pause (that the speech went on after) Smart Turn still hears, ms;
    #: -1: all of it.
    pause_heard_ms: int = 64
    #: smart_turn + text_veto: the language model that reads English pause transcripts
    #: (voxline.stt.text_model): "auto" (the one ``make setup`` builds, if there), "none", or a
    #: CTranslate2 model directory.
    text_model: str = "auto"
    #: ... below this P(final stop), the words read as unfinished.
    text_unlikely: float = UNLIKELY

    def __post_init__(self) -> None:
        if self.detector not in TURN_DETECTORS:
            raise ConfigError(f"--turn-detector must be one of {', '.join(TURN_DETECTORS)}")
        for name in ("complete_silence_ms", "incomplete_silence_ms", "silence_ms", "pause_ms"):
            if not 20 <= getattr(self, name) <= 10_000:
                raise ConfigError(f"--{name.replace('_', '-')} must be 20..10000 ms")
        if not 0 <= self.early_pause_ms <= self.pause_ms:
            raise ConfigError("--early-pause-ms must be 0..--pause-ms")
        if not -1 <= self.pause_heard_ms <= 10_000:
            raise ConfigError("--pause-heard-ms must be -1..10000")
        if not 0 <= self.early_transcript_max_ms <= 60_000:
            raise ConfigError("--early-transcript-max-ms must be 0..60000")
        if not 0 <= self.text_unlikely < 1:
            raise ConfigError("--text-unlikely must be 0..1 (0: the model never vetoes)")
        if not self.text_model.strip():
            raise ConfigError("--text-model must be 'auto', 'none' or a model directory")
        if not 0 < self.energy_threshold < 1:
            raise ConfigError("--energy-threshold must be in (0, 1)")


@dataclasses.dataclass(frozen=True)
class SttConfig:
    """Everything the STT service needs to start."""

    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    engine: EngineSettings = dataclasses.field(default_factory=EngineSettings)
    #: Largest total of audio bytes one StreamingTranscribe call may send.
    max_stream_bytes: int = 32 * 1024 * 1024
    #: Seconds of new raw-PCM audio between partial transcripts; <= 0 disables partials.
    partial_interval_s: float = 1.0
    #: Turn-taking (the Listen stream).
    turns: TurnSettings = dataclasses.field(default_factory=TurnSettings)
    #: Listen: seconds of speech between interim transcripts while the user speaks; 0: only at
    #: pauses. Each is a whole Whisper pass that the end-of-turn transcript may have to wait for
    #: (a worker runs one at a time), so on a CPU it costs latency: 0 by default.
    listen_interim_interval_s: float = 0.0
    #: What one Listen stream may cost.
    live: LiveLimits = dataclasses.field(default_factory=LiveLimits)
    #: The engine (local, or Groq with the local model as fallback).
    cloud: CloudSettings = dataclasses.field(default_factory=CloudSettings)

    def __post_init__(self) -> None:
        if self.max_stream_bytes < 1024:
            raise ConfigError("--max-stream-bytes must be >= 1024")
        problems = self.cloud.problems()
        if problems:
            raise ConfigError("; ".join(problems))


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m voxline.stt``."""
    parser = argparse.ArgumentParser(
        prog="python -m voxline.stt",
        description="voxline speech-to-text service (faster-whisper): audio bytes in, text out.",
    )
    add_server_options(parser, "stt")
    model = parser.add_argument_group("model")
    option(model, "--model", env="VOXLINE_STT_MODEL", default=PACKAGED_MODEL,
           help="local CTranslate2 model directory, faster-whisper model name or hub id (needs the "
                "hub or its cache), or 'base': the multilingual Whisper base shipped in PyPI packages")
    option(model, "--cache-dir", env="VOXLINE_CACHE_DIR", default=str(default_cache_dir()),
           help="cache directory; the packaged model is assembled once into <dir>/whisper-base")
    option(model, "--device", env="VOXLINE_STT_DEVICE", default="auto", choices=DEVICES,
           help="inference device (auto: cuda when available)")
    option(model, "--compute-type", env="VOXLINE_STT_COMPUTE_TYPE", default="auto", choices=COMPUTE_TYPES,
           help="CTranslate2 compute type (auto: int8 on cpu, float16 on cuda)")
    option(model, "--cpu-threads", env="VOXLINE_STT_CPU_THREADS", default=0, type=int,
           help="CTranslate2 threads per worker (0: CTranslate2 decides)")
    option(model, "--num-workers", env="VOXLINE_STT_NUM_WORKERS", default=1, type=int,
           help="transcriptions running at once")
    option(model, "--encoder-window-s", env="VOXLINE_STT_ENCODER_WINDOW_S", default="auto",
           type=parse_window,
           help="shortest Whisper encoder window, seconds: a clip is encoded in max(its length + 1 s, "
                "this) capped at 30 s instead of Whisper's fixed 30 s (a CPU spends most of a short "
                "utterance's time there); a result that looks degenerate (repetitive, too many "
                f"words) is redone with the full window. 0: always the full 30 s; auto: "
                f"{CPU_WINDOW_S:g} on a CPU, 0 on CUDA")
    cloud = parser.add_argument_group(f"cloud engine (the API key comes from {KEY_ENV} only)")
    option(cloud, "--engine", env="VOXLINE_STT_ENGINE", default="local", choices=ENGINES,
           help="local: the Whisper model above, in this process; groq: Groq's hosted Whisper "
           f"(needs {KEY_ENV}), the local model transcribing instead when Groq fails or is late")
    option(cloud, "--groq-model", env="VOXLINE_STT_GROQ_MODEL", default=DEFAULT_MODEL,
           help="Groq's transcription model")
    # the SDK's own variable (GROQ_BASE_URL) is honoured below the flag and the VOXLINE_ variable
    option(cloud, "--groq-base-url", env="VOXLINE_STT_GROQ_BASE_URL",
           default=os.environ.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL,
           help=f"Groq API host (the SDK appends /openai/v1/...; {BASE_URL_ENV} is read too)")
    option(cloud, "--cloud-timeout-s", env="VOXLINE_STT_CLOUD_TIMEOUT_S", default=3.0, type=float,
           help="longest wait for Groq's transcript before the local model transcribes instead, s")
    option(cloud, "--cloud-failures", env="VOXLINE_STT_CLOUD_FAILURES", default=3, type=int,
           help="Groq failures in a row that open its circuit (the local model transcribes "
           "everything, without waiting on Groq, until the cool-down ends)")
    option(cloud, "--cloud-cooldown-s", env="VOXLINE_STT_CLOUD_COOLDOWN_S", default=30.0, type=float,
           help="how long an open circuit stays open before one trial request, s")
    option(cloud, "--cloud-max-in-flight", env="VOXLINE_STT_CLOUD_MAX_IN_FLIGHT", default=8, type=int,
           help="requests to Groq outstanding at once; more are transcribed locally")
    decoding = parser.add_argument_group("decoding defaults (a request may override)")
    option(decoding, "--beam-size", env="VOXLINE_STT_BEAM_SIZE", default=1, type=int,
           help="beam size (1 = greedy, lowest latency)")
    option(decoding, "--language", env="VOXLINE_STT_LANGUAGE", default="",
           help="language code such as en or fr ('' auto-detects)")
    option(decoding, "--vad-filter", env="VOXLINE_STT_VAD_FILTER", default=False, type=bool,
           help="drop silence with Silero VAD before decoding")
    option(decoding, "--partial-interval-s", env="VOXLINE_STT_PARTIAL_INTERVAL_S", default=1.0, type=float,
           help="streaming raw PCM: seconds of new audio between partial transcripts (<= 0: none)")
    limits = parser.add_argument_group("limits")
    option(limits, "--max-queued", env="VOXLINE_STT_MAX_QUEUED", default=8, type=int,
           help="requests waiting for a worker before RESOURCE_EXHAUSTED")
    option(limits, "--max-audio-seconds", env="VOXLINE_STT_MAX_AUDIO_SECONDS", default=120.0, type=float,
           help="longest audio accepted, seconds")
    option(limits, "--max-stream-bytes", env="VOXLINE_STT_MAX_STREAM_BYTES", default=32 * 1024 * 1024,
           type=int, help="most audio bytes one streaming call may send")
    live = parser.add_argument_group("limits of a Listen stream (RESOURCE_EXHAUSTED past them)")
    option(live, "--listen-min-rate-hz", env="VOXLINE_STT_LISTEN_MIN_RATE_HZ", default=8_000, type=int,
           help="lowest sample rate a Listen stream may declare (INVALID_ARGUMENT below): at a low "
           "rate a small message is hours of audio")
    option(live, "--listen-min-chunk-ms", env="VOXLINE_STT_LISTEN_MIN_CHUNK_MS", default=10.0,
           type=float, help=f"shortest average audio chunk, ms (beyond {LiveLimits.CHUNK_SLACK} "
           "messages of slack); 0: no minimum")
    option(live, "--listen-max-speed", env="VOXLINE_STT_LISTEN_MAX_SPEED", default=2.0, type=float,
           help="fastest sustained audio of one stream, x real time, once --listen-burst-s are ahead")
    option(live, "--listen-burst-s", env="VOXLINE_STT_LISTEN_BURST_S", default=120.0, type=float,
           help="seconds of audio a stream may send ahead of real time (a reconnect's replay)")
    option(live, "--listen-recognition-budget", env="VOXLINE_STT_LISTEN_RECOGNITION_BUDGET",
           default=1.0, type=float, help="recognition time one stream's pause and interim "
           "transcripts may take per second of its audio; past it (and its saved-up "
           "--listen-recognition-burst-s) a turn is transcribed once, at its end")
    option(live, "--listen-recognition-burst-s", env="VOXLINE_STT_LISTEN_RECOGNITION_BURST_S",
           default=10.0, type=float, help="recognition time a stream may save up, s")
    turns = parser.add_argument_group("turn-taking (Listen; a stream may override the first four)")
    option(turns, "--turn-detector", env="VOXLINE_STT_TURN_DETECTOR", default="smart_turn",
           choices=TURN_DETECTORS, help="how a turn ends: smart_turn (Silero VAD + Smart Turn v3 "
           "semantic end of turn), silero_vad or energy_vad (a fixed silence)")
    option(turns, "--complete-silence-ms", env="VOXLINE_STT_COMPLETE_SILENCE_MS", default=200, type=int,
           help="smart_turn: silence that ends a sentence judged complete, ms")
    option(turns, "--incomplete-silence-ms", env="VOXLINE_STT_INCOMPLETE_SILENCE_MS", default=1500,
           type=int, help="smart_turn: silence that ends a sentence judged incomplete, ms")
    option(turns, "--silence-ms", env="VOXLINE_STT_SILENCE_MS", default=600, type=int,
           help="silero_vad / energy_vad: silence that ends a turn, ms")
    option(turns, "--pause-ms", env="VOXLINE_STT_PAUSE_MS", default=96, type=int,
           help="silence after speech that makes a pause (turn judgement, pause transcript), ms")
    option(turns, "--early-pause-ms", env="VOXLINE_STT_EARLY_PAUSE_MS", default=32, type=int,
           help="silence after speech that starts the pause transcript (and a speculative reply) "
           "before the pause is certain; 0: at --pause-ms")
    option(turns, "--early-transcript-max-ms", env="VOXLINE_STT_EARLY_TRANSCRIPT_MAX_MS", default=600,
           type=int, help="the slowest recogniser (moving average of its transcriptions, ms) whose "
           "pause transcript starts at --early-pause-ms; a slower one waits for --pause-ms, so "
           "that a gap between words does not start a stale pass the real pause must wait behind")
    option(turns, "--text-veto", env="VOXLINE_STT_TEXT_VETO", default=True, type=bool,
           help="smart_turn: the pause transcript's words may veto Smart Turn's 'complete' (a "
           "sentence does not end on 'the', 'and', 'from', nor where Whisper wrote '...' or ','; "
           "English and French word lists): the turn then waits for the longer silence")
    option(turns, "--pause-heard-ms", env="VOXLINE_STT_PAUSE_HEARD_MS", default=64, type=int,
           help="smart_turn: of a pause the user went on after, the silence Smart Turn still hears "
           "when it judges the rest of the turn, ms (it doubts a sentence's end after a long "
           "pause inside it); -1: all of it")
    option(turns, "--text-model", env="VOXLINE_STT_TEXT_MODEL", default="auto",
           help="smart_turn + --text-veto: a small language model (SmolLM2-135M, CTranslate2 int8, "
           "~30 ms a pause) reads English pause transcripts the word lists pass ('What time does "
           "the pharmacy on Main' lacks its verb): 'auto' (the one `make setup` builds with "
           "`python -m voxline.stt.text_model build`, if there), 'none', or a model directory")
    option(turns, "--text-unlikely", env="VOXLINE_STT_TEXT_UNLIKELY", default=UNLIKELY, type=float,
           help="--text-model: below this probability of a final stop after the words, they read "
           "as unfinished and the turn waits for the longer silence")
    option(turns, "--listen-interim-interval-s", env="VOXLINE_STT_LISTEN_INTERIM_INTERVAL_S", default=0.0,
           type=float, help="Listen: seconds of speech between interim transcripts while the user "
           "speaks (0: at pauses only; on a CPU each one can delay the end-of-turn transcript)")
    option(turns, "--energy-threshold", env="VOXLINE_STT_ENERGY_THRESHOLD", default=0.015, type=float,
           help="energy_vad: RMS (of full scale) over which a frame is speech")
    return parser


def parse(argv: Sequence[str] | None = None) -> SttConfig:
    """Parse ``argv`` (flags > env vars > defaults); ConfigError for an unusable value."""
    ns = build_parser().parse_args(argv)
    language = ns.language.strip().lower().split("-")[0]
    engine = EngineSettings(
        model=ns.model,
        cache_dir=Path(ns.cache_dir).expanduser(),
        device=ns.device,
        compute_type=ns.compute_type,
        beam_size=ns.beam_size,
        language=language,
        cpu_threads=ns.cpu_threads,
        num_workers=ns.num_workers,
        max_queued=ns.max_queued,
        vad_filter=ns.vad_filter,
        max_audio_seconds=ns.max_audio_seconds,
        encoder_window_s=ns.encoder_window_s,
    )
    return SttConfig(
        server=server_config_from_args(ns),
        engine=engine,
        max_stream_bytes=ns.max_stream_bytes,
        partial_interval_s=ns.partial_interval_s,
        listen_interim_interval_s=ns.listen_interim_interval_s,
        cloud=CloudSettings(
            engine=ns.engine,
            model=ns.groq_model,
            base_url=ns.groq_base_url.strip(),
            api_key=os.environ.get(KEY_ENV, "").strip(),
            timeout_s=ns.cloud_timeout_s,
            failures=ns.cloud_failures,
            cooldown_s=ns.cloud_cooldown_s,
            max_in_flight=ns.cloud_max_in_flight,
        ),
        live=LiveLimits(
            min_rate_hz=ns.listen_min_rate_hz,
            min_chunk_ms=ns.listen_min_chunk_ms,
            max_speed=ns.listen_max_speed,
            burst_s=ns.listen_burst_s,
            recognition_budget=ns.listen_recognition_budget,
            recognition_burst_s=ns.listen_recognition_burst_s,
        ),
        turns=TurnSettings(
            detector=ns.turn_detector,
            complete_silence_ms=ns.complete_silence_ms,
            incomplete_silence_ms=ns.incomplete_silence_ms,
            silence_ms=ns.silence_ms,
            pause_ms=ns.pause_ms,
            early_pause_ms=ns.early_pause_ms,
            energy_threshold=ns.energy_threshold,
            text_veto=ns.text_veto,
            early_transcript_max_ms=ns.early_transcript_max_ms,
            pause_heard_ms=ns.pause_heard_ms,
            text_model=ns.text_model,
            text_unlikely=ns.text_unlikely,
        ),
    )
