"""The approval sub-orchestration replayed step by step through the SDK's real replay handle: time stands
still, events and timers arrive in the order each test chooses. Races between a click and the due time,
duplicate deliveries and refused votes are decided here, deterministically (design.md §6.2)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import azure.durable_functions as df
import pytest

from activities import access_request as request_activities
from activities import approval as activities
from local.devhost.replay import StepReplay
from orchestrators import approval
from shared.approvals import Vote, plan_approval, vote_event
from shared.models import AccessRequest, LinkedIncident, Person
from shared.policy import load_policy
from shared.settings import DEFAULT_POLICY_PATH

T = TypeVar("T")
POLICY = load_policy(DEFAULT_POLICY_PATH)
REQUEST_ID = "servicenow-INC0012345-62e90394-g1"
ALEX = "11111111-0000-4000-8000-000000000001"  # the responder
SAM = "11111111-0000-4000-8000-000000000002"  # the opener
LEE = "22222222-0000-4000-8000-000000000001"  # an on-call lead
IVY = "22222222-0000-4000-8000-000000000002"  # an IAM duty manager
REQUEST = AccessRequest(
    system="servicenow", event="created", ticket="INC0012345", ticket_id="a" * 32, priority="P1",
    itsm_priority="1", state="2", short_description="Tenant lockout",
    opener=Person("sam", "sam@contoso.test"), assignee=Person("alex", "alex@contoso.test"),
    assignment_group="Identity", incident=LinkedIncident("INC0012345", "2", True, False),
    access_type="privileged", role="Global Administrator", duration=timedelta(hours=1),
    justification="restore admin access", delivery_id="d-1",
)  # fmt: skip

app = df.DFApp()
app.register_functions(approval.bp)
app.register_functions(activities.bp)
app.register_functions(request_activities.bp)


def start_input(major_incident: bool = False) -> dict[str, Any]:
    return {"requestId": REQUEST_ID, "request": REQUEST.to_dict(), "checks": [], "seq": 10,
            "responder": {"userId": ALEX, "upn": "alex@contoso.test"}, "majorIncident": major_incident,
            "parentInstanceId": "parent-1"}  # fmt: skip


def script(
    role: str = "Global Administrator", confirm: bool | None = None, **overrides: Any
) -> dict[str, Any]:
    def plan(payload: dict[str, Any]) -> dict[str, Any]:
        chosen = plan_approval(POLICY.role(role), POLICY, payload["majorIncident"])
        if confirm is not None:
            chosen = type(chosen)(chosen.path, confirm, chosen.stages, chosen.review, chosen.reason)
        return {"plan": chosen.to_json(), "openerId": SAM, "openerNames": ["sam@contoso.test", "sam"],
                "summary": {"ticket": "INC0012345"}, "dueSeconds": 900, "reminderSeconds": 450,
                "reviewSeconds": 86400, "graph": None}  # fmt: skip

    STORED.clear()
    chain: dict[str, Any] = {
        activities.PLAN_APPROVAL: plan,
        activities.LOAD_VOTE: lambda p: STORED.get((p["round"], p["stage"])),
        activities.OPEN_ROUND: lambda payload: payload,
        activities.POST_CARD: lambda p: {"conversationId": f"c-{p['stage']}", "activityId": f"a-{p['stage']}",
                                         "new": p["round"]["round"] <= 2},
        activities.UPDATE_CARDS: lambda payload: {"updated": []},
        activities.REMIND_STAGE: lambda payload: {"sent": True},
        activities.CLOSE_ROUND: lambda payload: payload,
        request_activities.RECORD_AUDIT: lambda payload: {"seq": payload["seq"], "hash": "h"},
        request_activities.UPDATE_TICKET: lambda payload: {"call": "ok"},
    }  # fmt: skip
    chain.update(overrides)
    return chain


STORED: dict[tuple[int, str], dict[str, Any]] = {}  # the Approvals table's vote rows, as the bot wrote them


def vote(
    round_no: int, stage: str, approver: str, verb: str = "approve", at: datetime | None = None
) -> dict[str, Any]:
    return Vote(REQUEST_ID, round_no, stage, approver, f"{approver[:4]}@contoso.test", "Someone", verb,  # type: ignore[arg-type]
                at or datetime.now(UTC)).to_json()  # fmt: skip


async def cast(run: StepReplay, round_no: int, stage: str, approver: str, verb: str = "approve",
               settle: bool = True, at: datetime | None = None) -> None:  # fmt: skip
    """What the bot does for an accepted click: the stage's vote row, then the event announcing it."""
    stored = STORED.setdefault((round_no, stage), vote(round_no, stage, approver, verb, at))
    announcement = {"voteId": stored["voteId"], "round": round_no, "stage": stage}
    await run.raise_event(vote_event(round_no, stage), announcement, settle=settle)


