"""RTP port allocator against real sockets: a pair another process holds is skipped."""

from __future__ import annotations

import socket

import pytest

from switchboard.media.ports import PortAllocator, PortsExhausted


def test_bind_pair_skips_ports_held_by_others() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    busy = probe.getsockname()[1]
    busy -= busy % 2
    probe.close()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        holder.bind(("127.0.0.1", busy + 1))  # someone else holds the RTCP port of the first pair
    except OSError:
        pytest.skip("could not reserve a probe port")
    alloc = PortAllocator(busy, busy + 41)
    try:
        port, rtp, rtcp = alloc.bind_pair("127.0.0.1")
    except PortsExhausted:
        pytest.skip("range busy on this machine")
    try:
        assert port != busy and port % 2 == 0
        assert rtp.getsockname()[1] == port and rtcp.getsockname()[1] == port + 1
        assert alloc.in_use == 1
    finally:
        rtp.close()
        rtcp.close()
        holder.close()
