"""ITSM intake: canonical request from ServiceNow and Jira bodies, precise 400s, trigger, instance ids."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.intake import (
    PayloadError,
    TriggerDecision,
    instance_id,
    parse,
    parse_jira,
    parse_servicenow,
    ticket_key,
    trigger_decision,
)
from shared.models import AccessRequest, LinkedIncident, Person
from shared.policy import Policy, load_policy
from shared.webhooks import UnsupportedSystemError

REPO_POLICY = Path(__file__).resolve().parents[2] / "policy" / "policy.toml"
EXCHANGE = "29232cdf-9323-42fd-ade2-1d097af3e4de"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO_POLICY)


def servicenow_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event": "created",
        "sys_id": "9d385017c611228701d22104cc95c371",
        "number": "INC0012345",
        "priority": "1",
        "state": "2",
        "short_description": "Mail flow down",
        "opened_by": {"user_name": "sd.agent", "email": "sd.agent@contoso.com"},
        "assigned_to": {"user_name": "ada.responder", "email": "ada@contoso.com"},
        "assignment_group": "Messaging Operations",
        "incident": {"number": "INC0012345", "state": "2", "major_incident_state": "accepted"},
        "access": {
            "type": "privileged",
            "role": "Exchange Administrator",
            "duration": "PT1H",
            "justification": "Mail flow down for all users",
        },
        "delivery_id": "9d385017c611228701d22104cc95c371:2026-01-01 10:00:00",
    }
    payload.update(overrides)
    return payload


def body_of(payload: object) -> bytes:
    return json.dumps(payload).encode("utf-8")


def set_path(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``payload`` with ``path`` (dotted) set to ``value``, or removed for ``...``."""
    result = copy.deepcopy(payload)
    *parents, last = path.split(".")
    target = result
    for part in parents:
        target = target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return result


def servicenow_error(policy: Policy, payload: object) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        parse_servicenow(body_of(payload), policy)
    return caught.value


def jira_body(**field_overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "summary": "Mail flow down",
        "priority": {"name": "Highest", "id": "1"},
        "status": {"name": "Open", "statusCategory": {"key": "new", "name": "To Do"}},
        "resolution": None,
        "reporter": {
            "accountId": "5b10a2844c20165700ede21g",
            "emailAddress": "sd.agent@contoso.com",
            "displayName": "Service Desk",
        },
        "assignee": {
            "accountId": "5b10ac8d82e05b22cc7d4ef5",
            "emailAddress": "ada@contoso.com",
            "displayName": "Ada Responder",
        },
        "labels": ["major-incident", "mail"],
        "customfield_10050": {"value": "Exchange Administrator", "id": "10100"},
        "customfield_10051": {"value": "privileged", "id": "10110"},
        "customfield_10052": "PT1H",
        "customfield_10053": "Mail flow down for all users",
        "customfield_10054": "OPS-41",
    }
    fields.update(field_overrides)
    return {
        "timestamp": 1767225600123,
        "webhookEvent": "jira:issue_created",
        "issue_event_type_name": "issue_created",
        "issue": {"id": "10042", "key": "OPS-42", "fields": fields},
    }


JIRA_HEADERS = {"X-Atlassian-Webhook-Identifier": "f1e2d3c4-0000-4000-8000-000000000042"}


def jira_error(policy: Policy, payload: object, headers: dict[str, str] | None = None) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        parse_jira(body_of(payload), policy, JIRA_HEADERS if headers is None else headers)
    return caught.value


# --- ServiceNow: happy path --------------------------------------------------------------------------------


def test_servicenow_canonical_payload_becomes_an_access_request(policy):
    request = parse_servicenow(body_of(servicenow_payload()), policy)
    assert request == AccessRequest(
        system="servicenow",
        event="created",
        ticket="INC0012345",
        ticket_id="9d385017c611228701d22104cc95c371",
        priority="P1",
        itsm_priority="1",
        state="2",
        short_description="Mail flow down",
        opener=Person("sd.agent", "sd.agent@contoso.com"),
        assignee=Person("ada.responder", "ada@contoso.com"),
        assignment_group="Messaging Operations",
        incident=LinkedIncident(number="INC0012345", state="2", is_open=True, major_incident=True),
        access_type="privileged",
        role="Exchange Administrator",
        duration=timedelta(hours=1),
        justification="Mail flow down for all users",
        delivery_id="9d385017c611228701d22104cc95c371:2026-01-01 10:00:00",
    )


