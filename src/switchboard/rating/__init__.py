"""Pure rating: Decimal money, longest-prefix match, billing increments, connect fees.

No IO, clock or database here (the layering rule, docs/architecture.md): callers pass the
time of the call.
"""

from switchboard.rating.deck import (
    DeckError,
    DeckRow,
    RateDeck,
    normalise_number,
    parse_deck,
    prefixes_of,
)
from switchboard.rating.rate import (
    Charge,
    Increment,
    Rate,
    RatingError,
    billable_seconds,
    max_duration,
    price,
    round_money,
)

__all__ = [
    "Charge",
    "DeckError",
    "DeckRow",
    "Increment",
    "Rate",
    "RateDeck",
    "RatingError",
    "billable_seconds",
    "max_duration",
    "normalise_number",
    "parse_deck",
    "prefixes_of",
    "price",
    "round_money",
]
