"""Directories for embedded PostgreSQL (pgserver) servers started by tests."""

from __future__ import annotations

import tempfile
from pathlib import Path


def new_server_dir(prefix: str = "sb-test-pg-") -> Path:
    """A directory for a pgserver data dir, outside pytest's tmp tree: as root, pgserver runs
    postgres as its own user, and pytest keeps /tmp/pytest-of-root at mode 0700."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root
