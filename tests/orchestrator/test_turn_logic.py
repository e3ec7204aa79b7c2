"""The turn logic without sockets: a ConverseSession over InMemoryStages (the StageClients seam).

Ordering, the first clause, barge-in cancelling both calls, stage failures and the metrics; the
gRPC edge (protobuf mapping, channels, deadlines) keeps its own tests against fake servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from voxline.common.errors import VoxlineError
from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.domain import GenerateOptions, InputFormat, PcmFormat, Sampling, StageError
from voxline.orchestrator.events import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    AudioEvent,
    AudioFormatEvent,
    AudioRequest,
    ConfigRequest,
    EndOfUtteranceRequest,
    Event,
    MetricsEvent,
    Request,
    SessionSettings,
    TextDeltaEvent,
    TextRequest,
    TranscriptEvent,
    TurnMetrics,
)
from voxline.orchestrator.session import ConverseSession
from voxline.orchestrator.turn import TurnFailed, _one_failure
from voxline.testing.fake_servers import tone_pcm
from voxline.testing.stage_fakes import InMemoryStages

#: Safety net: a test that would hang fails after this long instead.
TIMEOUT_S = 5.0
PCM16K = InputFormat("PCM_S16LE", 16000, 1)


class Session:
    """A ConverseSession driven from the test: requests in, events out, in order."""

    def __init__(self, stages: InMemoryStages, config: OrchestratorConfig | None = None) -> None:
        self._requests: asyncio.Queue[Request | None] = asyncio.Queue()
        self._events = ConverseSession(stages, config or OrchestratorConfig()).events(self._read())

    async def _read(self) -> AsyncIterator[Request]:
        while (request := await self._requests.get()) is not None:
            yield request

    def send(self, *requests: Request) -> None:
        for request in requests:
            self._requests.put_nowait(request)

    async def event(self) -> Event:
        return await asyncio.wait_for(anext(self._events), TIMEOUT_S)

    async def until(self, kind: type) -> list[Event]:
        """Events up to and including the first of ``kind``."""
        out = [await self.event()]
        while not isinstance(out[-1], kind):
            out.append(await self.event())
        return out

    async def turn(self) -> list[Event]:
        return await self.until(MetricsEvent)

    async def close(self) -> None:
        """Half-close; the stream must end without further events."""
        self.send(None)  # type: ignore[arg-type]
        with pytest.raises(StopAsyncIteration):
            await self.event()


def kinds(events: list[Event]) -> list[str]:
    """Event kinds in order, runs of the same kind collapsed."""
    out: list[str] = []
    for event in events:
        name = type(event).__name__.removesuffix("Event")
        if not out or out[-1] != name:
            out.append(name)
    return out


def metrics(events: list[Event]) -> TurnMetrics:
    last = events[-1]
    assert isinstance(last, MetricsEvent), kinds(events)
    return last.metrics


def text_of(events: list[Event]) -> str:
    return "".join(e.delta for e in events if isinstance(e, TextDeltaEvent))


def audio_of(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, AudioEvent))


async def _wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), TIMEOUT_S)


@pytest.fixture
def stages() -> InMemoryStages:
    return InMemoryStages()


async def test_text_turn_events_come_in_order_and_metrics_come_from_the_stages(
        stages: InMemoryStages, spans: InMemorySpanExporter) -> None:
    session = Session(stages)
    session.send(ConfigRequest(SessionSettings(sampling=Sampling(temperature=0.2),
                                               llm_providers=("local",), no_cache=True)),
                 TextRequest("What time is it?"))
    events = await session.turn()

    # the LLM task writes the whole (instant) reply before TTS is scheduled: text, then audio
    assert kinds(events) == ["Transcript", "TextDelta", "AudioFormat", "Audio", "Metrics"]
    assert events[0] == TranscriptEvent(1, "What time is it?", "")
    assert sum(isinstance(e, AudioFormatEvent) for e in events) == 1
    assert text_of(events) == "Hello there. How can I help?"
    assert stages.texts == ["Hello there.", "How can I help?"]
    assert stages.stt.log.calls == 0  # typed input: no STT
    (messages, options), = stages.requests
    assert options == GenerateOptions(Sampling(temperature=0.2), ("local",), True)
    assert messages[-1].role == "user" and messages[-1].content == "What time is it?"

    m = metrics(events)
    assert m.status == COMPLETED and m.error == ""
    assert m.sentences == 2 and m.llm_provider == "fake" and not m.cache_hit
    assert m.stt_ms == 0
    assert len(m.trace_id) == 32 and int(m.trace_id, 16) != 0
    assert 0 < m.time_to_first_audio_ms <= m.total_ms
    assert 0 < m.llm_ttft_ms <= m.llm_total_ms and 0 < m.tts_first_audio_ms <= m.tts_total_ms
    expected_seconds = len("Hello there.How can I help?") * stages.seconds_per_char
    assert m.reply_audio_seconds == pytest.approx(expected_seconds, abs=0.002)
    assert len(audio_of(events)) / 32000 == pytest.approx(expected_seconds, abs=0.002)
    (root,) = [s for s in spans.get_finished_spans() if s.name == "voxline.turn"]
    assert format(root.context.trace_id, "032x") == m.trace_id
    assert root.attributes["voxline.total_ms"] == m.total_ms and root.attributes["voxline.sentences"] == 2
    await session.close()


async def test_audio_turn_sends_the_utterance_to_stt(stages: InMemoryStages) -> None:
    speech = tone_pcm(0.3)
    session = Session(stages)
    session.send(ConfigRequest(SessionSettings(input_format=PCM16K, language="fr")),
                 AudioRequest(speech[:3200]), AudioRequest(speech[3200:]), EndOfUtteranceRequest())
    events = await session.turn()
    assert events[0] == TranscriptEvent(1, stages.transcript, "fr")
    assert stages.utterances == [(speech, PCM16K, "fr")]
    m = metrics(events)
    assert m.status == COMPLETED and m.stt_ms > 0
    assert m.stt_ms <= m.time_to_first_audio_ms <= m.total_ms


async def test_a_long_first_sentence_is_spoken_from_its_first_clause(stages: InMemoryStages) -> None:
    stages.deltas = ["Water boils at one hundred degrees, ", "which is 212 ", "Fahrenheit, at sea level."]
    stages.llm.gate, stages.gate_after = asyncio.Event(), 2  # the LLM pauses inside sentence one
    session = Session(stages)
    session.send(ConfigRequest(SessionSettings()), TextRequest("When does water boil?"))

    head = await session.until(AudioEvent)
    assert stages.texts == ["Water boils at one hundred degrees,"]
    assert not stages.llm.log.finished.is_set()  # audio is out while the LLM is still writing
    stages.llm.gate.set()
    rest = await session.turn()
    assert metrics(rest).status == COMPLETED
    assert stages.texts == ["Water boils at one hundred degrees,", "which is 212 Fahrenheit, at sea level."]
    assert text_of(head + rest) == "".join(stages.deltas)


async def test_whole_sentences_only_with_first_clause_off(stages: InMemoryStages) -> None:
    stages.deltas = ["Water boils at one hundred degrees, ", "which is 212 Fahrenheit."]
    session = Session(stages, OrchestratorConfig(first_clause_chars=0))
    session.send(ConfigRequest(SessionSettings()), TextRequest("When?"))
    assert metrics(await session.turn()).sentences == 1
    assert stages.texts == ["Water boils at one hundred degrees, which is 212 Fahrenheit."]


async def test_a_first_sentence_with_no_boundary_starts_speaking_at_the_cap(stages: InMemoryStages) -> None:
    """A French question on English audio once gave "Le capital de France est le 7544444…" (256
    tokens, no space): its audio waited for the LLM's last token, 24.9 s on a CPU."""
    stages.deltas = ["Le capital de France est le ", "75", *["4"] * 150]
    stages.llm.gate, stages.gate_after = asyncio.Event(), 120  # the LLM is still writing digits
    session = Session(stages, OrchestratorConfig(repetition_stop=0))
    session.send(ConfigRequest(SessionSettings()), TextRequest("Quelle est la capitale de la France ?"))
    await session.until(AudioEvent)
    assert stages.texts == ["Le capital de France est le"]  # cut at the last space before the cap
    assert not stages.llm.log.finished.is_set()
    stages.llm.gate.set()
    assert metrics(await session.turn()).status == COMPLETED


