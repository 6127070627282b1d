"""The `switchboard up` supervisor with real child processes: ready, restart, stop, cleanup."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from switchboard.observability.metrics import PlatformMetrics, new_registry, render
from switchboard.supervisor import (
    Listen,
    ServiceSpec,
    StartError,
    Supervisor,
    accepts,
    check_addresses,
)
from tests.support.net import async_wait_until, free_port

CHILD = str(Path(__file__).resolve().parents[2] / "support" / "platform_child.py")


def child(name: str, port: int, marker: Path, *flags: str) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        argv=(sys.executable, CHILD, str(port), str(marker), *flags),
        listens=(Listen("tcp", "127.0.0.1", port, "admin"),),
        ready=("127.0.0.1", port),
        summary=(("admin", f"127.0.0.1:{port}"),),
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


async def test_start_restart_after_crash_and_clean_stop(tmp_path: Path) -> None:
    p1, p2 = free_port(), free_port()
    sup = Supervisor(
        [child("media-1", p1, tmp_path), child("media-2", p2, tmp_path, "--grandchild")],
        output=lambda name, line: None,
    )
    await sup.start()
    run = asyncio.create_task(sup.run())
    first = [c.proc.pid for c in sup.children if c.proc]
    # the child writes its marker files just after it starts listening: wait for them
    await async_wait_until(lambda: any(tmp_path.glob("*.grandchild")))
    grandchild = int(next(tmp_path.glob("*.grandchild")).read_text())
    assert all(alive(p) for p in [*first, grandchild])

    # a media node is killed: it comes back, on the same address
    os.kill(first[0], 9)
    await async_wait_until(
        lambda: sup.children[0].proc.pid != first[0] and sup.children[0].restarts == 1
    )
    await async_wait_until(lambda: (tmp_path / f"{sup.children[0].proc.pid}.started").exists())
    await async_wait_until(lambda: sup.children[0].was_ready)  # it accepts on its port again
    assert sup.children[1].proc.pid == first[1]  # the other one was left alone

    t0 = time.monotonic()
    sup.request_stop()
    assert await asyncio.wait_for(run, 15) == 0
    assert time.monotonic() - t0 < 8  # SIGTERM honoured: far below the 10 s SIGKILL bound
    pids = [*first, sup.children[0].proc.pid, grandchild]
    await async_wait_until(lambda: not any(alive(p) for p in pids), 10)


async def test_sigterm_ignored_means_sigkill_after_the_bound(tmp_path: Path) -> None:
    port = free_port()
    sup = Supervisor(
        [child("stubborn", port, tmp_path, "--ignore-term")],
        stop_timeout=1.0,
        output=lambda name, line: None,
    )
    await sup.start()
    pid = sup.children[0].proc.pid
    t0 = time.monotonic()
    await sup.stop()
    took = time.monotonic() - t0
    assert 0.9 < took < 4
    assert sup.children[0].proc.returncode == -9
    assert not alive(pid)


async def test_child_dying_at_start_fails_with_its_output(tmp_path: Path) -> None:
    port = free_port()
    bad = ServiceSpec(
        name="router",
        argv=(sys.executable, "-c", "import sys; print('cannot bind 5060: boom'); sys.exit(3)"),
        ready=("127.0.0.1", port),
    )
    ok = child("media-1", free_port(), tmp_path)
    sup = Supervisor([ok, bad], output=lambda name, line: None)
    with pytest.raises(StartError) as exc:
        await sup.start()
    assert "router exited with code 3 while starting" in str(exc.value)
    assert "cannot bind 5060: boom" in str(exc.value)
    # the one that had started was stopped again
    assert sup.children[0].proc.returncode is not None


async def test_crash_loop_backs_off(tmp_path: Path) -> None:
    port = free_port()
    sup = Supervisor(
        [child("flaky", port, tmp_path, "--crash-after", "0.2")], output=lambda name, line: None
    )
    await sup.start()
    run = asyncio.create_task(sup.run())
    await async_wait_until(lambda: sup.children[0].restarts >= 2)
    # 1 s then 2 s between restarts: the backoff grew
    assert sup.children[0].backoff >= 4
    sup.request_stop()
    assert await asyncio.wait_for(run, 10) == 0


async def test_a_child_with_no_first_backoff_is_restarted_at_once_and_counted(
    tmp_path: Path,
) -> None:
    """The embedded database's policy: restarted the moment it dies, then 1 s, 2 s, ..."""
    port = free_port()
    spec = dataclasses.replace(
        child("database", port, tmp_path, "--crash-after", "0.5"), first_backoff=0.0
    )
    registry = new_registry("up")
    metrics = PlatformMetrics.create(registry, ["database"])
    sup = Supervisor([spec], output=lambda name, line: None, metrics=metrics)
    await sup.start()
    run = asyncio.create_task(sup.run())
    first = sup.children[0].proc
    assert first is not None
    await first.wait()
    died = time.monotonic()
    await async_wait_until(lambda: sup.children[0].proc is not first, 5, interval=0.02)
    assert time.monotonic() - died < 0.5  # no backoff: the first restart is immediate
    await async_wait_until(lambda: sup.children[0].restarts == 2, 10)  # it crashes again: 1 s later
    assert sup.children[0].backoff == 2.0
    text = render(registry).decode()
    assert 'switchboard_platform_restarts_total{service="database"} 2.0' in text
    sup.request_stop()
    assert await asyncio.wait_for(run, 10) == 0


