"""Load on the fake stack: sessions × turns, readers that never read, abandoned streams."""

from __future__ import annotations

import asyncio

import grpc

from bench.reliability import procs
from bench.reliability.converse import COMPLETED, Session
from bench.reliability.matrix import Matrix


async def sessions(matrix: Matrix, address: str, pid: int, count: int, turns: int) -> None:
    """``count`` concurrent sessions of ``turns`` turns each (text and audio turns alternating)."""
    row = matrix.row("load", f"{count} sessions × {turns} turns")
    before = procs.rss_mb(pid)
    async with grpc.aio.insecure_channel(address) as channel:
        async def one(index: int) -> None:
            session = Session(channel)
            try:
                for turn in range(turns):
                    result = await session.turn(audio_s=0.4 if (index + turn) % 2 else 0.0)
                    ok = result.status == COMPLETED
                    row.turns_lost += int(not ok)
                    row.record(ok, result.status, f"session {index} turn {turn}: {result.error}")
                code = await session.close()
                if code != "OK":
                    row.failures.append(f"session {index} closed with {code}")
            finally:
                session.cancel()

        await asyncio.gather(*(one(i) for i in range(count)))
    row.memory_growth_mb = procs.rss_mb(pid) - before


async def slow_readers(matrix: Matrix, address: str, pid: int, readers: int, turns_each: int,
                       window_s: float, bound_mb: float) -> None:
    """Streams that send turns and never read: the orchestrator's memory must stay bounded, and a
    normal session must still be served meanwhile and after they are gone."""
    row = matrix.row("load", f"{readers} slow readers × {turns_each} turns")
    before = procs.rss_mb(pid)
    async with grpc.aio.insecure_channel(address) as channel:
        stuck = [Session(channel) for _ in range(readers)]
        try:
            for session in stuck:
                for _ in range(turns_each):
                    await session.send_turn()
            # a measuring window, not synchronisation: how far memory grows while nobody reads
            await asyncio.sleep(window_s)
            peak = procs.rss_mb(pid) - before
            served = await Session(channel).turn(timeout_s=30)
        finally:
            for session in stuck:
                session.cancel()
        after = await Session(channel).turn(timeout_s=30)
    row.memory_growth_mb = peak
    ok = peak < bound_mb and served.status == COMPLETED and after.status == COMPLETED
    row.turns_lost += int(served.status != COMPLETED) + int(after.status != COMPLETED)
    row.record(ok, served.status, f"growth {peak:.0f} MB (bound {bound_mb:g}); meanwhile "
                                  f"{served.status} {served.error[:60]}; after {after.status}")
    row.notes = f"bound {bound_mb:g} MB; after cancel {procs.rss_mb(pid) - before:+.1f} MB"


async def abandoned(matrix: Matrix, address: str, pid: int, count: int) -> None:
    """Streams cancelled right after their turn's first output; the next session is served."""
    row = matrix.row("load", f"{count} abandoned streams")
    before = procs.rss_mb(pid)
    async with grpc.aio.insecure_channel(address) as channel:
        for _ in range(count):
            session = Session(channel)
            await session.send_turn()
            await session.call.read()
            session.cancel()
            result = await Session(channel).turn(timeout_s=30)
            row.turns_lost += int(result.status != COMPLETED)
            row.record(result.status == COMPLETED, result.status, result.error)
    row.memory_growth_mb = procs.rss_mb(pid) - before
