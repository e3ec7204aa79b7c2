"""Configuration helpers: flags whose defaults come from ``VOXLINE_*`` env vars, shown in --help.

Each service's ``config.py`` declares a frozen dataclass and builds it with these helpers, so the
precedence is always: command-line flag > environment variable > built-in default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: Default ports of the four services.
DEFAULT_PORTS = {"orchestrator": 50050, "stt": 50051, "llm": 50052, "tts": 50053}

_SECRET_MARKERS = ("key", "token", "secret", "password")


class ConfigError(ValueError):
    """A flag or environment variable has a value that cannot be used."""


#: Exit status of a service whose configuration is refused (as argparse's own usage errors).
BAD_CONFIG_EXIT = 2


def refuse(prog: str, error: ConfigError) -> int:
    """Say why the configuration is refused, the same way for every service; the exit status."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return BAD_CONFIG_EXIT


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def env_default(env: str, default: Any, cast: Callable[[str], Any] = str) -> Any:
    """The value of env var ``env`` converted by ``cast``, or ``default`` when unset or empty."""
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"environment variable {env}={raw!r} is invalid: {exc}") from exc


def option(
    parser: argparse.ArgumentParser | Any,
    flag: str,
    *,
    env: str,
    default: Any,
    help: str,
    type: Callable[[str], Any] = str,
    choices: Sequence[Any] | None = None,
) -> None:
    """Add ``flag`` whose default is read from ``env``; help shows both.

    ``type=bool`` makes a flag that takes true/false (``--vad-filter false``).
    """
    cast = _parse_bool if type is bool else type
    parser.add_argument(
        flag,
        type=cast,
        default=env_default(env, default, cast),
        choices=choices,
        help=f"{help} [env {env}; default: {default!r}]",
    )


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How a service's gRPC server listens and shuts down."""

    host: str = "127.0.0.1"
    port: int = 0
    max_message_bytes: int = 32 * 1024 * 1024
    grace_seconds: float = 10.0
    log_level: str = "INFO"
    log_format: str = "text"
    #: PEM certificate chain and private key: serve TLS when both are set (empty: plaintext).
    tls_cert: str = ""
    tls_key: str = ""
    #: PEM CA bundle: with TLS, require client certificates signed by it (mutual TLS).
    tls_client_ca: str = ""
    #: File holding the bearer token every call except health and reflection must carry.
    auth_token_file: str = ""
    #: Once the port is bound, write it here (see ``voxline.common.server.write_port_file``), so a
    #: supervisor starting the service on port 0 learns the port without reading its log.
    port_file: str = ""
    #: Prometheus scrape endpoint port (0: a free port, logged); None: no endpoint.
    metrics_port: int | None = None
    #: Once the scrape endpoint is up, write its port here (the port-file format), as ``port_file``.
    metrics_port_file: str = ""
    #: Close each client connection after this many seconds (GOAWAY; calls in flight finish) so
    #: clients re-resolve and new replicas get traffic; 0: never.
    max_connection_age_s: float = 0.0


