"""The live path's STT side under attack (issue 20, items 1, 2, 7, 8a): a real STT process (Whisper
base), attacked over Listen; each case's figures next to what the outside probe saw on the old code.

    python -m bench.reliability.live_stt [--log-dir DIR] [--small]

``--small`` leaves out the 31 MiB bomb (on the old code it takes ~5 GB). Every case ends with a good
request that must be served: the server keeps serving. Whisper runs are counted from the STT log
(one "transcribed" line as each ends).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from bench.reliability import procs
from bench.reliability.matrix import Matrix
from voxline.common.audio import float_to_pcm16, resample
from voxline.testing.speech import PHRASE, english_speech
from voxline.v1 import audio_pb2, stt_pb2, stt_pb2_grpc

RATE = 16_000
CHUNK = 640  # 20 ms
#: The STT engine logs this line (INFO) as each transcription ends.
RUN_LOGGED = "voxline.stt.engine: transcribed"
#: What the probe saw on the old code, per case (issue 20).
PROBE = {
    "low-rate bomb 1 kHz + 8 MiB": "+1,334 MB, OK",
    "low-rate bomb 1 kHz + 31 MiB": "~+5 GB (scaled)",
    "3 × 16 MiB chunks at 8 kHz": "+768 MB (913 → 1,681), OK",
    "Listen flood: 150 s at full speed": "Transcribe after it: DEADLINE_EXCEEDED (60 s); 18 runs over ~3 min",
    "end-of-turn spam ×20": "RESOURCE_EXHAUSTED after 2.4 s ('1 running and 8 queued')",
    "2-byte chunks": "streamed at 0.11× real time, OK; 4 such clients doubled others' latency",
    "10 streams, 16 kHz mono, 60 s each": "(not probed)",
    "4 streams, 48 kHz × 8 ch, 60 s each": "(not probed; turn kept at 8 channels)",
}


@dataclass
class Case:
    name: str
    code: str
    figures: str
    ok: bool


class PeakRss:
    """The highest RSS of ``pid`` while the block runs (sampled every 20 ms), MB."""

    def __init__(self, pid: int) -> None:
        self.pid, self.start, self.peak = pid, procs.rss_mb(pid), 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, procs.rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self.peak = self.start
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, procs.rss_mb(self.pid))

    @property
    def growth_mb(self) -> float:
        return self.peak - self.start


def runs_logged(log_path: Path) -> int:
    return log_path.read_text(encoding="utf-8", errors="replace").count(RUN_LOGGED)


def speech_pcm(seconds: float) -> bytes:
    """About ``seconds`` of real (synthesised) speech, sentences with 0.4 s pauses, 16 kHz s16le."""
    samples, native = english_speech(PHRASE)
    sentence = resample(np.asarray(samples), native, RATE)
    pause = np.zeros(int(0.4 * RATE), dtype=np.float32)
    unit = np.concatenate([sentence, pause])
    count = max(1, int(np.ceil(seconds * RATE / len(unit))))
    return float_to_pcm16(np.tile(unit, count)[:int(seconds * RATE)])


def listen_config(rate: int = RATE) -> stt_pb2.ListenRequest:
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=rate, channels=1)
    return stt_pb2.ListenRequest(config=stt_pb2.ListenConfig(
        recognition=stt_pb2.RecognitionConfig(format=fmt, language="en")))


def audio_messages(pcm: bytes, chunk: int = CHUNK) -> Iterator[stt_pb2.ListenRequest]:
    for i in range(0, len(pcm), chunk):
        yield stt_pb2.ListenRequest(audio=pcm[i:i + chunk])


async def listen(stub: stt_pb2_grpc.SpeechToTextStub, messages: AsyncIterator[stt_pb2.ListenRequest]
                 | Iterator[stt_pb2.ListenRequest], deadline_s: float = 300.0) -> tuple[str, int]:
    """Run one Listen call; (its status code name, end-of-turn events)."""
    finals = 0
    try:
        async for reply in stub.Listen(messages, timeout=deadline_s):
            finals += reply.HasField("end_of_turn")
        return "OK", finals
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, finals


async def good_transcribe(stub: stt_pb2_grpc.SpeechToTextStub, pcm: bytes, deadline_s: float = 120.0
                          ) -> tuple[str, float]:
    """A good Transcribe of ``pcm``: (status code name, seconds it took)."""
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=RATE, channels=1)
    started = time.perf_counter()
    try:
        await stub.Transcribe(stt_pb2.TranscribeRequest(
            audio=pcm, config=stt_pb2.RecognitionConfig(format=fmt, language="en")), timeout=deadline_s)
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
    return code, time.perf_counter() - started


async def bombs(stub: stt_pb2_grpc.SpeechToTextStub, pid: int, small: bool) -> list[Case]:
    cases = []
    plans = [("low-rate bomb 1 kHz + 8 MiB", 1_000, 8, 1)]
    if not small:
        plans.append(("low-rate bomb 1 kHz + 31 MiB", 1_000, 31, 1))
    plans.append(("3 × 16 MiB chunks at 8 kHz", 8_000, 16, 3))
    for name, rate, mib, sessions in plans:
        with PeakRss(pid) as rss:
            results = await asyncio.gather(*[
                listen(stub, iter([listen_config(rate), stt_pb2.ListenRequest(audio=bytes(mib << 20))]))
                for _ in range(sessions)])
        codes = sorted({code for code, _ in results})
        after = procs.rss_mb(pid) - rss.start
        # the bound (100 MB) is per session: 16 MiB messages cost gRPC ~2x their size while read
        cases.append(Case(name, "/".join(codes), f"RSS peak +{rss.growth_mb:.0f} MB, after +{after:.0f} MB",
                          rss.growth_mb / sessions <= 100 and "OK" not in codes))
    return cases


async def flood(stub: stt_pb2_grpc.SpeechToTextStub, log_path: Path, speech: bytes, good: bytes) -> Case:
    """150 s of speech into one Listen stream at full speed, then a good Transcribe."""
    runs_before = runs_logged(log_path)
    started = time.perf_counter()
    code, _ = await listen(stub, iter([listen_config(), *audio_messages(speech)]))
    flood_s = time.perf_counter() - started
    runs_during = runs_logged(log_path) - runs_before
    good_code, good_s = await good_transcribe(stub, good)
    after = runs_logged(log_path) - runs_before - runs_during - 1
    return Case("Listen flood: 150 s at full speed", code,
                f"stream ended after {flood_s:.1f} s with {runs_during} Whisper runs; a good "
                f"Transcribe after it: {good_code} in {good_s:.2f} s ({max(after, 0)} stale runs first)",
                good_code == "OK" and good_s <= 5.0)


async def spam(stub: stt_pb2_grpc.SpeechToTextStub, log_path: Path, speech: bytes, good: bytes) -> Case:
    """Speech, then 20 × (end of turn, 0.5 s more speech), at full speed; another user's Transcribe
    right after."""
    runs_before = runs_logged(log_path)
    half_s = RATE  # 0.5 s of s16le mono

    async def messages() -> AsyncIterator[stt_pb2.ListenRequest]:
        yield listen_config()
        for message in audio_messages(speech[:4 * RATE * 2]):
            yield message
        for i in range(20):
            yield stt_pb2.ListenRequest(end_turn=stt_pb2.EndTurn())
            for message in audio_messages(speech[(4 + i) * RATE * 2:(4 + i) * RATE * 2 + half_s]):
                yield message
        yield stt_pb2.ListenRequest(end_turn=stt_pb2.EndTurn())

    started = time.perf_counter()
    (code, finals), (good_code, good_s) = await asyncio.gather(
        listen(stub, messages()), good_transcribe(stub, good))
    spam_s = time.perf_counter() - started
    runs = runs_logged(log_path) - runs_before - 1
    return Case("end-of-turn spam ×20", code,
                f"{finals} end of turn, {runs} Whisper runs for it, {spam_s:.1f} s; another user's "
                f"Transcribe meanwhile: {good_code} in {good_s:.2f} s",
                code == "OK" and finals == 1 and good_code == "OK")


async def tiny_chunks(stub: stt_pb2_grpc.SpeechToTextStub, address: str, good: bytes) -> Case:
    """5,000 two-byte chunks, through the sync client (grpc.aio's client reports a write that fails
    as the server ends the call as INTERNAL, not the server's status: grpc/grpc#36066)."""
    messages = [listen_config(), *audio_messages(bytes(10_000), chunk=2)]

    def call() -> str:
        with grpc.insecure_channel(address) as channel:
            try:
                list(stt_pb2_grpc.SpeechToTextStub(channel).Listen(iter(messages), timeout=120))
            except grpc.RpcError as exc:
                return str(exc.code().name)  # type: ignore[attr-defined]  # a grpc.Call too
        return "OK"

    started = time.perf_counter()
    code = await asyncio.to_thread(call)
    took = time.perf_counter() - started
    good_code, good_s = await good_transcribe(stub, good)
    return Case("2-byte chunks", code, f"5,000 chunks: refused after {took:.2f} s; a good "
                f"Transcribe after it: {good_code} in {good_s:.2f} s", code == "RESOURCE_EXHAUSTED")


async def stream_memory(stub: stt_pb2_grpc.SpeechToTextStub, pid: int, speech: bytes, sessions: int,
                        rate: int, channels: int, seconds: float) -> Case:
    """``sessions`` Listen streams at once, each sending ``seconds`` of speech (one long turn with
    pauses) at full speed, twice: the RSS they cost at their peak, and after they ended. The first
    round also fills the allocator's and CTranslate2's caches for long clips (kept, flat after):
    the second round says whether a stream's memory is given back."""
    mono = np.frombuffer(speech, dtype="<i2")[:int(seconds * RATE)].astype(np.float32) / 32768.0
    wide = resample(mono, RATE, rate) if rate != RATE else mono
    pcm = float_to_pcm16(np.repeat(wide, channels).astype(np.float32))
    frame = rate // 50 * 2 * channels  # 20 ms

    def messages() -> Iterator[stt_pb2.ListenRequest]:
        fmt = audio_pb2.AudioFormat(encoding=audio_pb2.PCM_S16LE, sample_rate_hz=rate, channels=channels)
        yield stt_pb2.ListenRequest(config=stt_pb2.ListenConfig(
            recognition=stt_pb2.RecognitionConfig(format=fmt, language="en")))
        yield from audio_messages(pcm, frame)

    name = (f"{sessions} streams, {rate // 1000} kHz mono, {seconds:.0f} s each" if channels == 1 else
            f"{sessions} streams, {rate // 1000} kHz × {channels} ch, {seconds:.0f} s each")
    figures, codes, after = [], set(), 0.0
    for round_ in (1, 2):
        with PeakRss(pid) as rss:
            results = await asyncio.gather(*[listen(stub, messages()) for _ in range(sessions)])
        after = procs.rss_mb(pid) - rss.start
        codes |= {code for code, _ in results}
        figures.append(f"round {round_}: RSS peak +{rss.growth_mb:.0f} MB ({rss.growth_mb / sessions:.1f} "
                       f"MB a stream), after they ended +{after:.0f} MB")
    return Case(name, "/".join(sorted(codes)), "; ".join(figures),
                after <= 20 and "INTERNAL" not in codes and "UNKNOWN" not in codes)


async def run_live_path(matrix: Matrix | None, address: str, pid: int, log_path: Path,
                        small: bool = False, echo: object = print) -> list[Case]:
    """Every case against the STT process at ``address``; rows go into ``matrix`` (area "live path")."""
    speech = speech_pcm(150.0)
    good = speech_pcm(4.0)
    cases: list[Case] = []
    async with grpc.aio.insecure_channel(address, options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = stt_pb2_grpc.SpeechToTextStub(channel)
        cases += await bombs(stub, pid, small)
        cases.append(await flood(stub, log_path, speech, good))
        cases.append(await spam(stub, log_path, speech, good))
        cases.append(await tiny_chunks(stub, address, good))
        cases.append(await stream_memory(stub, pid, speech, 10, RATE, 1, 60.0))
        cases.append(await stream_memory(stub, pid, speech, 4, 48_000, 8, 60.0))
    for case in cases:
        if matrix is not None:
            row = matrix.row("live path", f"stt {case.name}")
            row.record(case.ok, case.code, case.figures)
            row.notes = f"{case.figures}; probe, old code: {PROBE[case.name]}"
        if callable(echo):
            echo(f"live path: {case.name}: {case.code}, {case.figures}")
    return cases


def table(cases: list[Case]) -> str:
    lines = ["| case | probe, old code | now: status | now: figures | ok |", "|---|---|---|---|---|"]
    lines += [f"| {c.name} | {PROBE[c.name]} | {c.code} | {c.figures} | {'yes' if c.ok else 'NO'} |"
              for c in cases]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-dir", type=Path, default=Path("bench-report/live-stt"))
    parser.add_argument("--small", action="store_true", help="leave out the 31 MiB bomb")
    args = parser.parse_args()
    stt = procs.start("stt", [], args.log_dir)
    try:
        assert stt.log_path is not None
        cases = asyncio.run(run_live_path(None, stt.address, stt.proc.pid, stt.log_path, args.small))
    finally:
        stt.stop()
    print(table(cases))


if __name__ == "__main__":
    main()
