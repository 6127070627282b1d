"""The address a wildcard bind stands for, as others must be told it."""

from __future__ import annotations

import socket

WILDCARDS = ("0.0.0.0", "::", "[::]")


def own_address(host: str) -> str:
    """``host`` itself, or for a wildcard bind (0.0.0.0, ::) the source address of the
    default route — the host's own address. A wildcard in a Contact (RFC 3261 §8.1.1.8) or
    an SDP c= line (RFC 4566 §5.7) would send the far end's requests or media nowhere.
    Falls back to loopback when there is no route."""
    if host not in WILDCARDS:
        return host
    family = socket.AF_INET if host == "0.0.0.0" else socket.AF_INET6
    probe = "192.0.2.1" if family == socket.AF_INET else "2001:db8::1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))  # a UDP connect sends nothing; it only picks a route
            ip = str(s.getsockname()[0])
    except OSError:
        ip = "127.0.0.1" if family == socket.AF_INET else "::1"
    return ip if family == socket.AF_INET or host == "::" else f"[{ip}]"
