"""Customer accounts and carriers: create, top up, show (``switchboard accounts ...``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

import psycopg
from psycopg.rows import dict_row


class AccountError(ValueError):
    """Bad account input; nothing was changed."""


@dataclass(frozen=True, slots=True)
class AccountView:
    name: str
    kind: str
    balance: Decimal
    credit_limit: Decimal
    reserved: Decimal
    available: Decimal
    low_balance: Decimal
    currency: str
    deck: str | None
    identities: list[tuple[str, str]] = field(default_factory=list)
    transactions: list[tuple[datetime, str, Decimal, str]] = field(default_factory=list)


def _money(value: str | Decimal, what: str) -> Decimal:
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError):
        raise AccountError(f"{what} must be a decimal number, got {value!r}") from None
    if not amount.is_finite():
        raise AccountError(f"{what} must be finite, got {value!r}")
    return amount


def create_account(
    conn: psycopg.Connection,
    name: str,
    *,
    kind: str = "prepaid",
    credit_limit: str | Decimal = "0",
    low_balance: str | Decimal = "0",
    currency: str = "USD",
    deck: str | None = None,
    ips: list[str] | tuple[str, ...] = (),
    gateways: list[str] | tuple[str, ...] = (),
    callers: list[str] | tuple[str, ...] = (),
) -> None:
    """Create an account with the ways calls are matched to it; all or nothing."""
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise AccountError(f"account name must be letters, digits, '-', '_' or '.', got {name!r}")
    if kind not in ("prepaid", "postpaid"):
        raise AccountError(f"kind must be prepaid or postpaid, got {kind!r}")
    limit = _money(credit_limit, "credit limit")
    if limit < 0:
        raise AccountError("credit limit must not be negative")
    if kind == "prepaid" and limit:
        raise AccountError("a prepaid account has no credit limit; use --kind postpaid")
    nets = []
    for ip in ips:
        try:
            nets.append(str(ipaddress.ip_network(ip, strict=False)))
        except ValueError:
            raise AccountError(f"not an IP address or network: {ip!r}") from None
    with conn.transaction():
        if conn.execute("SELECT 1 FROM account WHERE name = %s", (name,)).fetchone():
            raise AccountError(f"account {name!r} exists already")
        deck_id = None
        if deck:
            conn.execute(
                "INSERT INTO rate_deck (name, direction) VALUES (%s, 'sell') ON CONFLICT DO NOTHING",
                (deck,),
            )
            row = conn.execute(
                "SELECT id, direction FROM rate_deck WHERE name = %s", (deck,)
            ).fetchone()
            assert row is not None
            if row[1] != "sell":
                raise AccountError(f"deck {deck!r} is a carrier (buy) deck")
            deck_id = row[0]
        (account_id,) = conn.execute(  # type: ignore[misc]
            "INSERT INTO account (name, kind, credit_limit, low_balance, currency, deck_id)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (name, kind, limit, _money(low_balance, "low balance"), currency, deck_id),
        ).fetchone()
        for kind_, values in (("ip", nets), ("gateway", gateways), ("caller", callers)):
            for value in values:
                owner = conn.execute(
                    "SELECT a.name FROM account_identity i JOIN account a ON a.id = i.account_id"
                    " WHERE i.kind = %s AND i.value = %s",
                    (kind_, value.lstrip("+") if kind_ == "caller" else value),
                ).fetchone()
                if owner:
                    raise AccountError(f"{kind_} {value} already belongs to account {owner[0]}")
                conn.execute(
                    "INSERT INTO account_identity (kind, value, net, account_id)"
                    " VALUES (%s, %s, %s, %s)",
                    (
                        kind_,
                        value.lstrip("+") if kind_ == "caller" else value,
                        value if kind_ == "ip" else None,
                        account_id,
                    ),
                )


def topup(
    conn: psycopg.Connection,
    name: str,
    amount: str | Decimal,
    note: str = "",
    at: datetime | None = None,
) -> Decimal:
    """Credit the account (negative amounts correct mistakes); return the new balance."""
    value = _money(amount, "amount")
    if value == 0:
        raise AccountError("amount must not be zero")
    with conn.transaction():
        row = conn.execute(
            "UPDATE account SET balance = balance + %s WHERE name = %s RETURNING id, balance",
            (value, name),
        ).fetchone()
        if row is None:
            raise AccountError(f"no account named {name!r}")
        conn.execute(
            "INSERT INTO account_transaction (account_id, at, amount, kind, note)"
            " VALUES (%s, coalesce(%s, now()), %s, %s, %s)",
            (row[0], at, value, "topup" if value > 0 else "adjust", note),
        )
    return Decimal(row[1])


def show(conn: psycopg.Connection, name: str, transactions: int = 10) -> AccountView:
    cur = conn.cursor(row_factory=dict_row)
    acct = cur.execute(
        "SELECT a.*, d.name AS deck FROM account a LEFT JOIN rate_deck d ON d.id = a.deck_id"
        " WHERE a.name = %s",
        (name,),
    ).fetchone()
    if acct is None:
        raise AccountError(f"no account named {name!r}")
    ids = conn.execute(
        "SELECT kind, value FROM account_identity WHERE account_id = %s ORDER BY kind, value",
        (acct["id"],),
    ).fetchall()
    txs = conn.execute(
        "SELECT at, kind, amount, coalesce(call_id, note) FROM account_transaction"
        " WHERE account_id = %s ORDER BY at DESC, id DESC LIMIT %s",
        (acct["id"], transactions),
    ).fetchall()
    return AccountView(
        name=acct["name"],
        kind=acct["kind"],
        balance=acct["balance"],
        credit_limit=acct["credit_limit"],
        reserved=acct["reserved"],
        available=acct["balance"] + acct["credit_limit"] - acct["reserved"],
        low_balance=acct["low_balance"],
        currency=acct["currency"],
        deck=acct["deck"],
        identities=[(k, v) for k, v in ids],
        transactions=[(a, k, m, n) for a, k, m, n in txs],
    )


def create_carrier(conn: psycopg.Connection, name: str, deck: str | None = None) -> int:
    """Create (or find) a carrier and its buy deck (named after it unless given)."""
    with conn.transaction():
        deck_name = deck or f"carrier:{name}"
        conn.execute(
            "INSERT INTO rate_deck (name, direction) VALUES (%s, 'buy') ON CONFLICT DO NOTHING",
            (deck_name,),
        )
        row = conn.execute(
            "SELECT id, direction FROM rate_deck WHERE name = %s", (deck_name,)
        ).fetchone()
        assert row is not None
        if row[1] != "buy":
            raise AccountError(f"deck {deck_name!r} is a sell deck, not a carrier deck")
        carrier = conn.execute(
            "INSERT INTO carrier (name, deck_id) VALUES (%s, %s) ON CONFLICT (name)"
            " DO UPDATE SET deck_id = coalesce(carrier.deck_id, EXCLUDED.deck_id) RETURNING id",
            (name, row[0]),
        ).fetchone()
        assert carrier is not None
        return int(carrier[0])


def list_accounts(conn: psycopg.Connection) -> list[dict[str, object]]:
    """Every account with its balance and what it may still spend (``accounts list``)."""
    return list(
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT a.name, a.kind, a.balance, a.reserved,"
            " a.balance + a.credit_limit - a.reserved AS available, a.credit_limit,"
            " a.low_balance, a.currency, d.name AS deck, a.created_at,"
            " (SELECT count(*) FROM account_identity i WHERE i.account_id = a.id) AS identities"
            " FROM account a LEFT JOIN rate_deck d ON d.id = a.deck_id ORDER BY a.name"
        )
        .fetchall()
    )
