"""Billing commands of ``switchboard`` (README, "Billing"): db, rates, accounts, cdr, report,
invoice. Registered on the main typer app by :func:`register`.

Exit codes follow ``switchboard.cli``: 2 bad input or configuration (nothing changed),
3 the database cannot be reached or started, 1 any other failure.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from switchboard.lifecycle import ExitCode
from switchboard.listing import Column, CsvOpt, Form, FormError, JsonOpt, WideOpt, form, render

if TYPE_CHECKING:
    import psycopg

    from switchboard.config import Config

EXIT_INPUT = ExitCode.USAGE
EXIT_DB = ExitCode.START_FAILED  # the database is unreachable

out = Console()
err = Console(stderr=True, soft_wrap=True)
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML configuration file.")]
_load_config: Callable[[Path | None], Config] | None = None

db_app = typer.Typer(
    help="The billing database: url, migrate, backup, restore.", no_args_is_help=True
)
rates_app = typer.Typer(help="Rate decks: import CSV, re-rate CDRs.", no_args_is_help=True)
accounts_app = typer.Typer(help="Customer accounts: create, topup, show.", no_args_is_help=True)
intercept_app = typer.Typer(
    help="Lawful recording: target list, recordings (every access audited).",
    no_args_is_help=True,
)
portability_app = typer.Typer(
    help="Ported numbers: import CSV, look a number up.", no_args_is_help=True
)
cdr_app = typer.Typer(
    help="Call detail records: list, export, archive, restore-archive.", no_args_is_help=True
)


def register(app: typer.Typer, load_config: Callable[[Path | None], Config]) -> None:
    """Add the billing commands to the ``switchboard`` app."""
    global _load_config
    _load_config = load_config
    app.add_typer(db_app, name="db")
    app.add_typer(rates_app, name="rates")
    app.add_typer(accounts_app, name="accounts")
    app.add_typer(cdr_app, name="cdr")
    app.add_typer(portability_app, name="portability")
    app.add_typer(intercept_app, name="intercept")
    app.command("report")(report_cmd)
    app.command("invoice")(invoice_cmd)


# -- helpers ------------------------------------------------------------------------------
def fail(message: str, code: int = EXIT_INPUT) -> typer.Exit:
    err.print(f"[red]error[/red]: {message}", highlight=False)
    return typer.Exit(code)


def _form(wide: bool, as_json: bool, as_csv: bool) -> Form:
    try:
        return form(wide, as_json, as_csv)
    except FormError as exc:
        raise fail(str(exc)) from None


def _config(config: Path | None) -> Config:
    if _load_config is None:  # used without the main app (tests of this module alone)
        from switchboard import config as config_mod

        try:
            return config_mod.load(config)
        except config_mod.ConfigError as exc:
            raise fail(f"configuration error: {exc}") from None
    return _load_config(config)


def state_dir(cfg: Config) -> Path:
    return Path(cfg.platform.state_dir)


def database_url(cfg: Config, *, keep_running: bool = False) -> str:
    """Resolve (start if embedded) and migrate the database; exit 3 if unreachable."""
    from switchboard.billing import database

    try:
        url = database.resolve_url(cfg.database.url, state_dir(cfg), keep_running=keep_running)
        database.migrate(url)
    except database.DatabaseError as exc:
        raise fail(str(exc), EXIT_DB) from None
    return url


@contextmanager
def connect(config: Path | None) -> Iterator[psycopg.Connection]:
    import psycopg

    cfg = _config(config)
    url = database_url(cfg)
    try:
        conn = psycopg.connect(
            url, autocommit=True, connect_timeout=int(cfg.database.connect_timeout)
        )
    except psycopg.OperationalError as exc:
        raise fail(f"cannot connect to the billing database: {exc}", EXIT_DB) from None
    with conn:
        # audit_log.actor of the changes this command makes: the operator's login
        set_actor(conn, f"os:{_login()}")
        yield conn


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (a bare container)
        return f"uid {os.getuid()}"


def set_actor(conn: psycopg.Connection, actor: str) -> None:
    from switchboard.billing.retention import set_actor as set_session_actor

    set_session_actor(conn, actor)


_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``2026-01-31``, ``2026-01-31T12:00`` (UTC unless an offset is given), or a relative
    age like ``30m``, ``24h``, ``7d``, ``2w`` meaning that long before now."""
    value = text.strip()
    match = _RELATIVE.fullmatch(value)
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match[2]]
        return (now or datetime.now(UTC)) - timedelta(**{unit: int(match[1])})
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"expected a date, a time or an age like 24h/7d, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


