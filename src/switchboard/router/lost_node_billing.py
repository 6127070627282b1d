"""The CDRs of the legs the router ends for a media node lost with its box, stored the
way the nodes store theirs: :class:`~switchboard.billing.writer.CdrWriter` (batched COPY
into ``[database] url``, deduplicated on the channel uuid, spooled to disk while the
database is away and replayed when it is back). docs/router.md "A media node lost with
its box"; the record itself is router/lost_node.py's.

One writer per router process, its spool in ``<spool_dir>/router`` (``router-N`` for
worker N: a spool has one writer). It holds no connection until a leg is ended: a router
whose nodes are never lost never connects to the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from switchboard.billing.writer import CdrWriter
from switchboard.router.lost_node import leg_cdr

if TYPE_CHECKING:
    from switchboard.config import Config
    from switchboard.router.proxy import FarEnd, Stats

log = logging.getLogger(__name__)


class LostLegBilling:
    """``leg_ended`` is the proxy's ``on_lost_leg``: builds the leg's CDR and queues it
    (never blocks, never raises on database trouble)."""

    def __init__(
        self,
        cfg: Config,
        *,
        name: str = "router",
        clock: Callable[[], float] = time.monotonic,
        node_name: Callable[[str], str] = str,
        stats: Stats | None = None,
    ) -> None:
        b = cfg.billing
        spool = Path(b.spool_dir) if b.spool_dir else Path(cfg.platform.state_dir) / "spool"
        self.writer = CdrWriter(
            cfg.database.url,
            spool / name,
            batch_size=b.batch_size,
            flush_interval=b.flush_interval,
            retry_interval=b.retry_interval,
            connect_timeout=cfg.database.connect_timeout,
            fsync="never" if b.spool_fsync == "never" else "batch",
        )
        # an outbound leg's carrier: the gateway whose proxy its INVITE went to (the
        # nodes and the router read the same configuration)
        self.gateways = {n: g.proxy for n, g in cfg.gateways.items()}
        self.prefixes = {n: g.prefix for n, g in cfg.gateways.items() if g.prefix}
        self.clock = clock  # the proxy's clock (the event loop's: monotonic)
        self.node_name = node_name  # a destination URI -> the CDR's node (its duid)
        # A lost call's reservation expires reservation_grace after the box died at the
        # earliest; the router's CDR is stored once the node is found inactive (probes)
        # and lost_node_timeout has passed: later than that, the sweep releases it unpaid.
        d = cfg.dispatcher
        found = d.probing_threshold * d.ping_interval + d.ping_timeout + d.lost_node_timeout
        if b.credit_control and found + 1 >= b.reservation_grace:
            log.warning(
                "a lost node's calls are billed by the router ~%.0f s after its box died"
                " (dispatcher probing + lost_node_timeout), not before billing."
                "reservation_grace (%d s): the sweep may release their prepaid reservations"
                " with nothing debited", found, b.reservation_grace,
            )  # fmt: skip
        self.written = 0  # CDRs queued
        self.unbillable = 0  # legs whose node tag names no channel
        self.stats = stats  # the proxy's counters (the router's metrics)

    async def start(self) -> None:
        """Start the writer (replays what an earlier run left in the spool)."""
        await self.writer.start()

    async def close(self) -> None:
        """Store what is queued, or spool it (the next start replays it)."""
        await self.writer.close()

    def leg_ended(self, fe: FarEnd, now: float) -> None:
        wall_offset = time.time() - self.clock()
        try:
            cdr = leg_cdr(fe, now, wall_offset, node=self.node_name(fe.node), gateways=self.gateways,
                          prefixes=self.prefixes)  # fmt: skip
        except ValueError as exc:  # a 2xx's bytes the record cannot hold: say so
            cdr = None
            log.error("call %s: no CDR for the lost node's leg: %s", fe.call_id, exc)
        if cdr is None:
            self.unbillable += 1
            if self.stats is not None:
                self.stats.lost_node_legs_unbilled += 1
            log.warning(
                "call %s: the lost node %s's leg is not billed by the router: its tag names"
                " no channel (a node older than this router, or a uuid of the client's choosing)",
                fe.call_id.decode("utf-8", "replace"), fe.node,
            )  # fmt: skip
            return
        self.written += 1
        if self.stats is not None:
            self.stats.lost_node_cdrs += 1
        self.writer.submit(cdr)
        log.info(
            "call %s: CDR of leg %s (%s, %d s) written by the router for lost node %s",
            cdr.sip_call_id, cdr.call_id, cdr.direction, cdr.billsec, fe.node,
        )  # fmt: skip
