"""``switchboard console`` through a real pseudo-terminal (pexpect), as an operator types:
against the project's own media node (a ``switchboard media`` process) and against a
scripted FreeSWITCH-like Event Socket peer — Tab completion of API commands and live
channel UUIDs, a command and its answer, events and coloured log lines arriving above the
prompt, reconnecting when the node restarts, Ctrl-D; and ``-x`` one-shot exit codes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.support.net import free_port, wait_until

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[3]
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
RED, MAGENTA, YELLOW = r"\x1b\[0;31m", r"\x1b\[0;35m", r"\x1b\[0;33m"


def env(home: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    # a pty that never answers prompt_toolkit's cursor-position request: say so up front
    return {**keep, "HOME": str(home), "TERM": "xterm-256color", "NO_COLOR": ""} | {
        "PYTHONPATH": str(ROOT),
        "PROMPT_TOOLKIT_NO_CPR": "1",
    }


def no_color_env(home: Path) -> dict[str, str]:
    e = env(home)
    e.pop("NO_COLOR")
    return e


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Node:
    """``switchboard media`` in a process, restartable on the same ports."""

    def __init__(self, tmp: Path) -> None:
        self.esl = free_port("tcp")
        rtp = free_port("udp", even=True)
        self.config = tmp / "node.toml"
        self.config.write_text(
            f'[platform]\nstate_dir = "{tmp / "state"}"\n'
            f'[media]\nlisten = ["udp:127.0.0.1:{free_port("udp")}"]\n'
            f'admin = "127.0.0.1:{free_port("tcp")}"\n'
            f"rtp_port_start = {rtp}\nrtp_port_end = {rtp + 99}\n"
            f'[esl]\nlisten = "127.0.0.1:{self.esl}"\nheartbeat = 0\n'
        )
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "switchboard.cli", "media", "--config", str(self.config)],
            env=no_color_env(self.tmp),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.esl), timeout=30, what="the node's Event Socket")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    n.start()
    yield n
    n.stop()


def console(home: Path, *args: str, ready: bool = True) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "switchboard.cli", "console", *args],
        env=no_color_env(home),
        encoding="utf-8",
        dimensions=(50, 220),
        timeout=20,
    )
    if os.environ.get("CONSOLE_TEST_LOG"):
        child.logfile_read = open(os.environ["CONSOLE_TEST_LOG"], "a", buffering=1)  # noqa: SIM115
    if ready:
        child.expect("connected to 127.0.0.1")
        child.expect("switchboard@127.0.0.1:")
    return child


def shown(text: str) -> str:
    """A pattern for ``text`` as the terminal shows it while it is edited: the line editor
    may put cursor movements and colour resets between any two characters."""
    return r"(?:\x1b\[[0-9;?]*[A-Za-z])*".join(re.escape(c) for c in text)


def expect_all(child: pexpect.spawn, *patterns: str) -> list[re.Match[str]]:
    """Every pattern seen, in any order (answers, events and log lines interleave); the
    matches in the order of ``patterns``."""
    left = list(range(len(patterns)))
    found: dict[int, re.Match[str]] = {}
    while left:
        i = left.pop(child.expect([patterns[j] for j in left]))
        found[i] = child.match
    return [found[i] for i in range(len(patterns))]


def finish(child: pexpect.spawn, *, prompt: bool = True) -> int:
    if prompt:
        child.expect(r"switchboard@127\.0\.0\.1:\d+>")  # the prompt is back
    child.sendcontrol("d")  # Ctrl-D leaves, as in fs_cli
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus)


def test_console_on_a_media_node(node: Node, tmp_path: Path) -> None:
    # the node's line for each ended leg is at DEBUG (the CDR is the leg's record; at INFO
    # the line cost 7 % of a busy node's CPU): the console asks for it, the node itself
    # still logs at INFO
    child = console(tmp_path, "--config", str(node.config), "--log-level", "debug")
    try:
        child.send("stat\t")  # Tab completes the API command
        child.expect(shown("status"))
        child.send("\r")
        child.expect(r"UP 0 years, 0 days")
        child.sendline("/event plain CHANNEL_CREATE CHANNEL_HANGUP_COMPLETE")
        child.expect(r"\+OK event listener enabled plain")
        child.sendline("originate loopback/echo &park")
        answer, _ = expect_all(child, rf"\+OK ({UUID_RE})\r?\n", r"\[EVENT\] CHANNEL_CREATE")
        uuid = answer.group(1)
        # Tab completes a live channel UUID after uuid_kill
        child.send(f"uuid_kill {uuid[:6]}\t")
        child.expect(shown(uuid[6:]))
        child.send("\r")
        # the answer, the event and the node's own log line for the call (yellow like
        # fs_cli's DEBUG) arrive in whatever order the node sends them
        expect_all(
            child,
            r"\+OK\r?\n",
            rf"\[EVENT\] CHANNEL_HANGUP_COMPLETE[^\[]*Unique-ID: {uuid}",
            rf"{YELLOW}[^\n]*\[DEBUG\][^\n]*call {uuid}",
        )

        node.stop()  # the node restarts: the console says so and comes back by itself
        child.expect(f"disconnected from 127.0.0.1:{node.esl}")
        node.start()
        child.expect(f"reconnected to 127.0.0.1:{node.esl}", timeout=30)
        child.sendline("show channels count")
        child.expect(r"0 total\.")
        child.sendline("originate loopback/echo &park")  # events asked for again
        child.expect(r"\[EVENT\] CHANNEL_CREATE")
        child.sendline("hupall")
        expect_all(  # both legs of the loopback call end: two events, two log lines
            child,
            r"\+OK hangup all channels",
            r"\[EVENT\] CHANNEL_HANGUP_COMPLETE",
            r"\[EVENT\] CHANNEL_HANGUP_COMPLETE",
            rf"{YELLOW}[^\n]*\[DEBUG\][^\n]*call {UUID_RE}[^\n]*cause=",  # log asked again too
            rf"{YELLOW}[^\n]*\[DEBUG\][^\n]*call {UUID_RE}[^\n]*cause=",
        )
        # /nolog and /noevents: nothing more arrives; /log warning: only warnings and worse
        child.sendline("/nolog")
        child.expect(r"\+OK no longer logging")
        child.sendline("/noevents")
        child.expect(r"\+OK no longer listening for events")
        seen = ""
        for line, answer in (
            ("originate loopback/echo &park", rf"\+OK {UUID_RE}"),
            ("hupall", r"\+OK hangup all channels"),
            ("/log warning", r"\+OK log level warning \[4\]"),
            ("uuid_kill 00000000-0000-4000-8000-000000000000", r"-ERR No such channel!"),
            ("show channels count", r"0 total\."),
        ):
            child.sendline(line)
            child.expect(answer)
            seen += child.before + child.after
        assert "[EVENT]" not in seen and "[INFO]" not in seen and "[DEBUG]" not in seen, seen
        assert finish(child) == 0
    finally:
        child.close(force=True)


def test_console_on_a_freeswitch_like_peer(tmp_path: Path) -> None:
    port = free_port("tcp")
    peer = subprocess.Popen(
        [sys.executable, "-m", "tests.support.esl.fs_peer", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert peer.stdout is not None and peer.stdout.readline().strip() == b"READY"
        child = console(
            tmp_path, "--port", str(port), "--password", "ClueCon", "-l", "warning", ready=False
        )
        try:
            # FreeSWITCH's log/data frames up to WARNING (answering `log warning`), coloured
            child.expect(rf"{RED}[^\n]*\[ERR\] switch_core.c:103 fs-peer line at level err")
            child.expect(rf"{MAGENTA}[^\n]*\[WARNING\][^\n]*level warning")
            child.expect("connected to 127.0.0.1")
            child.expect("switchboard@127.0.0.1:")
            child.send("sof\t")  # completion from the peer's own `show api`
            child.expect(shown("ia"))
            child.send("\x15")  # Ctrl-U: clear the line
            child.send("uuid_kill \t")
            child.expect(shown("0c1e2f3a-1111-4222-8333-444455556666"))
            child.send("\r")
            child.expect(r"\+OK")
            child.send("/log deb\t")  # console commands complete their arguments too
            child.expect(shown("ug"))
            child.send("\r")
            expect_all(
                child,
                r"\+OK log level debug \[7\]",
                r"\[DEBUG\] switch_core\.c:107 fs-peer line at level debug",
            )
            child.sendline("/event plain ALL")
            child.expect(r"\[EVENT\] CHANNEL_ANSWER")
            child.expect(r"Channel-Name: sofia/internal/1000@192.0.2.10")  # URL-decoded
            child.sendline("bogus")
            child.expect(r"-ERR bogus Command not found!")
            child.expect(r"switchboard@127\.0\.0\.1:\d+>")
            child.send("\x1b[A")  # ↑ recalls the last line from the history
            child.expect(shown("bogus"))
            child.send("\x15")  # Ctrl-U
            assert finish(child, prompt=False) == 0
        finally:
            child.close(force=True)
        # the history is kept in the home directory for the next session
        history = (tmp_path / ".switchboard_console_history").read_text()
        assert "+bogus" in history and "+/event plain ALL" in history
        child = console(tmp_path, "--port", str(port), "--password", "ClueCon", "-l", "none")
        try:
            child.send("\x1b[A")
            child.expect(shown("bogus"))
            child.send("\x15")
            assert finish(child, prompt=False) == 0
        finally:
            child.close(force=True)
    finally:
        peer.kill()
        peer.wait()


def test_one_shot_exit_codes(node: Node, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "switchboard.cli", "console", *args],
            env=env(tmp_path), capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    cfg = ("--config", str(node.config))
    ok = run(*cfg, "-x", "status", "-x", "show channels count")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("UP 0 years") and "0 total." in ok.stdout
    assert "\x1b[" not in ok.stdout  # not a terminal: no colours
    bad = run(*cfg, "-x", "status", "-x", "bogus")
    assert bad.returncode == 1 and "-ERR bogus Command not found!" in bad.stdout
    wrong = run(*cfg, "--password", "nope", "-x", "status")
    assert wrong.returncode == 3 and "refused authentication" in wrong.stderr
    away = run("--port", str(free_port("tcp")), "-x", "status")
    assert away.returncode == 3 and re.search(r"cannot connect", away.stderr)
