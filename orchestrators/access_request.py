"""The access-request orchestration: one per (ITSM system, ticket, role) and generation (design.md §2).

Stages, each a short generator: validate -> approve (a sub-orchestration) -> activate -> prove (a
sub-orchestration) -> hand over -> hold -> revoke (orchestrators/access.py). The orchestration ends
``rejected`` (a check failed), ``denied``, ``expired``, ``cancelled`` (the incident was resolved before
activation), ``escalated`` (PIM refused the activation), ``revoked`` or ``removal_failed`` (the sweep
retries). A request approved by the major-incident rule is activated at once; its post-facto review is
recorded whenever it comes (bounded by ``timings.review_due``).

The incident's resolution (an ITSM event, raised by the intake) is heard in every stage after validation:
the approval and the proof sub-orchestrations stop on it, the hold ends on it, and the request checks for
it before activating, so a resolution that came first never grants anything.

Replay rules: see orchestrators/flow.py; no I/O here, everything through activities.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from activities.access import SET_GRANT_STATE
from activities.access_request import (
    VALIDATE_DUPLICATES,
    VALIDATE_ELIGIBILITY,
    VALIDATE_INCIDENT,
    VALIDATE_RESPONDER,
    VALIDATE_ROLE,
)
from activities.approval import CLOSE_OPEN_ROUNDS
from orchestrators.access import activate_to_revoke, resolved_already
from orchestrators.approval import APPROVAL_ORCHESTRATOR, approval_instance_id, conclude_review
from orchestrators.flow import RESOLUTION_EVENT, RETRY, WORKFLOW_VERSION, RequestFlow, Steps
from shared.approvals import ApprovalRound
from shared.validation import CheckResult

ACCESS_REQUEST_ORCHESTRATOR = "access_request"
__all__ = ["ACCESS_REQUEST_ORCHESTRATOR", "WORKFLOW_VERSION", "access_request"]

bp = df.Blueprint()


def validate(flow: RequestFlow) -> Generator[Any, Any, tuple[CheckResult | None, dict[str, Any]]]:
    """Run the chain in order; returns the first failed check (or None when all passed) and what the checks
    found (the responder's identity, the incident)."""
    request_json = flow.request.to_dict()
    responder: dict[str, Any] = {}
    role: dict[str, Any] = {}
    found: dict[str, dict[str, Any]] = {}
    for activity in (
        VALIDATE_RESPONDER,
        VALIDATE_ROLE,
        VALIDATE_INCIDENT,
        VALIDATE_ELIGIBILITY,
        VALIDATE_DUPLICATES,
    ):
        payload = {
            "request": request_json,
            "userId": responder.get("userId"),
            "role": role.get("role"),
            "templateId": role.get("templateId"),
        }
        result = CheckResult.from_json(
            (yield flow.context.call_activity_with_retry(activity, RETRY, payload))
        )
        flow.checks.append({"check": result.check, "passed": result.passed})
        calls = [call.__dict__ for call in result.calls]
        yield from flow.record(
            f"validation.{result.check}",
            "passed" if result.passed else "failed",
            {"reason": result.reason, "evidence": result.evidence, "graphCalls": calls},
            role=flow.request.role,
            graph=calls[-1] if calls else None,
        )
        verdict = "passed" if result.passed else "FAILED"
        yield from flow.ticket(f"Check {result.check}: {verdict}. {result.reason}")
        found[result.check] = result.evidence
        if not result.passed:
            return result, found
        if result.check == "responder":
            responder = result.evidence
        elif result.check == "role":
            role = result.evidence
    return None, found


@bp.orchestration_trigger(context_name="context", orchestration=ACCESS_REQUEST_ORCHESTRATOR)
def access_request(context: df.DurableOrchestrationContext) -> Steps:
    flow = RequestFlow(context)
    try:
        return (yield from _run(flow))
    except Exception as error:  # an activity failed after its retries (e.g. the ITSM or Graph is down)
        # Never leave a request silently half-done: record why it stopped, then end. Escalation with
        # diagnostics comes with the escalation stage.
        reason = f"the request stopped: {str(error).splitlines()[0][:500]}"
        yield from flow.resync()  # a failed sub-orchestration may have written rows we did not count
        with contextlib.suppress(Exception):  # best effort: no card of a stopped request takes clicks
            yield context.call_activity_with_retry(CLOSE_OPEN_ROUNDS, RETRY, flow.request_id)
        for grant_id in list(flow.grants):
            # Access granted and not removed: hand it to the sweep, which removes a removal_failed grant at
            # its next run (within minutes), not at the end of the approved duration.
            with contextlib.suppress(Exception):
                yield context.call_activity_with_retry(
                    SET_GRANT_STATE, RETRY,
                    {"grantId": grant_id, "state": "removal_failed",
                     "detail": f"{reason}; the sweep removes it"},
                )  # fmt: skip
        yield from flow.set_state("failed", reason)
        with contextlib.suppress(Exception):  # best effort: the ticket may be what failed
            yield from flow.ticket(f"The emergency access request stopped and needs IAM: {reason}")
        return {"requestId": flow.request_id, "state": "failed", "reason": reason}


def _run(flow: RequestFlow) -> Steps:
    request = flow.request
    yield from flow.record(
        "intake.accepted",
        "recorded",
        {
            "system": request.system,
            "ticket": request.ticket,
            "delivery": request.delivery_id,
            "priority": request.priority,
            "duration": request.duration.total_seconds(),
            "justification": request.justification,
            "assignee": request.assignee.to_dict() if request.assignee else None,
            "opener": request.opener.to_dict(),
        },
        role=request.role,
        actor_upn=request.opener.email or request.opener.user_name,
    )
    yield from flow.set_state("validating")

    failed, found = yield from validate(flow)
    if failed is not None:
        reason = f"{failed.check} check failed: {failed.reason}"
        # The ticket first, then the state: a request is "rejected" once the ticket says so.
        yield from flow.ticket(f"Access rejected: {reason}", state_key="rejected")
        yield from flow.set_state("rejected", reason)
        return {"requestId": flow.request_id, "state": "rejected", "reason": reason}

    yield from flow.ticket("All checks passed; waiting for approval.", state_key="pending_approval")
    yield from flow.set_state("validated")
    return (yield from approve(flow, found))


def approve(flow: RequestFlow, found: dict[str, dict[str, Any]]) -> Steps:
    """The approval sub-orchestration, then (approved) activation to revocation."""
    responder = found["responder"]
    resolved = flow.context.wait_for_external_event(RESOLUTION_EVENT)  # the request's one wait for it
    result = yield flow.context.call_sub_orchestrator(
        APPROVAL_ORCHESTRATOR,
        {"requestId": flow.request_id, "request": flow.request.to_dict(), "checks": flow.checks,
         "seq": flow.seq, "responder": {"userId": responder["userId"], "upn": responder["upn"]},
         "majorIncident": bool(found["incident"].get("majorIncident")),
         "parentInstanceId": flow.context.instance_id},
        approval_instance_id(flow.request_id),
    )  # fmt: skip
    flow.seq = int(result["seq"])
    outcome, reason = result["outcome"], result["reason"]
    approvals = result["approvals"]
    review = ApprovalRound.from_json(result["review"]) if result["review"] else None
    if outcome == "approved" and (yield from resolved_already(flow, resolved)):
        outcome, reason = "resolved", "the incident was resolved before activation"
        if review is not None:  # nothing was granted: there is nothing to review
            yield from conclude_review(flow, review, answered=False)
    if outcome == "resolved":
        yield from flow.ticket(f"Access cancelled: {reason}; nothing was granted.", state_key="cancelled")
        yield from flow.set_state("cancelled", reason, approvals=approvals)
        return {"requestId": flow.request_id, "state": "cancelled", "reason": reason}
    if outcome in ("denied", "expired"):
        yield from flow.ticket(f"Access {outcome}: {reason}.", state_key=outcome)
        yield from flow.set_state(outcome, reason, approvals=approvals)
        return {"requestId": flow.request_id, "state": outcome, "reason": reason}
    who = "; ".join(f"{a['by']} ({a['stage'].replace('_', ' ')}) at {a['at']}" for a in approvals)
    yield from flow.ticket(f"Access approved ({reason}){': ' + who if who else ''}. Activation follows.")
    yield from flow.set_state("approved", reason, approvals=approvals)
    ended = yield from activate_to_revoke(
        flow, responder_ref(responder), resolved, review, int(result.get("round", 0))
    )
    return {**ended, "path": result["path"], "approvals": approvals}


def responder_ref(responder: dict[str, Any]) -> dict[str, str]:
    return {"userId": responder["userId"], "upn": responder["upn"]}
