"""A wildcard listen address is advertised as the default route's address (a UDP socket
asks the kernel which interface it would use)."""

from __future__ import annotations

import ipaddress

from switchboard.router.service import advertised


def test_wildcard_listen_is_advertised_as_a_real_address() -> None:
    assert advertised("10.1.2.3") == "10.1.2.3"
    ip = ipaddress.ip_address(advertised("0.0.0.0"))
    assert ip.version == 4 and not ip.is_unspecified
