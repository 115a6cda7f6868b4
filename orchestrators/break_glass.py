"""Escalation and break-glass (design.md "After the deadline", "Break-glass"), run by the request while it
holds access that was not proven by its deadline.

- The escalation card goes to the first break-glass group (IAM duty manager): "Start break-glass" or "Not
  needed". Its answer is a vote like any other (the bot's checks, a stored row, an event to the request), so
  nobody starts break-glass for themselves or for a ticket they opened.
- Break-glass itself is a two-person approval (IAM duty manager + security lead by default), run by the
  approval sub-orchestration with ``purpose: "break_glass"``; its due time never passes the end of the
  approved duration.
- Once approved, the role is assigned directly through unified RBAC (``POST /roleManagement/directory/
  roleAssignments``), which does not depend on PIM's schedule service; the assignment is a grant of its own
  in the ledger (path ``break_glass``) and is removed with the PIM one (or by the sweep).

One break-glass per request: after a decision (or "Not needed") no new escalation card is posted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from activities.access import ASSIGN_DIRECT, RECORD_GRANT, SET_GRANT_STATE
from activities.approval import CLOSE_ROUND, LOAD_VOTE, PLAN_APPROVAL, UPDATE_CARDS
from orchestrators.approval import APPROVAL_ORCHESTRATOR, Rounds, break_glass_instance_id
from orchestrators.flow import RETRY, RequestFlow, Steps
from shared.approvals import ApprovalRound, Stage, Vote, count_votes, vote_event

# A refused answer uses up the card's event name; the card then takes clicks in a new round, this many times.
MAX_REOPENINGS = 3


@dataclass
class Escalation:
    """The open escalation card the request listens to while it holds the access."""

    rounds: Rounds
    round: ApprovalRound
    event: Any  # the one wait for this round's answer
    reopenings: int = 0

    @property
    def stage(self) -> Stage:
        return self.round.stages[0]


def _listen(flow: RequestFlow, round_: ApprovalRound) -> Any:
    return flow.context.wait_for_external_event(vote_event(round_.round, round_.stages[0].name))


def open_escalation(
    flow: RequestFlow, responder: dict[str, Any], resolved: Any, last_round: int, end_at: datetime
) -> Steps:
    """Post the escalation card (answers accepted until the access ends); returns the Escalation."""
    context = flow.context
    planned = yield context.call_activity_with_retry(
        PLAN_APPROVAL,
        RETRY,
        {"request": flow.request.to_dict(), "majorIncident": False, "checks": flow.checks},
    )
    start = {"round": last_round, "responder": responder, "parentInstanceId": context.instance_id}
    rounds = Rounds(flow, start, planned, resolved)
    stage = Stage(**planned["breakGlass"][0])
    round_ = yield from rounds.open("escalation", (stage,), end_at, context.instance_id)
    return Escalation(rounds, round_, _listen(flow, round_))


def close_escalation(flow: RequestFlow, escalation: Escalation, outcome: str, counted: list[Vote]) -> Steps:
    context, round_ = flow.context, escalation.round
    yield context.call_activity_with_retry(
        CLOSE_ROUND, RETRY, {"requestId": round_.request_id, "round": round_.round, "outcome": outcome}
    )
    status = {"approved": "approved", "denied": "denied"}.get(outcome, "closed")
    yield context.call_activity_with_retry(
        UPDATE_CARDS, RETRY,
        {"round": round_.to_json(), "counted": [v.to_json() for v in counted], "status": status},
    )  # fmt: skip


def answer(flow: RequestFlow, escalation: Escalation) -> Steps:
    """The escalation card was answered (its event came): "approve" (start break-glass), "deny" (not needed),
    or "refused" (no valid stored answer: the card takes clicks again, in a new round, unless the
    reopenings are used up: then "closed")."""
    context, round_, stage = flow.context, escalation.round, escalation.stage
    stored = yield context.call_activity_with_retry(
        LOAD_VOTE, RETRY, {"requestId": round_.request_id, "round": round_.round, "stage": stage.name}
    )
    vote = Vote.from_json(stored) if stored else None
    count = count_votes(round_, [vote]) if vote else None
    if vote is None or count is None or count.refused or vote.at >= round_.due_at:
        reason = count.refused[0][1] if count and count.refused else "no stored answer before the due time"
        yield from flow.record("escalation.answer", "refused", {"round": round_.round, "reason": reason},
                               role=flow.request.role)  # fmt: skip
        if escalation.reopenings >= MAX_REOPENINGS:
            yield from close_escalation(flow, escalation, "expired", [])
            return "closed"
        yield context.call_activity_with_retry(
            CLOSE_ROUND,
            RETRY,
            {"requestId": round_.request_id, "round": round_.round, "outcome": "superseded"},
        )
        escalation.round = yield from escalation.rounds.open(
            "escalation", (stage,), round_.due_at, context.instance_id
        )
        escalation.event = _listen(flow, escalation.round)
        escalation.reopenings += 1
        return "refused"
    requested = vote.verb == "approve"
    yield from flow.record(
        "escalation.answer", "break_glass_requested" if requested else "declined",
        {"round": round_.round, "verb": vote.verb, "at": vote.at.isoformat(), "voteId": vote.vote_id},
        role=flow.request.role, actor_id=vote.approver_id, actor_upn=vote.approver_upn,
    )  # fmt: skip
    yield from close_escalation(flow, escalation, "approved" if requested else "denied", [vote])
    who = vote.approver_upn or vote.approver_id
    yield from flow.ticket(
        f"Break-glass requested by {who} (IAM)." if requested else f"{who} (IAM): break-glass not needed."
    )
    return vote.verb


def decide(flow: RequestFlow, escalation: Escalation, responder: dict[str, Any], end_at: datetime) -> Steps:
    """The break-glass two-person approval (a sub-orchestration continuing the request's audit sequence);
    returns its outcome: approved, denied, expired or resolved."""
    context = flow.context
    result = yield context.call_sub_orchestrator(
        APPROVAL_ORCHESTRATOR,
        {"requestId": flow.request_id, "request": flow.request.to_dict(), "checks": flow.checks,
         "seq": flow.seq, "responder": responder, "majorIncident": False,
         "parentInstanceId": context.instance_id, "purpose": "break_glass", "softMessages": True,
         "round": escalation.rounds.round_no, "dueBy": end_at.isoformat()},
        break_glass_instance_id(flow.request_id),
    )  # fmt: skip
    flow.seq = int(result["seq"])
    escalation.rounds.round_no = int(result["round"])
    yield from flow.record(
        "breakglass.decision", result["outcome"],
        {"reason": result["reason"], "approvals": result["approvals"]}, role=flow.request.role,
    )  # fmt: skip
    if result["outcome"] != "approved":
        yield from flow.ticket(f"Break-glass not granted: {result['reason']}.")
    return str(result["outcome"])


def assign(flow: RequestFlow, plan: dict[str, Any], responder: dict[str, Any], end_at: datetime) -> Steps:
    """The direct unified RBAC assignment, recorded in the grant ledger FIRST (without its id, which the
    sweep and the removal find through the role's holders): a unified assignment has no end of its own, so
    it must never exist unknown to the ledger. Returns {grantId, assignmentId}, or None when Graph did not
    accept it (the grant is then handed to the sweep, which removes it if the write took effect after all)."""
    context = flow.context
    grant = yield context.call_activity_with_retry(
        RECORD_GRANT, RETRY,
        {"requestId": flow.request_id, "path": "break_glass", "responderId": responder["userId"],
         "responderUpn": responder["upn"], "role": flow.request.role, "templateId": plan["templateId"],
         "assignmentRequestId": "", "grantedAt": context.current_utc_datetime.isoformat(),
         "expiresAt": end_at.isoformat()},
    )  # fmt: skip
    flow.grants.append(grant["grant_id"])
    answer = yield from flow.write(
        ASSIGN_DIRECT, {"responderId": responder["userId"], "templateId": plan["templateId"]},
        "breakglass.assign", ("done", "exists"), {"path": "unified RBAC", "grantId": grant["grant_id"]},
        responder,
    )  # fmt: skip
    if answer["verdict"] not in ("done", "exists"):
        yield context.call_activity_with_retry(
            SET_GRANT_STATE, RETRY,
            {"grantId": grant["grant_id"], "state": "removal_failed",
             "detail": f"break-glass write not accepted ({answer['verdict']}): the sweep checks and removes"},
        )  # fmt: skip
        flow.grants.remove(grant["grant_id"])
        yield from flow.ticket(f"Break-glass assignment failed: {answer.get('code') or answer['verdict']}.")
        return None
    yield from flow.record(
        "breakglass.assigned", "recorded",
        {"assignmentId": answer.get("requestId", ""), "grantId": grant["grant_id"],
         "expiresAt": end_at.isoformat()},
        role=flow.request.role, actor_id=responder["userId"], actor_upn=responder["upn"],
        graph=answer.get("graph"),
    )  # fmt: skip
    yield from flow.ticket(
        f"Break-glass: {flow.request.role} assigned directly (unified RBAC assignment "
        f"{answer.get('requestId') or 'existing'}) until {end_at:%H:%M:%S} UTC; removed at resolution."
    )
    return {"grantId": grant["grant_id"], "assignmentId": answer.get("requestId", "")}
