"""The ``voxline`` command: up, talk, demo, voices, sample, report."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from voxline.cli.demo import add_demo_options, run_demo
from voxline.cli.report import add_report_options, run_report
from voxline.cli.sample import add_sample_options, run_sample
from voxline.cli.talk import add_talk_options, run_talk
from voxline.cli.up import add_stack_options, run_up
from voxline.cli.voices import add_voices_options, run_voices

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The parser; --help for every command works without loading anything heavy."""
    parser = argparse.ArgumentParser(
        prog="voxline",
        description="voxline: a real-time voice assistant as gRPC microservices "
                    "(stt, llm, tts, orchestrator).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = commands.add_parser(
        "up", help="start the four services locally and wait for Ctrl-C",
        description="Start stt, llm, tts and the orchestrator as local processes, wait until every one "
                    "is SERVING (gRPC health), print the endpoints; Ctrl-C or SIGTERM stops them all.")
    add_stack_options(up, ports=True)
    up.set_defaults(run=run_up)

    talk = commands.add_parser(
        "talk", help="send one spoken (or typed) question to a running orchestrator",
        description="One turn through VoiceAssistant.Converse: prints the transcript, the reply text as "
                    "it streams and the turn's metrics; writes the spoken reply to a WAV file.")
    add_talk_options(talk)
    talk.set_defaults(run=run_talk)

    demo = commands.add_parser(
        "demo", help="run the offline stack, ask a few spoken questions, print the latency table",
        description="Start the stack on free ports, play turns of real English speech through it and "
                    "print per-turn STT / LLM / TTS / time to first audio / total next to the baseline.")
    add_stack_options(demo, ports=False)
    add_demo_options(demo)
    demo.set_defaults(run=run_demo)

    voices = commands.add_parser(
        "voices", help="list the voices of a running TTS service",
        description="Ask the TTS service (TextToSpeech.ListVoices) which voices it serves: name, "
                    "language, engine and sample rate; the default voice first.")
    add_voices_options(voices)
    voices.set_defaults(run=run_voices)

    sample = commands.add_parser(
        "sample", help="write a spoken question (question.wav) with a running TTS service",
        description="Synthesise a question with the TTS service's most natural English voice and write "
                    "it as a WAV file, for `voxline talk` and the README's grpcurl examples.")
    add_sample_options(sample)
    sample.set_defaults(run=run_sample)

    report = commands.add_parser(
        "report", help="latency table and waterfall picture from a span file",
        description="Read a JSON-lines span file (VOXLINE_SPAN_FILE), print the latency table of every "
                    "turn, the span tree of one turn, and optionally draw it as a PNG waterfall.")
    add_report_options(report)
    report.set_defaults(run=run_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``voxline`` console script."""
    ns = build_parser().parse_args(argv)
    command: Command = ns.run
    try:
        return command(ns)
    except BrokenPipeError:
        # `voxline talk ... | head`: the reader left; stop quietly as other Unix tools do. stdout is
        # pointed at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it


if __name__ == "__main__":
    sys.exit(main())
