"""Pricing one call against one rate: increments, minimum duration, connect fee, one rounding.

Theory of operation (how carriers price a call; docs/billing.md, "Rating rules"):

* A rate is quoted **per minute** (``rate``), like the original ``rate_table.rate``.
* Billing increments are written ``A/B``: the first block is ``A`` seconds, every further
  block ``B`` seconds (``60/60`` per minute, ``1/1`` per second, ``30/6`` the common mobile
  scheme). A call of ``billsec`` seconds is billed for ``A`` seconds if ``billsec <= A``,
  otherwise ``A + ceil((billsec - A) / B) * B`` seconds.
* ``min_duration`` is a floor on the billed seconds of an answered call (A2Billing
  ``initblock``, Kazoo ``rate_minimum``); it applies after the increments.
* The connect fee is charged once per answered call. An unanswered call (``billsec == 0``)
  costs nothing: no connect fee, no minimum.
* Money is :class:`decimal.Decimal` end to end. The exact cost is
  ``connect_fee + rate * billed_seconds / 60`` and is rounded **once per call**
  (``ROUND_HALF_UP`` to ``decimals`` places, 4 by default like the original
  ``DECIMAL(10,4)``); per-increment rounding is what makes CGRateS bill 0.4980 for a
  0.50/min minute (ivozprovider#692). The database trigger implements the same formula
  and the tests check both agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation

SECONDS_PER_MINUTE = 60
DEFAULT_DECIMALS = 4
ZERO = Decimal(0)


class RatingError(ValueError):
    """A rate or increment is malformed; the message says which value and why."""


@dataclass(frozen=True, slots=True)
class Increment:
    """Billing increments ``initial/step`` in seconds (``60/60``, ``1/1``, ``30/6``)."""

    initial: int = 1
    step: int = 1

    def __post_init__(self) -> None:
        if self.initial < 1 or self.step < 1:
            raise RatingError(f"increments must be positive seconds, got {self}")

    @classmethod
    def parse(cls, text: str) -> Increment:
        """Parse ``"30/6"`` or a single ``"60"`` (meaning ``60/60``)."""
        first, sep, second = text.strip().partition("/")
        try:
            initial = int(first)
            step = int(second) if sep else initial
        except ValueError:
            raise RatingError(f"increment must be N or N/M seconds, got {text!r}") from None
        return cls(initial, step)

    def __str__(self) -> str:
        return f"{self.initial}/{self.step}"


@dataclass(frozen=True, slots=True)
class Rate:
    """One row of a rate deck: the price of calls to numbers starting with ``prefix``."""

    prefix: str
    rate: Decimal  # per minute
    connect_fee: Decimal = ZERO
    increment: Increment = Increment()
    min_duration: int = 0
    effective_from: datetime | None = None
    effective_to: datetime | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.prefix.isdigit():
            raise RatingError(f"prefix must be digits, got {self.prefix!r}")
        if self.rate < 0 or self.connect_fee < 0:
            raise RatingError(f"rate and connect fee must not be negative (prefix {self.prefix})")
        if self.min_duration < 0:
            raise RatingError(f"min_duration must not be negative (prefix {self.prefix})")

    def active_at(self, when: datetime) -> bool:
        """True when ``when`` is inside ``[effective_from, effective_to)``."""
        if self.effective_from is not None and when < self.effective_from:
            return False
        return self.effective_to is None or when < self.effective_to


@dataclass(frozen=True, slots=True)
class Charge:
    """The price of one call: billed seconds, the exact amount and the amount rounded once."""

    billed_seconds: int
    exact: Decimal
    cost: Decimal


def billable_seconds(rate: Rate, billsec: int) -> int:
    """Seconds billed for an answered call of ``billsec`` seconds (0 if unanswered)."""
    if billsec <= 0:
        return 0
    inc = rate.increment
    if billsec <= inc.initial:
        billed = inc.initial
    else:
        rest = billsec - inc.initial
        billed = inc.initial + -(-rest // inc.step) * inc.step
    return max(billed, rate.min_duration)


def round_money(amount: Decimal, decimals: int = DEFAULT_DECIMALS) -> Decimal:
    """Round once, half up, to ``decimals`` places (PostgreSQL ``round(numeric, n)`` agrees)."""
    return amount.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def price(rate: Rate, billsec: int, decimals: int = DEFAULT_DECIMALS) -> Charge:
    """Price one call. See the module docstring for the rules."""
    billed = billable_seconds(rate, billsec)
    if billed == 0:
        return Charge(0, ZERO, round_money(ZERO, decimals))
    exact = rate.connect_fee + rate.rate * billed / SECONDS_PER_MINUTE
    return Charge(billed, exact, round_money(exact, decimals))


def max_duration(rate: Rate, available: Decimal, cap: int, decimals: int = DEFAULT_DECIMALS) -> int:
    """The longest call (seconds, at most ``cap``) whose rounded cost fits in ``available``.

    0 means not even the first block (plus connect fee) is affordable: refuse the call.
    The result is always an increment boundary, so a call hung up exactly there costs
    what was authorised; a late hangup overspends by at most one increment.
    """
    if cap <= 0 or price(rate, 1, decimals).cost > available:
        return 0
    if rate.rate == 0:
        return cap
    inc = rate.increment
    budget = available - rate.connect_fee
    try:
        affordable = int(
            (budget * SECONDS_PER_MINUTE / rate.rate).to_integral_value(rounding=ROUND_FLOOR)
        )
    except InvalidOperation:  # pragma: no cover - only for absurd magnitudes
        return cap
    if affordable >= cap:
        # The cap is in call seconds; make sure its billed time is affordable too.
        if price(rate, cap, decimals).cost <= available:
            return cap
        affordable = cap
    if affordable < inc.initial:
        best = inc.initial
    else:
        best = inc.initial + (affordable - inc.initial) // inc.step * inc.step
    # Rounding half up can push the boundary a hair over the budget: step back.
    while best > inc.initial and price(rate, best, decimals).cost > available:
        best -= inc.step
    if price(rate, best, decimals).cost > available:
        return 0
    return min(best, cap)
