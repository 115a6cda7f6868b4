"""The approval rules as pure functions: the plan a policy gives a role, who may vote at a stage, how the
orchestrator counts, and what the cards show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.approvals import (
    RESPONDER_STAGE,
    ApprovalPlan,
    ApprovalRound,
    Stage,
    Vote,
    count_votes,
    plan_approval,
    stage_refusal,
    vote_event,
)
from shared.cards import round_card
from shared.policy import load_policy
from shared.settings import DEFAULT_POLICY_PATH

POLICY = load_policy(DEFAULT_POLICY_PATH)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ALEX, SAM, LEE, IVY = "a" * 8 + "-0000-4000-8000-000000000001", "sam-id", "lee-id", "ivy-id"
LEAD = Stage("on_call_lead", "On-call lead", "00000000-0000-0000-0000-000000000001", "19:lead")
IAM = Stage("iam_duty_manager", "IAM duty manager", "00000000-0000-0000-0000-000000000002", "19:iam")


def a_round(
    stages: tuple[Stage, ...] = (LEAD, IAM), purpose: str = "approve", **changes: Any
) -> ApprovalRound:
    values: dict[str, Any] = dict(
        request_id="req-1", round=2, purpose=purpose, nonce="n-2", instance_id="req-1-approval",
        stages=stages, opened_at=NOW, due_at=NOW + timedelta(minutes=15), responder_id=ALEX,
        responder_upn="alex@contoso.test",
        opener_id=SAM, opener_names=("sam@contoso.test", "sam"),
        summary={"ticket": "INC1", "role": "Global Administrator", "tier": "high", "checks": []},
    )  # fmt: skip
    values.update(changes)
    return ApprovalRound(**values)


def a_vote(stage: str, who: str, verb: str = "approve", round_no: int = 2, upn: str = "") -> Vote:
    return Vote("req-1", round_no, stage, who, upn or f"{who}@contoso.test", who, verb, NOW)  # type: ignore[arg-type]


def test_high_tier_roles_get_two_person_approval_with_the_responders_confirmation() -> None:
    plan = plan_approval(POLICY.role("Global Administrator"), POLICY, major_incident=True)
    assert plan.path == "two_person" and plan.confirm
    assert [s.name for s in plan.stages] == ["on_call_lead", "iam_duty_manager"]
    assert plan.stages[0].group_id == POLICY.approver_groups["on_call_lead"].group_id


def test_standard_roles_are_approved_by_rule_in_a_major_incident_and_reviewed_by_iam() -> None:
    plan = plan_approval(POLICY.role("Exchange Administrator"), POLICY, major_incident=True)
    assert (plan.path, plan.stages, plan.confirm) == ("major_incident_rule", (), False)
    assert plan.review is not None and plan.review.name == "iam_duty_manager"
    assert ApprovalPlan.from_json(plan.to_json()) == plan


def test_standard_roles_outside_a_major_incident_need_one_on_call_lead() -> None:
    plan = plan_approval(POLICY.role("Exchange Administrator"), POLICY, major_incident=False)
    assert plan.path == "single" and [s.name for s in plan.stages] == ["on_call_lead"]


def test_event_names_differ_per_round_and_stage() -> None:
    assert len({vote_event(r, s) for r in (1, 2) for s in ("on_call_lead", "iam_duty_manager")}) == 4


@pytest.mark.parametrize(
    ("who", "names", "verb", "expected"),
    [
        (ALEX, (), "approve", "responder cannot approve"),
        (SAM, (), "approve", "opener cannot approve"),
        ("someone-else", ("SAM@contoso.test",), "approve", "opener cannot approve"),  # matched by mail
        (LEE, (), "confirm", "not an answer"),
        (LEE, (), "approve", None),
        (LEE, (), "deny", None),
    ],
)
def test_who_may_answer_an_approver_stage(
    who: str, names: tuple[str, ...], verb: str, expected: str | None
) -> None:
    refusal = stage_refusal(a_round(), LEAD, verb, who, names)
    assert (refusal is None) if expected is None else (expected in str(refusal))


def test_only_the_responder_confirms() -> None:
    confirm = a_round((Stage(RESPONDER_STAGE, "Responder"),), purpose="confirm")
    stage = confirm.stages[0]
    assert stage_refusal(confirm, stage, "confirm", ALEX.upper(), ()) is None
    assert "only the responder" in str(stage_refusal(confirm, stage, "confirm", LEE, ()))


def test_two_approvals_by_two_people_approve() -> None:
    count = count_votes(a_round(), [a_vote("on_call_lead", LEE), a_vote("iam_duty_manager", IVY)])
    assert count.outcome == "approved" and not count.refused


def test_one_person_cannot_fill_both_stages() -> None:
    count = count_votes(a_round(), [a_vote("on_call_lead", LEE), a_vote("iam_duty_manager", LEE)])
    assert count.outcome == "pending"
    assert len(count.refused) == 1 and "two different people" in count.refused[0][1]


def test_a_second_vote_for_an_answered_stage_is_refused_and_duplicates_are_ignored() -> None:
    first = a_vote("on_call_lead", LEE)
    count = count_votes(a_round(), [first, first, a_vote("on_call_lead", "lou-id")])
    assert count.counted == {"on_call_lead": first}
    assert len(count.refused) == 1 and "already answered" in count.refused[0][1]


def test_a_deny_decides_and_a_vote_of_another_round_does_not_count() -> None:
    assert count_votes(a_round(), [a_vote("iam_duty_manager", IVY, "deny")]).outcome == "denied"
    stale = count_votes(a_round(), [a_vote("on_call_lead", LEE, round_no=1)])
    assert stale.outcome == "pending" and "round 1" in stale.refused[0][1]


def test_votes_carried_from_an_earlier_round_count_for_the_outcome_and_the_two_people_rule() -> None:
    reopened = a_round(round=3, carried=(a_vote("on_call_lead", LEE),))
    assert count_votes(reopened, [a_vote("iam_duty_manager", LEE, round_no=3)]).outcome == "pending"
    assert count_votes(reopened, [a_vote("iam_duty_manager", IVY, round_no=3)]).outcome == "approved"
    assert ApprovalRound.from_json(reopened.to_json()) == reopened


def test_an_open_card_has_execute_buttons_naming_request_round_nonce_and_stage() -> None:
    card = round_card(a_round(), LEAD, [])
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    actions = card["actions"]
    assert [(a["type"], a["verb"]) for a in actions] == [
        ("Action.Execute", "approve"),
        ("Action.Execute", "deny"),
    ]
    assert actions[0]["data"] == {"requestId": "req-1", "round": 2, "nonce": "n-2", "stage": "on_call_lead"}
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Role"] == "Global Administrator (high tier)" and facts["Due"] == "2026-11-27 12:15:00 UTC"


def test_a_decided_card_shows_who_decided_when_and_has_no_buttons() -> None:
    card = round_card(
        a_round(), LEAD, [a_vote("on_call_lead", LEE), a_vote("iam_duty_manager", IVY)], "approved"
    )
    texts = [block.get("text", "") for block in card["body"]]
    assert "Approved by lee-id@contoso.test (On-call lead) at 2026-11-27 12:00:00 UTC" in texts
    assert "actions" not in card
    waiting = round_card(a_round(), IAM, [a_vote("on_call_lead", LEE)])
    assert "Waiting for: IAM duty manager" in [b.get("text") for b in waiting["body"]]
    assert [a["verb"] for a in waiting["actions"]] == ["approve", "deny"]
