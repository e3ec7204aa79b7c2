"""One fake stage as a process, with fixed costs: the benchmark suite's fake stack.

``python -m voxline.testing.fake_stage stt|llm|tts --port 0 [--host H] [cost flags]`` serves the real
wire contract on the shared bootstrap (health, reflection, ``--port-file``), with the same fakes as
the tests (``voxline.testing.fake_servers``), so ``voxline.cli.stack.Stack`` starts it exactly like a
real service and the orchestrator cannot tell the difference. Costs are ``asyncio.sleep``: a fake
engine waits like a remote GPU or API would but burns no CPU, so any saturation seen with them is
the pipeline's own (orchestrator, gRPC).
"""

from __future__ import annotations

import argparse
import sys

from voxline.common.config import ServerConfig, add_server_options, server_config_from_args
from voxline.common.logs import setup_logging
from voxline.common.server import ServiceSpec, run
from voxline.testing.fake_servers import FakeLlm, FakeServer, FakeStt, FakeTts

#: What the fake LLM says: three sentences, so TTS of the first overlaps generation of the rest.
REPLY = "Paris is the capital of France. It lies on the Seine. Around two million people live there."
TRANSCRIPT = "What is the capital of France?"
#: Reply audio per character of text (about 14 characters per second of speech).
SECONDS_PER_CHAR = 0.07


def stack_command(stage: str) -> list[str]:
    """A ``StackConfig.command``: the real orchestrator over fake stages (their cost flags go in
    ``StackConfig.stage_args``)."""
    if stage == "orchestrator":
        return [sys.executable, "-m", "voxline.orchestrator"]
    return [sys.executable, "-m", "voxline.testing.fake_stage", stage]


def build_fake(stage: str, ns: argparse.Namespace) -> FakeServer:
    """The fake of ``stage`` with the costs from the flags."""
    if stage == "stt":
        return FakeStt(TRANSCRIPT, latency_s=ns.stt_ms / 1000.0)
    if stage == "llm":
        words = REPLY.split(" ")
        return FakeLlm([w if i == 0 else " " + w for i, w in enumerate(words)],
                       delta_delay_s=ns.llm_token_ms / 1000.0, first_delay_s=ns.llm_ttft_ms / 1000.0)
    return FakeTts(first_audio_s=ns.tts_ms / 1000.0, seconds_per_char=SECONDS_PER_CHAR, chunks=4)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m voxline.testing.fake_stage",
                                     description="A fake voxline stage with fixed costs.")
    parser.add_argument("stage", choices=["stt", "llm", "tts"])
    add_server_options(parser, "stt")  # the stage only picks env var names; --port is always given
    parser.add_argument("--stt-ms", type=float, default=25.0, help="STT cost per clip [default: 25]")
    parser.add_argument("--llm-ttft-ms", type=float, default=100.0, help="LLM time to first token [100]")
    parser.add_argument("--llm-token-ms", type=float, default=10.0, help="LLM time per next word [10]")
    parser.add_argument("--tts-ms", type=float, default=30.0, help="TTS cost per sentence [30]")
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    config: ServerConfig = server_config_from_args(ns)
    setup_logging(config.log_level, config.log_format)

    def spec() -> ServiceSpec:
        return build_fake(ns.stage, ns).spec()

    return run(spec, config)


if __name__ == "__main__":
    sys.exit(main())
