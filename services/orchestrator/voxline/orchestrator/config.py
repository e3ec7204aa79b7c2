"""Orchestrator configuration: where the stages are, deadlines, limits and defaults.

Precedence as everywhere in voxline: flag > ``VOXLINE_ORCHESTRATOR_*`` env var > built-in default.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from voxline.common.config import (
    DEFAULT_PORTS,
    ConfigError,
    ServerConfig,
    add_server_options,
    option,
    read_config_file,
    read_token_file,
    server_config_from_args,
)
from voxline.orchestrator.balancing import check_stage_address
from voxline.orchestrator.tools.settings import ToolSettings, add_tool_options, tool_settings_from_args

_ENV = "VOXLINE_ORCHESTRATOR_"

DEFAULT_SYSTEM_PROMPT = (
    "You are voxline, a helpful voice assistant. Your replies are spoken aloud: answer in one to "
    "three short sentences of plain text, without lists, markdown or emojis."
)


@dataclasses.dataclass(frozen=True)
class Deadlines:
    """Per-stage time limits, seconds."""

    #: STT: whole Transcribe call.
    stt_s: float = 15.0
    #: LLM: request to first text delta (time to first token).
    llm_ttft_s: float = 10.0
    #: LLM: request to the end of the reply.
    llm_total_s: float = 60.0
    #: TTS: one sentence's Synthesize call, to its last chunk.
    tts_s: float = 20.0
    #: Config-time calls (ListVoices) and start-up health checks.
    control_s: float = 3.0


@dataclasses.dataclass(frozen=True)
class OrchestratorConfig:
    """Everything the Converse service needs to start."""

    stt_address: str = f"127.0.0.1:{DEFAULT_PORTS['stt']}"
    llm_address: str = f"127.0.0.1:{DEFAULT_PORTS['llm']}"
    tts_address: str = f"127.0.0.1:{DEFAULT_PORTS['tts']}"
    #: PEM CA bundle: dial the stages over TLS, trusting it (empty: plaintext).
    stage_tls_ca: str = ""
    #: File holding the bearer token sent on every stage call (empty: none).
    stage_auth_token_file: str = ""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    #: Language of the user's speech when the session does not say; empty: STT auto-detects.
    language: str = ""
    deadlines: Deadlines = dataclasses.field(default_factory=Deadlines)
    #: Largest utterance (accumulated input audio) accepted, bytes; with server VAD, the most audio
    #: the turn in progress may hold for a replay (each chunk also counts its bookkeeping).
    max_turn_audio_bytes: int = 16 * 1024 * 1024
    #: Turns of history (user + assistant pairs) kept per stream and sent to the LLM.
    max_history_turns: int = 20
    #: Characters of history sent to the LLM; older turns are dropped first (keep it under the
    #: gateway's --max-input-chars, 32,000, less the system prompt and one user message).
    max_history_chars: int = 24_000
    #: Reply events waiting for a client that reads slowly, bytes (the TTS stream is paused beyond
    #: that), and how long a full buffer may go unread before the stream ends (RESOURCE_EXHAUSTED).
    max_unread_bytes: int = 1024 * 1024
    unread_timeout_s: float = 30.0
    #: At start-up, wait this long for every stage to report SERVING before turning SERVING.
    stage_wait_s: float = 30.0
    #: A stage call that failed as UNAVAILABLE before any output is retried once; the retry waits
    #: up to this long (within the stage's deadline) for a replica to be ready, so a stage being
    #: restarted (voxline up, Kubernetes) costs the turn a delay, not the turn. 0: no waiting.
    stage_retry_wait_s: float = 10.0
    #: Sentences waiting for TTS while the LLM keeps writing (backpressure beyond that).
    sentence_queue: int = 8
    #: The first piece of a reply may end at a clause (, ; :) once it has this many characters, so
    #: a long first sentence starts speaking sooner; 0: whole sentences only.
    first_clause_chars: int = 20
    #: The first piece of a reply is cut (at a space, or hard) once it has this many characters with
    #: no clause boundary, so a run-on first sentence does not hold the audio back; 0: no cap.
    first_piece_max_chars: int = 120
    #: A reply whose tail is one short unit repeated this many times ("7544444…") is stopped there
    #: (the LLM call is cancelled; what came before is spoken); 0: never.
    repetition_stop: int = 8
    #: Server VAD with a fixed-silence detector (silero_vad, energy_vad): the silence that ends a
    #: turn when the session gives none (the detectors themselves run in the STT service).
    vad_silence_ms: int = 600
    #: Tools: MCP servers, rounds, timeouts, result size, filler speech.
    tools: ToolSettings = dataclasses.field(default_factory=ToolSettings)
    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)


def build_parser() -> argparse.ArgumentParser:
    """All orchestrator flags (server options included); --help works without any service up."""
    parser = argparse.ArgumentParser(
        prog="python -m voxline.orchestrator",
        description="voxline orchestrator: the VoiceAssistant.Converse stream chaining STT, LLM and TTS.",
    )
    add_server_options(parser, "orchestrator")
    stages = parser.add_argument_group("stages")
    d = OrchestratorConfig()
    replicas = ("; replicas: dns:///name:port (every address it resolves to) or a comma list "
                "ip:port,ip:port, balanced round_robin")
    option(stages, "--stt", env=_ENV + "STT", default=d.stt_address, help="STT service address" + replicas)
    option(stages, "--llm", env=_ENV + "LLM", default=d.llm_address, help="LLM service address" + replicas)
    option(stages, "--tts", env=_ENV + "TTS", default=d.tts_address, help="TTS service address" + replicas)
    option(stages, "--stage-tls-ca", env=_ENV + "STAGE_TLS_CA", default=d.stage_tls_ca,
           help="PEM CA bundle: reach the stages over TLS, trusting this CA (empty: plaintext)")
    option(stages, "--stage-auth-token-file", env=_ENV + "STAGE_AUTH_TOKEN_FILE",
           default=d.stage_auth_token_file,
           help="file holding the bearer token to send to the stages (their --auth-token-file)")
    turn = parser.add_argument_group("turns")
    option(turn, "--system-prompt", env=_ENV + "SYSTEM_PROMPT", default=d.system_prompt,
           help="system prompt when the session gives none")
    option(turn, "--language", env=_ENV + "LANGUAGE", default=d.language,
           help="speech language when the session gives none (empty: auto-detect)")
    option(turn, "--max-turn-audio-mb", env=_ENV + "MAX_TURN_AUDIO_MB",
           default=d.max_turn_audio_bytes / (1024 * 1024), type=float,
           help="largest utterance accepted, MiB; with server VAD, the most audio the turn in "
           "progress holds for a replay into a new STT stream (also at most 120 s of the session's "
           "format)")
    option(turn, "--max-history-turns", env=_ENV + "MAX_HISTORY_TURNS", default=d.max_history_turns,
           type=int, help="previous turns sent to the LLM")
    option(turn, "--max-history-chars", env=_ENV + "MAX_HISTORY_CHARS", default=d.max_history_chars,
           type=int, help="characters of history sent to the LLM (oldest turns dropped first)")
    option(turn, "--max-unread-kb", env=_ENV + "MAX_UNREAD_KB", default=d.max_unread_bytes // 1024,
           type=int, help="reply audio buffered per stream for a client that reads slowly, KiB; "
           "beyond it TTS is paused")
    option(turn, "--unread-timeout-s", env=_ENV + "UNREAD_TIMEOUT_S", default=d.unread_timeout_s,
           type=float, help="a stream whose buffer stays full this long ends (RESOURCE_EXHAUSTED)")
    option(turn, "--stage-wait-s", env=_ENV + "STAGE_WAIT_S", default=d.stage_wait_s, type=float,
           help="at start-up, wait up to this long for the stages to be SERVING")
    option(turn, "--stage-retry-wait-s", env=_ENV + "STAGE_RETRY_WAIT_S",
           default=d.stage_retry_wait_s, type=float,
           help="a stage call that failed as UNAVAILABLE before any output is retried once, waiting "
           "up to this long (within the stage's deadline) for the stage to be back; a lost server-VAD "
           "Listen stream is reopened once STT is ready, waiting as long; 0: no wait")
    option(turn, "--sentence-queue", env=_ENV + "SENTENCE_QUEUE", default=d.sentence_queue, type=int,
           help="sentences buffered between the LLM and TTS")
    option(turn, "--first-clause-chars", env=_ENV + "FIRST_CLAUSE_CHARS", default=d.first_clause_chars,
           type=int, help="speak the reply's first clause (cut at , ; :) once it has this many "
           "characters, before its sentence ends (lower time to first audio); 0: whole sentences")
    option(turn, "--first-piece-max-chars", env=_ENV + "FIRST_PIECE_MAX_CHARS",
           default=d.first_piece_max_chars, type=int,
           help="cut the reply's first piece (at a space, or hard) once it has this many characters "
           "without a clause boundary, so its audio starts; 0: no cap")
    option(turn, "--repetition-stop", env=_ENV + "REPETITION_STOP", default=d.repetition_stop, type=int,
           help="stop a reply whose end is one short unit (up to 16 characters) repeated this many "
           "times over 32+ characters (a degenerate loop: '7544444...'); 0: never")
    dl = parser.add_argument_group("deadlines (seconds)")
    dd = Deadlines()
    option(dl, "--stt-deadline", env=_ENV + "STT_DEADLINE", default=dd.stt_s, type=float,
           help="STT: end of utterance to transcript")
    option(dl, "--llm-first-token-deadline", env=_ENV + "LLM_FIRST_TOKEN_DEADLINE",
           default=dd.llm_ttft_s, type=float, help="LLM: request to first token")
    option(dl, "--llm-deadline", env=_ENV + "LLM_DEADLINE", default=dd.llm_total_s, type=float,
           help="LLM: request to end of reply")
    option(dl, "--tts-deadline", env=_ENV + "TTS_DEADLINE", default=dd.tts_s, type=float,
           help="TTS: one sentence")
    option(dl, "--control-deadline", env=_ENV + "CONTROL_DEADLINE", default=dd.control_s, type=float,
           help="ListVoices at session start, health checks")
    vad = parser.add_argument_group("server VAD (sessions with server_vad and PCM_S16LE input)")
    option(vad, "--vad-silence-ms", env=_ENV + "VAD_SILENCE_MS", default=d.vad_silence_ms, type=int,
           help="silence that ends a turn with the silero_vad / energy_vad detectors when the session "
                "gives none (Smart Turn's silences are the STT service's flags)")
    add_tool_options(parser)
    return parser


def _check_address(flag: str, address: str) -> str:
    # host:port, dns:///name:port, or a comma list of replicas (see voxline.orchestrator.balancing)
    return check_stage_address(flag, address)


def parse(argv: Sequence[str] | None = None) -> OrchestratorConfig:
    """Parse ``argv`` (flags > env vars > defaults); ConfigError for an unusable value."""
    ns = build_parser().parse_args(argv)
    deadlines = Deadlines(
        stt_s=ns.stt_deadline, llm_ttft_s=ns.llm_first_token_deadline,
        llm_total_s=ns.llm_deadline, tts_s=ns.tts_deadline, control_s=ns.control_deadline,
    )
    for field in dataclasses.fields(deadlines):
        if getattr(deadlines, field.name) <= 0:
            raise ConfigError(f"deadline {field.name} must be > 0, got {getattr(deadlines, field.name)}")
    if ns.max_turn_audio_mb <= 0:
        raise ConfigError("--max-turn-audio-mb must be > 0")
    if ns.max_history_turns < 0:
        raise ConfigError("--max-history-turns must be >= 0")
    if ns.max_history_chars < 0 or ns.max_unread_kb < 64 or ns.unread_timeout_s <= 0 \
            or ns.stage_wait_s < 0 or ns.stage_retry_wait_s < 0:
        raise ConfigError("--max-history-chars must be >= 0, --max-unread-kb >= 64, "
                          "--unread-timeout-s > 0, --stage-wait-s >= 0 and --stage-retry-wait-s >= 0")
    if ns.sentence_queue < 1:
        raise ConfigError("--sentence-queue must be >= 1")
    if ns.first_clause_chars < 0:
        raise ConfigError("--first-clause-chars must be >= 0")
    if ns.first_piece_max_chars < 0 or 0 < ns.first_piece_max_chars < ns.first_clause_chars:
        raise ConfigError("--first-piece-max-chars must be 0 or >= --first-clause-chars")
    if ns.repetition_stop < 0 or ns.repetition_stop == 1:
        raise ConfigError("--repetition-stop must be 0 (never) or >= 2")
    if ns.vad_silence_ms <= 0:
        raise ConfigError("--vad-silence-ms must be > 0")
    if ns.stage_tls_ca:
        read_config_file(ns.stage_tls_ca, "--stage-tls-ca")
    if ns.stage_auth_token_file:
        read_token_file(ns.stage_auth_token_file, "--stage-auth-token-file")
    return OrchestratorConfig(
        stt_address=_check_address("--stt", ns.stt),
        llm_address=_check_address("--llm", ns.llm),
        tts_address=_check_address("--tts", ns.tts),
        stage_tls_ca=ns.stage_tls_ca,
        stage_auth_token_file=ns.stage_auth_token_file,
        system_prompt=ns.system_prompt,
        language=ns.language,
        deadlines=deadlines,
        max_turn_audio_bytes=int(ns.max_turn_audio_mb * 1024 * 1024),
        max_history_turns=ns.max_history_turns,
        max_history_chars=ns.max_history_chars,
        max_unread_bytes=ns.max_unread_kb * 1024,
        unread_timeout_s=ns.unread_timeout_s,
        stage_wait_s=ns.stage_wait_s,
        stage_retry_wait_s=ns.stage_retry_wait_s,
        sentence_queue=ns.sentence_queue,
        first_clause_chars=ns.first_clause_chars,
        first_piece_max_chars=ns.first_piece_max_chars,
        repetition_stop=ns.repetition_stop,
        vad_silence_ms=ns.vad_silence_ms,
        tools=tool_settings_from_args(ns),
        server=server_config_from_args(ns),
    )