def add_server_options(parser: argparse.ArgumentParser, stage: str) -> None:
    """Add --host, --port, --max-message-mb, --grace-seconds, --log-level, --log-format and the
    security options (--tls-cert, --tls-key, --tls-client-ca, --auth-token-file; all off by default)."""
    prefix = f"VOXLINE_{stage.upper()}_"
    group = parser.add_argument_group("server")
    option(group, "--host", env=prefix + "HOST", default="127.0.0.1",
           help="address to bind (0.0.0.0 for all interfaces)")
    option(group, "--port", env=prefix + "PORT", default=DEFAULT_PORTS[stage], type=int,
           help="port to bind; 0 picks a free port and logs it")
    option(group, "--port-file", env=prefix + "PORT_FILE", default="",
           help="once bound, write the port number to this file (for supervisors using port 0)")
    option(group, "--max-message-mb", env="VOXLINE_MAX_MESSAGE_MB", default=32.0, type=float,
           help="largest gRPC message accepted or sent, MiB")
    option(group, "--grace-seconds", env="VOXLINE_GRACE_SECONDS", default=10.0, type=float,
           help="on SIGTERM/SIGINT, time in-flight calls get to finish")
    option(group, "--log-level", env="VOXLINE_LOG_LEVEL", default="INFO",
           choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    option(group, "--log-format", env="VOXLINE_LOG_FORMAT", default="text",
           choices=["text", "json"], help="log line format")
    option(group, "--metrics-port", env="VOXLINE_METRICS_PORT", default=None, type=_optional_port,
           help="serve Prometheus metrics on this port (0: a free port, logged; empty: none)")
    option(group, "--metrics-port-file", env=prefix + "METRICS_PORT_FILE", default="",
           help="with --metrics-port, write the metrics port to this file (for supervisors using 0)")
    option(group, "--max-connection-age-s", env="VOXLINE_MAX_CONNECTION_AGE_S", default=0.0, type=float,
           help="close client connections after this age so clients re-resolve and new replicas "
                "get traffic; calls in flight finish (0: never)")
    security = parser.add_argument_group("security (off by default)")
    option(security, "--tls-cert", env="VOXLINE_TLS_CERT", default="",
           help="PEM certificate chain: serve TLS (needs --tls-key)")
    option(security, "--tls-key", env="VOXLINE_TLS_KEY", default="",
           help="PEM private key of --tls-cert")
    option(security, "--tls-client-ca", env="VOXLINE_TLS_CLIENT_CA", default="",
           help="PEM CA bundle: require client certificates it signed (mutual TLS; needs --tls-cert)")
    option(security, "--auth-token-file", env="VOXLINE_AUTH_TOKEN_FILE", default="",
           help="file holding a bearer token every call except health and reflection must send as "
                "'authorization: Bearer <token>' metadata")


def _optional_port(text: str) -> int | None:
    """A port number, or None for an empty value (the option is off)."""
    return int(text) if text.strip() else None


def server_config_from_args(ns: argparse.Namespace) -> ServerConfig:
    """Build the ServerConfig from parsed arguments, validating ranges."""
    if not 0 <= ns.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {ns.port}")
    if ns.max_message_mb <= 0:
        raise ConfigError("--max-message-mb must be positive")
    if ns.grace_seconds < 0:
        raise ConfigError("--grace-seconds must be >= 0")
    if ns.metrics_port is not None and not 0 <= ns.metrics_port <= 65535:
        raise ConfigError(f"--metrics-port must be 0..65535, got {ns.metrics_port}")
    if ns.max_connection_age_s < 0:
        raise ConfigError("--max-connection-age-s must be >= 0")
    if bool(ns.tls_cert) != bool(ns.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    if ns.tls_client_ca and not ns.tls_cert:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
    # Read every file now, so a wrong path fails at start with a clear message.
    for flag, path in (("--tls-cert", ns.tls_cert), ("--tls-key", ns.tls_key),
                       ("--tls-client-ca", ns.tls_client_ca)):
        if path:
            read_config_file(path, flag)
    if ns.auth_token_file:
        read_token_file(ns.auth_token_file, "--auth-token-file")
    return ServerConfig(
        host=ns.host,
        port=ns.port,
        max_message_bytes=int(ns.max_message_mb * 1024 * 1024),
        grace_seconds=ns.grace_seconds,
        log_level=ns.log_level,
        log_format=ns.log_format,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
        tls_client_ca=ns.tls_client_ca,
        auth_token_file=ns.auth_token_file,
        port_file=ns.port_file,
        metrics_port=ns.metrics_port,
        metrics_port_file=ns.metrics_port_file,
        max_connection_age_s=ns.max_connection_age_s,
    )


def read_config_file(path: str, flag: str) -> bytes:
    """The bytes of the file a flag names; ConfigError naming the flag when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {flag} file {path!r}: {exc.strerror or exc}") from exc
    if not data.strip():
        raise ConfigError(f"{flag} file {path!r} is empty")
    return data


def read_token_file(path: str, flag: str) -> str:
    """A bearer token from a file (surrounding whitespace dropped); never put in a message."""
    raw = read_config_file(path, flag)
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{flag} file {path!r} must hold an ASCII token") from None
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"{flag} file {path!r} must hold one token (no spaces or line breaks)")
    return token


def describe(config: Any) -> str:
    """One line listing a dataclass's fields, with secrets masked; for the start-up log."""
    parts = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            shown = "{" + describe(value) + "}"
        elif any(marker in field.name.lower() for marker in _SECRET_MARKERS):
            shown = "***" if value else "<unset>"
        else:
            shown = repr(value)
        parts.append(f"{field.name}={shown}")
    return " ".join(parts)
