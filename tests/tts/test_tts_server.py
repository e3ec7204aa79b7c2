"""The real TTS server (subprocess on a free port): espeak-ng French and English, the tiny random
VITS model through the same loader as facebook/mms-tts-fra, Piper, and every bad input."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import MAX_TEXT_CHARS
from tts_client import synthesize

from voxline.v1 import audio_pb2, tts_pb2, tts_pb2_grpc

FRENCH = "Bonjour tout le monde. Il fait très beau aujourd'hui à Paris."
ENGLISH = "Good morning everyone. The weather is very nice in London today."


def _words(text: str) -> int:
    return len(text.split())


def _assert_plausible_speech(samples: np.ndarray, rate: int, text: str) -> None:
    seconds = len(samples) / rate
    words = _words(text)
    # Speech runs at roughly 2-4 words a second; allow a wide margin either way.
    assert 0.15 * words <= seconds <= 0.6 * words + 0.5, f"{seconds:.2f} s for {words} words"
    rms = float(np.sqrt(np.mean((samples.astype(np.float32) / 32768.0) ** 2)))
    assert rms > 0.01, f"audio is (nearly) silent: rms={rms:.4f}"


def test_list_voices_default_first(tts_stub: tts_pb2_grpc.TextToSpeechStub, tiny_vits_dir: Path) -> None:
    voices = {v.name: v for v in tts_stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=10).voices}
    names = list(voices)
    assert names[0] == "espeak:en"
    assert {"espeak:en", "espeak:fr", f"vits:{tiny_vits_dir}", "piper:joe"} <= set(names)
    assert (voices["espeak:fr"].engine, voices["espeak:fr"].language) == ("espeak", "fr")
    assert voices["espeak:fr"].sample_rate_hz == 22050
    assert (voices[f"vits:{tiny_vits_dir}"].engine, voices[f"vits:{tiny_vits_dir}"].sample_rate_hz) \
        == ("vits", 16000)
    assert voices["piper:joe"].sample_rate_hz == 22050


@pytest.mark.parametrize(("voice", "text"), [("espeak:fr", FRENCH), ("espeak:en", ENGLISH), ("", ENGLISH)])
def test_espeak_speaks_wav_sentence_by_sentence(tts_stub: tts_pb2_grpc.TextToSpeechStub, voice: str,
                                                 text: str) -> None:
    result = synthesize(tts_stub, text, voice, audio_pb2.WAV)
    assert (result.format.encoding, result.format.sample_rate_hz, result.format.channels) == \
        (audio_pb2.WAV, 22050, 1)
    _assert_plausible_speech(result.samples(), 22050, text)
    firsts = [c for c in result.chunks if c.sentence]
    assert [(c.sentence_index, c.sentence) for c in firsts] == [
        (0, text.split(". ")[0] + "."), (1, text.split(". ")[1])]


def test_espeak_raw_pcm_resampled_to_requested_rate(tts_stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    native = synthesize(tts_stub, FRENCH, "espeak:fr", audio_pb2.WAV)
    pcm = synthesize(tts_stub, FRENCH, "espeak:fr", audio_pb2.PCM_S16LE, sample_rate=16000)
    assert (pcm.format.encoding, pcm.format.sample_rate_hz, pcm.format.channels) == \
        (audio_pb2.PCM_S16LE, 16000, 1)
    assert not pcm.data.startswith(b"RIFF")
    _assert_plausible_speech(pcm.samples(), 16000, FRENCH)
    # Same speech, another rate: the same duration (espeak-ng is deterministic).
    assert pcm.seconds() == pytest.approx(native.seconds(), rel=0.01)


def test_unspecified_encoding_means_raw_pcm_at_native_rate(tts_stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    result = synthesize(tts_stub, ENGLISH, "espeak:en", audio_pb2.AUDIO_ENCODING_UNSPECIFIED)
    assert (result.format.encoding, result.format.sample_rate_hz) == (audio_pb2.PCM_S16LE, 22050)
    _assert_plausible_speech(result.samples(), 22050, ENGLISH)


def test_tiny_random_vits_through_the_server(tts_stub: tts_pb2_grpc.TextToSpeechStub,
                                            tiny_vits_dir: Path) -> None:
    text = "Bonjour tout le monde. Comment allez vous?"
    result = synthesize(tts_stub, text, f"vits:{tiny_vits_dir}", audio_pb2.WAV)
    assert (result.format.encoding, result.format.sample_rate_hz, result.format.channels) == \
        (audio_pb2.WAV, 16000, 1)
    samples = result.samples()
    assert len(samples) > 1600, "at least 0.1 s of audio"
    assert np.any(samples != 0)
    assert {c.sentence_index for c in result.chunks} == {0, 1}
    resampled = synthesize(tts_stub, text, f"vits:{tiny_vits_dir}", audio_pb2.PCM_S16LE, 24000)
    assert resampled.format.sample_rate_hz == 24000 and len(resampled.samples()) > 2400


def test_piper_voice(tts_stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    result = synthesize(tts_stub, ENGLISH, "piper:joe", audio_pb2.WAV)
    assert result.format.sample_rate_hz == 22050
    _assert_plausible_speech(result.samples(), 22050, ENGLISH)


def _format(encoding: int = audio_pb2.WAV, rate: int = 0, channels: int = 0) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(encoding=encoding, sample_rate_hz=rate, channels=channels)


BAD_REQUESTS = {
    "empty text": (tts_pb2.SynthesizeRequest(text=""), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    "whitespace text": (tts_pb2.SynthesizeRequest(text=" \n\t "), grpc.StatusCode.INVALID_ARGUMENT,
                        "empty"),
    "text over the limit": (tts_pb2.SynthesizeRequest(text="Hello. " * (MAX_TEXT_CHARS // 7 + 1)),
                            grpc.StatusCode.RESOURCE_EXHAUSTED, f"limit is {MAX_TEXT_CHARS}"),
    "unknown voice": (tts_pb2.SynthesizeRequest(text="Hi.", voice="espeak:no-such-voice"),
                      grpc.StatusCode.INVALID_ARGUMENT, "available voices: espeak:en, "),
    "FLAC output": (tts_pb2.SynthesizeRequest(text="Hi.", output_format=_format(audio_pb2.FLAC)),
                    grpc.StatusCode.INVALID_ARGUMENT, "'flac'"),
    "OGG/Opus output": (tts_pb2.SynthesizeRequest(text="Hi.", output_format=_format(audio_pb2.OGG_OPUS)),
                        grpc.StatusCode.INVALID_ARGUMENT, "'ogg_opus'"),
    "unknown encoding": (tts_pb2.SynthesizeRequest(text="Hi.", output_format=_format(99)),
                         grpc.StatusCode.INVALID_ARGUMENT, "encoding #99"),
    "1 Hz": (tts_pb2.SynthesizeRequest(text="Hi.", output_format=_format(rate=1)),
             grpc.StatusCode.INVALID_ARGUMENT, "sample_rate_hz 1 "),
    "negative rate": (tts_pb2.SynthesizeRequest(text="Hi.", output_format=_format(rate=-16000)),
                      grpc.StatusCode.INVALID_ARGUMENT, "sample_rate_hz -16000"),
    "over 192 kHz": (tts_pb2.SynthesizeRequest(text="Hi.", output_format=_format(rate=192_001)),
                     grpc.StatusCode.INVALID_ARGUMENT, "sample_rate_hz 192001"),
    "stereo": (tts_pb2.SynthesizeRequest(text="Hi.", output_format=_format(channels=2)),
               grpc.StatusCode.INVALID_ARGUMENT, "mono"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(
        tts_stub: tts_pb2_grpc.TextToSpeechStub, case: str) -> None:
    request, code, fragment = BAD_REQUESTS[case]
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for reply in tts_stub.Synthesize(request, timeout=30):
            received.append(reply)
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details()
    assert received == [], "the request is refused before any format or audio is sent"
    result = synthesize(tts_stub, "Still here.", "espeak:en", audio_pb2.WAV)
    assert len(result.samples()) > 0.3 * 22050
