"""Bring the loopback interface up in a fresh network namespace (``unshare -n`` starts with ``lo``
down), without iproute2: the browser test and the benchmark run the stack, the edge and Chromium in
such a namespace so that no side offers another address as an ICE candidate."""

from __future__ import annotations

import fcntl
import socket
import struct

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def bring_loopback_up(name: str = "lo") -> None:
    """Set ``name`` up (needs CAP_NET_ADMIN in the namespace, which ``unshare -n`` as root has)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", name.encode(), 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh", name.encode(), flags | _IFF_UP))
