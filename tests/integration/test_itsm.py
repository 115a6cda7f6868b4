"""The ITSM adapters (shared.itsm) against the ServiceNow and Jira simulators over real HTTP: notes, states,
fresh incident reads and errors, read back through the simulators' control API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from local.simulators.process import SimulatorProcess
from shared.itsm import (
    JiraTickets,
    ServiceNowTickets,
    TicketError,
    TicketRef,
    TicketSystem,
    TransitionNotFoundError,
    adf_document,
    ticket_system,
)
from shared.policy import Policy, load_policy, parse_policy
from shared.settings import Settings, SettingsError
from shared.webhooks import UnsupportedSystemError
from tests.unit.test_settings import minimal_env

pytestmark = pytest.mark.stack

REPO_POLICY_PATH = Path(__file__).resolve().parents[2] / "policy" / "policy.toml"
SN_USER = "svc-pim"
SN_PASSWORD = "sn-password-never-shown-0815"
JIRA_EMAIL = "pim-bot@contoso.test"
JIRA_TOKEN = "jira-token-never-shown-4711"
T = TypeVar("T")


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO_POLICY_PATH)


def servicenow(sim: SimulatorProcess, policy: Policy, **options: Any) -> ServiceNowTickets:
    return ServiceNowTickets(
        sim.servicenow_base_url, SN_USER, SN_PASSWORD, policy.itsm["servicenow"], **options
    )


def jira(sim: SimulatorProcess, policy: Policy, **options: Any) -> JiraTickets:
    return JiraTickets(sim.jira_base_url, JIRA_EMAIL, JIRA_TOKEN, policy.itsm["jira"], **options)


def run(make: Callable[[], TicketSystem], work: Callable[[TicketSystem], Awaitable[T]]) -> T:
    """Build the adapter inside the event loop (its httpx client belongs to one loop) and close it."""

    async def main() -> T:
        tickets = make()
        try:
            return await work(tickets)
        finally:
            await tickets.aclose()

    return asyncio.run(main())


def fail(make: Callable[[], TicketSystem], work: Callable[[TicketSystem], Awaitable[Any]]) -> TicketError:
    with pytest.raises(TicketError) as caught:
        run(make, work)
    return caught.value


def calls(sim: SimulatorProcess, service: str, method: str) -> list[Any]:
    """Recorded calls of one method (``sim.calls(method=...)`` clashes with ``control``'s own parameter)."""
    return [call for call in sim.calls(service) if call["method"] == method]


def fault(sim: SimulatorProcess, service: str, status: int, **extra: Any) -> None:
    sim.control("POST", "faults", {"service": service, "status": status, **extra})


# --- ServiceNow ------------------------------------------------------------------------------------------


def seed_incident(sim: SimulatorProcess, **fields: Any) -> dict[str, Any]:
    spec = {"number": "INC0012345", "priority": "1", "state": "2", "short_description": "Mail flow down"}
    incident: dict[str, Any] = sim.seed("servicenow/incidents", {**spec, **fields})
    return incident


def sn_ref(incident: dict[str, Any]) -> TicketRef:
    return TicketRef("servicenow", incident["number"], incident["sys_id"])


def sn_view(sim: SimulatorProcess, key: str) -> dict[str, Any]:
    view: dict[str, Any] = sim.control("GET", f"servicenow/incidents/{key}")
    return view


def test_servicenow_note_lands_in_the_work_notes_journal(sim: SimulatorProcess, policy: Policy) -> None:
    incident = seed_incident(sim)
    text = "Validation passed: responder on call\nrole Exchange Administrator allowed"
    call = run(lambda: servicenow(sim, policy), lambda t: t.add_note(sn_ref(incident), text))
    assert (call.system, call.method, call.status) == ("servicenow", "PATCH", 200)
    assert call.path == f"/api/now/table/incident/{incident['sys_id']}"
    view = sn_view(sim, incident["sys_id"])
    assert [note["value"] for note in view["work_notes"]] == [text]
    assert view["comments"] == []  # never customer-visible comments
    assert view["work_notes"][0]["sys_created_by"] == SN_USER
    (recorded,) = calls(sim, "servicenow", "PATCH")
    assert recorded["identity"] == SN_USER
    assert recorded["body"] == {"work_notes": text}


def test_servicenow_state_is_a_labelled_work_note_and_the_incident_state_is_untouched(
    sim: SimulatorProcess, policy: Policy
) -> None:
    incident = seed_incident(sim)
    call = run(lambda: servicenow(sim, policy), lambda t: t.set_state(sn_ref(incident), "rejected"))
    assert call.status == 200 and "[Access rejected]" in call.summary
    view = sn_view(sim, incident["number"])
    (note,) = view["work_notes"]
    assert note["value"].startswith("[Access rejected] ")
    assert view["incident"]["state"] == "2"
    assert [update["fields"] for update in view["updates"]] == [{"work_notes": note["value"]}]


def test_servicenow_state_uses_the_policy_label(sim: SimulatorProcess, policy: Policy) -> None:
    text = REPO_POLICY_PATH.read_text().replace(
        'in_progress = "Work in progress"', 'in_progress = "Emergency access working"', 1
    )
    custom = parse_policy(text)
    incident = seed_incident(sim)
    run(lambda: servicenow(sim, custom), lambda t: t.set_state(sn_ref(incident), "in_progress"))
    (note,) = sn_view(sim, incident["sys_id"])["work_notes"]
    assert note["value"].startswith("[Emergency access working] ")


@pytest.mark.parametrize(
    ("fields", "is_open", "major"),
    [
        ({"state": "2", "major_incident_state": "accepted"}, True, True),
        ({"state": "1"}, True, False),
        ({"state": "3", "major_incident_state": "proposed"}, True, False),
        ({"state": "6", "major_incident_state": "accepted"}, False, True),
        ({"state": "7"}, False, False),
        ({"state": "8"}, False, False),
    ],
)
def test_servicenow_get_incident_reads_open_and_major(
    sim: SimulatorProcess, policy: Policy, fields: dict[str, str], is_open: bool, major: bool
) -> None:
    seed_incident(sim, **fields)
    seed_incident(sim, number="INC0099999", state="7")  # another incident, not read
    incident = run(lambda: servicenow(sim, policy), lambda t: t.get_incident("INC0012345"))
    assert incident is not None
    assert (incident.number, incident.state) == ("INC0012345", fields["state"])
    assert (incident.is_open, incident.major_incident) == (is_open, major)
    (recorded,) = calls(sim, "servicenow", "GET")
    assert recorded["path"] == "/api/now/table/incident"
    assert recorded["query"]["sysparm_query"] == "number=INC0012345"
    assert recorded["query"]["sysparm_limit"] == "1"


def test_servicenow_get_incident_of_an_unknown_number_is_none(sim: SimulatorProcess, policy: Policy) -> None:
    seed_incident(sim)
    assert run(lambda: servicenow(sim, policy), lambda t: t.get_incident("INC0000404")) is None


def test_servicenow_incident_number_that_could_change_the_query_is_refused(
    sim: SimulatorProcess, policy: Policy
) -> None:
    with pytest.raises(ValueError, match="not a ServiceNow incident number"):
        run(lambda: servicenow(sim, policy), lambda t: t.get_incident("INC1^ORnumberISNOTEMPTY"))
    assert sim.calls("servicenow") == []


def test_servicenow_unknown_ticket_is_a_404_ticket_error(sim: SimulatorProcess, policy: Policy) -> None:
    ref = TicketRef("servicenow", "INC0000404", "0" * 32)
    error = fail(lambda: servicenow(sim, policy), lambda t: t.add_note(ref, "hello"))
    assert error.status == 404 and not error.transient
    assert error.path == f"/api/now/table/incident/{'0' * 32}"
    assert "No Record found" in error.itsm_message
    assert "404" in str(error) and "No Record found" in str(error)


def test_servicenow_401_is_a_ticket_error_that_names_the_status_without_credentials(
    sim: SimulatorProcess, policy: Policy
) -> None:
    incident = seed_incident(sim)
    fault(sim, "servicenow", 401, message="User Not Authenticated")
    error = fail(lambda: servicenow(sim, policy), lambda t: t.add_note(sn_ref(incident), "x"))
    assert error.status == 401 and not error.transient
    assert error.itsm_message.startswith("User Not Authenticated")
    for text in (str(error), repr(error), json.dumps(error.to_dict())):
        assert SN_PASSWORD not in text


def test_servicenow_request_without_credentials_is_refused_by_the_service(sim: SimulatorProcess) -> None:
    # The simulator accepts any Basic credentials; without them it answers as ServiceNow does.
    response = httpx.get(f"{sim.servicenow_base_url}/api/now/table/incident")
    assert response.status_code == 401


@pytest.mark.parametrize("status", [429, 500, 503])
def test_servicenow_429_and_5xx_are_transient_and_not_retried(
    sim: SimulatorProcess, policy: Policy, status: int
) -> None:
    incident = seed_incident(sim)
    fault(sim, "servicenow", status, retry_after=7)
    error = fail(lambda: servicenow(sim, policy), lambda t: t.set_state(sn_ref(incident), "pending_approval"))
    assert error.status == status and error.transient
    assert len(sim.calls("servicenow")) == 1  # no retry inside the adapter
    assert sn_view(sim, incident["sys_id"])["work_notes"] == []


def test_no_answer_in_time_is_a_transient_ticket_error(sim: SimulatorProcess, policy: Policy) -> None:
    seed_incident(sim)
    sim.control("POST", "faults", {"service": "servicenow", "latency_ms": 2000})
    error = fail(
        lambda: servicenow(sim, policy, timeout=httpx.Timeout(0.3)), lambda t: t.get_incident("INC0012345")
    )
    assert error.status is None and error.transient
    assert "no answer in time" in str(error)


def test_servicenow_refuses_a_ticket_of_another_system_or_a_bad_sys_id(
    sim: SimulatorProcess, policy: Policy
) -> None:
    with pytest.raises(ValueError, match="belongs to jira"):
        run(lambda: servicenow(sim, policy), lambda t: t.add_note(TicketRef("jira", "OPS-1", "10001"), "x"))
    with pytest.raises(ValueError, match="is not a sys_id"):
        run(
            lambda: servicenow(sim, policy),
            lambda t: t.add_note(TicketRef("servicenow", "INC1", "../sys_user/abc"), "x"),
        )
    with pytest.raises(ValueError, match="needs text"):
        run(
            lambda: servicenow(sim, policy), lambda t: t.add_note(TicketRef("servicenow", "I", "a" * 32), " ")
        )
    assert sim.calls("servicenow") == []


# --- Jira ------------------------------------------------------------------------------------------------


def seed_issue(sim: SimulatorProcess, **fields: Any) -> dict[str, Any]:
    spec = {"key": "OPS-42", "summary": "Mail flow down", "priority": "Highest", "status": "Open"}
    issue: dict[str, Any] = sim.seed("jira/issues", {**spec, **fields})
    return issue


def jira_ref(issue: dict[str, Any]) -> TicketRef:
    return TicketRef("jira", issue["key"], issue["id"])


def jira_view(sim: SimulatorProcess, key: str = "OPS-42") -> dict[str, Any]:
    view: dict[str, Any] = sim.control("GET", f"jira/issues/{key}")
    return view


def test_jira_note_is_an_internal_adf_comment_with_one_paragraph_per_line(
    sim: SimulatorProcess, policy: Policy
) -> None:
    issue = seed_issue(sim)
    text = "Access pending (approval)\n\nApprovers: on-call lead, IAM duty manager"
    call = run(lambda: jira(sim, policy), lambda t: t.add_note(jira_ref(issue), text))
    assert (call.system, call.method, call.status) == ("jira", "POST", 201)
    assert call.path == f"/rest/api/3/issue/{issue['id']}/comment"
    (comment,) = jira_view(sim)["comments"]
    assert comment["author"] == JIRA_EMAIL
    assert comment["body"] == adf_document(text)
    assert [p["content"] for p in comment["body"]["content"]] == [
        [{"type": "text", "text": "Access pending (approval)"}],
        [],
        [{"type": "text", "text": "Approvers: on-call lead, IAM duty manager"}],
    ]
    assert comment["text"].splitlines()[0] == "Access pending (approval)"
    (recorded,) = calls(sim, "jira", "POST")
    assert recorded["identity"] == JIRA_EMAIL
    assert recorded["body"]["properties"] == [{"key": "sd.public.comment", "value": {"internal": True}}]


def test_jira_transition_by_name_changes_the_status(sim: SimulatorProcess, policy: Policy) -> None:
    issue = seed_issue(sim)
    call = run(lambda: jira(sim, policy), lambda t: t.set_state(jira_ref(issue), "in_progress"))
    assert (call.method, call.status) == ("POST", 204)
    assert call.path == f"/rest/api/3/issue/{issue['id']}/transitions"
    view = jira_view(sim)
    assert view["status"] == "Work in progress"
    (step,) = view["history"]
    assert step["transition"]["name"] == "Work in progress"
    assert f"(id {step['transition']['id']})" in call.summary
    posted = calls(sim, "jira", "POST")
    assert [c["body"] for c in posted] == [{"transition": {"id": step["transition"]["id"]}}]


def test_jira_transition_names_match_ignoring_case(sim: SimulatorProcess, policy: Policy) -> None:
    issue = seed_issue(sim, workflow=["Open", "ACCESS REVOKED", "Done"])
    run(lambda: jira(sim, policy), lambda t: t.set_state(jira_ref(issue), "revoked"))
    assert jira_view(sim)["status"] == "ACCESS REVOKED"


def test_jira_unknown_transition_names_state_wanted_and_available(
    sim: SimulatorProcess, policy: Policy
) -> None:
    issue = seed_issue(sim, workflow=["Open", "In Progress", {"name": "Done", "category": "done"}])
    with pytest.raises(TransitionNotFoundError) as caught:
        run(lambda: jira(sim, policy), lambda t: t.set_state(jira_ref(issue), "rejected"))
    error = caught.value
    assert (error.state_key, error.wanted, error.available) == (
        "rejected",
        "Access rejected",
        ("Open", "In Progress", "Done"),
    )
    message = str(error)
    assert "'Access rejected'" in message and "'rejected'" in message
    assert "'Open', 'In Progress', 'Done'" in message
    assert "itsm.jira.transitions.rejected" in message
    assert not error.transient
    assert calls(sim, "jira", "POST") == []
    assert jira_view(sim)["status"] == "Open"


def test_jira_get_incident_reads_open_and_major_from_labels(sim: SimulatorProcess, policy: Policy) -> None:
    seed_issue(sim, key="INC-7", status="In Progress", labels=["p1", "Major-Incident"])
    seed_issue(sim, key="INC-8", status="Resolved")
    seed_issue(sim, key="INC-9", labels=["p1"])
    major = run(lambda: jira(sim, policy), lambda t: t.get_incident("INC-7"))
    done = run(lambda: jira(sim, policy), lambda t: t.get_incident("INC-8"))
    plain = run(lambda: jira(sim, policy), lambda t: t.get_incident("INC-9"))
    assert major is not None and (major.number, major.state, major.is_open, major.major_incident) == (
        "INC-7",
        "In Progress",
        True,
        True,
    )
    assert done is not None and (done.is_open, done.major_incident) == (False, False)
    assert plain is not None and (plain.is_open, plain.major_incident) == (True, False)
    recorded = calls(sim, "jira", "GET")[0]
    assert recorded["path"] == "/rest/api/3/issue/INC-7"
    assert recorded["query"]["fields"] == "status,labels"


def test_jira_get_incident_reads_major_from_the_mapped_custom_field(sim: SimulatorProcess) -> None:
    text = REPO_POLICY_PATH.read_text().replace(
        'major_incident = "labels"', 'major_incident = "customfield_10060"'
    )
    custom = parse_policy(text.replace('["major-incident"]', '["Yes"]'))
    seed_issue(sim, key="INC-7", fields={"customfield_10060": {"value": "Yes", "id": "10101"}})
    seed_issue(sim, key="INC-8", fields={"customfield_10060": {"value": "No", "id": "10102"}})
    first = run(lambda: jira(sim, custom), lambda t: t.get_incident("INC-7"))
    second = run(lambda: jira(sim, custom), lambda t: t.get_incident("INC-8"))
    assert first is not None and first.major_incident
    assert second is not None and not second.major_incident


def test_jira_get_incident_of_an_unknown_key_is_none(sim: SimulatorProcess, policy: Policy) -> None:
    assert run(lambda: jira(sim, policy), lambda t: t.get_incident("INC-404")) is None
    with pytest.raises(ValueError, match="not a Jira issue key"):
        run(lambda: jira(sim, policy), lambda t: t.get_incident("../myself"))


def test_jira_unknown_ticket_is_a_404_ticket_error(sim: SimulatorProcess, policy: Policy) -> None:
    ref = TicketRef("jira", "OPS-404", "")
    error = fail(lambda: jira(sim, policy), lambda t: t.add_note(ref, "hello"))
    assert error.status == 404 and not error.transient
    assert error.path == "/rest/api/3/issue/OPS-404/comment"
    assert "Issue does not exist" in error.itsm_message


def test_jira_401_is_a_ticket_error_without_credentials(sim: SimulatorProcess, policy: Policy) -> None:
    issue = seed_issue(sim)
    fault(sim, "jira", 401, message="Client must be authenticated to access this resource.")
    error = fail(lambda: jira(sim, policy), lambda t: t.set_state(jira_ref(issue), "in_progress"))
    assert error.status == 401 and not error.transient
    assert error.method == "GET" and error.path.endswith("/transitions")
    assert "Client must be authenticated" in error.itsm_message
    for text in (str(error), json.dumps(error.to_dict())):
        assert JIRA_TOKEN not in text


@pytest.mark.parametrize("status", [429, 502])
def test_jira_429_and_5xx_are_transient(sim: SimulatorProcess, policy: Policy, status: int) -> None:
    issue = seed_issue(sim)
    fault(sim, "jira", status, method="POST")
    error = fail(lambda: jira(sim, policy), lambda t: t.set_state(jira_ref(issue), "in_progress"))
    assert error.status == status and error.transient and error.method == "POST"
    assert len(calls(sim, "jira", "POST")) == 1
    assert jira_view(sim)["status"] == "Open"


def test_jira_transition_into_the_current_status_is_not_needed() -> None:
    # A retry after an applied transition, on a workflow that offers no transition into the current status.
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/transitions"):
            return httpx.Response(200, json={"transitions": [{"id": "51", "name": "Access revoked"}]})
        return httpx.Response(200, json={"key": "OPS-42", "fields": {"status": {"name": "Work in progress"}}})

    config = load_policy(REPO_POLICY_PATH).itsm["jira"]
    call = run(
        lambda: JiraTickets(
            "https://jira.example.com", JIRA_EMAIL, JIRA_TOKEN, config, transport=httpx.MockTransport(handler)
        ),
        lambda t: t.set_state(TicketRef("jira", "OPS-42", "10001"), "in_progress"),
    )
    assert "already in status 'Work in progress'" in call.summary
    assert seen == ["GET /rest/api/3/issue/10001/transitions", "GET /rest/api/3/issue/10001"]


# --- factory ---------------------------------------------------------------------------------------------


def sim_settings(sim: SimulatorProcess, **overrides: str) -> Settings:
    values = {
        **sim.settings,
        "SERVICENOW_API_USER": SN_USER,
        "SERVICENOW_API_PASSWORD": SN_PASSWORD,
        "JIRA_API_EMAIL": JIRA_EMAIL,
        "JIRA_API_TOKEN": JIRA_TOKEN,
        **overrides,
    }
    return Settings.from_env(minimal_env(**values))


def test_factory_builds_each_adapter_from_settings_and_policy(sim: SimulatorProcess, policy: Policy) -> None:
    settings = sim_settings(sim)
    incident = seed_incident(sim)
    issue = seed_issue(sim)
    run(lambda: ticket_system("servicenow", settings, policy), lambda t: t.add_note(sn_ref(incident), "sn"))
    run(lambda: ticket_system("jira", settings, policy), lambda t: t.set_state(jira_ref(issue), "escalated"))
    assert [n["value"] for n in sn_view(sim, incident["sys_id"])["work_notes"]] == ["sn"]
    assert jira_view(sim)["status"] == "Access escalated"
    assert {c["identity"] for c in sim.calls("servicenow")} == {SN_USER}
    assert {c["identity"] for c in sim.calls("jira")} == {JIRA_EMAIL}


def test_factory_names_missing_settings_and_unsupported_systems(
    sim: SimulatorProcess, policy: Policy
) -> None:
    settings = sim_settings(sim, JIRA_API_EMAIL="<unset>", JIRA_API_TOKEN="<unset>")
    with pytest.raises(SettingsError, match="set JIRA_API_EMAIL and JIRA_API_TOKEN"):
        ticket_system("jira", settings, policy)
    with pytest.raises(SettingsError, match="SERVICENOW_BASE_URL"):
        ticket_system("servicenow", sim_settings(sim, SERVICENOW_BASE_URL="<unset>"), policy)
    with pytest.raises(UnsupportedSystemError, match="ivanti has no ticket adapter yet"):
        ticket_system("ivanti", settings, policy)
    with pytest.raises(UnsupportedSystemError, match="unknown ITSM system 'remedy'"):
        ticket_system("remedy", settings, policy)
