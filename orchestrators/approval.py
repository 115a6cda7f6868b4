"""The approval sub-orchestration (design.md §2 "Approval"): the responder's confirmation, then two-person
approval, one on-call lead, or approval by the major-incident rule with a post-facto review.

Every wait is ``task_any`` of the stages' vote events and one timer (the reminder at half time, then the
shared due time), the timer cancelled when an event wins. Each round and stage has its own event name
(``vote_r{round}_{stage}``) and each name is waited for until its first event only: the Python SDK hands a
buffered event to every later wait with the same name (facts.md), so a name is never reused. When a vote is
refused after it consumed its stage's name (a race the bot's own checks could not see, such as one person
clicking both groups' cards at once), the stages still waiting get a new round: the same cards, updated in
place with a new nonce, and the same due time.

The sub-orchestration writes to the request's audit chain, continuing the parent's sequence (``seq`` in,
``seq`` out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from activities.approval import (
    CLOSE_ROUND,
    LOAD_VOTE,
    OPEN_ROUND,
    PLAN_APPROVAL,
    POST_CARD,
    REMIND_STAGE,
    UPDATE_CARDS,
)
from orchestrators.flow import RESOLUTION_EVENT, RETRY, RequestFlow, Steps
from shared.approvals import (
    RESPONDER_STAGE,
    ApprovalPlan,
    ApprovalRound,
    Purpose,
    Stage,
    Vote,
    count_votes,
    vote_event,
)
from shared.cards import decision_line

APPROVAL_ORCHESTRATOR = "approval"

bp = df.Blueprint()


def approval_instance_id(request_id: str) -> str:
    return f"{request_id}-approval"


def break_glass_instance_id(request_id: str) -> str:
    return f"{request_id}-breakglass"


@dataclass
class Decision:
    """How a round ended: approved (every stage), denied (a counted deny), expired (the due time), or
    resolved (the incident was resolved first: the access is no longer needed)."""

    outcome: str
    round: ApprovalRound
    counted: dict[str, Vote] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        return [{"stage": v.stage, "by": v.approver_upn, "id": v.approver_id, "verb": v.verb,
                 "at": v.at.isoformat()} for v in self.counted.values()]  # fmt: skip


class Rounds:
    """Opens rounds and waits for them; holds what every round of this request shares."""

    # A round is reopened only when a refused vote used up a stage's event name, which the bot's own checks
    # make a rare race; past this many reopenings the decision expires rather than loop.
    MAX_REOPENINGS = 3

    def __init__(
        self, flow: RequestFlow, start: dict[str, Any], planned: dict[str, Any], resolved: Any = None
    ) -> None:
        self.flow = flow
        self.context = flow.context
        now = self.context.current_utc_datetime
        self.due_at: datetime = now + timedelta(seconds=planned["dueSeconds"])
        if start.get("dueBy"):  # break-glass: never past the end of the approved duration
            self.due_at = min(self.due_at, datetime.fromisoformat(start["dueBy"]))
        # The reminder comes at the same fraction of each decision's remaining time (half, by default), so
        # approvers asked after a late confirmation still get theirs, and never at once.
        self.reminder_fraction: float = planned["reminderSeconds"] / planned["dueSeconds"]
        self.review_seconds: float = planned["reviewSeconds"]
        self.round_no: int = int(start.get("round", 0))
        self.responder_id: str = start["responder"]["userId"]
        self.responder_upn: str = start["responder"]["upn"]
        self.opener_id: str = planned["openerId"]
        self.opener_names: tuple[str, ...] = tuple(planned["openerNames"])
        self.summary: dict[str, Any] = planned["summary"]
        self.parent_id: str = start["parentInstanceId"]
        # One wait for the whole orchestration (see RESOLUTION_EVENT), raced in every round: the caller's when
        # it has one already.
        self.resolved = (
            resolved if resolved is not None else self.context.wait_for_external_event(RESOLUTION_EVENT)
        )

    def open(self, purpose: Purpose, stages: tuple[Stage, ...], due_at: datetime, instance_id: str,
             carried: dict[str, Vote] | None = None) -> Steps:  # fmt: skip
        """Open a round: its row (what the bot checks clicks against), then a card for each stage that has
        not answered (posted the first time, updated in place with the new nonce after that)."""
        self.round_no += 1
        carried = carried or {}
        round_ = ApprovalRound(
            request_id=self.flow.request_id, round=self.round_no, purpose=purpose,
            nonce=str(self.context.new_uuid()), instance_id=instance_id, stages=stages,
            opened_at=self.context.current_utc_datetime, due_at=due_at, responder_id=self.responder_id,
            responder_upn=self.responder_upn, opener_id=self.opener_id, opener_names=self.opener_names,
            summary=self.summary, carried=tuple(carried.values()),
        )  # fmt: skip
        yield self.context.call_activity_with_retry(OPEN_ROUND, RETRY, round_.to_json())
        counted = [v.to_json() for v in carried.values()]
        for stage in (s for s in stages if s.name not in carried):
            posted = yield self.context.call_activity_with_retry(
                POST_CARD, RETRY, {"round": round_.to_json(), "stage": stage.name, "counted": counted}
            )
            yield from self.flow.record(
                "approval.card_posted" if posted["new"] else "approval.card_updated", "recorded",
                {"purpose": purpose, "round": round_.round, "stage": stage.name, "group": stage.group_id,
                 "conversationId": posted["conversationId"], "activityId": posted["activityId"],
                 "dueAt": due_at.isoformat()},
                role=self.flow.request.role,
            )  # fmt: skip
        return round_

    def decide(self, purpose: Purpose, stages: tuple[Stage, ...]) -> Steps:
        """Open a round for ``stages`` and wait until it is approved, denied or past the due time."""
        round_ = yield from self.open(purpose, stages, self.due_at, self.context.instance_id)
        waiting_for = "awaiting_confirmation" if purpose == "confirm" else "awaiting_approval"
        yield from self.flow.set_state(waiting_for, f"waiting for {_stage_names(stages)} until "
                                       f"{self.due_at:%H:%M:%S} UTC")  # fmt: skip
        remind_at = round_.opened_at + (self.due_at - round_.opened_at) * self.reminder_fraction
        reminded = False
        reopenings = 0
        votes: list[Vote] = []
        consumed: set[str] = set()
        # One wait per event name, kept across turns: the SDK gives an event that arrives while several
        # waits of its name are open to the newest, so a wait created anew each turn would lose a vote that
        # came while the previous one was being counted.
        waits: dict[str, Any] = {}
        while True:
            count = count_votes(round_, votes)
            if count.outcome != "pending":
                decision = Decision(count.outcome, round_, count.counted)
                break
            waiting = [s for s in stages if s.name not in count.counted]
            listening = [s for s in waiting if vote_event(round_.round, s.name) not in consumed]
            if not listening:
                # Every waiting stage's event name is used up by refused votes: a new round for them.
                if self.context.current_utc_datetime >= self.due_at or reopenings >= self.MAX_REOPENINGS:
                    decision = Decision("expired", round_, count.counted)
                    break
                reopenings += 1
                yield self.context.call_activity_with_retry(
                    CLOSE_ROUND, RETRY,
                    {"requestId": round_.request_id, "round": round_.round, "outcome": "superseded"},
                )  # fmt: skip
                round_ = yield from self.open(purpose, stages, self.due_at, self.context.instance_id,
                                              dict(count.counted))  # fmt: skip
                votes, consumed, waits = [], set(), {}
                continue
            self._show_progress(round_, count.counted, waiting)
            reminding = not reminded and remind_at < self.due_at
            timer = self.context.create_timer(remind_at if reminding else self.due_at)
            names = [vote_event(round_.round, s.name) for s in listening]
            for name in names:
                if name not in waits:
                    waits[name] = self.context.wait_for_external_event(name)
            events = [waits[name] for name in names]
            winner = yield self.context.task_any([*events, timer, self.resolved])
            if winner is self.resolved:
                timer.cancel()
                decision = Decision("resolved", round_, count.counted)
                break
            if winner is timer:
                if reminding:
                    reminded = True
                    yield from self._remind(round_, waiting)
                    continue
                decision = Decision("expired", round_, count.counted)
                break
            timer.cancel()
            stage = listening[events.index(winner)]
            consumed.add(vote_event(round_.round, stage.name))
            vote = yield from self._load_vote(round_, stage)
            if vote is None:
                continue
            votes.append(vote)
            yield from self._record_vote(round_, vote, count_votes(round_, votes))
        yield from self._close(decision)
        return decision

    def _load_vote(self, round_: ApprovalRound, stage: Stage) -> Steps:
        """The stage's stored vote (the event only announces it), or None, recorded, when there is none or
        it came after the due time."""
        stored = yield self.context.call_activity_with_retry(
            LOAD_VOTE, RETRY, {"requestId": round_.request_id, "round": round_.round, "stage": stage.name}
        )
        reason = ""
        if stored is None:
            reason = "an event announced a vote that the store does not hold"
        elif Vote.from_json(stored).at >= round_.due_at:
            reason = "the vote is dated after the due time"
        if reason:
            yield from self.flow.record(
                "approval.vote", "refused", {"round": round_.round, "stage": stage.name, "reason": reason},
                role=self.flow.request.role,
            )  # fmt: skip
            return None
        return Vote.from_json(stored)

    def _show_progress(self, round_: ApprovalRound, counted: dict[str, Vote], waiting: list[Stage]) -> None:
        self.context.set_custom_status({
            "state": "awaiting_confirmation" if round_.purpose == "confirm" else "awaiting_approval",
            "checks": self.flow.checks,
            "approval": {
                "round": round_.round, "purpose": round_.purpose, "dueAt": self.due_at.isoformat(),
                "awaiting": [s.display_name for s in waiting],
                "decisions": [decision_line(v, round_.stage(v.stage)) for v in counted.values()],
            },
        })  # fmt: skip

    def _remind(self, round_: ApprovalRound, waiting: list[Stage]) -> Steps:
        for stage in waiting:
            sent = yield self.context.call_activity_with_retry(
                REMIND_STAGE, RETRY, {"round": round_.to_json(), "stage": stage.name}
            )
            yield from self.flow.record(
                "approval.reminder", "sent" if sent["sent"] else "skipped",
                {"round": round_.round, "stage": stage.name, "dueAt": self.due_at.isoformat()},
            )  # fmt: skip

    def _record_vote(self, round_: ApprovalRound, vote: Vote, count: Any) -> Steps:
        refusal = next((reason for v, reason in count.refused if v.vote_id == vote.vote_id), None)
        counted = refusal is None and count.counted.get(vote.stage) == vote
        detail = {"round": vote.round, "stage": vote.stage, "verb": vote.verb, "at": vote.at.isoformat(),
                  "voteId": vote.vote_id, "reason": refusal or ""}  # fmt: skip
        yield from self.flow.record("approval.vote", "counted" if counted else "refused", detail,
                                    role=self.flow.request.role, actor_id=vote.approver_id,
                                    actor_upn=vote.approver_upn)  # fmt: skip
        if counted:
            line = decision_line(vote, round_.stage(vote.stage))
            yield from self.flow.ticket(f"{line}.")
            if count.outcome == "pending":  # show the others who has answered (the clicker's card shows it)
                yield self.context.call_activity_with_retry(
                    UPDATE_CARDS, RETRY,
                    {"round": round_.to_json(), "counted": [v.to_json() for v in count.counted.values()],
                     "status": "open"},
                )  # fmt: skip

    def _close(self, decision: Decision) -> Steps:
        round_ = decision.round
        yield self.context.call_activity_with_retry(
            CLOSE_ROUND,
            RETRY,
            {"requestId": round_.request_id, "round": round_.round, "outcome": decision.outcome},
        )
        status = {"approved": "approved", "denied": "denied", "expired": "expired", "resolved": "cancelled"}[
            decision.outcome
        ]
        yield self.context.call_activity_with_retry(
            UPDATE_CARDS, RETRY,
            {"round": round_.to_json(), "counted": [v.to_json() for v in decision.counted.values()],
             "status": status},
        )  # fmt: skip


def _stage_names(stages: tuple[Stage, ...]) -> str:
    return " and ".join(s.display_name for s in stages)


@bp.orchestration_trigger(context_name="context", orchestration=APPROVAL_ORCHESTRATOR)
def approval(context: df.DurableOrchestrationContext) -> Steps:
    """Input: requestId, request, checks, seq, responder {userId, upn}, majorIncident, parentInstanceId.
    With ``purpose: "break_glass"`` (and ``round``, the last round number the request used), the
    break-glass two-person approval instead.
    Output: outcome (approved, denied, expired, resolved), reason, approvals, path, review (an open review
    round for the parent to wait on, or None), round (the last round number used), seq."""
    flow = RequestFlow(context)
    start = context.get_input()
    planned = yield context.call_activity_with_retry(
        PLAN_APPROVAL, RETRY,
        {"request": flow.request.to_dict(), "majorIncident": start["majorIncident"], "checks": flow.checks},
    )  # fmt: skip
    plan = ApprovalPlan.from_json(planned["plan"])
    rounds = Rounds(flow, start, planned)

    def ended(
        outcome: str, reason: str, decision: Decision | None, review: ApprovalRound | None = None
    ) -> Any:
        return {"outcome": outcome, "reason": reason, "path": plan.path, "seq": flow.seq,
                "approvals": decision.summary() if decision else [], "round": rounds.round_no,
                "review": review.to_json() if review else None}  # fmt: skip

    if start.get("purpose") == "break_glass":
        # IAM started break-glass from the escalation card: its own two-person approval (design.md).
        stages = tuple(Stage(**s) for s in planned["breakGlass"])
        yield from flow.record("breakglass.planned", "recorded",
                               {"stages": [s.name for s in stages], "dueAt": rounds.due_at.isoformat()},
                               role=flow.request.role)  # fmt: skip
        due = f"{rounds.due_at:%H:%M:%S} UTC"
        yield from flow.ticket(
            f"Break-glass requested by IAM; approval asked of {_stage_names(stages)} in Teams, due {due}."
        )
        decision = yield from rounds.decide("break_glass", stages)
        reasons = {"approved": "break-glass approved by two people", "denied": "break-glass denied",
                   "expired": "no break-glass decision by the due time",
                   "resolved": "the incident was resolved before a decision"}  # fmt: skip
        return ended(decision.outcome, reasons[decision.outcome], decision)

    yield from flow.record(
        "approval.planned", "recorded",
        {"path": plan.path, "reason": plan.reason, "confirm": plan.confirm,
         "stages": [s.name for s in plan.stages], "review": plan.review.name if plan.review else None,
         "dueAt": rounds.due_at.isoformat(), "reminderFraction": rounds.reminder_fraction,
         "openerId": rounds.opener_id},
        role=flow.request.role, graph=planned.get("graph"),
    )  # fmt: skip

    if plan.confirm:
        yield from flow.ticket("Waiting for the responder to confirm the request in Teams.")
        confirmation = yield from rounds.decide("confirm", (Stage(RESPONDER_STAGE, "Responder"),))
        yield from flow.record(
            "approval.confirmation", confirmation.outcome, {"decisions": confirmation.summary()},
            role=flow.request.role, actor_id=rounds.responder_id, actor_upn=rounds.responder_upn,
        )  # fmt: skip
        if confirmation.outcome == "denied":
            return ended("denied", "the responder said this request is not theirs", confirmation)
        if confirmation.outcome == "resolved":
            return ended("resolved", "the incident was resolved before the responder confirmed", confirmation)
        if confirmation.outcome == "expired":
            return ended("expired", "the responder did not confirm the request by the due time", confirmation)

    if plan.path == "major_incident_rule":
        assert plan.review is not None
        yield from flow.record("approval.rule", "approved", {"reason": plan.reason}, role=flow.request.role)
        review_due = context.current_utc_datetime + timedelta(seconds=rounds.review_seconds)
        # The review's votes go to the parent: the access does not wait for the review.
        review = yield from rounds.open("review", (plan.review,), review_due, rounds.parent_id)
        return ended("approved", plan.reason, None, review)

    yield from flow.ticket(f"Approval requested from {_stage_names(plan.stages)} in Teams; "
                           f"due at {rounds.due_at:%H:%M:%S} UTC.")  # fmt: skip
    decision = yield from rounds.decide("approve", plan.stages)
    if decision.outcome == "denied":
        denial = next(v for v in decision.counted.values() if v.verb == "deny")
        return ended("denied", f"denied by {denial.approver_upn}", decision)
    if decision.outcome == "resolved":
        return ended("resolved", "the incident was resolved before a decision", decision)
    if decision.outcome == "expired":
        waiting = [s.display_name for s in plan.stages if s.name not in decision.counted]
        return ended("expired", f"no decision by the due time from {', '.join(waiting)}", decision)
    return ended("approved", plan.reason, decision)


def review_event(flow: RequestFlow, review: ApprovalRound) -> Any:
    """The task that completes when the review's one stage answers (waited for until it does, only)."""
    return flow.context.wait_for_external_event(vote_event(review.round, review.stages[0].name))


