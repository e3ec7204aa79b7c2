"""Property-based fuzzing of every RPC, from the proto descriptors, plus byte-mutated messages.

``hypothesis`` draws the cases: a strategy is built from each request message's descriptor (every
field optional; scalars mixed with values known to matter here — sample rates, roles, voice names,
NUL, 5,000-character strings, audio bytes of several containers — and oneofs, enums out of range,
nested messages), and a second strategy mutates serialised valid messages byte by byte. Cases are
drawn first (no shrinking: the matrix counts every case, and a failing case keeps its bytes for a
repro), then sent over a raw channel (bytes, no client-side validation), one at a time.

A case passes when its status is neither UNKNOWN nor INTERNAL, it ends before its deadline (a
DEADLINE_EXCEEDED at our own deadline is a hang), and the server still answers health and a good
request afterwards.
"""

from __future__ import annotations

import asyncio
import io
import random
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import hypothesis
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench.reliability.matrix import Row
from voxline.testing.fake_servers import tone_pcm

FD = pb_descriptor.FieldDescriptor

INTERESTING_STRINGS = [
    "", " ", "user", "assistant", "system", "robot", "en", "fr", "auto", "espeak:en", "piper:joe",
    "vits:/etc/passwd", "cerebras", "groq", "local", "openai", "smart", "none", "Hello there.",
    "Bonjour, comment ça va ?", "中" * 60, "\x00", "a\x00b", "x" * 5000, "\u202e\ufeff", "%s%n{0}",
]
INTERESTING_INTS = [0, 1, -1, 2, 8, 255, 8000, 16000, 22050, 48000, 192001, 2_000_000_000,
                    2**31 - 1, -(2**31)]


def _wav(pcm: bytes, rate: int = 16000, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def interesting_bytes() -> list[bytes]:
    """Audio-ish payloads: PCM, WAV (good, lying header, truncated), FLAC/OGG magic, file lists."""
    pcm = tone_pcm(0.3)
    wav = _wav(pcm)
    return [b"", pcm, pcm[:-1], wav, wav[:60], wav[:44] + b"\xff" * 100,
            wav.replace(b"\x80>\x00\x00", b"\xff\xff\xff\x7f", 1), b"fLaC" + bytes(200),
            b"OggS" + bytes(200), b"ffconcat version 1.0\nfile secret.wav\n",
            b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", b"\x00" * 1000, bytes(range(256))]


_INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1), FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1), FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1), FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(f: pb_descriptor.FieldDescriptor, blobs: list[bytes]) -> st.SearchStrategy[Any]:
    if f.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.one_of(st.sampled_from([0.0, -1.0, 0.5, 1.0, 2.0, 3.0, 1e9, -1e9]),
                         st.floats(width=32))
    if f.type in _INT_RANGES:
        lo, hi = _INT_RANGES[f.type]
        return st.one_of(st.sampled_from([i for i in INTERESTING_INTS if lo <= i <= hi]),
                         st.integers(lo, hi))
    if f.type == FD.TYPE_BOOL:
        return st.booleans()
    if f.type == FD.TYPE_STRING:
        return st.one_of(st.sampled_from(INTERESTING_STRINGS), st.text(max_size=40))
    if f.type == FD.TYPE_BYTES:
        return st.one_of(st.sampled_from(blobs), st.binary(max_size=2048))
    if f.type == FD.TYPE_ENUM:
        assert f.enum_type is not None
        known = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-3, 40))
    raise TypeError(f"no strategy for field type {f.type}")


def message_strategy(desc: pb_descriptor.Descriptor, depth: int = 0,
                     blobs: list[bytes] | None = None) -> st.SearchStrategy[Any]:
    """Messages of type ``desc`` with any subset of fields set (nested messages to depth 3)."""
    blobs = blobs if blobs is not None else interesting_bytes()
    cls = message_factory.GetMessageClass(desc)
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        inner: st.SearchStrategy[Any]
        if f.type == FD.TYPE_MESSAGE:
            if depth >= 3 or f.message_type is None:
                continue
            inner = _nested(f.message_type, depth + 1, blobs)
        else:
            inner = _scalar(f, blobs)
        is_repeated = getattr(f, "is_repeated", None)
        repeated = (is_repeated if isinstance(is_repeated, bool)
                    else getattr(f, "label", None) == FD.LABEL_REPEATED)
        optional[f.name] = st.lists(inner, max_size=4) if repeated else inner

    def build(values: dict[str, Any]) -> Any:
        msg = cls()
        for name, value in values.items():
            f = desc.fields_by_name[name]
            try:
                if isinstance(value, list):
                    target = getattr(msg, name)
                    for item in value:
                        if f.type == FD.TYPE_MESSAGE:
                            target.add().CopyFrom(item)
                        else:
                            target.append(item)
                elif f.type == FD.TYPE_MESSAGE:
                    getattr(msg, name).CopyFrom(value)
                else:
                    setattr(msg, name, value)
            except (ValueError, TypeError):
                continue  # a closed enum refusing a value: leave the field unset
        return msg

    return st.fixed_dictionaries({}, optional=optional).map(build)


