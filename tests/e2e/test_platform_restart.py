"""`switchboard up` starts again at once after a stop (issue 18, item 3).

An HTTP or Event Socket connection the server closes first leaves a TIME-WAIT socket on the
server's port for 60 s. The services bind with SO_REUSEADDR, which Linux allows over
TIME-WAIT; the address preflight must use the same options, or a restart right after a stop
is refused although every service would bind.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.support.platform_harness import Platform, http_text

_TIME_WAIT = "06"  # st column of /proc/net/tcp


def time_wait_ports() -> set[int]:
    """Local ports of TCP sockets in TIME-WAIT on this machine (IPv4)."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == _TIME_WAIT:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def server_closes_first(port: int) -> None:
    """One HTTP request with ``Connection: close``: the server closes its end first."""
    http_text(f"http://127.0.0.1:{port}/metrics")


def test_preflight_accepts_a_port_in_time_wait() -> None:
    from switchboard.supervisor import Listen, ServiceSpec, check_addresses

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = listener.accept()
        conn.close()  # the server's active close: its side goes to TIME-WAIT
        client.close()
    assert port in time_wait_ports()
    spec = ServiceSpec("router", ("true",), listens=(Listen("tcp", "127.0.0.1", port, "admin"),))
    check_addresses([spec])  # no StartError


@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("sipp") is None, reason="Debian sip-tester missing")
def test_up_starts_again_right_after_a_stop() -> None:
    platform = Platform(media_nodes=1)
    try:
        platform.start()
        admin_ports = [platform.router_admin, platform.media_admin]
        for port in admin_ports:
            server_closes_first(port)
        with socket.create_connection(("127.0.0.1", platform.esl), timeout=5) as esl:
            esl.recv(1024)  # auth/request
            esl.sendall(b"exit\n\n")  # the server answers and closes first
            while esl.recv(1024):
                pass
        assert platform.stop() == 0
        # the precondition that made the restart fail: a port of the platform in TIME-WAIT
        assert time_wait_ports() & {*admin_ports, platform.esl}
        first_run = len(platform.output)
        platform.start()
        second = "".join(platform.output[first_run:])
        assert "already in use" not in second
        assert "Warning" not in platform.text()
        assert "switchboard_" in http_text(f"http://127.0.0.1:{platform.router_admin}/metrics")
        assert platform.stop() == 0
    finally:
        platform.cleanup()
