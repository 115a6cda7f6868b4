"""The ServiceNow business rule (itsm/servicenow/emergency_access_business_rule.js) and the app agree.

The rule runs under Node.js with stubs of the ServiceNow server APIs it calls (servicenow_stubs.js:
GlideRecord fields, gs.getProperty, sn_ws.RESTMessageV2, GlideCertificateEncryption.generateMac with a
base64 key and a base64 answer, as ServiceNow documents it). What it would have sent (endpoint, headers,
body) then goes through the app's own code: shared.webhooks.verify_signature with the same secret, and
shared.intake.parse with the repository policy. A tampered body, a wrong secret or a late delivery must
fail, as the app answers them in Azure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.intake import instance_id, parse, request_digest, trigger_decision
from shared.models import AccessRequest, Person
from shared.policy import Policy, load_policy
from shared.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, verify_signature

REPO = Path(__file__).resolve().parents[2]
RULE = REPO / "itsm" / "servicenow" / "emergency_access_business_rule.js"
STUBS = Path(__file__).resolve().with_name("servicenow_stubs.js")
NODE = shutil.which("node")


SECRET = "6f1c3e0a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e"  # openssl rand -hex 32
OLD_SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
ENDPOINT = "https://func-pim-abc123.azurewebsites.net/api/itsm/servicenow"
NOW_MS = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z
NOW = NOW_MS // 1000
SYS_ID = "9d385017c611228701d22104cc95c371"
GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO / "policy" / "policy.toml")


def incident(**changes: Any) -> dict[str, Any]:
    """A P1 incident asking for Global Administrator for an hour, as the GlideRecord stub reads it."""
    record: dict[str, Any] = {
        "sys_id": SYS_ID,
        "number": "INC0012345",
        "priority": "1",
        "state": "2",
        "short_description": "Tenant-wide sign-in failures",
        "opened_by": {"sys_id": "a" * 32, "user_name": "sd.agent", "email": "sd.agent@contoso.com"},
        "assigned_to": {"sys_id": "b" * 32, "user_name": "ada.responder", "email": "ada@contoso.com"},
        "assignment_group": "c" * 32,
        "major_incident_state": "accepted",
        "u_pim_role": "global_administrator",
        "u_pim_access_type": "privileged",
        "u_pim_duration": "PT1H",
        "u_pim_justification": "Conditional access policy locks out every user",
        "sys_updated_on": "2026-01-01 00:00:00",
        "sys_mod_count": "0",
    }
    record.update(changes)
    return record


def scenario(record: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    return {
        "record": incident() if record is None else record,
        # Choice labels and reference display values, as getDisplayValue answers them.
        "display": {"u_pim_role": "Global Administrator", "assignment_group": "Identity Operations"},
        "properties": {"x_pim.webhook_endpoint": ENDPOINT, "x_pim.webhook_secret": SECRET},
        "nowMs": NOW_MS,
        **options,
    }


def run_rule(*scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the business rule once per scenario in one Node.js process; what each run did."""
    # Node is part of the setup (make setup installs Azurite and the Kusto language service with npm): its
    # absence is a broken machine, not a reason to skip the check that the ITSM side and the app agree.
    assert NODE is not None, "node (Node.js) is not on PATH: make setup needs it"
    completed = subprocess.run(
        [NODE, str(STUBS), str(RULE)],
        input=json.dumps({"scenarios": list(scenarios)}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, f"node failed:\n{completed.stderr}"
    results: list[dict[str, Any]] = json.loads(completed.stdout)["results"]
    return results


def only_request(result: dict[str, Any]) -> dict[str, Any]:
    assert len(result["requests"]) == 1, result
    request: dict[str, Any] = result["requests"][0]
    return request


def received(request: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """The headers and the raw body as the app would receive them."""
    return dict(request["headers"]), request["body"].encode("utf-8")


def verify(
    headers: dict[str, str], body: bytes, secrets: tuple[str, ...] = (SECRET,), now: float = NOW
) -> None:
    verify_signature("servicenow", headers, body, secrets, now, timedelta(seconds=300))


def test_a_new_p1_ticket_is_signed_as_the_app_verifies_and_parses_into_the_request(policy: Policy) -> None:
    request = only_request(run_rule(scenario())[0])
    assert request["endpoint"] == ENDPOINT
    assert request["method"].upper() == "POST"
    assert request["messageName"] is None  # no REST Message record to maintain: endpoint from a property
    headers, body = received(request)
    assert headers["Content-Type"] == "application/json"
    assert headers[TIMESTAMP_HEADER] == str(NOW)  # unix seconds, not GlideDateTime's milliseconds
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", headers[SIGNATURE_HEADER])

    verify(headers, body)  # the app's own check: raises SignatureError on any mismatch

    parsed = parse("servicenow", body, policy, headers)
    assert parsed == AccessRequest(
        system="servicenow",
        event="created",
        ticket="INC0012345",
        ticket_id=SYS_ID,
        priority="P1",
        itsm_priority="1",
        state="2",
        short_description="Tenant-wide sign-in failures",
        opener=Person("sd.agent", "sd.agent@contoso.com"),
        assignee=Person("ada.responder", "ada@contoso.com"),
        assignment_group="Identity Operations",
        incident=parsed.incident,
        access_type="privileged",
        role="Global Administrator",
        duration=timedelta(hours=1),
        justification="Conditional access policy locks out every user",
        delivery_id=f"{SYS_ID}:2026-01-01 00:00:00:0",
    )
    assert parsed.incident is not None
    assert (parsed.incident.number, parsed.incident.is_open, parsed.incident.major_incident) == (
        "INC0012345",
        True,
        True,
    )
    decision = trigger_decision(parsed, policy)
    assert decision.starts, decision.reason
    assert policy.role(parsed.role).template_id == GLOBAL_ADMINISTRATOR
    assert (
        instance_id("servicenow", parsed.ticket, GLOBAL_ADMINISTRATOR, 1)
        == "servicenow-INC0012345-62e90394-g1"
    )


def test_a_tampered_body_a_wrong_secret_or_a_late_delivery_is_refused() -> None:
    headers, body = received(only_request(run_rule(scenario())[0]))
    verify(headers, body)

    longer = body.replace(b'"PT1H"', b'"PT2H"')
    assert longer != body
    someone_else = body.replace(b"ada.responder", b"eve.attacker")
    for tampered in (longer, someone_else, body + b" "):
        with pytest.raises(SignatureError) as refused:
            verify(headers, tampered)
        assert refused.value.code == "bad_signature"

    with pytest.raises(SignatureError) as wrong_secret:
        verify(headers, body, secrets=(OLD_SECRET,))
    assert wrong_secret.value.code == "bad_signature"

    moved = {**headers, TIMESTAMP_HEADER: str(NOW + 1)}  # the timestamp is signed too
    with pytest.raises(SignatureError) as retimed:
        verify(moved, body)
    assert retimed.value.code == "bad_signature"

    with pytest.raises(SignatureError) as late:
        verify(headers, body, now=NOW + 301)
    assert late.value.code == "stale_timestamp"


def test_a_resolution_reaches_the_app_as_a_resolved_event(policy: Policy) -> None:
    results = run_rule(*(scenario(incident(state=state, sys_mod_count="7")) for state in ("6", "7", "8")))
    for state, result in zip(("6", "7", "8"), results, strict=True):
        headers, body = received(only_request(result))
        verify(headers, body)
        parsed = parse("servicenow", body, policy, headers)
        assert parsed.event == "resolved", state
        assert parsed.incident is not None and parsed.incident.is_open is False
        assert not trigger_decision(parsed, policy).starts
        assert parsed.delivery_id == f"{SYS_ID}:2026-01-01 00:00:00:7"


def test_an_update_that_is_not_a_resolution_is_an_update(policy: Policy) -> None:
    headers, body = received(only_request(run_rule(scenario(incident(state="3", sys_mod_count="2")))[0]))
    verify(headers, body)
    assert parse("servicenow", body, policy, headers).event == "updated"


def test_non_ascii_text_is_sent_as_ascii_json_and_still_verifies(policy: Policy) -> None:
    justification = (
        "M\u00fcller\u2019s tenant \u2013 sign-ins fail \u2713 \U0001f525"  # astral: a surrogate pair
    )
    record = incident(u_pim_justification=justification, short_description="Störung: Anmeldung")
    headers, body = received(only_request(run_rule(scenario(record))[0]))
    assert max(body) < 0x80, "the body must be plain ASCII (every other character escaped as \\uXXXX)"
    verify(headers, body)
    parsed = parse("servicenow", body, policy, headers)
    assert (parsed.justification, parsed.short_description) == (justification, "Störung: Anmeldung")


def test_an_unassigned_ticket_and_an_empty_optional_field_parse(policy: Policy) -> None:
    record = incident(assigned_to=None, u_pim_justification="")
    record.pop("major_incident_state")  # an instance without Major Incident Management
    headers, body = received(only_request(run_rule(scenario(record))[0]))
    verify(headers, body)
    parsed = parse("servicenow", body, policy, headers)
    assert parsed.assignee is None
    assert parsed.justification == ""
    assert parsed.incident is not None and parsed.incident.major_incident is False


def test_the_same_change_sent_twice_is_the_same_request(policy: Policy) -> None:
    # Two jobs for one change (a retry, or two quick saves read back as one): one delivery id, one request.
    parsed = []
    for result in run_rule(scenario(), scenario(nowMs=NOW_MS + 60_000)):
        headers, body = received(only_request(result))
        parsed.append(parse("servicenow", body, policy, headers))
    assert parsed[0].delivery_id == parsed[1].delivery_id
    assert request_digest(parsed[0]) == request_digest(parsed[1])


def test_every_signature_is_hex_of_the_hmac_whatever_the_secret_and_time() -> None:
    # Many MACs through the rule's base64-to-hex conversion (bytes below 0x10, padding), each checked
    # against Python's HMAC of the same text.
    runs = []
    for n in range(40):
        secret = hashlib.sha256(f"secret-{n}".encode()).hexdigest()
        runs.append(
            scenario(
                incident(number=f"INC{n:07d}"),
                properties={"x_pim.webhook_endpoint": ENDPOINT, "x_pim.webhook_secret": secret},
                nowMs=NOW_MS + n * 7919,
            )
        )
    for n, result in enumerate(run_rule(*runs)):
        headers, body = received(only_request(result))
        secret = hashlib.sha256(f"secret-{n}".encode()).hexdigest()
        verify(headers, body, secrets=(secret,), now=(NOW_MS + n * 7919) // 1000)
        assert result["macs"] == [
            {"algorithm": "HmacSHA256", "key": base64.b64encode(secret.encode()).decode()}
        ]


def test_whitespace_around_the_secret_property_is_ignored_as_the_app_ignores_it() -> None:
    pasted = {"x_pim.webhook_endpoint": ENDPOINT, "x_pim.webhook_secret": f" {SECRET}\n"}
    verify(*received(only_request(run_rule(scenario(properties=pasted))[0])))


def test_during_a_rotation_the_app_accepts_the_old_and_the_new_secret() -> None:
    # docs/deploy.md "Rotating a webhook secret": the app holds the new secret as current and the old one
    # as _PREVIOUS while ServiceNow still signs with the old one, then with the new one.
    old, new = run_rule(
        scenario(properties={"x_pim.webhook_endpoint": ENDPOINT, "x_pim.webhook_secret": OLD_SECRET}),
        scenario(),
    )
    for result in (old, new):
        verify(*received(only_request(result)), secrets=(SECRET, OLD_SECRET))
    with pytest.raises(SignatureError):
        verify(*received(only_request(old)), secrets=(SECRET,))  # after the rotation ends


def test_transient_failures_are_retried_with_a_fresh_signature_and_logged() -> None:
    answers = [
        {"status": 503, "body": "busy"},
        {"throw": "Connection reset"},
        {"status": 202, "body": '{"requestId": "r1"}'},
    ]
    result = run_rule(scenario(responses=answers, nowMs=NOW_MS))[0]
    assert len(result["requests"]) == 3
    for request in result["requests"]:
        verify(*received(request))
    assert result["sleeps"] == [2000, 4000]
    levels = [log["level"] for log in result["logs"]]
    assert levels == ["warn", "warn", "info"]
    assert "INC0012345 (created) answered 202" in result["logs"][-1]["message"]
    assert all(SECRET not in log["message"] for log in result["logs"])


def test_a_refusal_is_logged_once_and_not_retried() -> None:
    refusal = '{"error": "X-Signature does not match with any configured servicenow webhook secret"}'
    result = run_rule(scenario(responses=[{"status": 401, "body": refusal}]))[0]
    assert len(result["requests"]) == 1
    assert result["sleeps"] == []
    assert [log["level"] for log in result["logs"]] == ["error"]
    assert "answered 401" in result["logs"][0]["message"] and "X-Signature" in result["logs"][0]["message"]


def test_nothing_is_sent_without_an_endpoint_a_usable_secret_or_a_role() -> None:
    no_secret, short_secret, no_endpoint, no_role = run_rule(
        scenario(properties={"x_pim.webhook_endpoint": ENDPOINT}),
        scenario(properties={"x_pim.webhook_endpoint": ENDPOINT, "x_pim.webhook_secret": "too-short"}),
        scenario(properties={"x_pim.webhook_secret": SECRET}),
        scenario(incident(u_pim_role=""), display={}),
    )
    for result in (no_secret, short_secret, no_endpoint):
        assert result["requests"] == []
        assert [log["level"] for log in result["logs"]] == ["error"]
    assert "x_pim.webhook_secret" in no_secret["logs"][0]["message"]
    assert "too-short" not in short_secret["logs"][0]["message"]
    assert "x_pim.webhook_endpoint" in no_endpoint["logs"][0]["message"]
    assert no_role == {"requests": [], "logs": [], "sleeps": [], "macs": []}


@pytest.mark.parametrize(
    ("operation", "changed", "sends"),
    [
        ("insert", [], True),
        ("update", ["priority"], True),
        ("update", ["state"], True),  # a resolution, among others
        ("update", ["assigned_to"], True),
        ("update", ["u_pim_role"], True),
        ("update", ["u_pim_access_type"], True),
        ("update", ["u_pim_duration"], True),
        ("update", ["u_pim_justification"], True),
        ("update", ["work_notes"], False),  # the app's own notes must not come back as deliveries
        ("update", ["comments", "short_description", "assignment_group"], False),
        ("update", [], False),
    ],
)
def test_the_condition_fires_on_the_fields_the_app_decides_on(
    operation: str, changed: list[str], sends: bool
) -> None:
    record = incident(work_notes="", comments="")
    result = run_rule({"mode": "condition", "record": record, "operation": operation, "changed": changed})[0]
    assert result["value"] is sends, result["condition"]


def test_the_condition_fits_a_254_character_field() -> None:
    condition = re.search(r"^// CONDITION: (.+)$", RULE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert condition is not None
    assert len(condition.group(1)) <= 254


def test_the_rule_is_es5_for_the_global_scope() -> None:
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", RULE.read_text(encoding="utf-8"), flags=re.DOTALL)
    for construct in (r"=>", r"`", r"\blet\b", r"\bconst\b", r"\bclass\b", r"\.\.\."):
        assert not re.search(construct, code), f"not ES5: {construct}"
