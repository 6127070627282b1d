"""The campaign dialer against `switchboard up` (two media nodes, real ESL) and a SIPp carrier
that answers, answers busy (486) or never answers, by dialed number."""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.platform_harness import Platform, free_run
from tests.support.sipp import SCENARIOS

SCENARIO = SCENARIOS / "dialer_carrier_uas.xml"
pytestmark = pytest.mark.skipif(
    shutil.which("sipp") is None, reason="sipp (Debian sip-tester) not installed"
)


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    p = Platform(media_nodes=2)
    p.start()
    yield p
    p.cleanup()


@pytest.fixture
def carrier(platform: Platform, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """SIPp UAS on the `carrier` gateway's address, bounded in time."""
    proc = subprocess.Popen(
        [shutil.which("sipp") or "sipp", "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", str(platform.carrier),
         "-mi", "127.0.0.1", "-mp", str(free_run(2, 40000, 60000)), "-nostdin", "-timeout", "120s",
         "-trace_stat", "-stf", str(tmp_path / "carrier.csv")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    yield proc
    proc.kill()
    proc.wait()


def short_wav(path: Path, seconds: float = 0.5) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        n = int(8000 * seconds)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000)))
                for i in range(n)
            )
        )
    return path


def campaign(
    platform: Platform, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    cfg = platform.state / "sb.toml"
    return subprocess.run(
        [sys.executable, "-m", "switchboard.cli", "campaign", *args, "--config", str(cfg)],
        capture_output=True, text=True, timeout=timeout, cwd=platform.state,
    )  # fmt: skip


def test_campaign_outcomes_retries_and_dnc(
    platform: Platform, carrier: subprocess.Popen[str], tmp_path: Path
) -> None:
    answer = [f"1{i:09d}" for i in range(6)]
    busy = [f"2{i:09d}" for i in range(3)]
    noans = [f"3{i:09d}" for i in range(3)]
    dnc_number = "1999999999"
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        "number,caller_id\n"
        + "".join(f"{n},5551000\n" for n in [*answer, *busy, *noans, dnc_number])
    )
    dnc = tmp_path / "dnc.txt"
    dnc.write_text(dnc_number + "\n")
    # 2.2 s of prompt: each answered leg bills 2 whole seconds.
    wav = short_wav(tmp_path / "message.wav", seconds=2.2)
    (tmp_path / "buy.csv").write_text("prefix,rate,increment\n1,0.60,1/1\n2,0.60,1/1\n3,0.60,1/1\n")
    (tmp_path / "sell.csv").write_text(
        "prefix,rate,increment\n1,1.20,1/1\n2,1.20,1/1\n3,1.20,1/1\n"
    )
    for deck, owner in (("buy.csv", ["--carrier", "carrier"]), ("sell.csv", [])):
        imported = subprocess.run(
            [sys.executable, "-m", "switchboard.cli", "rates", "import", str(tmp_path / deck), *owner,
             "--config", str(platform.state / "sb.toml")],
            capture_output=True, text=True, timeout=60, cwd=platform.state,
        )  # fmt: skip
        assert imported.returncode == 0, imported.stdout + imported.stderr
    esl = [
        a for i in range(platform.media_nodes) for a in ("--esl", f"127.0.0.1:{platform.esl + i}")
    ]
    run = campaign(platform, "run", str(contacts), "--gateway", "carrier", "--cps", "10", "--play", str(wav),
                   *esl, "--retry", "busy=2/0.5,noanswer=2/0.5", "--originate-timeout", "2", "--dnc", str(dnc),
                   "--no-live")  # fmt: skip
    assert run.returncode == 0, run.stderr + run.stdout
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done"
    assert summary["contacts"] == 13
    assert summary["answered"] == 6
    assert summary["busy"] == 6  # 3 contacts × 2 attempts
    assert summary["noanswer"] == 6
    assert summary["failed"] == 0 and summary["unknown"] == 0
    assert summary["dnc"] == 1
    assert summary["dialed"] == 18
    assert summary["achieved_cps"] <= 10 * 1.02

    # Cost from the CDRs (written in batches: wait for all 18 legs), joined on the channel UUID.
    deadline = time.monotonic() + 30
    while True:
        report = campaign(platform, "report", "contacts", "--json")
        assert report.returncode == 0, report.stderr
        rep = json.loads(report.stdout)
        if rep["cdrs"] == 18 or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # another process's batched writes: nothing to await
    assert rep["cdrs"] == 18
    assert rep["attempts"]["answered"] == 6
    assert rep["asr_pct"] == pytest.approx(100 * 6 / 18, abs=0.01)
    assert rep["acd_s"] is not None and rep["acd_s"] >= 2
    # 6 answered legs × 2 s in 1 s increments: buy 0.60/min = 0.02 each, sell 1.20/min = 0.04
    # each; busy and unanswered legs bill nothing.
    assert Decimal(rep["cost"]) == Decimal("0.12")
    assert Decimal(rep["revenue"]) == Decimal("0.24")
    assert rep["billed_minutes"] == pytest.approx(12 / 60, abs=0.01)
    assert rep["unrated_cdrs"] == 0

    # Running the same campaign again dials nobody: it is done.
    again = campaign(
        platform,
        "run",
        str(contacts),
        "--gateway",
        "carrier",
        "--play",
        str(wav),
        *esl,
        "--no-live",
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["dialed"] == 0


def db_rows(platform: Platform, query: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    url = subprocess.run(
        [sys.executable, "-m", "switchboard.cli", "db", "url", "--config", str(platform.state / "sb.toml")],
        capture_output=True, text=True, timeout=60, cwd=platform.state, check=True,
    ).stdout.strip()  # fmt: skip
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def test_sigkill_mid_campaign_and_resume_dial_nobody_twice(
    platform: Platform, carrier: subprocess.Popen[str], tmp_path: Path
) -> None:
    numbers = [f"4{i:09d}" for i in range(30)]
    contacts = tmp_path / "crashme.csv"
    contacts.write_text("number\n" + "".join(f"{n}\n" for n in numbers))
    wav = short_wav(tmp_path / "m.wav", seconds=1.0)
    esl = [
        a for i in range(platform.media_nodes) for a in ("--esl", f"127.0.0.1:{platform.esl + i}")
    ]
    args = [sys.executable, "-m", "switchboard.cli", "campaign", "run", str(contacts), "--gateway", "carrier",
            "--cps", "10", "--max-concurrent", "5", "--play", str(wav), *esl, "--no-live",
            "--config", str(platform.state / "sb.toml")]  # fmt: skip
    first = subprocess.Popen(
        args, cwd=platform.state, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while True:
        sent = db_rows(
            platform,
            "SELECT count(*) FROM dialer_attempt a JOIN dialer_campaign c ON c.id = a.campaign_id "
            "WHERE c.name = 'crashme'",
        )
        if sent and sent[0][0] >= 10:
            break
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        assert time.monotonic() < deadline, "the campaign did not start dialing"
        time.sleep(0.2)  # another process's progress: nothing to await
    first.kill()  # SIGKILL with calls in flight
    first.wait()

    second = subprocess.run(args, cwd=platform.state, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "resuming campaign crashme" in second.stderr
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["contacts"] == 30
    assert summary["answered"] + summary["unknown"] == 30

    # What the carrier was sent, from the node's CDRs (one per outbound leg): nobody twice.
    deadline = time.monotonic() + 30
    while True:
        legs = dict(
            db_rows(
                platform,
                "SELECT destination, count(*) FROM cdr WHERE destination LIKE '4%%' GROUP BY 1",
            )
        )
        attempts = db_rows(
            platform,
            "SELECT count(*) FROM dialer_attempt a JOIN dialer_campaign c ON c.id = a.campaign_id "
            "WHERE c.name = 'crashme' AND a.outcome = 'answered'",
        )[0][0]
        if sum(legs.values()) >= attempts or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # batched CDR writes in another process
    assert legs, "no CDRs for the campaign"
    assert max(legs.values()) == 1, f"dialed twice: { {n: c for n, c in legs.items() if c > 1} }"
    assert set(legs) <= set(numbers)
    assert len(legs) >= 30 - summary["unknown"]

    status = campaign(platform, "status", "--json")
    assert status.returncode == 0, status.stderr
    by_name = {c["name"]: c for c in json.loads(status.stdout)}
    assert by_name["crashme"]["status"] == "done"
    assert sum(by_name["crashme"]["contacts"].values()) == 30


def test_extension_and_live_display(
    platform: Platform, carrier: subprocess.Popen[str], tmp_path: Path
) -> None:
    contacts = tmp_path / "ext.csv"
    contacts.write_text("number,name\n5000000001,Ann\n")
    esl = ["--esl", f"127.0.0.1:{platform.esl}"]
    # The answered leg runs the default dialplan's `playback` extension (prompt, then hang up).
    run = campaign(platform, "run", str(contacts), "--gateway", "carrier", "--extension", "playback", *esl,
                   "--live")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "campaign ext" in run.stdout and "done" in run.stdout
    report = json.loads(campaign(platform, "report", "ext", "--json").stdout)
    assert report["attempts"] == {"answered": 1}
    assert report["acd_s"] >= 3  # the bundled prompt is 4.7 s
