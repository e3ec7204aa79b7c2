"""VITS voices through transformers: the MMS-TTS family (facebook/mms-tts-fra, ...) or any VitsModel.

A model is loaded from a hub id or a local directory by ``VitsVoice.load``, the one code path for
both (tests save a tiny random model to a directory and load it here). Hub downloads are off unless
the operator allows them: a server must not fetch weights at run time by surprise. torch and
transformers are imported on first load, so ``--help`` and espeak-only servers start fast.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_MMS_LANGUAGE = re.compile(r"mms-tts-([a-z]{3})\b")


class VitsVoice:
    """A loaded VITS model and its tokenizer; named "vits:<model id or dir as configured>"."""

    engine = "vits"

    def __init__(self, source: str, model: Any, tokenizer: Any, device: str, language: str) -> None:
        self._source = source
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._language = language
        self._rate = int(model.config.sampling_rate)
        # One forward pass at a time per model: concurrent passes would only fight over the same
        # cores (or GPU) and multiply activation memory.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, source: str, *, device: str = "cpu", allow_download: bool = False) -> VitsVoice:
        """Load model + tokenizer from hub id or directory ``source`` onto ``device`` (cpu/cuda).

        float16 on cuda, float32 on cpu. Raises ValueError with the reason when it cannot load.
        """
        import torch
        from transformers import AutoTokenizer, VitsModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"VITS device {device!r} asked for, but torch sees no CUDA device")
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=not allow_download)
            model: Any = VitsModel.from_pretrained(source, local_files_only=not allow_download, dtype=dtype)
        except (OSError, ValueError) as exc:
            hint = "" if allow_download else " (downloads are off: give a local directory or allow them)"
            raise ValueError(f"cannot load VITS model {source!r}{hint}: {exc}") from exc
        model = model.to(device).eval()
        language = getattr(tokenizer, "language", None) or ""
        if not language:
            match = _MMS_LANGUAGE.search(source)
            language = match.group(1) if match else ""
        log.info("VITS model loaded", extra={"model": source, "device": device, "dtype": str(dtype),
                                             "sample_rate": model.config.sampling_rate})
        return cls(source, model, tokenizer, device, language)

    @property
    def name(self) -> str:
        return f"vits:{self._source}"

    @property
    def language(self) -> str:
        return self._language

    @property
    def sample_rate(self) -> int:
        return self._rate

    def synthesize(self, sentence: str) -> np.ndarray:
        """Speak one sentence (blocking; no gradient). Empty when no character is in the vocabulary."""
        import torch

        inputs = self._tokenizer(sentence, return_tensors="pt")
        ids = inputs["input_ids"]
        pad = self._tokenizer.pad_token_id
        if ids.numel() == 0 or bool((ids == pad).all()):
            # Nothing this model can pronounce (e.g. digits or another script): silence, not
            # an error, so one odd sentence does not end a whole reply.
            log.warning("VITS voice cannot pronounce the sentence", extra={"voice": self.name})
            return np.zeros(0, dtype=np.float32)
        with self._lock, torch.inference_mode():
            output = self._model(input_ids=ids.to(self._device),
                                 attention_mask=inputs["attention_mask"].to(self._device))
            waveform = output.waveform[0]
        return np.ascontiguousarray(waveform.float().cpu().numpy(), dtype=np.float32)
