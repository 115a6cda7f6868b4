"""``POST /api/messages``: the Teams bot endpoint. An ``adaptiveCard/action`` invoke (a click on an approval
card) becomes a vote, or a clear refusal (design.md §4 "Approval callbacks").

The approver is who the Bot Framework token and the activity say (``from.aadObjectId`` of a JWT-verified
activity from our tenant), never what the card's data says. The checks, in order: body size and JSON (413,
400), token (401), tenant and user (403), the card's request, round and nonce (403), a replay of this
person's own click (the same answer again, counted once), the round still open and before its due time,
the identity rules (not the responder, not the opener, only the responder confirms), group membership in
Graph, one vote per person per round and per stage (403). Then a create-only vote row, the stage's event
raised to the orchestration, and the updated card as the invoke response. Every refusal is recorded on
the day's security chain; the orchestration counts the votes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import azure.durable_functions as df
import azure.functions as func

from shared.approvals import VERBS, ApprovalRound, Stage, Vote, stage_refusal, vote_event
from shared.audit import AuditEntry, security_chain
from shared.bot_auth import BotAuthError, BotKeysUnavailableError
from shared.cards import round_card
from shared.configuration import load_configuration
from shared.directory import DirectoryUser, Traced
from shared.services import approval_book, audit_ledger, bot_token_validator, directory

CARD_RESPONSE_TYPE = "application/vnd.microsoft.card.adaptive"
ERROR_RESPONSE_TYPE = "application/vnd.microsoft.error"
# Request ids are Durable instance ids we build (shared.intake.instance_id): anything else is refused before
# it reaches a Table Storage key.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

bp = df.Blueprint()


@dataclass(frozen=True)
class InvokeAnswer:
    status: int
    body: dict[str, Any]
    refusal: str = ""  # the security-chain kind suffix when this answer is recorded there
    detail: dict[str, Any] | None = None
    outcome: str = "rejected"

    def http(self) -> func.HttpResponse:
        return func.HttpResponse(json.dumps(self.body), status_code=self.status, mimetype="application/json")


def _card_answer(card: dict[str, Any]) -> InvokeAnswer:
    return InvokeAnswer(200, {"statusCode": 200, "type": CARD_RESPONSE_TYPE, "value": card})


def _refuse(status: int, code: str, message: str, **detail: Any) -> InvokeAnswer:
    body = {"statusCode": status, "type": ERROR_RESPONSE_TYPE, "value": {"code": code, "message": message}}
    return InvokeAnswer(status, body, code, {"reason": message, **detail})


RaiseVote = Callable[[str, str, dict[str, Any]], Awaitable[None]]


class TokenValidator(Protocol):
    def validate(self, authorization_header: str | None, service_url: str) -> Any: ...


class Ballots(Protocol):
    """The part of shared.approvals.ApprovalBook the bot uses."""

    def get_round(self, request_id: str, round_no: int) -> ApprovalRound | None: ...
    def votes(self, request_id: str, round_no: int) -> list[tuple[Vote, bool]]: ...
    def add_vote(self, vote: Vote) -> tuple[Vote, bool]: ...
    def mark_raised(self, vote: Vote) -> None: ...


class Approvers(Protocol):
    """The part of shared.directory.EntraDirectory the bot uses."""

    async def get_user(self, user_id: str) -> Traced[DirectoryUser | None]: ...
    async def member_groups(self, user_id: str, group_ids: list[str]) -> Traced[frozenset[str]]: ...


class ApprovalInvokes:
    """The click-to-vote checks, with the adapters passed in (tests use fakes for the pure unit tests and
    the real ones end to end)."""

    def __init__(self, validator: TokenValidator, book: Ballots, entra: Approvers, tenant_id: str,
                 raise_vote: RaiseVote) -> None:  # fmt: skip
        self._validator = validator
        self._book = book
        self._entra = entra
        self._tenant_id = tenant_id.lower()
        self._raise_vote = raise_vote

    async def handle(
        self, authorization: str | None, activity: dict[str, Any], now: datetime
    ) -> InvokeAnswer:
        service_url = activity.get("serviceUrl")
        if not isinstance(service_url, str) or not service_url:
            return _refuse(400, "bad_activity", "the activity has no serviceUrl")
        try:
            await asyncio.to_thread(self._validator.validate, authorization, service_url)
        except BotAuthError as error:
            return _refuse(401, error.code, error.message)
        except BotKeysUnavailableError as error:
            return _refuse(503, "keys_unavailable", str(error))
        if activity.get("type") != "invoke" or activity.get("name") != "adaptiveCard/action":
            # Installs, messages and other activities need no answer beyond 200.
            return InvokeAnswer(200, {})
        tenant = ((activity.get("channelData") or {}).get("tenant") or {}).get("id")
        if not isinstance(tenant, str) or tenant.lower() != self._tenant_id:
            return _refuse(403, "wrong_tenant", f"the activity comes from tenant {tenant!r}, not ours")
        user_id = (activity.get("from") or {}).get("aadObjectId")
        if not isinstance(user_id, str) or not _GUID.match(user_id):
            return _refuse(403, "no_user", "the activity names no Entra user (from.aadObjectId)")
        user_id = user_id.lower()
        action = (activity.get("value") or {}).get("action") or {}
        verb, data = action.get("verb"), action.get("data")
        if verb not in VERBS or not isinstance(data, dict):
            return _refuse(400, "bad_action", f"unknown action {verb!r}", user=user_id)
        request_id, round_no, nonce, stage_name = (
            data.get(k) for k in ("requestId", "round", "nonce", "stage")
        )
        if not (isinstance(request_id, str) and _REQUEST_ID.match(request_id) and isinstance(round_no, int)
                and isinstance(nonce, str) and isinstance(stage_name, str)):  # fmt: skip
            reason = "the card's data does not name a request, round, nonce and stage"
            return _refuse(400, "bad_action", reason, user=user_id)
        where = {
            "requestId": request_id,
            "round": round_no,
            "stage": stage_name,
            "user": user_id,
            "verb": verb,
        }
        round_ = await asyncio.to_thread(self._book.get_round, request_id, round_no)
        # The nonce is checked in constant time against the round's: a card of another request or round,
        # or data edited to name one, does not match.
        if round_ is None or not _same(nonce, round_.nonce):
            return _refuse(403, "stale_card", "this card is not the open card of a request", **where)
        stage = round_.stage(stage_name)
        if stage is None:
            return _refuse(403, "stale_card", f"the round has no stage {stage_name!r}", **where)
        stored_votes = await asyncio.to_thread(self._book.votes, request_id, round_no)
        # This round's answers and those carried from earlier rounds of the same decision.
        votes = [*round_.carried, *(v for v, _ in stored_votes)]
        mine = next(((v, raised) for v, raised in stored_votes
                     if v.stage == stage.name and v.approver_id == user_id), None)  # fmt: skip
        if mine is not None:  # Teams retries invokes: the same click gets the same answer, counted once
            if not mine[1] and round_.status == "open":
                await self._deliver(round_, mine[0])  # the first delivery did not finish
            return self._answer(round_, stage, votes, where, replayed=True)
        if round_.status != "open":
            return _refuse(
                403, "round_closed", f"the request is no longer waiting ({round_.outcome})", **where
            )
        if now >= round_.due_at:
            return _refuse(403, "past_due", f"the approval was due at {round_.due_at.isoformat()}", **where)
        found = await self._entra.get_user(user_id)
        person = found.value
        if person is None or not person.account_enabled:
            return _refuse(
                403, "unknown_user", "the clicking user is not an enabled user of this tenant", **where
            )
        names = tuple(n for n in (person.user_principal_name, person.mail) if n)
        refusal = stage_refusal(round_, stage, verb, user_id, names)
        if refusal is not None:
            return _refuse(403, "not_allowed", refusal, upn=person.user_principal_name, **where)
        if not stage.is_responder:
            groups = await self._entra.member_groups(user_id, [stage.group_id])
            if stage.group_id.lower() not in groups.value:
                return _refuse(403, "not_in_group", f"{person.user_principal_name} is not a member of "
                               f"{stage.display_name} ({stage.group_id})", upn=person.user_principal_name,
                               **where)  # fmt: skip
        elsewhere = next((v for v in votes if v.approver_id == user_id), None)
        if elsewhere is not None:
            reason = (f"{person.user_principal_name} already answered for {elsewhere.stage}: "
                      "the approvals must come from different people")  # fmt: skip
            return _refuse(403, "already_voted", reason, **where)
        taken = next((v for v in votes if v.stage == stage.name), None)
        if taken is not None:
            return _refuse(403, "stage_decided", f"{stage.display_name} already answered "
                           f"({taken.approver_upn})", **where)  # fmt: skip
        vote = Vote(request_id, round_no, stage.name, user_id, person.user_principal_name,
                    person.display_name, verb, now)  # fmt: skip
        stored, new = await asyncio.to_thread(self._book.add_vote, vote)
        if not new and stored.approver_id != user_id:  # someone else's click on this card came first
            return _refuse(403, "stage_decided", f"{stage.display_name} already answered "
                           f"({stored.approver_upn})", **where)  # fmt: skip
        await self._deliver(round_, stored)
        return self._answer(round_, stage, [*votes, stored], where)

    async def _deliver(self, round_: ApprovalRound, vote: Vote) -> None:
        # Raised again for a replayed click whose first delivery did not finish: a stage's event name is
        # consumed once, so a second delivery is never counted twice.
        # The event only announces the vote: the orchestration reads the stored row, which is what counts.
        announcement = {"voteId": vote.vote_id, "round": vote.round, "stage": vote.stage}
        await self._raise_vote(round_.instance_id, vote_event(round_.round, vote.stage), announcement)
        await asyncio.to_thread(self._book.mark_raised, vote)

    def _answer(self, round_: ApprovalRound, stage: Stage, votes: list[Vote], where: dict[str, Any],
                replayed: bool = False) -> InvokeAnswer:  # fmt: skip
        counted: dict[str, Vote] = {}
        for vote in votes:
            counted.setdefault(vote.stage, vote)
        card = round_card(round_, stage, list(counted.values()))
        answer = _card_answer(card)
        if replayed:
            detail = {"reason": "a repeated click: answered as before, not counted again", **where}
            return InvokeAnswer(answer.status, answer.body, "invoke_replayed", detail, outcome="replayed")
        return answer


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


@bp.route(route="messages", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def messages(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    # Anonymous at the Functions level: the Bot Framework token is the authentication.
    now = datetime.now(UTC)
    configuration = load_configuration()
    body = req.get_body()
    evidence = {
        "bodyBytes": len(body),
        "bodySha256": hashlib.sha256(body).hexdigest(),
        "remote": (req.headers.get("x-forwarded-for") or "").split(",")[0].strip()[:100],
    }
    if len(body) > configuration.policy.limits.max_body_bytes:
        answer = _refuse(413, "body_too_large", f"{len(body)} bytes is over the limit")
    else:
        try:
            activity = json.loads(body)
        except ValueError:
            activity = None
        if not isinstance(activity, dict):
            answer = _refuse(400, "bad_activity", "the body is not a JSON activity")
        else:

            async def raise_vote(instance_id: str, event: str, payload: dict[str, Any]) -> None:
                await client.raise_event(instance_id, event, payload)

            invokes = ApprovalInvokes(bot_token_validator(), approval_book(), directory(),
                                      configuration.settings.tenant_id, raise_vote)  # fmt: skip
            try:
                answer = await invokes.handle(req.headers.get("authorization"), activity, now)
            except Exception as error:  # Graph, Table Storage or the task hub failed: Teams may retry
                logging.exception("the approval click could not be handled")
                answer = _refuse(503, "error", f"the click could not be handled now: {type(error).__name__}")
    if answer.refusal:
        entry = AuditEntry(kind=f"bot.{answer.refusal}", outcome=answer.outcome, time=now,
                           actor_id=str((answer.detail or {}).get("user", "")),
                           detail={**evidence, "code": answer.refusal, **(answer.detail or {})},
                           workflow_version="teams_bot/1")  # fmt: skip
        await audit_ledger().append_async(security_chain(now), entry)
    return answer.http()
