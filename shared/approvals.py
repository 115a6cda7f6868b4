"""Approvals: who must decide a request, the open rounds the Teams bot checks clicks against, the vote
rows it writes, and the count the orchestrator makes (design.md "Approval" and "Approval callbacks").

Words used here:
- a *round* is one set of cards with a shared nonce and due time: the responder's confirmation, the
  approvers' decision, or the post-facto review. Each round has *stages*, one per party that must
  answer: ``responder`` (the confirmation) or an approver group key (``on_call_lead``...).
- a *vote* is one verified click: create-only, keyed (request, round, stage, approver), so a click that
  Teams delivers twice finds its own row and counts once.

The bot writes votes; only the orchestrator counts them (:func:`count_votes`, pure and deterministic), so
a race between two clicks, or between a click and the due time, has one answer: the orchestration's.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Literal, get_args

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.models import AccessRequest
from shared.policy import Policy, RolePolicy
from shared.tables import ensure_table

__all__ = [
    "APPROVALS_TABLE",
    "RESPONDER_STAGE",
    "ApprovalBook",
    "ApprovalPlan",
    "ApprovalRound",
    "CardRecord",
    "Purpose",
    "RoundCount",
    "Stage",
    "Verb",
    "Vote",
    "break_glass_stages",
    "count_votes",
    "plan_approval",
    "stage_refusal",
    "vote_event",
]

APPROVALS_TABLE: Final = "Approvals"
RESPONDER_STAGE: Final = "responder"

# confirm: the responder's "this is my request"; approve: the approval decision; review: the post-facto review
# of a rule approval; escalation: IAM on call may start break-glass once access was not proven by its
# deadline; break_glass: the two-person approval of the break-glass assignment (design.md "Break-glass").
Purpose = Literal["confirm", "approve", "review", "escalation", "break_glass"]
Verb = Literal["approve", "deny", "confirm"]
Path = Literal["two_person", "single", "major_incident_rule"]
VERBS: tuple[str, ...] = get_args(Verb)
# What each kind of round accepts: the responder confirms ("yes, this is my request") or denies it; an
# approver or reviewer approves or denies.
_VERBS_FOR: dict[str, tuple[str, ...]] = {
    "confirm": ("confirm", "deny"),
    "approve": ("approve", "deny"),
    "review": ("approve", "deny"),
    "escalation": ("approve", "deny"),
    "break_glass": ("approve", "deny"),
}


def vote_event(round_no: int, stage: str) -> str:
    """The external event a stage's votes arrive as: one name per round and stage, because the Python SDK
    hands a buffered event to every later wait with the same name (facts.md)."""
    return f"vote_r{round_no}_{stage}"


@dataclass(frozen=True)
class Stage:
    """One party that must answer in a round: an approver group, or the responder (``group_id`` "")."""

    name: str
    display_name: str
    group_id: str = ""
    conversation_id: str = ""  # the Teams conversation its card goes to ("" = the responder's 1:1 chat)

    @property
    def is_responder(self) -> bool:
        return self.name == RESPONDER_STAGE


@dataclass(frozen=True)
class ApprovalPlan:
    """What the policy asks of this request, decided once at the start of the approval stage."""

    path: Path
    confirm: bool
    stages: tuple[Stage, ...]  # the approvers' stages (two_person: two; single: one; rule: none)
    review: Stage | None  # the post-facto review (major_incident_rule only)
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> ApprovalPlan:
        return ApprovalPlan(
            path=data["path"],
            confirm=bool(data["confirm"]),
            stages=tuple(Stage(**s) for s in data["stages"]),
            review=Stage(**data["review"]) if data.get("review") else None,
            reason=data["reason"],
        )


def _group_stage(policy: Policy, key: str) -> Stage:
    group = policy.approver_groups[key]
    return Stage(key, group.display_name, group.group_id, group.teams_conversation_id)


def break_glass_stages(policy: Policy) -> tuple[Stage, ...]:
    """The two groups that approve break-glass (IAM duty manager and security lead by default); the first
    one is also the group that may start it from the escalation card."""
    return tuple(_group_stage(policy, key) for key in policy.approval.break_glass_groups)


def plan_approval(role: RolePolicy, policy: Policy, major_incident: bool) -> ApprovalPlan:
    """design.md "Approval": two-person for roles whose policy says so; the major-incident rule (approved by
    rule, then reviewed) for the others while the linked incident is a declared major incident, and one
    on-call lead outside such a window."""
    confirm = role.responder_confirmation
    if role.approval == "two_person":
        stages = tuple(_group_stage(policy, key) for key in policy.approval.two_person_groups)
        names = " and ".join(s.display_name for s in stages)
        reason = f"{role.name} is {role.tier} tier: two-person approval ({names}, two different people)"
        return ApprovalPlan("two_person", confirm, stages, None, reason)
    if major_incident:
        review = _group_stage(policy, policy.approval.review_group)
        reason = (f"the linked incident is a declared major incident: {role.name} is approved by rule, "
                  f"then reviewed by {review.display_name}")  # fmt: skip
        return ApprovalPlan("major_incident_rule", confirm, (), review, reason)
    fallback = _group_stage(policy, policy.approval.window_fallback_group)
    reason = f"no declared major incident: {role.name} needs one approval from {fallback.display_name}"
    return ApprovalPlan("single", confirm, (fallback,), None, reason)


@dataclass(frozen=True)
class ApprovalRound:
    """An open set of cards. The bot checks every click against it; the orchestrator closes it."""

    request_id: str
    round: int
    purpose: Purpose
    nonce: str
    instance_id: str  # the orchestration whose events the stages' votes are raised to
    stages: tuple[Stage, ...]
    opened_at: datetime
    due_at: datetime
    responder_id: str
    responder_upn: str
    # Who opened the ticket, as far as we know them: the Entra object id (when the ITSM's identity matched
    # one exactly) and the ITSM's user name and mail, compared case-insensitively with the approver's.
    opener_id: str
    opener_names: tuple[str, ...]
    summary: dict[str, Any] = field(default_factory=dict)  # what the cards show (ticket, role, checks...)
    status: Literal["open", "closed"] = "open"
    outcome: str = ""
    # Answers counted in earlier rounds of the same decision (a round reopened for the stages still
    # waiting): those stages are decided, and those people have answered.
    carried: tuple[Vote, ...] = ()

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def carried_by_stage(self) -> dict[str, Vote]:
        return {v.stage: v for v in self.carried}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["opened_at"] = self.opened_at.isoformat()
        data["due_at"] = self.due_at.isoformat()
        data["opener_names"] = list(self.opener_names)
        data["carried"] = [v.to_json() for v in self.carried]
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> ApprovalRound:
        return ApprovalRound(
            request_id=data["request_id"],
            round=int(data["round"]),
            purpose=data["purpose"],
            nonce=data["nonce"],
            instance_id=data["instance_id"],
            stages=tuple(Stage(**s) for s in data["stages"]),
            opened_at=datetime.fromisoformat(data["opened_at"]),
            due_at=datetime.fromisoformat(data["due_at"]),
            responder_id=data["responder_id"],
            responder_upn=data["responder_upn"],
            opener_id=data["opener_id"],
            opener_names=tuple(data["opener_names"]),
            summary=dict(data.get("summary") or {}),
            status=data.get("status", "open"),
            outcome=data.get("outcome", ""),
            carried=tuple(Vote.from_json(v) for v in data.get("carried", [])),
        )


@dataclass(frozen=True)
class Vote:
    """One verified click. ``approver_id`` is the token-verified ``from.aadObjectId``, never card data."""

    request_id: str
    round: int
    stage: str
    approver_id: str
    approver_upn: str
    approver_name: str
    verb: Verb
    at: datetime

    @property
    def vote_id(self) -> str:
        return f"{self.request_id}:r{self.round}:{self.stage}:{self.approver_id}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat(), "voteId": self.vote_id}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Vote:
        return Vote(
            request_id=data["request_id"],
            round=int(data["round"]),
            stage=data["stage"],
            approver_id=data["approver_id"],
            approver_upn=data["approver_upn"],
            approver_name=data["approver_name"],
            verb=data["verb"],
            at=datetime.fromisoformat(data["at"]),
        )


def _is_opener(round_: ApprovalRound, person_id: str, names: tuple[str, ...]) -> bool:
    if round_.opener_id and person_id.lower() == round_.opener_id.lower():
        return True
    folded = {n.casefold() for n in names if n}
    return any(n.casefold() in folded for n in round_.opener_names if n)


def stage_refusal(round_: ApprovalRound, stage: Stage, verb: str, person_id: str,
                  person_names: tuple[str, ...]) -> str | None:  # fmt: skip
    """Why this person may not cast this vote at this stage (identity rules only; group membership and
    timing are checked by the caller), or None. Used by the bot before writing a vote and again by the
    orchestrator when counting, so a rule cannot be skipped by a race."""
    if verb not in _VERBS_FOR[round_.purpose]:
        return f"{verb!r} is not an answer to a {round_.purpose} card"
    is_responder = person_id.lower() == round_.responder_id.lower()
    if stage.is_responder:
        if not is_responder:
            return "only the responder can confirm this request"
        return None
    if is_responder:
        return "the responder cannot approve their own request"
    if _is_opener(round_, person_id, person_names):
        return "the ticket's opener cannot approve the request"
    return None


@dataclass(frozen=True)
class RoundCount:
    """The orchestrator's reading of a round: each stage's counted vote, the refused ones, the outcome."""

    counted: dict[str, Vote]
    refused: tuple[tuple[Vote, str], ...]
    outcome: Literal["pending", "approved", "denied"]

    @property
    def denial(self) -> Vote | None:
        return next((v for v in self.counted.values() if v.verb == "deny"), None)


def count_votes(round_: ApprovalRound, votes: list[Vote]) -> RoundCount:
    """Count ``votes`` in arrival order: the first acceptable vote of each stage counts; a vote from a person
    who already counted at another stage is refused (two stages, two people); any counted deny decides.

    The round's ``carried`` answers (from earlier rounds of the same decision) count towards the outcome and
    towards the two-people rule."""
    counted: dict[str, Vote] = round_.carried_by_stage
    refused: list[tuple[Vote, str]] = []
    seen: set[str] = set()
    for vote in votes:
        if vote.vote_id in seen:
            continue  # a duplicate delivery of the same vote
        seen.add(vote.vote_id)
        stage = round_.stage(vote.stage)
        reason = None
        if vote.round != round_.round:
            reason = f"the vote is for round {vote.round}, not the open round {round_.round}"
        elif stage is None:
            reason = f"{vote.stage!r} is not a stage of this round"
        elif vote.stage in counted:
            reason = f"{stage.display_name} already answered ({counted[vote.stage].approver_upn})"
        else:
            reason = stage_refusal(round_, stage, vote.verb, vote.approver_id, (vote.approver_upn,))
        if reason is None:
            other = next((v for v in counted.values() if v.approver_id.lower() == vote.approver_id.lower()),
                         None)  # fmt: skip
            if other is not None:
                reason = (f"{vote.approver_upn} already answered for {other.stage}: the two approvals "
                          "must come from two different people")  # fmt: skip
        if reason is not None:
            refused.append((vote, reason))
            continue
        counted[vote.stage] = vote
    if any(v.verb == "deny" for v in counted.values()):
        outcome: Literal["pending", "approved", "denied"] = "denied"
    elif all(s.name in counted for s in round_.stages) and counted:
        outcome = "approved"
    else:
        outcome = "pending"
    return RoundCount(counted, tuple(refused), outcome)


def request_summary(request: AccessRequest, role: RolePolicy, checks: list[dict[str, Any]]) -> dict[str, Any]:
    """What every card of a request shows (small: it is stored in the round row)."""
    return {
        "system": request.system,
        "ticket": request.ticket,
        "incident": request.incident.number if request.incident else "",
        "summary": request.short_description,
        "responder": (request.assignee.email or request.assignee.user_name) if request.assignee else "",
        "opener": request.opener.email or request.opener.user_name,
        "role": role.name,
        "tier": role.tier,
        "durationMinutes": int(request.duration.total_seconds() // 60),
        "justification": request.justification,
        "checks": [{"check": c.get("check", ""), "passed": bool(c.get("passed"))} for c in checks],
    }


# --- storage ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardRecord:
    """Where a stage's card was posted: one card per party per request and purpose, updated in place."""

    conversation_id: str
    activity_id: str


