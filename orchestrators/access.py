"""After approval: activate, prove, hand over, hold, revoke (design.md §2, "Activation" to "Revocation").

- ``activate``: ``adminAssign`` through an activity that first looks for what an earlier attempt did; the
  answer is classified (shared.pim) and only throttling, outages and replication lag are retried, on
  durable timers (Retry-After honoured). One approval, at most one activation.
- ``proof`` (a sub-orchestration, so the polling history stays out of the request's): probe rounds with a
  doubling wait up to ``probe_max_interval``, until every required probe passes (access *became effective*
  at that round; the previous failing round is the lower bound), or the role's proof deadline. While not
  effective: one progress message to the responder and one ticket note per ``progress_interval``. A store
  that keeps disagreeing with PIM beyond ``store_mismatch_threshold`` is routed to IAM with the evidence.
- ``hold``: until the incident is resolved (the intake raises the event) or the approved duration ends;
  when the deadline passed without proof, probing continues at ``slow_probe_interval``.
- ``revoke``: ``adminRemove`` (within PIM's minimum active time the removal is scheduled on a timer, not
  failed; a second removal is a success), read back until the stores no longer show it, the sign-in sessions
  revoked when the role's policy says so, the grant ledger updated, the ticket told.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from activities.access import (
    ACTIVATE,
    NOTIFY,
    PLAN_ACCESS,
    RECORD_GRANT,
    REMOVE,
    REVOKE_SESSIONS,
    RUN_PROBES,
    SET_GRANT_STATE,
)
from orchestrators.approval import await_review, conclude_review, review_event
from orchestrators.flow import RETRY, RequestFlow, Steps
from shared.approvals import ApprovalRound
from shared.proof import effective, failing, next_wait, stores_disagree

PROOF_ORCHESTRATOR = "proof"
RESOLUTION_EVENT = "IncidentResolved"
_MAX_WRITE_ATTEMPTS = 6
_RETRYABLE = ("throttled", "unavailable", "not_found")

bp = df.Blueprint()


def _at(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S UTC")


def _compact(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "probe": r["probe"],
            "passed": r["passed"],
            "reason": r.get("reason", ""),
            "requestId": (r.get("graph") or {}).get("request_id", ""),
        }
        for r in results
    ]


def _write_wait(answer: dict[str, Any], attempt: int) -> timedelta:
    """How long to wait before writing again: Graph's Retry-After when it gave one, else 5 s doubling."""
    retry_after = answer.get("retryAfter")
    return timedelta(seconds=float(retry_after)) if retry_after else timedelta(seconds=5 * 2**attempt)


def activate(flow: RequestFlow, plan: dict[str, Any], responder: dict[str, Any]) -> Steps:
    """Submit the activation; returns the accepted answer (verdict done/exists/pending) or None when PIM
    refused it for good (the reason is recorded and the caller escalates)."""
    context, request = flow.context, flow.request
    justification = (
        f"Emergency access for {request.system} {request.ticket} (incident "
        f"{request.incident.number if request.incident else 'none'}): {request.justification}"
    )
    payload = {
        "responderId": responder["userId"],
        "templateId": plan["templateId"],
        "durationSeconds": request.duration.total_seconds(),
        "justification": justification,
        "ticketNumber": request.ticket,
        "ticketSystem": request.system,
    }
    for attempt in range(_MAX_WRITE_ATTEMPTS):
        answer = yield context.call_activity_with_retry(ACTIVATE, RETRY, payload)
        accepted = answer["verdict"] in ("done", "exists", "pending")
        yield from flow.record(
            "activation.submit",
            "accepted" if accepted else answer["verdict"],
            {
                "attempt": attempt + 1,
                "verdict": answer["verdict"],
                "requestId": answer.get("requestId", ""),
                "status": answer.get("status", ""),
                "code": answer.get("code", ""),
                "message": answer.get("message", ""),
                "durationSeconds": payload["durationSeconds"],
            },
            role=request.role,
            actor_id=responder["userId"],
            actor_upn=responder["upn"],
            graph=answer.get("graph"),
        )
        if accepted:
            return answer
        if answer["verdict"] not in _RETRYABLE:
            return None
        yield context.create_timer(context.current_utc_datetime + _write_wait(answer, attempt))
    return None