# -- db -----------------------------------------------------------------------------------
@db_app.command("url")
def db_url(config: ConfigOpt = None) -> None:
    """Print the libpq URI of the billing database (starts the embedded server and leaves
    it running; `switchboard db stop` stops it)."""
    cfg = _config(config)
    print(database_url(cfg, keep_running=True))


@db_app.command("stop")
def db_stop(config: ConfigOpt = None) -> None:
    """Stop the embedded PostgreSQL server of the state directory."""
    from switchboard.billing import database

    cfg = _config(config)
    if cfg.database.url:
        raise fail("database.url is set: the server is external, not stopped by switchboard")
    stopped = database.stop_embedded(state_dir(cfg))
    print("stopped" if stopped else "not running")


@db_app.command("migrate")
def db_migrate(config: ConfigOpt = None) -> None:
    """Apply pending schema migrations and create CDR partitions ahead."""
    from switchboard.billing import database

    cfg = _config(config)
    try:
        url = database.resolve_url(cfg.database.url, state_dir(cfg))
        applied = database.migrate(url)
        version = database.schema_version(url)
    except database.DatabaseError as exc:
        raise fail(str(exc), EXIT_DB) from None
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))}; schema version {version}")
    else:
        print(f"schema up to date (version {version})")


@db_app.command("backup")
def db_backup(
    config: ConfigOpt = None,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="File (.sql.gz) or directory; default <state>/backups."),
    ] = None,
    keep: Annotated[int | None, typer.Option(help="Backups kept in the directory.")] = None,
) -> None:
    """Dump the billing database with pg_dump, gzip it, apply retention."""
    from switchboard.billing import backup

    cfg = _config(config)
    url = database_url(cfg)
    target = out_path or Path(cfg.billing.backup_dir or state_dir(cfg) / "backups")
    try:
        path = backup.backup(
            url,
            target,
            keep=keep or cfg.billing.backup_keep,
            bin_dir=Path(cfg.billing.pg_bin_dir) if cfg.billing.pg_bin_dir else None,
        )
    except backup.BackupError as exc:
        raise fail(str(exc), 1) from None
    print(path)


