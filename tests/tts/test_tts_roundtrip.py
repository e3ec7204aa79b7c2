"""Round trip through two real servers: English text → TTS → STT (Whisper base) → the same words."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from speech import PHRASE, word_errors
from support import start_service
from tts_client import synthesize

from voxline.v1 import audio_pb2, stt_pb2, stt_pb2_grpc, tts_pb2_grpc


@pytest.fixture(scope="module")
def stt_stub(request: pytest.FixtureRequest) -> Iterator[stt_pb2_grpc.SpeechToTextStub]:
    with start_service("stt", ["--language", "en"]) as server:
        request.getfixturevalue("tts_server")  # both servers load their models at the same time
        server.wait_serving()
        with grpc.insecure_channel(server.address) as channel:
            yield stt_pb2_grpc.SpeechToTextStub(channel)


# Phrases each voice says clearly enough for Whisper base. (espeak's "Hello world" comes back as
# "the low world", so the espeak phrase is chosen among ones it pronounces well.)
CASES = [
    pytest.param("piper:joe", PHRASE, audio_pb2.WAV, 0, id="piper-wav-native"),
    pytest.param("espeak:en-us", "Please open the door.", audio_pb2.PCM_S16LE, 16000,
                 id="espeak-pcm-16k"),
]


@pytest.mark.parametrize(("voice", "text", "encoding", "rate"), CASES)
def test_text_to_speech_to_text_gives_the_same_words(
        tts_stub: tts_pb2_grpc.TextToSpeechStub, stt_stub: stt_pb2_grpc.SpeechToTextStub,
        voice: str, text: str, encoding: int, rate: int) -> None:
    spoken = synthesize(tts_stub, text, voice, encoding, rate)
    # The TTS stream's bytes go to STT as they are, described by the TTS's announced format.
    request = stt_pb2.TranscribeRequest(
        config=stt_pb2.RecognitionConfig(format=spoken.format, language="en"), audio=spoken.data)
    transcript = stt_stub.Transcribe(request, timeout=120)
    # The service's Piper keeps its generator noise (test speech elsewhere turns it off), so the
    # same text sounds a little different on every run and Whisper base now and then mishears one
    # word ("quip-brown", "jumped"); more than one wrong word means the audio is wrong.
    assert word_errors(transcript.text, text) <= 1, transcript.text
    assert transcript.audio_seconds == pytest.approx(spoken.seconds(), abs=0.05)