def drive(steps: Callable[[StepReplay], Coroutine[Any, Any, T]], activities_script: dict[str, Any],
          major_incident: bool = False) -> tuple[StepReplay, T]:  # fmt: skip
    async def go() -> tuple[StepReplay, T]:
        run = await StepReplay.start(app, approval.APPROVAL_ORCHESTRATOR, start_input(major_incident),
                                     activities_script)  # fmt: skip
        try:
            return run, await steps(run)
        finally:
            await run.stop()

    return asyncio.run(go())


def kinds(run: StepReplay) -> list[tuple[str, str]]:
    return [(p["entry"]["kind"], p["entry"]["outcome"]) for p in run.inputs(request_activities.RECORD_AUDIT)]


async def confirmed(run: StepReplay) -> None:
    """The responder confirms (round 1); the approvers' round is then round 2."""
    await cast(run, 1, "responder", ALEX, "confirm")


def test_two_person_approval_needs_one_approval_from_each_group_by_two_people() -> None:
    async def steps(run: StepReplay) -> Any:
        await confirmed(run)
        await cast(run, 2, "on_call_lead", LEE)
        assert (await run.instance()).status == "Running"  # one approval is not enough
        await cast(run, 2, "iam_duty_manager", IVY)
        return await run.output()

    run, output = drive(steps, script())
    assert output["outcome"] == "approved"
    assert {(a["stage"], a["id"]) for a in output["approvals"]} == {
        ("on_call_lead", LEE),
        ("iam_duty_manager", IVY),
    }
    assert run.timers() == []  # every timer was cancelled when an event won
    assert [(c["purpose"], [s["name"] for s in c["stages"]]) for c in run.inputs(activities.OPEN_ROUND)] == [
        ("confirm", ["responder"]), ("approve", ["on_call_lead", "iam_duty_manager"])]  # fmt: skip
    assert run.inputs(activities.CLOSE_ROUND)[-1]["outcome"] == "approved"
    assert run.inputs(activities.UPDATE_CARDS)[-1]["status"] == "approved"
    seqs = [p["seq"] for p in run.inputs(request_activities.RECORD_AUDIT)]
    assert seqs == list(range(10, 10 + len(seqs))) and output["seq"] == 10 + len(seqs)


def test_one_person_in_both_groups_counts_once_and_the_other_stage_gets_a_new_round() -> None:
    async def steps(run: StepReplay) -> Any:
        await confirmed(run)
        # Both of Lee's clicks reach the orchestration (a race the bot's own check could not see).
        await cast(run, 2, "on_call_lead", LEE)
        await cast(run, 2, "iam_duty_manager", LEE)
        assert (await run.instance()).status == "Running"
        await cast(run, 3, "iam_duty_manager", IVY)
        return await run.output()

    run, output = drive(steps, script())
    assert output["outcome"] == "approved"
    assert {a["id"] for a in output["approvals"]} == {LEE, IVY}
    assert ("approval.vote", "refused") in kinds(run)
    reopened = run.inputs(activities.OPEN_ROUND)[-1]
    assert reopened["round"] == 3 and [v["stage"] for v in reopened["carried"]] == ["on_call_lead"]
    assert reopened["due_at"] == run.inputs(activities.OPEN_ROUND)[1]["due_at"]  # the same due time
    assert ("approval.card_updated", "recorded") in kinds(run)  # the same card, a new nonce


