"""deploy/grafana: the dashboard queries only series that voxline's metrics endpoint serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from voxline.common import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "voxline-latency.json"
#: A metric name in PromQL: an identifier directly followed by a label selector.
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def served_series() -> set[str]:
    """Every sample name this process's endpoint serves once each instrument has a value."""
    assert metrics.setup_metrics("voxline-test", port=0) is not None
    with metrics.tracking_call("/voxline.v1.VoiceAssistant/Converse"):
        pass
    metrics.record_turn("completed", stt_ms=1, llm_ttft_ms=1, llm_total_ms=1, tts_first_audio_ms=1,
                        time_to_first_audio_ms=1, llm_provider="local")
    metrics.record_stage_retry("tts")
    text = generate_latest(REGISTRY).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "voxline-latency"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])


def test_every_query_reads_a_series_the_services_serve() -> None:
    served = served_series()
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for p in panels(dashboard) for t in p["targets"] for name in SELECTOR.findall(t["expr"])}
    assert used, "no metric found in the queries"
    assert used <= served, f"the dashboard reads series nobody serves: {sorted(used - served)}"


def test_the_latency_analysts_figures_are_all_there() -> None:
    text = DASHBOARD.read_text()
    for series in ("voxline_turn_time_to_first_audio_seconds_bucket", "voxline_stt_duration_seconds_bucket",
                   "gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
                   "voxline_tts_time_to_first_audio_seconds_bucket", metrics.PROMETHEUS_TURNS,
                   metrics.PROMETHEUS_ACTIVE_REQUESTS, metrics.PROMETHEUS_ACTIVE_SESSIONS):
        assert series in text, series
    assert "histogram_quantile(0.95" in text
