"""Groq's hosted Whisper as the STT engine (``--engine groq``), with the local model as its fallback.

``CloudTranscriber`` is a ``Transcriber``: each transcription is sent to Groq's audio transcription
API through the official ``groq`` SDK (``client.audio.transcriptions.create``, model
``whisper-large-v3-turbo`` by default) as a 16 kHz mono WAV. It falls back to the local Whisper
(``WhisperTranscriber``, loaded and warmed at start as usual) when the request fails (an HTTP
error, a dropped connection, an unreadable answer) or takes longer than ``--cloud-timeout-s``, so a
user's words are never lost to the network; the fallback is logged at WARNING with a short,
scrubbed reason. Like the LLM gateway's providers, a circuit breaker (``CircuitBreaker``, the same
rules: ``--cloud-failures`` failures in a row open it for ``--cloud-cooldown-s``, then one trial
request) stops paying the timeout on every turn while Groq is down.

The API key comes from ``GROQ_API_KEY`` only (never a flag, never logged: reasons are scrubbed of
it and of anything shaped like a key); the host from ``--groq-base-url`` / ``GROQ_BASE_URL``. The
SDK's own retries are off (``max_retries=0``): the fallback is the retry. At most
``--cloud-max-in-flight`` requests are outstanding; more are transcribed locally.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

import httpx

from voxline.common.audio import WHISPER_RATE, decode, to_wav_bytes
from voxline.common.breaker import CircuitBreaker
from voxline.common.errors import InvalidInput, LimitExceeded
from voxline.stt.config import CloudSettings
from voxline.stt.engine import AudioInput, RecognitionOptions, Segment, Transcriber, Transcript

log = logging.getLogger(__name__)

_MAX_REASON_CHARS = 160
_SECRET_PATTERNS = (
    re.compile(r"(?i)bearer\s+[^\s'\"]+"),
    re.compile(r"\bgsk_[A-Za-z0-9]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
)
#: Whisper's language names (what an OpenAI-style verbose_json answer may carry) -> codes; a code
#: passes as is, an unknown name gives "".
_LANGUAGE_CODES = {"english": "en", "french": "fr", "german": "de", "spanish": "es",
                   "italian": "it", "portuguese": "pt", "dutch": "nl", "chinese": "zh",
                   "japanese": "ja", "russian": "ru", "arabic": "ar", "hindi": "hi"}


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret and anything shaped like a key replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("***", text)
    return text


class CloudUnusable(Exception):
    """Groq's answer could not be used (the reason is scrubbed)."""


def _groq_client(settings: CloudSettings) -> Any:
    from groq import AsyncGroq

    timeout = httpx.Timeout(settings.timeout_s, connect=min(2.0, settings.timeout_s))
    # the SDK appends "/openai/v1/audio/transcriptions": base_url is the bare host
    return AsyncGroq(api_key=settings.api_key, base_url=settings.base_url, max_retries=0,
                     timeout=timeout)


