"""The media node's channel journal: records, damage, rewrites (files in a temp dir)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from switchboard.media import journal as journal_mod
from switchboard.media.journal import Journal, read


def bridge(a: str, b: str) -> dict[str, Any]:
    return {"legs": [{"uuid": a, "call_id": f"{a}@x"}, {"uuid": b, "call_id": f"{b}@y"}]}


def test_live_bridges_are_those_with_a_leg_not_ended(tmp_path: Path) -> None:
    j = Journal(tmp_path / "media-1.jnl")
    j.open()
    j.bridged("a1", ("a1", "b1"), bridge("a1", "b1"))
    j.bridged("a2", ("a2", "b2"), bridge("a2", "b2"))
    j.bridged("a3", ("a3", "b3"), bridge("a3", "b3"))
    j.ended("a1", '{"cdr": 1}')
    j.ended("b1", '{"cdr": 2}')
    j.ended("b2", '{"cdr": 3}')
    j.ended("zz", '{"never journaled": true}')  # not a journaled leg: nothing written
    j.close()
    state = read(tmp_path / "media-1.jnl")
    assert [r["legs"][0]["uuid"] for r in state.live()] == ["a2", "a3"]
    assert set(state.ends) == {"a1", "b1", "b2"}
    assert state.ends["b2"][1] == '{"cdr": 3}'
    assert state.skipped == 0


def test_a_truncated_last_record_is_skipped_and_logged_the_rest_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "media-1.jnl"
    j = Journal(path)
    j.open()
    j.bridged("a1", ("a1", "b1"), bridge("a1", "b1"))
    j.bridged("a2", ("a2", "b2"), bridge("a2", "b2"))
    j.close()
    whole = path.read_bytes()
    path.write_bytes(whole[:-25])  # the process died in the middle of the last write
    with caplog.at_level(logging.WARNING):
        state = read(path)
    assert [r["legs"][0]["uuid"] for r in state.live()] == ["a1"]
    assert state.skipped == 1
    assert "cut short" in caplog.text
    # a garbled line in the middle is skipped too; what is whole is used
    path.write_bytes(whole.replace(b'"a2@x"', b"\xff\xfe", 1) + whole)
    state = read(path)
    assert state.skipped == 1 and {r["legs"][0]["uuid"] for r in state.live()} == {"a1", "a2"}


def test_restart_keeps_live_bridges_and_recent_ends_drops_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "media-1.jnl"
    j = Journal(path)
    j.open()
    for i in range(50):  # finished calls: both legs ended
        j.bridged(f"a{i}", (f"a{i}", f"b{i}"), bridge(f"a{i}", f"b{i}"))
        j.ended(f"a{i}", "{}")
        j.ended(f"b{i}", "{}")
    j.bridged("live", ("live", "lb"), bridge("live", "lb"))
    j.close()
    state = read(path)
    monkeypatch.setattr(journal_mod, "KEEP_ENDS_FOR", 0.0)  # every end is old by now
    j2 = Journal(path)
    j2.open(state)
    j2.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0][2:])["legs"][0]["uuid"] == "live"


def test_the_file_is_rewritten_past_its_size_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_mod, "ROTATE_BYTES", 4096)
    monkeypatch.setattr(journal_mod, "KEEP_ENDS_FOR", 0.0)
    path = tmp_path / "media-1.jnl"
    j = Journal(path)
    j.open()
    for i in range(200):
        j.bridged(f"a{i}", (f"a{i}", f"b{i}"), bridge(f"a{i}", f"b{i}"))
        j.ended(f"a{i}", "{}")
        j.ended(f"b{i}", "{}")
    j.bridged("live", ("live", "lb"), bridge("live", "lb"))
    j.close()
    assert path.stat().st_size < 4096 + 200
    assert [r["legs"][0]["uuid"] for r in read(path).live()] == ["live"]


def test_the_journal_holds_the_cdrs_of_recent_ends_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rewrite keeps the ends of the last KEEP_ENDS_FOR seconds; the lines held in memory
    # for it are those, not every end since the last rewrite (a 64 MB file's worth).
    clock = [1000.0]
    monkeypatch.setattr(journal_mod.time, "time", lambda: clock[0])
    j = Journal(tmp_path / "media-1.jnl")
    j.open()
    try:
        for i in range(300):  # one call every 2 s: 600 s of calls
            clock[0] += 2.0
            j.bridged(f"a{i}", (f"a{i}", f"b{i}"), bridge(f"a{i}", f"b{i}"))
            j.ended(f"a{i}", '{"cdr":"' + "x" * 600 + '"}')
            j.ended(f"b{i}", "{}")
        # the calls of the last 120 s: 60 calls, two legs each
        assert len(j._ends) == len(j._end_times) == 120
        assert set(j._ends) == {f"{leg}{i}" for i in range(240, 300) for leg in "ab"}
    finally:
        j.close()
    lines = (tmp_path / "media-1.jnl").read_text().splitlines()
    assert sum(line.startswith("E ") for line in lines) == 600  # the file still has them all


def test_setups_cut_short_are_those_neither_bridged_nor_over(tmp_path: Path) -> None:
    j = Journal(tmp_path / "media-1.jnl")
    j.open()
    for uuid in ("s1", "s2", "s3", "s4"):
        j.setup(uuid, {"invite": f"INVITE {uuid}", "tag": "t", "peer": ["UDP", "127.0.0.1", 5060]})
    j.bridged("s1", ("s1", "b1"), bridge("s1", "b1"))  # bridged: resumed, not handed back
    j.setup_over("s2")  # answered by an application, or ended
    j.setup_over("s2")  # once only
    j.setup_over("never")  # not in setup: nothing written
    assert j.in_setup("s3") and not j.in_setup("s1") and not j.in_setup("s2")
    j.close()
    text = (tmp_path / "media-1.jnl").read_text()
    assert text.count("X ") == 1
    state = read(tmp_path / "media-1.jnl")
    assert [r["invite"] for r in state.pending_setups()] == ["INVITE s3", "INVITE s4"]
    assert state.skipped == 0
    # the restarted node's rewrite keeps them until it has handed them back (X)
    j2 = Journal(tmp_path / "media-1.jnl")
    j2.open(state)
    j2.close()
    assert len(read(tmp_path / "media-1.jnl").pending_setups()) == 2


def test_one_process_at_a_time_holds_the_journal(tmp_path: Path) -> None:
    """A reaper (wait=False) gives way to a running node; a node (wait=True) waits for a
    reaper to finish — flock on a descriptor of its own, as another process would."""
    import os
    import threading

    path = tmp_path / "journal" / "media-1.jnl"
    held = journal_mod.lock(path, wait=False)
    with pytest.raises(journal_mod.JournalBusy):
        journal_mod.lock(path, wait=False)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(journal_mod.lock(path, wait=True)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not got  # blocked while the lock is held
    os.close(held)
    waiter.join(5)
    assert got
    os.close(got[0])


def test_a_leg_record_of_its_own_is_superseded_by_its_bridge(tmp_path: Path) -> None:
    """A leg journaled alone (answered into an application, or a conference member) and
    then bridged as the B-leg is resumed once, in its bridge — in the running journal,
    after a restart, and after a rewrite."""
    path = tmp_path / "n.jnl"
    j = Journal(path)
    j.open()
    alone = {"legs": [{"uuid": "b", "call_id": "b@y"}], "app": ["conference", "r1"]}
    j.bridged("b", ("b",), alone)
    j.bridged("a", ("a", "b"), bridge("a", "b"))
    j.close()
    live = read(path).live()
    assert [[leg["uuid"] for leg in r["legs"]] for r in live] == [["a", "b"]]
    j = Journal(path)
    j.open(read(path))  # a rewrite keeps the bridge only
    j.ended("a", "{}")
    j.ended("b", "{}")
    j.close()
    assert read(path).live() == []


def test_a_node_that_is_up_keeps_its_heartbeat_fresh(tmp_path: Path) -> None:
    """down_for: how long since the node was last up — None before it ever ran; the sync
    thread of a node that is up (alive) touches the lock file every fsync_interval; a
    node not yet up (starting, or a reaper) does not."""
    import os
    import time

    path = tmp_path / "journal" / "media-1.jnl"
    assert journal_mod.down_for(path) is None
    fd = journal_mod.lock(path, wait=False)
    lock_file = path.with_suffix(".lock")
    old = time.time() - 60
    os.utime(lock_file, (old, old))
    assert journal_mod.down_for(path) == pytest.approx(60, abs=1)
    j = Journal(path, fsync_interval=0.02)
    j.open()
    try:
        time.sleep(0.1)  # five sync rounds of a node not up yet
        assert journal_mod.down_for(path) == pytest.approx(60, abs=1)
        j.alive = True
        deadline = time.monotonic() + 5
        while journal_mod.down_for(path) > 1:  # type: ignore[operator]
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.02)
    finally:
        j.close()
        os.close(fd)


def test_a_far_end_hangup_is_kept_until_the_legs_end(tmp_path: Path) -> None:
    """H: a journaled leg whose far end hung up — read back, kept across the rewrite of a
    restart, forgotten once the leg's E is written; a leg never journaled writes none."""
    path = tmp_path / "media-1.jnl"
    j = Journal(path)
    j.open()
    j.bridged("a1", ("a1", "b1"), bridge("a1", "b1"))
    j.bridged("a2", ("a2", "b2"), bridge("a2", "b2"))
    j.hung_up("a1", "NORMAL_CLEARING", 1000.25)
    j.hung_up("a2", "USER_BUSY", 1000.5)
    j.hung_up("zz", "NORMAL_CLEARING", 1000.0)  # not journaled: nothing written
    j.ended("a2", '{"cdr": 1}')
    j.close()
    state = read(path)
    assert state.hangups == {"a1": (1000.25, "NORMAL_CLEARING"), "a2": (1000.5, "USER_BUSY")}
    again = Journal(path)
    again.open(state)  # a restart's rewrite: a1 is still live and hung up; a2 has its E
    again.close()
    assert read(path).hangups == {"a1": (1000.25, "NORMAL_CLEARING")}


