"""End to end: signed ITSM webhooks into the real function_app on the devhost, with the simulators
(Graph, ServiceNow, Jira, the managed-identity endpoint) and Azurite. Outcomes are read from the
request's audit rows (GET /api/requests/{id}), the ticket from the ServiceNow simulator's journal, and
rejections from the day's security chain."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.data.tables import TableServiceClient

from local.azurite import Azurite
from local.scenarios import EXCHANGE_ADMINISTRATOR, seed_responder_world, send_servicenow, servicenow_payload
from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from local.stack import DevhostProcess
from shared.audit import AuditLedger, security_chain
from shared.policy import load_policy
from shared.settings import DEFAULT_POLICY_PATH
from tests.e2e.conftest import AFTER_APPROVAL, app_host_in, wait_for_state

pytestmark = pytest.mark.stack

POLICY = load_policy(DEFAULT_POLICY_PATH)
SECRET = "local-servicenow-webhook-secret-0123456789abcdef"  # the sample settings' dev value


@pytest.fixture(scope="module")
def sims(simulators: SimulatorProcess) -> SimulatorProcess:
    return simulators


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, azurite: Azurite, sims: SimulatorProcess
) -> Iterator[DevhostProcess]:
    work: Path = tmp_path_factory.mktemp("intake")
    process = app_host_in(work, azurite, **sims.settings, IDENTITY_ENDPOINT=sims.url + TOKEN_PATH,
                          IDENTITY_HEADER=IDENTITY_HEADER)  # fmt: skip
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture(autouse=True)
def _fresh_world(sims: SimulatorProcess) -> None:
    sims.reset()


@pytest.fixture(scope="module", autouse=True)
def _every_chain_verifies(azurite: Azurite) -> Iterator[None]:
    """After the module: the chain of every request these tests started, and the day's security chain
    their rejections wrote, verify."""
    yield
    chains = {*STARTED, security_chain(datetime.now(UTC))}
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        ledger = AuditLedger(service, POLICY.version_hash, POLICY.file_hash)
        broken = [result for result in (ledger.verify(chain) for chain in sorted(chains)) if not result.ok]
    assert broken == []


def seed_world(sims: SimulatorProcess, **options: Any) -> dict[str, Any]:
    return seed_responder_world(sims, POLICY, **options)


# A request that passed validation is waiting for approval or approved (by the major-incident rule).
PASSED = ("validated", "awaiting_confirmation", "awaiting_approval", *AFTER_APPROVAL)
STARTED: set[str] = set()  # request ids these tests started (their chains are verified at the end)


def send(sims: SimulatorProcess, host: DevhostProcess, payload: dict[str, Any] | None = None,
         **options: Any) -> dict[str, Any]:  # fmt: skip
    answer = send_servicenow(sims, host.url, SECRET, payload, **options)
    if answer["status"] == 202:
        STARTED.add(answer["body"]["requestId"])
    return answer


def instances(host: DevhostProcess) -> int:
    """How many requests the host has started: access-request orchestrations, not their approval
    sub-orchestrations (its Durable RPC route answers loopback callers)."""
    listed = httpx.get(f"{host.url}/durabletask/instances/").json()
    return len([i for i in listed if i.get("name") != "approval"])


def journal(sims: SimulatorProcess, sys_id: str) -> str:
    view = sims.control("GET", f"servicenow/incidents/{sys_id}")
    return "\n".join(str(entry) for entry in view.get("work_notes", []))


def security_rows(azurite: Azurite) -> list[Any]:
    policy = POLICY
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        ledger = AuditLedger(service, policy.version_hash, policy.file_hash)
        return ledger.read(security_chain(datetime.now(UTC)))


def test_a_signed_servicenow_p1_for_an_on_call_eligible_responder_is_validated(
    sims: SimulatorProcess, host: DevhostProcess
) -> None:
    world = seed_world(sims)
    answer = send(sims, host, servicenow_payload(world))
    assert answer["status"] == 202, answer
    request_id = answer["body"]["requestId"]
    body = wait_for_state(host, request_id, (*PASSED, "rejected"))
    assert body["state"] in PASSED, body
    steps = [step["step"] for step in body["timeline"]]
    for check in ("responder", "role", "incident", "eligibility", "duplicates"):
        assert f"validation.{check}" in steps
    assert body["auditVerified"] is True
    notes = journal(sims, world["incident"]["sys_id"])
    for check in ("responder", "role", "incident", "eligibility", "duplicates"):
        assert f"Check {check}: passed" in notes


@pytest.mark.parametrize(
    ("world_options", "changes", "reason"),
    [
        ({}, {"assigned_to": None}, "has no assignee"),
        ({"on_call": False}, {}, "is not on call"),
        ({}, {"access__role": "Tenant Owner"}, "Tenant Owner"),
        ({}, {"incident": None}, "names no linked incident"),
        ({"incident_state": "7"}, {}, "is not open"),
        ({"eligible": False}, {}, "not eligible for Exchange Administrator"),
        ({"active": True}, {}, "already active"),
        ({}, {"assigned_to": {"user_name": "nobody", "email": "nobody@contoso.test"}}, "no Entra user"),
    ],
    ids=[
        "not assignee",
        "not on call",
        "unknown role",
        "no incident",
        "incident closed",
        "not eligible",
        "already active",
        "unknown user",
    ],
)
def test_each_validation_failure_ends_access_rejected_with_its_reason_on_the_ticket(
    sims: SimulatorProcess, host: DevhostProcess, world_options: dict[str, Any], changes: dict[str, Any],
    reason: str,
) -> None:  # fmt: skip
    world = seed_world(sims, **world_options)
    answer = send(sims, host, servicenow_payload(world, **changes))
    assert answer["status"] == 202, answer
    body = wait_for_state(host, answer["body"]["requestId"], (*PASSED, "rejected"))
    assert body["state"] == "rejected"
    assert body["auditVerified"] is True
    final = body["timeline"][-1]["detail"]["reason"]
    assert reason in final
    notes = journal(sims, world["incident"]["sys_id"])
    assert "Access rejected" in notes and reason in notes


def test_a_p2_is_ignored_and_recorded(sims: SimulatorProcess, host: DevhostProcess, azurite: Azurite) -> None:
    world = seed_world(sims)
    answer = send(sims, host, servicenow_payload(world, priority="2"))
    assert answer["status"] == 200
    assert answer["body"] == {"status": "ignored", "reason": "priority P2 is not P1"}
    assert any(
        row.kind == "intake.ignored" and "P2" in str(row.fields["Detail"]) for row in security_rows(azurite)
    )


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"omit_headers": ["X-Signature"]}, "missing_signature"),
        ({"signature": "sha256=" + "0" * 64}, "bad_signature"),
        ({"signed_body": '{"other": "body"}'}, "bad_signature"),
        ({"timestamp": int(time.time()) - 3600}, "stale_timestamp"),
        ({"timestamp": int(time.time()) + 3600}, "future_timestamp"),
    ],
    ids=["missing signature", "wrong signature", "signature over another body", "stale", "future"],
)
def test_bad_signatures_are_401_start_nothing_and_are_recorded(
    sims: SimulatorProcess, host: DevhostProcess, azurite: Azurite, options: dict[str, Any], code: str
) -> None:
    world = seed_world(sims)
    before, started = len(security_rows(azurite)), instances(host)
    answer = send(sims, host, servicenow_payload(world), **options)
    assert answer["status"] == 401, answer
    assert instances(host) == started
    rows = security_rows(azurite)[before:]
    assert [row.kind for row in rows] == ["intake.signature_rejected"]
    assert code in str(rows[0].fields["Detail"])
    assert '"remote":"127.0.0.1"' in str(rows[0].fields["Detail"])
    assert "Check" not in journal(sims, world["incident"]["sys_id"])


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ("{not json", 400, "body"),
        ('{"event": "created"}', 400, "sys_id"),
        ("x" * 300_000, 413, "limit"),
    ],
    ids=["malformed JSON", "missing fields", "body over the limit"],
)
def test_bad_bodies_are_refused_start_nothing_and_are_recorded(
    sims: SimulatorProcess, host: DevhostProcess, azurite: Azurite, body: str, status: int, message: str
) -> None:
    before, started = len(security_rows(azurite)), instances(host)
    answer = send(sims, host, body=body)
    assert answer["status"] == status, answer
    assert instances(host) == started
    assert message in answer["body"]["error"]
    assert len(security_rows(azurite)) == before + 1


def test_a_duplicate_delivery_while_running_and_after_completion_starts_nothing_new(
    sims: SimulatorProcess, host: DevhostProcess
) -> None:
    world = seed_world(sims)
    payload = servicenow_payload(world)
    first = send(sims, host, payload)
    started = instances(host)
    again = send(sims, host, payload)
    assert again["status"] == 200
    assert again["body"]["requestId"] == first["body"]["requestId"]
    wait_for_state(host, first["body"]["requestId"], (*PASSED, "rejected"))
    after = send(sims, host, payload)
    assert after["status"] == 200
    assert after["body"]["requestId"] == first["body"]["requestId"]
    assert instances(host) == started


JIRA_SECRET = "local-jira-webhook-secret-0123456789abcdef0123"  # the sample settings' dev value


def test_the_same_through_jira_is_validated_with_comments_and_a_transition(
    sims: SimulatorProcess, host: DevhostProcess
) -> None:
    world = seed_world(sims)
    tag = world["tag"]
    sims.seed(
        "jira/issues",
        {
            "key": "OPS-1",
            "summary": "Mail flow down",
            "issuetype": "Incident",
            "status": "In Progress",
            "priority": "Highest",
            "labels": ["major-incident"],
        },
    )
    sims.seed(
        "jira/issues",
        {
            "key": "OPS-2",
            "summary": "Emergency access: Exchange Administrator",
            "issuetype": "Service Request",
            "priority": "Highest",
            "assignee": f"alex.{tag}@contoso.test",
            "reporter": f"sam.{tag}@contoso.test",
            "fields": {
                "customfield_10050": "Exchange Administrator",
                "customfield_10051": "privileged",
                "customfield_10052": "PT1H",
                "customfield_10053": "restore mail flow",
                "customfield_10054": "OPS-1",
            },
        },
    )
    issue = httpx.get(
        f"{sims.jira_base_url}/rest/api/3/issue/OPS-2", auth=("pim-bot@contoso.test", "token")
    ).json()
    webhook = {"webhookEvent": "jira:issue_created", "timestamp": int(time.time() * 1000), "issue": issue}
    answer = sims.control(
        "POST",
        "jira/send",
        json={"url": f"{host.url}/api/itsm/jira", "payload": webhook, "secret": JIRA_SECRET},
    )
    assert answer["status"] == 202, answer
    STARTED.add(answer["body"]["requestId"])
    body = wait_for_state(host, answer["body"]["requestId"], (*PASSED, "rejected"))
    assert body["state"] in PASSED, body
    view = sims.control("GET", "jira/issues/OPS-2")
    comments = "\n".join(comment["text"] for comment in view["comments"])
    for check in ("responder", "role", "incident", "eligibility", "duplicates"):
        assert f"Check {check}: passed" in comments
    # The first transition after validation; a standard role on a major incident is approved by the rule at
    # once, so the issue may already have moved on when it is read.
    assert [step["to"] for step in view["history"]][:1] == ["Access pending (approval)"], view["history"]


def test_a_re_request_after_the_request_ended_is_a_new_request(
    sims: SimulatorProcess, host: DevhostProcess
) -> None:
    world = seed_world(sims, eligible=False)
    first = send(sims, host, servicenow_payload(world))
    wait_for_state(host, first["body"]["requestId"], ("rejected",))
    # The requester asks again, with a changed request (IAM has added the eligibility meanwhile).
    sims.seed(
        "graph/eligibility", {"principalId": world["alex"]["id"], "roleDefinitionId": EXCHANGE_ADMINISTRATOR}
    )
    second = send(
        sims, host, servicenow_payload(world, access__justification="restore mail flow (eligible now)")
    )
    assert second["status"] == 202
    assert first["body"]["requestId"].endswith("-g1")
    assert second["body"]["requestId"] == first["body"]["requestId"][:-1] + "2"
    assert wait_for_state(host, second["body"]["requestId"], (*PASSED, "rejected"))["state"] in PASSED


def test_updates_that_ask_the_same_after_the_request_ended_start_nothing(
    sims: SimulatorProcess, host: DevhostProcess
) -> None:
    """The app's own notes make the ITSM send updates: they must not loop into new requests."""
    world = seed_world(sims, eligible=False)
    first = send(sims, host, servicenow_payload(world))
    wait_for_state(host, first["body"]["requestId"], ("rejected",))
    started = instances(host)
    for _ in range(3):
        update = send(sims, host, servicenow_payload(world, event="updated", state="3"))
        assert update["status"] == 200
        assert update["body"]["status"] == "unchanged"
        assert update["body"]["requestId"] == first["body"]["requestId"]
    assert instances(host) == started


