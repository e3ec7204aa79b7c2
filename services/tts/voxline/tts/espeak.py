"""espeak-ng voices: libespeak-ng (shipped by the ``espeakng-loader`` wheel) called through ctypes.

Everything stays in memory: the library runs in synchronous mode and hands its samples to a
Python callback, so there is no temp file and no subprocess per request. libespeak-ng keeps its
state in globals (current voice, callback, output buffer), so one process-wide lock serialises
every call into it; a sentence takes milliseconds, so the lock costs little.
"""

from __future__ import annotations

import ctypes
import logging
import threading

import numpy as np

from voxline.common.errors import InvalidInput

log = logging.getLogger(__name__)

# From espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_EE_OK = 0

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events); return 0 to go on.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.c_void_p)

_LOCK = threading.Lock()
_LIBRARY: EspeakLibrary | None = None


class EspeakLibrary:
    """The process's one initialised libespeak-ng. Use ``espeak_library()``; callers hold ``_LOCK``."""

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        # The data path must be given: without it the library looks in a compiled-in directory
        # that does not exist and calls exit(1), killing the whole server.
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate})")
        self.sample_rate = int(rate)
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        self._voice: str | None = None
        # Kept as an attribute: ctypes does not keep the C callback alive, and a collected one
        # would crash the process on the next synthesis.
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        log.info("espeak-ng loaded", extra={"sample_rate": self.sample_rate})

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None) -> int:
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def select_voice(self, voice: str) -> None:
        """Make ``voice`` current; ValueError when espeak-ng has no such voice."""
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                self._voice = None
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            self._voice = voice

    def synthesize(self, voice: str, text: str) -> np.ndarray:
        """Speak ``text`` with espeak voice ``voice``: float32 samples at ``sample_rate``."""
        self.select_voice(voice)
        self._chunks = []
        # A NUL would end the C string early; drop it rather than cut the sentence.
        data = text.replace("\x00", " ").encode("utf-8") + b"\x00"
        result = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8,
                                        None, None)
        chunks, self._chunks = self._chunks, []
        if result != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed ({result})")
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32) / 32768.0


def espeak_library() -> EspeakLibrary:
    """The shared, initialised library (loaded on first use)."""
    global _LIBRARY
    with _LOCK:
        if _LIBRARY is None:
            _LIBRARY = EspeakLibrary()
        return _LIBRARY


class EspeakVoice:
    """An espeak-ng voice, e.g. ``EspeakVoice("fr")`` is named "espeak:fr"."""

    engine = "espeak"

    def __init__(self, espeak_name: str) -> None:
        self._espeak_name = espeak_name
        self._library = espeak_library()
        with _LOCK:
            self._library.select_voice(espeak_name)  # fail at start-up, not on the first request

    @property
    def name(self) -> str:
        return f"espeak:{self._espeak_name}"

    @property
    def language(self) -> str:
        return self._espeak_name

    @property
    def sample_rate(self) -> int:
        return self._library.sample_rate

    def synthesize(self, sentence: str) -> np.ndarray:
        """Speak one sentence (blocking; serialised with every other espeak call in the process)."""
        if not sentence.strip():
            raise InvalidInput("nothing to say: the sentence is empty")
        with _LOCK:
            return self._library.synthesize(self._espeak_name, sentence)
