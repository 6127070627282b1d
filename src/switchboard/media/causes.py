"""Hangup causes: FreeSWITCH cause names and numbers, and their SIP mapping both ways.

Numbers follow ``switch_types.h`` after FreeSWITCH v1.10.8 (private causes moved to
700-7xx and 800-8xx). Q.850 (ITU-T Q.850 §2.2.5) values are 1-127; everything above
is FreeSWITCH-private and reported as 16 in ``variable_hangup_cause_q850``.

* :func:`cause_to_sip` — what we send when we refuse an unanswered inbound call
  (``hangup_cause_to_sip``, mod_sofia.c); unlisted causes map to 480.
* :func:`sip_to_cause` — what a received final response or BYE becomes
  (``sofia_glue_sip_cause_to_freeswitch``); unlisted codes map to NORMAL_UNSPECIFIED.
  A ``Reason: Q.850;cause=N`` header wins over the status code (RFC 3326).
* :func:`reason_header` — the ``Reason`` header FreeSWITCH puts on BYE/CANCEL/final
  responses (RFC 3326).
"""

from __future__ import annotations

import re
from enum import IntEnum


class Cause(IntEnum):
    """FreeSWITCH ``switch_call_cause_t`` (``switch_types.h``; the Q.850 numbers)."""

    NONE = 0
    UNALLOCATED_NUMBER = 1
    NO_ROUTE_TRANSIT_NET = 2
    NO_ROUTE_DESTINATION = 3
    CHANNEL_UNACCEPTABLE = 6
    CALL_AWARDED_DELIVERED = 7
    NORMAL_CLEARING = 16
    USER_BUSY = 17
    NO_USER_RESPONSE = 18
    NO_ANSWER = 19
    SUBSCRIBER_ABSENT = 20
    CALL_REJECTED = 21
    NUMBER_CHANGED = 22
    REDIRECTION_TO_NEW_DESTINATION = 23
    EXCHANGE_ROUTING_ERROR = 25
    DESTINATION_OUT_OF_ORDER = 27
    INVALID_NUMBER_FORMAT = 28
    FACILITY_REJECTED = 29
    RESPONSE_TO_STATUS_ENQUIRY = 30
    NORMAL_UNSPECIFIED = 31
    NORMAL_CIRCUIT_CONGESTION = 34
    NETWORK_OUT_OF_ORDER = 38
    NORMAL_TEMPORARY_FAILURE = 41
    SWITCH_CONGESTION = 42
    ACCESS_INFO_DISCARDED = 43
    REQUESTED_CHAN_UNAVAIL = 44
    PRE_EMPTED = 45
    FACILITY_NOT_SUBSCRIBED = 50
    OUTGOING_CALL_BARRED = 52
    INCOMING_CALL_BARRED = 54
    BEARERCAPABILITY_NOTAUTH = 57
    BEARERCAPABILITY_NOTAVAIL = 58
    SERVICE_UNAVAILABLE = 63
    BEARERCAPABILITY_NOTIMPL = 65
    CHAN_NOT_IMPLEMENTED = 66
    FACILITY_NOT_IMPLEMENTED = 69
    SERVICE_NOT_IMPLEMENTED = 79
    INVALID_CALL_REFERENCE = 81
    INCOMPATIBLE_DESTINATION = 88
    INVALID_MSG_UNSPECIFIED = 95
    MANDATORY_IE_MISSING = 96
    MESSAGE_TYPE_NONEXIST = 97
    WRONG_MESSAGE = 98
    IE_NONEXIST = 99
    INVALID_IE_CONTENTS = 100
    WRONG_CALL_STATE = 101
    RECOVERY_ON_TIMER_EXPIRE = 102
    MANDATORY_IE_LENGTH_ERROR = 103
    PROTOCOL_ERROR = 111
    INTERWORKING = 127
    SUCCESS = 142
    ORIGINATOR_CANCEL = 487
    CRASH = 700
    SYSTEM_SHUTDOWN = 701
    LOSE_RACE = 702
    MANAGER_REQUEST = 703
    BLIND_TRANSFER = 800
    ATTENDED_TRANSFER = 801
    ALLOTTED_TIMEOUT = 802
    USER_CHALLENGE = 803
    MEDIA_TIMEOUT = 804
    PICKED_OFF = 805
    USER_NOT_REGISTERED = 806
    PROGRESS_TIMEOUT = 807
    INVALID_GATEWAY = 808
    GATEWAY_DOWN = 809
    INVALID_URL = 810
    INVALID_PROFILE = 811
    NO_PICKUP = 812
    SRTP_READ_ERROR = 813
    BOWOUT = 814
    BUSY_EVERYWHERE = 815
    DECLINE = 816
    DOES_NOT_EXIST_ANYWHERE = 817
    NOT_ACCEPTABLE = 818
    UNWANTED = 819
    NO_IDENTITY = 820
    BAD_IDENTITY_INFO = 821
    UNSUPPORTED_CERTIFICATE = 822
    INVALID_IDENTITY = 823
    STALE_DATE = 824
    REJECT_ALL = 825

    @property
    def q850(self) -> int:
        """The value for ``variable_hangup_cause_q850``: 16 for any private cause > 127."""
        return int(self) if int(self) <= 127 else 16


