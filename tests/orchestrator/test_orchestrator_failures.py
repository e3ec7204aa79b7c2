"""Barge-in, client cancel, stages down and back, bad session input."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from orchestrator_harness import (
    PCM16K,
    READ_TIMEOUT_S,
    converse,
    read_turn,
    read_until,
    settings,
    start_orchestrator,
)

from voxline.common.server import RunningServer
from voxline.testing.fake_servers import FakeStack, FakeStt, FakeTts, tone_pcm
from voxline.v1 import voice_pb2


async def _wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), READ_TIMEOUT_S)


async def test_new_text_mid_reply_interrupts_it(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    fakes.llm.deltas = ["One sentence. ", "Another one ", "that never comes."]
    fakes.llm.gate = asyncio.Event()  # the LLM hangs after its first sentence...
    fakes.tts.gate = asyncio.Event()  # ...and TTS before its audio: both calls are in flight
    conv = converse(channel)
    await conv.send_config(settings())
    await conv.send_text("Talk to me.")
    await read_until(conv, "assistant_text")
    await _wait(fakes.tts.log.started)

    fakes.llm.gate = fakes.tts.gate = None  # the next calls run freely; the current ones hang on
    fakes.llm.deltas = ["Sunny."]
    await conv.send_text("Stop, what is the weather?")
    interrupted = await read_turn(conv)
    assert interrupted.number == 1
    assert interrupted.metrics.status == voice_pb2.INTERRUPTED
    await _wait(fakes.llm.log.cancelled)  # the services saw their calls cancelled
    await _wait(fakes.tts.log.cancelled)
    assert fakes.llm.log.cancellations == 1 and fakes.tts.log.cancellations == 1

    fresh = await read_turn(conv)
    assert fresh.number == 2
    assert fresh.transcript == "Stop, what is the weather?"
    assert fresh.metrics.status == voice_pb2.COMPLETED, fresh.metrics.error
    assert fresh.text == "Sunny." and fresh.audio
    # the interrupted reply stays in the history as far as it got
    roles = [(m.role, m.content) for m in fakes.llm.requests[-1].messages][1:]
    assert roles == [("user", "Talk to me."), ("assistant", "One sentence."),
                     ("user", "Stop, what is the weather?")]


async def test_new_audio_mid_reply_interrupts_it(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    fakes.llm.gate = asyncio.Event()
    conv = converse(channel)
    await conv.send_config(settings(input_format=PCM16K))
    await conv.send_audio(tone_pcm(0.2))
    await conv.send_end_of_utterance()
    await read_until(conv, "assistant_text")
    await _wait(fakes.llm.log.started)

    fakes.llm.gate = None
    await conv.send_audio(tone_pcm(0.2))  # the user speaks again: barge-in at the first chunk
    interrupted = await read_turn(conv)
    assert interrupted.metrics.status == voice_pb2.INTERRUPTED
    await _wait(fakes.llm.log.cancelled)
    await conv.send_end_of_utterance()
    fresh = await read_turn(conv)
    assert fresh.number == 2 and fresh.metrics.status == voice_pb2.COMPLETED, fresh.metrics.error


async def test_client_cancel_cancels_llm_and_tts(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    fakes.llm.gate = asyncio.Event()
    fakes.tts.gate = asyncio.Event()
    conv = converse(channel)
    await conv.send_config(settings())
    await conv.send_text("Talk to me.")
    await read_until(conv, "assistant_text")
    await _wait(fakes.tts.log.started)
    conv.call.cancel()
    await _wait(fakes.llm.log.cancelled)
    await _wait(fakes.tts.log.cancelled)


async def test_stage_down_fails_the_turn_and_the_session_survives(channel: grpc.aio.Channel,
                                                                  fakes: FakeStack) -> None:
    conv = converse(channel)
    await conv.send_config(settings())
    llm_address = fakes.llm.address
    await fakes.llm.stop()

    await conv.send_text("Are you there?")
    failed = await read_turn(conv)
    assert failed.kinds == ["transcript", "metrics"]
    assert failed.metrics.status == voice_pb2.FAILED
    assert failed.metrics.error.startswith("UNAVAILABLE: llm stage unavailable: ")
    assert llm_address not in failed.metrics.error  # the address stays in the log

    await fakes.llm.start(port=fakes.llm.port)  # back on the same port
    await conv.send_text("And now?")
    back = await read_turn(conv)
    assert back.number == 2
    assert back.metrics.status == voice_pb2.COMPLETED, back.metrics.error
    assert back.audio


@pytest.mark.parametrize("stage", ["stt", "llm", "tts"])
async def test_a_stage_restarted_while_a_turn_waits_loses_no_turn(fakes: FakeStack, stage: str) -> None:
    # The stage dies before the turn reaches it, and its supervisor brings it back while the turn
    # waits (--stage-retry-wait-s): the turn completes, only later.
    running = await start_orchestrator(fakes.stt.address, fakes.llm.address, fakes.tts.address,
                                       stage_retry_wait_s=8.0)
    server = {"stt": fakes.stt, "llm": fakes.llm, "tts": fakes.tts}[stage]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            conv = converse(channel)
            await conv.send_config(settings(input_format=PCM16K))
            await conv.send_audio(tone_pcm(0.3))
            await server.stop()

            async def restart() -> None:
                await asyncio.sleep(0.5)  # a supervisor's restart, while the turn waits
                await server.start(port=server.port)

            restarting = asyncio.create_task(restart())
            await conv.send_end_of_utterance()
            turn = await read_turn(conv)
            await restarting
            assert turn.metrics.status == voice_pb2.COMPLETED, turn.metrics.error
            assert turn.audio
    finally:
        await running.stop(0)


@pytest.mark.parametrize("stage", ["stt", "tts"])
async def test_stt_or_tts_down_names_the_stage(channel: grpc.aio.Channel, fakes: FakeStack,
                                               stage: str) -> None:
    fake = getattr(fakes, stage)
    conv = converse(channel)
    await conv.send_config(settings(input_format=PCM16K))
    await fake.stop()
    await conv.send_audio(tone_pcm(0.2))
    await conv.send_end_of_utterance()
    failed = await read_turn(conv)
    assert failed.metrics.status == voice_pb2.FAILED
    assert failed.metrics.error.startswith(f"UNAVAILABLE: {stage} stage unavailable: ")
    await fake.start(port=fake.port)
    await conv.send_audio(tone_pcm(0.2))
    await conv.send_end_of_utterance()
    assert (await read_turn(conv)).metrics.status == voice_pb2.COMPLETED


async def test_stage_errors_and_deadlines_are_reported(fakes: FakeStack) -> None:
    from voxline.orchestrator.config import Deadlines

    running = await start_orchestrator(
        fakes.stt.address, fakes.llm.address, fakes.tts.address,
        deadlines=Deadlines(stt_s=0.3, llm_ttft_s=0.3, llm_total_s=5, tts_s=5, control_s=2))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            conv = converse(channel)
            await conv.send_config(settings(input_format=PCM16K))
            fakes.llm.first_delay_s = 2.0
            await conv.send_text("Slow?")
            slow = await read_turn(conv)
            assert slow.metrics.status == voice_pb2.FAILED
            assert slow.metrics.error.startswith("DEADLINE_EXCEEDED: llm stage deadline exceeded")
            assert "no first token within 0.3 s" in slow.metrics.error
            await _wait(fakes.llm.log.cancelled)  # the late call was cancelled in the service

            fakes.llm.first_delay_s = 0
            fakes.tts.fail = (grpc.StatusCode.INVALID_ARGUMENT, "text is too long")
            await conv.send_text("Broken voice?")
            bad = await read_turn(conv)
            assert bad.metrics.error == ("INVALID_ARGUMENT: tts stage failed: "
                                         "text is too long")

            fakes.tts.fail = None
            fakes.stt.latency_s = 2.0
            await conv.send_audio(tone_pcm(0.1))
            await conv.send_end_of_utterance()
            late = await read_turn(conv)
            assert late.metrics.error.startswith("DEADLINE_EXCEEDED: stt stage deadline exceeded")
    finally:
        await running.stop(0)


async def test_audio_before_config_is_invalid(channel: grpc.aio.Channel) -> None:
    conv = converse(channel)
    await conv.send_audio(tone_pcm(0.1))
    err = await conv.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "first message must be config"


async def test_config_twice_is_invalid(channel: grpc.aio.Channel) -> None:
    conv = converse(channel)
    await conv.send_config(settings())
    await conv.send_config(settings())
    err = await conv.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config was already sent" in err.details()


async def test_unknown_voice_is_invalid_and_names_the_voices(channel: grpc.aio.Channel) -> None:
    conv = converse(channel)
    await conv.send_config(settings(voice="espeak:xx"))
    err = await conv.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "unknown voice 'espeak:xx'; available voices: fake:en, fake:fr"


async def test_voice_check_with_tts_down_is_unavailable(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    await fakes.tts.stop()
    conv = converse(channel)
    await conv.send_config(settings(voice="fake:en"))
    err = await conv.error()
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert err.details().startswith("UNAVAILABLE: tts stage unavailable: ")


async def test_bad_session_input(channel: grpc.aio.Channel) -> None:
    cases = [
        ({"server_vad": True}, "server_vad needs input_format PCM_S16LE"),
        ({"input_format": {"encoding": "PCM_S16LE"}}, "PCM_S16LE needs sample_rate_hz"),
        ({"output_format": {"encoding": "FLAC"}}, "output_format.encoding must be PCM_S16LE or WAV"),
    ]
    for fields, message in cases:
        conv = converse(channel)
        await conv.send_config(settings(**fields))
        err = await conv.error()
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert message in err.details()
    conv = converse(channel)
    await conv.send_config(settings())
    await conv.send_end_of_utterance()
    err = await conv.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "end_of_utterance without any audio" in err.details()


async def test_oversized_utterance_is_refused(fakes: FakeStack) -> None:
    running = await start_orchestrator(fakes.stt.address, fakes.llm.address, fakes.tts.address,
                                       max_turn_audio_bytes=10_000)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            conv = converse(channel)
            await conv.send_config(settings(input_format=PCM16K))
            await conv.send_audio(tone_pcm(0.5))
            err = await conv.error()
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "over 10000 bytes" in err.details()
    finally:
        await running.stop(0)


async def test_orchestrator_serves_with_every_stage_down() -> None:
    stt, tts = FakeStt(), FakeTts()
    await stt.start()
    await tts.start()
    addresses = (stt.address, "127.0.0.1:1", tts.address)
    await stt.stop()
    await tts.stop()
    running: RunningServer = await start_orchestrator(*addresses)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            conv = converse(channel)
            await conv.send_config(settings())
            await conv.send_text("Anyone?")
            turn = await read_turn(conv)
            assert "llm stage unavailable: " in turn.metrics.error and "127.0.0.1:1" not in turn.metrics.error
    finally:
        await running.stop(0)
