"""A stand-in voxline service process for the Stack tests: the real server bootstrap (health,
reflection, SIGTERM handling, --port-file) with an instant warm-up and no model.

    python fake_service.py <stage> --host H --port N --port-file F [--stt ADDR --llm ADDR --tts ADDR]

FAKE_FAIL_STAGE=<stage> makes that stage's warm-up fail (the process exits 1 after logging why);
FAKE_FAIL_IF_EXISTS=<path> does so whenever that file exists (a stage that breaks while running).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from voxline.common.config import add_server_options, server_config_from_args
from voxline.common.logs import setup_logging
from voxline.common.server import ServiceSpec, run

log = logging.getLogger("fake")


def main() -> int:
    stage = sys.argv[1]
    parser = argparse.ArgumentParser()
    add_server_options(parser, stage)
    for backend in ("stt", "llm", "tts"):
        parser.add_argument(f"--{backend}", default="")
    ns = parser.parse_args(sys.argv[2:])
    setup_logging()
    log.info("wiring", extra={"stt": ns.stt, "llm": ns.llm, "tts": ns.tts})

    fail_flag = os.environ.get("FAKE_FAIL_IF_EXISTS", "")
    broken = os.environ.get("FAKE_FAIL_STAGE") == stage or bool(fail_flag and os.path.exists(fail_flag))

    async def warm_up() -> None:
        if broken:
            raise RuntimeError(f"{stage} model file is missing")

    return run(lambda: ServiceSpec(name=f"fake-{stage}", grpc_services=[], register=lambda s: None,
                                   warm_up=warm_up), server_config_from_args(ns))


if __name__ == "__main__":
    sys.exit(main())
