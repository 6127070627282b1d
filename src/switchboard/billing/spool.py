"""The local append-only CDR spool used while the database is unreachable.

Format: JSON lines (``Cdr.to_json``) in ``cdr-spool.jsonl``; ``cdr-spool.offset`` holds the
byte offset up to which records are known to be in the database. Replay reads from the
offset in order, and the offset only moves after the database committed those records;
if the process dies between the two, the records are sent again and ingest drops them as
duplicates (idempotent on call_id). Once everything is replayed both files are reset.

fsync policy: ``"batch"`` (default) fsyncs every appended batch before the writer considers
it safe; ``"never"`` leaves it to the OS (faster, loses the last seconds on power failure).
A torn last line from a crash mid-write is cut off when the spool is opened.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from switchboard.billing.cdr import Cdr

log = logging.getLogger(__name__)

FsyncPolicy = Literal["batch", "never"]


class Spool:
    """A file-backed FIFO of CDRs. Not thread-safe: one writer task owns it."""

    def __init__(self, directory: Path, fsync: FsyncPolicy = "batch") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "cdr-spool.jsonl"
        self.offset_path = directory / "cdr-spool.offset"
        self.fsync = fsync
        self.offset = self._read_offset()
        self._repair()
        self.records = self._count_pending()

    # -- state -------------------------------------------------------------------------
    def _read_offset(self) -> int:
        try:
            return int(self.offset_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def _repair(self) -> None:
        """Cut a partial last line left by a crash in the middle of an append."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            log.warning(
                "CDR spool %s: dropping %d bytes of a torn last line", self.path, len(data) - end
            )
            with self.path.open("r+b") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())
        if self.offset > end:
            self.offset = end

    def _count_pending(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            return sum(1 for _ in fh)

    @property
    def size(self) -> int:
        """Bytes on disk not yet replayed."""
        try:
            return max(0, self.path.stat().st_size - self.offset)
        except FileNotFoundError:
            return 0

    def __bool__(self) -> bool:
        return self.records > 0

    # -- operations --------------------------------------------------------------------
    def append(self, cdrs: Sequence[Cdr]) -> None:
        """Append records at the end; durable on return with the ``batch`` policy."""
        if not cdrs:
            return
        payload = "".join(c.to_json() + "\n" for c in cdrs).encode()
        with self.path.open("ab") as fh:
            fh.write(payload)
            fh.flush()
            if self.fsync == "batch":
                os.fsync(fh.fileno())
        self.records += len(cdrs)

    def read(self, limit: int) -> tuple[list[Cdr], int]:
        """Up to ``limit`` records from the replay offset, and the offset after them."""
        out: list[Cdr] = []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            position = self.offset
            for line in fh:
                position += len(line)
                out.append(Cdr.from_json(line))
                if len(out) >= limit:
                    break
        return out, position

    def commit(self, offset: int, count: int) -> None:
        """Records up to ``offset`` are in the database: advance, or reset when drained."""
        self.records = max(0, self.records - count)
        if self.records == 0 and offset >= self.path.stat().st_size:
            # Drained: start afresh. Remove the offset first so a crash here leaves at worst a
            # full spool that replays as duplicates, never an offset past a new file's end.
            self.offset_path.unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)
            self.offset = 0
            return
        tmp = self.offset_path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            fh.write(str(offset))
            fh.flush()
            if self.fsync == "batch":
                os.fsync(fh.fileno())
        tmp.replace(self.offset_path)
        self.offset = offset