@pytest.mark.parametrize(("approver", "reason"), [(ALEX, "responder"), (SAM, "opener")])
def test_a_vote_by_the_responder_or_the_opener_is_refused_by_the_orchestration_too(
    approver: str, reason: str
) -> None:
    async def steps(run: StepReplay) -> Any:
        await cast(run, 1, "on_call_lead", approver)
        await cast(run, 2, "on_call_lead", LEE)
        return await run.output()

    run, output = drive(steps, script(role="Exchange Administrator"))
    assert output["outcome"] == "approved" and output["approvals"][0]["id"] == LEE
    refused = [p["entry"] for p in run.inputs(request_activities.RECORD_AUDIT)
               if p["entry"]["kind"] == "approval.vote" and p["entry"]["outcome"] == "refused"]  # fmt: skip
    assert len(refused) == 1 and reason in refused[0]["detail"]["reason"]


def test_a_deny_ends_the_approval_at_once() -> None:
    async def steps(run: StepReplay) -> Any:
        await confirmed(run)
        await cast(run, 2, "iam_duty_manager", IVY, "deny")
        return await run.output()

    run, output = drive(steps, script())
    assert output["outcome"] == "denied" and "denied by" in output["reason"]
    assert run.timers() == []
    assert run.inputs(activities.UPDATE_CARDS)[-1]["status"] == "denied"


def test_no_answer_expires_after_exactly_one_reminder_to_the_groups_that_did_not_answer() -> None:
    async def steps(run: StepReplay) -> Any:
        await confirmed(run)
        await cast(run, 2, "on_call_lead", LEE)
        reminder_at = await run.fire_next()
        due_at = await run.fire_next()
        return reminder_at, due_at, await run.output()

    run, (reminder_at, due_at, output) = drive(steps, script())
    assert output["outcome"] == "expired" and "IAM duty manager" in output["reason"]
    assert [p["stage"] for p in run.inputs(activities.REMIND_STAGE)] == ["iam_duty_manager"]
    delta = datetime.fromisoformat(due_at.replace("Z", "+00:00")) - datetime.fromisoformat(
        reminder_at.replace("Z", "+00:00"))  # fmt: skip
    opened = datetime.fromisoformat(run.inputs(activities.OPEN_ROUND)[1]["opened_at"])
    due = datetime.fromisoformat(run.inputs(activities.OPEN_ROUND)[1]["due_at"])
    assert abs(delta - (due - opened) / 2) < timedelta(milliseconds=2)  # at half of the approvers' time
    assert run.inputs(activities.CLOSE_ROUND)[-1]["outcome"] == "expired"
    assert run.inputs(activities.UPDATE_CARDS)[-1]["status"] == "expired"


def test_a_click_processed_after_the_due_time_fired_does_not_count() -> None:
    async def steps(run: StepReplay) -> Any:
        await run.fire_next()  # the reminder
        # The due timer and a click arrive together; the timer is in the history first.
        await run.fire_next(settle=False)
        await cast(run, 1, "on_call_lead", LEE, settle=False)
        await run.settle()
        return await run.output()

    run, output = drive(steps, script(role="Exchange Administrator"))
    assert output["outcome"] == "expired" and output["approvals"] == []
    assert ("approval.vote", "counted") not in kinds(run)


def test_a_click_processed_before_the_due_time_fired_counts() -> None:
    async def steps(run: StepReplay) -> Any:
        await run.fire_next()  # the reminder
        pending = run.timers()
        await cast(run, 1, "on_call_lead", LEE, settle=False)
        await run.settle()
        return pending, await run.output()

    run, (pending, output) = drive(steps, script(role="Exchange Administrator"))
    assert len(pending) == 1  # the due timer was pending, and is cancelled by the click
    assert output["outcome"] == "approved" and run.timers() == []


