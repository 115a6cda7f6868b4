"""The Approvals table against Azurite: create-only rounds and votes (a retried activity or a repeated
click finds its own row), closing a round once, one card and one reminder per party."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from local.azurite import Azurite
from shared.approvals import ApprovalBook, ApprovalRound, CardRecord, Stage, Vote

pytestmark = pytest.mark.stack

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
LEAD = Stage("on_call_lead", "On-call lead", "00000000-0000-0000-0000-000000000001", "19:lead@thread.tacv2")


@pytest.fixture
def book(azurite: Azurite) -> Iterator[ApprovalBook]:
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        yield ApprovalBook(service)


def new_round(round_no: int = 1) -> ApprovalRound:
    return ApprovalRound(
        request_id=f"servicenow-INC{uuid.uuid4().hex[:8]}-29232cdf-g1", round=round_no, purpose="approve",
        nonce=str(uuid.uuid4()), instance_id="x-approval", stages=(LEAD,), opened_at=T0,
        due_at=T0 + timedelta(minutes=15), responder_id="alex-id", responder_upn="alex@contoso.test",
        opener_id="", opener_names=("sam@contoso.test",), summary={"ticket": "INC1"},
    )  # fmt: skip


def test_a_round_is_created_once_and_read_back_whole(book: ApprovalBook) -> None:
    opened = new_round()
    assert book.open_round(opened) == opened
    # A retried activity with a different nonce (it cannot happen in a replay, but must not overwrite).
    assert book.open_round(replace(opened, nonce="another")) == opened
    assert book.get_round(opened.request_id, 1) == opened
    assert book.get_round(opened.request_id, 2) is None


def test_closing_a_round_is_idempotent_and_keeps_the_first_outcome(book: ApprovalBook) -> None:
    opened = book.open_round(new_round())
    assert book.close_round(opened.request_id, 1, "expired").outcome == "expired"
    again = book.close_round(opened.request_id, 1, "approved")
    assert (again.status, again.outcome) == ("closed", "expired")


def test_a_stage_holds_one_vote_per_round_whoever_clicks_first(book: ApprovalBook) -> None:
    opened = book.open_round(new_round())
    vote = Vote(opened.request_id, 1, "on_call_lead", "lee-id", "lee@contoso.test", "Lee", "approve", T0)
    stored, new = book.add_vote(vote)
    assert new and stored == vote
    # The same person again (a repeated click), or another lead a moment later: both find Lee's vote.
    for later in (
        replace(vote, verb="deny"),
        replace(vote, approver_id="lou-id", approver_upn="lou@contoso.test"),
    ):
        stored, new = book.add_vote(later)
        assert not new and stored == vote
    other = Vote(opened.request_id, 1, "iam_duty_manager", "ivy-id", "ivy@contoso.test", "Ivy", "deny",
                 T0 + timedelta(seconds=1))  # fmt: skip
    book.add_vote(other)
    assert [(v.approver_id, raised) for v, raised in book.votes(opened.request_id, 1)] == [
        ("lee-id", False), ("ivy-id", False)]  # fmt: skip
    book.mark_raised(vote)
    assert [raised for _, raised in book.votes(opened.request_id, 1)] == [True, False]
    assert book.vote(opened.request_id, 1, "iam_duty_manager") == other
    assert book.votes(opened.request_id, 2) == [] and book.vote(opened.request_id, 2, "on_call_lead") is None


def test_open_rounds_lists_the_rounds_not_yet_closed(book: ApprovalBook) -> None:
    first = book.open_round(new_round())
    second = book.open_round(replace(first, round=2, nonce="n2"))
    book.close_round(first.request_id, 1, "superseded")
    assert [r.round for r in book.open_rounds(first.request_id)] == [second.round]


def test_one_card_and_one_reminder_per_party(book: ApprovalBook) -> None:
    opened = book.open_round(new_round())
    assert book.card(opened.request_id, "approve", "on_call_lead") is None
    book.record_card(opened.request_id, "approve", "on_call_lead", CardRecord("19:lead", "1"))
    book.record_card(opened.request_id, "approve", "on_call_lead", CardRecord("19:lead", "2"))
    assert book.card(opened.request_id, "approve", "on_call_lead") == CardRecord("19:lead", "1")
    assert book.claim_reminder(opened.request_id, 1, "on_call_lead", T0)
    assert not book.claim_reminder(opened.request_id, 1, "on_call_lead", T0)  # a retried activity
    assert book.claim_reminder(opened.request_id, 2, "on_call_lead", T0)
