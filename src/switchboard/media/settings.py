"""Typed configuration sections of the media node: ``[media]``, ``[limits]``,
``[gateways.<name>]``, ``[users.<id>]``, ``[dialplan]`` (composed by ``switchboard.config``).

Every key has a working default; the per-node addresses follow from the
node's number (``media-N``): SIP udp+tcp 127.0.0.1:508N, ESL 802N, admin/metrics 808N,
RTP ports 16384 + (N-1)·8192 … +8191. Documented key by key in docs/media.md.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RTP_BASE = 16384
RTP_SPAN = 8192

# seconds without RTP before an answered leg is hung up (MEDIA_TIMEOUT); docs/media.md
DEFAULT_RTP_TIMEOUT = 60.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_hostport(value: str) -> str:
    """HOST:PORT; port 0 means "any free port" (tests)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class MediaSection(_Section):
    """[media] — one media node's addresses, codecs and files (empty = derived default)."""

    listen: list[str] = Field(default_factory=list)  # ["udp:H:P", "tcp:H:P"]; [] → 127.0.0.1:508N
    admin: str = ""  # HOST:PORT for /metrics and the admin API; "" → 127.0.0.1:808N
    rtp_ip: str = "127.0.0.1"  # address RTP sockets bind to
    sdp_ip: str = ""  # address written in SDP (NAT/public); "" → rtp_ip
    # IPv6 media (docs/media.md "IPv6"): RTP of a leg whose far end is IPv6 (an offer
    # with c=IN IP6, a gateway or phone at an IPv6 address) binds here; "" = no IPv6
    # media (such offers are answered 488).
    rtp_ip6: str = ""
    sdp_ip6: str = ""  # IPv6 address written in SDP; "" → rtp_ip6
    rtp_port_start: int = Field(default=0, ge=0, le=65534)  # 0 → 16384 + (N-1)·8192
    rtp_port_end: int = Field(default=0, ge=0, le=65535)  # 0 → start + 8191
    codecs: list[str] = Field(default_factory=lambda: ["PCMU", "PCMA"])  # preference order
    sounds_dir: str = ""  # where playback looks up relative names; "" → bundled sounds
    recordings_dir: str = (
        ""  # where record/record_session put relative paths; "" → state/recordings
    )
    cdr_file: str = ""  # JSON-lines CDR sink until billing is wired; "" → state/cdr/<name>.jsonl
    # calls survive a crash of the node: bridges journaled, resumed on restart (docs/media.md)
    recovery: bool = True
    # seconds a crashed node is given to come back under `switchboard up`; then its reaper
    # ends its journaled calls (BYE both ways, CDRs: docs/media.md "Crash recovery")
    recovery_timeout: float = Field(default=10.0, gt=0)
    journal_dir: str = ""  # where <name>.jnl lives; "" → <state_dir>/journal
    realm: str = "switchboard"  # digest realm of the registrar
    # Challenges the registrar sends, in order. Both MD5 and SHA-256 answers are verified
    # whatever was offered; offering SHA-256 is opt-in (["SHA-256", "MD5"], RFC 8760 order)
    # because common clients (baresip/libre, older phones) fail on any algorithm they lack.
    digest_algorithms: list[str] = Field(default_factory=lambda: ["MD5"])
    originate_timeout: float = Field(default=60.0, gt=0)  # default ring time of bridge/originate
    conference_energy_level: int = Field(default=100, ge=0)  # mod_conference energy-level
    user_agent: str = ""  # User-Agent header of the node's messages; "" = none (no product name)
    # SO_RCVBUF/SO_SNDBUF of the SIP UDP sockets (bursts of originates); 0 = kernel default
    sip_socket_buffer: int = Field(default=4 << 20, ge=0)
    # FreeSWITCH rtp_timeout_sec: answered call without RTP this long → MEDIA_TIMEOUT; 0 = off.
    # On by default: a leg whose far end vanished (crashed phone, lost network, dead
    # carrier session) would otherwise stay up — and billed — until someone hangs it up.
    rtp_timeout: float = Field(default=DEFAULT_RTP_TIMEOUT, ge=0)
    # SIP is accepted only from these networks (routers, users) and the gateways' IP
    # addresses; anything else is dropped silently. [] = from anyone.
    trusted: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # Edge routers besides [router] listen's addresses (IPs/CIDRs): only from these does
    # the node believe X-Switchboard-Trunk / X-Switchboard-Account (the trunk and the
    # account it bills to, docs/router.md "Trunks"); from any other source they are ignored.
    routers: list[str] = Field(default_factory=list)
    # SRTP (SDES) on calls coming in: optional = SRTP when offered (RTP/SAVP, or keys in
    # an RTP/AVP offer), plain RTP otherwise; mandatory = 488 to plain RTP; off = 488 to
    # SRTP-only offers.
    srtp: str = Field(default="optional", pattern="^(off|optional|mandatory)$")
    # SIP over TLS: PEM files of tls: listen addresses; tls_ca verifies client certificates
    # when tls_verify_client is on (mutual TLS). Re-read on SIGHUP.
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_verify_client: bool = False

    @field_validator("trusted", "routers")
    @classmethod
    def _trusted(cls, v: list[str]) -> list[str]:
        import ipaddress

        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not an IP address or CIDR network") from None
        return v

    @field_validator("rtp_ip6", "sdp_ip6")
    @classmethod
    def _ip6(cls, v: str) -> str:
        import ipaddress

        v = v.strip("[]")
        if v:
            try:
                ipaddress.IPv6Address(v)
            except ValueError:
                raise ValueError(f"{v!r} is not an IPv6 address") from None
        return v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: list[str]) -> list[str]:
        for item in v:
            proto, sep, addr = item.partition(":")
            if not sep or proto not in ("udp", "tcp", "tls"):
                raise ValueError(f"expected udp:, tcp: or tls:HOST:PORT, got {item!r}")
            _check_hostport(addr)
        return v

    @model_validator(mode="after")
    def _tls_files(self) -> MediaSection:
        if any(i.startswith("tls:") for i in self.listen) and not (self.tls_cert and self.tls_key):
            raise ValueError("a tls: listen address needs tls_cert and tls_key")
        return self

    @field_validator("admin")
    @classmethod
    def _admin(cls, v: str) -> str:
        return _check_hostport(v) if v else v

    @field_validator("digest_algorithms")
    @classmethod
    def _algorithms(cls, v: list[str]) -> list[str]:
        out = [a.upper() for a in v]
        if not out or any(a not in ("MD5", "SHA-256") for a in out):
            raise ValueError("digest_algorithms: a non-empty list of MD5 and/or SHA-256")
        return out

    @field_validator("codecs")
    @classmethod
    def _codecs(cls, v: list[str]) -> list[str]:
        known = {"PCMU", "PCMA", "G722", "L16"}
        bad = [c for c in v if c.upper() not in known]
        if bad or not v:
            raise ValueError(f"codecs must be a non-empty list of {sorted(known)}, got {v!r}")
        return [c.upper() for c in v]


