"""``switchboard status``: the status page's picture in a terminal, for a server without a
browser — KPIs, the last 15 minutes as sparklines (active calls, calls/s, ASR, PDD p95),
destinations, trunks, every process's health, the latest calls and the campaigns, redrawn
in place (rich ``Live``).

It reads what the page reads, from the router's admin address: ``/status/api/summary``,
``/status/api/history``, ``/status/api/cdrs``, ``/status/api/campaigns``,
``/destinations`` and ``/trunks`` (see
docs/operations.md "3. Day-to-day operations"). When the router does not answer, the
screen says so and keeps trying; Ctrl-C leaves. ``--once`` prints one picture and exits: 0, or 3 when the router
cannot be reached (for scripts and cron mails).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from switchboard.lifecycle import ExitCode

BLOCKS = "▁▂▃▄▅▆▇█"
RECENT_CALLS = 5  # rows of the recent-calls table (the page shows 20)
SERIES = (
    # key, label, scale, format, fixed maximum
    ("active_calls", "active calls", 1.0, "{:.0f}", None),
    ("cps", "calls/s", 1.0, "{:.1f}", None),
    ("asr", "ASR (5 min)", 100.0, "{:.1f} %", 100.0),
    ("pdd_p95", "PDD p95 (5 min)", 1000.0, "{:.0f} ms", None),
)


def sparkline(
    points: Sequence[tuple[float, float | None]],
    width: int,
    end: float,
    window: float,
    top: float | None = None,
) -> str:
    """``width`` characters for the values over ``[end - window, end]``: one column per
    ``window / width`` seconds, its last value as a block from ▁ (0) to █ (the maximum),
    a space where nothing was measured."""
    cols: list[float | None] = [None] * width
    for t, v in points:
        if v is None or math.isnan(v):
            continue
        i = int((t - (end - window)) / window * width)
        if 0 <= i < width:
            cols[i] = v
        elif i == width:  # the newest point sits exactly at the right edge
            cols[-1] = v
    measured = [v for v in cols if v is not None]
    peak = top if top is not None else max(measured, default=0.0)
    out = []
    for v in cols:
        if v is None:
            out.append(" ")
        elif peak <= 0:
            out.append(BLOCKS[0])
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, int(v / peak * (len(BLOCKS) - 1) + 0.5))])
    return "".join(out)


def _num(v: Any, fmt: str, scale: float = 1.0) -> str:
    return "–" if v is None else fmt.format(float(v) * scale)


@dataclass
class Snapshot:
    """What one refresh read from the router (each part may be missing)."""

    summary: dict[str, Any] | None = None
    history: dict[str, Any] | None = None
    destinations: list[dict[str, Any]] = field(default_factory=list)
    trunks: list[dict[str, Any]] = field(default_factory=list)
    cdrs: list[dict[str, Any]] = field(default_factory=list)
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # "cdrs"/"campaigns": why empty
    error: str = ""
    taken: float = field(default_factory=time.time)


def fetch(client: httpx.Client, base: str) -> Snapshot:
    """One refresh: the page's four sources; an unreachable router is an error, not a crash."""
    snap = Snapshot()
    try:
        snap.summary = client.get(f"{base}/status/api/summary").raise_for_status().json()
        snap.history = client.get(f"{base}/status/api/history").raise_for_status().json()
    except (httpx.HTTPError, ValueError) as exc:
        snap.error = f"cannot reach the router at {base}: {exc or type(exc).__name__}"
        return snap
    for attr, path in (
        ("destinations", "/destinations"),
        ("trunks", "/trunks"),
        ("cdrs", f"/status/api/cdrs?limit={RECENT_CALLS}"),
        ("campaigns", "/status/api/campaigns"),
    ):
        try:
            data = client.get(base + path).raise_for_status().json()
        except (httpx.HTTPError, ValueError):
            continue  # an older router without the endpoint: no table
        rows = data.get(attr, []) if isinstance(data, dict) else data
        setattr(snap, attr, [r for r in rows if isinstance(r, dict)])
        if isinstance(data, dict) and data.get("note"):
            snap.notes[attr] = str(data["note"])
    return snap


