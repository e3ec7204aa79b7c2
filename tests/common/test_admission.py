"""AdmissionGate: N run, M wait, the rest are refused with LimitExceeded."""

from __future__ import annotations

import asyncio

import pytest

from voxline.common.admission import AdmissionGate
from voxline.common.errors import LimitExceeded


async def test_queue_then_refuse() -> None:
    gate = AdmissionGate(max_active=1, max_queued=1, what="transcriptions")
    release = asyncio.Event()
    entered: list[int] = []

    async def job(n: int) -> None:
        async with gate.admit():
            entered.append(n)
            await release.wait()

    first = asyncio.create_task(job(1))
    await asyncio.sleep(0)  # let it take the slot
    second = asyncio.create_task(job(2))
    await asyncio.sleep(0)  # let it queue
    assert gate.waiting == 1
    with pytest.raises(LimitExceeded, match="1 transcriptions running and 1 queued"):
        async with gate.admit():
            pass
    release.set()
    await asyncio.gather(first, second)
    assert entered == [1, 2]
    async with gate.admit():  # free again
        pass
