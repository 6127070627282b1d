"""``switchboard campaign run|status|report``.

Exit codes: 0 the campaign finished (or was stopped and can be resumed), 2 bad input
(contacts file, flags, config), 3 no Event Socket or database reachable, 4 the campaign paused
itself (failed ratio over the threshold; rerun the same command to resume).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from switchboard.config import Config
from switchboard.dialer.campaign import Dialer, Progress, Settings
from switchboard.dialer.contacts import ContactsError, parse_contacts
from switchboard.dialer.esl_client import EslError
from switchboard.dialer.policy import DoNotCall
from switchboard.dialer.store import CampaignMismatch, CampaignStore
from switchboard.lifecycle import ExitCode
from switchboard.listing import Column, CsvOpt, Form, FormError, JsonOpt, WideOpt, form, render
from switchboard.observability.metrics import DialerMetrics

EXIT_INPUT, EXIT_UNREACHABLE, EXIT_PAUSED = (
    ExitCode.USAGE,
    ExitCode.START_FAILED,
    ExitCode.CAMPAIGN_PAUSED,
)

campaign_app = typer.Typer(help="Outbound campaigns over the Event Socket.", no_args_is_help=True)
err = Console(stderr=True)
out = Console()
_load_config: Callable[[Path | None], Config] | None = None

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML configuration file.")]


def register(app: typer.Typer, load_config: Callable[[Path | None], Config]) -> None:
    global _load_config
    _load_config = load_config
    app.add_typer(campaign_app, name="campaign")


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[red]error[/red]: {message}", highlight=False)
    return typer.Exit(code)


def _config(path: Path | None) -> Config:
    if _load_config is None:
        from switchboard import config as config_mod

        return config_mod.load(path)
    return _load_config(path)


def _db_url(cfg: Config) -> str:
    from switchboard.billing.cli import database_url

    return database_url(cfg)


def esl_endpoints(cfg: Config, given: list[str]) -> list[tuple[str, int]]:
    """``--esl`` values, else ``[dialer].esl``, else every media node's Event Socket."""
    items = given or cfg.dialer.esl
    if not items:
        if cfg.esl.listen:
            items = [cfg.esl.listen]
        else:
            items = [f"127.0.0.1:{8020 + n}" for n in range(1, cfg.platform.media_nodes + 1)]
    endpoints = []
    for item in items:
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _fail(f"bad --esl {item!r}: expected HOST:PORT", EXIT_INPUT)
        endpoints.append((host.strip("[]"), int(port)))
    return endpoints


def progress_table(name: str, p: Progress, target_cps: float) -> Table:
    t = Table(title=f"campaign {name} — {p.status}", show_header=True, header_style="bold")
    for col in (
        "contacts",
        "dialed",
        "answered",
        "busy",
        "no answer",
        "failed",
        "unknown",
        "DNC",
        "in progress",
        "remaining",
        "CPS",
        "ETA",
    ):
        t.add_column(col, justify="right")
    eta = (
        "-"
        if p.eta_seconds is None
        else f"{int(p.eta_seconds) // 60}m{int(p.eta_seconds) % 60:02d}s"
    )
    t.add_row(
        str(p.total),
        str(p.dialed),
        str(p.answered),
        str(p.busy),
        str(p.noanswer),
        str(p.failed),
        str(p.unknown),
        str(p.dnc),
        str(p.in_progress),
        str(p.remaining),
        f"{p.achieved_cps:.1f}/{target_cps:g}",
        eta,
    )
    return t


