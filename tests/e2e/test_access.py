"""End to end: from an approved request to removed access (design.md §2 "Activation" to "Revocation", §8).

Signed ServiceNow P1s into the real function_app on the devhost, with a copy of the policy whose timings are
seconds; PIM, the directory stores and Exchange are the Graph simulator, whose per-store propagation delays
and faults shape each scenario. Outcomes are read from the request's audit rows, the ticket's journal, the
Teams conversations, the simulator's stores and calls, and the grant ledger.

The module runs the app on an Azurite of its own: the circuit breaker's row and the grant ledger are shared
by everything on one storage account, and a breaker opened by another module's faults must not decide here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from azure.data.tables import TableServiceClient

from local.azurite import Azurite
from local.scenarios import (
    EXCHANGE_ADMINISTRATOR,
    GLOBAL_ADMINISTRATOR,
    click_card,
    seed_approver_world,
    seed_responder_world,
    send_servicenow,
    servicenow_payload,
)
from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from local.stack import DevhostProcess
from shared.audit import AuditLedger, security_chain
from shared.grants import Grant, GrantLedger, UnknownGrantError
from shared.policy import Policy, load_policy
from shared.settings import DEFAULT_POLICY_PATH
from tests.e2e.conftest import app_host_in, states_recorded, telemetry_events, wait_for_state
from tests.e2e.conftest import request_status as status

pytestmark = pytest.mark.stack

T = TypeVar("T")

SECRET = "local-servicenow-webhook-secret-0123456789abcdef"  # the sample settings' dev value
NEVER_DURING_THE_TEST = "0 0 0 1 1 *"  # yearly: no sweep may remove or report what a test is watching
REQUESTS = "roleAssignmentScheduleRequests"
# Seconds: the policy copy's proof deadline, and how long a test waits for what the short policy makes happen
# within seconds (generous: the machine has 2 cores and other test sessions run beside this one).
PROOF_DEADLINE = 20
PATIENCE = 90

# Each (production value, test value): every one must be in the policy text exactly once.
FAST_TIMINGS = [
    ('approval_due = "PT15M"', 'approval_due = "PT30S"'),
    ('approval_reminder = "PT7M30S"', 'approval_reminder = "PT15S"'),
    ('progress_interval = "PT2M"', 'progress_interval = "PT4S"'),
    ('probe_first_interval = "PT5S"', 'probe_first_interval = "PT1S"'),
    ('probe_max_interval = "PT1M"', 'probe_max_interval = "PT2S"'),
    ('slow_probe_interval = "PT5M"', 'slow_probe_interval = "PT3S"'),
    ('default_proof_deadline = "PT10M"', 'default_proof_deadline = "PT20S"'),
    ('store_mismatch_threshold = "PT5M"', 'store_mismatch_threshold = "PT4S"'),
    ('pim_minimum_active = "PT5M"', 'pim_minimum_active = "PT2S"'),
    # Exchange Administrator's own deadline; Global Administrator gets one of its own.
    ('proof_deadline = "PT15M"', 'proof_deadline = "PT20S"'),
    ('max_duration = "PT1H"   # the most powerful role: shortest window',
     'max_duration = "PT1H"\nproof_deadline = "PT20S"'),
]  # fmt: skip

POLICY = load_policy(DEFAULT_POLICY_PATH)
STARTED: set[str] = set()


def fast_policy(work: Path) -> Path:
    text = Path(DEFAULT_POLICY_PATH).read_text(encoding="utf-8")
    for production, fast in FAST_TIMINGS:
        assert text.count(production) == 1, f"the policy no longer has {production!r} exactly once"
        text = text.replace(production, fast)
    path = work / "policy.toml"
    path.write_text(text, encoding="utf-8")
    policy = load_policy(path)
    assert policy.timings.progress_interval.total_seconds() == 4
    assert policy.timings.pim_minimum_active.total_seconds() == 2
    assert {r.name: r.proof_deadline.total_seconds() for r in policy.roles} == {
        r.name: PROOF_DEADLINE for r in POLICY.roles
    }
    return path


# --- the stack -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def storage() -> Iterator[Azurite]:
    with Azurite() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fast_policy(tmp_path_factory.mktemp("access-policy"))


def new_host(work: Path, storage: Azurite, sims: SimulatorProcess, policy: Path) -> DevhostProcess:
    return app_host_in(work, storage, **sims.settings, IDENTITY_ENDPOINT=sims.url + TOKEN_PATH,
                       IDENTITY_HEADER=IDENTITY_HEADER, POLICY_PATH=str(policy),
                       SWEEP_SCHEDULE=NEVER_DURING_THE_TEST)  # fmt: skip


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, storage: Azurite, simulators: SimulatorProcess,
         policy_path: Path) -> Iterator[DevhostProcess]:  # fmt: skip
    process = new_host(tmp_path_factory.mktemp("access"), storage, simulators, policy_path)
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture(scope="module", autouse=True)
def _every_chain_verifies(storage: Azurite) -> Iterator[None]:
    yield
    chains = {*STARTED, security_chain(datetime.now(UTC))}
    with TableServiceClient.from_connection_string(storage.connection_string) as service:
        ledger = AuditLedger(service, POLICY.version_hash, POLICY.file_hash)
        broken = [result for result in (ledger.verify(chain) for chain in sorted(chains)) if not result.ok]
    assert broken == []


@pytest.fixture(autouse=True)
def _pim_behaviour_reset(sim: SimulatorProcess) -> Iterator[None]:
    yield
    sim.control("DELETE", "graph/pim-behaviour")


def pim_behaviour(sims: SimulatorProcess, role: str, **propagation: float) -> None:
    """PIM's minimum active time as the policy copy's (2 s), and when each store shows an activation."""
    sims.pim_behaviour(roleDefinitionId=role, minimumActiveSeconds=2,
                       propagation={"pim": 0, "unified": 0.5, "directoryRole": 1, "exchange": 1,
                                    **propagation})  # fmt: skip


# --- worlds, requests, resolutions -----------------------------------------------------------------------


def world(sims: SimulatorProcess, major_incident: bool = True) -> dict[str, Any]:
    responders = seed_responder_world(sims, POLICY, major_incident=major_incident)
    return {**responders, "people": seed_approver_world(sims, POLICY, responders)}


def start(sims: SimulatorProcess, host: DevhostProcess, people: dict[str, Any], **changes: Any) -> str:
    answer = send_servicenow(sims, host.url, SECRET, servicenow_payload(people, **changes))
    assert answer["status"] == 202, answer
    request_id: str = answer["body"]["requestId"]
    STARTED.add(request_id)
    return request_id


def resolve(sims: SimulatorProcess, host: DevhostProcess, people: dict[str, Any], request_id: str) -> None:
    """The incident is resolved in ServiceNow: its outbound script sends the resolution."""
    answer = send_servicenow(sims, host.url, SECRET, servicenow_payload(people, event="resolved", state="6"))
    assert answer["status"] == 200, answer
    assert answer["body"] == {"status": "resolution", "requestIds": [request_id]}, answer


# --- reading what happened -------------------------------------------------------------------------------


def eventually(
    what: str, probe: Callable[[], T | None], host: DevhostProcess, timeout: float = PATIENCE
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s\n{host.log_tail()}")
        time.sleep(0.25)


def steps(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [step for step in body["timeline"] if step["step"] == kind]


def wait_for_step(
    host: DevhostProcess, request_id: str, kind: str, count: int = 1, timeout: float = PATIENCE
) -> dict[str, Any]:
    """The request's status once ``count`` rows of ``kind`` are written."""

    def found() -> dict[str, Any] | None:
        body = status(host, request_id)
        return body if len(steps(body, kind)) >= count else None

    return eventually(f"{count} {kind} row(s) on {request_id}", found, host, timeout)


