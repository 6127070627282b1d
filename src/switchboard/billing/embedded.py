"""The embedded PostgreSQL as a supervised process of ``switchboard up``.

``python -m switchboard.billing.embedded STATE_DIR`` starts (or adopts) the server in
``STATE_DIR/pgdata``, brings the schema up to date, writes the connection URI to
``STATE_DIR/postgres.uri`` (the supervisor waits for that file, media nodes read it) and
then **watches the postmaster**:

* PostgreSQL daemonises (``pg_ctl`` puts the postmaster in its own session), so it is not
  this process's child and its death would go unnoticed. This process holds a pidfd on it
  (Linux ``pidfd_open``) and wakes the instant it exits; it then logs the death and exits
  with :data:`EXIT_POSTMASTER_DIED`, and the supervisor starts it again at once — one
  restart policy for every child of the platform.
* A postmaster killed with ``kill -9`` leaves its ``postmaster.pid`` behind, naming a pid
  that may still exist as a zombie (a container's init can be slow to reap orphans) or be
  reused by another process. PostgreSQL itself refuses to start while that pid looks alive
  ("lock file already exists"), and pgserver would "adopt" the zombie. :func:`clear_stale_lock`
  removes the file when its pid is gone, a zombie, or not a ``postgres`` process. That is
  safe: PostgreSQL still refuses to start while an old backend is attached to the old
  shared memory, and that case is retried for :data:`START_RETRY_FOR` seconds (backends
  of a dead postmaster exit within milliseconds of noticing).
* SIGTERM (the supervisor stopping the platform, or the kernel telling us the supervisor
  died) stops PostgreSQL with ``pg_ctl stop -m fast`` and removes the URI file.

Crash recovery of the data itself is PostgreSQL's: on start it replays its WAL to the last
committed transaction (``fsync`` stays on in the embedded server).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import time
from pathlib import Path

from switchboard.billing import database

log = logging.getLogger(__name__)

EXIT_POSTMASTER_DIED = 70  # EX_SOFTWARE: the server we were watching died
START_RETRY_FOR = 10.0  # seconds a start refused by leftovers of a dead server is retried
START_RETRY_EVERY = 0.2


def _proc_state(pid: int) -> str:
    """The /proc state letter of ``pid`` ("" when there is no such process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _is_postgres(pid: int) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        # another user's process (EACCES) when not root: trust the command line instead
        try:
            exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
        except OSError:
            return False
    return Path(exe).name.startswith("postgres")


def postmaster_pid(pgdata: Path) -> int:
    """The pid in ``pgdata/postmaster.pid`` (0 when absent or unreadable)."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return 0


def clear_stale_lock(pgdata: Path) -> bool:
    """Remove ``postmaster.pid`` — and the socket lock file naming the same server — when
    the server they name is dead; True if removed."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().split("\n")
        pid = int(lines[0])
    except (OSError, ValueError):
        return False
    state = _proc_state(pid)
    if state and state not in ("Z", "X") and _is_postgres(pid):
        return False  # a live server: adopt it
    # lines 4 and 5: port and socket directory; PostgreSQL also locks the socket file
    # (".s.PGSQL.PORT.lock", first line the pid) and refuses to start while that pid lives
    if len(lines) > 4 and lines[3].strip() and lines[4].strip():
        sock_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        with contextlib.suppress(OSError, ValueError):
            if int(sock_lock.read_text().split("\n", 1)[0]) == pid:
                sock_lock.unlink()
    with contextlib.suppress(FileNotFoundError):
        (pgdata / "postmaster.pid").unlink()
    log.warning(
        "removed the stale lock files of PostgreSQL pid %d (%s)",
        pid,
        "a zombie" if state == "Z" else "gone" if not state else "pid now used by another process",
    )
    return True


def start(state_dir: Path) -> str:
    """Start (or adopt) the server and migrate; the application database's URI.

    A start refused because a dead server's backends still hold its shared memory is
    retried for :data:`START_RETRY_FOR` seconds; other failures raise at once."""
    pgdata = state_dir / "pgdata"
    deadline = time.monotonic() + START_RETRY_FOR
    while True:
        clear_stale_lock(pgdata)
        try:
            uri = database.resolve_url("", state_dir, keep_running=True)
            break
        except database.DatabaseError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("PostgreSQL did not start (%s); retrying", str(exc).splitlines()[0])
            _forget_failed_server(pgdata)
            time.sleep(START_RETRY_EVERY)  # other processes' exits: nothing to wait on
    database.migrate(uri)
    _tune(uri)
    return uri


def _tune(uri: str) -> None:
    """Server settings for a fast restart after a crash (kept in postgresql.auto.conf).

    ``recovery_init_sync_method = syncfs``: before crash recovery PostgreSQL makes sure
    every file of the data directory is on disk; by default it fsyncs each file (about 2 s
    for a fresh data directory here), syncfs does it with one call per file system."""
    import psycopg

    with contextlib.suppress(psycopg.Error), psycopg.connect(uri, autocommit=True) as conn:
        row = conn.execute("SHOW recovery_init_sync_method").fetchone()
        if row and row[0] != "syncfs":
            conn.execute("ALTER SYSTEM SET recovery_init_sync_method = 'syncfs'")
            conn.execute("SELECT pg_reload_conf()")


def _forget_failed_server(pgdata: Path) -> None:
    """pgserver caches a handle per data directory even when its start failed; drop it so
    the next attempt really starts the server."""
    with contextlib.suppress(Exception):
        database.import_pgserver()
        from pgserver.postgres_server import PostgresServer

        PostgresServer._instances.pop(pgdata.resolve(), None)


def watch(pid: int, wakeup: int) -> bool:
    """Block until the process ``pid`` exits (True) or ``wakeup`` is readable (False)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        while True:
            ready, _, _ = select.select([pidfd, wakeup], [], [])
            if pidfd in ready:
                return True
            if wakeup in ready:
                return False
    finally:
        os.close(pidfd)


def main(state_dir: Path) -> int:
    """Run the embedded PostgreSQL until SIGTERM (0) or until it dies (70)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # pgserver logs every pg_ctl call, and the whole server log on a failed start
    logging.getLogger("pgserver").setLevel(logging.CRITICAL)
    state_dir.mkdir(parents=True, exist_ok=True)
    uri_file = state_dir / "postgres.uri"
    # SIGTERM/SIGINT wake the watch loop through a pipe (signal.set_wakeup_fd)
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    stop = False

    def _term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    uri = start(state_dir)
    tmp = state_dir / "postgres.uri.tmp"
    tmp.write_text(uri + "\n")
    tmp.replace(uri_file)
    pid = postmaster_pid(state_dir / "pgdata")
    print(f"PostgreSQL ready (postmaster pid {pid}): {uri}", flush=True)
    while not stop:
        if watch(pid, rfd):
            if stop:
                break
            log.error(
                "PostgreSQL postmaster (pid %d) died; exiting so the supervisor restarts it", pid
            )
            return EXIT_POSTMASTER_DIED
        with contextlib.suppress(BlockingIOError):
            os.read(rfd, 512)
    # When the supervisor was SIGKILLed, the pipe our stdout writes to has no reader any
    # more: the print fails with EPIPE, and PostgreSQL must still be stopped.
    with contextlib.suppress(OSError):
        print("stopping PostgreSQL", flush=True)
    database.stop_embedded(state_dir)
    with contextlib.suppress(FileNotFoundError):
        uri_file.unlink()
    return 0


if __name__ == "__main__":  # pragma: no cover - the supervisor's database child
    if len(sys.argv) != 2:
        print("usage: python -m switchboard.billing.embedded STATE_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