def render(snap: Snapshot, width: int, title: str = "Switchboard") -> RenderableType:
    """The picture: header, KPIs, sparklines, destinations, trunks, processes."""
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken))
    parts: list[RenderableType] = [
        Text.assemble((title, "bold"), f"  ·  {stamp}  ·  Ctrl-C leaves", style="")
    ]
    if snap.error:
        parts.append(Text(snap.error + " (retrying)", style="bold red"))
    s = snap.summary
    if s is None:
        return Group(*parts)

    kpis = Table.grid(padding=(0, 2))
    for _ in range(6):
        kpis.add_column()
    kpis.add_row(
        Text.assemble("active calls ", (_num(s.get("active_calls"), "{:.0f}"), "bold")),
        Text.assemble("calls/s ", (_num(s.get("cps"), "{:.1f}"), "bold")),
        Text.assemble("ASR ", (_num(s.get("asr"), "{:.1f} %", 100), "bold")),
        Text.assemble("ACD ", (_num(s.get("acd"), "{:.1f} s"), "bold")),
        Text.assemble("PDD p95 ", (_num(s.get("pdd_p95"), "{:.0f} ms", 1000), "bold")),
        Text.assemble("calls ", (_num(s.get("calls_total"), "{:.0f}"), "bold")),
    )
    parts.append(kpis)

    h = snap.history or {}
    points = h.get("points") or []
    window = float(h.get("window") or 900.0)
    end = float(points[-1]["t"]) if points else snap.taken
    spark_width = max(10, min(90, width - 44))  # series, now and max take about 40
    charts = Table(
        title=f"last {window / 60:.0f} minutes", title_justify="left", box=None, padding=(0, 1)
    )
    charts.add_column("series", no_wrap=True)
    charts.add_column("now", justify="right", no_wrap=True)
    charts.add_column("max", justify="right", no_wrap=True)
    charts.add_column(f"−{window / 60:.0f} min … now", no_wrap=True, style="cyan")
    for key, label, scale, fmt, top in SERIES:
        values = [
            (float(p["t"]), None if p.get(key) is None else float(p[key]) * scale) for p in points
        ]
        measured = [v for _, v in values if v is not None]
        peak = top if top is not None else max(measured, default=None)
        last = values[-1][1] if values else None
        charts.add_row(
            label,
            "–" if last is None else fmt.format(last),
            "–" if peak is None else fmt.format(peak),
            sparkline(values, spark_width, end, window, top),
        )
    parts.append(charts)

    if snap.destinations:
        dests = Table(title="destinations", title_justify="left", box=None, padding=(0, 1))
        for name, justify in (("set", "right"), ("destination", "left"), ("state", "left"),
                              ("calls", "right"), ("probe", "right")):  # fmt: skip
            dests.add_column(name, justify=justify, no_wrap=name != "destination")  # type: ignore[arg-type]
        for d in snap.destinations:
            state = str(d.get("state", ""))
            colour = {"active": "green", "inactive": "red", "trying": "yellow"}.get(state, "dim")
            latency = d.get("probe_latency_ms")
            dests.add_row(
                str(d.get("set", "")),
                str(d.get("uri", "")),
                Text(state, style=colour),
                str(d.get("active_calls", "")),
                "–" if latency is None else f"{float(latency):.1f} ms",
            )
        parts.append(dests)

    if snap.trunks:
        trunks = Table(title="trunks", title_justify="left", box=None, padding=(0, 1))
        for name in ("trunk", "dir", "calls", "calls/s", "admitted", "answered", "rejected",
                     "PDD avg"):  # fmt: skip
            trunks.add_column(name, justify="left" if name in ("trunk", "dir") else "right")
        for t in snap.trunks:
            pdd = t.get("pdd_avg_ms")
            trunks.add_row(
                str(t.get("name", "")),
                str(t.get("direction", "")),
                str(t.get("active_calls", "")),
                _num(t.get("calls_per_second"), "{:.1f}"),
                str(t.get("admitted", "")),
                str((t.get("calls") or {}).get("answered", 0)),
                str(sum(int(v) for v in (t.get("rejected") or {}).values())),
                "–" if pdd is None else f"{pdd} ms",
            )
        parts.append(trunks)

    procs = Table(title="processes", title_justify="left", box=None, padding=(0, 1))
    for name in ("service", "health", "calls", "CPU s", "memory", "metrics"):
        procs.add_column(
            name, justify="right" if name in ("calls", "CPU s", "memory") else "left",
            no_wrap=name != "metrics", overflow="fold",
        )  # fmt: skip
    for n in s.get("nodes", []):
        calls = n.get("active_calls") if n.get("active_calls") is not None else n.get("dialogs")
        mem = n.get("memory_bytes")
        procs.add_row(
            n.get("service") or "?",
            Text("up", style="green") if n.get("up") else Text("down", style="bold red"),
            _num(calls, "{:.0f}"),
            _num(n.get("cpu_seconds"), "{:.1f}"),
            "–" if mem is None else f"{float(mem) / 1048576:.0f} MiB",
            n.get("url", "") if n.get("up") else f"{n.get('url', '')}: {n.get('error', '')}",
        )
    parts.append(procs)

    calls = Table(title="recent calls", title_justify="left", box=None, padding=(0, 1))
    for name in ("start", "caller", "destination", "disposition", "billsec", "cost"):
        calls.add_column(
            name, justify="right" if name in ("billsec", "cost") else "left", no_wrap=True,
            overflow="ellipsis", min_width=6 if name == "cost" else None,
        )  # fmt: skip
    for c in snap.cdrs[:RECENT_CALLS]:
        calls.add_row(
            str(c.get("start_time") or "").replace("T", " ")[5:19],  # MM-DD HH:MM:SS
            str(c.get("caller_id") or "–"),
            str(c.get("destination") or "–"),
            str(c.get("disposition") or "–"),
            _num(c.get("billsec"), "{:.0f}"),
            "–" if c.get("cost") is None else str(c["cost"]),
        )
    parts.append(calls if snap.cdrs else _empty("recent calls", snap.notes.get("cdrs", "none")))

    if snap.campaigns:
        camps = Table(title="campaigns", title_justify="left", box=None, padding=(0, 1))
        for name in ("campaign", "status", "contacts", "done", "attempts", "answered", "now"):
            camps.add_column(name, justify="left" if name in ("campaign", "status") else "right")
        for c in snap.campaigns:
            camps.add_row(
                str(c.get("name", "")), str(c.get("status", "")),
                *(str(c.get(k, "")) for k in ("contacts", "done", "attempts", "answered",
                                              "in_progress")),
            )  # fmt: skip
        parts.append(camps)
    elif snap.notes.get("campaigns"):
        parts.append(_empty("campaigns", snap.notes["campaigns"]))
    return Group(*parts)


def _empty(title: str, note: str) -> Text:
    return Text.assemble((title, "italic"), f": {note}", style="dim")


def main(base: str, interval: float, once: bool, title: str = "Switchboard") -> int:
    """Run the display (or print once); the process's exit code."""
    console = Console()
    base = base.rstrip("/")
    with httpx.Client(timeout=min(5.0, max(1.0, interval))) as client:
        if once:
            snap = fetch(client, base)
            console.print(render(snap, console.width, title))
            return int(ExitCode.START_FAILED if snap.summary is None else ExitCode.OK)
        try:
            with Live(
                render(Snapshot(), console.width, title),
                console=console,
                auto_refresh=False,
                screen=console.is_terminal,  # the alternate screen: the shell comes back clean
            ) as live:
                while True:
                    snap = fetch(client, base)
                    live.update(render(snap, console.width, title), refresh=True)
                    time.sleep(interval)
        except KeyboardInterrupt:
            return int(ExitCode.OK)
