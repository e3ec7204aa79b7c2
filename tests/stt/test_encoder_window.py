"""``--encoder-window-s``: Whisper's encoder on max(audio + 1 s, N) seconds instead of 30. The real
packaged model still hears a spoken sentence word for word; a short-window result that looks
degenerate (a loop, a repeated segment, an unsure tail, the token cap) is replaced by the full
window's, which is what the user gets."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from faster_whisper.transcribe import Segment as WhisperSegment
from speech import PHRASE, PHRASE_2, english_speech_wav, words

from voxline.common.config import ConfigError
from voxline.stt import engine
from voxline.stt.config import AUTO_WINDOW, CPU_WINDOW_S, EngineSettings, parse, window_for_device
from voxline.stt.engine import AudioInput, RecognitionOptions, WhisperTranscriber

FULL_TEXT = "Send a message to my sister."


@pytest.mark.slow
async def test_a_short_window_hears_spoken_sentences_word_for_word(stt_cache_dir: Path) -> None:
    transcriber = WhisperTranscriber(EngineSettings(cache_dir=stt_cache_dir, language="en",
                                                    encoder_window_s=10.0))
    await transcriber.warm_up()
    encoded: list[int] = []
    real_encode = transcriber.model.encode

    def spy(features: Any) -> Any:
        output = real_encode(features)
        encoded.append(output.shape[1])  # encoder positions: half the mel frames it was given
        return output

    transcriber.model.encode = spy
    try:
        for phrase in (PHRASE, PHRASE_2):
            audio = AudioInput(english_speech_wav(phrase))
            result = await transcriber.transcribe(audio, RecognitionOptions())
            assert words(result.text) == words(phrase)
    finally:
        await transcriber.close()
    # both sentences last under 9 s: a 10 s window (500 encoder positions), never the full 30 s (1500)
    assert encoded == [500, 500]


def piece(text: str, *, ratio: float = 1.2, logprob: float = -0.2, tokens: int = 12,
          start: float = 0.0) -> WhisperSegment:
    return WhisperSegment(id=1, seek=0, start=start, end=start + 1.5, text=" " + text,
                          tokens=list(range(tokens)), avg_logprob=logprob, compression_ratio=ratio,
                          no_speech_prob=0.01, words=None, temperature=0.0)


LOOP = " ".join([FULL_TEXT] * 16)
DEGENERATE = {
    "a repetition loop": [piece(LOOP, ratio=8.9, tokens=120)],
    "a segment repeated": [piece(FULL_TEXT), piece(FULL_TEXT, start=1.5)],
    "an invented, unsure tail": [piece(FULL_TEXT), piece("I'm sorry.", logprob=-1.6, start=1.5)],
    "the token cap": [piece("Send a message to my sister and to my", tokens=1000)],
}


class StubWhisper:
    """Stands in for faster-whisper's model: what it decodes depends on the encoder window."""

    #: (encoder frames, max_new_tokens) of each transcription since the warm-up
    calls: ClassVar[list[tuple[int, int | None]]] = []
    #: what the short window decodes
    short_window: ClassVar[list[WhisperSegment]] = []
    supported_languages = ("en",)

    def __init__(self, location: str, **_: Any) -> None:
        self.location = location

    def transcribe(self, audio: Any, **options: Any) -> tuple[Any, Any]:
        frames = engine.encoder_window_frames()
        StubWhisper.calls.append((frames, options["max_new_tokens"]))
        pieces = StubWhisper.short_window if frames else [piece(FULL_TEXT)]
        return iter(pieces), SimpleNamespace(language="en", language_probability=1.0)


@pytest.fixture
def stub_whisper(monkeypatch: pytest.MonkeyPatch) -> type[StubWhisper]:
    monkeypatch.setattr(engine, "windowed_whisper_model", lambda: StubWhisper)
    StubWhisper.calls, StubWhisper.short_window = [], []
    return StubWhisper


async def transcribe_once(cache_dir: Path, window_s: float, short_window: list[WhisperSegment]) -> str:
    """The text a user gets for a ~2 s sentence, the short window decoding ``short_window``."""
    transcriber = WhisperTranscriber(EngineSettings(cache_dir=cache_dir, language="en",
                                                    encoder_window_s=window_s))
    await transcriber.warm_up()
    StubWhisper.calls, StubWhisper.short_window = [], short_window  # after the warm-up
    try:
        result = await transcriber.transcribe(AudioInput(english_speech_wav(FULL_TEXT)), RecognitionOptions())
    finally:
        await transcriber.close()
    return result.text


