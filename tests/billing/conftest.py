"""One real PostgreSQL 16 (pgserver) per test session; a fresh database per test.

The schema is migrated once into a template database; each test gets a copy
(``CREATE DATABASE ... TEMPLATE``, ~20 ms), so tests are isolated and fast.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from switchboard.billing import database

TEMPLATE = "sb_template"
_names = itertools.count()


def new_server_dir(prefix: str = "sb-billing-pg-") -> Path:
    """A directory for a pgserver data dir, outside pytest's tmp tree: as root, pgserver runs
    postgres as its own user, and pytest keeps /tmp/pytest-of-root at mode 0700."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    import pgserver

    root = new_server_dir()
    server = pgserver.get_server(root / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def admin_url(pg_server: Any) -> str:
    url = str(pg_server.get_uri())
    database.migrate(database.ensure_database(url, TEMPLATE))
    return url


@pytest.fixture
def db_url(admin_url: str) -> Iterator[str]:
    name = f"sb_test_{os.getpid()}_{next(_names)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    yield database.with_dbname(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
