"""Free loopback ports and bounded polling, for every test that needs them.

Never assume a well-known port (5060, 8021, 8080...) is free: other test runs and
``switchboard up`` instances share the machine. Never sleep for a fixed time to wait for
a condition: poll it with a deadline, so a slow machine passes and a broken build fails
with a message naming what did not happen.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Literal

HOST = "127.0.0.1"

PortKind = Literal["udp", "tcp", "both"]

# (host, port) -> when free_port or a harness's port run gave it out in this process
_GIVEN: dict[tuple[str, int], float] = {}
_GIVEN_HOLD_S = 120.0  # long enough for any test to start what binds it


def claim(ports: range | list[int], host: str = HOST) -> bool:
    """Reserve ``ports`` on ``host`` for this process unless one of them was handed out
    in the last two minutes: a configuration picks every port before anything binds
    them, and two picks must not land on the same port. The one registry behind
    :func:`free_port` and the platform harness's port runs."""
    now = time.monotonic()
    for key in [k for k, t in _GIVEN.items() if now - t >= _GIVEN_HOLD_S]:
        del _GIVEN[key]
    if any((host, p) in _GIVEN for p in ports):
        return False
    _GIVEN.update(dict.fromkeys(((host, p) for p in ports), now))
    return True


def release(ports: range | list[int], host: str = HOST) -> None:
    """Give back ports :func:`claim` reserved, once whatever used them has ended."""
    for p in ports:
        _GIVEN.pop((host, p), None)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bindable(kind: int, port: int, host: str) -> bool:
    with socket.socket(_family(host), kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def udp_port_taken(port: int, host: str = HOST) -> bool:
    """Someone is bound to UDP ``port`` (e.g. a SIPp peer that has started listening)."""
    return not _bindable(socket.SOCK_DGRAM, port, host)


def free_port(kind: PortKind = "both", host: str = HOST, *, even: bool = False) -> int:
    """A port the kernel just handed out on ``host``, free for ``"udp"``, ``"tcp"`` or
    ``"both"`` (a SIP listener binds the same number on both); ``even=True`` for an RTP
    port (RFC 3550 §11: RTP on an even port, RTCP on the next odd one). An IPv6
    ``host`` (``"::1"``) gives a port free on that address.

    The kernel may hand the same free port to two calls in a row: a port is not given out
    twice within two minutes in one process (two services of one test drew the same port,
    and one's readiness probe reached the other)."""
    if kind not in ("udp", "tcp", "both"):
        raise ValueError(f"free_port: kind is 'udp', 'tcp' or 'both', not {kind!r} (host=...?)")
    for _ in range(200):
        sock_kind = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
        with socket.socket(_family(host), sock_kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if even and (port % 2 or port >= 65000):
            continue
        if kind == "both" and not _bindable(socket.SOCK_STREAM, port, host):
            continue
        if claim([port], host):
            return port
    raise RuntimeError(f"no free {kind} port on {host}")


def wait_until(
    cond: Callable[[], object],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.2,
) -> None:
    """Poll ``cond`` until it is true; AssertionError naming ``what`` after ``timeout`` s.

    For state held by other processes (a platform started with ``switchboard up``), where
    there is nothing to await."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(
    cond: Callable[[], object],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.01,
) -> None:
    """:func:`wait_until` for a test whose system under test runs in its own event loop:
    the loop keeps running between polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)
