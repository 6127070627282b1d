"""The repository stands alone: what CI runs, the licence, the Makefile's targets, and no
reference to a document that is not in it.

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


# --- no references to documents outside the repository -------------------------------
# A maintainer has only the repository: code, tests, docs and deploy files may point at
# docs/ or state the fact (a FreeSWITCH/Kamailio source file, an RFC section), never at
# design notes kept elsewhere. The names are assembled here so this file does not match.
_OUTSIDE_NAMES = [
    "DESIGN" + ".md",
    "STYLE" + ".md",
    "esl-and" + "-media",
    "sip-router" + ".md",
    "billing-dialer" + "-monitoring",
    "original-" + "architecture",
    "../" + "shared",
    "shared/" + "reference",
]
OUTSIDE_REFERENCE = re.compile(
    "|".join(re.escape(n) for n in _OUTSIDE_NAMES)
    + r"|\bre"
    + r"ference/[\w.-]+\.(?:md|txt)"  # a file of a reference/ folder
    + r"|\b[Rr]e"
    + r"ference:?\s+(?:\S+\s+)?§"  # "<that word> §4.3", "<that word> x.md §1"
    + r"|\bDESIGN\s*§|\bSTYLE\s*§"
)
SCANNED = [
    "src",
    "tests",
    "bench",
    "docs",
    "deploy",
    "README.md",
    "Makefile",
    "CHANGELOG.md",
    ".ci",
    "pyproject.toml",
]
SKIPPED_PARTS = {".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}
BINARY_SUFFIXES = {".wav", ".pcap", ".png", ".jpg", ".gz", ".pyc", ".so", ".der", ".p12"}


def outside_references(root: Path, names: list[str]) -> list[str]:
    """``path:line: text`` for every line under ``root``/``names`` that cites a document
    outside the repository."""
    found: list[str] = []
    for name in names:
        top = root / name
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            rel = path.relative_to(root)
            if SKIPPED_PARTS & set(rel.parts) or path.suffix in BINARY_SUFFIXES:
                continue
            if rel.parts[-1].endswith(".egg-info") or any(
                p.endswith(".egg-info") for p in rel.parts
            ):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if OUTSIDE_REFERENCE.search(line):
                    found.append(f"{rel}:{number}: {line.strip()}")
    return found


def test_no_reference_to_a_document_outside_the_repository() -> None:
    found = outside_references(ROOT, SCANNED)
    assert not found, "write the fact or a docs/ section instead:\n" + "\n".join(found)


def test_the_scan_catches_an_outside_reference(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ok.py").write_text(
        '"""The Contact q preference (RFC 3261 §20.10); sofia_glue.c:1814."""\n'
        '# docs/architecture.md, docs/esl.md "Dial strings"\n'
    )
    design = "DESIGN" + ".md"
    (tmp_path / "src" / "bad.py").write_text(
        f"x = 1\n# per {design} §2\n"
        "# headers per re"
        "ference §3\n"
        "# see re"
        "ference esl-and"
        "-media.md §4.3\n"
    )
    (tmp_path / "README.md").write_text("see ../" + "shared for the figures\n")
    found = outside_references(tmp_path, ["src", "README.md"])
    assert [f.split(": ", 1)[0] for f in found] == [
        "src/bad.py:2", "src/bad.py:3", "src/bad.py:4", "README.md:1",
    ]  # fmt: skip


# --- references to docs/ sections resolve ---------------------------------------------
# 'docs/billing.md, "Rating rules"' (or 'README, "Metrics"') must name a document of the
# repository and a heading in it (the quoted text is found inside a heading's text).
SECTION_REFERENCE = re.compile(r'((?:docs/)?[A-Za-z_-]+\.md|README)(?:,)? \(?"([^"\n]+)"')


def headings(path: Path) -> list[str]:
    return [
        line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")
    ]


def broken_section_references(root: Path, names: list[str]) -> list[str]:
    broken: list[str] = []
    for name in names:
        top = root / name
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            rel = path.relative_to(root)
            if SKIPPED_PARTS & set(rel.parts) or path.suffix in BINARY_SUFFIXES:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            for number, line in enumerate(text.splitlines(), 1):
                for doc, section in SECTION_REFERENCE.findall(line):
                    target = (
                        root / "README.md" if doc == "README" else root / "docs" / Path(doc).name
                    )
                    if not target.is_file() or not any(section in h for h in headings(target)):
                        broken.append(f"{rel}:{number}: {doc} {section!r}")
    return broken


def test_every_reference_to_a_docs_section_names_a_heading() -> None:
    broken = broken_section_references(ROOT, SCANNED)
    assert not broken, "no such document or heading:\n" + "\n".join(broken)


def test_the_section_check_catches_a_wrong_heading(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "billing.md").write_text("# Billing\n\n## Rating rules\n")
    (tmp_path / "README.md").write_text("# Switchboard\n\n## Metrics\n")
    (tmp_path / "src").mkdir()
    # Written in pieces so that this file's own lines are no references.
    (tmp_path / "src" / "a.py").write_text(
        "# docs/billing.md" + ', "Rating rules" and README' + ', "Metrics"\n'
        "# docs/billing.md" + ', "Rating" is fine (inside a heading)\n'
        "# docs/billing.md" + ', "Invoices"\n'
        "# docs/nothing.md" + ', "Rating rules"\n'
    )
    assert broken_section_references(tmp_path, ["src"]) == [
        "src/a.py:3: docs/billing.md 'Invoices'",
        "src/a.py:4: docs/nothing.md 'Rating rules'",
    ]
