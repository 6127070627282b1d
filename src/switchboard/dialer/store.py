"""Campaign and contact state in PostgreSQL: resumable, never dialing anyone twice.

The at-most-once rule: an attempt row (keyed by the call's ``origination_uuid``) is committed
with the contact in state ``dialing`` *before* the originate is sent. After a crash, a contact
found ``dialing`` is never re-dialed blindly: :meth:`CampaignStore.unresolved` lists those
attempts so the runner can ask the switch (``uuid_exists``) or the CDRs what became of them;
one with no evidence is closed as ``unknown``, counted, and not dialed again.

Contacts are claimed with ``FOR UPDATE SKIP LOCKED``, so several dialer processes can work one
campaign without taking the same contact.
"""

from __future__ import annotations

import asyncio
import json
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from switchboard.dialer.contacts import Contact


@dataclass(frozen=True)
class Campaign:
    id: int
    name: str
    status: str
    settings: dict[str, Any]
    resumed: bool


@dataclass(frozen=True)
class Claim:
    """A contact claimed for one attempt; ``uuid`` is the call's origination_uuid."""

    uuid: str
    contact_id: int
    attempt: int
    number: str
    caller_id: str
    name: str
    timezone: str
    variables: dict[str, str]


class CampaignMismatch(Exception):
    """A campaign of that name exists with a different contacts file."""


# What the runner decides for each due contact before it is dialed.
DIAL, SKIP_DNC = "dial", "dnc"