class LimitsSection(_Section):
    """[limits] — FreeSWITCH switch.conf ``max-sessions`` / ``sessions-per-second``."""

    # max_sessions: FreeSWITCH's production tuning (switch.conf max-sessions 10000).
    # sessions_per_second: derived from the machine (docs/media.md): a 2-core box carries
    # 300 transit calls/s through two nodes = 300 legs/s per node; 400 leaves room for
    # arrival jitter. FreeSWITCH's 100 would hold two nodes to 100 transit calls/s.
    max_sessions: int = Field(default=10000, ge=1)
    sessions_per_second: int = Field(default=400, ge=1)  # exact sliding 1 s window
    retry_after: int = Field(default=300, ge=0)  # Retry-After on the 503 (sofia.c)
    # Overload shedding (media/overload.py, docs/media.md "Overload"): new calls get 503 +
    # overload_retry_after while the node is more than overload_delay seconds behind (a
    # datagram's wait in its SIP receive queue, or its event-loop lag): a growing share
    # above it, all of them from twice it (0 = off). Under the router's failover_timeout
    # (2 s) with room: the router hears the node before it gives up on it. min_idle_cpu:
    # every new call while the machine's idle CPU is below this percentage (FreeSWITCH
    # min-idle-cpu; 0 = off, its default).
    overload_delay: float = Field(default=0.5, ge=0)
    min_idle_cpu: float = Field(default=0.0, ge=0, le=100)
    overload_retry_after: int = Field(default=1, ge=0)


