"""``voxline sample``: write a spoken question (a WAV file) for the examples, made by a running TTS
service with its most natural English voice (Piper's "joe" when served), so the repository ships no
audio and the file is never stale."""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import wave
from pathlib import Path

import grpc

from voxline.cli.speech import QUESTIONS, QuestionSpeaker
from voxline.cli.voices import DEFAULT_TTS_ADDRESS


def add_sample_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", default=QUESTIONS[0],
                        help="what the question says (default: %(default)r)")
    parser.add_argument("-o", "--output", type=Path, default=Path("question.wav"),
                        help="WAV file to write (default: %(default)s)")
    parser.add_argument("--address", default=DEFAULT_TTS_ADDRESS,
                        help="TTS service host:port, as `voxline up` prints it (default: %(default)s)")


async def make_sample(address: str, text: str) -> tuple[bytes, str]:
    """The WAV bytes of ``text`` spoken, and the voice used."""
    speaker = QuestionSpeaker(address)
    voice = await speaker.choose_voice()
    return await speaker.speak(text), voice


def run_sample(ns: argparse.Namespace) -> int:
    err = sys.stderr
    if not ns.text.strip():
        err.write("voxline sample: the text is empty\n")
        return 2
    try:
        wav, voice = asyncio.run(make_sample(ns.address, ns.text))
    except grpc.aio.AioRpcError as exc:
        hint = (" (is the stack running? `voxline up` prints the TTS address)"
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) else "")
        err.write(f"voxline sample: TTS service at {ns.address}: {exc.code().name}: {exc.details()}{hint}\n")
        return 1
    except RuntimeError as exc:
        err.write(f"voxline sample: {exc}\n")
        return 1
    try:
        ns.output.write_bytes(wav)
    except OSError as exc:
        err.write(f"voxline sample: cannot write {ns.output}: {exc.strerror}\n")
        return 1
    with wave.open(io.BytesIO(wav)) as reader:
        seconds = reader.getnframes() / reader.getframerate()
    sys.stdout.write(f"{ns.output}: {ns.text!r}, {seconds:.1f} s, voice {voice}\n")
    return 0