class CloudTranscriber:
    """Groq's hosted Whisper, the local ``fallback`` on any failure or timeout (see the module)."""

    def __init__(self, settings: CloudSettings, fallback: Transcriber, language: str = "") -> None:
        """``language``: the server's default (``--language``), for requests that name none."""
        problems = settings.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self._settings = settings
        self._fallback = fallback
        self._language = language
        self._client = _groq_client(settings)
        self.breaker = CircuitBreaker(settings.failures, settings.cooldown_s)
        self._in_flight = 0
        #: Transcriptions answered by Groq / by the fallback (for tests and the log).
        self.cloud_count = 0
        self.fallback_count = 0

    @property
    def max_audio_seconds(self) -> float:
        return self._fallback.max_audio_seconds

    async def warm_up(self) -> None:
        """The fallback is loaded and warmed; nothing is sent to Groq (it would cost quota)."""
        await self._fallback.warm_up()

    def check_options(self, options: RecognitionOptions) -> None:
        self._fallback.check_options(options)

    async def transcribe(self, audio: AudioInput, options: RecognitionOptions) -> Transcript:
        result = await self._try_cloud(audio, options)
        if result is not None:
            return result
        self.fallback_count += 1
        return await self._fallback.transcribe(audio, options)

    async def transcribe_if_idle(self, audio: AudioInput, options: RecognitionOptions
                                 ) -> Transcript | None:
        result = await self._try_cloud(audio, options)
        if result is not None:
            return result
        self.fallback_count += 1
        return await self._fallback.transcribe_if_idle(audio, options)

    async def close(self) -> None:
        try:
            await self._client.close()
        finally:
            await self._fallback.close()

    async def _try_cloud(self, audio: AudioInput, options: RecognitionOptions) -> Transcript | None:
        """Groq's transcript, or None when the fallback must answer (failure, timeout, open
        circuit, too many requests out). Bad audio raises InvalidInput / LimitExceeded as locally."""
        if self._in_flight >= self._settings.max_in_flight or not self.breaker.try_acquire():
            return None
        self._in_flight += 1
        started = time.perf_counter()
        try:
            wav, seconds, decode_ms = await asyncio.to_thread(self._wav, audio)
        except (InvalidInput, LimitExceeded):
            self.breaker.release()
            self._in_flight -= 1
            raise
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                response = await self._client.audio.transcriptions.create(
                    file=("audio.wav", wav, "audio/wav"), model=self._settings.model,
                    language=self._request_language(options) or _omit(), response_format="verbose_json",
                    temperature=0.0)
            result = self._transcript(response, options, seconds, started, decode_ms)
        except asyncio.CancelledError:
            self.breaker.release()
            raise
        except Exception as exc:  # the SDK, httpx and a bad answer fail in many ways; all fall back
            self.breaker.record_failure()
            log.warning("Groq transcription failed: the local model transcribes", extra={
                "reason": self._reason(exc), "circuit": self.breaker.state,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 1)})
            return None
        finally:
            self._in_flight -= 1
        self.breaker.record_success()
        self.cloud_count += 1
        log.info("transcribed", extra={"engine": "groq", "audio_s": round(seconds, 3),
                                       "processing_ms": round(result.processing_ms, 1)})
        return result

    def _request_language(self, options: RecognitionOptions) -> str:
        # "en-US" -> "en", as the local engine reads it
        return options.language.strip().lower().split("-")[0] or self._language

    def _wav(self, audio: AudioInput) -> tuple[bytes, float, float]:
        started = time.perf_counter()
        decoded = decode(audio.data, audio.encoding, sample_rate=audio.sample_rate,
                         channels=audio.channels, max_seconds=self.max_audio_seconds)
        return (to_wav_bytes(decoded.samples, WHISPER_RATE), decoded.duration_s,
                (time.perf_counter() - started) * 1000.0)

    def _transcript(self, response: Any, options: RecognitionOptions, seconds: float,
                    started: float, decode_ms: float) -> Transcript:
        text = getattr(response, "text", None)
        if not isinstance(text, str):
            raise CloudUnusable("the answer has no text")
        extra = getattr(response, "model_extra", None) or {}
        segments = []
        for raw in extra.get("segments") or ():
            if isinstance(raw, dict) and isinstance(raw.get("text"), str):
                segments.append(Segment(float(raw.get("start", 0.0)), float(raw.get("end", 0.0)),
                                        raw["text"].strip()))
        language = self._request_language(options) or _code(str(extra.get("language", "")))
        return Transcript(text=text.strip(), language=language,
                          language_probability=1.0 if language else 0.0,
                          segments=tuple(segments), audio_seconds=seconds,
                          processing_ms=(time.perf_counter() - started) * 1000.0, decode_ms=decode_ms)

    def _reason(self, exc: BaseException) -> str:
        """A short, credential-free description of an SDK or transport failure."""
        status = getattr(exc, "status_code", None)
        kind = type(exc).__name__
        if isinstance(exc, TimeoutError):
            return f"no answer in {self._settings.timeout_s:g} s"
        detail = ""
        body = getattr(exc, "body", None)
        if isinstance(body, dict):
            error = body.get("error", body)
            detail = str(error.get("message", "")) if isinstance(error, dict) else str(error)
        elif status is None:
            detail = str(exc)
        detail = scrub(detail, [self._settings.api_key])[:_MAX_REASON_CHARS]
        text = f"HTTP {status} ({kind})" if status is not None else kind
        return f"{text}: {detail}" if detail else text


def _code(language: str) -> str:
    language = language.strip().lower()
    if 2 <= len(language) <= 3 and language.isalpha():
        return language
    return _LANGUAGE_CODES.get(language, "")


def _omit() -> Any:
    from groq import omit

    return omit
