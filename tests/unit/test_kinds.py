"""The kinds of test hold: a unit test is marked ``unit`` by its folder and cannot reach
outside its process (tests/conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import KINDS, TESTS, ImpureUnitTest

REAL_FORK = os.fork  # imported at collection, outside any test


def test_the_folder_gives_the_marker(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("integration") is None


@pytest.mark.parametrize(
    "reach_out",
    [
        lambda: socket.socket(),
        lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM),
        lambda: socket.create_connection(("127.0.0.1", 9), timeout=0.1),
        lambda: subprocess.run([sys.executable, "-c", "pass"], check=False),
    ],
    ids=["socket()", "udp4", "tcp6", "connect", "process"],
)
def test_a_unit_test_cannot_open_inet_sockets_or_start_processes(reach_out) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImpureUnitTest, match="tests/integration"):
        reach_out()


def test_fork_is_refused_too() -> None:
    # not called: were the guard broken, a second pytest would run on in the child
    assert os.fork is not REAL_FORK


def test_unix_socket_pairs_stay_allowed() -> None:
    # every asyncio event loop makes one for its self-pipe
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"x")
        assert b.recv(1) == b"x"


def test_every_test_file_lives_in_a_kind_folder() -> None:
    stray = [
        str(p.relative_to(TESTS))
        for p in TESTS.rglob("test_*.py")
        if p.relative_to(TESTS).parts[0] not in KINDS and "node_modules" not in p.parts
    ]
    assert stray == []
