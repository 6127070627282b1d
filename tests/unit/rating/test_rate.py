"""Pricing rules (docs/billing.md, "Rating rules"): increments, minimum, connect fee, rounding."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.rating import (
    Increment,
    Rate,
    RatingError,
    billable_seconds,
    max_duration,
    price,
)


def rate(r: str, inc: str = "1/1", fee: str = "0", minimum: int = 0) -> Rate:
    return Rate("44", D(r), D(fee), Increment.parse(inc), minimum)


@pytest.mark.parametrize(
    ("inc", "billsec", "billed"),
    [
        ("60/60", 1, 60),
        ("60/60", 60, 60),
        ("60/60", 61, 120),
        ("1/1", 1, 1),
        ("1/1", 59, 59),
        ("30/6", 1, 30),
        ("30/6", 30, 30),
        ("30/6", 31, 36),
        ("30/6", 37, 42),
        ("60/1", 90, 90),
        ("60/1", 5, 60),
        ("6", 7, 12),
    ],
)
def test_increments(inc: str, billsec: int, billed: int) -> None:
    assert billable_seconds(rate("1", inc), billsec) == billed


def test_unanswered_call_is_free_even_with_connect_fee_and_minimum() -> None:
    charge = price(rate("0.10", "60/60", fee="0.20", minimum=60), 0)
    assert (charge.billed_seconds, charge.cost) == (0, D("0.0000"))


def test_minimum_duration_applies_after_increments() -> None:
    assert billable_seconds(rate("1", "1/1", minimum=30), 5) == 30
    assert billable_seconds(rate("1", "1/1", minimum=30), 31) == 31
    assert billable_seconds(rate("1", "6/6", minimum=20), 5) == 20


# Worked examples (how carriers' decks are priced), rounded once per call.
@pytest.mark.parametrize(
    ("r", "inc", "fee", "billsec", "cost"),
    [
        ("0.1", "60/60", "0.2", 1, "0.3000"),
        ("0.6", "1/1", "0", 90, "0.9000"),  # RT_1CNT_PER_SEC: 0.01/s
        ("0.4", "30/30", "0.8", 45, "1.2000"),
        ("0.50", "1/1", "0", 60, "0.5000"),  # not 0.4980 (ivozprovider#692)
        ("0.05", "1/1", "0", 1, "0.0008"),  # 0.000833.. rounds half up once
        ("0.013", "30/6", "0", 31, "0.0078"),
        ("1.2345", "1/1", "0.015", 7, "0.1590"),  # 0.015 + 0.144025 = 0.159025
    ],
)
def test_worked_examples(r: str, inc: str, fee: str, billsec: int, cost: str) -> None:
    assert price(rate(r, inc, fee), billsec).cost == D(cost)


def test_exact_cost_is_kept_unrounded() -> None:
    charge = price(rate("0.05"), 1)
    assert charge.exact == D("0.05") / 60
    assert charge.cost == D("0.0008")


def test_one_rounding_per_call_not_per_increment() -> None:
    # 120 one-second increments of 0.50/60 each: per-increment rounding to 4 places gives
    # 120 * 0.0083 = 0.9960; rounding once gives exactly 1.0000.
    assert price(rate("0.50"), 120).cost == D("1.0000")


def test_decimals_are_configurable() -> None:
    assert price(rate("0.05"), 1, decimals=6).cost == D("0.000833")


def test_bad_rates_are_rejected_with_the_reason() -> None:
    with pytest.raises(RatingError, match="digits"):
        Rate("44a", D(1))
    with pytest.raises(RatingError, match="negative"):
        Rate("44", D(-1))
    with pytest.raises(RatingError, match="N/M"):
        Increment.parse("x/6")
    with pytest.raises(RatingError, match="positive"):
        Increment.parse("0/6")


def test_effective_window() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = datetime(2026, 2, 1, tzinfo=UTC)
    r = Rate("1", D(1), effective_from=t0, effective_to=t1)
    assert not r.active_at(datetime(2025, 12, 31, 23, 59, tzinfo=UTC))
    assert r.active_at(t0)
    assert not r.active_at(t1)


def test_max_duration_is_an_increment_boundary_within_budget() -> None:
    r = rate("0.60", "60/60", fee="0.10")  # 0.01/s, whole minutes
    # 1.00 available: 0.10 fee + 0.90 = 90 s affordable -> one whole minute only.
    assert max_duration(r, D("1.00"), cap=7200) == 60
    assert max_duration(r, D("1.30"), cap=7200) == 120
    assert max_duration(r, D("0.69"), cap=7200) == 0
    assert max_duration(r, D("1000"), cap=300) == 300
    assert max_duration(rate("0"), D("0"), cap=300) == 300


@given(
    r=st.decimals(min_value=D("0.0001"), max_value=D("5"), places=4),
    fee=st.decimals(min_value=D("0"), max_value=D("1"), places=2),
    initial=st.integers(1, 60),
    step=st.integers(1, 60),
    minimum=st.integers(0, 120),
    available=st.decimals(min_value=D("0"), max_value=D("50"), places=4),
)
def test_max_duration_never_overspends_and_is_maximal(
    r: D, fee: D, initial: int, step: int, minimum: int, available: D
) -> None:
    rt = Rate("1", r, fee, Increment(initial, step), minimum)
    cap = 36_000
    d = max_duration(rt, available, cap)
    if d == 0:
        assert price(rt, 1).cost > available
        return
    assert price(rt, d).cost <= available
    if d < cap:
        # One more second starts a new increment that is no longer covered, exactly or
        # once rounded (the budget is judged on exact money, the debit on rounded money).
        more = price(rt, d + 1)
        assert more.exact > available or more.cost > available
