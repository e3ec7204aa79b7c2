"""The edge's HTTP surface (aiohttp): the page, WebRTC signalling, the phone WebSocket, health and
metrics. Each handler speaks HTTP only: it checks the request, then hands the work to a
``WebRtcSession`` or a ``PhoneCall`` and maps their failures to status codes once, here.

- ``GET /``: the page; ``GET /config``: what the page needs (ICE servers, whether a token is needed)
- ``POST /offer`` ``{"sdp", "type": "offer"}`` → ``{"sdp", "type": "answer", "session"}``; 400 bad
  JSON or SDP, 401 no or wrong token, 413 too big, 503 at ``--max-peers``
- ``GET /phone``: the Twilio Media Streams WebSocket
- ``GET /health``: 200 ``SERVING`` when the orchestrator answers its health check, else 503
- ``GET /metrics``: Prometheus
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from importlib import resources
from typing import Any

import grpc
from aiohttp import WSCloseCode, WSMsgType, web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voxline.edge.bridge import SessionSettings, run_owned
from voxline.edge.config import EdgeConfig
from voxline.edge.metrics import EdgeMetrics
from voxline.edge.phone import PhoneCall, ProtocolError
from voxline.edge.webrtc import BadOffer, WebRtcSession, ice_configuration, use_host_addresses

log = logging.getLogger(__name__)

class Edge:
    """The edge's state: the orchestrator channel, the open sessions, the limits."""

    def __init__(self, config: EdgeConfig, channel: grpc.aio.Channel,
                 metrics: EdgeMetrics | None = None) -> None:
        self.config = config
        self.channel = channel
        self.metrics = metrics or EdgeMetrics()
        self.token = config.token()
        token = config.orchestrator_token()
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.settings = SessionSettings(language=config.language, voice=config.voice,
                                        system_prompt=config.system_prompt,
                                        max_reply_tokens=config.max_reply_tokens)
        self.rtc_config = ice_configuration(config.ice_servers, config.turn_username,
                                            config.turn_credential())
        use_host_addresses(config.ice_host_addresses)
        self.webrtc: dict[str, WebRtcSession] = {}
        self.phones: dict[str, PhoneCall] = {}
        #: Slots taken, counted before a session exists (an offer being answered holds one).
        self.taken = 0

    def take_slot(self) -> bool:
        if self.taken >= self.config.max_peers:
            return False
        self.taken += 1
        return True

    def free_slot(self) -> None:
        self.taken -= 1

    def authorized(self, request: web.Request) -> bool:
        if not self.token:
            return True
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def close_all(self, reason: str) -> None:
        for session in list(self.webrtc.values()):
            await session.close(reason)


EDGE_KEY = web.AppKey("edge", Edge)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _edge(request: web.Request) -> Edge:
    return request.app[EDGE_KEY]


async def page(request: web.Request) -> web.Response:
    html = resources.files("voxline.edge").joinpath("static/index.html").read_text(encoding="utf-8")
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


async def client_config(request: web.Request) -> web.Response:
    edge = _edge(request)
    if not edge.authorized(request):  # it may hold TURN credentials
        return _error(401, "missing or invalid token")
    cfg = edge.config
    servers: list[dict[str, Any]] = []
    for url in cfg.ice_servers:
        server: dict[str, Any] = {"urls": url}
        if url.startswith("turn"):
            server.update(username=cfg.turn_username, credential=cfg.turn_credential())
        servers.append(server)
    return web.json_response({"iceServers": servers, "tokenRequired": bool(edge.token)})


