"""Configuration of the edge: flags, with defaults from ``VOXLINE_EDGE_*`` env vars.

The edge is an HTTP server (aiohttp), not a gRPC one, so it has its own server options rather than
``voxline.common.config.add_server_options``; TLS, tokens, ports and logging mean the same as in the
other services.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from voxline.common.config import ConfigError, option, read_config_file, read_token_file

#: The edge's default HTTP port (the page, signalling, the phone WebSocket, health, metrics).
DEFAULT_PORT = 8780
#: What the orchestrator listens on by default.
DEFAULT_ORCHESTRATOR = "127.0.0.1:50050"


def _optional_port(text: str) -> int | None:
    return int(text) if text.strip() else None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclasses.dataclass(frozen=True)
class EdgeConfig:
    """Everything the edge needs to start."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    #: Once bound, the port is written here (for supervisors using port 0).
    port_file: str = ""
    #: Once bound, the port is written here too: the edge's metrics are at /metrics on its own port
    #: (the flag lets a supervisor that passes it to every service start the edge alike).
    metrics_port_file: str = ""
    #: A Prometheus endpoint of its own on this port too (0: a free one; None: only /metrics).
    metrics_port: int | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    #: PEM certificate chain and key: serve HTTPS / WSS (a browser needs it off localhost).
    tls_cert: str = ""
    tls_key: str = ""
    #: File holding the token a client must send (``Authorization: Bearer``, ``?token=``, or the
    #: Twilio stream's ``token`` custom parameter); empty: no token.
    auth_token_file: str = ""
    #: The orchestrator's Converse endpoint, and how to reach it.
    orchestrator: str = DEFAULT_ORCHESTRATOR
    orchestrator_ca: str = ""
    orchestrator_token_file: str = ""
    #: Peers (browser and phone together) served at once; past it, 503 with a reason.
    max_peers: int = 16
    #: A session with no user speech and no reply for this long is closed, seconds.
    idle_timeout_s: float = 120.0
    #: A WebRTC peer that has not connected this long after its offer is closed, seconds.
    connect_timeout_s: float = 30.0
    #: Largest SDP offer accepted, bytes.
    max_offer_bytes: int = 64 * 1024
    #: ICE servers handed to aiortc and to the page: stun:/turn:/turns: URLs.
    ice_servers: tuple[str, ...] = ()
    turn_username: str = ""
    turn_credential_file: str = ""
    #: Addresses the edge offers as host ICE candidates (empty: every interface but loopback, as
    #: aiortc does); "127.0.0.1" makes loopback-only tests work.
    ice_host_addresses: tuple[str, ...] = ()
    #: RTP packets aiortc's inbound jitter buffer holds before decoding (aiortc's own default is 4,
    #: 80 ms of Opus, a constant delay on every word; loss and reordering are handled the same).
    rtp_prefetch: int = 1
    #: Session settings sent to the orchestrator.
    language: str = ""
    voice: str = ""
    system_prompt: str = ""
    max_reply_tokens: int = 0
    #: Reply audio queued for playback per peer, seconds (older audio is dropped past it, counted).
    max_queued_audio_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port must be 0..65535, got {self.metrics_port}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        if self.max_peers < 1:
            raise ConfigError("--max-peers must be >= 1")
        if self.idle_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ConfigError("--idle-timeout-s and --connect-timeout-s must be > 0")
        if self.max_offer_bytes < 1024:
            raise ConfigError("--max-offer-bytes must be >= 1024")
        for url in self.ice_servers:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ConfigError(f"--ice-servers: {url!r} is not a stun:, turn: or turns: URL")
        if any(url.startswith("turn") for url in self.ice_servers) and not (
                self.turn_username and self.turn_credential_file):
            raise ConfigError("a turn: server needs --turn-username and --turn-credential-file")
        if not 1 <= self.rtp_prefetch <= 8:
            raise ConfigError("--rtp-prefetch must be 1..8")
        if self.max_reply_tokens < 0 or self.max_queued_audio_s <= 0:
            raise ConfigError("--max-reply-tokens must be >= 0 and --max-queued-audio-s > 0")
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key),
                           ("--orchestrator-ca", self.orchestrator_ca)):
            if path:
                read_config_file(path, flag)
        for flag, path in (("--auth-token-file", self.auth_token_file),
                           ("--orchestrator-token-file", self.orchestrator_token_file),
                           ("--turn-credential-file", self.turn_credential_file)):
            if path:
                read_token_file(path, flag)

    @property
    def scheme(self) -> str:
        """``https`` with TLS, else ``http``."""
        return "https" if self.tls_cert else "http"

    def token(self) -> str:
        """The clients' token ('' when none is required)."""
        return read_token_file(self.auth_token_file, "--auth-token-file") if self.auth_token_file else ""

    def orchestrator_token(self) -> str:
        """The token sent to the orchestrator ('' for none)."""
        if not self.orchestrator_token_file:
            return ""
        return read_token_file(self.orchestrator_token_file, "--orchestrator-token-file")

    def turn_credential(self) -> str:
        """The TURN credential ('' for none)."""
        if not self.turn_credential_file:
            return ""
        return read_token_file(self.turn_credential_file, "--turn-credential-file")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m voxline.edge``."""
    parser = argparse.ArgumentParser(
        prog="python -m voxline.edge",
        description="voxline edge: a browser page over WebRTC and a Twilio Media Streams phone line, "
                    "each bridged to one Converse stream of the orchestrator (server VAD on).",
    )
    p = "VOXLINE_EDGE_"
    server = parser.add_argument_group("server")
    option(server, "--host", env=p + "HOST", default="127.0.0.1",
           help="address to bind (0.0.0.0 for all interfaces)")
    option(server, "--port", env=p + "PORT", default=DEFAULT_PORT, type=int,
           help="HTTP(S) port: the page at /, POST /offer, the phone WebSocket at /phone, /health, "
                "/metrics; 0 picks a free port and logs it")
    option(server, "--port-file", env=p + "PORT_FILE", default="",
           help="once bound, write the port number to this file (for supervisors using port 0)")
    option(server, "--metrics-port", env="VOXLINE_METRICS_PORT", default=None, type=_optional_port,
           help="also serve Prometheus metrics on this port (0: a free port; empty: only /metrics on "
                "the HTTP port)")
    option(server, "--metrics-port-file", env=p + "METRICS_PORT_FILE", default="",
           help="once bound, write the metrics port (--metrics-port, else the HTTP port) to this file")
    option(server, "--log-level", env="VOXLINE_LOG_LEVEL", default="INFO",
           choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    option(server, "--log-format", env="VOXLINE_LOG_FORMAT", default="text",
           choices=["text", "json"], help="log line format")
    security = parser.add_argument_group("security (off by default)")
    option(security, "--tls-cert", env="VOXLINE_TLS_CERT", default="",
           help="PEM certificate chain: serve HTTPS and WSS (needs --tls-key; a browser off "
                "localhost only gives the microphone to a secure page)")
    option(security, "--tls-key", env="VOXLINE_TLS_KEY", default="", help="PEM private key of --tls-cert")
    option(security, "--auth-token-file", env="VOXLINE_AUTH_TOKEN_FILE", default="",
           help="file holding a token every offer and phone stream must carry ('Authorization: "
                "Bearer <token>', ?token=<token>, or the Twilio stream's 'token' parameter)")
    upstream = parser.add_argument_group("orchestrator")
    option(upstream, "--orchestrator", env=p + "ORCHESTRATOR", default=DEFAULT_ORCHESTRATOR,
           help="host:port of the orchestrator's VoiceAssistant service")
    option(upstream, "--orchestrator-ca", env=p + "ORCHESTRATOR_CA", default="",
           help="PEM CA bundle: dial the orchestrator over TLS, trusting it")
    option(upstream, "--orchestrator-token-file", env=p + "ORCHESTRATOR_TOKEN_FILE", default="",
           help="file holding the bearer token the orchestrator requires")
    limits = parser.add_argument_group("limits")
    option(limits, "--max-peers", env=p + "MAX_PEERS", default=16, type=int,
           help="browser and phone sessions at once; past it, 503 with a reason")
    option(limits, "--idle-timeout-s", env=p + "IDLE_TIMEOUT_S", default=120.0, type=float,
           help="close a session with no user speech and no reply for this long")
    option(limits, "--connect-timeout-s", env=p + "CONNECT_TIMEOUT_S", default=30.0, type=float,
           help="close a WebRTC peer not connected this long after its offer")
    option(limits, "--max-offer-bytes", env=p + "MAX_OFFER_BYTES", default=64 * 1024, type=int,
           help="largest SDP offer accepted (413 beyond)")
    option(limits, "--max-queued-audio-s", env=p + "MAX_QUEUED_AUDIO_S", default=60.0, type=float,
           help="reply audio queued for playback per session, seconds (beyond, frames are dropped "
                "and counted)")
    ice = parser.add_argument_group("WebRTC / ICE")
    option(ice, "--ice-servers", env=p + "ICE_SERVERS", default="",
           help="comma-separated stun:/turn:/turns: URLs for the edge and the page "
                "(e.g. turn:turn.example.com:3478?transport=udp)")
    option(ice, "--turn-username", env=p + "TURN_USERNAME", default="", help="TURN username")
    option(ice, "--turn-credential-file", env=p + "TURN_CREDENTIAL_FILE", default="",
           help="file holding the TURN credential (given to the page too: use short-lived ones)")
    option(ice, "--ice-host-addresses", env=p + "ICE_HOST_ADDRESSES", default="",
           help="comma-separated local addresses offered as host candidates (default: every "
                "interface but loopback; 127.0.0.1 for loopback-only tests)")
    option(ice, "--rtp-prefetch", env=p + "RTP_PREFETCH", default=1, type=int,
           help="RTP packets (20 ms each) the inbound jitter buffer holds before decoding the "
                "microphone; aiortc's own default is 4 (80 ms more on every word)")
    session = parser.add_argument_group("conversation")
    option(session, "--language", env=p + "LANGUAGE", default="",
           help="speech language sent to the orchestrator, e.g. en ('' detects)")
    option(session, "--voice", env=p + "VOICE", default="", help="TTS voice ('' the server's default)")
    option(session, "--system-prompt", env=p + "SYSTEM_PROMPT", default="",
           help="system prompt ('' the orchestrator's default)")
    option(session, "--max-reply-tokens", env=p + "MAX_REPLY_TOKENS", default=0, type=int,
           help="most LLM tokens per reply (0: the gateway's default)")
    return parser


def parse(argv: Sequence[str] | None = None) -> EdgeConfig:
    """Parse ``argv`` (flags > env vars > defaults); ConfigError for an unusable value."""
    ns = build_parser().parse_args(argv)
    return EdgeConfig(
        host=ns.host, port=ns.port, port_file=ns.port_file, metrics_port_file=ns.metrics_port_file,
        metrics_port=ns.metrics_port,
        log_level=ns.log_level, log_format=ns.log_format, tls_cert=ns.tls_cert, tls_key=ns.tls_key,
        auth_token_file=ns.auth_token_file, orchestrator=ns.orchestrator,
        orchestrator_ca=ns.orchestrator_ca, orchestrator_token_file=ns.orchestrator_token_file,
        max_peers=ns.max_peers, idle_timeout_s=ns.idle_timeout_s, connect_timeout_s=ns.connect_timeout_s,
        max_offer_bytes=ns.max_offer_bytes, ice_servers=_names(ns.ice_servers),
        turn_username=ns.turn_username, turn_credential_file=ns.turn_credential_file,
        ice_host_addresses=_names(ns.ice_host_addresses), language=ns.language, voice=ns.voice,
        system_prompt=ns.system_prompt, max_reply_tokens=ns.max_reply_tokens,
        max_queued_audio_s=ns.max_queued_audio_s, rtp_prefetch=ns.rtp_prefetch,
    )
