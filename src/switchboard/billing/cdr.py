"""The call detail record a media node hands to billing at hangup.

Columns follow the original ``cdr`` table (call_id, caller_id, destination, start_time,
answer_time, end_time, duration, billsec, disposition) plus what a carrier needs
(``sip_call_id`` among them: ``call_id`` is one leg, the SIP Call-ID may span several;
docs/billing.md, "Schema"). Rate and cost are not part of the record: the database
computes them at insert (trigger), as in the original system.

Times are timezone-aware UTC. ``start_time`` must be deterministic for a call (the moment
the INVITE arrived): it decides the monthly partition and the rate in force.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

DISPOSITIONS = ("ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CANCEL", "CONGESTION")


class CdrError(ValueError):
    """A CDR cannot be stored as given; the message names the field."""


@dataclass(frozen=True, slots=True)
class Cdr:
    """One call leg. ``call_id`` identifies the leg (a media node uses the channel uuid):
    it is the idempotency key, so two legs must never share it, while a re-sent (spooled)
    record of the same leg must keep it. ``sip_call_id`` is the SIP Call-ID, shared by the
    legs of one call across nodes. ``account`` and ``carrier`` are names (account name from
    the credit authorisation, carrier = the gateway the call left on); ``hangup_cause`` is
    the Q.850 cause name (NORMAL_CLEARING, ALLOTTED_TIMEOUT, ...). ``originating_leg`` is
    set on a bridge's B-leg only: the ``call_id`` of the A-leg that created it (FreeSWITCH's
    ``originating_leg_uuid``); empty on inbound legs and on legs originated with no A-leg.
    The sell side of a call is charged once, on a leg without it (docs/billing.md)."""

    call_id: str
    start_time: datetime
    caller_id: str = ""
    destination: str = ""
    answer_time: datetime | None = None
    end_time: datetime | None = None
    duration: int = 0
    billsec: int = 0
    disposition: str = ""
    sip_code: int | None = None
    hangup_cause: str = ""
    pdd_ms: int | None = None
    account: str = ""
    carrier: str = ""
    direction: str = "outbound"
    codec: str = ""
    node: str = ""
    sip_call_id: str = ""
    originating_leg: str = ""
    trunk: str = ""  # the carrier trunk the call came in on (edge router), inbound legs
    # a ported destination's routing number (digits); rating prices it instead of the
    # dialled number (docs/compliance.md, "Number portability")
    routing_number: str = ""
    # Regulatory (docs/compliance.md): an emergency call (both legs); the edge router's
    # STIR/SHAKEN verdict on the inbound leg (TN-Validation-Passed/-Failed/No-TN-Validation)
    # and the attestation (A/B/C) the caller's PASSporT claimed.
    emergency: bool = False
    verstat: str = ""
    attestation: str = ""

    def __post_init__(self) -> None:
        if not self.call_id:
            raise CdrError("call_id is empty")
        if self.start_time.tzinfo is None:
            raise CdrError(f"start_time of {self.call_id} must be timezone-aware")
        if self.duration < 0 or self.billsec < 0 or self.billsec > max(self.duration, 0) + 1:
            raise CdrError(
                f"{self.call_id}: need 0 <= billsec <= duration, got {self.billsec}/{self.duration}"
            )

    @classmethod
    def from_times(
        cls,
        call_id: str,
        start_time: datetime,
        end_time: datetime,
        answer_time: datetime | None = None,
        **kwargs: Any,
    ) -> Cdr:
        """Build a CDR from its timestamps; duration and billsec are whole seconds rounded
        down, as FreeSWITCH computes them."""
        duration = max(0, math.floor((end_time - start_time).total_seconds()))
        billsec = max(0, math.floor((end_time - answer_time).total_seconds())) if answer_time else 0
        kwargs.setdefault("disposition", "ANSWERED" if answer_time else "NO ANSWER")
        return cls(
            call_id=call_id,
            start_time=start_time,
            answer_time=answer_time,
            end_time=end_time,
            duration=duration,
            billsec=min(billsec, duration),
            **kwargs,
        )

    def to_json(self) -> str:
        """One JSON line (the spool format); fields in declaration order, times in UTC.

        Built field by field rather than with ``dataclasses.asdict``, which deep-copies
        every value: every field is an immutable scalar, and a node writes this line for
        each leg it ends (recovery journal, spool) — asdict was ~5 % of its CPU."""
        data = {name: getattr(self, name) for name in _FIELDS}
        for key in ("start_time", "answer_time", "end_time"):
            if data[key] is not None:
                data[key] = data[key].astimezone(UTC).isoformat()
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str | bytes) -> Cdr:
        data = json.loads(line)
        for key in ("start_time", "answer_time", "end_time"):
            if data.get(key) is not None:
                data[key] = datetime.fromisoformat(data[key])
        return cls(**{k: v for k, v in data.items() if k in _FIELD_SET})


_FIELDS = tuple(f.name for f in fields(Cdr))  # declaration order
_FIELD_SET = frozenset(_FIELDS)