async def test_a_reply_that_loops_is_stopped_and_the_loop_is_not_spoken(stages: InMemoryStages) -> None:
    stages.deltas = ["Le capital de France est le ", "75", *["4"] * 2000]
    session = Session(stages)
    session.send(ConfigRequest(SessionSettings()), TextRequest("Quelle est la capitale de la France ?"))
    events = await session.turn()
    assert metrics(events).status == COMPLETED
    assert stages.llm.log.cancelled.is_set() and not stages.llm.log.finished.is_set()  # the LLM was stopped
    spoken = " ".join(stages.texts)
    assert spoken.startswith("Le capital de France est le") and spoken.count("4") <= 1
    assert len(text_of(events)) < 100  # the client was sent a few dozen digits, not 2000
    session.send(TextRequest("Et en Espagne ?"))  # the history holds no loop
    await session.turn()
    (history, _), = stages.requests[1:]
    assert "4444" not in " ".join(m.content for m in history)


async def test_barge_in_cancels_both_the_llm_and_the_tts_call(stages: InMemoryStages) -> None:
    stages.deltas = ["One sentence. ", "Another one ", "that never comes."]
    stages.llm.gate = asyncio.Event()  # the LLM hangs after its first sentence...
    stages.tts.gate = asyncio.Event()  # ...and TTS before its audio: both calls are in flight
    session = Session(stages)
    session.send(ConfigRequest(SessionSettings()), TextRequest("Talk to me."))
    await session.until(TextDeltaEvent)
    await _wait(stages.tts.log.started)

    stages.llm.gate = stages.tts.gate = None  # the next calls run freely
    stages.deltas = ["Sunny."]
    session.send(TextRequest("Stop, what is the weather?"))
    interrupted = await session.turn()
    assert [e.turn for e in interrupted] == [1] * len(interrupted)
    m = metrics(interrupted)
    assert m.status == INTERRUPTED and m.sentences == 1 and m.time_to_first_audio_ms == 0
    assert stages.llm.log.cancellations == 1 and stages.tts.log.cancellations == 1

    fresh = await session.turn()
    assert fresh[0] == TranscriptEvent(2, "Stop, what is the weather?", "")
    assert metrics(fresh).status == COMPLETED and text_of(fresh) == "Sunny." and audio_of(fresh)
    # the interrupted reply stays in the history as far as it got
    messages, _ = stages.requests[-1]
    assert [(m.role, m.content) for m in messages][1:] == [
        ("user", "Talk to me."), ("assistant", "One sentence."), ("user", "Stop, what is the weather?")]
    await session.close()