def test_setups_cut_short_survive_the_restarts_rewrite_until_handed_back(tmp_path: Path) -> None:
    """A node killed again between its start (which rewrites the journal) and its hand-back
    of the previous run's setups must leave them to the next one (seen: a warm spare
    stuck past recovery_timeout under load, its reaper found no setup, 11 callers waited
    out the router's Timer C). Handed back (X), they are gone."""
    path = tmp_path / "media-1.jnl"
    j = Journal(path)
    j.open()
    j.setup("in1", {"invite": "INVITE sip:x SIP/2.0", "tag": "t1", "peer": ["UDP", "h", 1]})
    j.setup("in2", {"invite": "INVITE sip:y SIP/2.0", "tag": "t2", "peer": ["UDP", "h", 1]})
    j.setup_over("in2")
    j.close()
    state = read(path)
    restarted = Journal(path)
    restarted.open(state)  # rewritten at start ...
    restarted.close()  # ... and killed before handing anything back
    assert list(read(path).pending_setup_items()) == ["in1"]
    again = Journal(path)
    again.open(read(path))
    again.setup_over("in1")  # handed back this time
    again.close()
    assert read(path).pending_setups() == []
    final = Journal(path)
    final.open(read(path))  # and a later rewrite does not bring it back
    final.close()
    assert read(path).pending_setups() == []


