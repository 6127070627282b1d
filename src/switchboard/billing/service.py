"""Billing inside a running process (a media node): CDR writer, credit control, upkeep.

    billing = BillingService.from_config(cfg, url, node="media-1", state_dir=Path("state"))
    await billing.start()
    auth = await billing.credit.authorise(call_id, dest, gateway=gw, now=now)  # if enabled
    billing.writer.submit(cdr)                                                  # at hangup
    await billing.credit.settle(call_id, cdr.billsec, now=now)
    await billing.close()

Upkeep runs every ``UPKEEP_INTERVAL`` seconds in the background: CDR partitions are created
ahead (so a long-running platform never writes into the default partition). With credit
control on, reservations nobody settled are swept every ``SWEEP_INTERVAL`` seconds
(:meth:`CreditControl.sweep`: settled from the call's CDR, or released).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from switchboard.billing.credit import CreditControl, LowBalance
from switchboard.billing.database import PARTITION_MONTHS_AHEAD, PARTITION_MONTHS_BACK
from switchboard.billing.writer import CdrWriter

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from switchboard.billing.portability import PortabilityLookup
    from switchboard.config import Config

log = logging.getLogger(__name__)

UPKEEP_INTERVAL = 3600.0
# A swept reservation is past its expiry already (its call's end + reservation_grace); 30 s
# more keep the funds of a lost settlement locked for little longer than that, at the cost
# of one indexed query per node (the open reservations past their expiry: usually none).
SWEEP_INTERVAL = 30.0


class BillingService:
    def __init__(
        self,
        url: str,
        writer: CdrWriter,
        credit: CreditControl | None = None,
        pool: AsyncConnectionPool | None = None,
        upkeep_interval: float = UPKEEP_INTERVAL,
        sweep_interval: float = SWEEP_INTERVAL,
        portability: PortabilityLookup | None = None,
    ) -> None:
        self.url = url
        self.writer = writer
        self.credit = credit
        self.pool = pool
        self.portability = portability
        self.upkeep_interval = upkeep_interval
        self.sweep_interval = sweep_interval
        self._upkeep: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        url: str,
        *,
        node: str,
        state_dir: Path,
        on_low_balance: Callable[[LowBalance], None] | None = None,
    ) -> BillingService:
        """Build from ``[billing]``/``[database]``; the spool is per node (one writer each)."""
        b = cfg.billing
        spool = Path(b.spool_dir) if b.spool_dir else state_dir / "spool"
        writer = CdrWriter(
            url,
            spool / node,
            batch_size=b.batch_size,
            flush_interval=b.flush_interval,
            retry_interval=b.retry_interval,
            connect_timeout=cfg.database.connect_timeout,
            fsync="never" if b.spool_fsync == "never" else "batch",
        )
        credit = pool = portability = None
        if b.credit_control or b.portability or cfg.intercept.enabled:
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(
                url,
                min_size=1,
                max_size=cfg.database.pool_size,
                open=False,
                timeout=cfg.database.connect_timeout,
                kwargs={"connect_timeout": max(1, round(cfg.database.connect_timeout))},
                # a connection the server dropped (restart, failover) is replaced at
                # checkout instead of failing the call it was lent to: one round trip
                check=AsyncConnectionPool.check_connection,
            )
        if pool is not None and b.credit_control:
            credit = CreditControl(
                pool,
                max_call_seconds=b.max_call_seconds,
                grace_seconds=b.reservation_grace,
                reserve_seconds=b.reserve_seconds,
                on_low_balance=on_low_balance,
            )
        if pool is not None and b.portability:
            from switchboard.billing.portability import PortabilityLookup

            portability = PortabilityLookup(
                pool, ttl=b.portability_cache_ttl, timeout=b.portability_timeout
            )
        return cls(url, writer, credit, pool, portability=portability)

    async def start(self) -> None:
        await self.writer.start()
        if self.pool is not None:
            await self.pool.open(wait=False)  # calls are refused (503) until it connects
        self._upkeep = asyncio.create_task(self._run_upkeep(), name="billing-upkeep")
        if self.credit is not None:
            self._sweeper = asyncio.create_task(self._run_sweeper(), name="billing-sweeper")

    async def close(self) -> None:
        for task in (self._upkeep, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.writer.close()
        if self.pool is not None:
            await self.pool.close()

    async def upkeep(self) -> None:
        """Create CDR partitions ahead."""
        try:
            async with await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=3
            ) as conn:
                await conn.execute(
                    "SELECT cdr_ensure_partitions(%s, %s)",
                    (PARTITION_MONTHS_BACK, PARTITION_MONTHS_AHEAD),
                )
        except (psycopg.Error, OSError) as exc:
            log.warning("billing upkeep skipped: %s", exc)

    async def sweep(self) -> None:
        """Settle or release the reservations nobody settled (CreditControl.sweep)."""
        if self.credit is None:
            return
        try:
            await self.credit.sweep(datetime.now(UTC))
        except (psycopg.Error, OSError, TimeoutError) as exc:  # a failover: next turn
            log.warning("reservation sweep skipped: %s", exc)

    async def _run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)  # a period, nothing to await
            await self.sweep()

    async def _run_upkeep(self) -> None:
        while True:
            await self.upkeep()
            await asyncio.sleep(self.upkeep_interval)
