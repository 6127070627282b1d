"""One typed configuration for the whole platform.

Precedence, lowest first: built-in defaults → TOML file → environment → CLI flags.
Environment variables are ``SWITCHBOARD_<SECTION>__<KEY>`` (double underscore between
section and key), e.g. ``SWITCHBOARD_PIKE__BAN_SECONDS=60``. Unknown sections or keys
are an error that names them: a typo in a carrier's config must not be silently ignored.

Each service owns its section model; this module composes them. Keys documented here and
in the README are part of the stable interface (docs/architecture.md, "Stable interface").
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from switchboard.media.settings import (  # media node sections (docs/media.md)
    DialplanSection,
    GatewaySection,
    LimitsSection,
    MediaSection,
    UserSection,
    default_gateways,
)
from switchboard.router.protection import DEFAULT_SCANNERS

ENV_PREFIX = "SWITCHBOARD_"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


class Section(BaseModel):
    """Base of every section: unknown keys are rejected, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class RouterSection(Section):
    """[router] — the edge router's listening sockets and admin HTTP address."""

    listen: list[str] = Field(default_factory=lambda: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"])
    admin: str = "127.0.0.1:8080"
    workers: int = Field(default=1, ge=1, le=64)
    drain_timeout: float = Field(
        default=32.0, gt=0
    )  # SIGTERM: wait this long for in-flight transactions
    # Other HOST:PORTs requests may name as this router (Kamailio's alias): a Request-URI
    # naming one is dispatched, not forwarded (e.g. a front proxy's address).
    aliases: list[str] = Field(default_factory=list)
    # The address Record-Route names instead of the listening socket's ("" = the socket's):
    # the floating address two routers share behind keepalived, so in-dialog requests
    # reach whichever router holds it (Kamailio's listen ... advertise).
    record_route_host: str = ""
    # The address the Via of a forwarded request names instead of the socket's ("" = the
    # socket's; Kamailio's advertise): the floating address this router holds, so the
    # responses of calls in setup reach whichever router holds it after this one dies
    # (docs/operations.md, "What each router keeps to itself"). Per router in an
    # active-active pair (each its own address); with workers > 1 each worker's Via keeps
    # its own socket.
    via_host: str = ""
    # SIP over TLS (docs/security.md): PEM files; re-read on SIGHUP.
    tls_cert: str = ""  # certificate chain of tls: listen addresses
    tls_key: str = ""
    tls_ca: str = ""  # CA bundle verifying peers ("" = the system store for servers dialled)
    tls_verify_client: bool = False  # mutual TLS: callers must present a certificate from tls_ca
    tls_verify_server: bool = True  # check the certificate and name of TLS destinations

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: list[str]) -> list[str]:
        for item in v:
            proto, sep, addr = item.partition(":")
            if not sep or proto not in ("udp", "tcp", "tls"):
                raise ValueError(f"expected udp:, tcp: or tls:HOST:PORT, got {item!r}")
            _check_address(addr)
        return v

    @model_validator(mode="after")
    def _tls_files(self) -> RouterSection:
        if any(i.startswith("tls:") for i in self.listen) and not (self.tls_cert and self.tls_key):
            raise ValueError("a tls: listen address needs tls_cert and tls_key")
        return self

    @field_validator("admin")
    @classmethod
    def _admin(cls, v: str) -> str:
        return _check_address(v)

    @field_validator("record_route_host", "via_host")
    @classmethod
    def _rr_host(cls, v: str) -> str:
        import ipaddress

        if v:
            try:
                ipaddress.ip_address(v.strip("[]"))
            except ValueError:
                raise ValueError(f"expected an IP address, got {v!r}") from None
        return v

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: list[str]) -> list[str]:
        for item in v:
            _check_address(item)
        return v


class DispatcherSection(Section):
    """[dispatcher] — destination sets and health probing (Kamailio dispatcher semantics)."""

    list_file: str = ""
    set: int = 1
    algorithm: int = 4
    destinations: list[str] = Field(default_factory=list)
    ping_interval: float = Field(default=5.0, gt=0)
    ping_timeout: float = Field(default=1.0, gt=0)
    probing_threshold: int = Field(default=3, ge=1)
    inactive_threshold: int = Field(default=2, ge=1)
    failover_timeout: float = Field(default=2.0, gt=0)
    # a node inactive this long that still holds calls is taken for lost with its box:
    # the router ends its calls (docs/router.md "A media node lost with its box"); 0 = off
    lost_node_timeout: float = Field(default=60.0, ge=0)
    failover_codes: str = "408|5xx"
    ping_reply_codes: str = "2xx"  # probe answers that prove a box alive (ds_ping_reply_codes)
    unavailable_reason: str = "No Media Server Available"
    retry_after: int = Field(default=5, ge=0)
    # refuse at the edge the share of new calls the nodes are shedding (docs/router.md
    # "Overload"): each refusal then costs the router a stateless 503, not a node its work
    edge_shedding: bool = True

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, v: int) -> int:
        if v not in (0, 4, 8, 9, 10):
            raise ValueError(
                "supported algorithms: 0 hash Call-ID, 4 round-robin, 8 priority, 9 weight, 10 call-load"
            )
        return v


