from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest


@pytest.fixture(scope="session")
def pg_uri() -> Iterator[str]:
    """One embedded PostgreSQL 16 (pgserver) for the dialer tests.

    Not under pytest's tmp_path: run as root, pgserver starts PostgreSQL as an unprivileged
    user, which cannot traverse pytest's 0700 /tmp/pytest-of-root.
    """
    import pgserver

    data = Path(tempfile.mkdtemp(prefix="sb-dialer-pg-"))
    server = pgserver.get_server(data, cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def db_uri(pg_uri: str) -> Iterator[str]:
    """A fresh database per test, dropped afterwards."""
    name = "dialer_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = pg_uri.partition("?")
    uri = base.rsplit("/", 1)[0] + "/" + name + (("?" + query) if query else "")
    yield uri
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