async def test_a_warm_spare_takes_over_at_once_each_time_its_node_is_killed(
    tmp_path: Path,
) -> None:
    """A media node's policy: a spare process waits (imported) and replaces the node the
    moment it dies, with the environment files read at that moment; a new spare follows.
    Killed again once it had been ready for ``stable_after``: at once again, no backoff."""
    port = free_port()
    uri = tmp_path / "postgres.uri"
    uri.write_text("postgresql://first")
    spec = dataclasses.replace(
        child("media-1", port, tmp_path), first_backoff=0.0, stable_after=0.3, spare=True,
        env_files={"SWITCHBOARD_DATABASE__URL": uri},
    )  # fmt: skip
    sup = Supervisor([spec], output=lambda name, line: None)
    await sup.start()
    run = asyncio.create_task(sup.run())
    c = sup.children[0]
    seen: list[int] = []
    try:
        for n in (1, 2, 3):
            await async_wait_until(lambda: c.spare is not None, 10)
            assert c.spare is not None and c.proc is not None
            spare, victim = c.spare.pid, c.proc.pid
            await async_wait_until(lambda s=spare: (tmp_path / f"{s}.spare").exists(), 10)
            uri.write_text(f"postgresql://after-{n}")  # e.g. the database came back elsewhere
            await asyncio.sleep(0.3)  # ready for stable_after: the next death is a kill
            os.kill(victim, 9)
            died = time.monotonic()
            await async_wait_until(lambda s=spare: c.proc.pid == s, 5, interval=0.01)
            assert time.monotonic() - died < 0.5  # the spare, at once: no backoff, no start-up
            await async_wait_until(lambda s=spare: (tmp_path / f"{s}.started").exists(), 5)
            go = (tmp_path / f"{spare}.go").read_text()
            assert json.loads(go) == {"SWITCHBOARD_DATABASE__URL": f"postgresql://after-{n}"}
            await async_wait_until(lambda n=n: c.restarts == n and c.was_ready, 10)
            seen += [victim, spare]
        await async_wait_until(lambda: c.spare is not None, 10)
        assert c.spare is not None
        seen.append(c.spare.pid)
    finally:
        sup.request_stop()
        assert await asyncio.wait_for(run, 15) == 0
    await async_wait_until(lambda: not any(alive(p) for p in seen), 10)  # spare included


def test_addresses_in_use_are_named_before_anything_starts() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        spec = ServiceSpec(
            "router", ("true",), listens=(Listen("tcp", "127.0.0.1", port, "admin"),)
        )
        with pytest.raises(
            StartError, match=rf"router admin address tcp:127.0.0.1:{port}: already in use"
        ):
            check_addresses([spec])
    free = free_port()
    a = ServiceSpec("media-1", ("true",), listens=(Listen("udp", "127.0.0.1", free, "SIP"),))
    b = ServiceSpec("media-2", ("true",), listens=(Listen("udp", "127.0.0.1", free, "SIP"),))
    with pytest.raises(
        StartError, match=r"media-2 SIP udp:127\.0\.0\.1:\d+ is also used by media-1"
    ):
        check_addresses([a, b])


async def test_up_reports_a_service_that_fails_to_start(tmp_path: Path) -> None:
    from switchboard import config
    from switchboard.supervisor import up

    ok = child("media-1", free_port(), tmp_path)
    bad = ServiceSpec(
        name="router",
        argv=(
            sys.executable,
            "-c",
            "import sys; print('cannot bind: address in use'); sys.exit(3)",
        ),
        ready=("127.0.0.1", free_port()),
    )
    with pytest.raises(StartError, match="router exited with code 3 while starting"):
        await up(
            config.load(environ={}),
            config_path=None,
            media_nodes=1,
            state_dir=tmp_path / "state",
            specs=[ok, bad],
        )
    # media-1 was stopped again: nothing of the platform is left
    started = [int(p.name.split(".")[0]) for p in tmp_path.glob("*.started")]
    assert started and not any(alive(p) for p in started)


async def test_second_stop_request_kills_at_once(tmp_path: Path) -> None:
    port = free_port()
    sup = Supervisor(
        [child("stubborn", port, tmp_path, "--ignore-term")],
        stop_timeout=30.0,
        output=lambda name, line: None,
    )
    await sup.start()
    run = asyncio.create_task(sup.run())
    t0 = time.monotonic()
    sup.request_stop()  # first Ctrl-C: SIGTERM, which this child ignores
    await asyncio.sleep(0.5)
    assert not run.done()
    sup.request_stop()  # second Ctrl-C: SIGKILL now, not after the 30 s bound
    assert await asyncio.wait_for(run, 10) == 0
    assert time.monotonic() - t0 < 5
    assert sup.children[0].proc.returncode == -9


async def test_sighup_reaches_the_services_that_reload(tmp_path: Path) -> None:
    reloading = dataclasses.replace(child("router", free_port(), tmp_path), reloads=True)
    other = child("database", free_port(), tmp_path)
    sup = Supervisor([other, reloading], output=lambda name, line: None)
    await sup.start()
    try:
        sup.reload()
        router_pid = sup.children[1].proc.pid
        await async_wait_until(lambda: (tmp_path / f"{router_pid}.reloaded").exists(), 10)
        assert not (tmp_path / f"{sup.children[0].proc.pid}.reloaded").exists()
        assert sup.children[1].proc.returncode is None  # reloaded, not killed
    finally:
        await sup.stop()


async def test_a_probe_that_connects_to_itself_is_not_a_ready_service() -> None:
    # nothing listens on the port; a probe whose source is that same port completes a
    # TCP simultaneous open with itself — which must not count as the service accepting
    port = free_port("tcp")
    assert not await accepts("127.0.0.1", port, local=("127.0.0.1", port))
    with socket.create_server(("127.0.0.1", port)):
        assert await accepts("127.0.0.1", port)
