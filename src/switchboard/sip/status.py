"""SIP response status codes with their reason phrases.

Sources: RFC 3261 §21, RFC 3262 (reliable provisionals), RFC 3265/6665 (events:
202, 489), RFC 3903 (412), RFC 4028 (422), RFC 4412 (417), RFC 4474/8224 (428,
436–438), RFC 5079 (433), RFC 5360 (470), RFC 5393 (440), RFC 5626 (430, 439),
RFC 5839 (204), RFC 6086 (469), RFC 6228 (199), RFC 8599 (555), RFC 8197 (607),
RFC 8688 (608), RFC 3329 (494), RFC 3312 (580).
"""

from __future__ import annotations

from enum import IntEnum


class StatusCode(IntEnum):
    """A SIP status code; ``StatusCode(486).phrase == "Busy Here"``."""

    phrase: str

    def __new__(cls, value: int, phrase: str) -> StatusCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.phrase = phrase
        return member

    # 1xx provisional (RFC 3261 §21.1)
    TRYING = 100, "Trying"
    RINGING = 180, "Ringing"
    CALL_IS_BEING_FORWARDED = 181, "Call Is Being Forwarded"
    QUEUED = 182, "Queued"
    SESSION_PROGRESS = 183, "Session Progress"
    EARLY_DIALOG_TERMINATED = 199, "Early Dialog Terminated"
    # 2xx success (§21.2)
    OK = 200, "OK"
    ACCEPTED = 202, "Accepted"
    NO_NOTIFICATION = 204, "No Notification"
    # 3xx redirection (§21.3)
    MULTIPLE_CHOICES = 300, "Multiple Choices"
    MOVED_PERMANENTLY = 301, "Moved Permanently"
    MOVED_TEMPORARILY = 302, "Moved Temporarily"
    USE_PROXY = 305, "Use Proxy"
    ALTERNATIVE_SERVICE = 380, "Alternative Service"
    # 4xx request failure (§21.4)
    BAD_REQUEST = 400, "Bad Request"
    UNAUTHORIZED = 401, "Unauthorized"
    PAYMENT_REQUIRED = 402, "Payment Required"
    FORBIDDEN = 403, "Forbidden"
    NOT_FOUND = 404, "Not Found"
    METHOD_NOT_ALLOWED = 405, "Method Not Allowed"
    NOT_ACCEPTABLE = 406, "Not Acceptable"
    PROXY_AUTHENTICATION_REQUIRED = 407, "Proxy Authentication Required"
    REQUEST_TIMEOUT = 408, "Request Timeout"
    GONE = 410, "Gone"
    CONDITIONAL_REQUEST_FAILED = 412, "Conditional Request Failed"
    REQUEST_ENTITY_TOO_LARGE = 413, "Request Entity Too Large"
    REQUEST_URI_TOO_LONG = 414, "Request-URI Too Long"
    UNSUPPORTED_MEDIA_TYPE = 415, "Unsupported Media Type"
    UNSUPPORTED_URI_SCHEME = 416, "Unsupported URI Scheme"
    UNKNOWN_RESOURCE_PRIORITY = 417, "Unknown Resource-Priority"
    BAD_EXTENSION = 420, "Bad Extension"
    EXTENSION_REQUIRED = 421, "Extension Required"
    SESSION_INTERVAL_TOO_SMALL = 422, "Session Interval Too Small"
    INTERVAL_TOO_BRIEF = 423, "Interval Too Brief"
    USE_IDENTITY_HEADER = 428, "Use Identity Header"
    PROVIDE_REFERRER_IDENTITY = 429, "Provide Referrer Identity"
    FLOW_FAILED = 430, "Flow Failed"
    ANONYMITY_DISALLOWED = 433, "Anonymity Disallowed"
    BAD_IDENTITY_INFO = 436, "Bad Identity-Info"
    UNSUPPORTED_CERTIFICATE = 437, "Unsupported Certificate"
    INVALID_IDENTITY_HEADER = 438, "Invalid Identity Header"
    FIRST_HOP_LACKS_OUTBOUND_SUPPORT = 439, "First Hop Lacks Outbound Support"
    MAX_BREADTH_EXCEEDED = 440, "Max-Breadth Exceeded"
    BAD_INFO_PACKAGE = 469, "Bad Info Package"
    CONSENT_NEEDED = 470, "Consent Needed"
    TEMPORARILY_UNAVAILABLE = 480, "Temporarily Unavailable"
    CALL_TRANSACTION_DOES_NOT_EXIST = 481, "Call/Transaction Does Not Exist"
    LOOP_DETECTED = 482, "Loop Detected"
    TOO_MANY_HOPS = 483, "Too Many Hops"
    ADDRESS_INCOMPLETE = 484, "Address Incomplete"
    AMBIGUOUS = 485, "Ambiguous"
    BUSY_HERE = 486, "Busy Here"
    REQUEST_TERMINATED = 487, "Request Terminated"
    NOT_ACCEPTABLE_HERE = 488, "Not Acceptable Here"
    BAD_EVENT = 489, "Bad Event"
    REQUEST_PENDING = 491, "Request Pending"
    UNDECIPHERABLE = 493, "Undecipherable"
    SECURITY_AGREEMENT_REQUIRED = 494, "Security Agreement Required"
    # 5xx server failure (§21.5)
    SERVER_INTERNAL_ERROR = 500, "Server Internal Error"
    NOT_IMPLEMENTED = 501, "Not Implemented"
    BAD_GATEWAY = 502, "Bad Gateway"
    SERVICE_UNAVAILABLE = 503, "Service Unavailable"
    SERVER_TIMEOUT = 504, "Server Time-out"
    VERSION_NOT_SUPPORTED = 505, "Version Not Supported"
    MESSAGE_TOO_LARGE = 513, "Message Too Large"
    PUSH_NOTIFICATION_SERVICE_NOT_SUPPORTED = 555, "Push Notification Service Not Supported"
    PRECONDITION_FAILURE = 580, "Precondition Failure"
    # 6xx global failure (§21.6)
    BUSY_EVERYWHERE = 600, "Busy Everywhere"
    DECLINE = 603, "Decline"
    DOES_NOT_EXIST_ANYWHERE = 604, "Does Not Exist Anywhere"
    NOT_ACCEPTABLE_ANYWHERE = 606, "Not Acceptable"
    UNWANTED = 607, "Unwanted"
    REJECTED = 608, "Rejected"

    @property
    def is_provisional(self) -> bool:
        return 100 <= self < 200

    @property
    def is_final(self) -> bool:
        return self >= 200


_PHRASES: dict[int, str] = {int(code): code.phrase for code in StatusCode}


def reason_phrase(code: int) -> str:
    """The reason phrase for ``code``.

    An unknown code falls back to its class's x00 phrase, because RFC 3261 §8.1.3.2
    says an unrecognised response is treated as the x00 of its class.  Codes outside
    100–699 get ``"Unknown"``.
    """
    phrase = _PHRASES.get(code)
    if phrase is not None:
        return phrase
    if 100 <= code <= 699:
        return _PHRASES[code // 100 * 100]
    return "Unknown"
