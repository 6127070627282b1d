"""``switchboard up --demo``: a carrier on the gateway address and a short mix of calls.

What a newcomer sees within seconds of ``make run``: the carrier simulator takes the
gateway's calls, then the demo places, over the Event Socket of media-1 exactly as an
operator's ESL program would (``api originate``, one connection per call, as the original
Go campaign did):

* inbound transit: calls into the router (``sofia/external/<number>@<router>``) that the
  router spreads over the media nodes, whose dialplan bridges them to the carrier —
  answered, busy and unanswered numbers, billed by prefix;
* the IVR and a conference with two participants, through the router;
* a direct ESL originate to ``sofia/gateway/carrier/<number>``.

It then prints calls, ASR, ACD, PDD and cost by destination from the CDRs, and leaves the
platform running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from switchboard.observability.status import scrape
from switchboard.up.carrier import CarrierSimulator

log = logging.getLogger(__name__)

DEMO_RATES = """prefix,rate,connect_fee,increment,description
44,0.0120,0,60,United Kingdom
4420,0.0090,0,60,United Kingdom London
33,0.0150,0,60,France
336,0.0450,0,60,France mobile
49,0.0110,0,60,Germany
1,0.0060,0,6,United States
"""


@dataclass(frozen=True, slots=True)
class DemoCall:
    label: str
    dial: str  # dial string; {router} is the router's SIP address
    app: str


DEMO_CALLS: tuple[DemoCall, ...] = (
    DemoCall("transit, answered", "sofia/external/442079460001@{router}", "&playback(prompt)"),
    DemoCall("transit, answered", "sofia/external/33612345670@{router}", "&playback(prompt)"),
    DemoCall("transit, answered", "sofia/external/12125550100@{router}", "&playback(prompt)"),
    DemoCall("transit, busy", "sofia/external/4915112345679@{router}", "&playback(prompt)"),
    DemoCall("transit, no answer", "sofia/external/442079460008@{router}", "&playback(prompt)"),
    DemoCall("IVR", "sofia/external/ivr@{router}", "&sleep(3000)"),
    DemoCall("conference", "sofia/external/conf-demo@{router}", "&sleep(4000)"),
    DemoCall("conference", "sofia/external/conf-demo@{router}", "&sleep(4000)"),
    DemoCall("ESL originate", "sofia/gateway/carrier/4930901820", "&playback(prompt)"),
)


class _Esl:
    """The few lines of inbound Event Socket the demo needs (auth, api)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int, password: str) -> _Esl:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        esl = cls(reader, writer)
        await esl._frame()  # auth/request
        headers, _ = await esl.send(f"auth {password}")
        if not headers.get("Reply-Text", "").startswith("+OK"):
            raise ConnectionError(f"Event Socket refused the password: {headers}")
        return esl

    async def _frame(self) -> tuple[dict[str, str], str]:
        block = await self.reader.readuntil(b"\n\n")
        headers = dict(
            line.split(": ", 1) for line in block.decode().strip().splitlines() if ": " in line
        )
        n = int(headers.get("Content-Length", "0") or 0)
        body = (await self.reader.readexactly(n)).decode() if n else ""
        return headers, body

    async def send(self, command: str) -> tuple[dict[str, str], str]:
        self.writer.write(command.encode() + b"\n\n")
        while True:  # skip events: the demo subscribes to none, but be tolerant
            headers, body = await self._frame()
            if headers.get("Content-Type") in ("command/reply", "api/response"):
                return headers, body

    def close(self) -> None:
        self.writer.close()


async def _originate(
    esl_addr: tuple[str, int], password: str, call: DemoCall, router: str, n: int
) -> str:
    dial = call.dial.format(router=router)
    cmd = (
        f"api originate {{origination_caller_id_number=+1555010{n:04d},originate_timeout=10}}"
        f"{dial} {call.app}"
    )
    try:
        esl = await _Esl.connect(*esl_addr, password)
    except (OSError, TimeoutError, ConnectionError) as exc:
        return f"-ERR {exc}"
    try:
        _, body = await asyncio.wait_for(esl.send(cmd), 30)
        return body.strip()
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return f"-ERR {exc!r}"
    finally:
        esl.close()


