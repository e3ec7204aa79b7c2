"""``voxline talk``: one turn through a running orchestrator; the spoken reply goes to a WAV file."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from pathlib import Path
from typing import TextIO

import grpc

from voxline.cli.client import (
    Conversation,
    ConverseError,
    OrchestratorUnreachable,
    TurnResult,
    describe_rpc_error,
    session_config,
)
from voxline.common.config import DEFAULT_PORTS, ConfigError, read_config_file, read_token_file

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['orchestrator']}"

#: (TurnMetrics field, label) for the metrics table, in the order a turn happens.
METRIC_ROWS = (
    ("stt_ms", "STT (end of speech -> transcript)"),
    ("llm_ttft_ms", "LLM time to first token"),
    ("llm_total_ms", "LLM whole reply"),
    ("tts_first_audio_ms", "TTS time to first audio"),
    ("tts_total_ms", "TTS, all sentences"),
    ("time_to_first_audio_ms", "time to first audio"),
    ("end_of_speech_to_first_audio_ms", "end of speech -> first audio (felt)"),
    ("endpointing_ms", "endpointing (silence waited)"),
    ("total_ms", "total turn"),
)


def add_talk_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", type=Path,
                        help="audio file of the question (WAV, FLAC, OGG, MP3, AIFF; raw PCM16 with --rate)")
    parser.add_argument("-o", "--output", type=Path, default=Path("reply.wav"),
                        help="WAV file for the spoken reply (default: %(default)s)")
    parser.add_argument("--text", default=None, help="a typed question instead of an audio file")
    parser.add_argument("--address", default=DEFAULT_ADDRESS,
                        help="orchestrator host:port (default: %(default)s)")
    parser.add_argument("--rate", type=int, default=0, help="input is raw PCM16 at this sample rate, Hz")
    parser.add_argument("--channels", type=int, default=1, help="channels of raw PCM16 input (default: 1)")
    parser.add_argument("--language", default="", help="language of the question, e.g. en (default: detect)")
    parser.add_argument("--voice", default="", help="TTS voice of the reply (default: the server's)")
    parser.add_argument("--llm-providers", default="", help="comma-separated provider order for this turn")
    parser.add_argument("--system-prompt", default="", help="system prompt (default: the orchestrator's)")
    parser.add_argument("--no-cache", action="store_true", help="bypass the LLM reply cache")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole turn")
    live = parser.add_argument_group("microphone-paced (--realtime)")
    live.add_argument("--realtime", action="store_true",
                      help="stream the audio file like a microphone: 20 ms PCM chunks at real-time pace, "
                           "then silence, with server VAD (the server ends the turn); prints end of speech "
                           "to first audio as this client sees it (the reply audio is not saved)")
    live.add_argument("--trailing-silence", type=float, default=3.0,
                      help="--realtime: seconds of silence sent after the audio (default: %(default)s)")
    live.add_argument("--turn-detector", choices=("smart_turn", "silero_vad", "energy_vad"), default=None,
                      help="--realtime: how the server ends the turn (default: the server's, smart_turn)")
    live.add_argument("--no-speculation", action="store_true",
                      help="--realtime: do not start the reply before the turn has ended")
    add_security_options(parser, "an orchestrator")


def add_security_options(parser: argparse.ArgumentParser, server: str) -> None:
    """--tls, --tls-ca, --auth-token-file (read back by ``connection_security``)."""
    security = parser.add_argument_group(f"security (for {server} started with TLS / a token)")
    tls = security.add_mutually_exclusive_group()
    tls.add_argument("--tls", action="store_true", help="connect over TLS, trusting the system's CAs")
    tls.add_argument("--tls-ca", type=Path, default=None, metavar="PATH",
                     help="connect over TLS, trusting this PEM CA bundle")
    security.add_argument("--auth-token-file", type=Path, default=None, metavar="PATH",
                          help="file holding the bearer token to send "
                               "(default: the VOXLINE_AUTH_TOKEN env var, if set)")


def connection_security(ns: argparse.Namespace) -> tuple[grpc.ChannelCredentials | None, str]:
    """TLS credentials (None: plaintext) and bearer token ("" : none) from the talk flags and
    VOXLINE_AUTH_TOKEN; ConfigError when a file cannot be read."""
    credentials = None
    if ns.tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read_config_file(str(ns.tls_ca), "--tls-ca"))
    elif ns.tls:
        credentials = grpc.ssl_channel_credentials()
    if ns.auth_token_file is not None:
        token = read_token_file(str(ns.auth_token_file), "--auth-token-file")
    else:
        token = os.environ.get("VOXLINE_AUTH_TOKEN", "").strip()
    return credentials, token


#: The stages' own figures: a turn with none of them never reached a stage.
STAGE_METRICS = ("stt_ms", "llm_ttft_ms", "llm_total_ms", "tts_first_audio_ms")


def _measured(value: object) -> float | None:
    # proto3 reports a figure that was never measured as 0: that is "n/a", not "0.0 ms".
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 \
            and not math.isnan(value):
        return float(value)
    return None


def reached_a_stage(result: TurnResult) -> bool:
    """Whether any stage produced a figure (a turn refused up front has none: no table to show)."""
    return any(_measured(result.metrics.get(name)) is not None for name in STAGE_METRICS)


def format_metrics(result: TurnResult, *, typed: bool = False) -> str:
    """The turn's metrics as a small two-column table; ``typed``: the question was text, so STT
    did not run."""
    m = result.metrics
    lines = ["turn metrics", "-" * 44]
    for name, label in METRIC_ROWS:
        value = _measured(m.get(name))
        if value is not None:
            shown = f"{value:8.1f} ms"
        else:
            shown = "     n/a (typed question)" if typed and name == "stt_ms" else "     n/a"
        lines.append(f"{label:<34}{shown}")
    lines.append("-" * 44)
    lines.append(f"{'LLM provider':<34}{m.get('llm_provider') or '-'}"
                 + (" (cache hit)" if m.get("cache_hit") else ""))
    lines.append(f"{'sentences':<34}{m.get('sentences', 0)}")
    lines.append(f"{'reply audio':<34}{result.audio_seconds:.2f} s")
    lines.append(f"{'status':<34}{result.status}")
    lines.append(f"{'trace id':<34}{m.get('trace_id') or '-'}")
    if m.get("error"):
        lines.append(f"{'error':<34}{m['error']}")
    return "\n".join(lines)


def write_wav(path: Path, result: TurnResult) -> None:
    """The reply's PCM16 with a proper (sized) WAV header."""
    from voxline.common.audio import wav_header  # imports scipy (~2 s): only when writing

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_header(result.sample_rate, result.channels, len(result.pcm)) + result.pcm)