@campaign_app.command("run")
def run(
    contacts: Annotated[
        Path, typer.Argument(help="CSV with a header row: number[,caller_id,name,timezone,VAR...]")
    ],
    gateway: Annotated[
        str, typer.Option(help="Gateway the calls leave on (sofia/gateway/<gw>/...).")
    ] = "carrier",
    cps: Annotated[float | None, typer.Option(help="Originates per second.")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="Cap on calls in flight.")] = None,
    play: Annotated[str, typer.Option(help="File played when a call answers (&playback).")] = "",
    extension: Annotated[str, typer.Option(help="Dialplan extension instead of --play.")] = "",
    esl: Annotated[
        list[str] | None, typer.Option(help="Event Socket HOST:PORT; repeat for several nodes.")
    ] = None,
    password: Annotated[str | None, typer.Option(help="Event Socket password.")] = None,
    name: Annotated[
        str, typer.Option(help="Campaign name (default: the file's name); same name = resume.")
    ] = "",
    caller_id: Annotated[
        str | None, typer.Option(help="Caller id for contacts without one.")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option(help="Time zone for contacts without one.")
    ] = None,
    window: Annotated[str | None, typer.Option(help="Local calling hours, HH:MM-HH:MM.")] = None,
    weekdays: Annotated[str | None, typer.Option(help="Calling days, e.g. mon-fri.")] = None,
    retry: Annotated[
        str | None, typer.Option(help="Retry rules, e.g. busy=3/120,noanswer=2/600.")
    ] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts per contact at most.")] = None,
    originate_timeout: Annotated[int | None, typer.Option(help="Ring time, seconds.")] = None,
    dnc: Annotated[Path | None, typer.Option(help="Do-not-call list file.")] = None,
    max_failed_ratio: Annotated[
        float | None, typer.Option(help="Pause above this failed ratio.")
    ] = None,
    live: Annotated[
        bool, typer.Option(help="Live progress display (default: when a terminal).")
    ] = sys.stdout.isatty(),
    metrics: Annotated[
        str, typer.Option(help="Serve Prometheus /metrics on HOST:PORT while running.")
    ] = "",
    config: ConfigOpt = None,
) -> None:
    """Run (or resume) a campaign: paced originates, retries, calling windows, DNC."""
    cfg = _config(config)
    d = cfg.dialer
    try:
        text = contacts.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise _fail(f"cannot read {contacts}: {exc.strerror}", EXIT_INPUT) from None
    try:
        rows = parse_contacts(text, str(contacts))
    except ContactsError as exc:
        raise _fail(str(exc), EXIT_INPUT) from None
    dnc_list = DoNotCall()
    dnc_path = dnc or (Path(d.dnc_file) if d.dnc_file else None)
    if dnc_path is not None:
        try:
            dnc_list = DoNotCall(dnc_path.read_text().splitlines())
        except (OSError, ValueError) as exc:
            raise _fail(f"do-not-call list {dnc_path}: {exc}", EXIT_INPUT) from None
    settings = Settings(
        gateway=gateway,
        cps=cps if cps is not None else d.cps,
        max_concurrent=max_concurrent if max_concurrent is not None else d.max_concurrent,
        play=play,
        extension=extension,
        caller_id=caller_id if caller_id is not None else d.caller_id,
        timezone=timezone if timezone is not None else d.timezone,
        window=window if window is not None else d.window,
        weekdays=weekdays if weekdays is not None else d.weekdays,
        retries=retry if retry is not None else d.retries,
        max_attempts=max_attempts if max_attempts is not None else d.max_attempts,
        originate_timeout=originate_timeout
        if originate_timeout is not None
        else d.originate_timeout,
        max_failed_ratio=max_failed_ratio if max_failed_ratio is not None else d.max_failed_ratio,
        failed_ratio_min_attempts=d.failed_ratio_min_attempts,
    )
    try:
        settings.validate()
    except ValueError as exc:
        raise _fail(str(exc), EXIT_INPUT) from None
    endpoints = esl_endpoints(cfg, esl or [])
    pw = password if password is not None else (d.password or cfg.esl.password)
    camp_name = name or contacts.stem
    sha = hashlib.sha256(text.encode()).hexdigest()
    from switchboard.observability.metrics import new_registry

    registry = new_registry("dialer")
    dialer_metrics = DialerMetrics.create(registry)
    if metrics:
        host, sep, port = metrics.rpartition(":")
        if not sep or not port.isdigit():
            raise _fail(f"bad --metrics {metrics!r}: expected HOST:PORT", EXIT_INPUT)
        from prometheus_client import start_http_server

        try:
            start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
        except OSError as exc:
            raise _fail(
                f"cannot serve metrics on {metrics}: {exc.strerror}", EXIT_UNREACHABLE
            ) from None
    url = _db_url(cfg)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    code = asyncio.run(
        _with_loop_lag(
            registry,
            _run(
                url, camp_name, sha, settings, rows, endpoints, pw, dnc_list, live, dialer_metrics
            ),
        )
    )
    raise typer.Exit(code)