def _install_rates(database_url: str) -> None:
    """A small sell deck, so the demo's transit calls show a cost (once; kept on re-runs)."""
    try:
        import psycopg

        from switchboard.billing.rates import import_deck

        with psycopg.connect(database_url, autocommit=True) as conn:
            if conn.execute("SELECT count(*) FROM rate_table").fetchone()[0]:  # type: ignore[index]
                return
            import_deck(conn, DEMO_RATES.splitlines())
    except Exception as exc:  # the demo goes on without prices
        log.warning("demo: could not install the demo rate deck: %s", exc)


SUMMARY_SQL = """
SELECT destination,
       count(*) AS calls,
       count(*) FILTER (WHERE disposition = 'ANSWERED') AS answered,
       avg(billsec) FILTER (WHERE disposition = 'ANSWERED') AS acd,
       avg(pdd_ms) AS pdd_ms,
       sum(cost) AS cost
FROM cdr
WHERE start_time >= %s AND direction = 'inbound'
GROUP BY destination
ORDER BY destination
"""


def cdr_summary(database_url: str, since: datetime) -> list[dict[str, Any]]:
    """Per destination: calls, answered, ACD, PDD, cost of the legs the platform received."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(SUMMARY_SQL, (since,)).fetchall())


def print_summary(rows: Sequence[dict[str, Any]], outcomes: Sequence[tuple[DemoCall, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    placed = Table(title="Demo calls placed over the Event Socket", title_justify="left")
    placed.add_column("call")
    placed.add_column("dial string")
    placed.add_column("originate reply")
    for call, reply in outcomes:
        placed.add_row(call.label, call.dial.split("@")[0], reply[:60])
    console.print(placed)

    table = Table(
        title="CDRs by destination (legs received by the media nodes)", title_justify="left"
    )
    for col in ("destination", "calls", "ASR", "ACD", "PDD", "cost"):
        table.add_column(col, justify="left" if col == "destination" else "right")
    total = answered = 0
    for r in rows:
        total += r["calls"]
        answered += r["answered"]
        table.add_row(
            r["destination"],
            str(r["calls"]),
            f"{100 * r['answered'] / r['calls']:.0f} %" if r["calls"] else "–",
            f"{r['acd']:.1f} s" if r["acd"] is not None else "–",
            f"{r['pdd_ms']:.0f} ms" if r["pdd_ms"] is not None else "–",
            f"{r['cost']}" if r["cost"] is not None else "–",
        )
    console.print(table)
    asr = f"{100 * answered / total:.0f} %" if total else "–"
    console.print(f"{total} legs, ASR {asr}. The platform keeps running: see the status page.")


async def run_demo(
    *,
    gateway: tuple[str, int],
    esl: tuple[str, int],
    esl_password: str,
    router: str,
    database_url: str,
    metrics_urls: Sequence[str] = (),
    calls: Sequence[DemoCall] = DEMO_CALLS,
    pace: float = 0.4,
    settle: float = 25.0,
) -> tuple[CarrierSimulator | None, list[dict[str, Any]]]:
    """Start the carrier, place the calls, wait for their CDRs, print the summary.

    Returns the running carrier simulator (close it at shutdown) and the summary rows.
    """
    try:
        carrier: CarrierSimulator | None = await CarrierSimulator.start(*gateway)
    except OSError as exc:
        log.warning(
            "demo: gateway address %s:%d is taken (%s); using whatever answers there", *gateway, exc
        )
        carrier = None
    if database_url:
        await asyncio.to_thread(_install_rates, database_url)
    since = datetime.now(UTC)
    tasks = []
    for n, call in enumerate(calls):
        tasks.append(asyncio.create_task(_originate(esl, esl_password, call, router, n)))
        await asyncio.sleep(pace)  # a few calls per second: a carrier's trickle, not a flood
    replies = await asyncio.gather(*tasks)
    outcomes = list(zip(calls, replies, strict=True))
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + settle
    # calls end when their apps finish (prompt, sleep): wait for the nodes to be idle
    while metrics_urls and time.monotonic() < deadline:
        scrapes = await asyncio.gather(*(scrape(u) for u in metrics_urls))
        if all(s.ok for s in scrapes) and not sum(
            s.total("switchboard_media_active_calls") for s in scrapes
        ):
            break
        await asyncio.sleep(0.5)  # other processes' calls: polled through /metrics
    if database_url:
        # CDRs are written at hangup, batched: wait until the count stops growing
        last = -1
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                rows = await asyncio.to_thread(cdr_summary, database_url, since)
            count = sum(r["calls"] for r in rows)
            if count and count == last:
                break
            last = count
    print_summary(rows, outcomes)
    return carrier, rows