@bp.orchestration_trigger(context_name="context", orchestration=PROOF_ORCHESTRATOR)
def proof(context: df.DurableOrchestrationContext) -> Steps:
    """Input: requestId, request, seq, responder {userId, upn}, plan (shared by plan_access), submittedAt.
    Output: outcome (effective, deadline), effectiveAt, lowerBound, polls, failing, results, seq."""
    flow = RequestFlow(context)
    start = context.get_input()
    plan, responder = start["plan"], start["responder"]
    submitted = datetime.fromisoformat(start["submittedAt"])
    deadline = submitted + timedelta(seconds=plan["proofDeadline"])
    progress = timedelta(seconds=plan["progress"])
    first, cap = timedelta(seconds=plan["firstProbe"]), timedelta(seconds=plan["maxProbe"])
    next_progress = submitted + progress
    last_failed: datetime | None = None
    disagree_since: datetime | None = None
    routed = False
    polls = 0
    yield context.create_timer(min(submitted + first, deadline))
    while True:
        results = yield context.call_activity_with_retry(
            RUN_PROBES,
            RETRY,
            {"responderId": responder["userId"], "templateId": plan["templateId"], "probes": plan["probes"]},
        )
        polls += 1
        now = context.current_utc_datetime
        passed = effective(results, plan["probes"])
        calls = [r["graph"] for r in results if r.get("graph")]
        yield from flow.record(
            "proof.poll",
            "passed" if passed else "failed",
            {
                "poll": polls,
                "results": _compact(results),
                "sinceSubmission": (now - submitted).total_seconds(),
            },
            role=flow.request.role,
            graph=calls[-1] if calls else None,
        )
        if passed:
            detail = {
                "effectiveAt": now.isoformat(),
                "lowerBound": last_failed.isoformat() if last_failed else None,
                "secondsAfterSubmission": (now - submitted).total_seconds(),
                "polls": polls,
            }
            yield from flow.record(
                "proof.effective",
                "passed",
                detail,
                role=flow.request.role,
                actor_id=responder["userId"],
                actor_upn=responder["upn"],
            )
            return {"outcome": "effective", **detail, "seq": flow.seq, "results": _compact(results)}
        last_failed = now
        if stores_disagree(results):
            disagree_since = disagree_since or now
            if not routed and now - disagree_since >= timedelta(seconds=plan["mismatch"]):
                routed = True
                text = (
                    f"[{flow.request_id}] {flow.request.role} for {responder['upn']}: PIM shows the "
                    f"assignment, but {', '.join(failing(results))} still do not, for "
                    f"{int((now - disagree_since).total_seconds())} s. Evidence: "
                    f"{_compact(results)}"
                )
                yield context.call_activity_with_retry(
                    NOTIFY, RETRY, {"conversationId": plan["iamConversationId"], "text": text}
                )
                yield from flow.ticket(f"Stores disagree beyond the threshold; routed to IAM: {text}")
                yield from flow.record(
                    "proof.store_mismatch", "routed", {"results": _compact(results)}, role=flow.request.role
                )
        else:
            disagree_since = None
        if now >= deadline:
            return {
                "outcome": "deadline",
                "polls": polls,
                "failing": failing(results),
                "results": _compact(results),
                "seq": flow.seq,
            }
        if now >= next_progress:
            while next_progress <= now:
                next_progress += progress
            text = (
                f"{flow.request.role} is active in PIM but not effective yet: "
                f"{', '.join(failing(results))} still failing. Next update by {_at(next_progress)}."
            )
            yield context.call_activity_with_retry(
                NOTIFY, RETRY, {"userId": responder["userId"], "text": text}
            )
            yield from flow.ticket(text)
            yield from flow.record(
                "proof.progress",
                "sent",
                {"failing": failing(results), "nextUpdate": next_progress.isoformat()},
            )
        wake = min(now + next_wait(polls - 1, first, cap), deadline)
        yield context.create_timer(wake)