async def test_new_speech_interrupts_the_reply_at_its_first_chunk(stages: InMemoryStages) -> None:
    stages.llm.gate = asyncio.Event()
    session = Session(stages)
    session.send(ConfigRequest(SessionSettings(input_format=PCM16K)), AudioRequest(tone_pcm(0.1)),
                 EndOfUtteranceRequest())
    await session.until(TextDeltaEvent)
    stages.llm.gate = None
    session.send(AudioRequest(tone_pcm(0.1)))
    assert metrics(await session.turn()).status == INTERRUPTED
    assert stages.llm.log.cancellations == 1
    session.send(EndOfUtteranceRequest())
    assert metrics(await session.turn()).status == COMPLETED


async def test_a_failing_stage_fails_the_turn_and_the_session_goes_on(stages: InMemoryStages) -> None:
    stages.llm.fail = StageError("llm", "UNAVAILABLE", "connection refused", "10.0.0.1:1")
    session = Session(stages)
    session.send(ConfigRequest(SessionSettings()), TextRequest("Are you there?"))
    failed = await session.turn()
    assert kinds(failed) == ["Transcript", "Metrics"]
    assert metrics(failed).status == FAILED
    assert metrics(failed).error == "UNAVAILABLE: llm stage unavailable: connection refused"

    stages.llm.fail = None
    session.send(TextRequest("And now?"))
    back = await session.turn()
    assert metrics(back).status == COMPLETED and back[0].turn == 2
    messages, _ = stages.requests[-1]
    assert [m.content for m in messages][1:] == ["And now?"]  # a failed turn is not history
    await session.close()