class AclSection(Section):
    """[acl] — sources allowed to start dialogs; others are answered 403 Forbidden."""

    allow: list[str] = Field(default_factory=lambda: ["127.0.0.0/8"])


class PikeSection(Section):
    """[pike] — per-source flood detection (Kamailio pike semantics)."""

    sampling_time_unit: float = Field(default=2, gt=0)
    reqs_density_per_unit: int = Field(default=30, ge=1)
    ban_seconds: float = Field(default=300, ge=0)
    allow: list[str] = Field(default_factory=list)


class TrunkSection(Section):
    """[trunks.NAME] — one carrier interconnect (docs/router.md, "Trunks"). The router
    identifies a new call's trunk by its source address and applies its limits, number
    normalisation and policy; the trunk's name (and account) reach the media node in
    ``X-Switchboard-Trunk`` / ``X-Switchboard-Account`` for CDRs and billing."""

    sources: list[str] = Field(default_factory=list)  # IP, CIDR, [udp|tcp|tls:]IP[:PORT]
    direction: str = Field(default="both", pattern="^(inbound|outbound|both)$")
    cps: float = Field(default=0, ge=0)  # new calls admitted in any second; 0 = no limit
    max_calls: int = Field(default=0, ge=0)  # concurrent calls; 0 = no limit
    retry_after: int = Field(default=5, ge=0)  # Retry-After of the limits' 503
    called_strip: int = Field(default=0, ge=0)  # leading characters removed
    called_prefix: str = ""  # then prepended (e.g. a country code)
    called_regex: str = ""  # then must match (fullmatch), rewritten by called_replace
    called_replace: str = ""  # \1, \g<name>; "" = the match itself
    calling_strip: int = Field(default=0, ge=0)
    calling_prefix: str = ""
    calling_regex: str = ""
    calling_replace: str = ""
    tech_prefix: str = ""  # required at the start of the called number, removed
    caller_id: str = Field(default="pass", pattern="^(pass|replace|reject_anonymous)$")
    caller_id_number: str = ""  # with caller_id = "replace"
    account: str = ""  # the billing account the trunk's calls bill to
    allowed_prefixes: list[str] = Field(default_factory=list)  # E.164 prefixes; [] = any
    # Mutual TLS on this trunk (docs/security.md, "SIP over TLS"): its calls must arrive
    # over TLS with a client certificate from [router] tls_ca naming one of these
    # (subject CN, subjectAltName DNS or IP); [] = not required.
    tls_client_names: list[str] = Field(default_factory=list)
    # SRTP policy of this trunk's calls on the media nodes (off | optional | mandatory);
    # "" = the node's [media] srtp (docs/security.md, "SRTP")
    srtp: str = Field(default="", pattern="^(|off|optional|mandatory)$")
    # STIR/SHAKEN (docs/compliance.md "STIR/SHAKEN"): sign the calls we send on this trunk
    # with [stir] sign_key; attestation by calling-number prefix, first match wins
    # ("A:+4930", "B:+49", "C"); no match: C.
    stir_sign: bool = False
    stir_attestation: list[str] = Field(default_factory=list)
    # The country of the trunk's callers (ISO 3166 alpha-2): which [emergency] numbers
    # apply to its calls ("" = every number listed).
    country: str = ""