class CampaignStore:
    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]) -> None:
        # A few connections, so claims (pacing loop) and finishes (events) do not queue on one.
        self.pool = pool

    @classmethod
    async def connect(cls, conninfo: str) -> CampaignStore:
        """Connect, bringing the schema up to date (the platform's versioned migrations)."""
        from switchboard.billing import database

        await asyncio.to_thread(database.migrate, conninfo)
        pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
            conninfo,
            min_size=2,
            max_size=4,
            open=False,
            kwargs={"row_factory": dict_row, "autocommit": True},
        )
        await pool.open(wait=True, timeout=10)
        return cls(pool)

    async def fetchone(self, query: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return await cur.fetchone()

    async def close(self) -> None:
        await self.pool.close()

    async def create_or_resume(
        self, name: str, source_sha256: str, settings: dict[str, Any], contacts: Sequence[Contact]
    ) -> Campaign:
        """Create the campaign with its contacts, or return the existing one to resume it."""
        async with self.pool.connection() as conn:  # noqa: SIM117 (a transaction on that connection)
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT id, status, source_sha256, settings FROM dialer_campaign WHERE name = %s FOR UPDATE",
                    (name,),
                )
                row = await cur.fetchone()
                if row is not None:
                    if row["source_sha256"] != source_sha256:
                        raise CampaignMismatch(
                            f"campaign {name!r} already exists with a different contacts file; "
                            "use another --name to start a new campaign"
                        )
                    if row["status"] == "paused":
                        await conn.execute(
                            "UPDATE dialer_campaign SET status='running', status_reason='' WHERE id=%s",
                            (row["id"],),
                        )
                    return Campaign(
                        row["id"],
                        name,
                        "running" if row["status"] == "paused" else row["status"],
                        row["settings"],
                        resumed=True,
                    )
                cur = await conn.execute(
                    "INSERT INTO dialer_campaign (name, source_sha256, settings) VALUES (%s, %s, %s) RETURNING id",
                    (name, source_sha256, json.dumps(settings)),
                )
                cid = (await cur.fetchone())["id"]  # type: ignore[index]
                async with conn.cursor().copy(
                    "COPY dialer_contact (campaign_id, line, number, caller_id, name, timezone, variables) FROM STDIN"
                ) as copy:
                    for c in contacts:
                        await copy.write_row(
                            (
                                cid,
                                c.line,
                                c.number,
                                c.caller_id,
                                c.name,
                                c.timezone,
                                json.dumps(c.variables),
                            )
                        )
                return Campaign(cid, name, "running", settings, resumed=False)

    async def claim(
        self,
        campaign_id: int,
        now: datetime,
        decide: Callable[[dict[str, Any]], tuple[str, datetime | None]],
        *,
        endpoint: str = "",
        limit: int = 1,
    ) -> list[Claim]:
        """Claim up to ``limit`` due contacts for dialing, committed before anything is sent.

        ``decide(row)`` returns ``(DIAL, None)``, ``(SKIP_DNC, None)`` or ``("later", when)``
        for a contact outside its calling window (no attempt is counted for it).
        """
        async with self.pool.connection() as conn:
            claims: list[Claim] = []
            async with conn.transaction():
                cur = await conn.execute(
                    """SELECT id, number, caller_id, name, timezone, variables, attempts
                         FROM dialer_contact
                        WHERE campaign_id = %s AND state = 'pending' AND next_attempt_at <= %s
                        ORDER BY next_attempt_at, id
                        LIMIT %s
                        FOR UPDATE SKIP LOCKED""",
                    (campaign_id, now, limit * 4),
                )
                for row in await cur.fetchall():
                    if len(claims) >= limit:
                        break
                    verdict, when = decide(row)
                    if verdict == SKIP_DNC:
                        await conn.execute(
                            "UPDATE dialer_contact SET state='done', last_outcome='dnc' WHERE id=%s",
                            (row["id"],),
                        )
                        continue
                    if verdict != DIAL:
                        await conn.execute(
                            "UPDATE dialer_contact SET next_attempt_at=%s WHERE id=%s",
                            (when, row["id"]),
                        )
                        continue
                    call_uuid = str(uuidlib.uuid4())
                    attempt = row["attempts"] + 1
                    await conn.execute(
                        "UPDATE dialer_contact SET state='dialing', attempts=%s WHERE id=%s",
                        (attempt, row["id"]),
                    )
                    await conn.execute(
                        """INSERT INTO dialer_attempt (uuid, campaign_id, contact_id, attempt, endpoint, started_at)
                           VALUES (%s, %s, %s, %s, %s, %s)""",
                        (call_uuid, campaign_id, row["id"], attempt, endpoint, now),
                    )
                    claims.append(
                        Claim(
                            call_uuid,
                            row["id"],
                            attempt,
                            row["number"],
                            row["caller_id"],
                            row["name"],
                            row["timezone"],
                            row["variables"],
                        )
                    )
            return claims

    async def set_endpoint(self, call_uuid: str, endpoint: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE dialer_attempt SET endpoint=%s WHERE uuid=%s", (endpoint, call_uuid)
            )

    async def finish(
        self,
        call_uuid: str,
        *,
        outcome: str,
        cause: str | None,
        billsec: int | None,
        ended_at: datetime,
        answered_at: datetime | None = None,
        retry_at: datetime | None = None,
    ) -> bool:
        """Record an attempt's outcome; the contact is done, or pending again at ``retry_at``.

        Idempotent: an attempt already finished is left alone (returns False).
        """
        async with self.pool.connection() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    """UPDATE dialer_attempt SET outcome=%s, cause=%s, billsec=%s, ended_at=%s, answered_at=%s
                        WHERE uuid=%s AND outcome IS NULL RETURNING contact_id""",
                    (outcome, cause, billsec, ended_at, answered_at, call_uuid),
                )
                row = await cur.fetchone()
                if row is None:
                    return False
                await conn.execute(
                    """UPDATE dialer_contact
                          SET state = CASE WHEN %(retry)s::timestamptz IS NULL THEN 'done' ELSE 'pending' END,
                              next_attempt_at = COALESCE(%(retry)s::timestamptz, next_attempt_at),
                              last_outcome = %(outcome)s, last_cause = %(cause)s
                        WHERE id = %(id)s""",
                    {
                        "retry": retry_at,
                        "outcome": outcome,
                        "cause": cause,
                        "id": row["contact_id"],
                    },
                )
            return True

    async def release(self, call_uuid: str) -> None:
        """Give back a claim that was never sent (graceful stop): no attempt is counted."""
        async with self.pool.connection() as conn:  # noqa: SIM117 (a transaction on that connection)
            async with conn.transaction():
                cur = await conn.execute(
                    "DELETE FROM dialer_attempt WHERE uuid=%s AND outcome IS NULL RETURNING contact_id",
                    (call_uuid,),
                )
                row = await cur.fetchone()
                if row is not None:
                    await conn.execute(
                        "UPDATE dialer_contact SET state='pending', attempts=attempts-1 WHERE id=%s",
                        (row["contact_id"],),
                    )

    async def requeue_unknown(self, campaign_id: int) -> int:
        """Put contacts whose last attempt is ``unknown`` back to pending (an operator's call:
        such a contact may have been dialed). Returns how many."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE dialer_contact SET state='pending', next_attempt_at=now() "
                "WHERE campaign_id=%s AND state='done' AND last_outcome='unknown' RETURNING id",
                (campaign_id,),
            )
            n = len(await cur.fetchall())
            if n:
                await conn.execute(
                    "UPDATE dialer_campaign SET status='running', status_reason='' "
                    "WHERE id=%s AND status='done'",
                    (campaign_id,),
                )
            return n

    async def unresolved(self, campaign_id: int) -> list[dict[str, Any]]:
        """Attempts sent (or about to be) by an earlier run that never got an outcome."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT uuid::text AS uuid, contact_id, attempt, endpoint, started_at FROM dialer_attempt "
                "WHERE campaign_id=%s AND outcome IS NULL ORDER BY started_at",
                (campaign_id,),
            )
            return await cur.fetchall()

    async def set_status(self, campaign_id: int, status: str, reason: str = "") -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE dialer_campaign SET status=%s, status_reason=%s WHERE id=%s",
                (status, reason, campaign_id),
            )

    async def next_due(self, campaign_id: int) -> datetime | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT min(next_attempt_at) AS t FROM dialer_contact WHERE campaign_id=%s AND state='pending'",
                (campaign_id,),
            )
            row = await cur.fetchone()
            return row["t"] if row else None

    async def counts(self, campaign_id: int) -> dict[str, int]:
        """Contacts by state and attempts by outcome, for progress and reports."""
        async with self.pool.connection() as conn:
            out: dict[str, int] = {}
            cur = await conn.execute(
                "SELECT state, count(*) AS n FROM dialer_contact WHERE campaign_id=%s GROUP BY state",
                (campaign_id,),
            )
            for r in await cur.fetchall():
                out[f"contacts_{r['state']}"] = r["n"]
            cur = await conn.execute(
                "SELECT coalesce(outcome, 'in_progress') AS o, count(*) AS n, coalesce(sum(billsec), 0) AS s "
                "FROM dialer_attempt WHERE campaign_id=%s GROUP BY 1",
                (campaign_id,),
            )
            for r in await cur.fetchall():
                out[f"attempts_{r['o']}"] = r["n"]
                if r["o"] == "answered":
                    out["billsec_answered"] = int(r["s"])
            cur = await conn.execute(
                "SELECT count(*) AS n FROM dialer_contact WHERE campaign_id=%s AND last_outcome='dnc'",
                (campaign_id,),
            )
            out["dnc"] = (await cur.fetchone())["n"]  # type: ignore[index]
            return out

    async def costs(self, campaign_id: int) -> dict[str, Any]:
        """Cost of the campaign's calls from the billing CDRs (a leg's CDR ``call_id`` is its
        channel UUID, the attempt's key): buy cost (carrier), sell cost, billed minutes."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                """SELECT count(*) AS cdrs, sum(c.buy_cost) AS buy_cost, sum(c.cost) AS sell_cost,
                          coalesce(sum(c.billsec), 0) AS billsec,
                          count(*) FILTER (WHERE c.rating_status = 'unmatched') AS unmatched
                     FROM cdr c JOIN dialer_attempt a ON c.call_id = a.uuid::text
                    WHERE a.campaign_id = %s""",
                (campaign_id,),
            )
            row = await cur.fetchone()
        assert row is not None
        return row

    async def campaign(self, name: str) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM dialer_campaign WHERE name=%s", (name,))
            return await cur.fetchone()

    async def campaigns(self) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM dialer_campaign ORDER BY id")
            return await cur.fetchall()


def retry_time(now: datetime, delay: float | None) -> datetime | None:
    return None if delay is None else now + timedelta(seconds=delay)