def test_a_replayed_body_with_a_new_delivery_header_starts_nothing(
    sims: SimulatorProcess, host: DevhostProcess
) -> None:
    world = seed_world(sims)
    payload = servicenow_payload(world)
    first = send(sims, host, payload)
    wait_for_state(host, first["body"]["requestId"], PASSED)
    replay = send(sims, host, {**payload, "delivery_id": "a-new-delivery-id"})
    assert replay["status"] == 200
    assert replay["body"]["requestId"] == first["body"]["requestId"]


def test_a_new_delivery_while_the_request_runs_returns_that_request(
    sims: SimulatorProcess, host: DevhostProcess
) -> None:
    world = seed_world(sims)
    # Slow Graph down so that the first request is still validating when the update arrives.
    sims.control(
        "POST",
        "faults",
        json={"service": "graph", "path_contains": "/users", "latency_ms": 3000, "status": None, "count": 1},
    )
    first = send(sims, host, servicenow_payload(world))
    update = send(sims, host, servicenow_payload(world, short_description="Mail flow down (update)"))
    assert update["status"] == 200, update
    assert update["body"]["requestId"] == first["body"]["requestId"]
    assert update["body"]["status"] == "running"
    assert wait_for_state(host, first["body"]["requestId"], (*PASSED, "rejected"))["state"] in PASSED


