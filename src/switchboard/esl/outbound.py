"""The ``socket`` dialplan application's argument (outbound Event Socket), parsed.

``socket <host>[:<port>][|<host>[:<port>]…] [async] [full]`` — mod_event_socket's
``socket_function``: hosts separated by ``|`` are tried in order until one accepts; the
port defaults to 8084; the port is what follows the *last* ``:``, so an IPv6 address
needs one (``::1:8084``), and ``[::1]:8084`` is accepted as well. ``async``: commands
return at once and queued applications run while the program keeps reading events;
without it each ``sendmsg`` waits for its application to finish. ``full``: the whole
inbound command set (``event``, ``api``, ``linger``, …); without it only ``connect``,
``exit``, ``filter``, ``resume``, ``getvar``, ``myevents``, ``divert_events`` and
``sendmsg`` are understood (mod_event_socket.c ``parse_command``).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PORT = 8084  # mod_event_socket.c socket_function

# What an outbound connection without ``full`` may send (the rest: -ERR command not found).
SINGLE_CHANNEL_COMMANDS = frozenset(
    {"exit", "filter", "resume", "connect", "getvar", "myevents", "divert_events", "sendmsg"}
)


class SocketTargetError(ValueError):
    """The ``socket`` argument names no usable host."""


@dataclass(frozen=True, slots=True)
class SocketTarget:
    hosts: tuple[tuple[str, int], ...]
    async_mode: bool
    full: bool


def parse_socket_target(arg: str) -> SocketTarget:
    """Parse the ``socket`` application's argument; raise SocketTargetError if no host."""
    words = arg.split()
    if not words:
        raise SocketTargetError("socket: no host given (expected HOST[:PORT] [async] [full])")
    flags = {w.lower() for w in words[1:]}
    hosts = []
    for item in words[0].split("|"):
        if not item:
            continue
        host, port = item, DEFAULT_PORT
        if item.startswith("["):  # [v6]:port
            end = item.find("]")
            if end < 0:
                raise SocketTargetError(f"socket: bad host {item!r}")
            host, rest = item[1:end], item[end + 1 :]
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif ":" in item:
            head, _, tail = item.rpartition(":")
            if not tail.isdigit() or not 0 < int(tail) < 65536:
                raise SocketTargetError(f"socket: bad port in {item!r}")
            host, port = head, int(tail)
        if not host:
            raise SocketTargetError(f"socket: missing host in {item!r}")
        hosts.append((host, port))
    if not hosts:
        raise SocketTargetError("socket: no host given (expected HOST[:PORT] [async] [full])")
    return SocketTarget(tuple(hosts), "async" in flags, "full" in flags)