@pytest.mark.parametrize(
    ("value", "expected"), [("1", "P1"), ("2", "P2"), ("5", "P5"), (1, "P1"), (" 3 ", "P3")]
)
def test_servicenow_priority_goes_through_the_priority_map(policy, value, expected):
    request = parse_servicenow(body_of(servicenow_payload(priority=value)), policy)
    assert request.priority == expected


def test_servicenow_priority_outside_the_map_is_kept_but_has_no_canonical_priority(policy):
    request = parse_servicenow(body_of(servicenow_payload(priority="9")), policy)
    assert request.priority is None
    assert request.itsm_priority == "9"


@pytest.mark.parametrize(
    ("state", "is_open"),
    [
        ("1", True),
        ("2", True),
        ("3", True),
        ("6", False),
        ("7", False),
        ("8", False),
        (7, False),
        ("In Progress", True),
        ("Closed", False),
        ("4", None),
        ("", None),
    ],
)
def test_servicenow_incident_state_decides_whether_the_incident_is_open(policy, state, is_open):
    payload = set_path(servicenow_payload(), "incident.state", state)
    incident = parse_servicenow(body_of(payload), policy).incident
    assert incident is not None
    assert incident.is_open is is_open


@pytest.mark.parametrize(
    ("value", "major"),
    [("accepted", True), ("Accepted", True), ("proposed", False), ("", False), (None, False)],
)
def test_servicenow_major_incident_state_is_checked_against_the_policy(policy, value, major):
    payload = set_path(servicenow_payload(), "incident.major_incident_state", value)
    incident = parse_servicenow(body_of(payload), policy).incident
    assert incident is not None
    assert incident.major_incident is major


def test_servicenow_without_major_incident_state_is_not_a_major_incident(policy):
    payload = set_path(servicenow_payload(), "incident.major_incident_state", ...)
    incident = parse_servicenow(body_of(payload), policy).incident
    assert incident is not None and incident.major_incident is False


@pytest.mark.parametrize("incident", [None, ...])
def test_servicenow_without_an_incident_has_none(policy, incident):
    payload = set_path(servicenow_payload(), "incident", incident)
    assert parse_servicenow(body_of(payload), policy).incident is None


@pytest.mark.parametrize("assigned_to", [None, {"user_name": "", "email": ""}, {}, ...])
def test_servicenow_unassigned_ticket_has_no_assignee(policy, assigned_to):
    payload = set_path(servicenow_payload(), "assigned_to", assigned_to)
    assert parse_servicenow(body_of(payload), policy).assignee is None


def test_servicenow_user_without_email_keeps_the_user_name(policy):
    payload = set_path(servicenow_payload(), "assigned_to", {"user_name": "ada", "email": ""})
    assert parse_servicenow(body_of(payload), policy).assignee == Person("ada", None)


@pytest.mark.parametrize("event", ["created", "updated", "resolved"])
def test_servicenow_events(policy, event):
    assert parse_servicenow(body_of(servicenow_payload(event=event)), policy).event == event


def test_servicenow_text_is_trimmed_and_may_be_unicode(policy):
    payload = servicenow_payload(short_description="  Mailfluss gestört  ")
    assert parse_servicenow(body_of(payload), policy).short_description == "Mailfluss gestört"


# --- ServiceNow: each missing or malformed field -----------------------------------------------------------

REQUIRED_SERVICENOW_FIELDS = [
    "event",
    "sys_id",
    "number",
    "priority",
    "state",
    "short_description",
    "opened_by",
    "incident.number",
    "incident.state",
    "access",
    "access.type",
    "access.role",
    "access.duration",
    "access.justification",
    "delivery_id",
]


@pytest.mark.parametrize("path", REQUIRED_SERVICENOW_FIELDS)
def test_servicenow_each_missing_field_is_named(policy, path):
    error = servicenow_error(policy, set_path(servicenow_payload(), path, ...))
    assert error.field == path
    assert str(error) == f"{path}: missing required field"


