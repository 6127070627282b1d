"""Longest-prefix match with effective dates; CSV deck parsing with line-numbered errors."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from switchboard.rating import DeckError, Increment, Rate, RateDeck, parse_deck, prefixes_of

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)


def test_prefixes_longest_first() -> None:
    assert prefixes_of("+4420") == ["4420", "442", "44", "4"]
    assert prefixes_of("echo") == []
    assert len(prefixes_of("1" * 30)) == 16


def test_overlapping_prefixes_longest_wins() -> None:
    deck = RateDeck([Rate("4", D("0.5")), Rate("44", D("0.1")), Rate("447", D("0.3"))])
    assert deck.lookup("447700900123", JAN).rate == D("0.3")  # type: ignore[union-attr]
    assert deck.lookup("442079460000", JAN).rate == D("0.1")  # type: ignore[union-attr]
    assert deck.lookup("49301234", JAN).rate == D("0.5")  # type: ignore[union-attr]
    assert deck.lookup("33123", JAN) is None
    assert deck.lookup("conf-1", JAN) is None


def test_effective_dates_pick_the_version_in_force() -> None:
    deck = RateDeck(
        [
            Rate("44", D("0.10"), effective_from=JAN),
            Rate("44", D("0.08"), effective_from=FEB),
            Rate("447", D("0.30"), effective_from=MAR),
        ]
    )
    assert deck.lookup("447700", datetime(2026, 1, 15, tzinfo=UTC)).rate == D("0.10")  # type: ignore[union-attr]
    assert deck.lookup("447700", datetime(2026, 2, 15, tzinfo=UTC)).rate == D("0.08")  # type: ignore[union-attr]
    # The longer prefix only exists from March on; before that the shorter one applies.
    assert deck.lookup("447700", MAR).rate == D("0.30")  # type: ignore[union-attr]
    assert deck.lookup("447700", datetime(2025, 12, 31, tzinfo=UTC)) is None


def test_expired_longer_prefix_falls_back_to_shorter() -> None:
    deck = RateDeck([Rate("44", D("0.1")), Rate("447", D("0.3"), effective_to=FEB)])
    assert deck.lookup("4477", JAN).rate == D("0.3")  # type: ignore[union-attr]
    assert deck.lookup("4477", FEB).rate == D("0.1")  # type: ignore[union-attr]


def test_parse_deck_all_columns() -> None:
    rows = parse_deck(
        [
            "prefix,rate,connect_fee,increment,min_duration,effective_from,description,carrier\n",
            "+44,0.0100,0.05,30/6,30,2026-02-01,UK,acme\n",
            "1,0.005,,,,,,\n",
        ]
    )
    first = rows[0]
    assert first.line == 2 and first.carrier == "acme"
    assert first.rate == Rate("44", D("0.0100"), D("0.05"), Increment(30, 6), 30, FEB, None, "UK")
    assert rows[1].rate == Rate("1", D("0.005"))


def test_parse_deck_reports_every_bad_line_and_imports_nothing() -> None:
    text = [
        "prefix,rate,increment\n",
        "44,0.1,60/60\n",
        "4x,0.1,\n",
        "45,abc,\n",
        "46,0.1,0/6\n",
        "44,0.2,\n",
        "47,0.1\n",
    ]
    with pytest.raises(DeckError) as info:
        parse_deck(text)
    lines = [line for line, _ in info.value.problems]
    assert lines == [3, 4, 5, 6, 7]
    assert "line 4: rate must be a decimal number" in str(info.value)
    assert "duplicate of line 2" in str(info.value)


def test_parse_deck_header_errors() -> None:
    with pytest.raises(DeckError, match="missing column"):
        parse_deck(["prefix,cost\n", "44,1\n"])
    with pytest.raises(DeckError, match="unknown column"):
        parse_deck(["prefix,rate,colour\n"])
    with pytest.raises(DeckError, match="empty file"):
        parse_deck([])
