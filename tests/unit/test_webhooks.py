"""Webhook signature checks (design.md section 4): timestamped HMAC, Jira X-Hub-Signature, rotation."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from shared import webhooks
from shared.webhooks import (
    SignatureError,
    UnsupportedSystemError,
    hub_signature,
    sign,
    sign_jira,
    sign_timestamped,
    timestamped_signature,
    verify_signature,
)

CURRENT = "current-secret-0123456789abcdef0123456789"
PREVIOUS = "previous-secret-0123456789abcdef012345678"
OTHER = "someone-elses-secret-0123456789abcdef0123"
BODY = b'{"event":"created","number":"INC0012345","priority":"1"}'
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
SKEW = timedelta(seconds=300)


def refused(system, headers, body=BODY, secrets=(CURRENT, PREVIOUS), now=NOW, skew=SKEW) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify_signature(system, headers, body, secrets, now, skew)
    return caught.value


# --- signing -----------------------------------------------------------------------------------------------


def test_timestamped_signature_is_hmac_sha256_over_timestamp_dot_body():
    expected = hmac.new(CURRENT.encode(), b"1767225600." + BODY, hashlib.sha256).hexdigest()
    assert timestamped_signature(CURRENT, 1767225600, BODY) == f"sha256={expected}"
    assert sign_timestamped(CURRENT, BODY, 1767225600) == {
        "X-Signature-Timestamp": "1767225600",
        "X-Signature": f"sha256={expected}",
    }


def test_worked_example_in_the_docs_is_right():
    # docs/intake.md shows these exact values; keep them in sync.
    secret = "0123456789abcdef0123456789abcdef"
    body = b'{"event":"created","number":"INC0012345"}'
    assert timestamped_signature(secret, 1767225600, body) == (
        "sha256=9d262006943dbf86ee412d91f9f168e99c30e469b28f416e7f1f99c617bc7064"
    )
    assert hub_signature(secret, body) == (
        "sha256=112976ab0903beed1a6793a2473290b1501c16fac287436dba6b20900d656cea"
    )


def test_jira_signature_is_hmac_sha256_over_the_body():
    expected = hmac.new(CURRENT.encode(), BODY, hashlib.sha256).hexdigest()
    assert hub_signature(CURRENT, BODY) == f"sha256={expected}"
    assert sign_jira(CURRENT, BODY) == {"X-Hub-Signature": f"sha256={expected}"}


def test_sign_picks_the_scheme_of_the_system():
    assert set(sign("servicenow", CURRENT, BODY, NOW)) == {"X-Signature-Timestamp", "X-Signature"}
    assert set(sign("ivanti", CURRENT, BODY, NOW)) == {"X-Signature-Timestamp", "X-Signature"}
    assert set(sign("jira", CURRENT, BODY, NOW)) == {"X-Hub-Signature"}


# --- accepted ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["servicenow", "ivanti", "jira"])
def test_accepts_a_delivery_signed_with_the_current_secret(system):
    verify_signature(system, sign(system, CURRENT, BODY, NOW), BODY, (CURRENT, PREVIOUS), NOW, SKEW)


@pytest.mark.parametrize("system", ["servicenow", "ivanti", "jira"])
def test_accepts_a_delivery_signed_with_the_previous_secret_during_rotation(system):
    verify_signature(system, sign(system, PREVIOUS, BODY, NOW), BODY, (CURRENT, PREVIOUS), NOW, SKEW)


def test_accepts_a_single_configured_secret():
    verify_signature("servicenow", sign_timestamped(CURRENT, BODY, NOW), BODY, (CURRENT,), NOW, SKEW)


@pytest.mark.parametrize("system", ["servicenow", "jira"])
def test_header_names_are_matched_ignoring_case(system):
    headers = {name.lower(): value for name, value in sign(system, CURRENT, BODY, NOW).items()}
    verify_signature(system, headers, BODY, (CURRENT,), NOW, SKEW)
    headers = {name.upper(): value for name, value in sign(system, CURRENT, BODY, NOW).items()}
    verify_signature(system, headers, BODY, (CURRENT,), NOW, SKEW)


def test_upper_case_hex_and_surrounding_whitespace_are_accepted():
    headers = sign_timestamped(CURRENT, BODY, NOW)
    headers["X-Signature"] = "  sha256=" + headers["X-Signature"].removeprefix("sha256=").upper() + " "
    headers["X-Signature-Timestamp"] = f" {NOW} "
    verify_signature("servicenow", headers, BODY, (CURRENT,), NOW, SKEW)


def test_now_may_be_an_aware_datetime():
    now = datetime.fromtimestamp(NOW, UTC)
    verify_signature("servicenow", sign_timestamped(CURRENT, BODY, NOW), BODY, (CURRENT,), now, SKEW)


def test_clock_skew_defaults_to_300_seconds():
    headers = sign_timestamped(CURRENT, BODY, NOW - 300)
    verify_signature("servicenow", headers, BODY, (CURRENT,), NOW)
    headers = sign_timestamped(CURRENT, BODY, NOW - 301)
    with pytest.raises(SignatureError) as caught:
        verify_signature("servicenow", headers, BODY, (CURRENT,), NOW)
    assert caught.value.code == "stale_timestamp"


# --- refused: wrong signature ------------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["servicenow", "jira"])
def test_refuses_a_signature_made_with_another_secret(system):
    error = refused(system, sign(system, OTHER, BODY, NOW))
    assert error.code == "bad_signature"


@pytest.mark.parametrize("system", ["servicenow", "jira"])
def test_refuses_a_signature_over_a_different_body(system):
    headers = sign(system, CURRENT, BODY, NOW)
    error = refused(system, headers, body=BODY.replace(b'"1"', b'"2"'))
    assert error.code == "bad_signature"


def test_refuses_a_signature_whose_timestamp_was_changed_after_signing():
    headers = sign_timestamped(CURRENT, BODY, NOW - 10)
    headers["X-Signature-Timestamp"] = str(NOW)
    assert refused("servicenow", headers).code == "bad_signature"


def test_refuses_a_body_signature_without_the_timestamp_for_the_timestamped_scheme():
    # A Jira-style signature (body only) is not valid for ServiceNow: the timestamp must be covered.
    headers = {"X-Signature-Timestamp": str(NOW), "X-Signature": hub_signature(CURRENT, BODY)}
    assert refused("servicenow", headers).code == "bad_signature"


def test_bad_signature_message_names_the_setting_but_no_secret_or_expected_signature():
    headers = sign_timestamped(OTHER, BODY, NOW)
    error = refused("servicenow", headers)
    message = str(error)
    assert "SERVICENOW_WEBHOOK_SECRET" in message
    for secret in (CURRENT, PREVIOUS):
        assert secret not in message
        assert timestamped_signature(secret, NOW, BODY).removeprefix("sha256=") not in message
    assert "sha256=" + "0" * 8 not in message


# --- refused: missing and malformed headers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "drop", "code"),
    [
        ("servicenow", "X-Signature", "missing_signature"),
        ("servicenow", "X-Signature-Timestamp", "missing_timestamp"),
        ("jira", "X-Hub-Signature", "missing_signature"),
    ],
)
def test_refuses_a_delivery_without_its_signature_headers(system, drop, code):
    headers = sign(system, CURRENT, BODY, NOW)
    del headers[drop]
    error = refused(system, headers)
    assert error.code == code
    assert drop in str(error)


@pytest.mark.parametrize("system", ["servicenow", "jira"])
def test_refuses_a_delivery_without_any_headers(system):
    assert refused(system, {}).code == "missing_signature"


def test_a_blank_signature_header_counts_as_missing():
    headers = sign_timestamped(CURRENT, BODY, NOW)
    headers["X-Signature"] = "   "
    assert refused("servicenow", headers).code == "missing_signature"


def test_a_jira_signature_in_the_servicenow_header_is_not_looked_for():
    # ServiceNow deliveries are read from X-Signature only; X-Hub-Signature is ignored for them.
    headers = {
        "X-Signature-Timestamp": str(NOW),
        "X-Hub-Signature": timestamped_signature(CURRENT, NOW, BODY),
    }
    assert refused("servicenow", headers).code == "missing_signature"


@pytest.mark.parametrize(
    "value",
    [
        "abc",  # no algorithm
        "sha256",  # no digest
        "sha256=",  # empty digest
        "sha1=" + "a" * 40,  # another algorithm
        "sha512=" + "a" * 128,
        "sha256=" + "a" * 63,  # too short
        "sha256=" + "a" * 65,  # too long
        "sha256=" + "g" * 64,  # not hex
        "sha256=" + "A" * 43 + "=",  # base64
        "sha256 " + "a" * 64,
        "sha256=" + "a" * 32 + " " + "a" * 32,
    ],
)
@pytest.mark.parametrize("system", ["servicenow", "jira"])
def test_refuses_malformed_signature_headers(system, value):
    headers = sign(system, CURRENT, BODY, NOW)
    headers["X-Hub-Signature" if system == "jira" else "X-Signature"] = value
    error = refused(system, headers)
    assert error.code == "malformed_signature"
    assert "sha256=" in str(error)


def test_refuses_a_signature_header_sent_twice_in_different_case():
    headers = sign_timestamped(CURRENT, BODY, NOW)
    headers["x-signature"] = headers["X-Signature"]
    error = refused("servicenow", headers)
    assert error.code == "malformed_signature"
    assert "2 times" in str(error)


@pytest.mark.parametrize(
    "value",
    [
        "-1767225600",
        "1767225600.5",
        "1.7e9",
        "abc",
        "0x69556d00",
        "2026-01-01T00:00:00Z",
        "\uff11\uff12\uff13",
    ],
)
def test_refuses_malformed_timestamps(value):
    headers = sign_timestamped(CURRENT, BODY, NOW)
    headers["X-Signature-Timestamp"] = value
    error = refused("servicenow", headers)
    assert error.code == "malformed_timestamp"
    assert "unix seconds" in str(error)


def test_a_millisecond_timestamp_is_refused_with_a_hint():
    headers = sign_timestamped(CURRENT, BODY, NOW * 1000)
    error = refused("servicenow", headers)
    assert error.code == "malformed_timestamp"
    assert "milliseconds" in str(error)


# --- refused: timestamp window -----------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
def test_accepts_timestamps_within_the_window_edges_included(offset):
    headers = sign_timestamped(CURRENT, BODY, NOW + offset)
    verify_signature("servicenow", headers, BODY, (CURRENT,), NOW, SKEW)


def test_refuses_a_timestamp_301_seconds_old():
    error = refused("servicenow", sign_timestamped(CURRENT, BODY, NOW - 301))
    assert error.code == "stale_timestamp"
    assert "301 s old" in str(error)
    assert "300 s allowed" in str(error)


def test_refuses_a_timestamp_301_seconds_in_the_future():
    error = refused("servicenow", sign_timestamped(CURRENT, BODY, NOW + 301))
    assert error.code == "future_timestamp"
    assert "301 s in the future" in str(error)
    assert "clock" in str(error)


def test_window_follows_the_configured_clock_skew():
    headers = sign_timestamped(CURRENT, BODY, NOW - 60)
    verify_signature("servicenow", headers, BODY, (CURRENT,), NOW, timedelta(seconds=60))
    assert refused("servicenow", headers, skew=timedelta(seconds=59)).code == "stale_timestamp"


def test_a_fraction_of_a_second_past_the_window_is_refused():
    now = datetime.fromtimestamp(NOW, UTC) + timedelta(milliseconds=1)
    error = refused("servicenow", sign_timestamped(CURRENT, BODY, NOW - 300), now=now)
    assert error.code == "stale_timestamp"


def test_a_stale_forgery_is_reported_as_a_bad_signature_not_as_stale():
    # Only authentic deliveries are told about their age.
    assert refused("servicenow", sign_timestamped(OTHER, BODY, NOW - 3600)).code == "bad_signature"


def test_a_naive_datetime_for_now_is_a_programming_error():
    with pytest.raises(ValueError, match="aware"):
        verify_signature(
            "servicenow", sign_timestamped(CURRENT, BODY, NOW), BODY, (CURRENT,), datetime(2026, 1, 1), SKEW
        )


# --- secrets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["servicenow", "jira"])
def test_no_configured_secret_is_refused_naming_the_setting(system):
    error = refused(system, sign(system, CURRENT, BODY, NOW), secrets=())
    assert error.code == "no_secret_configured"
    assert f"{system.upper()}_WEBHOOK_SECRET" in str(error)


def test_empty_secrets_do_not_count_as_configured():
    assert (
        refused("servicenow", sign_timestamped("", BODY, NOW), secrets=("",)).code == "no_secret_configured"
    )


@pytest.fixture
def counted_compare_digest(monkeypatch):
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    return calls


@pytest.mark.parametrize("system", ["servicenow", "jira"])
@pytest.mark.parametrize("signer", [CURRENT, PREVIOUS, OTHER])
def test_every_configured_secret_is_compared_in_constant_time_even_after_a_match(
    system, signer, counted_compare_digest
):
    headers = sign(system, signer, BODY, NOW)
    if signer == OTHER:
        refused(system, headers)
    else:
        verify_signature(system, headers, BODY, (CURRENT, PREVIOUS), NOW, SKEW)
    assert len(counted_compare_digest) == 2
    expected = {
        sign(system, secret, BODY, NOW)["X-Hub-Signature" if system == "jira" else "X-Signature"].encode()
        for secret in (CURRENT, PREVIOUS)
    }
    assert {a for a, _ in counted_compare_digest} == expected


def test_the_provided_signature_is_only_ever_compared_with_compare_digest(monkeypatch):
    # If the module compared with ==, a patched compare_digest that always refuses would not stop it.
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: False)
    error = refused("servicenow", sign_timestamped(CURRENT, BODY, NOW))
    assert error.code == "bad_signature"


# --- systems -----------------------------------------------------------------------------------------------


def test_xurrent_is_not_supported_yet():
    with pytest.raises(UnsupportedSystemError, match=r"xurrent.*JWT.*not supported yet"):
        verify_signature("xurrent", {}, BODY, (CURRENT,), NOW, SKEW)
    with pytest.raises(UnsupportedSystemError, match="not supported yet"):
        sign("xurrent", CURRENT, BODY, NOW)


def test_unknown_system_is_refused_naming_the_supported_ones():
    with pytest.raises(UnsupportedSystemError, match="servicenow, ivanti, jira"):
        verify_signature("remedy", {}, BODY, (CURRENT,), NOW, SKEW)


def test_scheme_for_each_system():
    assert webhooks.scheme_for("servicenow") == "timestamped"
    assert webhooks.scheme_for("ivanti") == "timestamped"
    assert webhooks.scheme_for("jira") == "jira"


def test_error_codes_are_the_documented_ones():
    assert set(webhooks.SignatureErrorCode.__args__) == {  # type: ignore[attr-defined]
        "missing_signature",
        "malformed_signature",
        "bad_signature",
        "missing_timestamp",
        "malformed_timestamp",
        "stale_timestamp",
        "future_timestamp",
        "no_secret_configured",
    }
