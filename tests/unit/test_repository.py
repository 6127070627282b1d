"""The repository stands alone: what CI runs, the licence, the Makefile's targets.

Pure: reads files of the checkout, starts nothing.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def makefile_targets(text: str) -> set[str]:
    """Names defined as rules (``name: ...`` at the start of a line, not ``:=`` assignments)."""
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.MULTILINE)) - {".PHONY"}


def phony_names(text: str) -> set[str]:
    names: set[str] = set()
    for line in re.findall(r"^\.PHONY\s*:(.*)$", text, flags=re.MULTILINE):
        names.update(line.split())
    return names


def test_every_phony_name_is_a_real_target() -> None:
    text = (ROOT / "Makefile").read_text()
    missing = phony_names(text) - makefile_targets(text)
    assert not missing, f".PHONY names targets the Makefile does not define: {sorted(missing)}"


def test_phony_check_catches_a_missing_target() -> None:
    text = ".PHONY: run lint\nrun: deps\n\techo run\nVAR := x\n"
    assert phony_names(text) - makefile_targets(text) == {"lint"}


def test_lint_and_bench_targets_exist() -> None:
    targets = makefile_targets((ROOT / "Makefile").read_text())
    assert {"lint", "bench", "check", "test", "run"} <= targets


def test_ci_runs_check_and_test() -> None:
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "make check" in commands
    assert "make test" in commands


def test_licence_file_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License")
    assert "Copyright (c) 2026 the Switchboard authors" in licence
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in licence


def test_changelog_has_this_version_and_an_unreleased_section() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    headings = re.findall(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert version in headings