class SecuritySection(Section):
    """[security] — edge hygiene of the router and the media nodes (docs/security.md)."""

    # More than auth_fail_limit authentication failures from one source within
    # auth_fail_window seconds ban it (silent drop) for auth_ban_seconds; 0 = no bans.
    auth_fail_limit: int = Field(default=5, ge=1)
    auth_fail_window: float = Field(default=60.0, gt=0)
    auth_ban_seconds: float = Field(default=600.0, ge=0)
    auth_ban_allow: list[str] = Field(default_factory=list)  # never banned (CIDRs)
    # IPv6 sources are counted and banned (auth bans, pike) by this network prefix: an
    # attacker holds a whole /64; 128 = each address alone.
    ipv6_prefix: int = Field(default=64, ge=1, le=128)
    # Requests whose User-Agent contains one of these (case-insensitive) are dropped silently.
    scanner_user_agents: list[str] = Field(default_factory=lambda: list(DEFAULT_SCANNERS))
    # Server header of the router's own answers; "" = none (nothing names the product).
    server_header: str = ""
    # Requests from outside [acl] allow: "reject" (403, no product name) or "drop" (silence).
    outside_acl: str = Field(default="reject", pattern="^(reject|drop)$")
    # Calls from the edge show the carrier only the router: Contact rewritten to the
    # router, no Record-Route, no internal Via, Server or User-Agent (Kamailio topos).
    topology_hiding: bool = True

    @field_validator("auth_ban_allow")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        import ipaddress

        for net in v:
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad entry
        return v


class StirSection(Section):
    """[stir] — STIR/SHAKEN at the edge router (docs/compliance.md "STIR/SHAKEN"):
    verification of inbound Identity headers, signing of calls sent on trunks with
    ``stir_sign``."""

    verify: bool = False  # check the Identity header of calls coming in
    trust_anchors: str = ""  # PEM file: the STI-CA root certificates trusted
    https_ca: str = ""  # CA bundle for fetching x5u over HTTPS ("" = the system store)
    max_age: float = Field(default=60, gt=0)  # seconds an iat stays fresh (RFC 8224 §12)
    # pass: never refuse (the verdict only travels); reject_failed: refuse
    # TN-Validation-Failed (RFC 8224 §6.2.2 codes); reject_unverified: also refuse calls
    # with nothing verified (no Identity: 428, certificate unavailable: 436)
    policy: str = Field(default="pass", pattern="^(pass|reject_failed|reject_unverified)$")
    fetch_wait: float = Field(default=0.5, ge=0, le=10)  # a call waits this long for a fetch
    fetch_timeout: float = Field(default=5.0, gt=0, le=60)  # the fetch itself (cache fills)
    cache_ttl: float = Field(default=3600, gt=0)  # a fetched certificate is reused this long
    failure_ttl: float = Field(default=60, ge=0)  # an unreachable x5u is not asked again
    cache_size: int = Field(default=1000, ge=1)
    max_certificate_bytes: int = Field(default=65536, ge=1024)
    verstat_to_callee: bool = False  # P-Asserted-Identity;verstat= towards the media node
    sign_key: str = ""  # the operator's PEM EC P-256 key (trunks with stir_sign)
    sign_x5u: str = ""  # https URL of the operator's certificate (the PASSporT's x5u)
    origid: str = ""  # RFC 8588 origid; "" = a UUID derived from this host's name


