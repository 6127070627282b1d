"""SIPp, the third-party SIP peer of the e2e tests: every way a test drives it.

* :class:`Sipp` — the ``sipp`` fixture (``tests/conftest.py``): builds a bounded command
  line in the test's directory and reads SIPp's statistics::

      async def test_x(sipp: Sipp) -> None:
          result = await sipp.arun("127.0.0.1:5099", scenario="uac", calls=5, rate=20)
          assert result.returncode == 0, result
          assert result.successful == 5

  ``scenario`` is a built-in name (``uac``, ``uas``, ``regexp``, ``branchc``...,
  ``-sn``) or a path to an XML file (``-sf``); ``transport`` is SIPp's ``-t`` value
  (``u1`` UDP one socket, ``t1`` TCP one connection, ``un``/``tn`` one per call).
  ``run()`` blocks (the system under test lives in another process), ``arun()``
  awaits (the system under test runs in this test's event loop), ``start()`` leaves
  SIPp running in the background, e.g. as a UAS standing in for a media node.
* :class:`SippPeer` — one SIPp process with its own arguments, awaited from the test's
  event loop, counting the requests it received (the router tests' UAC and UAS).
* :func:`run_sipp` / :func:`finish_sipp` — a media-node scenario from ``tests/data/sipp``
  (``-key codecs`` and further keys) as a UAC, to completion or in the background.

Every run is bounded by SIPp's ``-timeout`` or a wait with a deadline, and killed after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.net import async_wait_until, free_port

SIPP = shutil.which("sipp")
HAVE_SIPP = SIPP is not None
SCENARIOS = Path(__file__).resolve().parents[1] / "data" / "sipp"
HOST = "127.0.0.1"
# SIPp's own timeout may be exceeded by its shutdown; the hard kill comes after this.
KILL_GRACE = 10.0


@dataclass(repr=False)
class SippResult:
    """What SIPp reported: exit code, final statistics row, output and error log."""

    returncode: int
    stats: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""
    errors: str = ""
    command: list[str] = field(default_factory=list)

    def count(self, column: str) -> int:
        """A cumulative counter of the ``-trace_stat`` CSV, e.g. ``"SuccessfulCall(C)"``."""
        value = self.stats.get(column, "")
        return int(value) if value.strip().isdigit() else 0

    @property
    def output(self) -> str:
        """What SIPp printed (stdout)."""
        return self.stdout

    @property
    def successful(self) -> int:
        return self.count("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self.count("FailedCall(C)")

    @property
    def created(self) -> int:
        return self.count("TotalCallCreated")

    def __str__(self) -> str:
        return (
            f"sipp exited {self.returncode}: successful={self.successful} failed={self.failed}\n"
            f"command: {' '.join(self.command)}\n"
            f"stderr: {self.stderr[-2000:]}\nerrors: {self.errors[-3000:]}"
        )

    __repr__ = __str__  # what pytest prints for ``assert ..., result``


def read_stats(path: Path) -> dict[str, str]:
    """The last row of a SIPp ``-trace_stat`` CSV (';'-separated, header first)."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    rows = [r for r in rows if r]
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


class SippProcess:
    """A SIPp started in the background; ``stop()`` ends it and collects the result."""

    def __init__(self, proc: subprocess.Popen[str], sipp: Sipp, name: str, command: list[str]):
        self.proc = proc
        self.sipp = sipp
        self.name = name
        self.command = command

    def wait(self, timeout: float) -> SippResult:
        """Let SIPp finish by itself (``-m`` calls done, including a UAS scenario's
        closing timewait); killed after ``timeout`` seconds."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.sipp._result(self.name, self.proc.returncode, out, err, self.command)

    def stop(self, timeout: float = 5.0) -> SippResult:
        """End SIPp now (SIGTERM, then SIGKILL); calls still in progress — e.g. in a
        UAS scenario's closing timewait — count as current, not successful."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.wait(timeout)