def test_a_resolution_without_a_running_request_is_ignored_and_recorded(
    sims: SimulatorProcess, host: DevhostProcess, azurite: Azurite
) -> None:
    world = seed_world(sims)
    before = len(security_rows(azurite))
    answer = send(sims, host, servicenow_payload(world, event="resolved"))
    assert answer["status"] == 200
    assert answer["body"]["status"] == "ignored"
    assert "has no running request to resolve" in answer["body"]["reason"]
    assert [row.kind for row in security_rows(azurite)[before:]] == ["intake.ignored"]


def test_a_ticket_that_cannot_be_updated_ends_the_request_failed_with_the_reason(
    sims: SimulatorProcess, host: DevhostProcess
) -> None:
    world = seed_world(sims)
    sims.control("POST", "faults", json={"service": "servicenow", "path_contains": "/api/now/table/incident",
                                         "method": "PATCH", "status": 503, "count": None})  # fmt: skip
    answer = send(sims, host, servicenow_payload(world))
    body = wait_for_state(host, answer["body"]["requestId"], (*PASSED, "rejected", "failed"), timeout=60)
    assert body["state"] == "failed"
    reason = body["timeline"][-1]["detail"]["reason"]
    assert "update_ticket" in reason and "503" in reason
    assert body["auditVerified"] is True


