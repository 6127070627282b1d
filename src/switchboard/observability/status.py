"""The built-in status page: the one-machine operator's view of the platform.

Served by the router on its admin address (127.0.0.1:8080 by default) as a FastAPI ``APIRouter``::

    from switchboard.observability.status import StatusSources, status_router
    app.include_router(status_router_from_config(cfg))     # the router's admin app

or, with explicit sources::

    app.include_router(status_router(StatusSources(
        metrics_urls=["http://127.0.0.1:8080/metrics", "http://127.0.0.1:8081/metrics", ...],
        database_url=cfg.database.url,                       # "" → no CDRs/campaigns shown
    )))

Routes (all GET): ``/status`` the HTML page; ``/status/api/summary`` KPIs computed from
the processes' ``/metrics`` (active calls, CPS, ASR, ACD, PDD p95, per-process health);
``/status/api/cdrs`` the latest CDRs; ``/status/api/campaigns`` dialer campaigns with
progress. The page polls them every two seconds. Destinations and their drain/enable
buttons talk to the router's own admin API (same origin) at the paths in
``StatusSources`` — the page shows what the router says and changes it the way an
operator's script would, nothing cached here.

KPIs follow ITU-T E.411 / RFC 6076 (docs/metrics.md): ASR = answered / finished seizures, ACD =
billable seconds / answered calls, CPS = new call legs per second, PDD = INVITE → first
18x. Rates and ratios are computed over a sliding window of scrapes, so the page shows
what is happening now, not since start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, LiteralString
from urllib.parse import urlsplit

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client.parser import text_string_to_metric_families

from switchboard.config import Config

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 2.0
HISTORY_WINDOW = 900.0  # seconds the charts show: the last 15 minutes
HISTORY_INTERVAL = 5.0  # seconds between two chart points ([status] history_interval)
SERIES = ("active_calls", "cps", "asr", "pdd_p95")  # what the charts draw
CPS_WINDOW = 10.0  # seconds of history for calls per second
KPI_WINDOW = 300.0  # seconds of history for ASR / ACD / PDD (as the 5m recording rules)
MAX_RESPONSE = 4 * 1024 * 1024

Rows = list[dict[str, Any]]


@dataclass
class StatusSources:
    """Where the status page gets its data. Every field has a working default."""

    metrics_urls: Sequence[str] = ()
    """``/metrics`` URLs of the platform's processes (router first, then media nodes)."""
    database_url: str = ""
    """libpq URI of the billing database; empty → CDR and campaign panels say "no database"."""
    destinations_path: str = "/destinations"
    """Router admin API: GET → list of destinations (same origin as the page)."""
    destination_state_path: str = "/destinations/state"
    """Router admin API: POST JSON ``{"set", "uri", "state"}`` sets a destination's state."""
    trunks_path: str = "/trunks"
    """Router admin API: GET → the trunks with their live counters ([] → no trunk table)."""
    history_interval: float = HISTORY_INTERVAL
    """Seconds between two points of the charts' in-process history."""
    title: str = "Switchboard"
    cdrs: Callable[[int], Awaitable[Rows]] | None = None
    """Override of the CDR query (tests, other stores); default reads table ``cdr``."""
    campaigns: Callable[[], Awaitable[Rows]] | None = None
    """Override of the campaign query; default reads the dialer's tables."""


# --- scraping ---------------------------------------------------------------------------


class ScrapeError(Exception):
    """A /metrics endpoint could not be read; the message says which and why."""


async def fetch(url: str, timeout: float = SCRAPE_TIMEOUT) -> str:
    """GET an http:// URL on the platform's loopback/LAN admin addresses; body as text.

    A dozen lines of HTTP/1.0 instead of an HTTP client dependency: the admin endpoints
    are ours, plain HTTP, small responses.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ScrapeError(f"{url}: only http://HOST:PORT/path URLs are supported")
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port), timeout
        )
    except (OSError, TimeoutError) as exc:
        raise ScrapeError(f"{url}: {exc or 'connect timeout'}") from None
    try:
        writer.write(
            f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
        )
        data = await asyncio.wait_for(reader.read(MAX_RESPONSE), timeout)
    except (OSError, TimeoutError) as exc:
        raise ScrapeError(f"{url}: {exc or 'read timeout'}") from None
    finally:
        writer.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status) < 2 or status[1] != b"200":
        raise ScrapeError(f"{url}: HTTP {status[1:2] or 'no response'}")
    return body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Scrape:
    """One process's metrics at one instant: sample name → list of (labels, value)."""

    url: str
    ok: bool
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    error: str = ""

    def total(self, name: str, **match: str) -> float:
        """Sum of a sample's values over series whose labels match ``match``."""
        return sum(
            v
            for labels, v in self.samples.get(name, ())
            if all(labels.get(k) == want for k, want in match.items()) and not math.isnan(v)
        )

    def has(self, name: str) -> bool:
        return name in self.samples


