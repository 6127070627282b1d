"""URIs and name-addr (RFC 3261 §19.1, §20.10, §25.1; RFC 3966)."""

from __future__ import annotations

import pytest

from switchboard.sip.errors import SipParseError, UnsupportedUriScheme
from switchboard.sip.uri import NameAddr, SipUri, split_commas, unescape


def test_full_sip_uri() -> None:
    u = SipUri.parse(
        "sips:alice:secret@atlanta.example.com:5061;transport=TCP;lr;Maddr=1.2.3.4?subject=project%20x&priority=urgent"
    )
    assert u.scheme == "sips"
    assert u.user == "alice" and u.password == "secret"
    assert u.host == "atlanta.example.com" and u.port == 5061
    assert u.params == {"transport": "TCP", "lr": None, "maddr": "1.2.3.4"}
    assert list(u.params) == ["transport", "lr", "maddr"]
    assert u.headers == {"subject": "project%20x", "priority": "urgent"}
    assert u.transport == "tcp" and u.lr and u.maddr == "1.2.3.4"
    assert (
        str(u)
        == "sips:alice:secret@atlanta.example.com:5061;transport=TCP;lr;maddr=1.2.3.4?subject=project%20x&priority=urgent"
    )


@pytest.mark.parametrize(
    "text",
    [
        "sip:atlanta.example.com",
        "sip:192.0.2.4:5060",
        "sip:[2001:db8::10]",
        "sip:user@[2001:db8::10]:5070;transport=udp",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip:alice;day=tuesday@atlanta.com",
        "sip:%61lice@atlanta.com;transport=TCP",
        "sip:sips%3Auser%40example.com@example.net",
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        "tel:+358-555-1234567;postd=pp22",
        "tel:7042;phone-context=example.com",
    ],
)
def test_uris_round_trip(text: str) -> None:
    u = SipUri.parse(text)
    assert str(u) == text
    assert SipUri.parse(str(u)) == u


def test_ipv6_host_keeps_brackets_and_port() -> None:
    u = SipUri.parse("sip:[2001:db8::9:1]:5061")
    assert u.host == "[2001:db8::9:1]" and u.port == 5061 and u.user is None


def test_tel_uri_number_in_user() -> None:
    u = SipUri.parse("tel:+1-201-555-0123;phone-context=+1")
    assert (u.scheme, u.user, u.host, u.params) == (
        "tel",
        "+1-201-555-0123",
        "",
        {"phone-context": "+1"},
    )


def test_escapes_are_kept_and_decodable() -> None:
    u = SipUri.parse("sip:sips%3Auser%40example.com@example.net")
    assert u.user == "sips%3Auser%40example.com"
    assert u.user_unescaped == "sips:user@example.com"
    assert unescape("null-%00-null") == "null-\x00-null"
    assert unescape("%E2%82%AC") == "€"


def test_password_with_odd_characters() -> None:
    u = SipUri.parse(
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    )
    assert u.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert u.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert u.host == "example.com"


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:@example.com",
        "sip:user@",
        "sip:user@exa mple.com",
        "sip:user@example.com:99999",
        "sip:user@example.com:abc",
        "sip:user@[2001:db8::1",
        "sip:us%zzer@example.com",
        "sip:user@example.com;lr=<x>",
        "sip:user@example.com?noequals",
        "<sip:user@example.com>",
        "1sip:user@example.com",
        "tel:",
        "tel:abc-xyz",
        "nocolon",
    ],
)
def test_bad_uris_raise_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)


def test_unknown_scheme_is_416_unless_allowed() -> None:
    with pytest.raises(UnsupportedUriScheme) as info:
        SipUri.parse("soap.beep://192.0.2.103:3002")
    assert info.value.status == 416
    u = SipUri.parse("isbn:2983792873", allow_other=True)
    assert u.scheme == "isbn" and u.opaque == "2983792873" and str(u) == "isbn:2983792873"


