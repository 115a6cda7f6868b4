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
    PLAN_ACCESS,
    RECORD_GRANT,
    REMOVE,
    REMOVE_DIRECT,
    REVOKE_SESSIONS,
    RUN_PROBES,
    SET_GRANT_STATE,
)
from orchestrators import break_glass
from orchestrators.approval import await_review, conclude_review, review_event
from orchestrators.flow import RESOLUTION_EVENT, RETRY, RETRYABLE_VERDICTS, RequestFlow, Steps
from shared.approvals import ApprovalRound
from shared.proof import PIM_PROBE, asked_to_wait, effective, failing, next_wait, stores_disagree

PROOF_ORCHESTRATOR = "proof"
__all__ = ["PROOF_ORCHESTRATOR", "RESOLUTION_EVENT", "activate_to_revoke", "proof_instance_id"]

bp = df.Blueprint()


def proof_instance_id(request_id: str) -> str:
    return f"{request_id}-proof"


def _probe(
    flow: RequestFlow, plan: dict[str, Any], responder: dict[str, Any], probes: list[str] | None = None
) -> Any:
    """The task that runs the role's probes (or ``probes``) once."""
    payload = {"responderId": responder["userId"], "templateId": plan["templateId"],
               "probes": probes if probes is not None else plan["probes"]}  # fmt: skip
    return flow.context.call_activity_with_retry(RUN_PROBES, RETRY, payload)


