"""Language as one switch: `--language fr` (session or orchestrator) gives a French voice and a
French system prompt unless they are set; English and explicit choices are left alone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from orchestrator_harness import converse, read_turn, settings, start_orchestrator

from voxline.orchestrator.config import DEFAULT_SYSTEM_PROMPT
from voxline.orchestrator.languages import PROMPTS, default_prompt, default_voice
from voxline.testing.fake_servers import FakeStack

VOICES = ["espeak:en", "espeak:fr-be", "espeak:fr", "vits:facebook/mms-tts-fra", "piper:joe", "espeak:de"]


def test_the_voice_for_a_language() -> None:
    assert default_voice("fr", VOICES) == "vits:facebook/mms-tts-fra"  # a natural voice first
    assert default_voice("fr-FR", [v for v in VOICES if not v.startswith("vits:")]) == "espeak:fr"
    assert default_voice("de", VOICES) == "espeak:de"
    assert default_voice("en", VOICES) is None  # the TTS service's default stays
    assert default_voice("", VOICES) is None
    assert default_voice("ja", VOICES) is None  # nothing for it: the default stays


def test_the_prompt_for_a_language() -> None:
    assert default_prompt("fr", DEFAULT_SYSTEM_PROMPT) == PROMPTS["fr"]
    assert "en français" in PROMPTS["fr"]
    assert default_prompt("ja", DEFAULT_SYSTEM_PROMPT) == DEFAULT_SYSTEM_PROMPT
    assert default_prompt("fr", "Be terse.") == "Be terse."  # the operator's own prompt stays


async def _one_turn(channel: grpc.aio.Channel, **config: str) -> None:
    conv = converse(channel)
    await conv.send_config(settings(**config))
    await conv.send_text("Bonjour !")
    turn = await read_turn(conv)
    assert turn.metrics.status == 1, turn.metrics.error  # COMPLETED
    await conv.call.done_writing()
    await conv.call.code()


def _system_prompt(fakes: FakeStack) -> str:
    (system, *_) = fakes.llm.requests[-1].messages
    assert system.role == "system"
    return system.content


async def test_session_language_picks_voice_and_prompt(channel: grpc.aio.Channel, fakes: FakeStack) -> None:
    fakes.tts.voices = VOICES
    await _one_turn(channel, language="fr")
    assert set(fakes.tts.voices_used) == {"vits:facebook/mms-tts-fra"}
    assert _system_prompt(fakes) == PROMPTS["fr"]

    fakes.tts.voices_used.clear()
    await _one_turn(channel, language="fr", voice="espeak:fr", system_prompt="Sois bref.")
    assert set(fakes.tts.voices_used) == {"espeak:fr"}  # what the session set wins
    assert _system_prompt(fakes) == "Sois bref."

    fakes.tts.voices_used.clear()
    await _one_turn(channel, language="en")
    assert set(fakes.tts.voices_used) == {""}  # the TTS service's default voice
    assert _system_prompt(fakes) == DEFAULT_SYSTEM_PROMPT


@pytest.fixture
async def french_orchestrator(fakes: FakeStack) -> AsyncIterator[grpc.aio.Channel]:
    server = await start_orchestrator(fakes.stt.address, fakes.llm.address, fakes.tts.address,
                                      language="fr")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(0)


async def test_orchestrator_language_is_the_sessions_default(french_orchestrator: grpc.aio.Channel,
                                                             fakes: FakeStack) -> None:
    fakes.tts.voices = [v for v in VOICES if not v.startswith("vits:")]
    await _one_turn(french_orchestrator)
    assert set(fakes.tts.voices_used) == {"espeak:fr"}
    assert _system_prompt(fakes) == PROMPTS["fr"]
