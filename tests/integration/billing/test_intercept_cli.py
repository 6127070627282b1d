"""Lawful recording's operator side on a real PostgreSQL: the target list through the CLI
(every change and every reading in the audit trail), the recordings directory's hash chain
verified (a removed, altered or reordered recording is reported, exit 1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner, Result

from switchboard.cli import app
from switchboard.media.intercept import HashChain


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Iterator[CliRunner]:
    yield CliRunner(
        env={
            "SWITCHBOARD_DATABASE__URL": db_url,
            "SWITCHBOARD_PLATFORM__STATE_DIR": str(tmp_path / "state"),
            "SWITCHBOARD_INTERCEPT__DIR": str(tmp_path / "li"),
        },
    )


def run(cli: CliRunner, *args: str, code: int = 0) -> Result:
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def test_target_list_changes_and_readings_are_audited(
    cli: CliRunner, conn: psycopg.Connection
) -> None:
    run(cli, "intercept", "add", "+49 30 123456", "--warrant", "LI-1")
    run(cli, "intercept", "add", "4940777", "--warrant", "LI-2", "--mode", "siprec")
    assert "no targets" not in (out := run(cli, "intercept", "list").stdout)
    assert "4930123456  file  warrant LI-1" in out and "4940777  siprec  warrant LI-2" in out
    listed = json.loads(run(cli, "intercept", "list", "--json").stdout)
    assert [t["number"] for t in listed] == ["4930123456", "4940777"]
    run(cli, "intercept", "remove", "4940777")
    assert "is not a target" in run(cli, "intercept", "remove", "4940777", code=1).stderr
    assert "--warrant" in run(cli, "intercept", "add", "49", "--warrant", " ", code=2).stderr
    assert "--mode" in run(cli, "intercept", "add", "49", "--warrant", "x", "--mode", "tap",
                           code=2).stderr  # fmt: skip
    rows = conn.execute(
        "SELECT action, key, actor FROM audit_log WHERE object = 'intercept_target' ORDER BY id"
    ).fetchall()
    assert [(a, k) for a, k, _ in rows] == [
        ("insert", "4930123456"),
        ("insert", "4940777"),
        ("read", ""),
        ("read", ""),
        ("delete", "4940777"),
    ]
    assert all(actor.startswith("os:") for *_, actor in rows)


def test_recordings_chain_verified_and_access_audited(
    cli: CliRunner, conn: psycopg.Connection, tmp_path: Path
) -> None:
    li = tmp_path / "li"
    li.mkdir()
    chain = HashChain(li)
    for n in range(3):
        (li / f"r{n}.wav").write_bytes(b"RIFF" + bytes([n]) * 100)
        (li / f"r{n}.json").write_text(json.dumps({"n": n}))
        chain.append(li / f"r{n}.wav", li / f"r{n}.json")
    out = run(cli, "intercept", "recordings").stdout
    assert "3 recordings, hash chain intact" in out and "r2.wav" in out
    (li / "r1.wav").write_bytes(b"RIFF" + b"\x09" * 100)  # altered
    assert "r1.wav altered" in run(cli, "intercept", "recordings", code=1).stderr
    (li / "r1.wav").unlink()  # removed
    assert "r1.wav missing" in run(cli, "intercept", "recordings", code=1).stderr
    lines = (li / "chain.jsonl").read_text().splitlines()
    (li / "chain.jsonl").write_text("\n".join([lines[0], lines[2]]) + "\n")  # entry dropped
    assert "chain broken" in run(cli, "intercept", "recordings", code=1).stderr
    rows = conn.execute(
        "SELECT new->>'entries', new->>'intact' FROM audit_log WHERE object = 'recording'"
        " AND action = 'list' ORDER BY id"
    ).fetchall()
    assert rows == [("3", "true"), ("3", "false"), ("3", "false"), ("2", "false")]
