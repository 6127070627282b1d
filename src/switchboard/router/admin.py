"""The router's admin HTTP/JSON API (FastAPI; OpenAPI description at /openapi.json).

Served by uvicorn inside the router's own event loop, so handlers read and change the
proxy's state directly, between two SIP messages, without locks.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from switchboard.config import Config, TrunkSection
from switchboard.router.dispatcher import Destination, DestinationState
from switchboard.router.metrics import render
from switchboard.router.proxy import Proxy

log = logging.getLogger(__name__)


class Router(Protocol):
    """What the admin API needs of the running router (:class:`switchboard.router.service.Router`
    is one); a protocol, so this module does not import the service that serves it."""

    cfg: Config
    proxy: Proxy
    registry: CollectorRegistry

    def reload(self) -> int: ...

    def set_trunks(self, trunks: dict[str, Any]) -> None: ...

    def proxy_time(self) -> float: ...


class DestinationView(BaseModel):
    set: int
    uri: str
    state: str
    flags: str  # Kamailio dispatcher.list letters: AP, IP, TP, DX...
    probing: bool
    probe_latency_ms: float | None
    active_calls: int  # calls this router has on it
    reported_calls: int | None  # the node's X-Switchboard-Calls at the last probe
    load: int  # what algorithm 10 and maxload use (docs/router.md)
    timeouts: int
    priority: int
    weight: int
    maxload: int


class StateChange(BaseModel):
    uri: str
    set: int = 1
    state: Literal["active", "inactive", "trying", "disabled"]


class Stats(BaseModel):
    transactions: int
    pending_transactions: int
    dialogs: int
    draining: bool
    requests: dict[str, int]
    replies: dict[str, int]
    failovers: int
    acl_rejects: int
    pike_blocks: int
    bad_messages: int


class ReloadResult(BaseModel):
    destinations: int
    transactions_kept: int


def _view(d: Destination) -> DestinationView:
    return DestinationView(
        set=d.spec.setid,
        uri=d.uri,
        state=d.state.value,
        flags=d.flags_letters,
        probing=d.probing,
        probe_latency_ms=None if d.latency_ms is None else round(d.latency_ms, 3),
        active_calls=d.active_calls,
        reported_calls=d.reported_calls,
        load=d.load,
        timeouts=d.timeouts,
        priority=d.spec.priority,
        weight=d.weight,
        maxload=d.spec.maxload,
    )


def create_app(router: Router) -> FastAPI:
    app = FastAPI(
        title="Switchboard edge router",
        version="1",
        description="Destinations, drain, reload, transaction counts and Prometheus metrics.",
    )

    @app.get("/destinations", response_model=list[DestinationView])
    def destinations() -> list[DestinationView]:
        """Every destination with its state, probe latency and active calls."""
        return [_view(d) for d in router.proxy.dispatcher.destinations()]

    @app.post("/destinations/state", response_model=DestinationView)
    def set_state(change: StateChange) -> DestinationView:
        """Set a destination's state. ``disabled`` drains it: no new calls, existing
        dialogs continue (in-dialog requests follow the route set, not the dispatcher)."""
        dest = router.proxy.dispatcher.find(change.set, change.uri)
        if dest is None:
            raise HTTPException(404, f"no destination {change.uri} in set {change.set}")
        ch = router.proxy.dispatcher.set_state(dest, DestinationState(change.state))
        if ch is not None:
            router.proxy.on_state_change(ch)
        return _view(dest)

    @app.post("/reload", response_model=ReloadResult)
    def reload() -> ReloadResult:
        """Re-read the configuration file and the dispatcher list; transactions and
        the state of unchanged destinations are kept."""
        try:
            n = router.reload()
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return ReloadResult(destinations=n, transactions_kept=router.proxy.transaction_count)

    @app.get("/trunks")
    def trunks() -> list[dict[str, Any]]:
        """Every trunk: its settings and live state (calls in progress, calls in the
        last second, admitted, calls by disposition, rejections by reason, mean PDD).
        The ``acl`` trunk is made of the ``[acl] allow`` addresses no trunk claims."""
        table = router.proxy.trunks
        if table is None:
            return []
        now = router.proxy_time()
        out = table.snapshot(now)
        for row in out:
            t = router.cfg.trunks.get(row["name"])
            row["config"] = t.model_dump() if t is not None else None
        return out

    @app.put("/trunks")
    def put_trunks(trunks: dict[str, TrunkSection]) -> list[dict[str, Any]]:
        """Replace every ``[trunks.*]`` definition, limits included, as a SIGHUP reload
        of the file would: calls in progress continue, trunks that still exist keep
        their counters. Refused as a whole (400, the key named) when invalid. Not
        written to the file: a later reload from the file replaces it."""
        try:
            router.set_trunks({k: v.model_dump() for k, v in trunks.items()})
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return trunks_view()

    def trunks_view() -> list[dict[str, Any]]:
        return trunks()

    @app.get("/stats", response_model=Stats)
    def stats() -> Stats:
        p = router.proxy
        s = p.stats
        return Stats(
            transactions=p.transaction_count,
            pending_transactions=p.pending_transactions(),
            dialogs=p.dialog_count,
            draining=p.draining,
            requests=dict(s.requests),
            replies={str(k): v for k, v in s.replies.items()},
            failovers=s.failovers,
            acl_rejects=s.acl_rejects,
            pike_blocks=s.pike_blocks,
            bad_messages=s.bad_messages,
        )

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "draining" if router.proxy.draining else "ok"}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(
            render(router.registry), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    try:
        # The platform's status page (observability/) lives on the router's admin address
        # and drives the endpoints above for its Drain/Enable buttons.
        from switchboard.observability.status import status_board_from_config

        board = status_board_from_config(router.cfg)
        app.include_router(board.router())
        board.start()  # the charts' history fills from now on, page open or not
        app.state.status_board = board
    except Exception:  # the router must run even if the status page cannot be built
        log.exception("status page unavailable")
    return app