@pytest.mark.parametrize("path", REQUIRED_SERVICENOW_FIELDS)
def test_servicenow_each_required_field_set_to_null_is_named(policy, path):
    error = servicenow_error(policy, set_path(servicenow_payload(), path, None))
    assert error.field == path
    assert str(error) == f"{path}: must not be null"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("event", "deleted", "event: 'deleted' is not one of created, updated, resolved"),
        ("event", 1, "event: must be a string, not a number"),
        ("sys_id", "", "sys_id: must not be empty"),
        ("number", "   ", "number: must not be empty"),
        ("priority", True, "priority: must be a string or an integer, not a boolean"),
        ("priority", "", "priority: must not be empty"),
        ("priority", 1.5, "priority: must be a string or an integer, not a number"),
        ("state", ["2"], "state: must be a string or an integer, not an array"),
        ("short_description", {"x": 1}, "short_description: must be a string, not an object"),
        ("opened_by", "sd.agent", "opened_by: must be an object, not a string"),
        ("opened_by", {"user_name": "", "email": ""}, "opened_by: must name a user: user_name or email"),
        ("opened_by.email", 42, "opened_by.email: must be a string or null, not a number"),
        ("assigned_to", "ada", "assigned_to: must be an object or null, not a string"),
        ("assigned_to.user_name", [], "assigned_to.user_name: must be a string or null, not an array"),
        ("assignment_group", 7, "assignment_group: must be a string or null, not a number"),
        ("incident", "INC0012345", "incident: must be an object or null, not a string"),
        ("incident.number", "", "incident.number: must not be empty"),
        ("incident.major_incident_state", True, "incident.major_incident_state: must be a string or null"),
        ("access", [], "access: must be an object, not an array"),
        ("access.type", "", "access.type: must not be empty"),
        ("access.role", None, "access.role: must not be null"),
        (
            "access.duration",
            "two hours",
            "access.duration: 'two hours' is not an ISO 8601 duration such as PT1H",
        ),
        ("access.duration", "PT0S", "access.duration: 'PT0S' must be longer than zero"),
        ("access.duration", "P1M", "access.duration: 'P1M' is not an ISO 8601 duration such as PT1H (years"),
        ("access.duration", "-PT1H", "access.duration: '-PT1H' is not an ISO 8601 duration such as PT1H"),
        ("access.duration", 3600, "access.duration: must be a string, not a number"),
        ("delivery_id", "", "delivery_id: must not be empty"),
    ],
)
def test_servicenow_each_malformed_field_is_named_with_the_reason(policy, path, value, message):
    error = servicenow_error(policy, set_path(servicenow_payload(), path, value))
    assert error.field == path
    assert str(error).startswith(message)


def test_payload_error_is_a_value_error_with_field_and_reason():
    error = PayloadError("access.duration", "'x' is not an ISO 8601 duration such as PT1H")
    assert isinstance(error, ValueError)
    assert (error.field, error.reason) == ("access.duration", "'x' is not an ISO 8601 duration such as PT1H")
    assert str(error) == "access.duration: 'x' is not an ISO 8601 duration such as PT1H"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body: empty"),
        (b"   ", "body: empty"),
        (b"{", "body: not valid JSON: Expecting property name enclosed in double quotes (line 1, column 2)"),
        (b'{"event": "created",}', "body: not valid JSON"),
        (b"[]", "body: must be a JSON object, not an array"),
        (b'"created"', "body: must be a JSON object, not a string"),
        (b"null", "body: must be a JSON object, not null"),
        (b"\xff\xfe{}", "body: not UTF-8 text (invalid byte at offset 0)"),
        (b'{"event": "created", "event": "resolved"}', "body: duplicate key 'event'"),
        (b'{"priority": NaN}', "body: not valid JSON: NaN is not a JSON number"),
        (b"[" * 100_000 + b"]" * 100_000, "body: nested too deeply"),
    ],
)
@pytest.mark.parametrize("parser", ["servicenow", "jira"])
def test_unreadable_bodies_are_refused_naming_the_body(policy, body, message, parser):
    with pytest.raises(PayloadError) as caught:
        parse(parser, body, policy, JIRA_HEADERS)
    assert caught.value.field == "body"
    assert str(caught.value).startswith(message)


def test_first_problem_in_document_order_is_reported(policy):
    payload = set_path(set_path(servicenow_payload(), "number", ...), "access.duration", "soon")
    assert servicenow_error(policy, payload).field == "number"


# --- Jira: happy path --------------------------------------------------------------------------------------


