"""``voxline voices``: the voices a running TTS service offers (TextToSpeech.ListVoices)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import grpc

from voxline.cli.talk import add_security_options, connection_security
from voxline.common.config import DEFAULT_PORTS, ConfigError
from voxline.v1 import tts_pb2, tts_pb2_grpc

DEFAULT_TTS_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['tts']}"


def add_voices_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=DEFAULT_TTS_ADDRESS,
                        help="TTS service host:port (default: %(default)s)")
    parser.add_argument("--language", default="",
                        help="only voices of this language, e.g. fr (default: all)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")
    add_security_options(parser, "the TTS service")


def _language_matches(voice_language: str, wanted: str) -> bool:
    # "fr" matches "fr" and "fr-FR"; "fr-CA" matches only itself.
    voice_language, wanted = voice_language.lower(), wanted.lower()
    return voice_language == wanted or voice_language.split("-")[0] == wanted


def format_voices(voices: Sequence[tts_pb2.Voice], language: str = "") -> str:
    """A table of the voices, the service's default (listed first by the service) marked."""
    rows = [(v.name + (" (default)" if i == 0 else ""), v.language or "-", v.engine,
             f"{v.sample_rate_hz} Hz" if v.sample_rate_hz else "-")
            for i, v in enumerate(voices) if not language or _language_matches(v.language, language)]
    if not rows:
        languages = sorted({v.language for v in voices if v.language})
        return f"no voice for language {language!r}; languages served: {', '.join(languages) or 'none'}"
    heading = ("voice", "language", "engine", "rate")
    widths = [max(len(str(r[i])) for r in [heading, *rows]) for i in range(len(heading))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [heading, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("use one with `voxline talk --voice NAME`, or `--language CODE` for that language's "
                 "default voice")
    return "\n".join(lines)


async def _list(address: str, credentials: grpc.ChannelCredentials | None, token: str,
                deadline_s: float) -> list[tts_pb2.Voice]:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    channel = (grpc.aio.insecure_channel(address) if credentials is None
               else grpc.aio.secure_channel(address, credentials))
    async with channel:
        reply = await tts_pb2_grpc.TextToSpeechStub(channel).ListVoices(
            tts_pb2.ListVoicesRequest(), metadata=metadata, timeout=deadline_s)
    return list(reply.voices)


def run_voices(ns: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    try:
        credentials, token = connection_security(ns)
    except ConfigError as exc:
        err.write(f"voxline voices: {exc}\n")
        return 2
    try:
        voices = asyncio.run(_list(ns.address, credentials, token, ns.timeout))
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNIMPLEMENTED:
            err.write(f"voxline voices: {ns.address} does not serve voxline.v1.TextToSpeech "
                      f"(UNIMPLEMENTED); the voices come from the TTS service (default "
                      f"{DEFAULT_TTS_ADDRESS}; `voxline up` prints its address)\n")
        elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            err.write(f"voxline voices: cannot reach the TTS service at {ns.address} "
                      f"({code.name}: {exc.details()}); is `voxline up` running?\n")
        else:
            err.write(f"voxline voices: {code.name}: {exc.details()}\n")
        return 1
    out.write(format_voices(voices, ns.language) + "\n")
    return 0