async def _with_loop_lag(registry: Any, work: Any) -> int:
    """Run the campaign with the event-loop lag monitor on its /metrics."""
    from switchboard.observability.loop_lag import LoopLagMonitor

    monitor = LoopLagMonitor(registry)
    monitor.start()
    try:
        return int(await work)
    finally:
        monitor.stop()


async def _run(
    url: str,
    name: str,
    sha: str,
    settings: Settings,
    rows: list[Any],
    endpoints: list[tuple[str, int]],
    password: str,
    dnc: DoNotCall,
    live: bool,
    metrics: DialerMetrics,
) -> int:
    try:
        store = await CampaignStore.connect(url)
    except Exception as exc:  # psycopg.OperationalError, DatabaseError
        err.print(f"[red]error[/red]: cannot reach the campaign database: {exc}")
        return EXIT_UNREACHABLE
    try:
        try:
            camp = await store.create_or_resume(name, sha, settings.to_dict(), rows)
        except CampaignMismatch as exc:
            err.print(f"[red]error[/red]: {exc}")
            return EXIT_INPUT
        if camp.resumed:
            settings = Settings.from_dict({**camp.settings})
            err.print(f"resuming campaign {name} with its stored settings")
        dialer = Dialer(
            store, camp.id, name, settings, endpoints, password, dnc=dnc, metrics=metrics
        )
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        presses = 0

        def on_signal() -> None:
            nonlocal presses
            presses += 1
            if presses == 1:
                err.print(
                    "stopping: no new calls; waiting for calls in flight (Ctrl-C again to quit now)"
                )
                dialer.stop()
            elif task is not None:
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            if live:
                with Live(
                    progress_table(name, Progress(), settings.cps),
                    console=out,
                    refresh_per_second=4,
                ) as lv:
                    p = await dialer.run(
                        lambda pr: lv.update(progress_table(name, pr, settings.cps))
                    )
                    lv.update(progress_table(name, p, settings.cps))
            else:
                p = await dialer.run()
        except EslError as exc:
            err.print(f"[red]error[/red]: {exc}")
            return EXIT_UNREACHABLE
        except asyncio.CancelledError:
            err.print("stopped at once; calls in flight are settled on the next run")
            return 130
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        summary = {
            "campaign": name,
            "status": p.status,
            "contacts": p.total,
            "dialed": p.dialed,
            "answered": p.answered,
            "busy": p.busy,
            "noanswer": p.noanswer,
            "failed": p.failed,
            "unknown": p.unknown,
            "dnc": p.dnc,
            "remaining": p.remaining,
            "achieved_cps": round(p.achieved_cps, 2),
        }
        if live:
            out.print(progress_table(name, p, settings.cps))
        else:
            print(json.dumps(summary), flush=True)  # one line, for scripts
        if p.status == "paused":
            row = await store.campaign(name)
            err.print(f"campaign paused: {row['status_reason'] if row else ''}; rerun to resume")
            return EXIT_PAUSED
        return 0
    finally:
        await store.close()


def _report_rows(store_rows: dict[str, int]) -> dict[str, Any]:
    attempts = {
        k.removeprefix("attempts_"): v for k, v in store_rows.items() if k.startswith("attempts_")
    }
    total = sum(v for k, v in attempts.items() if k != "in_progress")
    answered = attempts.get("answered", 0)
    return {
        "attempts": attempts,
        "contacts": {
            k.removeprefix("contacts_"): v
            for k, v in store_rows.items()
            if k.startswith("contacts_")
        },
        "dnc": store_rows.get("dnc", 0),
        "asr_pct": round(100.0 * answered / total, 2) if total else None,
        "acd_s": round(store_rows.get("billsec_answered", 0) / answered, 1) if answered else None,
    }


STATUS_COLUMNS = (
    Column("name", flex=True),
    Column("status"),
    Column("contacts", justify="right"),
    Column("done", justify="right"),
    Column("pending", justify="right"),
    Column("answered", justify="right"),
    Column("asr_pct", "ASR %", justify="right"),
    Column("acd_s", "ACD s", default=False, justify="right"),
    Column("dnc", "DNC", default=False, justify="right"),
    Column("created_at", "created (UTC)", default=False),
    Column("reason", flex=True, default=False),
)
OUTCOME_COLUMNS = (Column("outcome"), Column("attempts", justify="right"))


