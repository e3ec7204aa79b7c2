"""Faults: a stage killed mid-turn, provider failures, an orchestrator SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import grpc

from bench.reliability import procs
from bench.reliability.converse import COMPLETED, Session
from bench.reliability.matrix import Matrix
from voxline.common.config import ServerConfig
from voxline.common.server import ServiceSpec, start_server
from voxline.llm.chat import ChatRequest, Finish, Usage
from voxline.llm.config import LlmConfig
from voxline.llm.engine import LanguageModelEngine
from voxline.llm.provider import ProviderError
from voxline.llm.servicer import SERVICE_NAME, LanguageModelServicer
from voxline.v1 import llm_pb2, llm_pb2_grpc

#: Provider faults and what the client must see: a whole reply from the fallback, or UNAVAILABLE.
PROVIDER_FAULTS = {"429": "fallback", "500": "fallback", "hang": "fallback",
                   "drop mid-stream": "unavailable", "stall mid-stream": "unavailable"}


class ScriptedProvider:
    """An OpenAI-style provider stand-in whose failure mode is set per request."""

    def __init__(self, name: str, fault: str = "") -> None:
        self.name, self.model, self.fault = name, f"{name}-fake", fault
        self.available, self.unavailable_reason = True, ""

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | Finish, None]:
        fault = self.fault
        if fault in ("429", "500"):
            raise ProviderError(f"HTTP {fault} (fake)")
        if fault == "hang":
            await asyncio.Event().wait()
        for index, token in enumerate(["Paris", " is", " the", " capital", "."]):
            if index == 2 and fault == "drop mid-stream":
                raise ProviderError("connection dropped (fake)")
            if index == 2 and fault == "stall mid-stream":
                await asyncio.Event().wait()
            yield token
        yield Finish(usage=Usage(3, 5), model=self.model)

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def provider_faults(matrix: Matrix, per_fault: int) -> None:
    """Each fault on the first provider of a two-provider chain, through the real gateway."""
    faulty, healthy = ScriptedProvider("cerebras"), ScriptedProvider("groq")
    config = LlmConfig(providers=("cerebras", "groq"), local_model="none", hedge_delay="off",
                       ttft_timeout_ms=(("*", 500.0),), stall_timeout_ms=(("*", 500.0),),
                       cache_max_words=0)
    engine = LanguageModelEngine([faulty, healthy], config)
    servicer = LanguageModelServicer(engine)
    spec = ServiceSpec(name="voxline-llm-faults", grpc_services=[SERVICE_NAME],
                       register=lambda s: llm_pb2_grpc.add_LanguageModelServicer_to_server(servicer, s),
                       warm_up=engine.warm_up)
    running = await start_server(spec, ServerConfig(port=0))
    try:
        await running.warm_up()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = llm_pb2_grpc.LanguageModelStub(channel)
            request = llm_pb2.GenerateRequest(messages=[llm_pb2.ChatMessage(role="user", content="Hi")])
            for fault, expected in PROVIDER_FAULTS.items():
                row = matrix.row("fault", f"provider {fault}")
                for _ in range(per_fault):
                    faulty.fault = fault
                    started = time.monotonic()
                    text, code = "", "OK"
                    try:
                        async for reply in stub.Generate(request, timeout=10):
                            text += reply.text_delta
                    except grpc.aio.AioRpcError as exc:
                        code = exc.code().name
                    seconds = time.monotonic() - started
                    faulty.fault = ""
                    ok = ((code, text) == ("OK", "Paris is the capital.") if expected == "fallback"
                          else code == "UNAVAILABLE" and seconds < 3.0)
                    served = [r.text_delta async for r in stub.Generate(request, timeout=10)]
                    ok = ok and "".join(served) == "Paris is the capital."
                    row.record(ok, code, f"{fault}: {code} after {seconds:.1f} s, text {text!r}")
                row.notes = f"expected {expected}"
    finally:
        await running.stop(0)


async def stage_kill(matrix: Matrix, stack: Any, log_dir: Path, kills_per_stage: int) -> None:
    """Kill each fake stage right after a turn starts (before any reply output) and restart it on its
    port at once, as a supervisor (voxline up, Kubernetes) would; the killed turn waits for the stage
    (--stage-retry-wait-s) and completes, and the same stream serves the next turn."""
    address = stack.address("orchestrator")
    async with grpc.aio.insecure_channel(address) as channel:
        for stage in ("stt", "llm", "tts"):
            row = matrix.row("fault", f"kill {stage} mid-turn, restart")
            session = Session(channel)
            try:
                for attempt in range(kills_per_stage):
                    process = stack.stack.services[stage]
                    port = process.port
                    await session.send_turn(audio_s=0.5 if stage == "stt" else 0.0)
                    process.proc.kill()

                    def restart(process: Any = process, stage: str = stage, port: int = port,
                                attempt: int = attempt) -> Any:
                        process.stop(signal.SIGKILL, 5.0)
                        return procs.fake_stage(stage, log_dir, port, f"fake-{stage}-{attempt + 1}")

                    restarted = asyncio.ensure_future(asyncio.to_thread(restart))
                    try:
                        killed = await session.read_turn(timeout_s=30)
                    finally:
                        stack.stack.services[stage] = await restarted
                    after = await session.turn(audio_s=0.5 if stage == "stt" else 0.0, timeout_s=30)
                    lost = int(killed.status != COMPLETED and not killed.first_output)
                    lost += int(after.status != COMPLETED)
                    row.turns_lost += lost
                    row.record(after.status == COMPLETED, killed.status,
                               f"killed turn {killed.status} ({killed.error[:80]}); "
                               f"next {after.status} ({after.error[:80]})")
            finally:
                session.cancel()


async def sigterm_drain(matrix: Matrix, stack: Any, log_dir: Path, grace_s: float = 8.0) -> None:
    """SIGTERM a second orchestrator mid-turn: the turn must finish, the stream end cleanly (OK)
    well before the grace period, and the process exit 0."""
    row = matrix.row("fault", "orchestrator SIGTERM mid-turn")
    args = [f"--{s}={stack.address(s)}" for s in ("stt", "llm", "tts")]
    orchestrator = await asyncio.to_thread(procs.start, "orchestrator",
                                           [*args, "--grace-seconds", str(grace_s)], log_dir,
                                           "orchestrator-drain")
    try:
        async with grpc.aio.insecure_channel(orchestrator.address) as channel:
            session = Session(channel)
            assert (await session.turn()).status == COMPLETED
            await session.send_turn()
            first = await session.call.read()  # the turn is under way
            orchestrator.signal(signal.SIGTERM)
            signalled = time.monotonic()
            rest = await session.read_turn(timeout_s=grace_s + 5)
            code = "HANG"
            try:
                async with asyncio.timeout(grace_s + 5):
                    while await session.call.read() is not grpc.aio.EOF:
                        pass
                    code = (await session.call.code()).name
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            except TimeoutError:
                session.cancel()
            ended_s = time.monotonic() - signalled
            status = await asyncio.to_thread(orchestrator.proc.wait, grace_s + 10)
            ok = (first is not grpc.aio.EOF and rest.status == COMPLETED and code == "OK"
                  and ended_s < grace_s * 0.75 and status == 0)
            row.turns_lost += int(rest.status != COMPLETED)
            row.record(ok, code, f"turn {rest.status}, stream {code} {ended_s:.1f} s after "
                                 f"SIGTERM (grace {grace_s:g} s), exit {status}")
    finally:
        if orchestrator.alive():
            await asyncio.to_thread(orchestrator.stop)