def _round_key(round_no: int) -> str:
    return f"round-{round_no:04d}"


def _vote_key(round_no: int, stage: str) -> str:
    # One vote per stage and round, enforced by the store: of two people clicking the same card at once,
    # the second finds the first's row (and is told who answered), so no answer is ever silently lost.
    return f"{_round_key(round_no)}:vote:{stage}"


def _card_key(purpose: str, stage: str) -> str:
    return f"card:{purpose}:{stage}"


class ApprovalBook:
    """The ``Approvals`` table: one partition per request; a row per round, per vote and per card.
    Sync (azure-data-tables); async callers use a thread."""

    def __init__(self, service: TableServiceClient) -> None:
        self._table: TableClient = ensure_table(service, APPROVALS_TABLE)

    # rounds

    def open_round(self, round_: ApprovalRound) -> ApprovalRound:
        """Create the round (idempotent: an activity retried after it wrote the row finds it)."""
        try:
            self._table.create_entity(
                {
                    "PartitionKey": round_.request_id,
                    "RowKey": _round_key(round_.round),
                    "Round": json.dumps(round_.to_json()),
                }
            )
        except ResourceExistsError:
            existing = self.get_round(round_.request_id, round_.round)
            assert existing is not None
            return existing
        return round_

    def get_round(self, request_id: str, round_no: int) -> ApprovalRound | None:
        try:
            entity = self._table.get_entity(request_id, _round_key(round_no))
        except ResourceNotFoundError:
            return None
        return ApprovalRound.from_json(json.loads(str(entity["Round"])))

    def close_round(self, request_id: str, round_no: int, outcome: str) -> ApprovalRound:
        """Mark the round decided (approved, denied, expired...); clicks after this are refused."""
        while True:
            entity = self._table.get_entity(request_id, _round_key(round_no))
            current = ApprovalRound.from_json(json.loads(str(entity["Round"])))
            if current.status == "closed":
                return current
            closed = replace(current, status="closed", outcome=outcome)
            try:
                self._table.update_entity(
                    {"PartitionKey": request_id, "RowKey": _round_key(round_no),
                     "Round": json.dumps(closed.to_json())},
                    mode=UpdateMode.REPLACE, etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )  # fmt: skip
            except ResourceModifiedError:
                continue  # changed meanwhile: read it again
            return closed

    # votes

    def add_vote(self, vote: Vote) -> tuple[Vote, bool]:
        """Write the stage's vote row; (the stored vote, True) when new, (the vote already there, False) when
        the stage of this round has one: this person's earlier click, or someone else's that came first."""
        row_key = _vote_key(vote.round, vote.stage)
        entity = {
            "PartitionKey": vote.request_id,
            "RowKey": row_key,
            "Vote": json.dumps(vote.to_json()),
            "Raised": False,
        }
        try:
            self._table.create_entity(entity)
        except ResourceExistsError:
            stored = self._table.get_entity(vote.request_id, row_key)
            return Vote.from_json(json.loads(str(stored["Vote"]))), False
        return vote, True

    def votes(self, request_id: str, round_no: int) -> list[tuple[Vote, bool]]:
        """The round's votes (each with whether its event was raised), oldest first."""
        prefix = f"{_round_key(round_no)}:vote:"
        rows = self._table.query_entities(
            "PartitionKey eq @p and RowKey ge @lo and RowKey lt @hi",
            parameters={"p": request_id, "lo": prefix, "hi": prefix + "~"},
        )
        found = [(Vote.from_json(json.loads(str(r["Vote"]))), bool(r.get("Raised"))) for r in rows]
        return sorted(found, key=lambda pair: pair[0].at)

    def vote(self, request_id: str, round_no: int, stage: str) -> Vote | None:
        try:
            entity = self._table.get_entity(request_id, _vote_key(round_no, stage))
        except ResourceNotFoundError:
            return None
        return Vote.from_json(json.loads(str(entity["Vote"])))

    def open_rounds(self, request_id: str) -> list[ApprovalRound]:
        rows = self._table.query_entities(
            "PartitionKey eq @p and RowKey ge @lo and RowKey lt @hi",
            parameters={"p": request_id, "lo": "round-", "hi": "round-~"},
        )
        rounds = [ApprovalRound.from_json(json.loads(str(r["Round"]))) for r in rows if "Round" in r]
        return [r for r in rounds if r.status == "open"]

    def mark_raised(self, vote: Vote) -> None:
        self._table.update_entity(
            {"PartitionKey": vote.request_id, "RowKey": _vote_key(vote.round, vote.stage),
             "Raised": True},
            mode=UpdateMode.MERGE,
        )  # fmt: skip

    # reminders: at most one per stage and round, even when the activity that sends it is retried (the claim
    # comes before the post: a reminder lost to a crash is better than approver spam)

    def claim_reminder(self, request_id: str, round_no: int, stage: str, at: datetime) -> bool:
        """True for the first claim of this stage's reminder, False ever after."""
        try:
            self._table.create_entity(
                {"PartitionKey": request_id, "RowKey": f"{_round_key(round_no)}:reminder:{stage}",
                 "ClaimedAt": at.isoformat()}
            )  # fmt: skip
        except ResourceExistsError:
            return False
        return True

    # cards

    def card(self, request_id: str, purpose: str, stage: str) -> CardRecord | None:
        try:
            entity = self._table.get_entity(request_id, _card_key(purpose, stage))
        except ResourceNotFoundError:
            return None
        return CardRecord(str(entity["ConversationId"]), str(entity["ActivityId"]))

    def record_card(self, request_id: str, purpose: str, stage: str, card: CardRecord) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._table.create_entity(
                {"PartitionKey": request_id, "RowKey": _card_key(purpose, stage),
                 "ConversationId": card.conversation_id, "ActivityId": card.activity_id}
            )  # fmt: skip
