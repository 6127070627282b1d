"""The router's proxy core driven with bytes and a fake clock: a two-node proxy and what it
sent where — shared by the proxy's unit tests."""

from __future__ import annotations

from switchboard.router.dispatcher import Dispatcher, ProbingConfig, parse_list
from switchboard.router.proxy import Interface, Proxy, Send
from tests.support.sipmsg import start_line

UAC = ("127.0.0.1", 5070)
M1 = ("127.0.0.1", 5081)
M2 = ("127.0.0.1", 5082)


def make_proxy(
    listing: str = "1 sip:127.0.0.1:5081\n1 sip:127.0.0.1:5082\n",
    *,
    algorithm: int = 4,
    **kw: object,
) -> Proxy:
    """A proxy on 127.0.0.1:5060 (UDP and TCP) over ``listing``; ``kw`` go to Proxy."""
    d = Dispatcher(
        parse_list(listing),
        algorithm=algorithm,
        probing=ProbingConfig(
            ping_interval=5, ping_timeout=1, probing_threshold=2, inactive_threshold=1
        ),
        now=1e9,  # no probing unless a test asks for it
    )
    ifaces = [Interface("udp", "127.0.0.1", 5060), Interface("tcp", "127.0.0.1", 5060)]
    return Proxy(ifaces, d, secret=b"test", **kw)  # type: ignore[arg-type]


def to(sends: list[Send], addr: tuple[str, int]) -> list[bytes]:
    """Every message sent to ``addr``."""
    return [s.data for s in sends if s.addr == addr]


def one(sends: list[Send], addr: tuple[str, int]) -> bytes:
    """The one message sent to ``addr`` (fails when there is none or more)."""
    found = to(sends, addr)
    assert len(found) == 1, (addr, sends)
    return found[0]


def to_uac(sends: list[Send]) -> list[str]:
    """Start lines of what went back to the caller."""
    return [start_line(s.data) for s in sends if s.addr == UAC]
