"""The reliability suite's smoke variant (CI): every RPC fuzzed from its descriptor and by byte
mutation, resource checks, provider and stage faults, load on the fake stack — small sizes, all on
127.0.0.1. The full run is ``python -m bench --sections reliability``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.reliability.matrix import Matrix
from bench.reliability.run import SMOKE, run_suite

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    log_dir: Path = tmp_path_factory.mktemp("reliability")
    return asyncio.run(run_suite(SMOKE, log_dir, echo=lambda _: None))


def _failures(matrix: Matrix, area: str, prefix: str = "") -> list[str]:
    return [f"{r.case}: {r.passed}/{r.tried}, lost {r.turns_lost}: {r.failures}"
            for r in matrix.rows if r.area == area and r.case.startswith(prefix) and not r.ok]


def test_every_rpc_is_fuzzed_without_unknown_internal_or_hang(matrix: Matrix) -> None:
    fuzzed = {r.case.rsplit(" ", 1)[0] for r in matrix.rows if r.area == "fuzz"}
    assert {"LanguageModel.Generate", "LanguageModel.ListProviders", "TextToSpeech.Synthesize",
            "TextToSpeech.ListVoices", "VoiceAssistant.Converse"} <= fuzzed
    assert matrix.totals("fuzz")[0] >= 4 * SMOKE.fuzz_per_rpc  # empty messages: one distinct case
    assert matrix.bad_codes("fuzz") == 0, _failures(matrix, "fuzz")
    assert not _failures(matrix, "fuzz")


def test_provider_faults_fall_back_or_fail_fast(matrix: Matrix) -> None:
    rows = [r for r in matrix.rows if r.case.startswith("provider ")]
    assert len(rows) == 5 and not _failures(matrix, "fault", "provider ")


def test_load_on_the_fake_stack_loses_no_turn(matrix: Matrix) -> None:
    assert matrix.totals("load")[0] >= SMOKE.sessions * SMOKE.turns
    assert not _failures(matrix, "load")


def test_tts_bomb_classes_are_handled_and_memory_stays_flat(matrix: Matrix) -> None:
    rows = [r for r in matrix.rows if r.area == "resources" and r.case.startswith("tts ")]
    assert rows and not [r for r in rows if not r.ok]
    assert all(r.memory_growth_mb is not None and r.memory_growth_mb < 100 for r in rows)


def test_every_fault_class_is_in_the_matrix(matrix: Matrix) -> None:
    cases = {r.case for r in matrix.rows if r.area == "fault"}
    assert {"kill stt mid-turn, restart", "kill llm mid-turn, restart", "kill tts mid-turn, restart",
            "orchestrator SIGTERM mid-turn"} <= cases
    assert all(r.tried >= 1 for r in matrix.rows if r.area == "fault")
    text = "\n".join(matrix.markdown())
    assert "| fault | kill llm mid-turn, restart |" in text