def test_a_duplicate_event_for_the_same_click_is_counted_once() -> None:
    async def steps(run: StepReplay) -> Any:
        await confirmed(run)
        await cast(run, 2, "on_call_lead", LEE)
        await cast(run, 2, "on_call_lead", LEE)  # Teams retried the invoke; the bot raised the event again
        assert (await run.instance()).status == "Running"
        await cast(run, 2, "iam_duty_manager", IVY)
        return await run.output()

    run, output = drive(steps, script())
    assert output["outcome"] == "approved" and len(output["approvals"]) == 2
    assert [k for k in kinds(run) if k[0] == "approval.vote"] == [("approval.vote", "counted")] * 3


def test_an_event_buffered_before_the_wait_is_taken_when_the_wait_begins() -> None:
    async def steps(run: StepReplay) -> Any:
        # Both approvals arrive while the responder's confirmation is still awaited (cards not yet out).
        await cast(run, 2, "on_call_lead", LEE)
        await cast(run, 2, "iam_duty_manager", IVY)
        await confirmed(run)
        return await run.output()

    _run, output = drive(steps, script())
    assert output["outcome"] == "approved"


def test_the_responder_disowning_the_request_denies_it() -> None:
    async def steps(run: StepReplay) -> Any:
        await cast(run, 1, "responder", ALEX, "deny")
        return await run.output()

    run, output = drive(steps, script())
    assert output["outcome"] == "denied" and "not theirs" in output["reason"]
    assert len(run.inputs(activities.OPEN_ROUND)) == 1  # no approver was asked


def test_only_the_responder_can_confirm() -> None:
    async def steps(run: StepReplay) -> Any:
        await cast(run, 1, "responder", LEE, "confirm")
        await cast(run, 2, "responder", ALEX, "confirm")
        await cast(run, 3, "on_call_lead", LEE)
        return await run.output()

    run, output = drive(steps, script(role="Exchange Administrator", confirm=True))
    assert output["outcome"] == "approved"
    assert ("approval.vote", "refused") in kinds(run)
    assert [c["purpose"] for c in run.inputs(activities.OPEN_ROUND)] == ["confirm", "confirm", "approve"]


def test_outside_a_major_incident_a_standard_role_needs_one_on_call_lead() -> None:
    async def steps(run: StepReplay) -> Any:
        await cast(run, 1, "on_call_lead", LEE)
        return await run.output()

    run, output = drive(steps, script(role="Exchange Administrator"))
    assert output["outcome"] == "approved" and output["path"] == "single"
    assert [s["name"] for s in run.inputs(activities.OPEN_ROUND)[0]["stages"]] == ["on_call_lead"]


def test_during_a_major_incident_a_standard_role_is_approved_by_rule_with_a_review_card() -> None:
    async def steps(run: StepReplay) -> Any:
        return await run.output()

    run, output = drive(steps, script(role="Exchange Administrator"), major_incident=True)
    assert output["outcome"] == "approved" and output["path"] == "major_incident_rule"
    assert output["review"]["purpose"] == "review" and output["review"]["instance_id"] == "parent-1"
    assert [s["name"] for s in output["review"]["stages"]] == ["iam_duty_manager"]
    assert ("approval.rule", "approved") in kinds(run)
    assert run.timers() == []  # nothing waits here: the parent waits for the review


def test_an_event_without_a_stored_vote_or_with_a_late_vote_is_refused_and_the_stage_reopened() -> None:
    async def steps(run: StepReplay) -> Any:
        # An event nobody's click wrote (raised by hand through the management API): nothing is stored.
        await run.raise_event(
            vote_event(1, "on_call_lead"), {"voteId": "forged", "round": 1, "stage": "on_call_lead"}
        )
        await cast(
            run, 2, "on_call_lead", LEE, at=datetime(2099, 1, 1, tzinfo=UTC)
        )  # dated after the due time
        await cast(run, 3, "on_call_lead", LEE)
        return await run.output()

    run, output = drive(steps, script(role="Exchange Administrator"))
    assert output["outcome"] == "approved" and len(output["approvals"]) == 1
    reasons = [p["entry"]["detail"]["reason"] for p in run.inputs(request_activities.RECORD_AUDIT)
               if p["entry"]["kind"] == "approval.vote" and p["entry"]["outcome"] == "refused"]  # fmt: skip
    assert reasons == [
        "an event announced a vote that the store does not hold",
        "the vote is dated after the due time",
    ]
    assert [c["outcome"] for c in run.inputs(activities.CLOSE_ROUND)] == [
        "superseded",
        "superseded",
        "approved",
    ]


