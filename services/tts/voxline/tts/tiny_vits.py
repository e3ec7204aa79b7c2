"""A tiny, randomly initialised VITS model saved like a real one, for tests and benchmarks.

It babbles noise, but it is a genuine ``VitsModel`` + char-level ``VitsTokenizer`` written with
``save_pretrained``, so ``VitsVoice.load`` reads it exactly as it reads facebook/mms-tts-fra.
"""

from __future__ import annotations

import json
from pathlib import Path

_CHARACTERS = list(" abcdefghijklmnopqrstuvwxyz'.,!?-")


def build_tiny_vits(directory: str | Path, *, sample_rate: int = 16_000, seed: int = 0) -> Path:
    """Write a tiny random VITS model and its tokenizer to ``directory``; returns the directory."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.json"
    vocab_file.write_text(json.dumps({c: i for i, c in enumerate(_CHARACTERS)}), encoding="utf-8")
    tokenizer = VitsTokenizer(str(vocab_file), phonemize=False, add_blank=True, normalize=True)
    config = VitsConfig(
        vocab_size=len(_CHARACTERS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ffn_dim=32, flow_size=16, spectrogram_bins=33, upsample_initial_channel=32,
        upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 16, 4, 4],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1, posterior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1, duration_predictor_filter_channels=16,
        depth_separable_num_layers=1, sampling_rate=sample_rate,
    )
    torch.manual_seed(seed)
    VitsModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
