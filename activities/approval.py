"""Activities of the approval sub-orchestration: plan, open and close rounds, post, update and remind cards.

Each is idempotent, because activities are delivered at least once: a round row is create-only, a card is
posted once per party and purpose (a retry finds the card row and updates that card instead), a reminder
is sent at most once per stage and round unless the host dies between sending it and recording it.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df

from shared.approvals import (
    ApprovalPlan,
    ApprovalRound,
    CardRecord,
    Vote,
    break_glass_stages,
    plan_approval,
    request_summary,
)
from shared.cards import card_summary, reminder_text, round_card
from shared.configuration import load_configuration
from shared.directory import DirectoryError
from shared.models import AccessRequest
from shared.services import approval_book, bot_connector, directory

PLAN_APPROVAL = "plan_approval"
OPEN_ROUND = "open_approval_round"
POST_CARD = "post_approval_card"
UPDATE_CARDS = "update_approval_cards"
REMIND_STAGE = "remind_approval_stage"
CLOSE_ROUND = "close_approval_round"
LOAD_VOTE = "load_approval_vote"
CLOSE_OPEN_ROUNDS = "close_open_approval_rounds"

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload", activity=PLAN_APPROVAL)
async def plan(payload: dict[str, Any]) -> dict[str, Any]:
    """The approval path for this request, and who its opener is in Entra (the opener may not approve)."""
    policy = load_configuration().policy
    request = AccessRequest.from_dict(payload["request"])
    role = policy.role(request.role)
    major = bool(payload.get("majorIncident"))
    chosen: ApprovalPlan = plan_approval(role, policy, major)
    # The opener may not approve: find their Entra identity by each identifier the ITSM gives (exact match
    # only). Whatever is found, the opener is also recognised by their ITSM name and mail.
    opener_id, call, lookup = "", None, "no identifier the directory can match"
    identifiers = (request.opener.email, request.opener.user_name)
    for identifier in dict.fromkeys(n for n in identifiers if n and "@" in n):
        try:
            found = await directory().find_user(identifier)
        except DirectoryError as error:
            if error.transient:
                raise
            lookup = f"{identifier}: {error}"
            continue
        call = found.call.__dict__
        if found.value is not None:
            opener_id, lookup = found.value.id, f"matched {identifier}"
            break
        lookup = f"no Entra user has the UPN or mail {identifier}"
    return {
        "plan": chosen.to_json(),
        "openerId": opener_id,
        "openerNames": [n for n in (request.opener.email, request.opener.user_name) if n],
        "openerLookup": lookup,
        "summary": request_summary(request, role, payload.get("checks", [])),
        "dueSeconds": policy.timings.approval_due.total_seconds(),
        "reminderSeconds": policy.timings.approval_reminder.total_seconds(),
        "reviewSeconds": policy.timings.review_due.total_seconds(),
        "breakGlass": [asdict(stage) for stage in break_glass_stages(policy)],
        "graph": call,
    }


@bp.activity_trigger(input_name="payload", activity=OPEN_ROUND)
def open_round(payload: dict[str, Any]) -> dict[str, Any]:
    return approval_book().open_round(ApprovalRound.from_json(payload)).to_json()


@bp.activity_trigger(input_name="payload", activity=CLOSE_ROUND)
def close_round(payload: dict[str, Any]) -> dict[str, Any]:
    closed = approval_book().close_round(payload["requestId"], int(payload["round"]), payload["outcome"])
    return closed.to_json()


def _counted(payload: dict[str, Any]) -> list[Vote]:
    return [Vote.from_json(v) for v in payload.get("counted", [])]


@bp.activity_trigger(input_name="payload", activity=POST_CARD)
async def post_card(payload: dict[str, Any]) -> dict[str, Any]:
    """Post the stage's card, or, when this party already has the card of this purpose (a retried activity,
    or a new round after a refused vote), update that card in place: one card per party per request."""
    round_ = ApprovalRound.from_json(payload["round"])
    stage = round_.stage(payload["stage"])
    if stage is None:
        raise ValueError(f"round {round_.round} of {round_.request_id} has no stage {payload['stage']!r}")
    book, connector = approval_book(), bot_connector()
    card = round_card(round_, stage, _counted(payload))
    existing = await asyncio.to_thread(book.card, round_.request_id, round_.purpose, stage.name)
    if existing is not None:
        await connector.update_card(
            existing.conversation_id, existing.activity_id, card, card_summary(round_)
        )
        return {"conversationId": existing.conversation_id, "activityId": existing.activity_id, "new": False}
    # The responder's confirmation goes to their 1:1 chat with the bot; approver groups' cards to the
    # conversation the policy names for the group.
    conversation = stage.conversation_id or await connector.personal_conversation(round_.responder_id)
    posted = await connector.post_card(conversation, card, card_summary(round_))
    record = CardRecord(posted.conversation_id, posted.activity_id)
    await asyncio.to_thread(book.record_card, round_.request_id, round_.purpose, stage.name, record)
    return {"conversationId": record.conversation_id, "activityId": record.activity_id, "new": True}


@bp.activity_trigger(input_name="payload", activity=UPDATE_CARDS)
async def update_cards(payload: dict[str, Any]) -> dict[str, Any]:
    """Show the round's outcome on every card of the round (buttons gone once it is decided)."""
    round_ = ApprovalRound.from_json(payload["round"])
    book, connector = approval_book(), bot_connector()
    counted = _counted(payload)
    updated = []
    for stage in round_.stages:
        record = await asyncio.to_thread(book.card, round_.request_id, round_.purpose, stage.name)
        if record is None:
            continue
        card = round_card(round_, stage, counted, payload["status"], payload.get("note", ""))
        await connector.update_card(record.conversation_id, record.activity_id, card, card_summary(round_))
        updated.append(stage.name)
    return {"updated": updated}


@bp.activity_trigger(input_name="payload", activity=REMIND_STAGE)
async def remind(payload: dict[str, Any]) -> dict[str, Any]:
    """One reminder, as a reply in the card's thread (not a second card: no approver spam)."""
    round_ = ApprovalRound.from_json(payload["round"])
    stage = round_.stage(payload["stage"])
    if stage is None:
        raise ValueError(f"round {round_.round} of {round_.request_id} has no stage {payload['stage']!r}")
    book = approval_book()
    record = await asyncio.to_thread(book.card, round_.request_id, round_.purpose, stage.name)
    if record is None:
        return {"sent": False}
    claimed = await asyncio.to_thread(
        book.claim_reminder, round_.request_id, round_.round, stage.name, datetime.now(UTC)
    )
    if not claimed:
        return {"sent": False}
    await bot_connector().reply_text(record.conversation_id, record.activity_id, reminder_text(round_, stage))
    return {"sent": True, "conversationId": record.conversation_id}


@bp.activity_trigger(input_name="payload", activity=LOAD_VOTE)
def load_vote(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The stored vote a stage's event announces: the vote row, not the event's payload, is what counts."""
    vote = approval_book().vote(payload["requestId"], int(payload["round"]), payload["stage"])
    return vote.to_json() if vote is not None else None


@bp.activity_trigger(input_name="request_id", activity=CLOSE_OPEN_ROUNDS)
def close_open_rounds(request_id: str) -> list[int]:
    """A request that stopped (an activity failed for good) leaves no card that still takes clicks."""
    book = approval_book()
    closed = []
    for round_ in book.open_rounds(request_id):
        book.close_round(request_id, round_.round, "stopped")
        closed.append(round_.round)
    return closed
