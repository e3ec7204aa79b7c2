"""Every service starts the same way: one bad-config message and exit status, one port file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voxline.common.config import BAD_CONFIG_EXIT, ServerConfig
from voxline.common.server import ServiceSpec, read_port_file, start_server

STAGES = ("stt", "llm", "tts", "orchestrator")


@pytest.mark.parametrize("stage", STAGES)
def test_a_refused_configuration_is_one_line_and_exit_2(stage: str) -> None:
    done = subprocess.run([sys.executable, "-m", f"voxline.{stage}", "--grace-seconds", "-1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == BAD_CONFIG_EXIT == 2
    assert done.stderr == f"python -m voxline.{stage}: error: --grace-seconds must be >= 0\n"
    assert done.stdout == ""


async def test_the_bound_port_is_written_to_the_port_file(tmp_path: Path) -> None:
    async def warm_up() -> None:
        return None

    port_file = tmp_path / "port"
    assert read_port_file(port_file) is None  # not written yet
    spec = ServiceSpec(name="voxline-shape-test", grpc_services=[], register=lambda server: None,
                       warm_up=warm_up)
    running = await start_server(spec, ServerConfig(port=0, port_file=str(port_file)))
    try:
        assert port_file.read_text() == f"{running.port}\n"
        assert read_port_file(port_file) == running.port
        # no partial file left behind
        assert await asyncio.to_thread(os.listdir, tmp_path) == [port_file.name]
    finally:
        await running.stop(0)


def test_a_port_file_without_a_port_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "port"
    bad.write_text("listening\n")
    with pytest.raises(ValueError):
        read_port_file(bad)