class EmergencySection(Section):
    """[emergency] — emergency calls (docs/compliance.md "Emergency calls"): the numbers per
    country, the dispatcher set they go to first, the media node's reserve of sessions."""

    # country (ISO 3166 alpha-2, a trunk's `country`) → numbers; "*" applies everywhere
    numbers: dict[str, list[str]] = Field(default_factory=lambda: {"*": ["112", "911", "999"]})
    route_set: int = Field(default=0, ge=0)  # dispatcher set tried first; 0 = the normal set
    reserve_sessions: int = Field(default=10, ge=0)  # per media node, beyond max_sessions

    @field_validator("numbers")
    @classmethod
    def _numbers(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        from switchboard.router.emergency import validate

        validate(v)
        return v


class DatabaseSection(Section):
    """[database] — empty url: embedded PostgreSQL in the state directory.

    ``url`` is any libpq URI or key=value string, multi-host included
    (``postgresql://db1,db2/switchboard?target_session_attrs=read-write``).
    """

    url: str = ""
    pool_size: int = Field(default=4, ge=1, le=100)  # per process, credit control
    connect_timeout: float = Field(default=3.0, gt=0)


class BillingSection(Section):
    """[billing] — CDR writer, spool, credit control, backups (docs/billing.md)."""

    spool_dir: str = ""  # empty: <state_dir>/spool
    batch_size: int = Field(default=2000, ge=1, le=100_000)  # CDRs per COPY
    flush_interval: float = Field(default=0.2, gt=0, le=60)  # seconds a CDR may wait
    retry_interval: float = Field(default=1.0, gt=0, le=300)  # database retry while spooling
    spool_fsync: str = Field(default="batch", pattern="^(batch|never)$")
    credit_control: bool = False  # authorise calls against account balances
    max_call_seconds: int = Field(default=14400, ge=1)  # cap of one authorisation
    reservation_grace: int = Field(default=120, ge=0)  # seconds before a lost call's funds return
    reserve_seconds: int = Field(default=0, ge=0)  # 0: reserve the whole call; N: chunks, renewed
    # credit control and a billable call no account matches: "allow" (not credit-controlled,
    # still priced by the default deck in its CDR) or "refuse" (403, CALL_REJECTED)
    unknown_account: str = Field(default="allow", pattern="^(allow|refuse)$")
    extend_before: float = Field(default=5.0, gt=0)  # seconds before a chunk ends: extend()
    # seconds a call's authorisation (and a chunk's renewal) is retried while billing is
    # unreachable — a PostgreSQL failover: the caller waits instead of getting 503; 0: 503 at once
    authorise_retry_for: float = Field(default=0.0, ge=0, le=60)
    backup_dir: str = ""  # empty: <state_dir>/backups
    backup_keep: int = Field(default=14, ge=1)
    pg_bin_dir: str = ""  # empty: the pg_dump/psql inside the pgserver wheel
    # CDR months kept in the database, the running month included; `switchboard cdr
    # archive` moves older months to archive_dir (docs/billing.md, "CDR retention and
    # archives"). 25: two full years plus the running month.
    retention_months: int = Field(default=25, ge=2, le=1200)
    archive_dir: str = ""  # empty: <state_dir>/archive
    # number portability: media nodes look the dialled number up in ported_number at call
    # setup (cached, asynchronous) and carry/rate its routing number (docs/compliance.md)
    portability: bool = False
    portability_cache_ttl: float = Field(default=300.0, ge=0, le=86400)  # seconds per answer
    portability_timeout: float = Field(default=0.5, gt=0, le=10)  # then routed as dialled


class InterceptSection(Section):
    """[intercept] — lawful recording on demand in media nodes (docs/compliance.md,
    "Lawful recording"): calls of the numbers in the database's target list."""

    enabled: bool = False  # needs [database] url (the target list and the audit trail)
    dir: str = ""  # protected recordings directory; empty: <state_dir>/intercept
    refresh: float = Field(default=5.0, gt=0, le=3600)  # seconds between target list reads
    siprec_server: str = ""  # HOST:PORT of the SIPREC recording server for "siprec" targets

    @field_validator("siprec_server")
    @classmethod
    def _srs(cls, v: str) -> str:
        return _check_address(v) if v else v


class PlatformSection(Section):
    """[platform] — where `switchboard up` keeps its state (database, spool, recordings)."""

    state_dir: str = "state"
    media_nodes: int = Field(default=2, ge=1, le=32)
    # the supervisor's own /metrics (child restarts, child up); "" = not served
    admin: str = "127.0.0.1:8079"

    @field_validator("admin")
    @classmethod
    def _admin(cls, v: str) -> str:
        return _check_address(v) if v else v


class StatusSection(Section):
    """[status] — the status page at the router's admin address (/status)."""

    metrics_urls: list[str] = Field(
        default_factory=list
    )  # other processes' /metrics; `up` fills it
    title: str = "Switchboard"
    # seconds between two points of the page's 15-minute charts (kept in the router)
    history_interval: float = Field(default=5.0, ge=0.5, le=60.0)


class EslUserSection(Section):
    """[esl.users."<user>@<domain>"] — credentials for ``userauth`` and what they allow."""

    password: str
    allowed_events: list[str] = Field(default_factory=lambda: ["all"])  # event names or "all"
    allowed_api: list[str] = Field(default_factory=lambda: ["all"])  # API commands or "all"
    allowed_log: bool = True  # may ask for the log stream (``log <level>``)

    @field_validator("allowed_events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        from switchboard.esl.subscription import event_id

        bad = [name for name in v if event_id(name) is None]
        if bad:
            raise ValueError(f"unknown event name(s) {bad}; use FreeSWITCH names or 'all'")
        return v


class EslSection(Section):
    """[esl] — the media node's Event Socket, FreeSWITCH inbound ESL compatible (docs/esl.md)."""

    listen: str = ""  # HOST:PORT; "" → 127.0.0.1:802N for node media-N
    password: str = "ClueCon"
    allow: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])  # [] = anyone
    tls_cert: str = ""  # PEM; set → the port speaks TLS only
    tls_key: str = ""
    heartbeat: float = Field(default=20.0, ge=0)  # HEARTBEAT period, seconds; 0 = off
    max_queue: int = Field(default=10000, ge=10)  # events queued per connection
    auth_timeout: float = Field(default=25.0, gt=0)
    users: dict[str, EslUserSection] = Field(default_factory=dict)  # userauth; key user@domain

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if v and (not sep or not host or not port.isdigit() or int(port) > 65535):
            raise ValueError(f"expected HOST:PORT (port 0 = any free port), got {v!r}")
        return v

    @field_validator("users")
    @classmethod
    def _users(cls, v: dict[str, EslUserSection]) -> dict[str, EslUserSection]:
        bad = [key for key in v if key.count("@") != 1 or key.startswith("@") or key.endswith("@")]
        if bad:
            raise ValueError(f"user keys are user@domain, got {bad}")
        return v

    @field_validator("allow")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        import ipaddress

        for net in v:
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad entry
        return v