def test_jira_webhook_becomes_an_access_request_through_the_field_map(policy):
    request = parse_jira(body_of(jira_body()), policy, JIRA_HEADERS)
    assert request == AccessRequest(
        system="jira",
        event="created",
        ticket="OPS-42",
        ticket_id="10042",
        priority="P1",
        itsm_priority="Highest",
        state="Open",
        short_description="Mail flow down",
        opener=Person("5b10a2844c20165700ede21g", "sd.agent@contoso.com"),
        assignee=Person("5b10ac8d82e05b22cc7d4ef5", "ada@contoso.com"),
        assignment_group="",
        incident=LinkedIncident(number="OPS-41", state="", is_open=None, major_incident=True),
        access_type="privileged",
        role="Exchange Administrator",
        duration=timedelta(hours=1),
        justification="Mail flow down for all users",
        delivery_id="f1e2d3c4-0000-4000-8000-000000000042",
    )


def test_jira_plain_string_values_work_as_well_as_options(policy):
    body = jira_body(customfield_10050="Exchange Administrator", customfield_10051={"value": "privileged"})
    request = parse_jira(body_of(body), policy, JIRA_HEADERS)
    assert (request.role, request.access_type) == ("Exchange Administrator", "privileged")


def test_jira_delivery_header_is_found_in_any_case(policy):
    headers = {"x-atlassian-webhook-identifier": "abc-1"}
    assert parse_jira(body_of(jira_body()), policy, headers).delivery_id == "abc-1"


def test_jira_delivery_id_falls_back_to_issue_id_and_timestamp(policy):
    assert parse_jira(body_of(jira_body()), policy).delivery_id == "10042:1767225600123"
    assert parse_jira(body_of(jira_body()), policy, {}).delivery_id == "10042:1767225600123"


def test_jira_without_delivery_header_needs_the_timestamp(policy):
    body = jira_body()
    del body["timestamp"]
    error = jira_error(policy, body, headers={})
    assert str(error) == "timestamp: missing required field"
    # With the header, the timestamp is not needed.
    assert (
        parse_jira(body_of(body), policy, JIRA_HEADERS).delivery_id
        == JIRA_HEADERS["X-Atlassian-Webhook-Identifier"]
    )


def test_jira_updated_event(policy):
    body = jira_body()
    body["webhookEvent"] = "jira:issue_updated"
    assert parse_jira(body_of(body), policy, JIRA_HEADERS).event == "updated"


def test_jira_resolution_makes_the_event_resolved(policy):
    body = jira_body(resolution={"name": "Done", "id": "10000"})
    body["webhookEvent"] = "jira:issue_updated"
    assert parse_jira(body_of(body), policy, JIRA_HEADERS).event == "resolved"


def test_jira_status_in_the_done_category_makes_the_event_resolved(policy):
    body = jira_body(status={"name": "Closed", "statusCategory": {"key": "done"}})
    body["webhookEvent"] = "jira:issue_updated"
    request = parse_jira(body_of(body), policy, JIRA_HEADERS)
    assert request.event == "resolved"
    assert request.state == "Closed"


@pytest.mark.parametrize(
    ("priority", "expected"),
    [({"name": "Highest"}, "P1"), ({"name": "High"}, "P2"), ({"name": "Lowest"}, "P5"), ("Highest", "P1")],
)
def test_jira_priority_name_goes_through_the_priority_map(policy, priority, expected):
    assert parse_jira(body_of(jira_body(priority=priority)), policy, JIRA_HEADERS).priority == expected


def test_jira_priority_not_in_the_map_has_no_canonical_priority(policy):
    request = parse_jira(body_of(jira_body(priority={"name": "Critical"})), policy, JIRA_HEADERS)
    assert (request.priority, request.itsm_priority) == (None, "Critical")


def test_jira_unassigned_issue_has_no_assignee(policy):
    assert parse_jira(body_of(jira_body(assignee=None)), policy, JIRA_HEADERS).assignee is None


def test_jira_hidden_email_is_none(policy):
    body = jira_body(assignee={"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Ada"})
    assignee = parse_jira(body_of(body), policy, JIRA_HEADERS).assignee
    assert assignee == Person("5b10ac8d82e05b22cc7d4ef5", None)


def test_jira_server_user_name_is_used_without_account_id(policy):
    body = jira_body(assignee={"name": "ada", "emailAddress": "ada@contoso.com"})
    assert parse_jira(body_of(body), policy, JIRA_HEADERS).assignee == Person("ada", "ada@contoso.com")