class GatewaySection(_Section):
    """[gateways.<name>] — an outbound trunk to a carrier."""

    proxy: str = "127.0.0.1:5090"  # HOST:PORT of the carrier's SIP server
    transport: str = "udp"
    registration: bool = False  # REGISTER to the carrier (then digest credentials are needed)
    username: str = ""
    password: str = ""
    realm: str = ""  # answer digest challenges of this realm only ("" = any)
    from_user: str = ""  # user in From; "" → the caller-id number
    from_domain: str = ""  # host in From; "" → proxy host
    caller_id_number: str = ""  # force this caller-id number (caller-id rule)
    caller_id_name: str = ""
    caller_id_prefix: str = ""  # prepended to the caller-id number
    prefix: str = ""  # prepended to the dialled number
    strip: int = Field(default=0, ge=0)  # leading digits removed from the dialled number
    max_calls: int = Field(default=0, ge=0)  # concurrent-call limit; 0 = unlimited
    expires: int = Field(default=3600, ge=60)  # registration period
    codecs: list[str] = Field(default_factory=list)  # offer order; [] → [media].codecs
    # transport "tls": the carrier's certificate is checked against tls_ca (the system
    # store when empty) unless tls_verify is off; tls_cert/tls_key are presented when the
    # carrier asks for a client certificate (mutual TLS).
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_verify: bool = True
    # SRTP (SDES) towards this carrier: off | optional | mandatory (as [users.*] srtp)
    srtp: str = Field(default="off", pattern="^(off|optional|mandatory)$")
    # a ported number ([billing] portability) towards this carrier: "rn" = RFC 4694
    # parameters in the Request-URI user (+4930123;npdi;rn=+4915199), "prefix" = the routing
    # number put before the number (4915199 4930123), "off" = the dialled number unchanged
    portability: str = Field(default="rn", pattern="^(rn|prefix|off)$")

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, v: str) -> str:
        return _check_hostport(v)

    @field_validator("transport")
    @classmethod
    def _transport(cls, v: str) -> str:
        if v.lower() not in ("udp", "tcp", "tls"):
            raise ValueError("transport must be udp, tcp or tls")
        return v.lower()


class UserSection(_Section):
    """[users.<id>] — a user allowed to REGISTER; ``user/<id>`` rings its contacts."""

    password: str
    caller_id_name: str = ""
    caller_id_number: str = ""  # "" → the id
    context: str = "default"
    # SRTP (SDES) on calls to this user: off | optional (offer RTP/AVP with keys, SRTP if
    # the phone answers with one) | mandatory (RTP/SAVP or no call)
    srtp: str = Field(default="off", pattern="^(off|optional|mandatory)$")


class IvrMenuSection(_Section):
    """[dialplan.ivr.<menu>] — an IVR menu (mod_ivr's ivr.conf.xml, simplified)."""

    greeting: str = "prompt"  # played (and repeated) while waiting for a digit
    invalid: str = ""  # played on a digit with no entry ("" → a short error tone)
    timeout: float = Field(default=5.0, gt=0)  # seconds to wait for a digit after the greeting
    max_failures: int = Field(default=3, ge=1)  # timeouts + invalid digits before exit
    exit_action: str = "hangup NORMAL_CLEARING"  # run after too many failures
    entries: dict[str, str] = Field(default_factory=dict)  # digit → "app arg"

    @field_validator("entries")
    @classmethod
    def _entries(cls, v: dict[str, str]) -> dict[str, str]:
        for digit in v:
            if not re.fullmatch(r"[0-9*#A-D]{1,8}", digit):
                raise ValueError(f"IVR entry key must be DTMF digits, got {digit!r}")
        return v


def _default_ivr() -> dict[str, IvrMenuSection]:
    return {
        "demo": IvrMenuSection(
            entries={
                "1": "playback prompt",
                "2": "transfer echo",
                "3": "transfer conf-demo",
                "9": "hangup NORMAL_CLEARING",
            }
        )
    }


class DialplanSection(_Section):
    """[dialplan] — ordered rules (see media/dialplan.py) and IVR menus."""

    file: str = ""  # a TOML file with [[rules]] (and [ivr.*]) re-read on reloadxml/SIGHUP
    rules: list[dict[str, Any]] = Field(
        default_factory=list
    )  # [] → the default dialplan (docs/media.md)
    ivr: dict[str, IvrMenuSection] = Field(default_factory=_default_ivr)


def default_gateways() -> dict[str, GatewaySection]:
    """The default gateway ``carrier`` → udp 127.0.0.1:5090 (the demo's carrier simulator)."""
    return {"carrier": GatewaySection()}


def node_number(name: str) -> int:
    """``media-2`` → 2 (1 when the name has no trailing number)."""
    m = re.search(r"(\d+)$", name)
    return max(1, int(m[1])) if m else 1
