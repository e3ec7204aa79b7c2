"""Issue 10 regressions in TTS: the cost of one request is bounded for every voice (sentence
characters, Piper phonemes, audio seconds), memory comes back after a refused bomb, a NUL is
INVALID_ARGUMENT, and error texts neither echo large input nor name server paths."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from support import ServiceProcess
from tts_client import synthesize

from voxline.common.errors import LimitExceeded
from voxline.tts.engine import SpeechSynthesizer, bound_sentences
from voxline.tts.piper_voice import split_phonemes
from voxline.tts.voices import VoiceBook
from voxline.v1 import audio_pb2, tts_pb2, tts_pb2_grpc


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6


def _fails_with(stub: tts_pb2_grpc.TextToSpeechStub, request: tts_pb2.SynthesizeRequest
                ) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        for _ in stub.Synthesize(request, timeout=120):
            pass
    return info.value


def test_nul_in_text_is_invalid_argument_for_every_voice(tts_stub: tts_pb2_grpc.TextToSpeechStub,
                                                         tiny_vits_dir: Path) -> None:
    for voice in ("piper:joe", "espeak:en", f"vits:{tiny_vits_dir}"):
        error = _fails_with(tts_stub, tts_pb2.SynthesizeRequest(text="Hello\x00 world.", voice=voice))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (voice, error.details())
        assert "control character U+0000 at position 5" in (error.details() or "")
    assert len(synthesize(tts_stub, "Still here.", "piper:joe", audio_pb2.WAV).samples()) > 0


def test_piper_phoneme_bomb_is_refused_and_memory_comes_back(tts_server: ServiceProcess,
                                                             tts_stub: tts_pb2_grpc.TextToSpeechStub
                                                             ) -> None:
    pid = tts_server.proc.pid
    synthesize(tts_stub, "Warm the allocator up with a sentence or two. Then measure.", "piper:joe")
    before = _rss_mb(pid)
    # Each "中" is read "Chinese letter": 400 of them were 3,298 phonemes, 174 s of audio, 3.8 GB.
    error = _fails_with(tts_stub, tts_pb2.SynthesizeRequest(text="中" * 400, voice="piper:joe"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "phonemes" in (error.details() or "") and "limit is" in (error.details() or "")
    after = _rss_mb(pid)
    assert after - before < 100, f"RSS {before:.0f} MB → {after:.0f} MB"
    result = synthesize(tts_stub, "Still here.", "piper:joe", audio_pb2.WAV)
    assert len(result.samples()) > 0.3 * 22050


def test_long_piper_sentence_under_the_phoneme_limit_is_spoken_in_bounded_calls(
        tts_server: ServiceProcess, tts_stub: tts_pb2_grpc.TextToSpeechStub) -> None:
    pid = tts_server.proc.pid
    before = _rss_mb(pid)
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 4)  # one ~150-phoneme sentence
    result = synthesize(tts_stub, text, "piper:joe", audio_pb2.WAV)
    assert len(result.samples()) / 22050 > 5.0
    assert _rss_mb(pid) - before < 100


def test_unknown_voice_error_names_no_server_path_and_stays_short(
        tts_stub: tts_pb2_grpc.TextToSpeechStub, tiny_vits_dir: Path) -> None:
    error = _fails_with(tts_stub, tts_pb2.SynthesizeRequest(text="Hi.", voice="v" * 10_000))
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(tiny_vits_dir) not in details and "1 more (see ListVoices)" in details
    assert "espeak:en" in details and len(details) < 400


def test_sentences_are_cut_to_the_character_bound() -> None:
    text = "word " * 100 + "中" * 450
    pieces = bound_sentences((text.strip(),), 200)
    assert all(len(p) <= 200 for p in pieces)
    assert "".join(p.replace(" ", "") for p in pieces) == text.replace(" ", "")
    assert pieces[0].endswith("word")  # cut at a space where there is one


def test_phonemes_are_split_at_word_boundaries() -> None:
    phonemes = list("ab cd ef gh ij kl mn op")
    runs = split_phonemes(phonemes, 7)
    assert all(len(r) <= 7 for r in runs) and sum(len(r) for r in runs) == len(phonemes)
    assert all(r[-1] == " " for r in runs[:-1])
    assert split_phonemes(list("x" * 20), 8) == [list("x" * 8), list("x" * 8), list("x" * 4)]


class _SlowTalker:
    """A voice that speaks 0.1 s per character: long sentences mean long audio."""

    name, engine, language, sample_rate = "fake:slow", "fake", "en", 8000

    def __init__(self) -> None:
        self.sentences: list[str] = []

    def synthesize(self, sentence: str) -> np.ndarray:
        self.sentences.append(sentence)
        return np.zeros(int(0.1 * len(sentence) * self.sample_rate), dtype=np.float32)


async def test_request_audio_is_capped_before_the_extra_audio_is_sent() -> None:
    voice = _SlowTalker()
    synthesizer = SpeechSynthesizer(VoiceBook([voice]), max_sentence_chars=50, max_audio_seconds=12.0)
    plan = synthesizer.plan("x" * 300)
    assert len(plan.sentences) == 6 and all(len(s) == 50 for s in plan.sentences)
    sent = 0
    with pytest.raises(LimitExceeded, match="limit is 12 s per request"):
        async for piece in synthesizer.stream(plan):
            sent += len(piece.data)
    assert sent == 2 * 5 * 8000 * 2  # two sentences of 5 s went out, the third was held back
    assert len(voice.sentences) == 3  # and nothing after it was synthesised


def test_cost_limits_are_flags() -> None:
    from voxline.common.config import ConfigError
    from voxline.tts.config import parse

    config = parse(["--max-sentence-chars", "80", "--max-audio-seconds", "30",
                    "--max-sentence-phonemes", "600", "--max-phonemes-per-call", "100"])
    assert (config.max_sentence_chars, config.max_audio_seconds) == (80, 30.0)
    assert (config.max_sentence_phonemes, config.max_phonemes_per_call) == (600, 100)
    with pytest.raises(ConfigError, match="max-phonemes-per-call"):
        parse(["--max-sentence-phonemes", "50", "--max-phonemes-per-call", "100"])
