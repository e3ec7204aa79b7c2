"""The tests' speech helpers: a re-export of ``voxline.testing.speech`` (the installed test-support
package, shared with the benchmarks), so tests keep writing ``from speech import PHRASE, ...``."""

from voxline.testing.speech import (
    PAUSE_AT_S,
    PAUSE_PHRASE,
    PHRASE,
    PHRASE_2,
    add_noise,
    english_speech,
    english_speech_pcm16,
    english_speech_wav,
    silence,
    speech_seconds,
    speech_until_pause,
    speech_with_pause,
    word_errors,
    words,
)

__all__ = [
    "PAUSE_AT_S", "PAUSE_PHRASE", "PHRASE", "PHRASE_2", "add_noise", "english_speech", "english_speech_pcm16",
    "english_speech_wav", "silence", "speech_seconds", "speech_until_pause", "speech_with_pause",
    "word_errors", "words",
]
