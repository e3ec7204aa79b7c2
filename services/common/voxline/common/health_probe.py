"""A container health check: ``python -m voxline.common.health_probe PORT [NAME]``.

Exit 0 when the gRPC health service on 127.0.0.1:PORT says SERVING, else 1 (one line on stderr
says why). It speaks what the service speaks, read from the service's own environment, so the
probe keeps working when TLS is turned on:

- ``VOXLINE_TLS_CERT`` set: TLS, the server's certificate checked for ``NAME`` (the name clients
  dial, e.g. the compose service name; default ``localhost``) against
  ``VOXLINE_HEALTH_PROBE_TLS_CA``, else ``VOXLINE_TLS_CLIENT_CA``, else the certificate itself
  (self-signed);
- ``VOXLINE_TLS_CLIENT_CA`` set (mutual TLS): the probe shows ``VOXLINE_HEALTH_PROBE_TLS_CERT`` /
  ``_KEY``, else the service's own certificate and key (which then need the clientAuth usage).

No token is needed: the health service is open (``voxline.common.server``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def channel_for(port: int, name: str, env: Mapping[str, str]) -> grpc.Channel:
    """A channel to 127.0.0.1:``port`` with the transport security the service's ``env`` asks for."""
    target = f"127.0.0.1:{port}"
    cert = env.get("VOXLINE_TLS_CERT", "")
    if not cert:
        return grpc.insecure_channel(target)
    client_ca = env.get("VOXLINE_TLS_CLIENT_CA", "")
    roots = Path(env.get("VOXLINE_HEALTH_PROBE_TLS_CA") or client_ca or cert).read_bytes()
    key = chain = None
    if client_ca:
        chain = Path(env.get("VOXLINE_HEALTH_PROBE_TLS_CERT") or cert).read_bytes()
        key = Path(env.get("VOXLINE_HEALTH_PROBE_TLS_KEY") or env.get("VOXLINE_TLS_KEY", "")).read_bytes()
    credentials = grpc.ssl_channel_credentials(roots, key, chain)
    return grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", name)])


def probe(port: int, name: str = "localhost", env: Mapping[str, str] | None = None,
          timeout_s: float = 3.0) -> tuple[bool, str]:
    """(SERVING?, what was seen)."""
    try:
        with channel_for(port, name, os.environ if env is None else env) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                               timeout=timeout_s).status
    except OSError as exc:
        return False, f"cannot read a TLS file: {exc}"
    except grpc.RpcError as exc:
        return False, f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    serving = health_pb2.HealthCheckResponse
    return status == serving.SERVING, serving.ServingStatus.Name(status)


def main(argv: Sequence[str]) -> int:
    if len(argv) not in (2, 3) or not argv[1].isdigit():
        sys.stderr.write("usage: python -m voxline.common.health_probe PORT [NAME]\n")
        return 2
    serving, seen = probe(int(argv[1]), argv[2] if len(argv) == 3 else "localhost")
    if not serving:
        sys.stderr.write(f"health_probe: 127.0.0.1:{argv[1]}: {seen}\n")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