class Sipp:
    """Builds and runs SIPp command lines inside one test's temporary directory."""

    def __init__(self, workdir: Path) -> None:
        if SIPP is None:
            pytest.fail("sipp not found: install Debian package sip-tester (make test does)")
        self.binary = SIPP
        self.workdir = workdir
        self._runs = 0
        self._background: list[SippProcess] = []

    def command(
        self,
        target: str | None,
        *,
        scenario: str | Path = "uac",
        transport: str = "u1",
        calls: int = 1,
        rate: float | None = None,
        local_port: int | None = None,
        timeout: float = 20.0,
        service: str | None = None,
        extra: Sequence[str] = (),
        name: str | None = None,
    ) -> tuple[list[str], str]:
        """The argv for one run and the name its files are written under."""
        self._runs += 1
        name = name or f"run{self._runs}"
        sc = ["-sf", str(scenario)] if str(scenario).endswith(".xml") else ["-sn", str(scenario)]
        argv = [self.binary]
        if target:
            argv.append(target)
        argv += sc
        argv += ["-t", transport, "-i", HOST]
        argv += ["-p", str(local_port if local_port is not None else free_port())]
        argv += ["-mp", str(free_port("udp")), "-cp", str(free_port("udp"))]
        argv += ["-m", str(calls)]
        if rate is not None:
            argv += ["-r", f"{rate:g}"]
        if service is not None:
            argv += ["-s", service]
        argv += ["-timeout", f"{timeout:g}s", "-timeout_error", "-nostdin"]
        argv += ["-trace_stat", "-stf", str(self.workdir / f"{name}.csv"), "-fd", "1"]
        argv += ["-trace_err", "-error_file", str(self.workdir / f"{name}_errors.log")]
        argv += list(extra)
        return argv, name

    def _result(self, name: str, rc: int, out: str, err: str, argv: list[str]) -> SippResult:
        errors = self.workdir / f"{name}_errors.log"
        return SippResult(
            returncode=rc,
            stats=read_stats(self.workdir / f"{name}.csv"),
            stdout=out,
            stderr=err,
            errors=errors.read_text(errors="replace") if errors.exists() else "",
            command=argv,
        )

    def run(self, target: str | None, **options: object) -> SippResult:
        """Run SIPp to completion (blocking); see :meth:`command` for options."""
        argv, name = self.command(target, **options)  # type: ignore[arg-type]
        limit = float(options.get("timeout", 20.0)) + KILL_GRACE  # type: ignore[arg-type]
        try:
            done = subprocess.run(
                argv, cwd=self.workdir, capture_output=True, text=True, timeout=limit
            )
        except subprocess.TimeoutExpired as exc:
            return self._result(name, -9, str(exc.stdout or ""), str(exc.stderr or ""), argv)
        return self._result(name, done.returncode, done.stdout, done.stderr, argv)

    async def arun(self, target: str | None, **options: object) -> SippResult:
        """Run SIPp to completion without blocking the running event loop."""
        argv, name = self.command(target, **options)  # type: ignore[arg-type]
        limit = float(options.get("timeout", 20.0)) + KILL_GRACE  # type: ignore[arg-type]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.workdir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            return self._result(name, -9, out.decode(errors="replace"), err.decode(), argv)
        rc = proc.returncode if proc.returncode is not None else -1
        return self._result(name, rc, out.decode(errors="replace"), err.decode(), argv)

    def start(self, target: str | None = None, **options: object) -> SippProcess:
        """Start SIPp in the background (e.g. ``scenario="uas"``, ``local_port=...``);
        it is stopped at the end of the test if still running."""
        argv, name = self.command(target, **options)  # type: ignore[arg-type]
        proc = subprocess.Popen(
            argv,
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        handle = SippProcess(proc, self, name, argv)
        self._background.append(handle)
        return handle

    def close(self) -> None:
        for handle in self._background:
            with contextlib.suppress(Exception):
                handle.stop(timeout=2.0)


class SippPeer:
    """One SIPp process driven from a test's event loop: started with a scenario file and
    its own arguments, awaited for its exit code, its received requests counted from its
    ``-trace_msg`` log (start it with ``-trace_msg`` for :meth:`received`)."""

    def __init__(self, proc: asyncio.subprocess.Process, cwd: Path, name: str) -> None:
        self.proc = proc
        self.cwd = cwd
        self.name = name

    @classmethod
    async def start(
        cls, cwd: Path, scenario: str | Path, *args: str, ip: str = "127.0.0.1", port: int = 0
    ) -> SippPeer:
        path = scenario if isinstance(scenario, Path) else SCENARIOS / scenario
        argv = [
            SIPP or "sipp",
            "-sf",
            str(path),
            "-i",
            ip,
            "-p",
            str(port or free_port(host=ip)),
            "-nostdin",
            "-trace_err",
            "-trace_screen",
            *args,
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        return cls(proc, cwd, path.stem)

    async def wait(self, timeout: float = 30.0) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
            raise AssertionError(
                f"SIPp {self.name} did not finish within {timeout} s:\n{self.errors()}"
            ) from None

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def received(self, method: str) -> int:
        """How many ``method`` requests this SIPp received (its -trace_msg log)."""
        n = 0
        for f in self.cwd.glob(f"{self.name}_{self.proc.pid}_messages.log"):
            n += len(
                re.findall(rf"message received \[\d+\] bytes :\s*\n\s*\n{method} ", f.read_text())
            )
        return n

    async def wait_received(self, method: str, count: int, timeout: float = 10.0) -> None:
        await async_wait_until(
            lambda: self.received(method) >= count,
            timeout,
            f"{self.name} to receive {count} {method}",
        )
        await asyncio.sleep(0.2)  # and not more
        assert self.received(method) == count

    def errors(self) -> str:
        out = []
        for f in self.cwd.glob(f"{self.name}_{self.proc.pid}_errors.log"):
            out.append(f.read_text()[-3000:])
        return "\n".join(out)

    async def ok(self, timeout: float = 30.0) -> None:
        rc = await self.wait(timeout)
        assert rc == 0, f"SIPp {self.name} exited {rc}:\n{self.errors()}"


async def run_sipp(
    scenario: str,
    port: int,
    workdir: Path,
    *,
    service: str,
    keys: Mapping[str, str | int] | None = None,
    calls: int = 1,
    rate: float | None = None,
    limit: int | None = None,
    pause_ms: int = 1000,
    timeout: float = 30.0,
    extra: list[str] | None = None,
    background: bool = False,
) -> SippResult | asyncio.subprocess.Process:
    """Run ``tests/data/sipp/<scenario>`` as a UAC against 127.0.0.1:``port`` — the media
    node's scenarios, which take the offered codecs as ``-key codecs`` and further ``keys``;
    ``background=True`` returns the process for :func:`finish_sipp`."""
    err = workdir / f"{scenario}-{free_port()}-errors.log"
    argv = [
        "sipp", "-sf", str(SCENARIOS / scenario), f"127.0.0.1:{port}",
        "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
        "-s", service, "-m", str(calls), "-d", str(pause_ms),
        "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin",
        "-trace_err", "-error_file", str(err),
        "-key", "codecs", "0 8",
    ]  # fmt: skip
    for k, v in (keys or {}).items():
        argv += ["-key", k, str(v)]
    if rate is not None:
        argv += ["-r", str(rate), "-rp", "1000"]
    if limit is not None:
        argv += ["-l", str(limit)]
    argv += extra or []
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    if background:
        return proc
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout + 10)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    errors = err.read_text(errors="replace") if err.exists() else ""
    return SippResult(
        proc.returncode or 0, stdout=out.decode(errors="replace"), errors=errors, command=argv
    )


async def finish_sipp(proc: asyncio.subprocess.Process, timeout: float = 40.0) -> SippResult:
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    return SippResult(proc.returncode or 0, stdout=out.decode(errors="replace"))