def hold_and_revoke(
    flow: RequestFlow,
    plan: dict[str, Any],
    responder: dict[str, Any],
    submitted: datetime,
    proven: bool,
    grant_id: str,
    review: ApprovalRound | None = None,
) -> Steps:
    """Hold until the incident is resolved or the duration ends (probing slowly while not proven), then
    revoke; the review of a rule-approved request is recorded whenever it comes. Returns why the access
    ended, and how."""
    context, request = flow.context, flow.request
    end_at = submitted + request.duration
    slow = timedelta(seconds=plan["slowProbe"])
    reason = "the approved duration ended"
    while True:
        wake = end_at if proven else min(end_at, context.current_utc_datetime + slow)
        timer = context.create_timer(wake)
        resolved = context.wait_for_external_event(RESOLUTION_EVENT)
        reviewed = review_event(flow, review) if review is not None else None
        winner = yield context.task_any([resolved, timer, *([reviewed] if reviewed is not None else [])])
        if review is not None and winner is reviewed:
            # The post-facto review of a rule-approved request came in while the access is held.
            timer.cancel()
            yield from conclude_review(flow, review, answered=True)
            review = None
            continue
        if winner is resolved:
            timer.cancel()
            reason = "the incident was resolved"
            yield from flow.record("hold.resolved", "recorded", {"event": resolved.result}, role=request.role)
            break
        if context.current_utc_datetime >= end_at:
            break
        results = yield context.call_activity_with_retry(
            RUN_PROBES,
            RETRY,
            {"responderId": responder["userId"], "templateId": plan["templateId"], "probes": plan["probes"]},
        )
        proven = effective(results, plan["probes"])
        yield from flow.record(
            "proof.poll",
            "passed" if proven else "failed",
            {"results": _compact(results), "cadence": "slow"},
            role=request.role,
        )
        if proven:
            now = context.current_utc_datetime
            yield from flow.record(
                "proof.effective",
                "passed",
                {"effectiveAt": now.isoformat(), "late": True},
                role=request.role,
                actor_id=responder["userId"],
                actor_upn=responder["upn"],
            )
            yield from hand_over(flow, responder, now)
    state = yield from revoke(flow, plan, responder, submitted, grant_id, reason)
    if review is not None:  # not answered while the access was held: it may still come, until its due time
        yield from await_review(flow, review)
    return reason, state


def hand_over(flow: RequestFlow, responder: dict[str, Any], effective_at: datetime) -> Steps:
    text = (
        f"Your {flow.request.role} access works (proven at {_at(effective_at)}). If a workload still "
        "refuses, sign out and back in: tokens issued before the activation do not carry the role."
    )
    yield flow.context.call_activity_with_retry(NOTIFY, RETRY, {"userId": responder["userId"], "text": text})
    yield from flow.ticket(
        f"Access effective at {_at(effective_at)}: work can proceed.", state_key="in_progress"
    )
    yield from flow.set_state("effective", f"effective at {effective_at.isoformat()}")


def revoke(
    flow: RequestFlow,
    plan: dict[str, Any],
    responder: dict[str, Any],
    submitted: datetime,
    grant_id: str,
    reason: str,
) -> Steps:
    context, request = flow.context, flow.request
    payload = {
        "responderId": responder["userId"],
        "templateId": plan["templateId"],
        "justification": f"Emergency access for {request.ticket} ended: {reason}",
    }
    removed = False
    for attempt in range(_MAX_WRITE_ATTEMPTS):
        answer = yield context.call_activity_with_retry(REMOVE, RETRY, payload)
        removed = answer["verdict"] in ("done", "absent")
        yield from flow.record(
            "revocation.remove",
            "accepted" if removed else answer["verdict"],
            {
                "attempt": attempt + 1,
                "verdict": answer["verdict"],
                "requestId": answer.get("requestId", ""),
                "code": answer.get("code", ""),
                "message": answer.get("message", ""),
                "reason": reason,
            },
            role=request.role,
            actor_id=responder["userId"],
            actor_upn=responder["upn"],
            graph=answer.get("graph"),
        )
        if removed:
            break
        if answer["verdict"] == "too_soon":
            # PIM refuses a removal within its minimum active time: schedule it, do not fail.
            yield context.call_activity_with_retry(
                SET_GRANT_STATE, RETRY, {"grantId": grant_id, "state": "removal_scheduled", "detail": reason}
            )
            not_before = submitted + timedelta(seconds=plan["minimumActive"] + 5)
            yield context.create_timer(max(not_before, context.current_utc_datetime + timedelta(seconds=5)))
            continue
        if answer["verdict"] not in _RETRYABLE:
            break
        yield context.create_timer(context.current_utc_datetime + _write_wait(answer, attempt))
    confirmed = False
    if removed:
        for attempt in range(5):  # read back: the stores drop the assignment at their own pace
            results = yield context.call_activity_with_retry(
                RUN_PROBES,
                RETRY,
                {
                    "responderId": responder["userId"],
                    "templateId": plan["templateId"],
                    "probes": ["pim_instance", "unified_assignment"],
                },
            )
            confirmed = not any(r["passed"] for r in results)
            if confirmed:
                break
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=2 * 2**attempt))
        yield from flow.record(
            "revocation.confirmed" if confirmed else "revocation.unconfirmed",
            "passed" if confirmed else "failed",
            {"results": _compact(results)},
            role=request.role,
        )
    if removed and plan["revokeSessions"]:
        revoked = yield context.call_activity_with_retry(
            REVOKE_SESSIONS, RETRY, {"userId": responder["userId"]}
        )
        yield from flow.record(
            "revocation.sessions",
            "revoked" if revoked["revoked"] else "failed",
            {},
            role=request.role,
            graph=revoked["graph"],
        )
    state = "removed" if removed and confirmed else "removal_failed"
    yield context.call_activity_with_retry(
        SET_GRANT_STATE, RETRY, {"grantId": grant_id, "state": state, "detail": reason}
    )
    if state == "removed":
        yield from flow.ticket(
            f"Access revoked ({reason}); removal confirmed in PIM and the role store.", state_key="revoked"
        )
        yield from flow.set_state("revoked", reason)
        return "revoked"
    else:
        text = (
            f"[{flow.request_id}] removing {request.role} from {responder['upn']} did not complete: "
            "the sweep retries."
        )
        yield context.call_activity_with_retry(
            NOTIFY, RETRY, {"conversationId": plan["iamConversationId"], "text": text}
        )
        yield from flow.ticket(text)
        yield from flow.set_state("removal_failed", reason)
        return "removal_failed"