@pytest.mark.parametrize("case", sorted(DEGENERATE))
async def test_a_degenerate_short_window_result_is_redone_with_the_full_window(
        case: str, stub_whisper: type[StubWhisper], stt_cache_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=engine.__name__):
        text = await transcribe_once(stt_cache_dir, 8.0, DEGENERATE[case])
    assert text == FULL_TEXT
    (short, short_cap), (full, full_cap) = stub_whisper.calls
    assert 0 < short <= 1000 and short_cap is not None  # ~2 s of speech + 1 s margin, min 8 s
    assert full == 0 and full_cap is None
    assert any("redone with the full window" in r.getMessage() and r.levelno == logging.DEBUG
               for r in caplog.records)


async def test_a_sound_short_window_result_is_kept(stub_whisper: type[StubWhisper],
                                                   stt_cache_dir: Path) -> None:
    sound = [piece("Send a message to my sister, please.")]
    assert await transcribe_once(stt_cache_dir, 8.0, sound) == "Send a message to my sister, please."
    assert [frames for frames, _ in stub_whisper.calls] == [800]


async def test_window_zero_always_encodes_thirty_seconds(stub_whisper: type[StubWhisper],
                                                         stt_cache_dir: Path) -> None:
    assert await transcribe_once(stt_cache_dir, 0.0, DEGENERATE["a repetition loop"]) == FULL_TEXT
    assert stub_whisper.calls == [(0, None)]


@pytest.mark.parametrize("audio_s,window_s,frames", [
    (3.0, 10.0, 1000),   # the minimum window
    (12.0, 10.0, 1300),  # the audio and its 1 s margin
    (4.005, 2.0, 502),   # even: the encoder's first convolution has stride 2
    (29.5, 10.0, 0),     # 30 s anyway: the full window
    (3.0, 0.0, 0),       # off
])
def test_window_is_the_audio_plus_a_margin_at_least_the_setting(audio_s: float, window_s: float,
                                                                 frames: int) -> None:
    assert engine.window_frames_for(audio_s, window_s) == frames


def test_the_flag_and_its_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse([]).engine.encoder_window_s == AUTO_WINDOW
    assert parse(["--encoder-window-s", "auto"]).engine.encoder_window_s == AUTO_WINDOW
    assert parse(["--encoder-window-s", "0"]).engine.encoder_window_s == 0.0
    assert parse(["--encoder-window-s", "10"]).engine.encoder_window_s == 10.0
    monkeypatch.setenv("VOXLINE_STT_ENCODER_WINDOW_S", "6.5")
    assert parse([]).engine.encoder_window_s == 6.5
    with pytest.raises(ConfigError, match=r"--encoder-window-s must be .auto. or 0\.\.30"):
        parse(["--encoder-window-s", "31"])


@pytest.mark.parametrize(("device", "window_s", "frames"), [
    ("cpu", AUTO_WINDOW, int(CPU_WINDOW_S * 100)),  # the default on a CPU: the short window
    ("cuda", AUTO_WINDOW, 0),                       # the default on CUDA: the full 30 s
    ("cpu", 0.0, 0),                                # an explicit setting wins
    ("cuda", 8.0, 800),
])
async def test_the_default_window_is_chosen_by_the_device(
        device: str, window_s: float, frames: int, stub_whisper: type[StubWhisper],
        stt_cache_dir: Path) -> None:
    transcriber = WhisperTranscriber(EngineSettings(cache_dir=stt_cache_dir, language="en",
                                                    device=device, encoder_window_s=window_s))
    await transcriber.warm_up()
    stub_whisper.calls, stub_whisper.short_window = [], [piece(FULL_TEXT)]
    try:
        result = await transcriber.transcribe(AudioInput(english_speech_wav(FULL_TEXT)), RecognitionOptions())
    finally:
        await transcriber.close()
    assert result.text == FULL_TEXT
    assert [f for f, _ in stub_whisper.calls] == [frames]
    assert transcriber.encoder_window_s == frames / 100


def test_auto_resolves_by_device() -> None:
    assert window_for_device(AUTO_WINDOW, "cpu") == CPU_WINDOW_S
    assert window_for_device(AUTO_WINDOW, "cuda") == 0.0
    assert window_for_device(0.0, "cpu") == 0.0
    assert window_for_device(12.0, "cuda") == 12.0