def test_the_idle_pass_drops_the_kept_ends_from_memory_not_from_the_file(
    tmp_path: Path,
) -> None:
    # The node's idle pass (no call for 40 s) calls forget_ends: the E lines a rewrite
    # would carry over leave memory, the file keeps them for a restart, and a later
    # rewrite carries only the ends that came after.
    j = Journal(tmp_path / "media-1.jnl")
    j.open()
    try:
        for i in range(3):
            j.bridged(f"a{i}", (f"a{i}", f"b{i}"), bridge(f"a{i}", f"b{i}"))
            j.ended(f"a{i}", '{"cdr": "a"}')
            j.ended(f"b{i}", '{"cdr": "b"}')
        j.bridged("a9", ("a9", "b9"), bridge("a9", "b9"))  # a call still up
        j.forget_ends()
        assert j._ends == {} and j._end_times == {} and not j._end_order
        assert set(read(tmp_path / "media-1.jnl").ends) == {
            f"{leg}{i}" for i in range(3) for leg in "ab"
        }
        j.ended("a9", '{"cdr": "late"}')
        j._rewrite()
    finally:
        j.close()
    state = read(tmp_path / "media-1.jnl")
    assert set(state.ends) == {"a9"}
    assert [r["legs"][0]["uuid"] for r in state.live()] == ["a9"]


def test_a_2xx_awaiting_its_ack_is_journaled_until_the_ack_and_survives_rewrites(
    tmp_path: Path,
) -> None:
    """A B record written before the caller's ACK carries the 2xx (``ok``); the ACK
    writes one A record — kept by a restart's rewrite while the leg lives — and an ACK of
    a leg journaled after it came writes nothing."""
    path = tmp_path / "media-1.jnl"
    j = Journal(path)
    j.open()
    rec = bridge("a1", "b1")
    rec["legs"][0]["ok"] = ["SIP/2.0 200 OK\r\n...", 1.0]
    j.bridged("a1", ("a1", "b1"), rec)
    j.bridged("a2", ("a2", "b2"), bridge("a2", "b2"))
    j.acked("a2")  # its record came after its ACK: nothing to write
    state = read(path)
    assert [state.awaiting_ack(leg) for r in state.live() for leg in r["legs"]] == [
        True, False, False, False,
    ]  # fmt: skip
    records = j.records
    j.acked("a1")
    j.acked("a1")  # a retransmitted ACK: written once
    assert j.records == records + 1
    j.close()
    state = read(path)
    assert state.acks == {"a1"} and not state.awaiting_ack(state.live()[0]["legs"][0])
    # a restart's rewrite keeps the B record with its 2xx and the A record after it
    j = Journal(path)
    j.open(state)
    j.close()
    state = read(path)
    assert state.live()[0]["legs"][0]["ok"] and not state.awaiting_ack(state.live()[0]["legs"][0])
    # the leg ended: its A record goes with it at the next rewrite
    j = Journal(path)
    j.open(state)
    j.ended("a1", "{}")
    j.ended("b1", "{}")
    j._rewrite()
    j.close()
    assert "A a1" not in path.read_text()
