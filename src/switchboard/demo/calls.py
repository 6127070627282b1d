"""``switchboard up --demo``: a carrier on the gateway address and a short mix of calls.

What a newcomer sees within seconds of ``make run``. The carrier simulator
(:mod:`switchboard.demo.carrier`) stands on the ``carrier`` gateway's address and plays both
sides of an upstream carrier:

* inbound transit: it sends calls into the router, which spreads them over the media
  nodes, whose dialplan bridges them back out through the gateway to the carrier —
  answered, busy, unanswered and unroutable numbers, priced by prefix (a small demo deck
  is installed when the rate table is empty);
* the IVR, a conference with two participants and the echo test, through the router;
* and one call placed over media-1's Event Socket, as an operator's ESL program would
  (``api originate sofia/gateway/carrier/<number> &playback(prompt)``).

It then prints the calls and, from the CDRs, legs, ASR, ACD, PDD and cost by destination,
and leaves the platform running.
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

from switchboard.demo.carrier import CarrierSimulator
from switchboard.observability.status import scrape

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
    destination: str
    hold: float = 3.0  # seconds the caller stays after answer
    esl: bool = False  # placed with `api originate` on media-1 instead of by the carrier


DEMO_CALLS: tuple[DemoCall, ...] = (
    DemoCall("transit, answered", "442079460001", 4.0),
    DemoCall("transit, answered", "33612345670", 3.0),
    DemoCall("transit, answered", "12125550100", 5.0),
    DemoCall("transit, busy", "4915112345679"),
    DemoCall("transit, no answer", "442079460008"),
    DemoCall("transit, unroutable", "3312347"),
    DemoCall("IVR", "ivr", 3.0),
    DemoCall("conference", "conf-demo", 4.0),
    DemoCall("conference", "conf-demo", 4.0),
    DemoCall("echo", "echo", 2.0),
    DemoCall("ESL originate", "4930901820", esl=True),
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


async def _originate(esl_addr: tuple[str, int], password: str, call: DemoCall, n: int) -> str:
    cmd = (
        f"api originate {{origination_caller_id_number=+1555010{n:04d},originate_timeout=10}}"
        f"sofia/gateway/carrier/{call.destination} &playback(prompt)"
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
SELECT destination, direction,
       count(*) AS calls,
       count(*) FILTER (WHERE disposition = 'ANSWERED') AS answered,
       avg(billsec) FILTER (WHERE disposition = 'ANSWERED') AS acd,
       avg(pdd_ms) AS pdd_ms,
       sum(cost) AS cost
FROM cdr
WHERE start_time >= %s
GROUP BY destination, direction
ORDER BY destination, direction
"""


def cdr_summary(database_url: str, since: datetime) -> list[dict[str, Any]]:
    """Per destination and direction: legs, answered, ACD, PDD, cost (from the cdr table)."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(SUMMARY_SQL, (since,)).fetchall())


def print_summary(rows: Sequence[dict[str, Any]], outcomes: Sequence[tuple[DemoCall, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    placed = Table(title="Demo calls", title_justify="left")
    placed.add_column("call")
    placed.add_column("destination")
    placed.add_column("how")
    placed.add_column("result")
    for call, result in outcomes:
        how = "ESL api originate on media-1" if call.esl else "carrier → router → media node"
        placed.add_row(call.label, call.destination, how, result)
    console.print(placed)

    table = Table(title="CDRs by destination (one row per direction)", title_justify="left")
    for col in ("destination", "direction", "legs", "ASR", "ACD", "PDD", "cost"):
        table.add_column(col, justify="left" if col in ("destination", "direction") else "right")
    legs = answered = 0
    for r in rows:
        legs += r["calls"]
        answered += r["answered"]
        table.add_row(
            r["destination"],
            r["direction"],
            str(r["calls"]),
            f"{100 * r['answered'] / r['calls']:.0f} %" if r["calls"] else "–",
            f"{r['acd']:.1f} s" if r["acd"] is not None else "–",
            f"{r['pdd_ms']:.0f} ms" if r["pdd_ms"] is not None else "–",
            f"{r['cost']}" if r["cost"] is not None else "–",
        )
    console.print(table)
    asr = f"{100 * answered / legs:.0f} %" if legs else "–"
    console.print(
        f"{len(outcomes)} calls, {legs} CDR legs, ASR {asr}. "
        "The platform keeps running: see the status page."
    )


async def _place(
    carrier: CarrierSimulator | None,
    router: tuple[str, int],
    esl: tuple[str, int],
    password: str,
    call: DemoCall,
    n: int,
) -> str:
    if call.esl:
        return await _originate(esl, password, call, n)
    if carrier is None:
        return "no carrier simulator"
    r = await carrier.call(router, call.destination, hold=call.hold, caller=f"+1555020{n:04d}")
    text = {200: "200 answered", 486: "486 busy", 480: "480 no answer", 404: "404 not found"}
    result = text.get(r.status, f"{r.status or 'no'} final response")
    return result + (f", PDD {1000 * r.pdd:.0f} ms" if r.pdd is not None else "")


async def run_demo(
    *,
    gateway: tuple[str, int],
    esl: tuple[str, int],
    esl_password: str,
    router: str,  # HOST:PORT of the router's UDP SIP listener
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
    host, _, port = router.rpartition(":")
    tasks = []
    for n, call in enumerate(calls):
        tasks.append(
            asyncio.create_task(_place(carrier, (host, int(port)), esl, esl_password, call, n))
        )
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
