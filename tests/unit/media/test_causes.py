from __future__ import annotations

import pytest

from switchboard.media.causes import Cause, cause_to_sip, parse_cause, reason_header, sip_to_cause


@pytest.mark.parametrize(
    ("cause", "status"),
    [
        (Cause.UNALLOCATED_NUMBER, 404),
        (Cause.NO_ROUTE_DESTINATION, 404),
        (Cause.USER_BUSY, 486),
        (Cause.NO_USER_RESPONSE, 408),
        (Cause.NO_ANSWER, 480),
        (Cause.NORMAL_CLEARING, 480),
        (Cause.MANAGER_REQUEST, 480),
        (Cause.USER_NOT_REGISTERED, 480),
        (Cause.CALL_REJECTED, 603),
        (Cause.DESTINATION_OUT_OF_ORDER, 502),
        (Cause.INVALID_GATEWAY, 484),
        (Cause.GATEWAY_DOWN, 503),
        (Cause.NORMAL_TEMPORARY_FAILURE, 503),
        (Cause.INCOMPATIBLE_DESTINATION, 488),
        (Cause.RECOVERY_ON_TIMER_EXPIRE, 504),
        (Cause.ORIGINATOR_CANCEL, 487),
        (Cause.EXCHANGE_ROUTING_ERROR, 483),
        (Cause.UNWANTED, 607),
    ],
)
def test_cause_to_sip_per_reference_5_2(cause: Cause, status: int) -> None:
    assert cause_to_sip(cause) == status


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (200, Cause.NORMAL_CLEARING),
        (403, Cause.CALL_REJECTED),
        (404, Cause.UNALLOCATED_NUMBER),  # not NO_ROUTE_DESTINATION
        (480, Cause.NO_USER_RESPONSE),  # not NO_ANSWER
        (408, Cause.RECOVERY_ON_TIMER_EXPIRE),  # not NO_USER_RESPONSE
        (486, Cause.USER_BUSY),
        (600, Cause.USER_BUSY),
        (488, Cause.INCOMPATIBLE_DESTINATION),
        (503, Cause.NORMAL_TEMPORARY_FAILURE),
        (502, Cause.NETWORK_OUT_OF_ORDER),
        (487, Cause.ORIGINATOR_CANCEL),
        (513, Cause.INTERWORKING),
        (499, Cause.NORMAL_UNSPECIFIED),
    ],
)
def test_sip_to_cause_per_reference_5_3(status: int, cause: Cause) -> None:
    assert sip_to_cause(status) is cause


def test_reason_header_wins_over_status() -> None:
    assert sip_to_cause(480, 'Q.850;cause=19;text="NO_ANSWER"') is Cause.NO_ANSWER
    assert sip_to_cause(480, "SIP;cause=480") is Cause.NO_USER_RESPONSE
    assert sip_to_cause(480, "Q.850;cause=abc") is Cause.NO_USER_RESPONSE


def test_private_causes_report_16_as_q850_and_sip_reason() -> None:
    assert Cause.MANAGER_REQUEST == 703 and Cause.MANAGER_REQUEST.q850 == 16
    assert Cause.USER_BUSY.q850 == 17
    assert reason_header(Cause.USER_BUSY) == 'Q.850;cause=17;text="USER_BUSY"'
    assert reason_header(Cause.GATEWAY_DOWN) == 'SIP;cause=809;text="GATEWAY_DOWN"'
    assert reason_header(Cause.LOSE_RACE).startswith("SIP;cause=200")


def test_parse_cause_by_name_or_number() -> None:
    assert parse_cause("user_busy") is Cause.USER_BUSY
    assert parse_cause("17") is Cause.USER_BUSY
    assert parse_cause("nonsense", Cause.MANAGER_REQUEST) is Cause.MANAGER_REQUEST
    assert parse_cause(None) is Cause.NORMAL_CLEARING
