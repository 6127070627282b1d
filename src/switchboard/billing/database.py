"""Where the billing database is, and bringing its schema up to date.

``database.url`` empty → an embedded PostgreSQL 16 from the ``pgserver`` wheel, data in
``<state_dir>/pgdata``, reachable on a Unix socket only (nothing listens on TCP). Set → that
server: any libpq URI, including multi-host URIs for a Patroni pair, e.g.
``postgresql://db1:5432,db2:5432/switchboard?target_session_attrs=read-write`` (libpq tries
the hosts in order and keeps the one that accepts writes).

Migrations are the numbered ``migrations/NNNN_name.sql`` files, applied in order, each in
its own transaction under an advisory lock, so two processes starting at once cannot apply
one twice; ``schema_migrations`` records what was applied.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

log = logging.getLogger(__name__)

DATABASE_NAME = "switchboard"
MIGRATION_LOCK = (
    0x5B_B111  # pg_advisory_xact_lock key, migrations and partitions (= 6009105 in SQL)
)
PARTITION_MONTHS_BACK = 1
PARTITION_MONTHS_AHEAD = 3


class DatabaseError(Exception):
    """The database cannot be reached or set up; the message says what to check."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    text: str


def migrations() -> list[Migration]:
    """The packaged migrations, in version order."""
    found = []
    for entry in resources.files("switchboard.billing.migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def check_url(url: str) -> str:
    """Validate a libpq URI or key=value string; raise DatabaseError naming the problem."""
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise DatabaseError(f"database.url is not a valid libpq connection string: {exc}") from None
    return url


def import_pgserver() -> ModuleType:
    """The ``pgserver`` module, imported without platformdirs' RuntimeDirWarning.

    pgserver asks platformdirs for the user's runtime directory when it is imported. Without
    ``XDG_RUNTIME_DIR`` (a service account, a container, ``sudo``) platformdirs warns and
    falls back to ``/tmp/runtime-<uid>``, which serves pgserver's lock file and socket
    perfectly well; the warning would only be noise on every command's output.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"platformdirs(\.|$)")
        import pgserver
    return pgserver


def pg_bin_dir() -> Path:
    """The PostgreSQL client binaries (pg_dump, psql) shipped inside the pgserver wheel."""
    import_pgserver()
    from pgserver._commands import POSTGRES_BIN_PATH  # lazily: only backups need it

    return Path(POSTGRES_BIN_PATH)


def start_embedded(state_dir: Path, *, keep_running: bool = False) -> str:
    """Start (or join) the embedded server in ``state_dir/pgdata``; return the admin URI.

    pgserver keeps the server running while any process holds a handle and stops it when
    the last one exits, so ``switchboard up`` and ``switchboard db ...`` share one server.
    ``keep_running`` leaves it up after this process exits (``switchboard db url``);
    :func:`stop_embedded` stops it.
    """
    pgserver = import_pgserver()
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(
            state_dir.resolve() / "pgdata", cleanup_mode=None if keep_running else "stop"
        )
    except Exception as exc:  # pgserver raises plain CalledProcessError/AssertionError
        raise DatabaseError(f"embedded PostgreSQL failed to start in {state_dir}: {exc}") from exc
    return str(server.get_uri())


def stop_embedded(state_dir: Path) -> bool:
    """Stop the embedded server of ``state_dir`` if it runs; True if it was running."""
    pgserver = import_pgserver()
    pgdata = state_dir.resolve() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    user = "pgserver" if os.name == "posix" and os.geteuid() == 0 else None
    try:
        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    except subprocess.CalledProcessError:
        return False
    return True


def with_dbname(url: str, dbname: str) -> str:
    """The same server, another database."""
    return make_conninfo(url, dbname=dbname)


def ensure_database(admin_url: str, dbname: str = DATABASE_NAME) -> str:
    """Create ``dbname`` if missing (embedded server); return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            log.info("created database %s", dbname)
    return with_dbname(admin_url, dbname)


def resolve_url(url: str, state_dir: Path, *, keep_running: bool = False) -> str:
    """The URL billing should use: ``url`` when set, else the embedded server's database."""
    if url:
        return check_url(url)
    return ensure_database(start_embedded(state_dir, keep_running=keep_running))


def migrate(url: str) -> list[int]:
    """Apply pending migrations and make sure CDR partitions exist ahead; return the
    versions applied now."""
    applied_now: list[int] = []
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to the billing database: {exc}") from None
    with conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
                ).fetchone()
                if done:
                    continue
                log.info("applying migration %04d_%s", migration.version, migration.name)
                conn.execute(migration.text.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied_now.append(migration.version)
        ensure_partitions(conn)
    return applied_now


def ensure_partitions(
    conn: psycopg.Connection, back: int = PARTITION_MONTHS_BACK, ahead: int = PARTITION_MONTHS_AHEAD
) -> int:
    """Create the monthly cdr partitions from ``back`` months ago to ``ahead`` months on."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        row = conn.execute("SELECT cdr_ensure_partitions(%s, %s)", (back, ahead)).fetchone()
    return int(row[0]) if row else 0


def schema_version(url: str) -> int:
    """The highest applied migration version, 0 on an empty database."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        if not exists or exists[0] is None:
            return 0
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0