def test_a_resolution_is_raised_to_the_tickets_running_request(
    sims: SimulatorProcess, host: DevhostProcess
) -> None:
    world = seed_world(sims)
    # Slow Graph down so that the request is still validating when the resolution arrives.
    sims.control(
        "POST", "faults", json={"service": "graph", "path_contains": "/users", "latency_ms": 3000, "count": 1}
    )
    first = send(sims, host, servicenow_payload(world))
    resolved = send(sims, host, servicenow_payload(world, event="resolved"))
    assert resolved["status"] == 200, resolved
    assert resolved["body"] == {"status": "resolution", "requestIds": [first["body"]["requestId"]]}
    wait_for_state(host, first["body"]["requestId"], (*PASSED, "rejected"))


def test_an_old_jira_body_replayed_with_a_new_delivery_header_after_a_newer_request_starts_nothing(
    sims: SimulatorProcess, host: DevhostProcess
) -> None:
    """Jira does not sign its delivery header: the signed body itself identifies a delivery."""
    world = seed_world(sims, eligible=False)  # the first request ends (rejected), so a newer one can start
    tag = world["tag"]
    sims.seed("jira/issues", {"key": "OPS-7", "summary": "Mail flow down", "status": "In Progress"})
    fields = {
        "customfield_10050": "Exchange Administrator",
        "customfield_10051": "privileged",
        "customfield_10052": "PT1H",
        "customfield_10053": "restore mail flow",
        "customfield_10054": "OPS-7",
    }
    sims.seed("jira/issues", {"key": "OPS-8", "priority": "Highest", "assignee": f"alex.{tag}@contoso.test",
                              "reporter": f"sam.{tag}@contoso.test", "fields": fields})  # fmt: skip
    auth = ("pim-bot@contoso.test", "token")

    def deliver(body: dict[str, Any], identifier: str) -> dict[str, Any]:
        answer: dict[str, Any] = sims.control("POST", "jira/send", json={
            "url": f"{host.url}/api/itsm/jira", "payload": body, "secret": JIRA_SECRET,
            "webhookIdentifier": identifier,
        })  # fmt: skip
        return answer

    old = {"webhookEvent": "jira:issue_updated", "timestamp": 1,
           "issue": httpx.get(f"{sims.jira_base_url}/rest/api/3/issue/OPS-8", auth=auth).json()}  # fmt: skip
    first = deliver(old, "delivery-1")
    assert first["status"] == 202, first
    wait_for_state(host, first["body"]["requestId"], ("rejected",))
    # The second request ends too (the role is active already), so the replayed body meets ended requests.
    sims.seed(
        "graph/eligibility", {"principalId": world["alex"]["id"], "roleDefinitionId": EXCHANGE_ADMINISTRATOR}
    )
    active = {"principalId": world["alex"]["id"], "roleDefinitionId": EXCHANGE_ADMINISTRATOR,
              "assignmentType": "Activated"}  # fmt: skip
    sims.seed("graph/assignments", active)
    newer = {
        **old,
        "timestamp": 2,
        "issue": {**old["issue"], "fields": {**old["issue"]["fields"], "customfield_10053": "still down"}},
    }
    second = deliver(newer, "delivery-2")
    assert second["status"] == 202, second
    wait_for_state(host, second["body"]["requestId"], ("rejected",))
    replay = deliver(old, "delivery-3")  # the captured first body, with a fresh header
    assert replay["status"] == 200, replay
    assert replay["body"]["status"] == "duplicate"
    assert replay["body"]["requestId"] == first["body"]["requestId"]
