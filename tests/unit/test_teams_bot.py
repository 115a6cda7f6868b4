"""The click checks of POST /api/messages (orchestrators/teams_bot.py) with fakes for the token validator,
the Approvals table and Graph: the branches the end-to-end tests cannot reach on demand (a click between
the due time and the orchestration closing the round, two clicks racing for one card, a user Graph does not
know, a vote whose event was never raised)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrators.teams_bot import ApprovalInvokes, InvokeAnswer
from shared.approvals import ApprovalRound, Stage, Vote
from shared.audit import GraphCall
from shared.bot_auth import BotAuthError
from shared.directory import DirectoryUser, Traced

TENANT = "11111111-2222-4333-8444-555555555555"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ALEX = "aaaaaaaa-0000-4000-8000-000000000001"
LEE = "bbbbbbbb-0000-4000-8000-000000000001"
LOU = "bbbbbbbb-0000-4000-8000-000000000002"
IVY = "cccccccc-0000-4000-8000-000000000001"
LEAD = Stage("on_call_lead", "On-call lead", "00000000-0000-0000-0000-000000000001", "19:lead")
IAM = Stage("iam_duty_manager", "IAM duty manager", "00000000-0000-0000-0000-000000000002", "19:iam")
CALL = GraphCall("GET", "/users", 200, "r", "c")


class FakeValidator:
    def __init__(self) -> None:
        self.error: BotAuthError | None = None

    def validate(self, authorization_header: str | None, service_url: str) -> Any:
        if self.error:
            raise self.error
        return object()


class FakeBook:
    def __init__(self, round_: ApprovalRound) -> None:
        self.rounds = {(round_.request_id, round_.round): round_}
        self.rows: dict[tuple[str, int, str], tuple[Vote, bool]] = {}

    def get_round(self, request_id: str, round_no: int) -> ApprovalRound | None:
        return self.rounds.get((request_id, round_no))

    def votes(self, request_id: str, round_no: int) -> list[tuple[Vote, bool]]:
        return [v for (r, n, _), v in self.rows.items() if (r, n) == (request_id, round_no)]

    def add_vote(self, vote: Vote) -> tuple[Vote, bool]:
        key = (vote.request_id, vote.round, vote.stage)
        if key in self.rows:
            return self.rows[key][0], False
        self.rows[key] = (vote, False)
        return vote, True

    def mark_raised(self, vote: Vote) -> None:
        key = (vote.request_id, vote.round, vote.stage)
        self.rows[key] = (self.rows[key][0], True)


class FakeDirectory:
    def __init__(self) -> None:
        people = ((ALEX, "alex"), (LEE, "lee"), (LOU, "lou"), (IVY, "ivy"))
        self.users = {
            uid: DirectoryUser(uid, f"{name}@contoso.test", None, name, True) for uid, name in people
        }
        lead, iam = {LEAD.group_id}, {IAM.group_id}
        self.groups = {LEE: set(lead), LOU: set(lead), IVY: set(iam), ALEX: set(lead)}

    async def get_user(self, user_id: str) -> Traced[DirectoryUser | None]:
        return Traced(self.users.get(user_id), CALL)

    async def member_groups(self, user_id: str, group_ids: list[str]) -> Traced[frozenset[str]]:
        return Traced(frozenset(self.groups.get(user_id, set()) & set(group_ids)), CALL)


def a_round(**changes: Any) -> ApprovalRound:
    values: dict[str, Any] = dict(
        request_id="servicenow-INC0012345-62e90394-g1", round=2, purpose="approve", nonce="nonce-2",
        instance_id="servicenow-INC0012345-62e90394-g1-approval", stages=(LEAD, IAM),
        opened_at=NOW - timedelta(minutes=1), due_at=NOW + timedelta(minutes=14), responder_id=ALEX,
        responder_upn="alex@contoso.test", opener_id="", opener_names=("sam@contoso.test",), summary={},
    )  # fmt: skip
    values.update(changes)
    return ApprovalRound(**values)


class Bot:
    def __init__(self, round_: ApprovalRound) -> None:
        self.validator, self.book, self.directory = FakeValidator(), FakeBook(round_), FakeDirectory()
        self.raised: list[tuple[str, str, dict[str, Any]]] = []
        self.round = round_

        async def raise_vote(instance_id: str, event: str, payload: dict[str, Any]) -> None:
            self.raised.append((instance_id, event, payload))

        self.invokes = ApprovalInvokes(self.validator, self.book, self.directory, TENANT, raise_vote)

    def click(self, user: str, stage: str = "on_call_lead", verb: str = "approve", at: datetime = NOW,
              **data: Any) -> InvokeAnswer:  # fmt: skip
        activity = {
            "type": "invoke", "name": "adaptiveCard/action", "serviceUrl": "https://smba.example/teams",
            "from": {"id": "29:x", "aadObjectId": user}, "channelData": {"tenant": {"id": TENANT}},
            "value": {"action": {"type": "Action.Execute", "verb": verb, "data": {
                "requestId": self.round.request_id, "round": self.round.round, "nonce": self.round.nonce,
                "stage": stage, **data}}},
        }  # fmt: skip
        return asyncio.run(self.invokes.handle("Bearer token", activity, at))


def test_an_accepted_click_writes_the_vote_raises_its_announcement_and_answers_the_card() -> None:
    bot = Bot(a_round())
    answer = bot.click(LEE)
    assert answer.status == 200 and not answer.refusal
    assert answer.body["type"] == "application/vnd.microsoft.card.adaptive"
    ((instance_id, event, payload),) = bot.raised
    assert (instance_id, event) == (bot.round.instance_id, "vote_r2_on_call_lead")
    assert set(payload) == {"voteId", "round", "stage"}  # the vote itself stays in the store
    assert bot.book.votes(bot.round.request_id, 2)[0][1] is True  # marked raised


def test_a_click_after_the_due_time_is_refused_even_while_the_round_is_still_open() -> None:
    bot = Bot(a_round())
    answer = bot.click(LEE, at=NOW + timedelta(minutes=15))
    assert (answer.status, answer.refusal) == (403, "past_due") and bot.raised == []


def test_the_second_of_two_clicks_racing_for_one_card_is_refused_with_who_came_first() -> None:
    bot = Bot(a_round())
    original = bot.book.add_vote
    # Lou's click passes every check while Lee's vote row is written in between (two invocations at once).
    lee_vote = Vote(bot.round.request_id, 2, "on_call_lead", LEE, "lee@contoso.test", "lee", "approve", NOW)

    def racing(vote: Vote) -> tuple[Vote, bool]:
        original(lee_vote)
        return original(vote)

    bot.book.add_vote = racing  # type: ignore[method-assign]
    answer = bot.click(LOU)
    assert (answer.status, answer.refusal) == (403, "stage_decided")
    assert "lee@contoso.test" in answer.body["value"]["message"]
    assert bot.raised == []


def test_a_user_graph_does_not_know_is_refused() -> None:
    bot = Bot(a_round())
    answer = bot.click("dddddddd-0000-4000-8000-000000000009")
    assert (answer.status, answer.refusal) == (403, "unknown_user")


def test_a_repeated_click_whose_event_was_never_raised_raises_it_once_more() -> None:
    bot = Bot(a_round())
    bot.book.add_vote(
        Vote(bot.round.request_id, 2, "on_call_lead", LEE, "lee@contoso.test", "lee", "approve", NOW)
    )
    answer = bot.click(LEE)
    assert (answer.status, answer.refusal, answer.outcome) == (200, "invoke_replayed", "replayed")
    assert len(bot.raised) == 1
    again = bot.click(LEE)
    assert again.status == 200 and len(bot.raised) == 1  # raised now: answered, not raised again


def test_a_person_counted_in_an_earlier_round_cannot_fill_the_other_stage() -> None:
    carried = Vote("servicenow-INC0012345-62e90394-g1", 2, "on_call_lead", LEE, "lee@contoso.test", "lee",
                   "approve", NOW)  # fmt: skip
    bot = Bot(a_round(round=3, nonce="nonce-3", carried=(carried,)))
    bot.directory.groups[LEE] = {LEAD.group_id, IAM.group_id}
    assert bot.click(LEE, stage="iam_duty_manager").refusal == "already_voted"
    assert bot.click(LOU, stage="on_call_lead").refusal == "stage_decided"
    assert bot.raised == []


def test_malformed_card_data_and_a_closed_round_are_refused() -> None:
    bot = Bot(a_round())
    assert (bot.click(LEE, requestId="../../etc").status, bot.click(LEE, round="2").status) == (400, 400)
    assert bot.click(LEE, stage="security_lead").refusal == "stale_card"
    closed = Bot(replace(a_round(), status="closed", outcome="expired"))
    assert closed.click(LEE).refusal == "round_closed"


def test_a_bad_token_is_refused_before_anything_else() -> None:
    bot = Bot(a_round())
    bot.validator.error = BotAuthError("expired", "the token has expired")
    answer = bot.click(LEE)
    assert (answer.status, answer.refusal) == (401, "expired") and bot.book.rows == {}
