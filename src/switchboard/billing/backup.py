"""``switchboard db backup`` / ``restore``: pg_dump → gzip, with retention.

The PostgreSQL client binaries come from the pgserver wheel (PostgreSQL 16), so nothing
needs installing; ``pg_bin_dir`` overrides them for a newer external server (pg_dump must
be at least the server's major version). Backups are plain SQL of the ``public`` schema:
restoring one replaces the billing schema and data as they were at backup time, in a
single transaction (all or nothing).

Restore drops the ``public`` schema inside that transaction, then loads the dump, which
re-creates it; ``pg_dump --clean`` is not used because its DROP INDEX statements fail on the
partitions of the cdr table's partitioned indexes.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from switchboard.billing.database import pg_bin_dir

log = logging.getLogger(__name__)

BACKUP_GLOB = "switchboard-*.sql.gz"
RESET_SCHEMA = b"DROP SCHEMA IF EXISTS public CASCADE;\n"  # the dump re-creates it


class BackupError(Exception):
    pass


def _binary(name: str, bin_dir: Path | None) -> str:
    path = (bin_dir or pg_bin_dir()) / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise BackupError(f"{name} not found in {path.parent} nor on PATH")
        return found
    return str(path)


def backup(
    url: str,
    out: Path,
    *,
    keep: int = 14,
    bin_dir: Path | None = None,
    now: datetime | None = None,
) -> Path:
    """Dump the database to ``out`` (a file, or a directory to put a dated file in);
    in a directory, keep only the ``keep`` newest backups."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    if out.suffix == ".gz":
        target = out
        out.parent.mkdir(parents=True, exist_ok=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"switchboard-{moment:%Y%m%d-%H%M%S}.sql.gz"
        n = 1
        while target.exists():  # two backups in one second: never overwrite the first
            n += 1
            target = out / f"switchboard-{moment:%Y%m%d-%H%M%S}-{n}.sql.gz"
    partial = target.with_name(target.name + ".partial")
    cmd = [_binary("pg_dump", bin_dir), "--dbname", url, "--no-owner", "--schema", "public"]
    with tempfile.TemporaryFile() as errors, gzip.open(partial, "wb") as gz:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None
        shutil.copyfileobj(proc.stdout, gz, 1 << 20)
        code = proc.wait()
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip()
    if code != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {message}")
    partial.replace(target)  # a backup file is complete or absent
    log.info("backup written to %s", target)
    if out.suffix != ".gz" and keep > 0:
        by_age = sorted(out.glob(BACKUP_GLOB), key=lambda p: (p.stat().st_mtime_ns, p.name))
        for old in by_age[:-keep]:
            old.unlink()
            log.info("retention: removed %s", old)
    return target


def restore(url: str, path: Path, *, bin_dir: Path | None = None) -> None:
    """Load a backup made by :func:`backup` into the database, all or nothing."""
    if not path.exists():
        raise BackupError(f"{path}: no such backup file")
    cmd = [
        _binary("psql", bin_dir),
        "--dbname",
        url,
        "--quiet",
        "--no-psqlrc",
        "--single-transaction",
        "-v",
        "ON_ERROR_STOP=1",
        "--file",
        "-",
    ]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors
        )
        assert proc.stdin is not None
        try:
            # Replace the whole schema rather than pg_dump --clean, whose DROP INDEX on
            # partitions of a partitioned index fails; one transaction keeps it all or nothing.
            proc.stdin.write(RESET_SCHEMA)
            with gzip.open(path, "rb") as gz:
                shutil.copyfileobj(gz, proc.stdin, 1 << 20)
        except BrokenPipeError:
            pass  # psql stopped at an error; its message is in `errors`
        except (OSError, EOFError) as exc:
            proc.kill()
            proc.wait()
            raise BackupError(f"{path}: not a readable gzip backup: {exc}") from None
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        code = proc.wait()
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip()
    if code != 0:
        raise BackupError(f"restore failed, nothing changed: {message}")
