"""The Stack supervisor, with fake service processes (the real bootstrap, no models)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voxline.cli.client import Conversation, TurnResult, session_config
from voxline.cli.progress import StartupDisplay
from voxline.cli.stack import (
    STAGES,
    Progress,
    RestartPolicy,
    ServiceFailed,
    Stack,
    StackConfig,
    StartCancelled,
)
from voxline.testing.fake_stage import REPLY, stack_command

FAKE = Path(__file__).with_name("fake_service.py")


def fake_command(stage: str) -> list[str]:
    return [sys.executable, str(FAKE), stage]


def config(tmp_path: Path, **kwargs: object) -> StackConfig:
    return StackConfig(log_dir=tmp_path / "logs", ports=dict.fromkeys(STAGES, 0), command=fake_command,
                       start_timeout_s=60, **kwargs)  # type: ignore[arg-type]


def health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_starts_on_free_ports_wires_the_orchestrator_and_stops_cleanly(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []
    stack = Stack(config(tmp_path))
    stack.start(on_progress=lambda p: seen.append(dict(p.states)))
    try:
        endpoints = stack.endpoints()
        assert set(endpoints) == set(STAGES)
        assert len(set(endpoints.values())) == 4
        for address in endpoints.values():
            assert health(address) == health_pb2.HealthCheckResponse.SERVING
        orchestrator_log = (tmp_path / "logs" / "orchestrator.log").read_text()
        for backend in ("stt", "llm", "tts"):
            assert f"{backend}={endpoints[backend]}" in orchestrator_log
        assert seen[-1] == dict.fromkeys(STAGES, "serving")
        assert any("loading" in states.values() or "starting" in states.values() for states in seen)
    finally:
        codes = stack.stop()
    assert codes == dict.fromkeys(STAGES, 0)
    for address in endpoints.values():
        with pytest.raises(grpc.RpcError):
            health(address)


def test_a_service_dying_at_start_stops_the_others_and_reports_its_log(tmp_path: Path) -> None:
    stack = Stack(config(tmp_path, stage_env={"llm": {"FAKE_FAIL_STAGE": "llm"}}))
    with pytest.raises(ServiceFailed) as failed:
        stack.start()
    assert failed.value.stage == "llm"
    assert failed.value.returncode == 1
    assert any("llm model file is missing" in line for line in failed.value.tail)
    assert failed.value.log_path == tmp_path / "logs" / "llm.log"
    for service in stack.services.values():
        assert service.proc.poll() is not None, f"{service.stage} still running"


def test_a_stop_requested_while_starting_stops_everything(tmp_path: Path) -> None:
    cancel = threading.Event()
    stack = Stack(config(tmp_path))
    # Request the stop as soon as the first progress report arrives (services spawned, not ready).
    with pytest.raises(StartCancelled):
        stack.start(on_progress=lambda p: cancel.set(), cancel=cancel)
    assert stack.services
    for service in stack.services.values():
        assert service.proc.poll() is not None


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _progress(elapsed: float, **states: str) -> Progress:
    return Progress(elapsed, states, dict.fromkeys(states, 2.5))


def test_progress_display_redraws_on_a_terminal_and_logs_changes_elsewhere() -> None:
    tty = _Stream(tty=True)
    display = StartupDisplay(tty)
    display(_progress(1.0, stt="loading", llm="starting"))
    display(_progress(1.5, stt="serving", llm="loading"))
    display.done()
    assert tty.getvalue().count("\r") == 2 and tty.getvalue().endswith("\n")
    assert "[  1.5s] stt serving | llm loading  2.5s | tts waiting | orchestrator waiting" in tty.getvalue()

    log = _Stream(tty=False)
    display = StartupDisplay(log)
    for elapsed in (1.0, 2.0):  # same states: one line
        display(_progress(elapsed, stt="loading"))
    display(_progress(3.0, stt="serving"))
    assert log.getvalue().splitlines() == [
        "[  1.0s] stt loading  2.5s | llm waiting | tts waiting | orchestrator waiting",
        "[  3.0s] stt serving | llm waiting | tts waiting | orchestrator waiting",
    ]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a reaper that never comes)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_services_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    script = (
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from voxline.cli.stack import STAGES, Stack, StackConfig\n"
        f"cfg = StackConfig(log_dir=Path({str(tmp_path)!r}), ports=dict.fromkeys(STAGES, 0),\n"
        f"                  command=lambda s: [sys.executable, {str(FAKE)!r}, s])\n"
        "stack = Stack(cfg)\n"
        "stack.start()\n"
        "print(' '.join(str(p.proc.pid) for p in stack.services.values()), flush=True)\n"
        "threading.Event().wait()\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert supervisor.stdout is not None
    pids = [int(p) for p in supervisor.stdout.readline().split()]
    assert len(pids) == 4 and all(_running(pid) for pid in pids)
    supervisor.kill()
    supervisor.wait()
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the kernel's process table: there is no event to wait on
    assert not any(_running(pid) for pid in pids), "services outlived their supervisor"


def test_a_crashed_stage_is_restarted_and_the_same_stream_serves_the_next_turn(tmp_path: Path) -> None:
    """``voxline up``'s supervision: the LLM stage is SIGKILLed between two turns of one Converse
    stream; the stack starts it again on its port (a log line each step) and the next turn completes."""
    stack = Stack(StackConfig(
        log_dir=tmp_path / "logs", ports=dict.fromkeys(STAGES, 0), command=stack_command, start_timeout_s=120,
        env={"OTEL_TRACES_EXPORTER": "none"}, restart=RestartPolicy(first_delay_s=0.2)))
    stack.start()
    events: list[str] = []
    back = threading.Event()
    cancel = threading.Event()

    def on_event(line: str) -> None:
        events.append(line)
        if line.startswith("llm is back"):
            back.set()

    supervisor = threading.Thread(target=stack.wait, args=(cancel, 0.1, on_event), daemon=True)
    supervisor.start()
    killed = stack.services["llm"]
    llm_address = stack.address("llm")

    async def talk() -> tuple[TurnResult, TurnResult]:
        async with Conversation(stack.address("orchestrator"), session_config(), read_timeout_s=60) as conv:
            first = await conv.turn(text="What is the capital of France?")
            os.kill(killed.proc.pid, signal.SIGKILL)
            assert await asyncio.to_thread(back.wait, 60), f"llm not restarted: {events}"
            return first, await conv.turn(text="And of Italy?")

    try:
        first, second = asyncio.run(asyncio.wait_for(talk(), 120))
    finally:
        cancel.set()
        supervisor.join(10)
        codes = stack.stop()
    assert first.status == "COMPLETED"
    assert second.status == "COMPLETED", second.metrics
    assert second.reply_text == REPLY
    assert stack.restarts == {"llm": 1}
    assert stack.services["llm"] is not killed and stack.address("llm") == llm_address
    assert events[0].startswith("llm exited with status -9") and "restarting it in 0.2 s" in events[0]
    assert codes == dict.fromkeys(STAGES, 0)
    log = (tmp_path / "logs" / "llm.log").read_text()
    assert log.count("metrics_port=") >= 2 or log.count("SERVING") >= 2  # both runs' lines kept


def test_a_stage_that_keeps_dying_at_start_stops_the_supervision(tmp_path: Path) -> None:
    broken = tmp_path / "tts-broken"
    stack = Stack(config(tmp_path, restart=RestartPolicy(first_delay_s=0.05, max_quick_deaths=2),
                         stage_env={"tts": {"FAKE_FAIL_IF_EXISTS": str(broken)}}))
    stack.start()
    events: list[str] = []
    try:
        broken.touch()  # from now on the fake TTS fails its warm-up: every restart dies at once
        os.kill(stack.services["tts"].proc.pid, signal.SIGKILL)
        failure = stack.wait(threading.Event(), 0.05, events.append)
    finally:
        stack.stop()
    assert failure is not None and failure.stage == "tts" and failure.returncode == 1
    assert stack.restarts == {"tts": 2}
    assert [e.split(" ", 4)[:4] for e in events[:3]] == [["tts", "exited", "with", "status"]] * 3
    assert events[-1].endswith("3 times in a row within 60 s of starting: giving up")


def test_each_service_gets_its_own_metrics_port_even_with_the_variable_inherited(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`VOXLINE_METRICS_PORT=N voxline up` gave all four services port N: three died at start."""
    import argparse
    import urllib.request

    from voxline.cli.up import metrics_ports_from_args

    monkeypatch.setenv("VOXLINE_METRICS_PORT", "1")  # inherited by every child; the flag wins
    ports = metrics_ports_from_args(argparse.Namespace(metrics=True, metrics_base_port=None),
                                    environ={})
    assert ports == dict.fromkeys(STAGES, 0)
    stack = Stack(config(tmp_path, metrics_ports=ports))
    stack.start()
    try:
        urls = stack.metrics_endpoints()
        assert set(urls) == set(STAGES) and len(set(urls.values())) == 4
        for url in urls.values():
            with urllib.request.urlopen(url, timeout=10) as reply:
                assert reply.status == 200 and b"process_resident_memory_bytes" in reply.read()
    finally:
        assert stack.stop() == dict.fromkeys(STAGES, 0)


def test_the_metrics_variable_of_voxline_up_is_a_base_port() -> None:
    import argparse

    from voxline.cli.stack import StackError
    from voxline.cli.up import metrics_ports_from_args

    off = argparse.Namespace(metrics=False, metrics_base_port=None)
    assert metrics_ports_from_args(off, environ={}) is None
    assert metrics_ports_from_args(off, environ={"VOXLINE_METRICS_PORT": "9100"}) == {
        "stt": 9101, "llm": 9102, "tts": 9103, "orchestrator": 9100}
    with pytest.raises(StackError, match="VOXLINE_METRICS_PORT"):
        metrics_ports_from_args(off, environ={"VOXLINE_METRICS_PORT": "lots"})