@pytest.mark.parametrize(
    ("labels", "major"),
    [(["major-incident"], True), (["MAJOR-INCIDENT"], True), (["mail"], False), ([], False)],
)
def test_jira_major_incident_label(policy, labels, major):
    incident = parse_jira(body_of(jira_body(labels=labels)), policy, JIRA_HEADERS).incident
    assert incident is not None and incident.major_incident is major


def test_jira_without_incident_key_has_no_incident(policy):
    assert parse_jira(body_of(jira_body(customfield_10054=None)), policy, JIRA_HEADERS).incident is None


def test_jira_justification_may_be_empty_or_a_document(policy):
    assert parse_jira(body_of(jira_body(customfield_10053=None)), policy, JIRA_HEADERS).justification == ""
    document = {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": "Mail flow down"}]}],
    }
    request = parse_jira(body_of(jira_body(customfield_10053=document)), policy, JIRA_HEADERS)
    assert request.justification == "Mail flow down"


def test_jira_mapped_incident_state_with_a_status_category_says_open_or_not(policy):
    text = REPO_POLICY.read_text().replace(
        'incident_key = "customfield_10054"',
        'incident_key = "customfield_10054"\nincident_state = "customfield_10055"',
    )
    from shared.policy import parse_policy

    mapped = parse_policy(text)
    open_status = {"name": "Investigating", "statusCategory": {"key": "indeterminate"}}
    closed_status = {"name": "Resolved", "statusCategory": {"key": "done"}}
    for status, is_open in ((open_status, True), (closed_status, False), ("Investigating", None)):
        incident = parse_jira(body_of(jira_body(customfield_10055=status)), mapped, JIRA_HEADERS).incident
        assert incident is not None
        assert incident.is_open is is_open


# --- Jira: each missing or malformed field -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "canonical"),
    [
        ("customfield_10050", "access_role"),
        ("customfield_10051", "access_type"),
        ("customfield_10052", "access_duration"),
    ],
)
@pytest.mark.parametrize("value", [None, ...])
def test_jira_each_missing_access_field_is_named_with_its_field_id(policy, field, canonical, value):
    body = jira_body()
    if value is ...:
        del body["issue"]["fields"][field]
    else:
        body["issue"]["fields"][field] = value
    error = jira_error(policy, body)
    assert error.field == f"issue.fields.{field}"
    assert "missing" in error.reason
    assert f"{canonical}, mapped by itsm.jira.field_map.{canonical}" in error.reason


def test_jira_malformed_duration_names_the_field(policy):
    error = jira_error(policy, jira_body(customfield_10052="two hours"))
    assert error.field == "issue.fields.customfield_10052"
    assert str(error).startswith(
        "issue.fields.customfield_10052: 'two hours' is not an ISO 8601 duration such as PT1H"
    )


@pytest.mark.parametrize(
    ("fields", "path", "fragment"),
    [
        (
            {"customfield_10050": [{"value": "Exchange Administrator"}]},
            "issue.fields.customfield_10050",
            "not an array",
        ),
        ({"customfield_10051": {"id": "10110"}}, "issue.fields.customfield_10051", "not an object"),
        ({"customfield_10051": {"value": "  "}}, "issue.fields.customfield_10051", "must not be empty"),
        ({"priority": None}, "issue.fields.priority", "missing"),
        ({"reporter": None}, "issue.fields.reporter", "missing"),
        ({"reporter": "sd.agent"}, "issue.fields.reporter", "must be a Jira user object"),
        ({"assignee": {"displayName": "Ada"}}, "issue.fields.assignee", "must name a user"),
    ],
)
def test_jira_each_malformed_field_is_named(policy, fields, path, fragment):
    error = jira_error(policy, jira_body(**fields))
    assert error.field == path
    assert fragment in error.reason


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [
        (lambda body: body.pop("webhookEvent"), "webhookEvent", "missing required field"),
        (lambda body: body.update(webhookEvent="jira:issue_deleted"), "webhookEvent", "is not handled"),
        (lambda body: body.update(webhookEvent="comment_created"), "webhookEvent", "Issue updated"),
        (lambda body: body.pop("issue"), "issue", "missing required field"),
        (lambda body: body.update(issue=[]), "issue", "must be an object"),
        (lambda body: body["issue"].pop("id"), "issue.id", "missing required field"),
        (lambda body: body["issue"].pop("key"), "issue.key", "missing required field"),
        (lambda body: body["issue"].pop("fields"), "issue.fields", "missing required field"),
    ],
)
def test_jira_envelope_problems_are_named(policy, change, path, fragment):
    body = jira_body()
    change(body)
    error = jira_error(policy, body)
    assert error.field == path
    assert fragment in error.reason


