"""Pure cores import no IO, clock or database; imports point downwards only (DESIGN.md §1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "switchboard"
PURE = ["sip", "sdp", "rtp", "esl", "rating"]
# Modules whose presence in a pure core would mean IO, a clock, threads or a database.
FORBIDDEN = {
    "asyncio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "time",
    "threading",
    "multiprocessing",
    "subprocess",
    "uvloop",
    "psycopg",
    "psycopg_pool",
    "pgserver",
    "sqlite3",
    "urllib.request",
    "http",
    "fastapi",
    "uvicorn",
    "random",
}
SERVICES = {"net", "router", "media", "billing", "dialer", "observability", "cli", "config"}


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def pure_files() -> list[Path]:
    return [p for pkg in PURE for p in sorted((SRC / pkg).rglob("*.py"))]


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_core_has_no_io_imports(path: Path) -> None:
    bad = []
    for lineno, module in imports_of(path):
        top = module.split(".")[0]
        if module in FORBIDDEN or top in FORBIDDEN:
            bad.append(f"line {lineno}: import {module}")
        parts = module.split(".")
        if top == "switchboard" and len(parts) > 1 and parts[1] in SERVICES:
            bad.append(f"line {lineno}: pure core imports service module {module}")
    assert not bad, f"{path.relative_to(SRC)} breaks the pure-core rule:\n" + "\n".join(bad)


def test_rule_catches_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import asyncio\nfrom time import monotonic\n")
    assert [m for _, m in imports_of(probe)] == ["asyncio", "time"]


def test_every_pure_package_exists() -> None:
    for pkg in PURE:
        assert (SRC / pkg / "__init__.py").exists(), pkg
