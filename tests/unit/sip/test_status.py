"""Status codes and reason phrases (RFC 3261 §21)."""

from __future__ import annotations

import pytest

from switchboard.sip.status import StatusCode, reason_phrase


@pytest.mark.parametrize(
    ("code", "phrase"),
    [
        (100, "Trying"),
        (180, "Ringing"),
        (183, "Session Progress"),
        (200, "OK"),
        (202, "Accepted"),
        (404, "Not Found"),
        (408, "Request Timeout"),
        (420, "Bad Extension"),
        (481, "Call/Transaction Does Not Exist"),
        (486, "Busy Here"),
        (487, "Request Terminated"),
        (489, "Bad Event"),
        (503, "Service Unavailable"),
        (513, "Message Too Large"),
        (603, "Decline"),
    ],
)
def test_known_codes_have_rfc_phrases(code: int, phrase: str) -> None:
    assert StatusCode(code).phrase == phrase
    assert reason_phrase(code) == phrase


def test_enum_behaves_as_int() -> None:
    assert StatusCode.BUSY_HERE == 486
    assert StatusCode(486) is StatusCode.BUSY_HERE
    assert f"{int(StatusCode.OK)}" == "200"
    assert StatusCode.RINGING.is_provisional and not StatusCode.RINGING.is_final
    assert StatusCode.DECLINE.is_final


def test_unknown_code_falls_back_to_class_x00() -> None:
    # §8.1.3.2: an unknown response code is treated as the x00 of its class.
    assert reason_phrase(499) == "Bad Request"
    assert reason_phrase(299) == "OK"
    assert reason_phrase(555) == "Push Notification Service Not Supported"
    assert reason_phrase(577) == "Server Internal Error"
    assert reason_phrase(42) == "Unknown"
    with pytest.raises(ValueError):
        StatusCode(499)


def test_every_code_is_unique_and_in_range() -> None:
    codes = [int(c) for c in StatusCode]
    assert len(codes) == len(set(codes))
    assert all(100 <= c <= 699 for c in codes)
    assert all(c.phrase for c in StatusCode)