async def offer(request: web.Request) -> web.Response:
    edge = _edge(request)
    if not edge.authorized(request):
        edge.metrics.peers_refused.labels("unauthenticated").inc()
        return _error(401, "missing or invalid token")
    if request.content_length is not None and request.content_length > edge.config.max_offer_bytes:
        return _error(413, f"offer over {edge.config.max_offer_bytes} bytes")
    try:
        raw = await request.content.read(edge.config.max_offer_bytes + 1)
        if len(raw) > edge.config.max_offer_bytes:
            return _error(413, f"offer over {edge.config.max_offer_bytes} bytes")
        body = json.loads(raw)
        sdp, kind = body["sdp"], body["type"]
        if not isinstance(sdp, str) or not isinstance(kind, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return _error(400, 'expected JSON {"sdp": "...", "type": "offer"}')
    if not edge.take_slot():
        edge.metrics.peers_refused.labels("max_peers").inc()
        return _error(503, f"the edge is full ({edge.config.max_peers} sessions); try again later",
                      **{"Retry-After": "5"})
    session: WebRtcSession | None = None
    try:
        session = WebRtcSession(channel=edge.channel, settings=edge.settings, metadata=edge.metadata,
                                metrics=edge.metrics, rtc_config=edge.rtc_config,
                                max_queued_audio_s=edge.config.max_queued_audio_s,
                                rtp_prefetch=edge.config.rtp_prefetch,
                                on_closed=lambda s: _webrtc_closed(edge, s))
        answer = await session.answer(sdp, kind)
    except BadOffer as exc:
        if session is not None:
            await session.close(str(exc))
        else:
            edge.free_slot()
        return _error(400, str(exc))
    except BaseException:
        if session is not None:
            await session.close("internal error")
        else:
            edge.free_slot()
        raise
    edge.webrtc[session.id] = session
    edge.metrics.peers_open.labels("webrtc").inc()
    session.start_watchdog(edge.config.idle_timeout_s, edge.config.connect_timeout_s)
    log.info("webrtc session opened", extra={"session": session.id})
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": session.id})


async def _webrtc_closed(edge: Edge, session: WebRtcSession) -> None:
    if edge.webrtc.pop(session.id, None) is not None:
        edge.metrics.peers_open.labels("webrtc").dec()
    edge.free_slot()


async def phone(request: web.Request) -> web.StreamResponse:
    edge = _edge(request)
    if not edge.take_slot():
        edge.metrics.peers_refused.labels("max_peers").inc()
        return _error(503, f"the edge is full ({edge.config.max_peers} sessions); try again later",
                      **{"Retry-After": "5"})
    try:
        return await _phone_call(edge, request)
    finally:
        edge.free_slot()


async def _phone_call(edge: Edge, request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=1 << 20, heartbeat=30.0)
    await ws.prepare(request)
    call = PhoneCall(channel=edge.channel, settings=edge.settings, metadata=edge.metadata,
                     metrics=edge.metrics, token=edge.token, authorized=edge.authorized(request))
    edge.phones[call.id] = call
    edge.metrics.peers_open.labels("phone").inc()
    ended: asyncio.Queue[str] = asyncio.Queue(1)

    async def bridge_ended(reason: str) -> None:
        call.finish()
        with contextlib.suppress(asyncio.QueueFull):
            ended.put_nowait(reason)

    async def send() -> None:
        async for message in call.outgoing():
            turn = message.pop("_turn", None)
            await ws.send_str(json.dumps(message))
            if turn is not None:
                call.sent({"_turn": turn})

    bridge: asyncio.Task[None] | None = None
    sender = asyncio.create_task(send(), name=f"edge-phone-send-{call.id}")
    code, reason = WSCloseCode.OK, "call ended"
    try:
        while True:
            receive = asyncio.ensure_future(ws.receive(timeout=edge.config.idle_timeout_s))
            waits: set[asyncio.Future[Any]] = {receive}
            end_wait = asyncio.ensure_future(ended.get())
            waits.add(end_wait)
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if end_wait in done:
                receive.cancel()
                reason = end_wait.result() or reason
                code = WSCloseCode.OK if reason == "call ended" else WSCloseCode.TRY_AGAIN_LATER
                break
            end_wait.cancel()
            try:
                msg = receive.result()
            except TimeoutError:
                code, reason = WSCloseCode.POLICY_VIOLATION, f"idle for {edge.config.idle_timeout_s:g} s"
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            if msg.type != WSMsgType.TEXT:
                code, reason = WSCloseCode.UNSUPPORTED_DATA, "expected text messages (JSON)"
                break
            try:
                call.receive(msg.data)
            except ProtocolError as exc:
                code, reason = WSCloseCode.POLICY_VIOLATION, str(exc)
                break
            if call.started.is_set() and bridge is None:
                bridge = asyncio.create_task(run_owned(call.bridge, bridge_ended),
                                             name=f"edge-phone-bridge-{call.id}")
            if call.stopped:
                break
            if time.monotonic() - call.bridge.last_activity > edge.config.idle_timeout_s:
                code, reason = WSCloseCode.POLICY_VIOLATION, f"idle for {edge.config.idle_timeout_s:g} s"
                break
    finally:
        log.info("phone call ended", extra={"session": call.id, "reason": reason})
        call.bridge.close()
        if bridge is not None and not call.stopped:
            bridge.cancel()
        if bridge is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(bridge, 10.0)
        call.finish()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(sender, 5.0)
        sender.cancel()
        await ws.close(code=code, message=reason[:120].encode())
        edge.phones.pop(call.id, None)
        edge.metrics.peers_open.labels("phone").dec()
    return ws


async def health(request: web.Request) -> web.Response:
    edge = _edge(request)
    try:
        reply = await health_pb2_grpc.HealthStub(edge.channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2.0)
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.aio.AioRpcError:
        serving = False
    body = {"status": "SERVING" if serving else "NOT_SERVING",
            "orchestrator": edge.config.orchestrator, "peers": edge.taken,
            "max_peers": edge.config.max_peers}
    return web.json_response(body, status=200 if serving else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=_edge(request).metrics.render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def build_app(edge: Edge) -> web.Application:
    """The aiohttp application of ``edge``."""
    app = web.Application(client_max_size=edge.config.max_offer_bytes + 1024)
    app[EDGE_KEY] = edge
    app.router.add_get("/", page)
    app.router.add_get("/config", client_config)
    app.router.add_post("/offer", offer)
    app.router.add_get("/phone", phone)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)

    async def on_shutdown(app: web.Application) -> None:
        await edge.close_all("the edge is shutting down")

    app.on_shutdown.append(on_shutdown)
    return app
