"""Fixtures of the edge's tests (helpers in edge_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from edge_support import ScriptedOrchestrator, edge_starter


@pytest.fixture
def orchestrator() -> ScriptedOrchestrator:
    return ScriptedOrchestrator()


@pytest.fixture
async def start_edge(orchestrator: ScriptedOrchestrator) -> AsyncIterator[Callable[..., Any]]:
    """``await start_edge(**EdgeConfig fields)``: a scripted orchestrator and an edge in front."""
    async with edge_starter(orchestrator) as start:
        yield start