async def test_tts_failing_mid_reply_cancels_the_llm(stages: InMemoryStages) -> None:
    stages.llm.gate = asyncio.Event()  # the LLM is still writing when TTS fails
    stages.tts.fail = StageError("tts", "INVALID_ARGUMENT", "text is too long", "tts:1")
    session = Session(stages)
    session.send(ConfigRequest(SessionSettings()), TextRequest("Hi"))
    m = metrics(await session.turn())
    assert m.status == FAILED and m.error == "INVALID_ARGUMENT: tts stage failed: text is too long"
    assert stages.llm.log.cancellations == 1 and not stages.llm.log.finished.is_set()


async def test_audio_format_changing_between_sentences_fails_the_turn(stages: InMemoryStages) -> None:
    stages.llm.gate = asyncio.Event()
    session = Session(stages)
    session.send(ConfigRequest(SessionSettings()), TextRequest("Hi"))
    await session.until(AudioEvent)  # sentence 1 at 16 kHz...
    stages.format_override = PcmFormat(22050, 1)  # ...sentence 2 at another rate
    stages.llm.gate.set()
    m = metrics(await session.turn())
    assert m.status == FAILED
    assert m.error.startswith("INTERNAL: tts stage failed: sentence 1 came as PcmFormat(sample_rate_hz=22050")


async def test_empty_transcript_skips_the_llm(stages: InMemoryStages) -> None:
    stages.transcript = ""
    session = Session(stages)
    session.send(ConfigRequest(SessionSettings(input_format=PCM16K)), AudioRequest(bytes(3200)),
                 EndOfUtteranceRequest())
    events = await session.turn()
    assert kinds(events) == ["Transcript", "Metrics"] and "no speech recognised" in metrics(events).error
    assert stages.llm.log.calls == 0


async def test_wav_output_is_one_streaming_wav_per_turn(stages: InMemoryStages) -> None:
    session = Session(stages)
    session.send(ConfigRequest(SessionSettings(output_encoding="WAV")), TextRequest("Hi"))
    events = await session.turn()
    audio = audio_of(events)
    assert audio.startswith(b"RIFF") and audio.count(b"RIFF") == 1
    assert (len(audio) - 44) / 32000 == pytest.approx(metrics(events).reply_audio_seconds, abs=0.001)


async def test_unknown_voice_ends_the_session_with_the_voices_named(stages: InMemoryStages) -> None:
    from voxline.common.errors import InvalidInput

    session = Session(stages)
    session.send(ConfigRequest(SessionSettings(voice="fake:xx")))
    with pytest.raises(InvalidInput, match="available voices: fake:en, fake:fr"):
        await session.event()


def test_no_failure_is_dropped_from_the_turns_exception_group() -> None:
    llm = StageError("llm", "UNAVAILABLE", "down")
    tts = StageError("tts", "INTERNAL", "broken")
    assert _one_failure(ExceptionGroup("turn", [llm])) is llm
    both = _one_failure(ExceptionGroup("turn", [llm, ExceptionGroup("inner", [tts])]))
    assert isinstance(both, TurnFailed) and both.failures == [llm, tts]
    assert str(both) == f"{llm}; {tts}"
    bug = ExceptionGroup("turn", [llm, KeyError("x")])
    assert _one_failure(bug) is bug  # a bug keeps the whole group, for the log
    assert isinstance(both, VoxlineError)
