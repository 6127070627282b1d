"""One HA lab per machine: its namespaces' names are fixed, so a second lab's start (which
first clears leftovers) or its teardown must not take the first one down while the process
running it lives (docs/operations.md, "The HA lab"). No root needed: nothing here reaches
``ip`` — the owner check comes first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from switchboard.lab import topology
from switchboard.lab.topology import Lab, LabBusy


@pytest.fixture
def owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    f = tmp_path / "lab.owner"
    monkeypatch.setenv("LAB_OWNER_FILE", str(f))
    return f


def test_a_second_lab_leaves_a_running_one_alone(
    owner: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner.write_text(f"{other.pid} /tmp/sblab-other\n")
        touched: list[tuple[str, ...]] = []
        monkeypatch.setattr(topology, "ip", lambda *a, **_k: touched.append(a))
        lab = Lab(dir=tmp_path / "mine", log=lambda _m: None)
        with pytest.raises(LabBusy, match=f"process {other.pid}"):
            lab.up()
        lab.down()  # what a test fixture's finally does: nothing of the other lab's
        assert touched == []
        assert owner.read_text().split()[0] == str(other.pid)
    finally:
        other.kill()
        other.wait()
    # its process gone (a `make lab` that returned, an interrupted run): this one takes over
    Lab(dir=tmp_path / "mine", log=lambda _m: None).claim()
    assert owner.read_text().split()[0] == str(os.getpid())


def test_lab_down_asked_for_stops_whoever_runs_it(
    owner: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner.write_text(f"{other.pid}\n")
        monkeypatch.setattr(topology, "lab_namespaces", lambda: [])
        # not the machine's /etc/netns: a lab running meanwhile (make test-ha) needs its
        # hosts files (removing them once broke every name lookup of a running lab)
        etc = tmp_path / "netns"
        (etc / "monitor").mkdir(parents=True)
        monkeypatch.setattr(topology, "ETC_NETNS", etc)
        Lab(dir=tmp_path / "mine", log=lambda _m: None).down(force=True)
        assert not owner.exists()
        assert not (etc / "monitor").exists()
    finally:
        other.kill()
        other.wait()
