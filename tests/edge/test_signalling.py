"""The edge's HTTP surface and a WebRTC session against a scripted orchestrator: offers answered,
bad ones refused with the right status, the peer limit, tokens, idle peers, health, metrics, and
reply playback flushed at once when the orchestrator says the reply was interrupted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from edge_support import ScriptedOrchestrator, speech_like, until

from voxline.edge.client import EdgeClient

pytestmark = pytest.mark.asyncio


async def _post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/offer", data=body if isinstance(body, bytes) else json.dumps(body),
            headers=headers or {}) as response:
        return response.status, await response.json()


async def test_bad_offers_get_400_with_a_reason(start_edge: Any) -> None:
    running = await start_edge()
    status, body = await _post(running.url, b"{not json")
    assert status == 400 and "expected JSON" in body["error"]
    status, body = await _post(running.url, {"sdp": "v=0\r\nnonsense", "type": "offer"})
    assert status == 400 and "audio" in body["error"]
    status, body = await _post(running.url, {"sdp": "m=audio garbage\r\n", "type": "offer"})
    assert status == 400 and "SDP" in body["error"]
    status, body = await _post(running.url, {"sdp": "m=audio 9 UDP 0\r\n", "type": "answer"})
    assert status == 400 and "offer" in body["error"]
    # the edge keeps serving, and no slot leaked
    assert running.edge.taken == 0
    async with aiohttp.ClientSession() as http, http.get(f"{running.url}/health") as response:
        assert response.status == 200 and (await response.json())["status"] == "SERVING"


async def test_token_is_required_when_configured(start_edge: Any, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    running = await start_edge(auth_token_file=str(token))
    status, body = await _post(running.url, {"sdp": "x", "type": "offer"})
    assert status == 401 and "token" in body["error"]
    status, _ = await _post(running.url, {"sdp": "x", "type": "offer"}, {"Authorization": "Bearer wrong"})
    assert status == 401
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{running.url}/config") as response:
            assert response.status == 401  # it may hold TURN credentials
        async with http.get(f"{running.url}/config?token=s3cret") as response:
            assert response.status == 200 and (await response.json())["tokenRequired"] is True
    client = EdgeClient(running.url, token="s3cret")
    await client.connect()
    await client.close()


async def test_past_max_peers_a_clear_503_and_the_slot_comes_back(start_edge: Any) -> None:
    running = await start_edge(max_peers=1)
    first = EdgeClient(running.url)
    await first.connect()
    second = EdgeClient(running.url)
    with pytest.raises(ConnectionRefusedError, match=r"503: the edge is full \(1 sessions\)"):
        await second.connect()
    await second.close()
    assert running.edge.webrtc and "voxline_edge_peers_open{transport=\"webrtc\"} 1.0" in (
        running.edge.metrics.render().decode())
    await first.close()
    await until(lambda: running.edge.taken == 0)
    third = EdgeClient(running.url)
    await third.connect()
    await third.close()


async def test_idle_peer_is_closed_with_a_reason(start_edge: Any) -> None:
    running = await start_edge(idle_timeout_s=0.5)
    client = EdgeClient(running.url)
    await client.connect()
    closed = await client.wait_for(lambda e: e["type"] == "closed", 10)
    assert "idle" in closed["reason"]
    await until(lambda: running.edge.taken == 0)
    await client.close()


async def test_health_says_not_serving_when_the_orchestrator_is_not(
        start_edge: Any, orchestrator: ScriptedOrchestrator) -> None:
    running = await start_edge()
    assert orchestrator.health is not None
    await orchestrator.health.set("", 2)  # NOT_SERVING
    async with aiohttp.ClientSession() as http, http.get(f"{running.url}/health") as response:
        assert response.status == 503 and (await response.json())["status"] == "NOT_SERVING"


async def test_page_and_config(start_edge: Any) -> None:
    running = await start_edge(ice_servers=("stun:stun.example.com:3478",))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{running.url}/") as response:
            assert response.status == 200 and "window.voxline" in await response.text()
        async with http.get(f"{running.url}/config") as response:
            body = await response.json()
    assert body == {"iceServers": [{"urls": "stun:stun.example.com:3478"}], "tokenRequired": False}


async def test_session_events_and_reply_audio(start_edge: Any, orchestrator: ScriptedOrchestrator) -> None:
    running = await start_edge(language="en")
    client = EdgeClient(running.url)
    await client.connect()
    client.mic.say(speech_like(0.5), 16_000)
    done = await client.wait_for(lambda e: e["type"] == "turn_metrics", 20)
    assert done["status"] == "COMPLETED" and done["trace_id"]
    types = [e["type"] for e in client.events]
    assert types.index("transcript") < types.index("reply_text") < types.index("turn_metrics")
    sent = await client.wait_for(lambda e: e["type"] == "reply_audio_sent", 10)
    assert sent["turn"] == 1 and sent["edge_ms"] >= 0
    await until(lambda: len(client.voiced_frames) > 25)  # more than half a second of the tone heard
    # the microphone waits for one later packet in aiortc's jitter buffer, not four (--rtp-prefetch)
    [session] = running.edge.webrtc.values()
    [receiver] = [t.receiver for t in session.pc.getTransceivers() if t.kind == "audio"]
    assert receiver._RTCRtpReceiver__jitter_buffer._prefetch == 1
    config = orchestrator.configs[0]
    assert config.server_vad and config.language == "en"
    assert config.input_format.sample_rate_hz == 16_000
    await client.close()


@pytest.mark.parametrize("orchestrator", [ScriptedOrchestrator(reply_s=20.0, interrupt=True)])
async def test_barge_in_flushes_queued_reply_audio_at_once(start_edge: Any) -> None:
    running = await start_edge()
    client = EdgeClient(running.url)
    await client.connect()
    client.mic.say(speech_like(0.3), 16_000)
    await client.wait_for(lambda e: e["type"] == "reply_audio_sent", 20)
    client.mic.say(speech_like(3.0), 16_000)  # the user talks over the reply
    flushed = await client.wait_for(lambda e: e["type"] == "playback_flushed", 20)
    assert flushed["reason"] == "interrupted" and flushed["flushed_ms"] > 10_000
    metrics = await client.wait_for(lambda e: e["type"] == "turn_metrics", 5)
    assert metrics["status"] == "INTERRUPTED"
    # what was heard: about 2 s of the 20 s reply, nothing after the flush but what was in flight
    heard_before = len(client.voiced_frames)
    await client.mic.spoken.wait()
    heard_after = [t for t in client.voiced_frames if t > flushed["received_at"]]
    assert heard_before < 250 and len(heard_after) < 25, (heard_before, len(heard_after))
    exposition = running.edge.metrics.render().decode()
    assert 'voxline_edge_playback_flushes_total{transport="webrtc"} 1.0' in exposition
    await client.close()