def ended(host: DevhostProcess, request_id: str, timeout: float = PATIENCE) -> dict[str, Any]:
    return wait_for_state(host, request_id, ("revoked", "removal_failed", "failed", "cancelled"), timeout)


def journal(sims: SimulatorProcess, people: dict[str, Any]) -> list[str]:
    view = sims.control("GET", f"servicenow/incidents/{people['incident']['sys_id']}")
    return [str(row["value"]) for row in view["work_notes"]]


def note_index(notes: list[str], text: str) -> int:
    """Where the first work note containing ``text`` is in the journal."""
    found = [i for i, note in enumerate(notes) if text in note]
    assert found, f"no work note with {text!r}: {notes}"
    return found[0]


def texts_in(sims: SimulatorProcess, conversation_id: str) -> list[str]:
    conversations = sims.control("GET", "teams/conversations")["conversations"]
    if conversation_id not in conversations:
        return []
    return [str(a.get("text") or "") for a in conversations[conversation_id]["activities"]]


def personal_texts(sims: SimulatorProcess, user_id: str) -> list[str]:
    """What the bot wrote in its 1:1 chat with ``user_id`` (cards have no text)."""
    conversations = sims.control("GET", "teams/conversations")["conversations"]
    chats = [c for cid, c in conversations.items() if cid.startswith("a:") and user_id in c["members"]]
    return [str(a.get("text") or "") for chat in chats for a in chat["activities"]]


