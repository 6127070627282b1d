"""Registrar and digest (RFC 3261 §10.3, §22; RFC 7616/8760 MD5 and SHA-256), fake clock."""

from __future__ import annotations

import pytest

from switchboard.media import digest
from switchboard.media.registrar import Registrar
from switchboard.sip.message import Request, Response


def register(
    contact: str = "<sip:1000@127.0.0.1:5070>", expires: str = "600", auth: str | None = None
) -> Request:
    headers = [("Expires", expires)]
    if auth:
        headers.append(("Authorization", auth))
    return Request.build(
        "REGISTER",
        "sip:switchboard",
        via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc",
        from_="<sip:1000@switchboard>;tag=a1",
        to="<sip:1000@switchboard>",
        call_id="reg-1",
        cseq=1,
        contact=contact,
        headers=headers,
    )


def answer(resp: Response, algorithm: str, password: str = "secret", user: str = "1000") -> str:
    challenge = next(
        v for v in resp.headers.get_all("WWW-Authenticate") if f"algorithm={algorithm}" in v
    )
    auth = digest.authorization(
        challenge,
        method="REGISTER",
        uri="sip:switchboard",
        username=user,
        password=password,
        cnonce="c0ffee",
    )
    assert auth is not None
    return auth


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_register_challenge_then_bind(algorithm: str) -> None:
    reg = Registrar({"1000": "secret"}, secret=b"k" * 16)
    first = reg.handle(register(), ("UDP", "127.0.0.1", 5070), 100.0, to_tag="t")
    assert first.status == 401
    algs = [
        v.split("algorithm=")[1].split(",")[0] for v in first.headers.get_all("WWW-Authenticate")
    ]
    assert algs == ["SHA-256", "MD5"]  # RFC 8760 §2.4 order (the default of Registrar)
    ok = reg.handle(
        register(auth=answer(first, algorithm)), ("UDP", "127.0.0.1", 5070), 101.0, to_tag="t"
    )
    assert ok.status == 200
    assert "expires=600" in ok.headers.get("Contact")  # type: ignore[operator]
    [binding] = reg.contacts("1000", 200.0)
    assert str(binding.contact.uri) == "sip:1000@127.0.0.1:5070"
    assert reg.contacts("1000", 701.0) == []  # expired


def test_wrong_password_stale_nonce_unknown_user_and_brief_interval() -> None:
    reg = Registrar({"1000": "secret"}, secret=b"k" * 16)
    src = ("UDP", "127.0.0.1", 5070)
    first = reg.handle(register(), src, 100.0, to_tag="t")
    bad = reg.handle(register(auth=answer(first, "MD5", password="nope")), src, 101.0, to_tag="t")
    assert bad.status == 403 and reg.contacts("1000", 101.0) == []
    stale = reg.handle(register(auth=answer(first, "MD5")), src, 100.0 + 301, to_tag="t")
    assert stale.status == 401 and "stale=TRUE" in stale.headers.get("WWW-Authenticate")  # type: ignore[operator]
    assert reg.handle(register(), src, 100.0, to_tag="t").status == 401
    nobody = reg.handle(
        Request.build("REGISTER", "sip:switchboard", via="SIP/2.0/UDP h;branch=z9hG4bKx",
                      from_="<sip:9@s>;tag=1", to="<sip:9@s>", call_id="x", cseq=1),
        src, 100.0, to_tag="t",
    )  # fmt: skip
    assert nobody.status == 401  # like a known user: no enumeration (test_registrar_enumeration)
    brief = reg.handle(register(expires="2", auth=answer(first, "SHA-256")), src, 101.0, to_tag="t")
    assert brief.status == 423 and brief.headers.get("Min-Expires") == "10"


def test_unregister_with_expires_zero() -> None:
    reg = Registrar({"1000": "secret"}, secret=b"k" * 16)
    src = ("UDP", "127.0.0.1", 5070)
    first = reg.handle(register(), src, 100.0, to_tag="t")
    auth = answer(first, "MD5")
    assert reg.handle(register(auth=auth), src, 100.0, to_tag="t").status == 200
    assert reg.handle(register(auth=auth, expires="0"), src, 100.0, to_tag="t").status == 200
    assert reg.contacts("1000", 100.0) == []


def test_digest_response_known_vector() -> None:
    # RFC 2617 §3.5 example (MD5, qop=auth)
    value = digest.response_value(
        algorithm="MD5", username="Mufasa", realm="testrealm@host.com", password="Circle Of Life",
        method="GET", uri="/dir/index.html", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth", nc="00000001", cnonce="0a4f113b",
    )  # fmt: skip
    assert value == "6629fae49393a05397450978507c4ef1"


def test_client_answers_only_the_configured_realm() -> None:
    ch = 'Digest realm="carrier.example", nonce="n1", algorithm=MD5, qop="auth"'
    kw = {"method": "INVITE", "uri": "sip:1@c", "username": "u", "password": "p", "cnonce": "c"}
    assert digest.authorization(ch, realm="other.example", **kw) is None  # type: ignore[arg-type]
    auth = digest.authorization(ch, realm="carrier.example", **kw)  # type: ignore[arg-type]
    assert auth is not None and 'realm="carrier.example"' in auth and "qop=auth" in auth
    assert digest.authorization(ch.replace("MD5", "SHA-512"), **kw) is None  # type: ignore[arg-type]