def activate_to_revoke(
    flow: RequestFlow, responder: dict[str, Any], review: ApprovalRound | None = None
) -> Steps:
    """From an approved request to removed access: the whole second half of the flow."""
    context, request = flow.context, flow.request
    plan = yield context.call_activity_with_retry(PLAN_ACCESS, RETRY, {"request": request.to_dict()})
    answer = yield from activate(flow, plan, responder)
    if answer is None:
        reason = "PIM did not accept the activation (see the activation rows)"
        text = f"[{flow.request_id}] {request.role} for {responder['upn']} could not be activated: {reason}."
        yield context.call_activity_with_retry(
            NOTIFY, RETRY, {"conversationId": plan["iamConversationId"], "text": text}
        )
        yield from flow.ticket(text, state_key="escalated")
        yield from flow.set_state("escalated", reason)
        return {"requestId": flow.request_id, "state": "escalated", "reason": reason}
    submitted = context.current_utc_datetime
    grant = yield context.call_activity_with_retry(
        RECORD_GRANT,
        RETRY,
        {
            "requestId": flow.request_id,
            "path": "pim",
            "responderId": responder["userId"],
            "responderUpn": responder["upn"],
            "role": request.role,
            "templateId": plan["templateId"],
            "assignmentRequestId": answer.get("requestId", ""),
            "grantedAt": submitted.isoformat(),
            "expiresAt": (submitted + request.duration).isoformat(),
        },
    )
    yield from flow.ticket(
        f"Activation submitted to PIM at {_at(submitted)} (request {answer.get('requestId') or 'existing'},"
        f" {answer.get('status') or answer['verdict']}); proving effective access.",
        state_key="pending_validated",
    )
    yield from flow.set_state("activated", f"submitted at {submitted.isoformat()}")
    proved = yield context.call_sub_orchestrator(
        PROOF_ORCHESTRATOR,
        {
            "requestId": flow.request_id,
            "request": request.to_dict(),
            "seq": flow.seq,
            "checks": flow.checks,
            "responder": responder,
            "plan": plan,
            "submittedAt": submitted.isoformat(),
        },
        f"{flow.request_id}-proof",
    )
    flow.seq = int(proved["seq"])
    proven = proved["outcome"] == "effective"
    if proven:
        yield from hand_over(flow, responder, datetime.fromisoformat(proved["effectiveAt"]))
    else:
        text = (
            f"[{flow.request_id}] {request.role} for {responder['upn']} is not effective "
            f"{int(plan['proofDeadline'])} s after submission: {', '.join(proved['failing'])} still failing. "
            f"Evidence (with Graph request ids): {proved['results']}. The assignment stays; probing "
            f"continues every {int(plan['slowProbe'])} s."
        )
        yield context.call_activity_with_retry(
            NOTIFY, RETRY, {"conversationId": plan["iamConversationId"], "text": text}
        )
        yield from flow.ticket(text, state_key="escalated")
        yield from flow.set_state("escalated", "proof deadline passed")
    reason, state = yield from hold_and_revoke(
        flow, plan, responder, submitted, proven, grant["grant_id"], review
    )
    return {"requestId": flow.request_id, "state": state, "reason": reason, "proven": proven}