def parse_cause(text: str | int | None, default: Cause = Cause.NORMAL_CLEARING) -> Cause:
    """A cause from its name (case-insensitive) or number; ``default`` when unknown/empty."""
    if text is None or text == "":
        return default
    if isinstance(text, int):
        try:
            return Cause(text)
        except ValueError:
            return default
    t = text.strip().upper()
    if t.isdigit():
        try:
            return Cause(int(t))
        except ValueError:
            return default
    try:
        return Cause[t]
    except KeyError:
        return default


_C = Cause
# hangup_cause_to_sip (mod_sofia.c:291-380): what FreeSWITCH sends for a cause.
_CAUSE_TO_SIP: dict[Cause, int] = {
    _C.UNALLOCATED_NUMBER: 404,
    _C.NO_ROUTE_TRANSIT_NET: 404,
    _C.NO_ROUTE_DESTINATION: 404,
    _C.USER_BUSY: 486,
    _C.NO_USER_RESPONSE: 408,
    _C.NO_ANSWER: 480,
    _C.SUBSCRIBER_ABSENT: 480,
    _C.NORMAL_UNSPECIFIED: 480,
    _C.CALL_REJECTED: 603,
    _C.DECLINE: 603,
    _C.REJECT_ALL: 603,
    _C.NUMBER_CHANGED: 410,
    _C.REDIRECTION_TO_NEW_DESTINATION: 410,
    _C.DESTINATION_OUT_OF_ORDER: 502,
    _C.INVALID_PROFILE: 502,
    _C.INVALID_NUMBER_FORMAT: 484,
    _C.INVALID_URL: 484,
    _C.INVALID_GATEWAY: 484,
    _C.FACILITY_REJECTED: 501,
    _C.FACILITY_NOT_IMPLEMENTED: 501,
    _C.SERVICE_NOT_IMPLEMENTED: 501,
    _C.REQUESTED_CHAN_UNAVAIL: 503,
    _C.NORMAL_CIRCUIT_CONGESTION: 503,
    _C.NETWORK_OUT_OF_ORDER: 503,
    _C.NORMAL_TEMPORARY_FAILURE: 503,
    _C.SWITCH_CONGESTION: 503,
    _C.GATEWAY_DOWN: 503,
    _C.BEARERCAPABILITY_NOTAVAIL: 503,
    _C.OUTGOING_CALL_BARRED: 403,
    _C.INCOMING_CALL_BARRED: 403,
    _C.BEARERCAPABILITY_NOTAUTH: 403,
    _C.STALE_DATE: 403,
    _C.BEARERCAPABILITY_NOTIMPL: 488,
    _C.INCOMPATIBLE_DESTINATION: 488,
    _C.RECOVERY_ON_TIMER_EXPIRE: 504,
    _C.ORIGINATOR_CANCEL: 487,
    _C.EXCHANGE_ROUTING_ERROR: 483,
    _C.BUSY_EVERYWHERE: 600,
    _C.DOES_NOT_EXIST_ANYWHERE: 604,
    _C.NOT_ACCEPTABLE: 606,
    _C.UNWANTED: 607,
    _C.NO_IDENTITY: 428,
    _C.BAD_IDENTITY_INFO: 429,
    _C.UNSUPPORTED_CERTIFICATE: 437,
    _C.INVALID_IDENTITY: 438,
}