@db_app.command("restore")
def db_restore(
    file: Annotated[Path, typer.Argument(help="A backup made by `switchboard db backup`.")],
    config: ConfigOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Replace the billing database with a backup (all or nothing)."""
    from switchboard.billing import backup

    if not file.exists():
        raise fail(f"{file}: no such backup file")
    if not yes and not typer.confirm(f"Replace the billing data with {file}?"):
        raise fail("restore cancelled, nothing changed", 1)
    cfg = _config(config)
    url = database_url(cfg)
    try:
        backup.restore(
            url, file, bin_dir=Path(cfg.billing.pg_bin_dir) if cfg.billing.pg_bin_dir else None
        )
    except backup.BackupError as exc:
        raise fail(str(exc), 1) from None
    print(f"restored {file}")


# -- rates --------------------------------------------------------------------------------
@rates_app.command("import")
def rates_import(
    file: Annotated[Path, typer.Argument(help="CSV deck with a header row (prefix,rate,...).")],
    config: ConfigOpt = None,
    carrier: Annotated[str | None, typer.Option(help="Buy deck of this carrier.")] = None,
    account: Annotated[str | None, typer.Option(help="Sell deck of this account.")] = None,
    deck: Annotated[str | None, typer.Option(help="Named sell deck (default: 'default').")] = None,
    replace: Annotated[
        bool, typer.Option(help="Remove the deck's other rows first (full deck replacement).")
    ] = False,
) -> None:
    """Import a CSV rate deck; any bad row rejects the whole file (errors name the lines)."""
    from switchboard.billing.rates import DeckImportError, import_deck
    from switchboard.rating import DeckError

    if carrier and account:
        raise fail("--carrier and --account are exclusive")
    try:
        fh = file.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror}") from None
    with fh, connect(config) as conn:
        try:
            result = import_deck(
                conn, fh, carrier=carrier, account=account, deck=deck, replace=replace
            )
        except (DeckError, DeckImportError) as exc:
            raise fail(f"{file}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise fail(f"{file}: not UTF-8 text: {exc}") from None
    decks = ", ".join(f"{name} ({n})" for name, n in sorted(result.decks.items()))
    print(f"imported {result.rows} rates into {decks}")


@rates_app.command("rerate")
def rates_rerate(
    since: Annotated[str, typer.Option(help="Re-rate CDRs started at or after this time.")],
    until: Annotated[str | None, typer.Option(help="... and before this time.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Re-price CDRs with the current decks; debited balances get ledger adjustments."""
    from switchboard.billing.rates import rerate

    start = parse_when(since)
    end = parse_when(until) if until else None
    with connect(config) as conn:
        result = rerate(conn, start, end)
    print(
        f"re-rated {result.cdrs} CDRs: {result.changed} changed, {result.adjustments} balance"
        f" adjustments totalling {result.adjusted_amount}"
    )


RATE_COLUMNS = (
    Column("deck", flex=True),
    Column("direction", "kind", default=False),
    Column("prefix"),
    Column("rate", "rate/min", justify="right"),
    Column("connect_fee", "connect", justify="right"),
    Column("increment", "incr."),
    Column("min_duration", "min s", default=False, justify="right"),
    Column("effective_from", "from (UTC)", default=False),
    Column("effective_to", "to (UTC)", default=False),
    Column("description", flex=True),
)


@rates_app.command("list")
def rates_list(
    config: ConfigOpt = None,
    deck: Annotated[str | None, typer.Option(help="Only this deck.")] = None,
    prefix: Annotated[
        str, typer.Option(help="Rates under this prefix, and those a number with it matches.")
    ] = "",
    limit: Annotated[int, typer.Option(min=1, max=10_000_000)] = 1000,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """The rates of every deck (or one), by deck and prefix."""
    from switchboard.billing.rates import list_rates

    chosen = _form(wide, as_json, as_csv)
    if prefix and not prefix.isdigit():
        raise fail(f"--prefix must be digits, got {prefix!r}")
    with connect(config) as conn:
        rows = list_rates(conn, deck, prefix, limit)
    render(rows, RATE_COLUMNS, chosen)


# -- accounts -----------------------------------------------------------------------------
ACCOUNT_COLUMNS = (
    Column("name", flex=True),
    Column("kind"),
    Column("balance", justify="right"),
    Column("reserved", justify="right"),
    Column("available", justify="right"),
    Column("credit_limit", "credit limit", default=False, justify="right"),
    Column("low_balance", "low balance", default=False, justify="right"),
    Column("currency", "cur."),
    Column("deck", flex=True),
    Column("identities", "ids", default=False, justify="right"),
    Column("created_at", "created (UTC)", default=False),
)
TRANSACTION_COLUMNS = (
    Column("at", "at (UTC)"),
    Column("kind"),
    Column("amount", justify="right"),
    Column("reference", flex=True),
)


@accounts_app.command("list")
def accounts_list(
    config: ConfigOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Every account: balance, reserved by calls in progress, what is still available."""
    from switchboard.billing.accounts import list_accounts

    chosen = _form(wide, as_json, as_csv)
    with connect(config) as conn:
        rows = list_accounts(conn)
    render(rows, ACCOUNT_COLUMNS, chosen)


@accounts_app.command("create")
def accounts_create(
    name: str,
    config: ConfigOpt = None,
    kind: Annotated[str, typer.Option(help="prepaid or postpaid.")] = "prepaid",
    credit_limit: Annotated[str, typer.Option(help="Postpaid: how far below 0.")] = "0",
    low_balance: Annotated[str, typer.Option(help="Low-balance event below this.")] = "0",
    currency: str = "USD",
    deck: Annotated[str | None, typer.Option(help="Sell deck (default: 'default').")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="Source IP or CIDR (repeatable).")] = None,
    gateway: Annotated[list[str] | None, typer.Option(help="Gateway name (repeatable).")] = None,
    caller: Annotated[list[str] | None, typer.Option(help="Caller id (repeatable).")] = None,
) -> None:
    """Create an account and how calls are matched to it."""
    from switchboard.billing.accounts import AccountError, create_account

    with connect(config) as conn:
        try:
            create_account(
                conn,
                name,
                kind=kind,
                credit_limit=credit_limit,
                low_balance=low_balance,
                currency=currency,
                deck=deck,
                ips=ip or [],
                gateways=gateway or [],
                callers=caller or [],
            )
        except AccountError as exc:
            raise fail(str(exc)) from None
    print(f"created {kind} account {name}")


@accounts_app.command("topup")
def accounts_topup(
    name: str,
    amount: str,
    config: ConfigOpt = None,
    note: Annotated[str, typer.Option(help="Reference kept in the ledger.")] = "",
) -> None:
    """Add funds to an account (a negative amount corrects a mistake)."""
    from switchboard.billing.accounts import AccountError, topup

    with connect(config) as conn:
        try:
            balance = topup(conn, name, amount, note)
        except AccountError as exc:
            raise fail(str(exc)) from None
    print(f"{name}: balance {balance}")


@accounts_app.command("show")
def accounts_show(
    name: str,
    config: ConfigOpt = None,
    wide: WideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Balance, reservations, identities and recent transactions of an account."""
    from switchboard.billing.accounts import AccountError, show

    chosen = _form(wide, as_json, False)
    with connect(config) as conn:
        try:
            view = show(conn, name)
        except AccountError as exc:
            raise fail(str(exc)) from None
    if chosen is Form.JSON:
        data = {
            k: _jsonable(getattr(view, k))
            for k in (
                "name",
                "kind",
                "balance",
                "credit_limit",
                "reserved",
                "available",
                "low_balance",
                "currency",
                "deck",
            )
        }
        data["identities"] = [{"kind": k, "value": v} for k, v in view.identities]
        data["transactions"] = [
            {"at": _jsonable(a), "kind": k, "amount": str(m), "reference": n}
            for a, k, m, n in view.transactions
        ]
        print(json.dumps(data, indent=2))
        return
    out.print(
        f"[bold]{view.name}[/bold] ({view.kind}, {view.currency}, deck {view.deck or 'default'})"
    )
    out.print(
        f"balance {view.balance}  reserved {view.reserved}\n"
        f"credit limit {view.credit_limit}  available {view.available}"
    )
    for k, v in view.identities:
        out.print(f"  {k}: {v}")
    txs = [
        dict(zip(("at", "kind", "amount", "reference"), t, strict=True)) for t in view.transactions
    ]
    render(txs, TRANSACTION_COLUMNS, chosen)


# -- cdr ----------------------------------------------------------------------------------
CDR_COLUMNS = (
    Column("start_time", "start (UTC)"),
    Column("call_id", "call id", id=True),
    Column("sip_call_id", "SIP Call-ID", default=False),
    Column("caller_id", "caller", default=False),
    Column("destination"),
    Column("disposition", default=False),
    Column("sip_code", "SIP", justify="right"),
    Column("hangup_cause", "hangup cause", default=False),
    Column("duration", default=False, justify="right"),
    Column("billsec", justify="right"),
    Column("pdd_ms", "PDD ms", default=False, justify="right"),
    Column("account", flex=True),
    Column("carrier", default=False),
    Column("rate", default=False, justify="right"),
    Column("cost", justify="right"),
    Column("buy_cost", "buy cost", default=False, justify="right"),
    Column("rating_status", "rating", default=False),
    Column("originating_leg", "A-leg", default=False),
    Column("trunk", default=False),
    Column("emergency", default=False),
    Column("verstat", default=False),
    Column("attestation", "attest", default=False),
)


@cdr_app.command("list")
def cdr_list(
    config: ConfigOpt = None,
    since: Annotated[str | None, typer.Option(help="Date, time or age (24h, 7d).")] = None,
    until: Annotated[str | None, typer.Option(help="Date, time or age.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000)] = 100,
    wide: WideOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, every column.")] = False,
    as_csv: CsvOpt = False,
) -> None:
    """The newest CDRs first, with their rating."""
    from switchboard.billing.reports import list_cdrs

    chosen = _form(wide, as_json, as_csv)
    start = parse_when(since) if since else None
    end = parse_when(until) if until else None
    with connect(config) as conn:
        rows = list_cdrs(conn, start, end, limit)
    render(rows, CDR_COLUMNS, chosen, json_lines=True)


# -- report, invoice ----------------------------------------------------------------------
def report_cmd(
    config: ConfigOpt = None,
    by: Annotated[
        str, typer.Option(help="carrier, destination, account, trunk, period or total.")
    ] = "total",
    since: Annotated[str | None, typer.Option(help="Date, time or age (24h, 7d).")] = None,
    until: Annotated[str | None, typer.Option(help="Date, time or age.")] = None,
    period: Annotated[str, typer.Option(help="With --by period: hour, day or month.")] = "day",
    wide: WideOpt = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """ASR, NER, ACD, PDD, minutes, cost, revenue and margin."""
    from switchboard.billing.reports import report

    chosen = _form(wide, as_json, as_csv)
    if by not in ("carrier", "destination", "account", "trunk", "period", "total"):
        raise fail(
            f"--by must be carrier, destination, account, trunk, period or total, got {by!r}"
        )
    if period not in ("hour", "day", "month"):
        raise fail(f"--period must be hour, day or month, got {period!r}")
    start = parse_when(since) if since else None
    end = parse_when(until) if until else None
    with connect(config) as conn:
        rows = report(conn, by, start, end, period)  # type: ignore[arg-type]
    render([r.as_dict() for r in rows], _report_columns(by), chosen)


def _report_columns(by: str) -> tuple[Column, ...]:
    return (
        Column("key", by, flex=True),
        Column("seizures", "calls", justify="right"),
        Column("answered", default=False, justify="right"),
        Column("asr", "ASR %", justify="right"),
        Column("ner", "NER %", default=False, justify="right"),
        Column("acd", "ACD s", justify="right"),
        Column("pdd_ms", "PDD ms", justify="right"),
        Column("minutes", justify="right"),
        Column("cost", default=False, justify="right"),
        Column("revenue", justify="right"),
        Column("margin", justify="right"),
        Column("unmatched", "unrated", default=False, justify="right"),
    )


def invoice_cmd(
    month: Annotated[str, typer.Option(help="The month to invoice, YYYY-MM (UTC).")],
    config: ConfigOpt = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("invoices"),
) -> None:
    """Per-account invoices for a month: CSV and HTML, totals by destination."""
    from switchboard.billing.invoice import InvoiceError, month_bounds, write_invoices

    try:
        month_bounds(month)
    except InvoiceError as exc:
        raise fail(str(exc)) from None
    with connect(config) as conn:
        invoices = write_invoices(conn, month, out_dir)
    for inv in invoices:
        print(
            f"{inv.number} {inv.account}: {inv.total} {inv.currency} -> {inv.csv_path}, {inv.html_path}"
        )
    if not invoices:
        print(f"no calls to invoice in {month}")


# -- cdr retention (docs/billing.md, "CDR retention and archives") -------------------------
def _archive_dir(cfg: Config, given: Path | None) -> Path:
    return given or Path(cfg.billing.archive_dir or state_dir(cfg) / "archive")


@cdr_app.command("archive")
def cdr_archive(
    config: ConfigOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--dir", help="Archive directory (default [billing] archive_dir)."),
    ] = None,
    retention_months: Annotated[
        int | None,
        typer.Option(
            min=2, help="Months kept, the running one included ([billing] retention_months)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="List what would be archived; change nothing.")
    ] = False,
) -> None:
    """Archive the CDR months older than the retention: compressed CSV plus a SHA-256
    manifest each, verified, then the month's partition dropped. Safe to run from cron:
    nothing due, nothing done; an interrupted run is finished by the next."""
    from switchboard.billing.retention import ArchiveError, archive_partition, due

    cfg = _config(config)
    months = retention_months or cfg.billing.retention_months
    target = _archive_dir(cfg, out_dir)
    with connect(config) as conn:
        names = due(conn, months, adopt=not dry_run)
        if dry_run:
            for name in names:
                print(f"would archive {name}")
            print(f"{len(names)} partitions older than {months} months")
            return
        done = 0
        for name in names:
            try:
                result = archive_partition(conn, name, target)
            except (ArchiveError, OSError) as exc:
                raise fail(f"{name}: {exc}", 1) from None
            done += 1
            print(
                f"archived {name}: {result.rows} CDRs -> {result.csv_path} sha256 {result.sha256}"
            )
    print(f"{done} partitions archived (retention {months} months)")


@cdr_app.command("restore-archive")
def cdr_restore_archive(
    archive: Annotated[
        str, typer.Argument(help="Manifest file, month (2024-01) or table (cdr_2024_01).")
    ],
    config: ConfigOpt = None,
    archive_dir: Annotated[
        Path | None, typer.Option("--dir", help="Where to look for a month's manifest.")
    ] = None,
) -> None:
    """Bring an archived month back into the database, after checking the file against its
    manifest (SHA-256, rows, sums); a file that does not match is refused."""
    from switchboard.billing.retention import ArchiveError, find_manifest, restore

    cfg = _config(config)
    manifest = find_manifest(archive, _archive_dir(cfg, archive_dir))
    if not manifest.exists():
        raise fail(f"{manifest}: no such manifest")
    with connect(config) as conn:
        try:
            rows = restore(conn, manifest)
        except ArchiveError as exc:
            raise fail(str(exc), 1) from None
    print(f"restored {rows} CDRs from {manifest}")


@cdr_app.command("export")
def cdr_export(
    since: Annotated[str, typer.Option(help="From this date or time (UTC unless given).")],
    until: Annotated[str, typer.Option(help="Until (excluded) this date or time.")],
    config: ConfigOpt = None,
    number: Annotated[
        str | None, typer.Option(help="Only calls from or to this number (+ optional).")
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="CSV file; default stdout.")
    ] = None,
) -> None:
    """Every column of the CDRs in a time range, as CSV: the answer to a records request.
    Each export is written to the audit trail (who, when, range, number, rows)."""
    from switchboard.billing.retention import ArchiveError, export, normalise_number

    start, end = parse_when(since), parse_when(until)
    if end <= start:
        raise fail("--until must be after --since")
    if number is not None:
        try:
            normalise_number(number)
        except ArchiveError as exc:
            raise fail(str(exc)) from None
    with connect(config) as conn:
        if out_path is None:
            rows = export(conn, sys.stdout, start, end, number)
        else:
            with out_path.open("w", newline="", encoding="utf-8") as fh:
                rows = export(conn, fh, start, end, number)
    err.print(f"exported {rows} CDRs", highlight=False)


# -- number portability (docs/compliance.md, "Number portability") -------------------------
@portability_app.command("import")
def portability_import(
    file: Annotated[
        Path, typer.Argument(help="CSV with a header row: number,routing_number[,description].")
    ],
    config: ConfigOpt = None,
    replace: Annotated[
        bool, typer.Option(help="Remove every other ported number first (full refresh).")
    ] = False,
) -> None:
    """Import ported numbers; any bad row rejects the whole file (errors name the lines)."""
    from switchboard.billing.portability import import_ported
    from switchboard.rating import DeckError

    try:
        fh = file.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror}") from None
    with fh, connect(config) as conn:
        try:
            result = import_ported(conn, fh, replace=replace)
        except DeckError as exc:
            raise fail(f"{file}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise fail(f"{file}: not UTF-8 text: {exc}") from None
    print(f"imported {result.rows} ported numbers; {result.total} in the table")


@portability_app.command("lookup")
def portability_lookup(number: str, config: ConfigOpt = None) -> None:
    """The routing number of a number, or 'not ported'."""
    from switchboard.billing.portability import lookup_sync
    from switchboard.rating.portability import canonical

    if canonical(number) is None:
        raise fail(f"not a number: {number!r}")
    with connect(config) as conn:
        routing = lookup_sync(conn, number)
    print(f"{canonical(number)}: " + (f"routing number {routing}" if routing else "not ported"))


# -- lawful recording (docs/compliance.md, "Lawful recording") ----------------------------
def _intercept_dir(cfg: Config, given: Path | None) -> Path:
    return given or Path(cfg.intercept.dir or state_dir(cfg) / "intercept")


@intercept_app.command("add")
def intercept_add(
    number: str,
    warrant: Annotated[str, typer.Option(help="Reference of the order (required).")],
    config: ConfigOpt = None,
    mode: Annotated[str, typer.Option(help="file (protected directory) or siprec.")] = "file",
    until: Annotated[str | None, typer.Option(help="Record until this date or time.")] = None,
) -> None:
    """Record the calls from or to NUMBER (media nodes pick it up within [intercept]
    refresh seconds)."""
    from switchboard.rating.portability import canonical

    digits = canonical(number)
    if digits is None:
        raise fail(f"not a number: {number!r}")
    if mode not in ("file", "siprec"):
        raise fail(f"--mode must be file or siprec, got {mode!r}")
    if not warrant.strip():
        raise fail("--warrant must name the order")
    end = parse_when(until) if until else None
    with connect(config) as conn:
        conn.execute(
            "INSERT INTO intercept_target (number, warrant, mode, until) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (number) DO UPDATE SET warrant = EXCLUDED.warrant,"
            " mode = EXCLUDED.mode, until = EXCLUDED.until",
            (digits, warrant.strip(), mode, end),
        )
    print(f"target {digits} ({mode}, warrant {warrant.strip()})")


@intercept_app.command("remove")
def intercept_remove(number: str, config: ConfigOpt = None) -> None:
    """Stop recording a number's calls (recordings made stay)."""
    from switchboard.rating.portability import canonical

    digits = canonical(number) or number
    with connect(config) as conn:
        gone = conn.execute("DELETE FROM intercept_target WHERE number = %s", (digits,)).rowcount
    if not gone:
        raise fail(f"{digits} is not a target", 1)
    print(f"removed {digits}")


@intercept_app.command("list")
def intercept_list(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """The target list (the reading is written to the audit trail)."""
    from psycopg.rows import dict_row

    from switchboard.billing.retention import audit

    with connect(config) as conn:
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(
                "SELECT number, warrant, mode, until, created_at FROM intercept_target"
                " ORDER BY number"
            )
            .fetchall()
        )
        audit(conn, "intercept_target", "read", "", {"targets": len(rows)})
    if as_json:
        print(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], indent=2))
        return
    for r in rows:
        until = f" until {_jsonable(r['until'])}" if r["until"] else ""
        print(f"{r['number']}  {r['mode']}  warrant {r['warrant']}{until}")
    if not rows:
        print("no targets")


@intercept_app.command("recordings")
def intercept_recordings(
    config: ConfigOpt = None,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Recordings directory ([intercept] dir).")
    ] = None,
) -> None:
    """List the recordings of the protected directory and verify its hash chain (exit 1
    if a recording was removed, altered or reordered). The access is audited."""
    from switchboard.billing.retention import audit
    from switchboard.media.intercept import verify_chain

    cfg = _config(config)
    where = _intercept_dir(cfg, directory)
    entries, problems = verify_chain(where)
    with connect(config) as conn:
        audit(conn, "recording", "list", str(where),
              {"entries": len(entries), "intact": not problems})  # fmt: skip
    for e in entries:
        print(f"{e.get('seq')}  {e.get('at')}  {e.get('wav')}  sha256 {e.get('wav_sha256')}")
    for p in problems:
        err.print(f"[red]{p}[/red]", highlight=False)
    if problems:
        raise typer.Exit(1)
    print(f"{len(entries)} recordings, hash chain intact")