async def _talk(ns: argparse.Namespace, audio: bytes | None, out: TextIO,
                credentials: grpc.ChannelCredentials | None, token: str) -> TurnResult:
    providers = [p.strip() for p in ns.llm_providers.split(",") if p.strip()]
    config = session_config(language=ns.language, voice=ns.voice, llm_providers=providers,
                            system_prompt=ns.system_prompt, no_cache=ns.no_cache,
                            input_rate=ns.rate, input_channels=ns.channels)
    started = {"text": False}

    def on_transcript(text: str) -> None:
        out.write(f"you:       {text}\n")
        out.flush()

    def on_text(delta: str) -> None:
        if not started["text"]:
            out.write("assistant: ")
            started["text"] = True
        out.write(delta)
        out.flush()

    async with asyncio.timeout(ns.timeout), Conversation(
            ns.address, config, credentials=credentials, token=token) as conversation:
        result = await conversation.turn(audio=audio, text=ns.text,
                                         on_transcript=on_transcript, on_text=on_text)
    if started["text"]:
        out.write("\n")
    return result


def run_talk(ns: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    if (ns.input is None) == (ns.text is None):
        err.write("voxline talk: give an audio file or --text \"...\" (one of them)\n")
        return 2
    audio: bytes | None = None
    if ns.input is not None:
        try:
            audio = ns.input.read_bytes()
        except FileNotFoundError:
            err.write(f"voxline talk: no such file: {ns.input}\n")
            return 2
        except OSError as exc:
            err.write(f"voxline talk: cannot read {ns.input}: {exc.strerror}\n")
            return 2
        if not audio:
            err.write(f"voxline talk: {ns.input} is empty\n")
            return 2
    if ns.rate < 0 or ns.channels < 1:
        err.write("voxline talk: --rate must be >= 0 and --channels >= 1\n")
        return 2
    try:
        credentials, token = connection_security(ns)
    except ConfigError as exc:
        err.write(f"voxline talk: {exc}\n")
        return 2
    if ns.realtime:
        if audio is None:
            err.write("voxline talk: --realtime streams an audio file; --text has nothing to stream\n")
            return 2
        return run_realtime(ns, audio, out, err, credentials, token)
    try:
        result = asyncio.run(_talk(ns, audio, out, credentials, token))
    except OrchestratorUnreachable as exc:
        hint = ("does it serve TLS with a certificate your CA signed?" if credentials is not None
                else "if it serves TLS, add --tls or --tls-ca")
        err.write(f"voxline talk: {exc}; is `voxline up` running? ({hint})\n")
        return 1
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            err.write(f"voxline talk: {ns.address} does not serve voxline.v1.VoiceAssistant "
                      f"(UNIMPLEMENTED: {exc.details()}); is it a stage's port? talk speaks to the "
                      f"orchestrator (default {DEFAULT_ADDRESS}; `voxline up` prints its address)\n")
            return 1
        err.write(f"voxline talk: {describe_rpc_error(exc, ns.address)}\n")
        return 1
    except TimeoutError:
        err.write(f"voxline talk: no complete reply within {ns.timeout:g} s\n")
        return 1
    except ConverseError as exc:
        err.write(f"voxline talk: {exc}\n")
        return 1
    failed = result.status != "COMPLETED"
    if failed and not reached_a_stage(result):
        # Refused before any stage ran (audio that does not decode, say): the error is the answer.
        trace_id = result.metrics.get("trace_id")
        err.write(f"voxline talk: the turn {result.status.lower()}"
                  + (f": {result.metrics.get('error')}" if result.metrics.get("error") else "")
                  + (f" (trace {trace_id})" if trace_id else "") + "\n")
        return 1
    if result.pcm and result.sample_rate:
        write_wav(ns.output, result)
        out.write(f"reply audio: {ns.output} ({result.audio_seconds:.2f} s, {result.sample_rate} Hz)\n")
    else:
        out.write("reply audio: none\n")
    out.write(format_metrics(result, typed=ns.text is not None) + "\n")
    if failed:
        err.write(f"voxline talk: the turn {result.status.lower()}"
                  + (f": {result.metrics.get('error')}" if result.metrics.get("error") else "") + "\n")
        return 1
    return 0


def run_realtime(ns: argparse.Namespace, audio: bytes, out: TextIO, err: TextIO,
                 credentials: grpc.ChannelCredentials | None, token: str) -> int:
    """``voxline talk --realtime``: the file as a microphone would send it, then silence."""
    from voxline.cli.realtime import (
        SessionUnfinished,
        describe_run,
        last_voiced_s,
        microphone_schedule,
        realtime_pcm,
        run_paced,
    )
    from voxline.common.errors import VoxlineError
    from voxline.v1 import stt_pb2

    try:
        pcm = realtime_pcm(audio, ns.rate, ns.channels)
    except VoxlineError as exc:
        err.write(f"voxline talk: cannot read {ns.input}: {exc}\n")
        return 2
    end_of_speech_s = last_voiced_s(pcm, 16_000)
    pcm += bytes(2 * int(ns.trailing_silence * 16_000))
    providers = [p.strip() for p in ns.llm_providers.split(",") if p.strip()]
    config = session_config(language=ns.language, voice=ns.voice, llm_providers=providers,
                            system_prompt=ns.system_prompt, no_cache=ns.no_cache,
                            input_rate=16_000, input_channels=1)
    config.server_vad = True
    config.speculative_reply = not ns.no_speculation
    if ns.turn_detector:
        config.turn_detector = stt_pb2.TurnDetector.Value(ns.turn_detector.upper())

    async def session() -> list[str]:
        async with Conversation(ns.address, None, credentials=credentials, token=token,
                                read_timeout_s=ns.timeout) as conv:
            run = await run_paced(conv, config, microphone_schedule(pcm, 16_000), end_of_speech_s,
                                  timeout_s=ns.timeout)
        return describe_run(run)

    out.write(f"streaming {len(pcm) / 32_000:.1f} s at real-time pace (speech ends at "
              f"{end_of_speech_s:.2f} s)...\n")
    out.flush()
    try:
        lines = asyncio.run(session())
    except OrchestratorUnreachable as exc:
        err.write(f"voxline talk: {exc}; is `voxline up` running?\n")
        return 1
    except grpc.aio.AioRpcError as exc:
        err.write(f"voxline talk: {describe_rpc_error(exc, ns.address)}\n")
        return 1
    except SessionUnfinished as exc:
        out.write("\n".join(describe_run(exc.run)) + "\n")  # what had arrived
        err.write(f"voxline talk: {exc} (raise --timeout to wait longer)\n")
        return 1
    out.write("\n".join(lines) + "\n")
    return 0
