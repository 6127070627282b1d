from __future__ import annotations

from datetime import UTC, datetime

import pytest

from switchboard.dialer.contacts import ContactsError, escape_var, parse_contacts
from switchboard.dialer.pacing import Pacer
from switchboard.dialer.policy import (
    CallingWindow,
    DoNotCall,
    Outcome,
    classify,
    next_attempt_delay,
    parse_retry_spec,
    zone,
)


def run_pacer(p: Pacer, duration: float, step: float) -> list[float]:
    sent, t = [], 0.0
    while t < duration:
        while p.take(t):
            sent.append(t)
        t = round(t + step, 9)
    return sent


@pytest.mark.parametrize("cps", [30, 100])
def test_pacer_rate_is_exact_without_drift(cps: int) -> None:
    p = Pacer(cps)
    sent = []
    t = 0.0
    for _ in range(cps * 10):  # ten seconds, waking exactly when due (plus scheduling noise)
        assert p.take(t)
        sent.append(t)
        t = p.next_due(t) + 0.0007  # the runner oversleeps a little each time
    # No drift: the last send is at ~ (n-1)/cps, not (n-1)*(1/cps + 0.7 ms).
    assert sent[-1] == pytest.approx((len(sent) - 1) / cps, abs=0.002)


def test_pacer_does_not_burst_after_stall() -> None:
    p = Pacer(10, burst=1)
    assert p.take(0.0)
    # Blocked for 5 s (concurrency cap): exactly one slot, then paced again.
    assert p.take(5.0)
    assert not p.take(5.05)
    assert p.next_due(5.05) == pytest.approx(5.1)


def test_pacer_burst_bounded() -> None:
    p = Pacer(10, burst=3)
    assert p.take(0.0)
    taken = sum(p.take(10.0) for _ in range(10))
    assert taken == 3


def test_pacer_polling_fine_steps() -> None:
    sent = run_pacer(Pacer(30), duration=2.0, step=0.001)
    assert len(sent) == 60


def test_pacer_rejects_bad_rate() -> None:
    with pytest.raises(ValueError, match="cps must be positive"):
        Pacer(0)


def test_set_rate_no_burst() -> None:
    p = Pacer(1)
    assert p.take(0.0)
    p.set_rate(100, now=0.5)
    assert p.next_due(0.5) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("cause", "answered", "outcome"),
    [
        ("NORMAL_CLEARING", True, Outcome.ANSWERED),
        ("USER_BUSY", False, Outcome.BUSY),
        ("NO_ANSWER", False, Outcome.NOANSWER),
        ("NORMAL_CIRCUIT_CONGESTION", False, Outcome.CONGESTION),
        ("UNALLOCATED_NUMBER", False, Outcome.FAILED),
        (None, False, Outcome.FAILED),
    ],
)
def test_classify(cause: str | None, answered: bool, outcome: Outcome) -> None:
    assert classify(cause, answered=answered) is outcome


def test_retries() -> None:
    rules = parse_retry_spec("busy=2/30,noanswer=3/600")
    assert next_attempt_delay(Outcome.BUSY, 1, rules, max_attempts=5) == 30
    assert next_attempt_delay(Outcome.BUSY, 2, rules, max_attempts=5) is None
    assert next_attempt_delay(Outcome.NOANSWER, 2, rules, max_attempts=2) is None  # global cap
    assert next_attempt_delay(Outcome.ANSWERED, 1, rules, max_attempts=5) is None
    assert next_attempt_delay(Outcome.FAILED, 1, rules, max_attempts=5) is None
    with pytest.raises(ValueError, match="bad retry rule 'bussy=2/30'"):
        parse_retry_spec("bussy=2/30")
    with pytest.raises(ValueError, match="attempts must be"):
        parse_retry_spec("busy=0/30")


def test_calling_window_in_contact_timezone() -> None:
    w = CallingWindow.parse("09:00-21:00", "mon-fri")
    # 2026-11-26 is a Thursday. 14:00 UTC = 09:00 in New York, 23:00 in Tokyo.
    now = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    assert w.allows(now.astimezone(zone("America/New_York")))
    assert not w.allows(now.astimezone(zone("Asia/Tokyo")))
    # Tokyo opens at 09:00 local Friday = 00:00 UTC Friday.
    assert w.next_open(now, zone("Asia/Tokyo")) == datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
    # Saturday in New York: next open is Monday 09:00 EST = 14:00 UTC.
    sat = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    assert w.next_open(sat, zone("America/New_York")) == datetime(2026, 11, 30, 14, 0, tzinfo=UTC)


def test_calling_window_dst() -> None:
    w = CallingWindow.parse("09:00-17:00")
    # London is UTC+1 in July, UTC+0 in January: 08:30 UTC is open in July only.
    assert w.allows(datetime(2026, 7, 1, 8, 30, tzinfo=UTC).astimezone(zone("Europe/London")))
    assert not w.allows(datetime(2026, 1, 7, 8, 30, tzinfo=UTC).astimezone(zone("Europe/London")))


@pytest.mark.parametrize("bad", ["9-17", "17:00-09:00", "25:00-26:00"])
def test_bad_window(bad: str) -> None:
    with pytest.raises(ValueError, match="bad calling window"):
        CallingWindow.parse(bad)


def test_dnc() -> None:
    dnc = DoNotCall(["+44 20 7946 0000", "201XXXXXXX", "# comment", ""])
    assert "442079460000" in dnc
    assert "+442079460000" in dnc
    assert "2015550123" in dnc
    assert "20155501234" not in dnc
    assert "2025550123" not in dnc
    assert len(dnc) == 2
    with pytest.raises(ValueError, match="bad do-not-call"):
        DoNotCall(["12ab"])


def test_contacts_ok() -> None:
    text = "number,caller_id,name,timezone,account_code\n+1 555 0100,1234,Ann,America/Chicago,A1\n5550101,,,,\n"
    cs = parse_contacts(text)
    assert [c.number for c in cs] == ["+15550100", "5550101"]
    assert cs[0].caller_id == "1234" and cs[0].timezone == "America/Chicago"
    assert cs[0].variables == {"account_code": "A1"}
    assert cs[1].variables == {}
    assert cs[1].line == 3


def test_contacts_errors_name_every_line_and_load_nothing() -> None:
    text = "number,timezone\n12,UTC\n5550100,Mars/Base\n5550101,UTC\n5550101,UTC\n"
    with pytest.raises(ContactsError) as exc:
        parse_contacts(text, "c.csv")
    assert [n for n, _ in exc.value.errors] == [2, 3, 5]
    msg = str(exc.value)
    assert "c.csv: 3 bad row(s), nothing loaded" in msg
    assert "line 3: unknown time zone 'Mars/Base'" in msg
    assert "line 5: number 5550101 already on line 4" in msg


def test_contacts_header_errors() -> None:
    with pytest.raises(ContactsError, match="no 'number' column"):
        parse_contacts("phone\n123\n")
    with pytest.raises(ContactsError, match="empty file"):
        parse_contacts("")
    with pytest.raises(ContactsError, match="not a valid channel variable name"):
        parse_contacts("number,bad-name\n5550100,x\n")
    with pytest.raises(ContactsError, match="contains one of"):
        parse_contacts("number,note\n5550100,a}b\n")


def test_escape_var() -> None:
    assert escape_var("a,b") == "a\\,b"