# --- dispatch ----------------------------------------------------------------------------------------------


def test_parse_dispatches_by_system(policy):
    assert parse("servicenow", body_of(servicenow_payload()), policy).system == "servicenow"
    assert parse("jira", body_of(jira_body()), policy, JIRA_HEADERS).system == "jira"


@pytest.mark.parametrize("system", ["ivanti", "xurrent", "remedy"])
def test_parse_refuses_systems_without_a_parser(policy, system):
    with pytest.raises(UnsupportedSystemError):
        parse(system, b"{}", policy)


# --- trigger -----------------------------------------------------------------------------------------------


def request_with(policy: Policy, **changes: Any) -> AccessRequest:
    return dataclasses.replace(parse_servicenow(body_of(servicenow_payload()), policy), **changes)


def test_p1_privileged_within_two_hours_starts(policy):
    decision = trigger_decision(request_with(policy), policy)
    assert decision.starts
    assert decision == TriggerDecision(
        starts=True, reason="priority P1, access type 'privileged', duration PT1H (at most PT2H)"
    )


def test_exactly_the_maximum_duration_starts(policy):
    assert trigger_decision(request_with(policy, duration=timedelta(hours=2)), policy).starts


def test_p2_is_ignored_naming_the_priority(policy):
    decision = trigger_decision(request_with(policy, priority="P2", itsm_priority="2"), policy)
    assert decision == TriggerDecision(starts=False, reason="priority P2 is not P1")


def test_non_privileged_access_is_ignored_naming_the_access_type(policy):
    decision = trigger_decision(request_with(policy, access_type="standard"), policy)
    assert decision == TriggerDecision(starts=False, reason="access type 'standard' is not 'privileged'")


def test_access_type_is_compared_ignoring_case(policy):
    assert trigger_decision(request_with(policy, access_type="Privileged"), policy).starts


def test_three_hours_is_ignored_naming_the_duration(policy):
    decision = trigger_decision(request_with(policy, duration=timedelta(hours=3)), policy)
    assert decision == TriggerDecision(starts=False, reason="duration PT3H is longer than the PT2H allowed")


def test_resolved_event_never_starts(policy):
    decision = trigger_decision(request_with(policy, event="resolved"), policy)
    assert not decision.starts
    assert decision.reason.startswith("the ticket is resolved")


def test_priority_outside_the_map_is_ignored_naming_the_map(policy):
    decision = trigger_decision(request_with(policy, priority=None, itsm_priority="9"), policy)
    assert decision == TriggerDecision(
        starts=False, reason="priority '9' is not in itsm.servicenow.priority_map, so it is not P1"
    )


def test_every_failed_condition_is_named(policy):
    request = request_with(
        policy, event="resolved", priority="P3", access_type="standard", duration=timedelta(hours=3)
    )
    reason = trigger_decision(request, policy).reason
    assert reason.split("; ") == [
        "the ticket is resolved (a resolution ends requests, it never starts one)",
        "priority P3 is not P1",
        "access type 'standard' is not 'privileged'",
        "duration PT3H is longer than the PT2H allowed",
    ]


def test_jira_p2_is_ignored(policy):
    request = parse_jira(body_of(jira_body(priority={"name": "High"})), policy, JIRA_HEADERS)
    assert trigger_decision(request, policy) == TriggerDecision(starts=False, reason="priority P2 is not P1")


# --- instance ids ------------------------------------------------------------------------------------------

_VALID_ID = re.compile(r"[A-Za-z0-9_~-]{1,80}")
_FORBIDDEN = set("/\\#?") | {chr(code) for code in range(32)} | {chr(127)}


def test_instance_id_example_from_the_brief():
    assert instance_id("servicenow", "INC0012345", EXCHANGE, 1) == "servicenow-INC0012345-29232cdf-g1"
    assert instance_id("jira", "OPS-42", EXCHANGE, 3) == "jira-OPS-42-29232cdf-g3"


def test_instance_id_is_deterministic_and_lowercases_the_template_id():
    assert instance_id("jira", "OPS-42", EXCHANGE.upper(), 1) == instance_id("jira", "OPS-42", EXCHANGE, 1)


