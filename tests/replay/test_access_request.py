"""The access-request orchestration replayed in-process through the SDK's real replay handle (the
devhost engine with an in-memory store), with scripted activities: every branch, deterministically."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import pytest

from activities import access as access_activities
from activities import access_request as activities
from activities import approval as approval_activities
from local.devhost.replay import Replay, StepReplay, replay
from orchestrators import access, access_request, approval
from shared.approvals import Verb, Vote, plan_approval, vote_event
from shared.models import AccessRequest, LinkedIncident, Person
from shared.policy import load_policy
from shared.settings import DEFAULT_POLICY_PATH
from shared.validation import CheckResult

EXCHANGE = "29232cdf-9323-42fd-ade2-1d097af3e4de"
ALEX_ID = "11111111-0000-4000-8000-000000000001"
LEE_ID = "11111111-0000-4000-8000-000000000003"
IVY_ID = "11111111-0000-4000-8000-000000000004"
REQUEST = AccessRequest(
    system="servicenow", event="created", ticket="INC0012345", ticket_id="a" * 32, priority="P1",
    itsm_priority="1", state="2", short_description="Mail flow down",
    opener=Person("sam", "sam@contoso.test"), assignee=Person("alex", "alex@contoso.test"),
    assignment_group="Messaging", incident=LinkedIncident("INC0012345", "2", True, True),
    access_type="privileged", role="Exchange Administrator", duration=timedelta(hours=1),
    justification="restore mail flow", delivery_id="d-1",
)  # fmt: skip
# Held for half a second (the replay's timers are real): the whole flow, approval to revocation, runs.
REQUEST_ID = "servicenow-INC0012345-29232cdf-g1"
START = {
    "requestId": REQUEST_ID,
    "request": dataclasses.replace(REQUEST, duration=timedelta(seconds=0.5)).to_dict(),
}
PLAN = {
    "role": "Exchange Administrator", "templateId": EXCHANGE,
    "probes": ["pim_instance", "unified_assignment"], "proofDeadline": 5, "revokeSessions": False,
    "progress": 2, "firstProbe": 0.01, "maxProbe": 0.05, "slowProbe": 1, "mismatch": 1, "minimumActive": 0,
    "iamConversationId": "19:iam",
}  # fmt: skip

app = df.DFApp()
app.register_functions(access_request.bp)
app.register_functions(activities.bp)
app.register_functions(approval.bp)
app.register_functions(approval_activities.bp)
app.register_functions(access.bp)
app.register_functions(access_activities.bp)
POLICY = load_policy(DEFAULT_POLICY_PATH)


def passed(check: str, **evidence: Any) -> Any:
    return lambda payload: CheckResult(check, True, f"{check} ok", evidence).to_json()


def failed(check: str, reason: str) -> Any:
    return lambda payload: CheckResult(check, False, reason, {}).to_json()


def script(**overrides: Any) -> dict[str, Any]:
    written: set[int] = set()
    assigned: list[str] = []

    def activate(payload: dict[str, Any]) -> dict[str, Any]:
        assigned.append(payload["responderId"])
        return {"verdict": "done", "requestId": "pim-1", "status": "Provisioned", "graph": None}

    def remove(payload: dict[str, Any]) -> dict[str, Any]:
        assigned.remove(payload["responderId"])
        return {"verdict": "done", "requestId": "pim-2", "graph": None}

    def probes(payload: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"probe": p, "passed": bool(assigned), "graph": None} for p in payload["probes"]]

    def record(payload: dict[str, Any]) -> dict[str, Any]:
        written.add(payload["seq"])
        return {"seq": payload["seq"], "hash": "h"}

    chain = {
        activities.RECORD_AUDIT: record,
        activities.UPDATE_TICKET: lambda payload: {"call": "ok"},
        activities.VALIDATE_RESPONDER: passed("responder", userId=ALEX_ID, upn="alex@contoso.test"),
        activities.VALIDATE_ROLE: passed("role", role="Exchange Administrator", templateId=EXCHANGE),
        activities.VALIDATE_INCIDENT: passed("incident"),
        activities.VALIDATE_ELIGIBILITY: passed("eligibility"),
        activities.VALIDATE_DUPLICATES: passed("duplicates"),
        activities.AUDIT_NEXT_SEQ: lambda chain: len(written),
        # Approval by the major-incident rule (the incident is a declared major incident), with a review
        # that nobody answers within its (tiny) due time: the parent's whole path, without waiting.
        approval_activities.PLAN_APPROVAL: lambda payload: {
            "plan": plan_approval(POLICY.role("Exchange Administrator"), POLICY, True).to_json(),
            "openerId": "", "openerNames": ["sam@contoso.test"], "summary": {"ticket": "INC0012345"},
            "dueSeconds": 900, "reminderSeconds": 450, "reviewSeconds": 0.05, "graph": None,
        },
        approval_activities.OPEN_ROUND: lambda payload: payload,
        approval_activities.POST_CARD: lambda payload: {"conversationId": "19:iam", "activityId": "a1",
                                                        "new": True},
        approval_activities.UPDATE_CARDS: lambda payload: {"updated": []},
        approval_activities.CLOSE_ROUND: lambda payload: payload,
        # Activation to revocation: PIM and the stores, as one list of what is assigned.
        access_activities.PLAN_ACCESS: lambda payload: PLAN,
        access_activities.ACTIVATE: activate,
        access_activities.RUN_PROBES: probes,
        access_activities.RECORD_GRANT: lambda payload: {"grant_id": f"{payload['requestId']}:pim"},
        access_activities.SET_GRANT_STATE: lambda payload: payload,
        access_activities.REMOVE: remove,
        access_activities.NOTIFY: lambda payload: {"conversationId": "a:1", "activityId": "1"},
    }  # fmt: skip
    chain.update(overrides)
    return chain


def run(activities_script: dict[str, Any]) -> Replay:
    return asyncio.run(replay(app, access_request.ACCESS_REQUEST_ORCHESTRATOR, START, activities_script))


def audit_kinds(result: Replay) -> list[str]:
    return [payload["entry"]["kind"] for payload in result.inputs(activities.RECORD_AUDIT)]


def notes(result: Replay) -> list[str]:
    return [p["note"] for p in result.inputs(activities.UPDATE_TICKET) if p.get("note")]


def states_of(result: Replay) -> list[str]:
    return [p["entry"]["detail"]["state"] for p in result.inputs(activities.RECORD_AUDIT)
            if p["entry"]["kind"] == "request.state"]  # fmt: skip


def test_all_checks_pass_then_approval_continues_the_same_contiguous_audit_chain() -> None:
    result = run(script())
    assert result.instance.status == "Completed"
    assert result.output["state"] == "revoked"
    assert result.output["reason"] == "the approved duration ended"
    assert result.output["path"] == "major_incident_rule"
    seqs = [payload["seq"] for payload in result.inputs(activities.RECORD_AUDIT)]
    assert seqs == list(range(len(seqs)))  # the sub-orchestrations continued the parent's sequence
    assert audit_kinds(result)[:12] == [
        "intake.accepted", "request.state", "validation.responder", "validation.role", "validation.incident",
        "validation.eligibility", "validation.duplicates", "request.state", "approval.planned",
        "approval.rule", "approval.card_posted", "request.state",
    ]  # fmt: skip
    assert states_of(result) == ["validating", "validated", "approved", "activated", "effective", "revoked"]
    assert {"activation.submit", "proof.poll", "proof.effective", "revocation.remove",
            "revocation.confirmed"} <= set(audit_kinds(result))  # fmt: skip
    # Nobody answered the review within its (tiny) due time: recorded after the access ended.
    assert audit_kinds(result)[-1] == "approval.review"
    assert all(p["entry"]["workflow_version"] == access_request.WORKFLOW_VERSION
               for p in result.inputs(activities.RECORD_AUDIT))  # fmt: skip
    states = [p["state"] for p in result.inputs(activities.UPDATE_TICKET) if p.get("state")]
    assert states == ["pending_approval", "pending_validated", "in_progress", "revoked"]
    assert len(result.inputs(access_activities.ACTIVATE)) == 1
    review_round = result.inputs(approval_activities.OPEN_ROUND)[0]
    assert review_round["purpose"] == "review"
    assert review_round["instance_id"] == "replay-1"  # review votes go to the parent


def test_later_checks_get_the_responder_and_the_role_from_earlier_ones() -> None:
    result = run(script())
    eligibility = result.inputs(activities.VALIDATE_ELIGIBILITY)[0]
    assert (eligibility["userId"], eligibility["role"], eligibility["templateId"]) == (
        ALEX_ID, "Exchange Administrator", EXCHANGE,
    )  # fmt: skip


def test_the_first_failed_check_rejects_and_no_later_check_runs() -> None:
    result = run(
        script(**{activities.VALIDATE_RESPONDER: failed("responder", "alex is not on call: off shift")})
    )
    assert result.output["state"] == "rejected"
    assert "responder check failed: alex is not on call" in result.output["reason"]
    assert result.inputs(activities.VALIDATE_ROLE) == []
    assert [p["state"] for p in result.inputs(activities.UPDATE_TICKET) if p.get("state")] == ["rejected"]
    assert any("Access rejected" in note for note in notes(result))
    assert audit_kinds(result)[-1] == "request.state"
    assert result.inputs(activities.RECORD_AUDIT)[-1]["entry"]["detail"]["state"] == "rejected"


def test_a_transient_ticket_failure_is_retried_without_posting_the_note_twice() -> None:
    attempts: Counter[str] = Counter()

    def flaky_state(payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("state"):
            attempts["state"] += 1
            if attempts["state"] == 1:
                raise RuntimeError("ServiceNow answered 503")
        return {"call": "ok"}

    result = run(script(**{activities.UPDATE_TICKET: flaky_state}))
    assert result.output["state"] == "revoked"
    assert attempts["state"] == 5  # four state changes, the first one retried once
    assert len(notes(result)) == len(set(notes(result)))


def test_an_activity_that_keeps_failing_ends_the_request_failed_at_the_next_audit_row() -> None:
    def graph_down(payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("Graph answered 503 three times")

    result = run(script(**{activities.VALIDATE_INCIDENT: graph_down}))
    assert result.output["state"] == "failed"
    assert "Graph answered 503" in result.output["reason"]
    assert len(result.inputs(activities.VALIDATE_INCIDENT)) == 3  # the retry policy's attempts
    seqs = [payload["seq"] for payload in result.inputs(activities.RECORD_AUDIT)]
    assert seqs == list(range(len(seqs)))  # no gap, no reuse
    assert any("needs IAM" in note for note in notes(result))


@pytest.mark.parametrize("check", ["role", "incident", "eligibility", "duplicates"])
def test_each_check_can_reject(check: str) -> None:
    name = f"validate_{check}"
    result = run(script(**{name: failed(check, f"{check} says no")}))
    assert result.output == {"requestId": START["requestId"], "state": "rejected",
                             "reason": f"{check} check failed: {check} says no"}  # fmt: skip


def test_a_failed_approval_sub_orchestration_ends_the_request_failed_after_its_rows() -> None:
    def teams_down(payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("Bot Connector answered 503 three times")

    result = run(script(**{approval_activities.POST_CARD: teams_down}))
    assert result.output["state"] == "failed"
    assert "Bot Connector answered 503" in result.output["reason"]
    seqs = [payload["seq"] for payload in result.inputs(activities.RECORD_AUDIT)]
    assert seqs == list(range(len(seqs)))  # the parent went on after the child's rows, no reuse
    assert audit_kinds(result)[-3:] == ["approval.planned", "approval.rule", "request.state"]


def resolution_script(**overrides: Any) -> dict[str, Any]:
    """Two-person approval (Global Administrator is high risk), the cards posted and nobody voting."""
    return script(**{
        approval_activities.PLAN_APPROVAL: lambda payload: {
            "plan": plan_approval(POLICY.role("Global Administrator"), POLICY, False).to_json(),
            "openerId": "", "openerNames": ["sam@contoso.test"], "summary": {"ticket": "INC0012345"},
            "dueSeconds": 900, "reminderSeconds": 450, "reviewSeconds": 60, "graph": None,
        },
        **overrides,
    })  # fmt: skip


def drive(activities_script: dict[str, Any], steps: Any) -> tuple[StepReplay, Any]:
    async def go() -> tuple[StepReplay, Any]:
        orchestrator = access_request.ACCESS_REQUEST_ORCHESTRATOR
        run = await StepReplay.start(app, orchestrator, START, activities_script)
        try:
            await steps(run)
            return run, await run.output()
        finally:
            await run.stop()

    return asyncio.run(go())


def test_a_resolution_during_approval_cancels_the_request_and_grants_nothing() -> None:
    async def steps(run: StepReplay) -> None:
        # The intake raises it to the request and to its running approval.
        await run.raise_event(access.RESOLUTION_EVENT, {"at": "now"})
        await run.raise_event(access.RESOLUTION_EVENT, {"at": "now"},
                              approval.approval_instance_id(REQUEST_ID))  # fmt: skip
        assert (await run.instance()).is_terminal

    run, output = drive(resolution_script(), steps)
    assert output["state"] == "cancelled"
    assert output["reason"] == "the incident was resolved before the responder confirmed"
    assert run.inputs(access_activities.ACTIVATE) == []
    assert [p["status"] for p in run.inputs(approval_activities.UPDATE_CARDS)] == ["cancelled"]
    assert [p["outcome"] for p in run.inputs(approval_activities.CLOSE_ROUND)] == ["resolved"]
    states = [p["state"] for p in run.inputs(activities.UPDATE_TICKET) if p.get("state")]
    assert states == ["pending_approval", "cancelled"]


def test_a_resolution_buffered_while_the_approval_ran_stops_the_request_before_activation() -> None:
    # The resolution reached the request (only) while it waited for its approval; the approval then ended
    # approved: the buffered event is found before activation, and nothing is granted.
    request_id = REQUEST_ID
    stored: dict[tuple[int, str], dict[str, Any]] = {}

    async def cast(run: StepReplay, round_no: int, stage: str, approver: str, verb: Verb) -> None:
        at = datetime.now(UTC)
        stored[(round_no, stage)] = Vote(
            request_id, round_no, stage, approver, "someone@contoso.test", "Someone", verb, at
        ).to_json()
        announcement = {"voteId": stored[(round_no, stage)]["voteId"], "round": round_no, "stage": stage}
        instance = approval.approval_instance_id(request_id)
        await run.raise_event(vote_event(round_no, stage), announcement, instance)

    async def steps(run: StepReplay) -> None:
        await cast(run, 1, "responder", ALEX_ID, "confirm")
        await run.raise_event(access.RESOLUTION_EVENT, {"at": "now"})  # to the request only
        await cast(run, 2, "on_call_lead", LEE_ID, "approve")
        await cast(run, 2, "iam_duty_manager", IVY_ID, "approve")
        await run.run_to_end()

    loads = {approval_activities.LOAD_VOTE: lambda p: stored.get((p["round"], p["stage"]))}
    run, output = drive(resolution_script(**loads), steps)
    assert output["state"] == "cancelled"
    assert output["reason"] == "the incident was resolved before activation"
    assert run.inputs(access_activities.ACTIVATE) == []
    assert [p["outcome"] for p in run.inputs(approval_activities.CLOSE_ROUND)] == ["approved", "approved"]


def test_a_request_that_stops_after_granting_hands_the_grant_to_the_sweep() -> None:
    def graph_down(payload: dict[str, Any]) -> Any:
        raise RuntimeError("Graph answered 503 three times")

    result = run(script(**{access_activities.RUN_PROBES: graph_down}))
    assert result.output["state"] == "failed"
    handed = [(p["grantId"], p["state"]) for p in result.inputs(access_activities.SET_GRANT_STATE)]
    assert handed == [(f"{REQUEST_ID}:pim", "removal_failed")]  # the sweep removes it at its next run


def test_once_access_is_granted_a_ticket_that_cannot_be_written_does_not_stop_the_removal() -> None:
    def itsm_down_after_grant(payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("state") in ("pending_validated", "in_progress", "revoked"):
            raise RuntimeError("ServiceNow answered 503")
        return {"call": "ok"}

    result = run(script(**{activities.UPDATE_TICKET: itsm_down_after_grant}))
    assert result.output["state"] == "revoked"
    assert audit_kinds(result).count("ticket.failed") == 3
    assert len(result.inputs(access_activities.REMOVE)) == 1