class DialerSection(Section):
    """[dialer] — campaign defaults; `switchboard campaign run` flags override them (docs/dialer.md)."""

    esl: list[str] = Field(default_factory=list)  # HOST:PORT Event Sockets; [] → every media node's
    password: str = ""  # "" → [esl].password
    cps: float = Field(default=30.0, gt=0, le=1000)
    max_concurrent: int = Field(default=100, ge=1)
    caller_id: str = "0000000000"  # for contacts without a caller_id column
    timezone: str = "UTC"  # for contacts without a timezone column
    window: str = "00:00-24:00"  # local calling hours in each contact's zone, e.g. "08:00-21:00"
    weekdays: str = ""  # "" = every day; "mon-fri", "1,2,3"
    retries: str = ""  # per outcome ATTEMPTS/DELAY_S over the defaults: "busy=3/120,noanswer=3/300"
    max_attempts: int = Field(default=3, ge=1)  # per contact, whatever the outcome
    originate_timeout: int = Field(default=30, ge=1)  # ring time, seconds
    max_failed_ratio: float = Field(default=0.5, gt=0, le=1)  # failed/finished above this → pause
    failed_ratio_min_attempts: int = Field(default=20, ge=1)  # ... once this many have finished
    dnc_file: str = ""  # do-not-call list: one number or pattern (201XXXXXXX) per line


class Config(Section):
    """The whole platform's configuration."""

    platform: PlatformSection = Field(default_factory=PlatformSection)
    router: RouterSection = Field(default_factory=RouterSection)
    dispatcher: DispatcherSection = Field(default_factory=DispatcherSection)
    acl: AclSection = Field(default_factory=AclSection)
    pike: PikeSection = Field(default_factory=PikeSection)
    security: SecuritySection = Field(default_factory=SecuritySection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    billing: BillingSection = Field(default_factory=BillingSection)
    status: StatusSection = Field(default_factory=StatusSection)
    esl: EslSection = Field(default_factory=EslSection)
    media: MediaSection = Field(default_factory=MediaSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    gateways: dict[str, GatewaySection] = Field(default_factory=default_gateways)
    users: dict[str, UserSection] = Field(default_factory=dict)
    dialplan: DialplanSection = Field(default_factory=DialplanSection)
    dialer: DialerSection = Field(default_factory=DialerSection)
    trunks: dict[str, TrunkSection] = Field(default_factory=dict)
    stir: StirSection = Field(default_factory=StirSection)
    intercept: InterceptSection = Field(default_factory=InterceptSection)
    emergency: EmergencySection = Field(default_factory=EmergencySection)

    @model_validator(mode="after")
    def _trunks(self) -> Config:
        # Checked as a whole (overlapping sources, regexes, names): the message names the
        # key, and a bad file is refused at start and at reload alike.
        from switchboard.router.trunks import TrunkTable

        TrunkTable(self.trunks, self.acl.allow)
        if self.stir.verify and not self.stir.trust_anchors:
            raise ValueError("stir.trust_anchors: a PEM file of STI-CA roots is needed with verify")
        if self.stir.sign_x5u and not self.stir.sign_x5u.startswith("https://"):
            raise ValueError("stir.sign_x5u: must be an https:// URL")
        for name, t in self.trunks.items():
            if t.stir_sign and not (self.stir.sign_key and self.stir.sign_x5u):
                raise ValueError(f"trunks.{name}.stir_sign: needs stir.sign_key and stir.sign_x5u")
        return self


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(section, {})[key] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load defaults ← TOML file ← environment ← overrides, or raise ConfigError."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    data = _merge(data, _env_overrides(os.environ if environ is None else environ))
    if overrides:
        data = _merge(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


def _describe(exc: ValidationError, path: str | Path | None) -> str:
    where = f"{path}: " if path else ""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}unknown key '{key}'")
        elif not key:  # a check of the whole file: its message names the key itself
            lines.append(f"{where}{err['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{where}{key}: {err['msg']}")
    return "\n".join(lines)