def test_with_and_copy_do_not_share_params() -> None:
    u = SipUri.parse("sip:bob@biloxi.example.com;transport=tcp")
    v = u.with_(host="10.0.0.1", port=5080)
    v.params["lr"] = None
    assert str(v) == "sip:bob@10.0.0.1:5080;transport=tcp;lr"
    assert str(u) == "sip:bob@biloxi.example.com;transport=tcp"
    w = u.copy()
    w.params.clear()
    assert u.params == {"transport": "tcp"}


def test_uri_comparison_rules_of_19_1_4() -> None:
    p = SipUri.parse
    assert p("sip:%61lice@atlanta.com;transport=TCP").equivalent(
        p("sip:alice@AtLanTa.CoM;Transport=tcp")
    )
    assert p("sip:carol@chicago.com").equivalent(p("sip:carol@chicago.com;newparam=5"))
    assert not p("sip:alice@atlanta.com").equivalent(p("sip:ALICE@AtLanTa.CoM"))
    assert not p("sip:bob@biloxi.com").equivalent(p("sip:bob@biloxi.com:5060"))
    assert not p("sip:bob@biloxi.com").equivalent(p("sip:bob@biloxi.com;transport=udp"))
    assert not p("sip:carol@chicago.com;security=on").equivalent(
        p("sip:carol@chicago.com;security=off")
    )


class TestNameAddr:
    def test_quoted_display_with_escapes(self) -> None:
        na = NameAddr.parse(
            '"J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\n  ;\n  tag = 98asjd8'.replace(
                "\n", ""
            )
        )
        assert na.display == 'J Rosenberg \\"'
        assert na.uri.user == "jdrosen"
        assert na.tag == "98asjd8"
        again = NameAddr.parse(str(na))
        assert again == na

    def test_token_display_and_params(self) -> None:
        na = NameAddr.parse("Bob   Smith <sip:bob@biloxi.com>;tag=a6c85cf;x-foo")
        assert na.display == "Bob Smith" and na.params == {"tag": "a6c85cf", "x-foo": None}
        assert str(na) == "Bob Smith <sip:bob@biloxi.com>;tag=a6c85cf;x-foo"

    def test_addr_spec_params_belong_to_header(self) -> None:
        # §20.10: without <>, ;params after the URI are header parameters.
        na = NameAddr.parse("sip:caller@example.net;tag=134161461246")
        assert na.display is None and na.uri.params == {} and na.tag == "134161461246"
        assert str(na) == "<sip:caller@example.net>;tag=134161461246"

    def test_contact_expires_and_q(self) -> None:
        na = NameAddr.parse("<sip:u@10.0.0.1:5060;transport=udp>;expires=3600;q=0.7")
        assert na.expires == 3600 and na.q == 0.7 and na.uri.params == {"transport": "udp"}

    def test_empty_quoted_display(self) -> None:
        na = NameAddr.parse('"" <sip:a@b>')
        assert na.display == "" and str(na) == '"" <sip:a@b>'

    def test_unknown_scheme_allowed_in_address(self) -> None:
        na = NameAddr.parse("isbn:2983792873")
        assert na.uri.scheme == "isbn"

    @pytest.mark.parametrize(
        "text",
        [
            '"Unterminated <sip:a@b>',
            "Bell, Alexander <sip:a.g.bell@example.com>",
            '"Watson, Thomas" < sip:t.watson@example.org >',
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:a@b",
            "<sip:a@b>;=x",
            "",
            '"quoted" sip:a@b',
        ],
    )
    def test_bad_addresses(self, text: str) -> None:
        with pytest.raises(SipParseError):
            na = NameAddr.parse(text)
            _ = na.tag


def test_split_commas_respects_quotes_and_angles() -> None:
    v = '"Doe, John" <sip:j@x;a=1,2>, <sip:k@y>;q=0.5 ,sip:z@w'
    assert split_commas(v) == ['"Doe, John" <sip:j@x;a=1,2>', "<sip:k@y>;q=0.5", "sip:z@w"]
    assert split_commas("a, b,,c ") == ["a", "b", "c"]
    with pytest.raises(SipParseError):
        split_commas('"open, <sip:a@b>')