def _nested(desc: pb_descriptor.Descriptor, depth: int, blobs: list[bytes]
            ) -> st.SearchStrategy[Any]:
    def build() -> st.SearchStrategy[Any]:
        return message_strategy(desc, depth, blobs)

    return st.deferred(build)


def mutate(data: bytes, rng: random.Random, steps: int) -> bytes:
    """``data`` with ``steps`` random byte edits: flip, insert, delete, truncate, duplicate."""
    buf = bytearray(data)
    for _ in range(steps):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 2 and buf:
            del buf[pos:pos + rng.randrange(1, 16)]
        elif op == 3:
            del buf[pos:]
        else:
            buf[pos:pos] = buf[pos:pos + rng.randrange(1, 32)]
    return bytes(buf)


@dataclass(frozen=True)
class Rpc:
    """One method to fuzz, and what a good request (or request stream) looks like."""

    service: str
    method: str
    request: pb_descriptor.Descriptor
    client_streaming: bool
    server_streaming: bool
    #: Valid request messages; the fuzzer also starts streams with them and mutates them.
    templates: Sequence[Any] = field(default_factory=tuple)
    #: Seconds a case may take before it counts as a hang.
    deadline_s: float = 30.0

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"

    @property
    def label(self) -> str:
        return f"{self.service.rsplit('.', 1)[-1]}.{self.method}"


def draw(strategy: st.SearchStrategy[Any], count: int, seed: int) -> list[Any]:
    """``count`` examples from ``strategy`` (hypothesis generation only, deterministic per seed)."""
    out: list[Any] = []

    @hypothesis.seed(seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out[:count]


def cases_for(rpc: Rpc, count: int, seed: int) -> dict[str, list[list[bytes]]]:
    """Two families of cases for ``rpc``: descriptor-generated and byte-mutated; each case is the
    list of serialised request messages (one for a unary request)."""
    msgs = message_strategy(rpc.request)
    templates = list(rpc.templates)
    if rpc.client_streaming:
        prefix = st.sampled_from([[], *([t] for t in templates[:1]), templates])
        generated: st.SearchStrategy[Any] = st.tuples(prefix, st.lists(msgs, min_size=0, max_size=4)
                                                      ).map(lambda p: [*p[0], *p[1]])
    else:
        generated = msgs.map(lambda m: [m])
    half = max(1, count // 2)
    by_descriptor = [[m.SerializeToString() for m in case] for case in draw(generated, half, seed)]
    # Byte mutations of valid templates and of the generated cases (seeded, so a run repeats).
    rng = random.Random(seed)
    bases = [[t.SerializeToString() for t in templates]] if templates else []
    bases += [case for case in by_descriptor if case and any(case)]
    by_mutation = []
    for _ in range(count - half):
        raw = list(rng.choice(bases)) if bases else [b""]
        index = rng.randrange(len(raw))
        raw[index] = mutate(raw[index], rng, rng.randint(1, 6))
        by_mutation.append(raw)
    return {"descriptor": by_descriptor, "mutated": by_mutation}


async def send_raw(channel: grpc.aio.Channel, rpc: Rpc, payloads: list[bytes]) -> tuple[str, str, float]:
    """Send ``payloads`` as one call; (status code name, details, seconds)."""
    started = time.monotonic()
    try:
        if rpc.client_streaming:
            call = channel.stream_stream(rpc.path)(iter(payloads), timeout=rpc.deadline_s)
            async for _ in call:
                pass
        elif rpc.server_streaming:
            async for _ in channel.unary_stream(rpc.path)(payloads[0], timeout=rpc.deadline_s):
                pass
        else:
            await channel.unary_unary(rpc.path)(payloads[0], timeout=rpc.deadline_s)
        return "OK", "", time.monotonic() - started
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or "", time.monotonic() - started


async def healthy(channel: grpc.aio.Channel) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                               timeout=10)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def fuzz_rpc(address: str, rpc: Rpc, count: int, seed: int, rows: Callable[[str], Row],
                   good: Callable[[grpc.aio.Channel], Any], good_every: int = 25) -> None:
    """Run ``count`` cases against ``rpc`` at ``address``, recording into ``rows(family)``."""
    families = await asyncio.to_thread(cases_for, rpc, count, seed)
    async with grpc.aio.insecure_channel(address, options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024)]) as channel:
        for family, cases in families.items():
            row = rows(family)
            for index, payloads in enumerate(cases):
                code, details, seconds = await send_raw(channel, rpc, payloads)
                hang = code == "DEADLINE_EXCEEDED" and seconds >= rpc.deadline_s * 0.95
                ok, why = True, ""
                if code in ("UNKNOWN", "INTERNAL"):
                    ok, why = False, f"{code}: {details[:120]} <- {payloads!r:.160}"
                elif hang:
                    ok, why = False, f"hang > {rpc.deadline_s:.0f} s <- {payloads!r:.160}"
                elif not await healthy(channel):
                    ok, why = False, f"server not healthy after {code} <- {payloads!r:.160}"
                elif index % good_every == good_every - 1 or index == len(cases) - 1:
                    try:
                        await good(channel)
                    except Exception as exc:  # the next good request must be served
                        ok, why = False, f"good request failed after this case: {exc!r:.120}"
                row.record(ok, code, why)