def _form(wide: bool, as_json: bool, as_csv: bool) -> Form:
    try:
        return form(wide, as_json, as_csv)
    except FormError as exc:
        raise _fail(str(exc), EXIT_INPUT) from None


@campaign_app.command("status")
def status(
    name: Annotated[str, typer.Argument(help="Campaign name; all campaigns when omitted.")] = "",
    wide: WideOpt = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Campaigns with their state and progress."""
    chosen = _form(wide, as_json, as_csv)
    url = _db_url(_config(config))

    async def go() -> list[dict[str, Any]]:
        store = await CampaignStore.connect(url)
        try:
            rows = [await store.campaign(name)] if name else await store.campaigns()
            if name and rows[0] is None:
                raise _fail(f"no campaign named {name!r}", EXIT_INPUT)
            return [
                {
                    "name": r["name"],
                    "status": r["status"],
                    "reason": r["status_reason"],
                    "created_at": r["created_at"].isoformat(),
                    **_report_rows(await store.counts(r["id"])),
                }
                for r in rows
                if r is not None
            ]
        finally:
            await store.close()

    result = asyncio.run(go())
    rows = [
        {
            **r,
            "contacts": sum(r["contacts"].values()),
            "done": r["contacts"].get("done", 0),
            "pending": r["contacts"].get("pending", 0),
            "answered": r["attempts"].get("answered", 0),
        }
        for r in result
    ]
    render(rows, STATUS_COLUMNS, chosen, title="campaigns", json_value=result)


@campaign_app.command("report")
def report(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    wide: WideOpt = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Per-outcome counts, ASR, ACD and attempts per contact of one campaign."""
    chosen = _form(wide, as_json, as_csv)
    url = _db_url(_config(config))

    async def go() -> dict[str, Any]:
        store = await CampaignStore.connect(url)
        try:
            row = await store.campaign(name)
            if row is None:
                raise _fail(f"no campaign named {name!r}", EXIT_INPUT)
            rep = {
                "name": name,
                "status": row["status"],
                **_report_rows(await store.counts(row["id"])),
            }
            agg = await store.fetchone(
                "SELECT count(*) AS contacts, coalesce(avg(attempts), 0)::float AS per_contact "
                "FROM dialer_contact WHERE campaign_id=%s",
                (row["id"],),
            )
            rep["attempts_per_contact"] = round(agg["per_contact"], 2) if agg else None
            costs = await store.costs(row["id"])
            rep["cdrs"] = costs["cdrs"]
            rep["billed_minutes"] = round(costs["billsec"] / 60, 2)
            rep["cost"] = str(costs["buy_cost"]) if costs["buy_cost"] is not None else None
            rep["revenue"] = str(costs["sell_cost"]) if costs["sell_cost"] is not None else None
            rep["unrated_cdrs"] = costs["unmatched"]
            return rep
        finally:
            await store.close()

    rep = asyncio.run(go())
    rows = [{"outcome": k, "attempts": v} for k, v in sorted(rep["attempts"].items())]
    render(
        rows, OUTCOME_COLUMNS, chosen, title=f"campaign {name} — {rep['status']}", json_value=rep
    )
    if chosen in (Form.JSON, Form.CSV):
        return
    out.print(
        f"CDRs {rep['cdrs']}  minutes {rep['billed_minutes']}  cost {rep['cost'] or '-'}  "
        f"revenue {rep['revenue'] or '-'}  unrated {rep['unrated_cdrs']}"
    )
    out.print(
        f"ASR {rep['asr_pct']}%  ACD {rep['acd_s']} s  attempts/contact {rep['attempts_per_contact']}  "
        f"DNC {rep['dnc']}"
    )


@campaign_app.command("requeue-unknown")
def requeue_unknown(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    config: ConfigOpt = None,
) -> None:
    """Put back contacts whose attempt ended ``unknown`` (dialer or Event Socket lost while the
    call was up, or claimed when the dialer crashed). They MAY have been dialed: this is the
    operator's decision. Then run the campaign again."""
    url = _db_url(_config(config))

    async def go() -> int:
        store = await CampaignStore.connect(url)
        try:
            row = await store.campaign(name)
            if row is None:
                raise _fail(f"no campaign named {name!r}", EXIT_INPUT)
            return await store.requeue_unknown(row["id"])
        finally:
            await store.close()

    print(f"{asyncio.run(go())} contact(s) of {name} put back to pending")
