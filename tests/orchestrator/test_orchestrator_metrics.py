"""The orchestrator's metrics after real turns: scraped from the Prometheus endpoint of this
process (set up once per process, so the test compares counts before and after)."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
from orchestrator_harness import PCM16K, converse, read_turn, settings
from prometheus_client.parser import text_string_to_metric_families

from voxline.common import metrics
from voxline.testing.fake_servers import FakeStack, tone_pcm
from voxline.v1 import voice_pb2


async def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    port = metrics.setup_metrics("voxline-tests", port=0)
    assert port is not None

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    text = await asyncio.to_thread(get)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


async def test_turns_and_stage_latencies_are_counted(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    before = await scrape()
    conv = converse(channel)
    await conv.send_config(settings(input_format=PCM16K))
    told_ttfa_s = 0.0
    for _ in range(3):  # spoken turns: every stage runs
        await conv.send_audio(tone_pcm(0.3))
        await conv.send_end_of_utterance()
        turn = await read_turn(conv)
        assert turn.metrics.status == voice_pb2.COMPLETED, turn.metrics.error
        told_ttfa_s += turn.metrics.time_to_first_audio_ms / 1000
    during = await scrape()
    assert total(during, metrics.PROMETHEUS_ACTIVE_SESSIONS) - total(
        before, metrics.PROMETHEUS_ACTIVE_SESSIONS) == 1  # this conversation, still open
    fakes.stt.fail = (grpc.StatusCode.INVALID_ARGUMENT, "unreadable audio")
    await conv.send_audio(tone_pcm(0.3))
    await conv.send_end_of_utterance()
    failed = await read_turn(conv)
    assert failed.metrics.status == voice_pb2.FAILED
    await conv.call.done_writing()
    await conv.call.code()
    after = await scrape()

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta(metrics.PROMETHEUS_TURNS, status="completed") == 3
    assert delta(metrics.PROMETHEUS_TURNS, status="failed") == 1
    assert delta("voxline_turn_time_to_first_audio_seconds_count") == 3
    assert delta("voxline_stt_duration_seconds_count") == 3  # the failed STT call reached no transcript
    assert delta("gen_ai_client_operation_time_to_first_chunk_seconds_count",
                 gen_ai_provider_name="fake") == 3
    assert delta("voxline_tts_time_to_first_audio_seconds_count") == 3
    # the time to first audio recorded is the one the client was told, in seconds
    assert abs(delta("voxline_turn_time_to_first_audio_seconds_sum") - told_ttfa_s) < 1e-3
    assert delta(metrics.PROMETHEUS_ACTIVE_SESSIONS) == 0  # the conversation ended
