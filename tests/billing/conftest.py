"""One real PostgreSQL 16 (pgserver) per test session; a fresh database per test.

The schema is migrated once into a template database; each test gets a copy
(``CREATE DATABASE ... TEMPLATE``, ~20 ms), so tests are isolated and fast.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from switchboard.billing import database

TEMPLATE = "sb_template"
_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    yield server
    server.cleanup()


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