def test_a_reopened_round_carries_the_counted_answer_and_still_refuses_the_same_person() -> None:
    async def steps(run: StepReplay) -> Any:
        await confirmed(run)
        await cast(run, 2, "on_call_lead", LEE)
        await cast(run, 2, "iam_duty_manager", LEE)  # refused: round 3 for the IAM stage
        await cast(run, 3, "iam_duty_manager", LEE)  # the same person again: refused again, round 4
        await cast(run, 4, "iam_duty_manager", IVY)
        return await run.output()

    run, output = drive(steps, script())
    assert output["outcome"] == "approved" and {a["id"] for a in output["approvals"]} == {LEE, IVY}
    reopened = run.inputs(activities.OPEN_ROUND)[2]
    assert [v["approver_id"] for v in reopened["carried"]] == [LEE]
    assert [s["name"] for s in reopened["stages"]] == ["on_call_lead", "iam_duty_manager"]
    assert [p["stage"] for p in run.inputs(activities.POST_CARD)][-2:] == [
        "iam_duty_manager",
        "iam_duty_manager",
    ]


def test_refused_answers_cannot_reopen_the_round_forever() -> None:
    async def steps(run: StepReplay) -> Any:
        for round_no in range(1, 1 + 1 + approval.Rounds.MAX_REOPENINGS):
            await cast(run, round_no, "on_call_lead", ALEX)  # the responder, again and again
        return await run.output()

    run, output = drive(steps, script(role="Exchange Administrator"))
    assert output["outcome"] == "expired"
    assert len(run.inputs(activities.OPEN_ROUND)) == 1 + approval.Rounds.MAX_REOPENINGS


def test_the_approvers_reminder_comes_at_half_of_the_time_left_after_a_late_confirmation() -> None:
    async def steps(run: StepReplay) -> Any:
        await run.fire_next()  # the responder's reminder
        confirm_reminder = len(run.inputs(activities.REMIND_STAGE))
        await confirmed(run)
        await run.fire_next()  # the approvers' reminder (not skipped, not immediate)
        return confirm_reminder, await run.instance()

    run, (confirm_reminder, instance) = drive(steps, script())
    assert confirm_reminder == 1
    assert [p["stage"] for p in run.inputs(activities.REMIND_STAGE)] == [
        "responder", "on_call_lead", "iam_duty_manager"]  # fmt: skip
    assert instance.status == "Running"


def test_a_vote_that_arrives_while_another_is_being_counted_is_counted_too() -> None:
    # Lee's and Ivy's clicks 0.1 s apart: Ivy's event arrives while Lee's vote is still being loaded.
    held: dict[str, Any] = {}

    def load_vote(payload: dict[str, Any]) -> Any:
        stored = STORED.get((payload["round"], payload["stage"]))
        if payload["stage"] != "on_call_lead" or held["loading"].is_set():
            return stored
        held["loading"].set()

        async def later() -> Any:
            await held["gate"].wait()
            return stored

        return later()

    async def steps(run: StepReplay) -> Any:
        held["gate"], held["loading"] = asyncio.Event(), asyncio.Event()
        await confirmed(run)
        await cast(run, 2, "on_call_lead", LEE, settle=False)
        await held["loading"].wait()
        await cast(run, 2, "iam_duty_manager", IVY, settle=False)
        await asyncio.sleep(0.05)  # Ivy's event is applied while Lee's vote is loading
        held["gate"].set()
        await run.settle()
        return await run.output()

    _, output = drive(steps, {**script(), activities.LOAD_VOTE: load_vote})
    assert output is not None and output["outcome"] == "approved"
    assert {a["id"] for a in output["approvals"]} == {LEE, IVY}
