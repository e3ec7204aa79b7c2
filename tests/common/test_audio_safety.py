"""Audio from a client is data, never a reference: no container may make the decoder open a file,
and no small file may expand past the duration limit in memory (issue 10, defects 1 and 2)."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest

from voxline.common.audio import decode, to_wav_bytes
from voxline.common.errors import InvalidInput, LimitExceeded

SECRET_WORDS = 0.25  # amplitude of the secret file's tone: would show up in the decoded samples


@pytest.fixture()
def secret_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory holds a WAV that a file-following demuxer would happily read."""
    tone = SECRET_WORDS * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)
    (tmp_path / "secret_note.wav").write_bytes(to_wav_bytes(tone.astype(np.float32), 16_000))
    (tmp_path / "secret_note.flac").write_bytes(_flac(np.zeros(16_000, np.int16), 16_000))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _flac(samples: np.ndarray, rate: int, repeat: int = 1) -> bytes:
    """FLAC of ``samples`` (int16, mono) written ``repeat`` times in a row."""
    out = io.BytesIO()
    with av.open(out, "w", format="flac") as handle:
        stream = handle.add_stream("flac", rate=rate, layout="mono")
        for index in range(repeat):
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = index * len(samples)
            for packet in stream.encode(frame):
                handle.mux(packet)
        for packet in stream.encode(None):
            handle.mux(packet)
    return out.getvalue()


# Formats FFmpeg can open that name other files or URLs inside them.
REFERENCING = {
    "concat": b"ffconcat version 1.0\nfile secret_note.wav\n",
    "concat absolute": b"ffconcat version 1.0\nfile /etc/hostname\n",
    "hls playlist": b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nsecret_note.wav\n#EXT-X-ENDLIST\n",
    "m3u playlist": b"#EXTM3U\n#EXTINF:1,secret\nsecret_note.flac\n",
    "dash manifest": (b'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">'
                      b'<Period><AdaptationSet><Representation id="a" bandwidth="1">'
                      b"<BaseURL>secret_note.flac</BaseURL></Representation></AdaptationSet></Period></MPD>"),
    "image2 pattern": b"secret_note.%03d.wav",
    "ffmetadata": b";FFMETADATA1\ntitle=x\n",
    "file url": b"file:secret_note.wav",
    "subfile url": b"subfile,,start,0,end,0,,:secret_note.wav",
}


@pytest.mark.parametrize("name", list(REFERENCING))
@pytest.mark.parametrize("encoding", [None, "flac", "ogg_opus", "mp3", "aiff"])
def test_a_file_referencing_format_is_refused_and_opens_no_file(
    secret_dir: Path, name: str, encoding: str | None
) -> None:
    with pytest.raises(InvalidInput) as info:
        decode(REFERENCING[name], encoding)
    # Refused for what it is, before any demuxer could follow the reference.
    assert "not" in str(info.value) or "unrecognised" in str(info.value)


@pytest.mark.parametrize("encoding", ["flac", "ogg_opus", "mp3", "aiff"])
def test_magic_bytes_in_front_of_a_concat_script_read_no_file(secret_dir: Path, encoding: str) -> None:
    magic = {"flac": b"fLaC", "ogg_opus": b"OggS", "mp3": b"ID3", "aiff": b"FORM\0\0\0\0AIFF"}[encoding]
    with pytest.raises(InvalidInput):
        decode(magic + b"\nffconcat version 1.0\nfile secret_note.wav\n", encoding)


def test_a_flac_bomb_stops_at_the_limit_without_decoding_the_rest() -> None:
    # 30 minutes of 8 kHz silence compress to a few hundred KiB.
    bomb = _flac(np.zeros(8_000 * 60, np.int16), 8_000, repeat=30)
    assert len(bomb) < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded) as info:
            decode(bomb, "flac", max_seconds=120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "limit of 120 s" in str(info.value)
    # The whole clip is 14.4 M float32 samples (58 MB at the source rate, more after resampling);
    # decoding must stop near the 120 s limit (3.8 MB of samples).
    assert peak < 20_000_000, f"peak {peak / 1e6:.1f} MB while decoding a bomb"


def test_a_flac_under_the_limit_still_decodes() -> None:
    clip = _flac((np.sin(np.arange(8_000 * 3) / 3) * 8000).astype(np.int16), 8_000)
    decoded = decode(clip, "flac", max_seconds=120)
    assert decoded.source_rate == 8_000 and decoded.duration_s == pytest.approx(3.0, abs=0.01)
