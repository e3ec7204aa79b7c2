"""A fake TTS stage whose cost is CPU time, for the replicas section (``bench/replicas.py``).

``python -m bench.cpu_stage --burn-ms 40 --port 0 [server options]`` serves the real TTS contract
like ``voxline.testing.fake_stage tts``, but each sentence burns ``--burn-ms`` of CPU (a busy loop
on one worker thread, as a single-worker CPU engine would) instead of waiting: adding a replica
only helps when there is a free core to run it on.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from voxline.common.config import add_server_options, server_config_from_args
from voxline.common.logs import setup_logging
from voxline.common.server import ServiceSpec, run
from voxline.testing.fake_servers import FakeTts
from voxline.testing.fake_stage import SECONDS_PER_CHAR


def burn(cpu_seconds: float) -> None:
    """Use ``cpu_seconds`` of this thread's CPU time (longer in wall time when cores are busy)."""
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


class CpuTts(FakeTts):
    """FakeTts whose sentence costs CPU: one sentence at a time per process."""

    def __init__(self, burn_s: float) -> None:
        super().__init__(seconds_per_char=SECONDS_PER_CHAR, chunks=4)
        self.burn_s = burn_s
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="burn")

    async def _synthesis_cost(self, text: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker, burn, self.burn_s)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_stage",
                                     description="A fake TTS stage whose sentences cost CPU time.")
    add_server_options(parser, "tts")
    parser.add_argument("--burn-ms", type=float, default=40.0,
                        help="CPU time per sentence, ms [default: 40]")
    return parser


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    config = server_config_from_args(ns)
    setup_logging(config.log_level, config.log_format)

    def spec() -> ServiceSpec:
        return CpuTts(ns.burn_ms / 1000.0).spec()

    return run(spec, config)


if __name__ == "__main__":
    sys.exit(main())
