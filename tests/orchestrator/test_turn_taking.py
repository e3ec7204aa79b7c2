"""Server-VAD turn-taking without sockets: a ConverseSession over InMemoryStages, whose Listen runs the
STT service's own endpointing on a tone/silence detector with scripted Smart Turn answers and
transcripts (voxline.testing.fake_listen). Audio goes in as 20 ms chunks, like a microphone's.

What a user sees: a pause mid-sentence does not split the turn; the reply answers the whole
sentence; nothing of a reply started on half a sentence reaches the client, and its LLM and TTS
calls are cancelled; a barge-in happens only once the assistant is audible.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from voxline.orchestrator.config import OrchestratorConfig
from voxline.orchestrator.domain import InputFormat, StageError
from voxline.orchestrator.events import (
    COMPLETED,
    INTERRUPTED,
    AudioEvent,
    AudioRequest,
    ConfigRequest,
    Event,
    InterimTranscriptEvent,
    MetricsEvent,
    Request,
    SessionSettings,
    TextDeltaEvent,
    TranscriptEvent,
    TurnMetrics,
)
from voxline.orchestrator.session import ConverseSession
from voxline.orchestrator.turntaking import StreamClock
from voxline.testing.fake_listen import ListenScript
from voxline.testing.fake_servers import silence_pcm, tone_pcm
from voxline.testing.stage_fakes import InMemoryStages

TIMEOUT_S = 10.0
PCM16K = InputFormat("PCM_S16LE", 16000, 1)
CHUNK = 640  # 20 ms


class Session:
    """A ConverseSession driven from the test: requests in; its events collected as they come."""

    def __init__(self, stages: InMemoryStages) -> None:
        self._requests: asyncio.Queue[Request | None] = asyncio.Queue()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._consumer = asyncio.create_task(self._consume(ConverseSession(stages, OrchestratorConfig())))

    async def _read(self) -> AsyncIterator[Request]:
        while (request := await self._requests.get()) is not None:
            yield request

    async def _consume(self, session: ConverseSession) -> None:
        try:
            async for event in session.events(self._read()):
                self._events.put_nowait(event)
        finally:
            self._events.put_nowait(None)

    def configure(self, **settings: object) -> None:
        self._requests.put_nowait(ConfigRequest(SessionSettings(input_format=PCM16K, server_vad=True,
                                                                **settings)))  # type: ignore[arg-type]

    def speak(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), CHUNK):
            self._requests.put_nowait(AudioRequest(pcm[i:i + CHUNK]))

    async def until(self, kind: type) -> list[Event]:
        out: list[Event] = []
        while not out or not isinstance(out[-1], kind):
            event = await asyncio.wait_for(self._events.get(), TIMEOUT_S)
            assert event is not None, f"the stream ended before a {kind.__name__}: {out}"
            out.append(event)
        return out

    async def close(self) -> list[Event]:
        """Half-close; the events still to come, up to the end of the stream."""
        self._requests.put_nowait(None)
        await asyncio.wait_for(self._consumer, TIMEOUT_S)
        out = []
        while (event := self._events.get_nowait()) is not None:
            out.append(event)
        return out


def metrics(events: list[Event]) -> TurnMetrics:
    last = events[-1]
    assert isinstance(last, MetricsEvent)
    return last.metrics


def replies(events: list[Event]) -> str:
    return "".join(e.delta for e in events if isinstance(e, TextDeltaEvent))


async def _wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), TIMEOUT_S)


@pytest.fixture
def stages() -> InMemoryStages:
    fakes = InMemoryStages()
    fakes.deltas = ["It is sunny. ", "Take a hat."]
    return fakes


async def test_a_pause_mid_sentence_is_one_turn_and_the_speculative_reply_is_cancelled(
        stages: InMemoryStages, spans: InMemorySpanExporter) -> None:
    stages.listen_script = ListenScript(segments=["What is the weather", "in Paris today?"],
                                        complete=[0.1, 0.9])
    stages.llm.gate = asyncio.Event()  # the reply speculated on "What is the weather" hangs in
    stages.tts.gate = asyncio.Event()  # the LLM and in TTS: both calls are in flight
    session = Session(stages)
    session.configure()
    session.speak(silence_pcm(0.3) + tone_pcm(0.5) + silence_pcm(0.7))
    await _wait(stages.llm.log.started)
    await _wait(stages.tts.log.started)
    assert stages.requests[0][0][-1].content == "What is the weather"  # the speculation

    stages.llm.gate = stages.tts.gate = None  # the next calls run freely
    session.speak(tone_pcm(0.5) + silence_pcm(0.5))  # ...the user goes on after 700 ms
    events = await session.until(MetricsEvent)
    events += await session.close()

    assert stages.llm.log.cancellations == 1 and stages.tts.log.cancellations == 1
    interims = [e.text for e in events if isinstance(e, InterimTranscriptEvent)]
    assert interims == ["What is the weather", "What is the weather in Paris today?"]
    finals = [e for e in events if isinstance(e, TranscriptEvent)]
    assert finals == [TranscriptEvent(1, "What is the weather in Paris today?", "en")]
    assert {e.turn for e in events} == {1}
    assert replies(events) == "It is sunny. Take a hat."  # one reply: nothing of the cancelled one
    assert stages.requests[-1][0][-1].content == "What is the weather in Paris today?"
    m = metrics([e for e in events if isinstance(e, MetricsEvent)])
    assert m.status == COMPLETED
    assert (m.speculative_starts, m.speculative_hits, m.speculative_misses) == (2, 1, 1)
    assert m.speculative_tokens_wasted == 1  # the one delta the cancelled reply got out
    assert m.endpointing_ms >= 0 and m.end_of_speech_to_first_audio_ms >= m.time_to_first_audio_ms > 0
    (root,) = [s for s in spans.get_finished_spans()
               if s.name == "voxline.turn" and s.attributes.get("voxline.turn.status") == COMPLETED]
    assert root.attributes["voxline.speculative.hits"] == 1
    assert root.attributes["voxline.speculative.tokens_wasted"] == 1
    discarded = [s for s in spans.get_finished_spans() if s.attributes.get("voxline.speculative")]
    assert len(discarded) == 1


async def test_the_speculation_starts_on_the_pause_transcript_before_the_judgement(
        stages: InMemoryStages) -> None:
    # STT starts the pause transcript at the first silent frame: it may come before Smart Turn's
    # judgement (SpeechPaused), and the reply must not wait for that
    stages.listen_script = ListenScript(segments=["What time is it?"], complete=[0.9],
                                        transcript_before_judgement=True)
    session = Session(stages)
    session.configure()
    session.speak(silence_pcm(0.3) + tone_pcm(0.5) + silence_pcm(0.5))
    events = await session.until(MetricsEvent)
    await session.close()
    (messages, _), = stages.requests  # one LLM call: the speculation, then committed
    assert messages[-1].content == "What time is it?"
    m = metrics(events)
    assert m.status == COMPLETED
    assert (m.speculative_starts, m.speculative_hits, m.speculative_misses) == (1, 1, 0)
    assert replies(events) == "It is sunny. Take a hat."


async def test_without_speculation_the_reply_starts_at_the_end_of_the_turn(stages: InMemoryStages) -> None:
    stages.listen_script = ListenScript(segments=["What is the weather", "in Paris today?"],
                                        complete=[0.1, 0.9])
    session = Session(stages)
    session.configure(speculative_reply=False)
    session.speak(silence_pcm(0.3) + tone_pcm(0.5) + silence_pcm(0.7) + tone_pcm(0.5) + silence_pcm(0.5))
    events = await session.until(MetricsEvent)
    await session.close()
    (messages, _), = stages.requests
    assert messages[-1].content == "What is the weather in Paris today?"
    m = metrics(events)
    assert m.status == COMPLETED and m.speculative_starts == 0
    assert replies(events) == "It is sunny. Take a hat."
    assert stages.listens[0][2].detector == ""  # the STT service's default: Smart Turn


async def test_speech_after_the_turn_ended_but_before_any_audio_continues_it(stages: InMemoryStages) -> None:
    stages.listen_script = ListenScript(segments=["Call Stella.", "And ask her to bring a cake."],
                                        complete=[0.9, 0.9])
    stages.tts.gate = asyncio.Event()  # the committed reply cannot speak yet
    session = Session(stages)
    session.configure(speculative_reply=False)
    session.speak(silence_pcm(0.2) + tone_pcm(0.4) + silence_pcm(0.4))  # ends after 200 ms of silence
    await _wait(stages.tts.log.started)  # the reply to "Call Stella." is under way, not audible
    stages.tts.gate = None
    session.speak(tone_pcm(0.4) + silence_pcm(0.4))
    events = await session.until(MetricsEvent)
    await session.close()
    assert stages.tts.log.cancellations == 1
    finals = [e.text for e in events if isinstance(e, TranscriptEvent)]
    assert finals == ["Call Stella. And ask her to bring a cake."]
    assert {e.turn for e in events} == {1}
    m = metrics(events)
    assert m.status == COMPLETED and m.speculative_misses == 1
    assert replies(events) == "It is sunny. Take a hat."


async def test_barge_in_only_once_the_assistant_is_audible(stages: InMemoryStages) -> None:
    stages.listen_script = ListenScript(segments=["Tell me a story.", "Stop."])
    stages.deltas = ["Once upon a time. ", "There was a fox. ", "The end."]
    stages.llm.gate, stages.gate_after = asyncio.Event(), 1  # the reply speaks its first sentence, then hangs
    session = Session(stages)
    session.configure()
    session.speak(silence_pcm(0.2) + tone_pcm(0.4) + silence_pcm(0.3))
    head = await session.until(AudioEvent)  # the assistant is speaking...
    assert stages.replies_started == 1  # ...and STT knows: the next speech is a new turn
    stages.llm.gate = None
    session.speak(tone_pcm(0.3) + silence_pcm(0.4))  # ...and the user talks over it
    first = head + await session.until(MetricsEvent)
    second = await session.until(MetricsEvent)
    await session.close()
    assert metrics(first).status == INTERRUPTED and stages.llm.log.cancellations == 1
    assert [e.text for e in second if isinstance(e, TranscriptEvent)] == ["Stop."]
    assert {e.turn for e in second} == {2} and metrics(second).status == COMPLETED
    # the interrupted reply stays in the history
    history = [m.content for m in stages.requests[-1][0]][-3:]
    assert history == ["Tell me a story.", "Once upon a time.", "Stop."]


def test_the_clock_puts_the_end_of_speech_where_its_audio_arrived() -> None:
    clock = StreamClock(32000)  # 16 kHz mono s16le
    assert clock.when(0.1) is None
    for i in range(10):  # ten 20 ms chunks, arriving every 20 ms from t = 100 s
        clock.add(640, 100.0 + 0.02 * (i + 1))
    # 0.105 s of audio is in the sixth chunk (0.10..0.12 s), which arrived at 100.12: spoken at 100.105
    assert clock.when(0.105) == pytest.approx(100.105)
    assert clock.when(0.2) == pytest.approx(100.2)


async def test_a_failing_speech_recogniser_ends_the_stream_with_its_error(stages: InMemoryStages) -> None:
    stages.stt.fail = StageError("stt", "UNAVAILABLE", "connection refused", "127.0.0.1:1")
    session = Session(stages)
    session.configure()
    session.speak(silence_pcm(0.2))  # the Listen call fails; the next audio brings the error back
    await asyncio.wait_for(_wait(stages.stt.log.started), TIMEOUT_S)
    session.speak(silence_pcm(0.1))
    with pytest.raises(StageError) as info:
        await session.close()
    assert info.value.code_name == "UNAVAILABLE" and "stt stage" in str(info.value)


async def test_a_reply_cut_by_a_barge_in_keeps_in_the_history_only_what_was_said(
        stages: InMemoryStages) -> None:
    stages.listen_script = ListenScript(segments=["Tell me a story.", "Stop.", "Go on."])
    stages.deltas = ["Once upon a time. ", "There was a fox. ", "The end."]
    stages.llm.gate, stages.gate_after = asyncio.Event(), 1
    session = Session(stages)
    session.configure()
    session.speak(silence_pcm(0.2) + tone_pcm(0.4) + silence_pcm(0.3))
    head = await session.until(AudioEvent)  # the first sentence is audible...
    stages.tts.log.started.clear()
    stages.tts.gate = asyncio.Event()  # ...the next sentence's audio will not come...
    stages.llm.gate.set()
    await _wait(stages.llm.log.finished)  # ...though the LLM wrote the whole reply
    await _wait(stages.tts.log.started)  # (the second sentence's TTS call is under way)
    stages.llm.gate = stages.tts.gate = None  # later calls run freely
    assert stages.texts == ["Once upon a time.", "There was a fox."]
    session.speak(tone_pcm(0.3) + silence_pcm(0.4))
    cut = head + await session.until(MetricsEvent)
    assert metrics(cut).status == INTERRUPTED
    await session.until(MetricsEvent)
    session.speak(tone_pcm(0.3) + silence_pcm(0.4))
    await session.until(MetricsEvent)
    await session.close()
    history = [(m.role, m.content) for m in stages.requests[-1][0]][-5:]
    assert history == [("user", "Tell me a story."), ("assistant", "Once upon a time."),
                       ("user", "Stop."), ("assistant", "Once upon a time. There was a fox. The end."),
                       ("user", "Go on.")]


async def test_a_speech_recogniser_that_dies_mid_turn_is_replaced_and_the_turn_heard_whole(
        stages: InMemoryStages) -> None:
    # The first stream's replica dies 0.4 s in, in the middle of the user's first words; the second
    # stream (another replica) gets the audio from the start again and hears the whole sentence.
    stages.listen_script = ListenScript(segments=["(heard by the dead replica)", "What time is it?"])
    stages.listen_fail_after = 20
    session = Session(stages)
    session.configure()
    session.speak(silence_pcm(0.3) + tone_pcm(0.5) + silence_pcm(0.7))
    events = await session.until(MetricsEvent)
    events += await session.close()
    assert stages.stt.log.calls == 2  # two Listen streams
    assert stages.listen_chunks[0] == 21 and stages.listen_chunks[1] >= 75  # replayed from the start
    finals = [e for e in events if isinstance(e, TranscriptEvent)]
    assert finals == [TranscriptEvent(1, "What time is it?", "en")]
    assert metrics([e for e in events if isinstance(e, MetricsEvent)]).status == COMPLETED
    assert replies(events) == "It is sunny. Take a hat."


async def test_a_reply_in_flight_when_the_recogniser_dies_is_redone_not_lost(stages: InMemoryStages) -> None:
    # The turn ended and its reply is held in TTS (not audible yet) when the stream fails: that reply
    # is cancelled, the new stream hears the turn again from the replay, and the user gets one reply.
    stages.listen_script = ListenScript(segments=["What time is it?", "What time is it?"])
    stages.tts.gate = asyncio.Event()
    session = Session(stages)
    session.configure()
    session.speak(silence_pcm(0.3) + tone_pcm(0.5) + silence_pcm(0.5))
    await _wait(stages.tts.log.started)
    stages.tts.gate = None
    stages.listen_fail_after = stages.listen_chunks[-1]  # the stream's next chunk kills it
    session.speak(silence_pcm(0.1))
    events = await session.until(MetricsEvent)
    events += await session.close()
    assert stages.stt.log.calls == 2 and stages.tts.log.cancellations == 1
    assert {e.turn for e in events} == {1}
    assert [e.text for e in events if isinstance(e, TranscriptEvent)][-1] == "What time is it?"
    assert [e.metrics.status for e in events if isinstance(e, MetricsEvent)][-1] == COMPLETED
    assert replies(events) == "It is sunny. Take a hat."  # once: nothing of the cancelled reply


async def test_a_speech_recogniser_that_keeps_failing_ends_the_stream(stages: InMemoryStages) -> None:
    stages.stt.fail = StageError("stt", "UNAVAILABLE", "connection refused", "127.0.0.1:1")
    session = Session(stages)
    session.configure()
    session.speak(silence_pcm(0.2))
    with pytest.raises(StageError):
        await session.close()
    assert stages.stt.log.calls == 3  # the first stream and two reopenings, then the error