ODD_TICKETS = [
    "OPS/42",
    "OPS\\42",
    "OPS#42",
    "OPS?42",
    "OPS 42",
    "OPS\n42",
    "OPS\t42\x00",
    "OPS\x7f42",
    "Störung-42",
    "工单-42",
    "../../etc",
    "a" * 500,
    "~",
    "x" * 41,
    "\ud800",
]


@pytest.mark.parametrize("ticket", ODD_TICKETS)
def test_instance_id_is_valid_for_odd_ticket_text(ticket):
    value = instance_id("servicenow", ticket, EXCHANGE, 12)
    assert _VALID_ID.fullmatch(value), value
    assert not set(value) & _FORBIDDEN
    assert value.startswith("servicenow-")
    assert value.endswith("-29232cdf-g12")


def test_odd_tickets_that_sanitise_alike_still_get_different_ids():
    tickets = ["OPS/42", "OPS?42", "OPS#42", "OPS 42", "OPS_42", "OPS__42", "a" * 500, "a" * 501]
    ids = {instance_id("jira", ticket, EXCHANGE, 1) for ticket in tickets}
    assert len(ids) == len(tickets)


def test_generation_and_role_and_system_change_the_id():
    base = instance_id("servicenow", "INC1", EXCHANGE, 1)
    assert instance_id("servicenow", "INC1", EXCHANGE, 2) != base
    assert instance_id("servicenow", "INC1", "62e90394-69f5-4237-9190-012177145e10", 1) != base
    assert instance_id("jira", "INC1", EXCHANGE, 1) != base


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("servicenow", "INC1", EXCHANGE, 0), "generation"),
        (("servicenow", "INC1", EXCHANGE, -1), "generation"),
        (("servicenow", "INC1", EXCHANGE, True), "generation"),
        (("servicenow", "INC1", "Exchange Administrator", 1), "role_template_id"),
        (("servicenow", "", EXCHANGE, 1), "ticket"),
        (("remedy", "INC1", EXCHANGE, 1), "unknown ITSM system"),
    ],
)
def test_instance_id_refuses_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        instance_id(*args)


def test_ticket_key_is_the_prefix_of_every_instance_id_of_the_ticket():
    key = ticket_key("servicenow", "INC/1")
    assert instance_id("servicenow", "INC/1", EXCHANGE, 4).startswith(key + "-")
    assert ticket_key("servicenow", "INC0012345") == "servicenow-INC0012345"


# --- the canonical request as JSON -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"assignee": None, "incident": None, "priority": None},
        {"duration": timedelta(hours=1, minutes=30, seconds=0.5)},
        {"short_description": "Mailfluss gestört ✉", "event": "resolved"},
    ],
)
def test_access_request_round_trips_through_json(policy, changes):
    request = request_with(policy, **changes)
    assert AccessRequest.from_json(request.to_json()) == request
    assert AccessRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request


def test_jira_request_round_trips_through_json(policy):
    request = parse_jira(body_of(jira_body()), policy, JIRA_HEADERS)
    assert AccessRequest.from_json(request.to_json()) == request


def test_duration_travels_as_iso_8601_text(policy):
    data = request_with(policy, duration=timedelta(minutes=90)).to_dict()
    assert data["duration"] == "PT1H30M"
    assert json.loads(request_with(policy).to_json())["duration"] == "PT1H"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda data: data.update(duration="soon"), "request.duration"),
        (lambda data: data.update(system="remedy"), "request.system"),
        (lambda data: data.update(event="deleted"), "request.event"),
        (lambda data: data.update(priority="P9"), "request.priority"),
        (lambda data: data.pop("ticket"), "request.ticket"),
        (lambda data: data.update(opener=None), "request.opener"),
        (lambda data: data["incident"].update(is_open="yes"), "request.incident.is_open"),
    ],
)
def test_from_dict_names_the_bad_key(policy, change, message):
    data = request_with(policy).to_dict()
    change(data)
    with pytest.raises(ValueError, match=re.escape(message)):
        AccessRequest.from_dict(data)


def test_from_json_refuses_text_that_is_not_json():
    with pytest.raises(ValueError, match="not valid JSON"):
        AccessRequest.from_json("{")


def test_access_request_is_frozen(policy):
    request = request_with(policy)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.role = "Global Administrator"  # type: ignore[misc]
