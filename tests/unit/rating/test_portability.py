"""Ported-number CSV parsing and the Request-URI forms of a ported number (RFC 4694)."""

from __future__ import annotations

import pytest

from switchboard.media.portability import request_user
from switchboard.rating import DeckError
from switchboard.rating.portability import PortedRow, canonical, parse_ported


def test_parse_ported_canonical_numbers_and_descriptions() -> None:
    rows = parse_ported(
        [
            "Number,Routing_Number,description\n",
            "+49 30 1234567,+49 151 99,moved to mobile\n",
            "\n",
            "1 (212) 555-0100,2125559999,\n",
        ]
    )
    assert rows == [
        PortedRow(2, "49301234567", "4915199", "moved to mobile"),
        PortedRow(4, "12125550100", "2125559999", ""),
    ]
    assert canonical("+1-212.555 0100") == "12125550100"
    assert canonical("echo") is None and canonical("+") is None and canonical("1" * 17) is None


def test_parse_ported_reports_every_bad_line() -> None:
    with pytest.raises(DeckError) as caught:
        parse_ported(
            [
                "number,routing_number\n",
                "4930123,4915199\n",
                "49x,4915199\n",
                "4930124,\n",
                "4930123,4915100\n",
                "4930125\n",
            ]
        )
    assert caught.value.problems == [
        (3, "number must be 1-16 digits, got '49x'"),
        (4, "routing_number must be 1-16 digits, got ''"),
        (5, "duplicate of line 2 (same number)"),
        (6, "expected 2 fields, got 1"),
    ]
    with pytest.raises(DeckError, match="missing column"):
        parse_ported(["number,rn\n"])
    with pytest.raises(DeckError, match="empty file"):
        parse_ported([])


def test_request_user_per_gateway_mode() -> None:
    # RFC 4694: npdi says the dip was made, rn carries the routing number (global form
    # when the number is global)
    assert request_user("+4930123", "4930123", "4915199", "rn") == "+4930123;npdi;rn=+4915199"
    assert request_user("4930123", "4930123", "4915199", "rn") == "4930123;npdi;rn=4915199"
    assert request_user("+4930123", "4930123", None, "rn") == "+4930123;npdi"  # not ported
    assert request_user("+4930123", "4930123", "4915199", "prefix") == "49151994930123"
    assert request_user("+4930123", "4930123", None, "prefix") == "+4930123"
    assert request_user("+4930123", "4930123", "4915199", "off") == "+4930123"
    # a leg for another number than the one looked up (a forwarded bridge): unchanged
    assert request_user("+4930999", "4930123", "4915199", "rn") == "+4930999"
    assert request_user("+4930123", "", None, "rn") == "+4930123"  # no dip made