def conclude_review(flow: RequestFlow, review: ApprovalRound, answered: bool) -> Steps:
    """Record the post-facto review (its stored vote, when ``answered``), close its round, update its card."""
    context = flow.context
    stage = review.stages[0]
    counted: dict[str, Vote] = {}
    outcome = "unreviewed"
    if answered:
        stored = yield context.call_activity_with_retry(
            LOAD_VOTE, RETRY, {"requestId": review.request_id, "round": review.round, "stage": stage.name}
        )
        vote = Vote.from_json(stored) if stored else None
        count = count_votes(review, [vote]) if vote else None
        if vote is None or count is None or count.refused or vote.at >= review.due_at:
            reason = (
                count.refused[0][1] if count and count.refused else "no stored review before the due time"
            )
            yield from flow.record("approval.review", "refused", {"round": review.round, "reason": reason},
                                   role=flow.request.role)  # fmt: skip
        else:
            counted = {stage.name: vote}
            outcome = "confirmed" if vote.verb == "approve" else "concern"
            yield from flow.record(
                "approval.review", outcome,
                {"round": review.round, "stage": stage.name, "verb": vote.verb, "at": vote.at.isoformat(),
                 "voteId": vote.vote_id},
                role=flow.request.role, actor_id=vote.approver_id, actor_upn=vote.approver_upn,
            )  # fmt: skip
            line = decision_line(vote, stage)
            if outcome == "concern":
                yield from flow.ticket(f"Post-facto review: {line}: IAM raised a concern about this access.")
            else:
                yield from flow.ticket(f"Post-facto review: {line}: the rule approval was right.")
    yield context.call_activity_with_retry(
        CLOSE_ROUND, RETRY, {"requestId": review.request_id, "round": review.round, "outcome": outcome}
    )
    yield context.call_activity_with_retry(
        UPDATE_CARDS, RETRY,
        {"round": review.to_json(), "counted": [v.to_json() for v in counted.values()], "status": "closed",
         "note": "" if counted else f"No review was recorded by {review.due_at:%Y-%m-%d %H:%M} UTC."},
    )  # fmt: skip
    if not counted:
        yield from flow.record(
            "approval.review", "unreviewed", {"round": review.round, "dueAt": review.due_at.isoformat()}
        )
    return outcome


def await_review(flow: RequestFlow, review: ApprovalRound, event: Any = None) -> Steps:
    """Wait for the post-facto review (until its due time), then record it. ``event``: the wait already
    created for it, when there is one (one wait per event name, see RESOLUTION_EVENT)."""
    context = flow.context
    timer = context.create_timer(review.due_at)
    event = event if event is not None else review_event(flow, review)
    winner = yield context.task_any([event, timer])
    if winner is not timer:
        timer.cancel()
    return (yield from conclude_review(flow, review, winner is not timer))