def iam_posts(sims: SimulatorProcess, policy: Policy, request_id: str) -> list[str]:
    return [t for t in texts_in(sims, policy.escalation.iam_conversation_id) if f"[{request_id}]" in t]


def grants_of(sims: SimulatorProcess, user_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The simulator's assignments of ``user_id``: in effect, and ended."""
    stores = sims.pim_stores()
    return ([g for g in stores["grants"] if g["principalId"] == user_id],
            [g for g in stores["ended"] if g["principalId"] == user_id])  # fmt: skip


def admin_assigns(sims: SimulatorProcess, user_id: str) -> list[dict[str, Any]]:
    return [c for c in sims.calls("graph", method="POST", path_contains=REQUESTS)
            if isinstance(c["body"], dict) and c["body"].get("action") == "adminAssign"
            and c["body"].get("principalId") == user_id]  # fmt: skip


def card(host: DevhostProcess, request_id: str, stage: str, purpose: str) -> dict[str, Any]:
    """Where the card of ``stage`` was posted, from the request's audit rows (the latest for the stage)."""

    def posted() -> dict[str, Any] | None:
        found = [step["detail"] for step in status(host, request_id)["timeline"]
                 if step["step"] in ("approval.card_posted", "approval.card_updated")
                 and step["detail"]["stage"] == stage and step["detail"]["purpose"] == purpose]  # fmt: skip
        return found[-1] if found else None

    return eventually(f"a {purpose} card for {stage} on {request_id}", posted, host)


def card_texts(sims: SimulatorProcess, where: dict[str, Any]) -> list[str]:
    conversation = sims.teams_conversation(where["conversationId"])
    shown = next(a for a in conversation["activities"] if a["id"] == where["activityId"])
    return [block.get("text", "") for block in shown["card"]["body"]]


def revoked_and_clean(
    sims: SimulatorProcess, host: DevhostProcess, storage: Azurite, people: dict[str, Any], request_id: str,
    timeout: float = PATIENCE,
) -> dict[str, Any]:  # fmt: skip
    """How every granting test ends: revoked, nothing left for the responder in any store, the removal
    confirmed by reading back, the grant ledger's row removed, the ticket told, the chain intact."""
    body = ended(host, request_id, timeout)
    assert body["state"] == "revoked", (body["timeline"][-1], host.log_tail())
    assert body["auditVerified"] is True
    assert [s["outcome"] for s in steps(body, "revocation.confirmed")] == ["passed"]
    alex = people["alex"]["id"]
    active, gone = grants_of(sims, alex)
    assert active == [] and gone, (active, gone)
    shown = {store: [a for a in held if a["principalId"] == alex]
             for store, held in sims.pim_stores()["stores"].items()}  # fmt: skip
    assert shown == {"pim": [], "unified": [], "directoryRole": [], "exchange": []}
    with TableServiceClient.from_connection_string(storage.connection_string) as service:
        grant = GrantLedger(service).get(Grant.id_for(request_id, "pim"))
        verified = AuditLedger(service, POLICY.version_hash, POLICY.file_hash).verify(request_id)
    assert grant.removal_state == "removed" and grant.responder_id == alex
    assert verified.ok, verified
    assert "[Access revoked]" in "\n".join(journal(sims, people))
    return body


def final_reason(body: dict[str, Any]) -> str:
    reason: str = steps(body, "request.state")[-1]["detail"]["reason"]
    return reason


def exchange_on_a_major_incident(
    sims: SimulatorProcess, host: DevhostProcess, **propagation: float
) -> tuple[dict[str, Any], str]:
    """Scenario (a)'s shape: Exchange Administrator for the responder of a declared major incident,
    approved by the rule, with ``propagation`` (seconds) per store."""
    pim_behaviour(sims, EXCHANGE_ADMINISTRATOR, **propagation)
    people = world(sims)
    return people, start(sims, host, people)


# --- the worked examples ---------------------------------------------------------------------------------


def test_mail_flow_down_exchange_access_is_proven_effective_with_progress_then_revoked_on_resolution(
    sim: SimulatorProcess, host: DevhostProcess, storage: Azurite, policy_path: Path
) -> None:
    people, request_id = exchange_on_a_major_incident(sim, host, exchange=9)
    alex = people["alex"]["id"]
    body = wait_for_state(host, request_id, ("effective", "escalated", "failed"), timeout=PATIENCE)
    assert body["state"] == "effective", body["timeline"][-1]
    assert states_recorded(body)[-3:] == ["approved", "activated", "effective"]
    assert [s["step"] for s in body["timeline"]].count("approval.rule") == 1

    # While Exchange lagged: progress to the responder's 1:1 and the ticket, before it became effective.
    progress = steps(body, "proof.progress")
    [proven] = steps(body, "proof.effective")
    assert progress and all(p["seq"] < proven["seq"] for p in progress)
    assert all(p["detail"]["failing"] == ["exchange_role_group"] for p in progress)
    chat = [t for t in personal_texts(sim, alex) if "not effective yet" in t]
    assert len(chat) == len(progress) and "exchange_role_group still failing" in chat[0]
    notes = journal(sim, people)
    assert note_index(notes, "not effective yet") < note_index(notes, "[Work in progress]")
    assert any("Your Exchange Administrator access works" in t for t in personal_texts(sim, alex))

    # When it became effective: the first passing poll, after the last failing one, after Exchange showed it.
    effective_at = datetime.fromisoformat(proven["detail"]["effectiveAt"])
    lower_bound = datetime.fromisoformat(proven["detail"]["lowerBound"])
    assert lower_bound < effective_at
    assert proven["detail"]["secondsAfterSubmission"] >= 9
    polls = steps(body, "proof.poll")
    outcomes = [p["outcome"] for p in polls]
    assert outcomes[-1] == "passed" and "passed" not in outcomes[:-1]
    [activation] = grants_of(sim, alex)[0]
    assert effective_at >= datetime.fromisoformat(activation["visibleAt"]["exchange"].replace("Z", "+00:00"))

    resolve(sim, host, people, request_id)
    body = revoked_and_clean(sim, host, storage, people, request_id)
    assert states_recorded(body)[-4:] == ["approved", "activated", "effective", "revoked"]
    assert steps(body, "hold.resolved") and final_reason(body) == "the incident was resolved"
    assert steps(body, "revocation.sessions") == []  # a standard role: the policy keeps the sessions
    assert len(admin_assigns(sim, alex)) == 1
    assert iam_posts(sim, load_policy(policy_path), request_id) == []

    # Telemetry: one event per audit row, labelled with the ticket and the role's tier, with durations.
    events = telemetry_events(host, request_id)
    assert sorted(e["seq"] for e in events) == [s["seq"] for s in body["timeline"]]
    labels = {(e["ticket"], e["system"], e["tier"]) for e in events}
    assert labels == {(people["incident"]["number"], "servicenow", "standard")}
    by_state = {e["state"]: e for e in events if e["step"] == "request.state"}
    assert 0 < by_state["approved"]["elapsedSeconds"] < by_state["effective"]["elapsedSeconds"]
    [effective] = [e for e in events if e["step"] == "proof.effective"]
    assert effective["detail"]["secondsAfterSubmission"] == proven["detail"]["secondsAfterSubmission"]
    assert effective["role"] == "Exchange Administrator"
    assert effective["actor"] == people["alex"]["userPrincipalName"]
    assert [e for e in events if e.get("signal")] == []  # nothing here should page anyone


def test_stores_that_disagree_beyond_the_threshold_are_routed_to_iam_once_with_the_evidence(
    sim: SimulatorProcess, host: DevhostProcess, storage: Azurite, policy_path: Path
) -> None:
    people, request_id = exchange_on_a_major_incident(sim, host, directoryRole=12, exchange=0)
    body = wait_for_state(host, request_id, ("effective", "escalated", "failed"), timeout=PATIENCE)
    assert body["state"] == "effective", body["timeline"][-1]

    [mismatch] = steps(body, "proof.store_mismatch")
    assert mismatch["seq"] < steps(body, "proof.effective")[0]["seq"]
    evidence = {r["probe"]: r for r in mismatch["detail"]["results"]}
    assert evidence["pim_instance"]["passed"] and not evidence["directory_role_member"]["passed"]
    [post] = iam_posts(sim, load_policy(policy_path), request_id)
    assert "PIM shows the assignment" in post and "directory_role_member" in post
    for probe in ("pim_instance", "unified_assignment", "directory_role_member", "exchange_role_group"):
        assert probe in post
        assert evidence[probe]["requestId"] and evidence[probe]["requestId"] in post
        assert evidence[probe]["clientRequestId"] in post
    # Held back for the threshold (4 s): routed at the first poll that far from the first disagreeing one.
    polls = steps(body, "proof.poll")
    routed_at = [p for p in polls if p["seq"] < mismatch["seq"]]
    since = [p["detail"]["sinceSubmission"] for p in routed_at]
    assert since[-1] - since[0] >= 4 and since[-2] - since[0] < 4, since
    assert "Stores disagree beyond the threshold; routed to IAM" in "\n".join(journal(sim, people))

    resolve(sim, host, people, request_id)
    revoked_and_clean(sim, host, storage, people, request_id)
    assert len(iam_posts(sim, load_policy(policy_path), request_id)) == 1


def confirmed_global_admin_request(
    sims: SimulatorProcess, host: DevhostProcess, people: dict[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A Global Administrator request the responder has confirmed, and its two approval cards."""
    request_id = start(sims, host, people, access__role="Global Administrator")
    confirm = card(host, request_id, "responder", "confirm")
    assert click_card(sims, host.url, confirm, people["alex"], "confirm")["status"] == 200
    return (
        request_id,
        card(host, request_id, "on_call_lead", "approve"),
        card(host, request_id, "iam_duty_manager", "approve"),
    )


def counted_vote(host: DevhostProcess, request_id: str, user_id: str) -> None:
    def counted() -> bool:
        return any(step["outcome"] == "counted" and step["actor"]["id"] == user_id
                   for step in steps(status(host, request_id), "approval.vote"))  # fmt: skip

    eventually(f"a counted vote by {user_id} on {request_id}", counted, host)


def test_global_administrator_needs_two_people_and_its_sessions_are_revoked_at_the_end(
    sim: SimulatorProcess, host: DevhostProcess, storage: Azurite
) -> None:
    pim_behaviour(sim, GLOBAL_ADMINISTRATOR)
    people = world(sim)
    crew = people["people"]
    request_id, lead, iam = confirmed_global_admin_request(sim, host, people)

    refused = click_card(sim, host.url, lead, crew["sam"], "approve")  # the ticket's opener
    assert refused["status"] == 403, refused
    assert click_card(sim, host.url, lead, crew["lee"], "approve")["status"] == 200
    counted_vote(host, request_id, crew["lee"]["id"])
    assert status(host, request_id)["state"] == "awaiting_approval"  # one approval is not enough
    assert click_card(sim, host.url, iam, crew["ivy"], "approve")["status"] == 200

    body = wait_for_state(host, request_id, ("effective", "escalated", "failed", "denied", "expired"))
    assert body["state"] == "effective", body["timeline"][-1]
    approvers = {(a["stage"], a["by"]["id"]) for a in body["approvals"] if a["outcome"] == "counted"}
    assert approvers == {("responder", people["alex"]["id"]), ("on_call_lead", crew["lee"]["id"]),
                         ("iam_duty_manager", crew["ivy"]["id"])}  # fmt: skip
    assert crew["sam"]["id"] not in [a["by"]["id"] for a in body["approvals"]]

    resolve(sim, host, people, request_id)
    body = revoked_and_clean(sim, host, storage, people, request_id)
    [sessions] = steps(body, "revocation.sessions")
    assert sessions["outcome"] == "revoked"
    revocations = sim.control("GET", "graph/session-revocations")["sessionRevocations"]
    assert revocations[people["alex"]["id"]]["count"] == 1
    assert len(admin_assigns(sim, people["alex"]["id"])) == 1


def test_a_second_approval_that_arrives_while_the_first_is_being_recorded_is_counted(
    sim: SimulatorProcess, host: DevhostProcess, storage: Azurite
) -> None:
    pim_behaviour(sim, GLOBAL_ADMINISTRATOR)
    people = world(sim)
    crew = people["people"]
    request_id, lead, iam = confirmed_global_admin_request(sim, host, people)
    # Holds the orchestration in its recording of the first vote (updating the other card takes 4 s), so
    # that the second click lands while it records, as two approvers clicking within a second do.
    held = sim.fault(service="teams", method="PUT", latency_ms=4000, count=1)
    assert click_card(sim, host.url, lead, crew["lee"], "approve")["status"] == 200
    counted_vote(host, request_id, crew["lee"]["id"])
    second = click_card(sim, host.url, iam, crew["ivy"], "approve")
    assert second["status"] == 200 and "Approved by ivy" in str(second["body"])

    body = wait_for_state(host, request_id, ("effective", "escalated", "failed", "denied", "expired"))
    assert body["state"] == "effective", [s["detail"] for s in steps(body, "request.state")][-1]
    assert next(f for f in sim.state()["faults"] if f["id"] == held)["hits"] == 1
    votes = [(s["outcome"], (s["actor"] or {}).get("id")) for s in steps(body, "approval.vote")]
    assert ("counted", crew["lee"]["id"]) in votes and ("counted", crew["ivy"]["id"]) in votes
    resolve(sim, host, people, request_id)
    revoked_and_clean(sim, host, storage, people, request_id)


def test_access_never_effective_by_the_deadline_is_escalated_and_probed_slowly_until_resolution(
    sim: SimulatorProcess, host: DevhostProcess, storage: Azurite, policy_path: Path
) -> None:
    people, request_id = exchange_on_a_major_incident(sim, host, exchange=3600)
    body = wait_for_state(host, request_id, ("escalated", "effective", "failed"), timeout=PATIENCE)
    assert body["state"] == "escalated", body["timeline"][-1]
    assert steps(body, "proof.effective") == [] and steps(body, "proof.store_mismatch") == []
    last = [p for p in steps(body, "proof.poll") if "cadence" not in p["detail"]][-1]
    assert last["detail"]["sinceSubmission"] >= PROOF_DEADLINE

    [post] = iam_posts(sim, load_policy(policy_path), request_id)
    assert f"not effective {PROOF_DEADLINE} s after submission" in post and "exchange_role_group" in post
    # The diagnostics: each probe's error code, request-id and client-request-id.
    for result in last["detail"]["results"]:
        assert f"'code': '{result['code']}'" in post
        assert result["requestId"] and result["requestId"] in post and result["clientRequestId"] in post
    assert "[Access escalated]" in "\n".join(journal(sim, people))

    body = wait_for_step(host, request_id, "proof.poll", count=len(steps(body, "proof.poll")) + 2)
    slow = [p for p in steps(body, "proof.poll") if p["detail"].get("cadence") == "slow"]
    assert len(slow) >= 2 and all(p["outcome"] == "failed" for p in slow)
    gap = datetime.fromisoformat(slow[1]["time"]) - datetime.fromisoformat(slow[0]["time"])
    assert gap.total_seconds() >= 3  # the slow cadence, not the proof's
    assert status(host, request_id)["state"] == "escalated"

    resolve(sim, host, people, request_id)
    body = revoked_and_clean(sim, host, storage, people, request_id)
    assert states_recorded(body)[-3:] == ["activated", "escalated", "revoked"]
    assert len(iam_posts(sim, load_policy(policy_path), request_id)) == 1
    signals = [e["signal"] for e in telemetry_events(host, request_id) if e.get("signal")]
    assert signals == ["escalation"]  # the alert rule "escalation" fires once


# --- Graph misbehaving -----------------------------------------------------------------------------------


def test_a_throttled_probe_waits_for_retry_after_and_the_proof_still_ends_effective(
    sim: SimulatorProcess, host: DevhostProcess, storage: Azurite
) -> None:
    # Only the probes read the unified store: 429 with Retry-After 3 on its next four reads, which is the
    # SDK's first try and its three retries of one probe, so the fourth reaches the workflow.
    sim.fault(service="graph", method="GET", path_contains="directory/roleAssignments", status=429,
              retry_after=3, count=4)  # fmt: skip
    people, request_id = exchange_on_a_major_incident(sim, host, unified=0, directoryRole=0, exchange=0)
    body = wait_for_state(host, request_id, ("effective", "escalated", "failed"), timeout=PATIENCE)
    assert body["state"] == "effective", body["timeline"][-1]

    polls = steps(body, "proof.poll")
    throttled = [i for i, p in enumerate(polls)
                 if any(r["status"] == 429 for r in p["detail"]["results"])]  # fmt: skip
    assert throttled == [0], [p["detail"] for p in polls]
    [result] = [r for r in polls[0]["detail"]["results"] if r["status"] == 429]
    assert result["probe"] == "unified_assignment" and result["code"] == "TooManyRequests"
    gap = polls[1]["detail"]["sinceSubmission"] - polls[0]["detail"]["sinceSubmission"]
    assert gap >= 3, gap  # the poll after a 429 came no sooner than Graph's Retry-After
    reads = sim.calls("graph", method="GET", path_contains="directory/roleAssignments")
    assert [c["status"] for c in reads[:5]] == [429, 429, 429, 429, 200]

    resolve(sim, host, people, request_id)
    revoked_and_clean(sim, host, storage, people, request_id)


def test_a_503_after_the_activation_took_effect_activates_once(
    sim: SimulatorProcess, host: DevhostProcess, storage: Azurite
) -> None:
    sim.fault(service="graph", method="POST", path_contains=REQUESTS, status=503, retry_after=1, after=True)
    people, request_id = exchange_on_a_major_incident(sim, host)
    body = wait_for_state(host, request_id, ("effective", "escalated", "failed"), timeout=PATIENCE)
    assert body["state"] == "effective", body["timeline"][-1]
    submits = steps(body, "activation.submit")
    assert [(s["outcome"], s["detail"]["verdict"]) for s in submits] == [
        ("unavailable", "unavailable"), ("accepted", "exists")]  # fmt: skip
    [post] = admin_assigns(sim, people["alex"]["id"])
    assert (post["status"], post["effect_status"]) == (503, 201)
    active, _ = grants_of(sim, people["alex"]["id"])
    assert len(active) == 1 and active[0]["origin"] == "pim"

    resolve(sim, host, people, request_id)
    revoked_and_clean(sim, host, storage, people, request_id)
    assert len(admin_assigns(sim, people["alex"]["id"])) == 1
    assert len(grants_of(sim, people["alex"]["id"])[1]) == 1


# --- the runtime failing under the request ---------------------------------------------------------------


def test_a_devhost_killed_mid_proof_resumes_the_request_without_a_second_activation(
    sim: SimulatorProcess, simulators: SimulatorProcess, storage: Azurite, policy_path: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    host = new_host(tmp_path, storage, simulators, policy_path)
    host.start()
    try:
        people, request_id = exchange_on_a_major_incident(sim, host, exchange=10)
        body = wait_for_step(host, request_id, "proof.poll")
        assert body["state"] == "activated"
        host.kill()  # SIGKILL: no shutdown code runs
        host.start()  # the same settings file: the same task hub, port and keys
        body = wait_for_state(host, request_id, ("effective", "escalated", "failed"), timeout=PATIENCE)
        assert body["state"] == "effective", (body["timeline"][-1], host.log_tail())
        assert [s["detail"]["verdict"] for s in steps(body, "activation.submit")] == ["done"]
        resolve(sim, host, people, request_id)
        body = revoked_and_clean(sim, host, storage, people, request_id)
        seqs = [s["seq"] for s in body["timeline"]]
        assert seqs == list(range(len(seqs)))  # no row lost or written twice across the crash
        assert len(admin_assigns(sim, people["alex"]["id"])) == 1
        assert len(grants_of(sim, people["alex"]["id"])[1]) == 1
    finally:
        host.kill()


def test_an_azurite_restart_during_the_hold_loses_nothing_and_the_request_ends_revoked(
    sim: SimulatorProcess, simulators: SimulatorProcess, policy_path: Path, tmp_path: Path
) -> None:
    # Its own on-disk Azurite: restarted with SIGINT (which flushes to disk) and the same data directory.
    with Azurite(location=tmp_path / "azurite") as own:
        host = new_host(tmp_path, own, simulators, policy_path)
        host.start()
        try:
            people, request_id = exchange_on_a_major_incident(sim, host)
            before = wait_for_state(host, request_id, ("effective", "escalated", "failed"), timeout=PATIENCE)
            assert before["state"] == "effective", before["timeline"][-1]
            own.restart()
            assert own.running
            resolve(sim, host, people, request_id)
            body = revoked_and_clean(sim, host, own, people, request_id)
            STARTED.discard(request_id)  # verified here: its chain lives in this Azurite, not the module's
            assert body["timeline"][: len(before["timeline"])] == before["timeline"]
            assert len(admin_assigns(sim, people["alex"]["id"])) == 1
        finally:
            host.kill()


# --- how a request ends ----------------------------------------------------------------------------------


def test_a_resolution_while_approvals_are_pending_cancels_the_request_and_grants_nothing(
    sim: SimulatorProcess, host: DevhostProcess, storage: Azurite
) -> None:
    people = world(sim)
    request_id = start(sim, host, people, access__role="Global Administrator")
    confirm = card(host, request_id, "responder", "confirm")
    assert click_card(sim, host.url, confirm, people["alex"], "confirm")["status"] == 200
    lead = card(host, request_id, "on_call_lead", "approve")
    iam = card(host, request_id, "iam_duty_manager", "approve")
    assert status(host, request_id)["state"] == "awaiting_approval"

    resolve(sim, host, people, request_id)
    body = ended(host, request_id)
    assert body["state"] == "cancelled" and body["auditVerified"] is True
    assert "activated" not in states_recorded(body) and steps(body, "activation.submit") == []

    def cancelled_shown() -> bool:
        return all(any("Cancelled" in text for text in card_texts(sim, c)) for c in (lead, iam))

    eventually("both approval cards showing Cancelled", cancelled_shown, host)
    assert grants_of(sim, people["alex"]["id"]) == ([], [])
    assert admin_assigns(sim, people["alex"]["id"]) == []
    assert "[Access cancelled]" in "\n".join(journal(sim, people))
    with (
        TableServiceClient.from_connection_string(storage.connection_string) as service,
        pytest.raises(UnknownGrantError),
    ):
        GrantLedger(service).get(Grant.id_for(request_id, "pim"))


def test_a_resolution_for_a_ticket_without_a_request_is_ignored_and_recorded(
    sim: SimulatorProcess, host: DevhostProcess, storage: Azurite
) -> None:
    people = world(sim)

    def ignored_rows() -> list[Any]:
        with TableServiceClient.from_connection_string(storage.connection_string) as service:
            rows = AuditLedger(service, POLICY.version_hash, POLICY.file_hash).read(
                security_chain(datetime.now(UTC))
            )
        return [r for r in rows if r.kind == "intake.ignored"
                and r.to_json()["detail"].get("ticket") == people["incident"]["number"]]  # fmt: skip

    assert ignored_rows() == []
    payload = servicenow_payload(people, event="resolved", state="6")
    answer = send_servicenow(sim, host.url, SECRET, payload)
    assert answer["status"] == 200, answer
    assert answer["body"]["status"] == "ignored"
    assert f"ticket {people['incident']['number']} has no running request" in answer["body"]["reason"]
    [row] = ignored_rows()
    assert row.to_json()["outcome"] == "ignored"
    assert journal(sim, people) == []  # nothing was written to a ticket that has no request


def test_access_ends_when_the_approved_duration_ends_without_a_resolution(
    sim: SimulatorProcess, host: DevhostProcess, storage: Azurite
) -> None:
    # The intake takes any positive duration up to the trigger's PT2H; 15 s is well above the simulated
    # PIM's 2-second minimum and leaves time to prove the access first.
    pim_behaviour(sim, EXCHANGE_ADMINISTRATOR)
    people = world(sim)
    request_id = start(sim, host, people, access__duration="PT15S")
    body = wait_for_state(host, request_id, ("effective", "escalated", "failed"), timeout=PATIENCE)
    assert body["state"] == "effective", body["timeline"][-1]

    body = revoked_and_clean(sim, host, storage, people, request_id)
    assert final_reason(body) == "the approved duration ended"
    assert steps(body, "hold.resolved") == []
    [submitted] = steps(body, "activation.submit")
    [removed] = [s for s in steps(body, "revocation.remove") if s["outcome"] == "accepted"]
    held = datetime.fromisoformat(removed["time"]) - datetime.fromisoformat(submitted["time"])
    assert held.total_seconds() >= 15
