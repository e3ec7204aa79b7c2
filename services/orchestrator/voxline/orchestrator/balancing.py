"""Stage addresses with several replicas: the gRPC target, and round_robin over what it resolves to.

An address is one of:

- ``host:port``: one server (a name is resolved by DNS; every address it resolves to is used);
- ``dns:///name:port``: a name that resolves to many pods (a Kubernetes headless Service);
  re-resolved when a connection drops or a server closes it (``--max-connection-age-s``);
- a comma list of replicas, ``127.0.0.1:50061,127.0.0.1:50062`` (IP addresses; ``localhost`` is
  127.0.0.1): a static list, as ``voxline up --replicas`` wires it;
- a gRPC target with the ``ipv4:`` or ``ipv6:`` scheme, passed through.

Every stage channel balances its calls ``round_robin`` over the ready replicas (gRPC's service
config); a replica that is gone leaves the rotation as soon as its connection drops.
"""

from __future__ import annotations

import ipaddress
import json

from voxline.common.config import ConfigError

#: gRPC service config of every stage channel: round_robin over the replicas that are SERVING
#: (client-side health checking: each connection watches the standard health service, so a replica
#: still loading or starting to drain gets no new calls).
ROUND_ROBIN_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}],
                                         "healthCheckConfig": {"serviceName": ""}})

_SCHEMES = ("dns:///", "ipv4:", "ipv6:")


def _host_port(flag: str, item: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{flag} must be host:port, dns:///name:port or a comma list of "
                          f"ip:port, got {item!r}")
    return host, int(port)


def check_stage_address(flag: str, address: str) -> str:
    """``address`` when it is a usable stage address (see the module doc), else ConfigError."""
    address = address.strip()
    if address.startswith(("ipv4:", "ipv6:")):
        return address
    if address.startswith("dns:///"):
        _host_port(flag, address.removeprefix("dns:///"))
        return address
    items = [item.strip() for item in address.split(",")]
    for item in items:
        _host_port(flag, item)
    joined = ",".join(items)
    if len(items) > 1:
        channel_target(joined)  # a list must be IP addresses
    return joined


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def channel_target(address: str) -> str:
    """The gRPC channel target for a checked stage address."""
    if address.startswith(_SCHEMES) or "," not in address:
        return address
    hosts = []
    for item in address.split(","):
        host, port = item.strip().rsplit(":", 1)
        ip = _ip("127.0.0.1" if host == "localhost" else host)
        if ip is None:
            raise ConfigError(f"a list of replicas takes IP addresses, got {host!r}; for a name "
                              "that resolves to every replica use dns:///name:port")
        hosts.append((ip, port))
    if all(ip.version == 4 for ip, _ in hosts):
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in hosts)
    if all(ip.version == 6 for ip, _ in hosts):
        return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in hosts)
    raise ConfigError("a list of replicas must be all IPv4 or all IPv6 addresses")