def _at(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S UTC")


def _compact(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each probe's result as evidence: the answer, and what lets Microsoft trace the call (its status, error
    code, ``request-id`` and our ``client-request-id``)."""
    compact = []
    for r in results:
        graph = r.get("graph") or {}
        compact.append({"probe": r["probe"], "passed": r["passed"], "reason": r.get("reason", ""),
                        "status": graph.get("status", 0), "code": r.get("code", ""),
                        "requestId": graph.get("request_id", ""),
                        "clientRequestId": graph.get("client_request_id", "")})  # fmt: skip
    return compact


ACCEPTED = ("done", "exists", "pending")


def activate(flow: RequestFlow, plan: dict[str, Any], responder: dict[str, Any]) -> Steps:
    """Submit the activation; returns PIM's last answer: accepted (verdict in ACCEPTED), refused for good
    (a policy rule, ...), or still failing after the retries (throttled, unavailable: it may have taken
    effect all the same)."""
    request = flow.request
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
    detail = {"durationSeconds": payload["durationSeconds"]}
    return (yield from flow.write(ACTIVATE, payload, "activation.submit", ACCEPTED, detail, responder))


@bp.orchestration_trigger(context_name="context", orchestration=PROOF_ORCHESTRATOR)
def proof(context: df.DurableOrchestrationContext) -> Steps:
    """Input: requestId, request, seq, responder {userId, upn}, plan (shared by plan_access), submittedAt.
    Output: outcome (effective, deadline, resolved), effectiveAt, lowerBound, polls, failing, results, seq."""
    flow = RequestFlow(context)
    resolved = context.wait_for_external_event(RESOLUTION_EVENT)  # one wait, raced with every timer

    def until(moment: datetime) -> Steps:
        """Wait until ``moment``; True when the incident was resolved first."""
        timer = context.create_timer(moment)
        winner = yield context.task_any([timer, resolved])
        if winner is resolved:
            timer.cancel()
            yield from flow.record(
                "proof.stopped", "resolved", {"event": resolved.result}, role=flow.request.role
            )
            return True
        return False

    start = context.get_input()
    plan, responder = start["plan"], start["responder"]
    submitted = datetime.fromisoformat(start["submittedAt"])
    deadline = submitted + timedelta(seconds=plan["proofDeadline"])
    progress = timedelta(seconds=plan["progress"])
    first, cap = timedelta(seconds=plan["firstProbe"]), timedelta(seconds=plan["maxProbe"])
    next_progress = submitted + progress
    last_failed: datetime | None = None
    provisioned: datetime | None = None
    disagree_since: datetime | None = None
    routed = False
    polls = 0
    stopped = {"outcome": "resolved", "polls": polls, "failing": [], "results": []}
    if (yield from until(min(submitted + first, deadline))):
        return {**stopped, "seq": flow.seq}
    while True:
        results = yield _probe(flow, plan, responder)
        polls += 1
        now = context.current_utc_datetime
        passed = effective(results, plan["probes"])
        if provisioned is None and any(r["probe"] == PIM_PROBE and r["passed"] for r in results):
            provisioned = now  # PIM's own store shows it: provisioned, not yet proven
            yield from flow.record("activation.provisioned", "recorded", {"provisionedAt": now.isoformat(),
                                   "secondsAfterSubmission": (now - submitted).total_seconds()},
                                   role=flow.request.role)  # fmt: skip
            yield from flow.ticket(f"Provisioned in PIM at {_at(now)}; proving that it works.")
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
                "provisionedAt": provisioned.isoformat() if provisioned else None,
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
                    f"assignment, but it has been missing from {', '.join(failing(results))} for "
                    f"{int((now - disagree_since).total_seconds())} s. Evidence: "
                    f"{_compact(results)}"
                )
                yield from flow.tell({"conversationId": plan["iamConversationId"], "text": text})
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
            yield from flow.tell({"userId": responder["userId"], "text": text})
            yield from flow.ticket(text)
            yield from flow.record(
                "proof.progress",
                "sent",
                {"failing": failing(results), "nextUpdate": next_progress.isoformat()},
            )
        wake = min(now + max(next_wait(polls - 1, first, cap), asked_to_wait(results)), deadline)
        if (yield from until(wake)):
            return {**stopped, "polls": polls, "failing": failing(results), "results": _compact(results),
                    "seq": flow.seq}  # fmt: skip


def hold_and_revoke(
    flow: RequestFlow,
    plan: dict[str, Any],
    responder: dict[str, Any],
    submitted: datetime,
    proven: bool,
    grant_id: str,
    resolved: Any,
    review: ApprovalRound | None = None,
    resolved_during_proof: bool = False,
    escalation: break_glass.Escalation | None = None,
) -> Steps:
    """Hold until the incident is resolved (``resolved``: the request's one wait for it) or the duration
    ends, probing slowly while not proven, then revoke. Meanwhile the review of a rule-approved request is
    recorded whenever it comes, and an escalation card's answer may start break-glass. Returns why the
    access ended, and how."""
    context, request = flow.context, flow.request
    end_at = submitted + request.duration
    slow = timedelta(seconds=plan["slowProbe"])
    # Resolved before the hold (the proof stopped on it, or it came before proof began): revoke at once.
    stop = resolved_during_proof or resolved.is_completed
    reason = "the incident was resolved" if stop else "the approved duration ended"
    if stop and not resolved_during_proof:  # the proof did not hear it (it wrote proof.stopped if it did)
        yield from flow.record("hold.resolved", "recorded", {"event": resolved.result, "before": "hold"},
                               role=request.role)  # fmt: skip
    reviewed = review_event(flow, review) if review is not None else None  # one wait, like ``resolved``
    direct: dict[str, str] | None = None
    while not stop:
        wake = end_at if proven else min(end_at, context.current_utc_datetime + slow)
        timer = context.create_timer(wake)
        waits = [resolved, timer, *([reviewed] if review is not None else [])]
        waits += [escalation.event] if escalation is not None else []
        winner = yield context.task_any(waits)
        if review is not None and winner is reviewed:
            # The post-facto review of a rule-approved request came in while the access is held.
            timer.cancel()
            yield from conclude_review(flow, review, answered=True)
            review = None
            continue
        if escalation is not None and winner is escalation.event:
            timer.cancel()
            verb = yield from break_glass.answer(flow, escalation)
            if verb == "refused":
                continue
            if verb == "approve":
                outcome = yield from break_glass.decide(flow, escalation, responder, end_at)
                if outcome == "approved" and resolved.is_completed:
                    outcome = "resolved"  # resolved while the approval ran: nothing to assign
                if outcome == "approved":
                    direct = yield from break_glass.assign(flow, plan, responder, end_at)
                    if direct is not None and not proven:
                        proven = yield from _prove_once(flow, plan, responder, "break-glass", submitted)
                elif outcome == "resolved":
                    stop, reason = True, "the incident was resolved"
            escalation = None  # one break-glass per request
            continue
        if winner is resolved:
            timer.cancel()
            reason = "the incident was resolved"
            yield from flow.record("hold.resolved", "recorded", {"event": resolved.result}, role=request.role)
            break
        if context.current_utc_datetime >= end_at:
            break
        proven = yield from _prove_once(flow, plan, responder, "slow", submitted)
    if escalation is not None:  # still open: the access ended without break-glass
        yield from break_glass.close_escalation(flow, escalation, "closed", [])
    state = yield from revoke(flow, plan, responder, submitted, grant_id, reason, direct)
    if review is not None:  # not answered while the access was held: it may still come, until its due time
        yield from await_review(flow, review, reviewed)
    return reason, state


def _prove_once(
    flow: RequestFlow, plan: dict[str, Any], responder: dict[str, Any], cadence: str, submitted: datetime
) -> Steps:
    """One probe round after the proof deadline (the slow cadence, or right after break-glass); when it
    proves the access, the responder and the ticket are told. Returns whether it did."""
    results = yield _probe(flow, plan, responder)
    proven = effective(results, plan["probes"])
    detail = {"results": _compact(results), "cadence": cadence}
    yield from flow.record("proof.poll", "passed" if proven else "failed", detail, role=flow.request.role)
    if proven:
        now = flow.context.current_utc_datetime
        late = {"effectiveAt": now.isoformat(), "late": True, "cadence": cadence,
                "secondsAfterSubmission": (now - submitted).total_seconds()}  # fmt: skip
        yield from flow.record("proof.effective", "passed", late, role=flow.request.role,
                               actor_id=responder["userId"], actor_upn=responder["upn"])  # fmt: skip
        yield from hand_over(flow, responder, now)
    return proven


def hand_over(flow: RequestFlow, responder: dict[str, Any], effective_at: datetime, facts: str = "") -> Steps:
    """Tell the responder and the ticket that the access works (``facts``: the timings, for the ticket)."""
    text = (
        f"Your {flow.request.role} access works (proven at {_at(effective_at)}). If a workload still "
        "refuses, sign out and back in: tokens issued before the activation do not carry the role."
    )
    yield from flow.tell({"userId": responder["userId"], "text": text})
    yield from flow.ticket(
        f"Access effective at {_at(effective_at)}: work can proceed.{' ' + facts if facts else ''}",
        state_key="in_progress",
    )
    yield from flow.set_state("effective", f"effective at {effective_at.isoformat()}")


def revoke(
    flow: RequestFlow,
    plan: dict[str, Any],
    responder: dict[str, Any],
    submitted: datetime,
    grant_id: str,
    reason: str,
    direct: dict[str, str] | None = None,
) -> Steps:
    """Remove the PIM assignment (and the break-glass one, ``direct``: grantId, assignmentId), read the
    stores back, revoke sessions when the role's policy says so, and tell the ledger and the ticket."""
    context, request = flow.context, flow.request
    payload = {
        "responderId": responder["userId"],
        "templateId": plan["templateId"],
        "justification": f"Emergency access for {request.ticket} ended: {reason}",
    }
    removed = False
    for _ in range(3):
        answer = yield from flow.write(
            REMOVE, payload, "revocation.remove", ("done", "absent"), {"reason": reason}, responder
        )
        removed = answer["verdict"] in ("done", "absent")
        if answer["verdict"] != "too_soon":
            break
        # PIM refuses a removal within its minimum active time: schedule it, do not fail.
        yield context.call_activity_with_retry(
            SET_GRANT_STATE, RETRY, {"grantId": grant_id, "state": "removal_scheduled", "detail": reason}
        )
        not_before = submitted + timedelta(seconds=plan["minimumActive"] + 5)
        yield context.create_timer(max(not_before, context.current_utc_datetime + timedelta(seconds=5)))
    if direct is not None:  # the break-glass assignment, removed like any grant
        answer = yield from flow.write(
            REMOVE_DIRECT,
            {"assignmentId": direct["assignmentId"], "responderId": responder["userId"],
             "templateId": plan["templateId"]},
            "revocation.remove_direct",
            ("done", "absent"), {"reason": reason, "grantId": direct["grantId"]}, responder,
        )  # fmt: skip
        removed_direct = answer["verdict"] in ("done", "absent")
        if removed_direct:
            flow.grants.remove(direct["grantId"])
        yield context.call_activity_with_retry(
            SET_GRANT_STATE, RETRY,
            {"grantId": direct["grantId"], "state": "removed" if removed_direct else "removal_failed",
             "detail": reason},
        )  # fmt: skip
        removed = removed and removed_direct
    confirmed = False
    if removed:
        for attempt in range(5):  # read back: the stores drop the assignment at their own pace
            results = yield _probe(flow, plan, responder, ["pim_instance", "unified_assignment"])
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
    if grant_id in flow.grants:
        flow.grants.remove(grant_id)  # its state is final here (removed, or removal_failed for the sweep)
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
        yield from flow.tell({"conversationId": plan["iamConversationId"], "text": text})
        yield from flow.ticket(text)
        yield from flow.set_state("removal_failed", reason)
        return "removal_failed"


def resolved_already(flow: RequestFlow, resolved: Any) -> Steps:
    """Whether the resolution has arrived, without waiting for it. ``resolved`` is the request's one wait
    for it: an event that came while the orchestration awaited something else is buffered and completes the
    wait once the wait is yielded, so it is yielded once against a timer due now."""
    if resolved.is_completed:
        return True
    now = flow.context.current_utc_datetime
    timer = flow.context.create_timer(now)
    winner = yield flow.context.task_any([resolved, timer])
    if winner is resolved:
        timer.cancel()
        return True
    return False


def activate_to_revoke(
    flow: RequestFlow,
    responder: dict[str, Any],
    resolved: Any,
    review: ApprovalRound | None = None,
    last_round: int = 0,
) -> Steps:
    """From an approved request to removed access: the whole second half of the flow. ``resolved`` is the
    request's one wait for the incident's resolution (created before approval; checked by the caller);
    ``last_round`` the last approval round number the request used (escalation cards come after it)."""
    context, request = flow.context, flow.request
    plan = yield context.call_activity_with_retry(PLAN_ACCESS, RETRY, {"request": request.to_dict()})
    answer = yield from activate(flow, plan, responder)
    accepted = answer["verdict"] in ACCEPTED
    if not accepted and answer["verdict"] not in RETRYABLE_VERDICTS:
        reason = (f"PIM refused the activation: {answer['verdict']} {answer.get('code', '')} "
                  f"{answer.get('message', '')}".strip())  # fmt: skip
        text = f"[{flow.request_id}] {request.role} for {responder['upn']} could not be activated: {reason}."
        yield from flow.tell({"conversationId": plan["iamConversationId"], "text": text})
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
    flow.grants.append(grant["grant_id"])
    flow.soft_messages = True  # from here on a ticket or Teams failure must not stop the removal
    if not accepted:
        # PIM could not be reached (throttled, 5xx, the breaker open) after the retries. The POST may still
        # have taken effect: the grant is recorded, so it is removed at the end whatever happened, and IAM
        # gets the escalation card, whose break-glass does not depend on PIM.
        failed: dict[str, Any] = {"outcome": "deadline", "seq": flow.seq, "failing": ["activation"],
                                  "results": [{"verdict": answer["verdict"], "code": answer.get("code", ""),
                                               "graph": answer.get("graph")}]}  # fmt: skip
        yield from escalate(flow, plan, responder, failed,
                            f"PIM did not accept the activation after the retries ({answer['verdict']} "
                            f"{answer.get('code', '')})")  # fmt: skip
        escalation = yield from break_glass.open_escalation(
            flow, responder, resolved, last_round, submitted + request.duration
        )
        reason, state = yield from hold_and_revoke(
            flow,
            plan,
            responder,
            submitted,
            False,
            grant["grant_id"],
            resolved,
            review,
            escalation=escalation,
        )
        return {"requestId": flow.request_id, "state": state, "reason": reason, "proven": False}
    yield from flow.ticket(
        f"Activation submitted to PIM at {_at(submitted)} (request {answer.get('requestId') or 'existing'},"
        f" {answer.get('status') or answer['verdict']}); proving effective access.",
        state_key="pending_validated",
    )
    yield from flow.set_state("activated", f"submitted at {submitted.isoformat()}")
    if (yield from resolved_already(flow, resolved)):
        # Resolved while the activation was being submitted: nothing to prove, remove it now.
        proved: dict[str, Any] = {"outcome": "resolved", "seq": flow.seq}
    else:
        proved = yield from prove(flow, plan, responder, submitted)
    flow.seq = int(proved["seq"])
    # A resolution that reached the request but not its proof (it came just before the proof began, or as
    # it ended): no escalation for a resolved incident; the hold below removes the access at once.
    resolved_meanwhile = resolved.is_completed and proved["outcome"] == "deadline"
    proven = proved["outcome"] == "effective"
    escalation = None
    if proven:
        provisioned = proved.get("provisionedAt")
        facts = (
            f"Activation request {answer.get('requestId') or 'existing'}: submitted {_at(submitted)}, "
            f"provisioned {_at(datetime.fromisoformat(provisioned)) if provisioned else 'n/a'}, effective "
            f"{int(proved['secondsAfterSubmission'])} s after submission (probe results: "
            f"{', '.join(r['probe'] + ' passed' for r in proved['results'])})."
        )
        yield from hand_over(flow, responder, datetime.fromisoformat(proved["effectiveAt"]), facts)
    elif proved["outcome"] == "deadline" and not resolved_meanwhile:
        yield from escalate(flow, plan, responder, proved)
        escalation = yield from break_glass.open_escalation(
            flow, responder, resolved, last_round, submitted + request.duration
        )
    reason, state = yield from hold_and_revoke(
        flow, plan, responder, submitted, proven, grant["grant_id"], resolved, review,
        resolved_during_proof=proved["outcome"] == "resolved", escalation=escalation,
    )  # fmt: skip
    return {"requestId": flow.request_id, "state": state, "reason": reason, "proven": proven}


def prove(flow: RequestFlow, plan: dict[str, Any], responder: dict[str, Any], submitted: datetime) -> Steps:
    request = flow.request
    return (
        yield flow.context.call_sub_orchestrator(
            PROOF_ORCHESTRATOR,
            {
                "requestId": flow.request_id,
                "request": request.to_dict(),
                "seq": flow.seq,
                "checks": flow.checks,
                "responder": responder,
                "plan": plan,
                "submittedAt": submitted.isoformat(),
                "softMessages": True,
            },
            proof_instance_id(flow.request_id),
        )
    )


def escalate(
    flow: RequestFlow,
    plan: dict[str, Any],
    responder: dict[str, Any],
    proved: dict[str, Any],
    why: str = "",
) -> Steps:
    """The proof deadline passed (or PIM could not be reached, ``why``): IAM on call gets the diagnostics
    (Teams and the ticket); the assignment stays and the hold keeps probing at the slow cadence. The
    escalation card (break-glass) follows."""
    request = flow.request
    why = why or (
        f"not effective {int(plan['proofDeadline'])} s after submission: {', '.join(proved['failing'])} "
        "still failing"
    )
    text = (
        f"[{flow.request_id}] {request.role} for {responder['upn']}: {why}. Evidence (with Graph request "
        f"ids): {proved['results']}. Probing continues every {int(plan['slowProbe'])} s until the access "
        "ends; IAM can start break-glass from the escalation card."
    )
    yield from flow.tell({"conversationId": plan["iamConversationId"], "text": text})
    yield from flow.ticket(text, state_key="escalated")
    yield from flow.set_state("escalated", why)
