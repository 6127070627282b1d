"""What every test shares: the kind of a test comes from its folder, and shared fixtures.

* ``tests/unit/<area>/`` — pure: no INET sockets, no processes, no database. An asyncio
  loop with in-memory fakes is fine. Marked ``unit``; ``make test-fast`` runs them. A unit
  test that opens an INET socket, starts a process or forks fails with a message saying
  where it belongs.
* ``tests/integration/<area>/`` — our own processes, sockets and PostgreSQL (pgserver),
  no third-party peer. Marked ``integration``.
* ``tests/e2e/`` — real third-party peers (SIPp, baresip, ESL client libraries, Chromium,
  promtool, Kamailio) or the whole platform under ``switchboard up``. Marked ``e2e``.

A test file anywhere else stops the run. Helpers live in :mod:`tests.support`
(``free_port``, ``wait_until``/``async_wait_until``, the SIPp runner, the scripted
switch endpoint, the platform harness); data files in ``tests/data``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from switchboard.billing import database
from switchboard.media.applications import new_switch
from switchboard.media.core import Switch
from switchboard.media.event_socket import EslSettings, EventSocketServer
from switchboard.media.limits import SessionLimiter
from tests.support.pg import new_server_dir
from tests.support.sipp import Sipp
from tests.support.switch import ScriptedEndpoint

TESTS = Path(__file__).resolve().parent
KINDS = ("unit", "integration", "e2e")


# --- the kind of a test: its folder ------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced: set[str] = set()
    for item in items:
        try:
            kind = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # a test outside tests/ (pytest run on another path)
            continue
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))
        else:
            misplaced.add(str(item.path.relative_to(TESTS.parent)))
    if misplaced:
        raise pytest.UsageError(
            "test files must live in tests/unit (pure), tests/integration (own sockets, "
            "processes, PostgreSQL) or tests/e2e (third-party peers, the whole platform): "
            + ", ".join(sorted(misplaced))
        )


class ImpureUnitTest(AssertionError):
    """A unit test touched the outside world; it belongs in tests/integration or tests/e2e."""


def _forbid(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ImpureUnitTest(
            f"unit tests are pure: this one {what}. Move it to tests/integration/<area>/ "
            "(our own sockets/processes/database) or tests/e2e/ (third-party peers)."
        )

    return refuse


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Hold unit tests to their promise while they run: no INET socket, process or fork.

    Unix socket pairs stay allowed (every asyncio loop makes one for its self-pipe)."""
    if item.get_closest_marker("unit") is None:
        return (yield)
    real_init = socket.socket.__init__

    def socket_init(
        self: socket.socket, family: int = -1, type: int = -1, proto: int = -1, fileno: Any = None
    ) -> None:
        # family -1 without a file descriptor is socket.socket()'s default: TCP over IPv4
        if fileno is None and family in (-1, socket.AF_INET, socket.AF_INET6):
            _forbid("opened an INET socket")()
        real_init(self, family, type, proto, fileno)

    saved = (socket.socket.__init__, subprocess.Popen.__init__, os.fork)
    socket.socket.__init__ = socket_init  # type: ignore[method-assign]
    subprocess.Popen.__init__ = _forbid("started a process")  # type: ignore[method-assign]
    os.fork = _forbid("forked")
    try:
        return (yield)
    finally:
        socket.socket.__init__, subprocess.Popen.__init__, os.fork = saved  # type: ignore[method-assign]


# --- SIPp --------------------------------------------------------------------------------


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    """A :class:`~tests.support.sipp.Sipp` runner writing its stats and logs under
    ``tmp_path``; background SIPp processes it started are stopped afterwards."""
    runner = Sipp(tmp_path)
    yield runner
    runner.close()


# --- PostgreSQL: one embedded server per session, a fresh database per test ---------------

TEMPLATE = "sb_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One real PostgreSQL 16 (pgserver) for the whole session."""
    import pgserver

    root = new_server_dir("sb-tests-pg-")
    server = pgserver.get_server(root / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_uri(pg_server: Any) -> str:
    """The server's URI (its ``postgres`` database)."""
    return str(pg_server.get_uri())


def _create_database(admin: str, name: str, template: str | None = None) -> None:
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(query)


def _drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def admin_url(pg_uri: str) -> str:
    """The server's URI, once the billing schema is migrated into a template database."""
    database.migrate(database.ensure_database(pg_uri, TEMPLATE))
    return pg_uri


@pytest.fixture
def db_url(admin_url: str) -> Iterator[str]:
    """A fresh database with the billing schema (a copy of the template, ~20 ms)."""
    name = f"sb_test_{uuid.uuid4().hex[:12]}"
    _create_database(admin_url, name, TEMPLATE)
    yield database.with_dbname(admin_url, name)
    _drop_database(admin_url, name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture
def db_uri(pg_uri: str) -> Iterator[str]:
    """A fresh, empty database, dropped afterwards."""
    name = f"sb_empty_{uuid.uuid4().hex[:12]}"
    _create_database(pg_uri, name)
    base, _, query = pg_uri.partition("?")
    yield base.rsplit("/", 1)[0] + "/" + name + (("?" + query) if query else "")
    _drop_database(pg_uri, name)


# --- a real Switch with a scripted far end, served by the Event Socket server ------------


@pytest.fixture
def esl_switch() -> Switch:
    sw = new_switch(name="media-t", hostname="mediasrv1",
                limits=SessionLimiter(max_sessions=1000, sessions_per_second=1000))  # fmt: skip
    endpoint = ScriptedEndpoint(sw)
    for kind in ("gateway", "user", "sofia", "sip", "loopback"):
        sw.endpoints[kind] = endpoint
    return sw


@pytest.fixture
def esl_settings() -> EslSettings:
    return EslSettings(port=0, heartbeat=0)


@pytest.fixture
async def esl_server(
    esl_switch: Switch, esl_settings: EslSettings
) -> AsyncIterator[EventSocketServer]:
    srv = EventSocketServer(esl_switch, esl_settings)
    await srv.start()
    yield srv
    await srv.close()
    await esl_switch.stop()