# sofia_glue_sip_cause_to_freeswitch (sofia_glue.c:1814-1890): what a received status becomes.
_SIP_TO_CAUSE: dict[int, Cause] = {
    200: _C.NORMAL_CLEARING,
    **dict.fromkeys((401, 402, 403, 407, 603, 608), _C.CALL_REJECTED),
    607: _C.UNWANTED,
    404: _C.UNALLOCATED_NUMBER,
    485: _C.NO_ROUTE_DESTINATION,
    604: _C.NO_ROUTE_DESTINATION,
    408: _C.RECOVERY_ON_TIMER_EXPIRE,
    504: _C.RECOVERY_ON_TIMER_EXPIRE,
    410: _C.NUMBER_CHANGED,
    **dict.fromkeys((413, 414, 416, 420, 421, 423, 505, 513), _C.INTERWORKING),
    480: _C.NO_USER_RESPONSE,
    **dict.fromkeys((400, 481, 500, 503), _C.NORMAL_TEMPORARY_FAILURE),
    486: _C.USER_BUSY,
    600: _C.USER_BUSY,
    484: _C.INVALID_NUMBER_FORMAT,
    488: _C.INCOMPATIBLE_DESTINATION,
    606: _C.INCOMPATIBLE_DESTINATION,
    502: _C.NETWORK_OUT_OF_ORDER,
    405: _C.SERVICE_UNAVAILABLE,
    **dict.fromkeys((406, 415, 501), _C.SERVICE_NOT_IMPLEMENTED),
    482: _C.EXCHANGE_ROUTING_ERROR,
    483: _C.EXCHANGE_ROUTING_ERROR,
    487: _C.ORIGINATOR_CANCEL,
    428: _C.NO_IDENTITY,
    429: _C.BAD_IDENTITY_INFO,
    437: _C.UNSUPPORTED_CERTIFICATE,
    438: _C.INVALID_IDENTITY,
}

DEFAULT_SIP_FOR_CAUSE = 480
DEFAULT_CAUSE_FOR_SIP = Cause.NORMAL_UNSPECIFIED

_REASON_RE = re.compile(
    r"^\s*(?P<proto>[A-Za-z0-9.\-]+)\s*;(?P<params>.*)$",
)


def cause_to_sip(cause: Cause, proto_specific: str | None = None) -> int:
    """SIP status sent when refusing an unanswered inbound call with ``cause``
    (``hangup_cause_to_sip``).

    ``proto_specific`` is the channel's ``proto_specific_hangup_cause`` variable: a
    ``sip:NNN`` value there wins (mod_sofia's sofia_on_hangup does the same), e.g. credit
    control refusing with ``sip:402`` and cause OUTGOING_CALL_BARRED.
    """
    if proto_specific and proto_specific[:4].lower() == "sip:":
        code = proto_specific[4:].strip()
        if code.isdigit() and 400 <= int(code) <= 699:
            return int(code)
    return _CAUSE_TO_SIP.get(cause, DEFAULT_SIP_FOR_CAUSE)


def sip_to_cause(status: int, reason_header: str | None = None) -> Cause:
    """Cause for a received final response or BYE (``sofia_glue_sip_cause_to_freeswitch``).

    A ``Reason: Q.850;cause=N`` (or protocol ``FreeSWITCH``) header wins over the status.
    """
    if reason_header:
        for part in reason_header.split(","):
            m = _REASON_RE.match(part)
            if not m or m["proto"].upper() not in ("Q.850", "FREESWITCH"):
                continue
            for param in m["params"].split(";"):
                name, _, value = param.strip().partition("=")
                if name.strip().lower() == "cause" and value.strip().isdigit():
                    try:
                        return Cause(int(value.strip()))
                    except ValueError:
                        break
    return _SIP_TO_CAUSE.get(status, DEFAULT_CAUSE_FOR_SIP)


def reason_header(cause: Cause) -> str:
    """The RFC 3326 ``Reason`` value FreeSWITCH sends for ``cause`` (mod_sofia.c:491-513)."""
    if cause in (Cause.LOSE_RACE, Cause.PICKED_OFF):
        return 'SIP;cause=200;text="Call completed elsewhere"'
    proto = "Q.850" if 1 <= int(cause) <= 127 else "SIP"
    return f'{proto};cause={int(cause)};text="{cause.name}"'