# The samples the page reads. The board parses only these: it scrapes in the router's
# event loop, and a media node's whole exposition costs several ms to parse.
PAGE_SAMPLES = frozenset({
    "process_cpu_seconds_total", "process_resident_memory_bytes", "switchboard_build_info",
    "switchboard_billing_spool_records", "switchboard_media_active_calls",
    "switchboard_media_active_channels", "switchboard_media_call_attempts_total",
    "switchboard_media_pdd_seconds_bucket", "switchboard_media_sessions_max",
    "switchboard_media_sessions_rejected_total", "switchboard_router_dialogs",
    "switchboard_router_failovers_total", "switchboard_router_pike_drops_total",
    "switchboard_router_pike_rejects_total", "switchboard_router_requests_total",
    "voip_call_duration_seconds_count", "voip_call_duration_seconds_sum", "voip_calls_total",
})  # fmt: skip


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    """A label value of the text format with its escapes (backslash, quote, newline) undone."""
    if "\\" not in value:
        return value
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _sample_lines(text: str, only: frozenset[str]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples named in ``only``, from ``name{l="v",...} value [timestamp]`` lines
    (comments skipped). prometheus_client's parser takes ~0.1 ms a line, and the board
    parses in the router's event loop: most lines are dropped on their name first."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name, brace, rest = line.partition("{")
        if brace:
            if name not in only:
                continue
            inside, closed, tail = rest.rpartition("}")
            if not closed:
                raise ValueError(f"unterminated labels: {line[:80]!r}")
            labels = {k: _unescape(v) for k, v in _LABEL.findall(inside)}
        else:
            name, _, tail = line.partition(" ")
            if name not in only:
                continue
            labels = {}
        samples.setdefault(name, []).append((labels, float(tail.split()[0])))
    return samples


def parse_scrape(url: str, text: str, only: frozenset[str] | None = None) -> Scrape:
    """Prometheus text as samples by name; ``only``: just these sample names (read by a
    lighter parser that skips every other line)."""
    if only is not None:
        return Scrape(url, True, _sample_lines(text, only))
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return Scrape(url, True, samples)


async def scrape(url: str, only: frozenset[str] | None = None) -> Scrape:
    try:
        return parse_scrape(url, await fetch(url), only)
    except ScrapeError as exc:
        return Scrape(url, False, error=str(exc))
    except ValueError as exc:  # not Prometheus text
        return Scrape(url, False, error=f"{url}: unparsable metrics: {exc}")


# --- KPIs over a window of scrapes -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    """Platform-wide counter totals at one instant (summed over processes)."""

    attempts: float  # new call legs (media) or INVITEs (router), for CPS
    finished: float  # voip_calls_total, all dispositions
    answered: float
    billsec_sum: float
    billsec_count: float
    pdd_buckets: tuple[tuple[float, float], ...]  # (le, cumulative count)


def totals(scrapes: Sequence[Scrape]) -> Totals:
    media_attempts = sum(s.total("switchboard_media_call_attempts_total") for s in scrapes)
    has_media = any(s.has("switchboard_media_call_attempts_total") for s in scrapes)
    router_invites = sum(
        s.total("switchboard_router_requests_total", method="INVITE") for s in scrapes
    )
    buckets: dict[float, float] = {}
    for s in scrapes:
        for labels, v in s.samples.get("switchboard_media_pdd_seconds_bucket", ()):
            le = float(labels.get("le", "nan"))
            buckets[le] = buckets.get(le, 0.0) + v
    return Totals(
        attempts=media_attempts if has_media else router_invites,
        finished=sum(s.total("voip_calls_total") for s in scrapes),
        answered=sum(s.total("voip_calls_total", disposition="answered") for s in scrapes),
        billsec_sum=sum(s.total("voip_call_duration_seconds_sum") for s in scrapes),
        billsec_count=sum(s.total("voip_call_duration_seconds_count") for s in scrapes),
        pdd_buckets=tuple(sorted(buckets.items())),
    )


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile``: linear interpolation inside the bucket."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


class KpiWindow:
    """Rates and ratios from successive totals, like ``rate()``/``increase()`` over a window.

    Pure: the caller passes ``now``. A counter that went down (a process restarted) resets
    the window instead of producing a negative rate.
    """

    def __init__(self, cps_window: float = CPS_WINDOW, kpi_window: float = KPI_WINDOW) -> None:
        self.cps_window = cps_window
        self.kpi_window = kpi_window
        self._history: deque[tuple[float, Totals]] = deque()

    def add(self, now: float, t: Totals) -> None:
        if self._history and (
            t.attempts < self._history[-1][1].attempts or t.finished < self._history[-1][1].finished
        ):
            self._history.clear()
        self._history.append((now, t))
        while self._history and now - self._history[0][0] > self.kpi_window:
            self._history.popleft()

    def _base(self, now: float, window: float) -> tuple[float, Totals] | None:
        for when, t in self._history:
            if now - when <= window:
                return (when, t) if when < now else None
        return None

    def kpis(self, now: float) -> dict[str, float | None]:
        if not self._history:
            return {"cps": None, "asr": None, "acd": None, "pdd_p95": None, "window_calls": None}
        cur_time, cur = self._history[-1]
        out: dict[str, float | None] = {}
        base = self._base(now, self.cps_window)
        out["cps"] = (cur.attempts - base[1].attempts) / (cur_time - base[0]) if base else None
        base = self._base(now, self.kpi_window)
        old = base[1] if base else Totals(0, 0, 0, 0, 0, ())
        finished = cur.finished - old.finished
        answered = cur.answered - old.answered
        out["window_calls"] = finished
        out["asr"] = answered / finished if finished > 0 else None
        count = cur.billsec_count - old.billsec_count
        out["acd"] = (cur.billsec_sum - old.billsec_sum) / count if count > 0 else None
        old_b = dict(old.pdd_buckets)
        out["pdd_p95"] = histogram_quantile(
            0.95, [(le, c - old_b.get(le, 0.0)) for le, c in cur.pdd_buckets]
        )
        return out


class History:
    """The charts' data: one point per sample (unix time ``t`` plus :data:`SERIES`) over the
    last :data:`HISTORY_WINDOW` seconds, kept in the serving process — nothing to install,
    gone at restart (Prometheus and the Grafana dashboard keep the long history).

    Pure: the caller passes the time. A point closer than ``interval`` to the previous one
    is not added, so page polls between two samples do not crowd the charts.
    """

    def __init__(self, interval: float = HISTORY_INTERVAL, window: float = HISTORY_WINDOW) -> None:
        self.interval = interval
        self.window = window
        self.points: deque[dict[str, float | None]] = deque()

    def add(self, t: float, values: dict[str, Any]) -> bool:
        """Record the values at ``t``; False when too soon after the last point."""
        if self.points and t - float(self.points[-1]["t"] or 0.0) < 0.9 * self.interval:
            return False
        self.points.append({"t": t, **{k: values.get(k) for k in SERIES}})
        while self.points and t - float(self.points[0]["t"] or 0.0) > self.window:
            self.points.popleft()
        return True

    def view(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "window": self.window,
            "series": list(SERIES),
            "points": list(self.points),
        }


def node_view(s: Scrape) -> dict[str, Any]:
    service = ""
    for labels, _ in s.samples.get("switchboard_build_info", ()):
        service = labels.get("service", "")
    return {
        "url": s.url,
        "up": s.ok,
        "error": s.error,
        "service": service,
        "active_calls": s.total("switchboard_media_active_calls")
        if s.has("switchboard_media_active_calls")
        else None,
        "active_channels": s.total("switchboard_media_active_channels")
        if s.has("switchboard_media_active_channels")
        else None,
        "sessions_max": s.total("switchboard_media_sessions_max")
        if s.has("switchboard_media_sessions_max")
        else None,
        "dialogs": s.total("switchboard_router_dialogs")
        if s.has("switchboard_router_dialogs")
        else None,
        "cpu_seconds": s.total("process_cpu_seconds_total") if s.ok else None,
        "memory_bytes": s.total("process_resident_memory_bytes") if s.ok else None,
    }


# --- database panels ----------------------------------------------------------------------

CDR_SQL = """
SELECT call_id, caller_id, destination, start_time, answer_time, end_time,
       duration, billsec, disposition, rate, cost
FROM cdr ORDER BY start_time DESC NULLS LAST LIMIT %s
"""

CAMPAIGN_SQL = """
SELECT c.name, c.status, c.status_reason, c.created_at,
       (SELECT count(*) FROM dialer_contact ct WHERE ct.campaign_id = c.id) AS contacts,
       (SELECT count(*) FROM dialer_contact ct
         WHERE ct.campaign_id = c.id AND ct.state = 'done') AS done,
       (SELECT count(*) FROM dialer_attempt a WHERE a.campaign_id = c.id) AS attempts,
       (SELECT count(*) FROM dialer_attempt a
         WHERE a.campaign_id = c.id AND a.outcome = 'answered') AS answered,
       (SELECT count(*) FROM dialer_attempt a
         WHERE a.campaign_id = c.id AND a.outcome IS NULL) AS in_progress
FROM dialer_campaign c ORDER BY c.created_at DESC LIMIT 20
"""


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v is None or isinstance(v, (str, int, float, bool)):
            out[k] = v
        elif hasattr(v, "isoformat"):
            out[k] = v.isoformat()
        else:  # Decimal money stays exact as a string
            out[k] = str(v)
    return out


async def query_rows(database_url: str, sql: LiteralString, params: Sequence[Any] = ()) -> Rows:
    """Run one read-only query; a missing table (service not deployed yet) is no rows."""
    import psycopg
    from psycopg.rows import dict_row

    try:
        async with (
            await psycopg.AsyncConnection.connect(
                database_url, connect_timeout=3, autocommit=True
            ) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(sql, params)
            rows = await cur.fetchall()
    except psycopg.errors.UndefinedTable:
        return []
    return [_jsonable(dict(r)) for r in rows]


# --- the router ----------------------------------------------------------------------------


def _page(sources: StatusSources) -> str:
    html = resources.files(__package__).joinpath("status.html").read_text()
    config = {
        "title": sources.title,
        "destinations": sources.destinations_path,
        "destinationState": sources.destination_state_path,
        "trunks": sources.trunks_path,
    }
    import json

    return html.replace("/*CONFIG*/{}", json.dumps(config)).replace(
        "<title>Switchboard", f"<title>{sources.title}"
    )


class StatusBoard:
    """The page's live state: the KPI window, the charts' history and the latest summary.

    :meth:`summary` scrapes every process (one scrape at a time, so counters never appear
    to run backwards in the window) and feeds the history;
    :meth:`start` samples every ``history_interval`` seconds in the background, so the
    charts cover the last 15 minutes even when nobody had the page open.
    """

    def __init__(self, sources: StatusSources) -> None:
        self.sources = sources
        self.window = KpiWindow()
        self.history = History(sources.history_interval)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def summary(self) -> dict[str, Any]:
        async with self._lock:
            body = await self._scrape()
            self.history.add(body["time"], body)
            return body

    async def _scrape(self) -> dict[str, Any]:
        scrapes = list(
            await asyncio.gather(*(scrape(u, PAGE_SAMPLES) for u in self.sources.metrics_urls))
        )
        now = time.monotonic()
        up = [s for s in scrapes if s.ok]
        self.window.add(now, totals(up))
        media = [s for s in up if s.has("switchboard_media_active_calls")]
        routers = [s for s in up if s.has("switchboard_router_dialogs")]
        active: float | None = None
        if media:
            active = sum(s.total("switchboard_media_active_calls") for s in media)
        elif routers:
            active = sum(s.total("switchboard_router_dialogs") for s in routers)
        t = self.window._history[-1][1]
        return {
            "time": time.time(),
            "active_calls": active,
            **self.window.kpis(now),
            "calls_total": t.finished,
            "answered_total": t.answered,
            "failovers_total": sum(s.total("switchboard_router_failovers_total") for s in up),
            "rate_limited_total": sum(
                s.total("switchboard_router_pike_rejects_total")
                + s.total("switchboard_router_pike_drops_total")
                + s.total("switchboard_media_sessions_rejected_total")
                for s in up
            ),
            "cdr_spool_records": sum(s.total("switchboard_billing_spool_records") for s in up),
            "nodes": [node_view(s) for s in scrapes],
        }

    def start(self) -> None:
        """Sample in the background (from the running loop) until :meth:`close`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            try:
                await self.summary()
            except Exception:  # a sampling failure must not end the history
                log.exception("status page: sampling failed")
            await asyncio.sleep(self.sources.history_interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def router(self, prefix: str = "/status") -> APIRouter:
        """The status page and its JSON endpoints, to ``include_router`` in an admin app."""
        return _routes(self, prefix)


def status_router(sources: StatusSources, prefix: str = "/status") -> APIRouter:
    """The status page and its JSON endpoints, to ``include_router`` in an admin app
    (charts filled by page polls only; :class:`StatusBoard` also samples by itself)."""
    return StatusBoard(sources).router(prefix)


def _routes(board: StatusBoard, prefix: str) -> APIRouter:
    sources = board.sources
    router = APIRouter(prefix=prefix, tags=["status"])
    page = _page(sources)

    @router.get("", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @router.get("/api/summary")
    async def summary() -> JSONResponse:
        """KPIs and per-process health from every process's /metrics."""
        return JSONResponse(await board.summary(), headers={"Cache-Control": "no-store"})

    @router.get("/api/history")
    async def history() -> JSONResponse:
        """The charts' points over the last 15 minutes: unix time ``t``, ``active_calls``,
        ``cps``, ``asr`` (0-1), ``pdd_p95`` (seconds); null where there was nothing to
        measure."""
        return JSONResponse(board.history.view(), headers={"Cache-Control": "no-store"})

    @router.get("/api/cdrs")
    async def cdrs(limit: int = Query(20, ge=1, le=500)) -> JSONResponse:
        """The latest CDRs (the original ``cdr`` columns), newest first."""
        if sources.cdrs is not None:
            return JSONResponse({"cdrs": await sources.cdrs(limit)})
        if not sources.database_url:
            return JSONResponse({"cdrs": [], "note": "no database configured"})
        try:
            return JSONResponse({"cdrs": await query_rows(sources.database_url, CDR_SQL, (limit,))})
        except Exception as exc:  # the page must keep working while the database is down
            log.warning("status page: CDR query failed: %s", exc)
            return JSONResponse({"cdrs": [], "note": f"database unavailable: {exc}"})

    @router.get("/api/campaigns")
    async def campaigns() -> JSONResponse:
        """Dialer campaigns with contact progress and answered attempts."""
        if sources.campaigns is not None:
            return JSONResponse({"campaigns": await sources.campaigns()})
        if not sources.database_url:
            return JSONResponse({"campaigns": [], "note": "no database configured"})
        try:
            return JSONResponse({"campaigns": await query_rows(sources.database_url, CAMPAIGN_SQL)})
        except Exception as exc:
            log.warning("status page: campaign query failed: %s", exc)
            return JSONResponse({"campaigns": [], "note": f"database unavailable: {exc}"})

    return router


def status_router_from_config(cfg: Config) -> APIRouter:
    """The status page for the router's admin app, from the platform config.

    Scrapes the router's own ``/metrics`` plus ``[status].metrics_urls`` (``switchboard
    up`` fills in the media nodes'), and reads CDRs and campaigns from ``database.url``.
    """
    return status_board_from_config(cfg).router()


def status_board_from_config(cfg: Config) -> StatusBoard:
    """The router's status board: its own ``/metrics`` plus ``[status].metrics_urls``
    (``switchboard up`` fills in the media nodes' and its own), CDRs and campaigns from
    ``database.url``, a chart point every ``[status] history_interval`` seconds."""
    own = f"http://{cfg.router.admin}/metrics"
    return StatusBoard(
        StatusSources(
            metrics_urls=[own, *(u for u in cfg.status.metrics_urls if u != own)],
            database_url=cfg.database.url,
            title=cfg.status.title,
            history_interval=cfg.status.history_interval,
        )
    )
