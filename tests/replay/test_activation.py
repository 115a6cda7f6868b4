"""Activation, proof and revocation replayed step by step (time stands still; each timer fires when the test
fires it): when access counts as effective, how often Graph is asked, when progress and escalation go out,
and how throttling, "already assigned" and PIM's minimum active time are handled."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import azure.durable_functions as df  # type: ignore[import-untyped,unused-ignore]  # mypy quirk here

from activities import access as activities
from activities import access_request as request_activities
from activities import approval as approval_activities
from local.devhost.replay import StepReplay
from orchestrators import access, approval
from orchestrators.flow import RequestFlow
from shared.approvals import Verb, Vote, plan_approval, vote_event
from shared.models import AccessRequest, LinkedIncident, Person
from shared.policy import load_policy
from shared.settings import DEFAULT_POLICY_PATH

T = TypeVar("T")
EXCHANGE = "29232cdf-9323-42fd-ade2-1d097af3e4de"
ALEX = "11111111-0000-4000-8000-000000000001"
REQUEST = AccessRequest(
    system="servicenow",
    event="created",
    ticket="INC0012345",
    ticket_id="a" * 32,
    priority="P1",
    itsm_priority="1",
    state="2",
    short_description="Mail flow down",
    opener=Person("sam", "sam@contoso.test"),
    assignee=Person("alex", "alex@contoso.test"),
    assignment_group="Messaging",
    incident=LinkedIncident("INC0012345", "2", True, True),
    access_type="privileged",
    role="Exchange Administrator",
    duration=timedelta(hours=1),
    justification="restore mail flow",
    delivery_id="d-1",
)
PLAN = {
    "role": "Exchange Administrator",
    "templateId": EXCHANGE,
    "probes": ["pim_instance", "unified_assignment", "directory_role_member"],
    "proofDeadline": 600,
    "revokeSessions": True,
    "progress": 120,
    "firstProbe": 5,
    "maxProbe": 60,
    "slowProbe": 300,
    "mismatch": 300,
    "minimumActive": 300,
    "iamConversationId": "19:iam",
}
RESPONDER = {"userId": ALEX, "upn": "alex@contoso.test"}

app = df.DFApp()
app.register_functions(access.bp)
app.register_functions(activities.bp)
app.register_functions(request_activities.bp)
app.register_functions(approval.bp)
app.register_functions(approval_activities.bp)
POLICY = load_policy(DEFAULT_POLICY_PATH)


def stores(visible_after_polls: dict[str, int]) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """Probe answers: each store shows the assignment from its given poll on (a propagation delay)."""
    polls = {"n": 0}

    def run(payload: dict[str, Any]) -> list[dict[str, Any]]:
        polls["n"] += 1
        return [
            {"probe": p, "passed": polls["n"] >= visible_after_polls.get(p, 1), "graph": None, "reason": ""}
            for p in payload["probes"]
        ]

    return run


def script(**overrides: Any) -> dict[str, Any]:
    chain: dict[str, Any] = {
        activities.RUN_PROBES: stores({}),
        activities.NOTIFY: lambda payload: {"conversationId": "a:1", "activityId": "1"},
        request_activities.RECORD_AUDIT: lambda payload: {"seq": payload["seq"], "hash": "h"},
        request_activities.UPDATE_TICKET: lambda payload: {"call": "ok"},
    }
    chain.update(overrides)
    return chain


def proof_input(submitted: datetime | None = None, **plan: Any) -> dict[str, Any]:
    return {
        "requestId": "req-1",
        "request": REQUEST.to_dict(),
        "seq": 20,
        "checks": [],
        "responder": RESPONDER,
        "plan": {**PLAN, **plan},
        "submittedAt": (submitted or datetime.now(UTC)).isoformat(),
    }


def drive(
    orchestrator: str,
    input_: Any,
    activities_script: dict[str, Any],
    steps: Callable[[StepReplay], Coroutine[Any, Any, T]],
) -> tuple[StepReplay, T]:
    async def go() -> tuple[StepReplay, T]:
        run = await StepReplay.start(app, orchestrator, input_, activities_script)
        try:
            return run, await steps(run)
        finally:
            await run.stop()

    return asyncio.run(go())


async def to_end(run: StepReplay) -> Any:
    await run.run_to_end()
    return await run.output()


def waits(run: StepReplay, submitted: datetime) -> list[float]:
    """Seconds after submission of each probe round (from the poll rows)."""
    return [
        p["entry"]["detail"]["sinceSubmission"]
        for p in run.inputs(request_activities.RECORD_AUDIT)
        if p["entry"]["kind"] == "proof.poll"
    ]


def kinds(run: StepReplay) -> list[str]:
    return [p["entry"]["kind"] for p in run.inputs(request_activities.RECORD_AUDIT)]


def test_access_is_effective_at_the_first_round_every_required_store_shows_it() -> None:
    submitted = datetime.now(UTC)
    probes = stores({"pim_instance": 1, "unified_assignment": 2, "directory_role_member": 4})
    run, output = drive(
        access.PROOF_ORCHESTRATOR, proof_input(submitted), script(**{activities.RUN_PROBES: probes}), to_end
    )
    assert output["outcome"] == "effective" and output["polls"] == 4
    assert output["lowerBound"] is not None  # the previous (failing) round
    assert kinds(run).count("proof.poll") == 4 and kinds(run)[-1] == "proof.effective"
    assert output["seq"] == 20 + len(kinds(run))


def test_probe_rounds_back_off_to_the_cap_so_calls_grow_slowly_with_the_delay() -> None:
    submitted = datetime.now(UTC)
    never = stores({"directory_role_member": 10**6})
    run, output = drive(
        access.PROOF_ORCHESTRATOR, proof_input(submitted), script(**{activities.RUN_PROBES: never}), to_end
    )
    assert output["outcome"] == "deadline" and output["failing"] == ["directory_role_member"]
    times = waits(run, submitted)
    gaps = [round(b - a) for a, b in itertools.pairwise(times)]
    assert gaps[:4] == [5, 10, 20, 40] and max(gaps) == 60  # doubling from 5 s, capped at 60 s
    # 10 minutes of never-effective access: 5+10+20+40 s, then one round a minute: 14 rounds, not 120.
    assert len(times) == 14


def test_progress_goes_out_once_per_interval_while_not_effective_and_never_after() -> None:
    submitted = datetime.now(UTC)
    late = stores({"unified_assignment": 9})  # effective at the 9th round (about 5 minutes in)
    run, output = drive(
        access.PROOF_ORCHESTRATOR, proof_input(submitted), script(**{activities.RUN_PROBES: late}), to_end
    )
    assert output["outcome"] == "effective"
    progress = [p for p in run.inputs(activities.NOTIFY) if p.get("userId")]
    seconds = float(output["secondsAfterSubmission"])
    assert len(progress) == int(seconds // 120)  # one per 2 minutes before it became effective
    assert kinds(run).count("proof.progress") == len(progress)


def test_a_store_that_keeps_disagreeing_with_pim_is_routed_to_iam_once() -> None:
    submitted = datetime.now(UTC)
    lagging = stores({"directory_role_member": 12})
    run, output = drive(
        access.PROOF_ORCHESTRATOR,
        proof_input(submitted, mismatch=120),
        script(**{activities.RUN_PROBES: lagging}),
        to_end,
    )
    assert output["outcome"] == "effective"
    to_iam = [p for p in run.inputs(activities.NOTIFY) if p.get("conversationId") == "19:iam"]
    assert len(to_iam) == 1 and "directory_role_member" in to_iam[0]["text"]
    assert kinds(run).count("proof.store_mismatch") == 1


def parent_script(**overrides: Any) -> dict[str, Any]:
    removed: list[bool] = []

    def probes(payload: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"probe": p, "passed": not removed, "graph": None} for p in payload["probes"]]

    def remove(payload: dict[str, Any]) -> dict[str, Any]:
        removed.append(True)
        return {"verdict": "done", "requestId": "pim-2", "graph": None}

    return script(
        **{
            activities.PLAN_ACCESS: lambda payload: PLAN,
            activities.ACTIVATE: lambda payload: {
                "verdict": "done",
                "requestId": "pim-1",
                "status": "Provisioned",
            },
            activities.RUN_PROBES: probes,
            activities.RECORD_GRANT: lambda payload: {"grant_id": "req-1:pim"},
            activities.SET_GRANT_STATE: lambda payload: payload,
            activities.REMOVE: remove,
            activities.REVOKE_SESSIONS: lambda payload: {"revoked": True, "graph": None},
            **overrides,
        }
    )


# The second half of the request's flow on its own, as the parent runs it after approval.
_after = df.Blueprint()


@_after.orchestration_trigger(context_name="context", orchestration="after_approval")
def after_approval(context: df.DurableOrchestrationContext) -> Any:
    flow = RequestFlow(context)
    resolved = context.wait_for_external_event(access.RESOLUTION_EVENT)
    return (yield from access.activate_to_revoke(flow, RESPONDER, resolved))


app.register_functions(_after)


def after_input() -> dict[str, Any]:
    return {"requestId": "req-1", "request": REQUEST.to_dict(), "seq": 0}


async def resolved_then_end(run: StepReplay) -> Any:
    await run.raise_event(access.RESOLUTION_EVENT, {"at": "now"})
    return await to_end(run)


def test_a_throttled_activation_waits_retry_after_and_activates_once() -> None:
    answers = iter(
        [
            {"verdict": "throttled", "retryAfter": 17, "code": "TooManyRequests", "graph": None},
            {"verdict": "done", "requestId": "pim-1", "status": "Provisioned"},
        ]
    )
    run, output = drive(
        "after_approval",
        after_input(),
        parent_script(**{activities.ACTIVATE: lambda payload: next(answers)}),
        resolved_then_end,
    )
    # The resolution came while the activation waited out Retry-After: once accepted, the access is removed
    # at once, without a proof.
    assert output["state"] == "revoked" and output["proven"] is False
    assert output["reason"] == "the incident was resolved"
    assert "proof.poll" not in kinds(run) and len(run.inputs(activities.REMOVE)) == 1
    assert len(run.inputs(activities.ACTIVATE)) == 2
    outcomes = [
        p["entry"]["outcome"]
        for p in run.inputs(request_activities.RECORD_AUDIT)
        if p["entry"]["kind"] == "activation.submit"
    ]
    assert outcomes == ["throttled", "accepted"]


def test_a_refused_activation_is_escalated_and_nothing_is_granted() -> None:
    refused = {
        "verdict": "policy",
        "code": "RoleAssignmentRequestPolicyValidationFailed",
        "message": 'The following policy rules failed: ["ExpirationRule"]',
    }
    run, output = drive(
        "after_approval",
        after_input(),
        parent_script(**{activities.ACTIVATE: lambda payload: refused}),
        to_end,
    )
    assert output["state"] == "escalated"
    assert len(run.inputs(activities.ACTIVATE)) == 1  # not retried: a policy rule will not change
    assert run.inputs(activities.RECORD_GRANT) == [] and run.inputs(activities.REMOVE) == []
    assert [p["conversationId"] for p in run.inputs(activities.NOTIFY)] == ["19:iam"]


def test_a_removal_within_pims_minimum_active_time_is_scheduled_then_done() -> None:
    answers = iter(
        [{"verdict": "too_soon", "code": "ActiveDurationTooShort"}, {"verdict": "done", "requestId": "pim-2"}]
    )
    removed: list[bool] = []

    def remove(payload: dict[str, Any]) -> dict[str, Any]:
        answer = next(answers)
        if answer["verdict"] == "done":
            removed.append(True)
        return answer

    def probes(payload: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"probe": p, "passed": not removed, "graph": None} for p in payload["probes"]]

    run, output = drive(
        "after_approval",
        after_input(),
        parent_script(**{activities.REMOVE: remove, activities.RUN_PROBES: probes}),
        resolved_then_end,
    )
    assert output["state"] == "revoked"
    states = [p["state"] for p in run.inputs(activities.SET_GRANT_STATE)]
    assert states == ["removal_scheduled", "removed"]
    assert len(run.inputs(activities.REVOKE_SESSIONS)) == 1  # the role's policy revokes sessions


def test_without_a_resolution_the_access_ends_at_the_approved_duration() -> None:
    run, output = drive("after_approval", after_input(), parent_script(), to_end)
    assert output["state"] == "revoked" and output["reason"] == "the approved duration ended"
    assert "hold.resolved" not in kinds(run)


# --- escalation and break-glass -----------------------------------------------------------------------------

IVY, SEC = "11111111-0000-4000-8000-000000000004", "11111111-0000-4000-8000-000000000006"


def break_glass_script(stored: dict[tuple[int, str], dict[str, Any]]) -> dict[str, Any]:
    """PIM never makes the role effective; a direct (break-glass) assignment does, at once."""
    direct: list[str] = []

    def probes(payload: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"probe": p, "passed": bool(direct), "graph": None, "reason": ""} for p in payload["probes"]]

    def assign_direct(payload: dict[str, Any]) -> dict[str, Any]:
        direct.append("ra-1")
        return {"verdict": "done", "requestId": "ra-1", "graph": None}

    def remove_direct(payload: dict[str, Any]) -> dict[str, Any]:
        direct.remove(payload["assignmentId"])
        return {"verdict": "done", "requestId": "", "graph": None}

    def planned(payload: dict[str, Any]) -> dict[str, Any]:
        return {"plan": plan_approval(POLICY.role("Exchange Administrator"), POLICY, False).to_json(),
                "openerId": "", "openerNames": ["sam@contoso.test"], "summary": {"ticket": "INC0012345"},
                "dueSeconds": 900, "reminderSeconds": 450, "reviewSeconds": 60, "graph": None,
                "breakGlass": [{"name": "iam_duty_manager", "display_name": "IAM duty manager",
                                "group_id": "g-iam", "conversation_id": "19:iam"},
                               {"name": "security_lead", "display_name": "Security lead",
                                "group_id": "g-sec", "conversation_id": "19:sec"}]}  # fmt: skip

    return parent_script(**{
        activities.RUN_PROBES: probes, activities.ASSIGN_DIRECT: assign_direct,
        activities.REMOVE_DIRECT: remove_direct,
        activities.RECORD_GRANT: lambda p: {"grant_id": f"{p['requestId']}:{p['path']}"},
        approval_activities.PLAN_APPROVAL: planned,
        approval_activities.OPEN_ROUND: lambda payload: payload,
        approval_activities.POST_CARD: lambda p: {"conversationId": "c", "activityId": "a", "new": True},
        approval_activities.UPDATE_CARDS: lambda payload: {"updated": []},
        approval_activities.REMIND_STAGE: lambda payload: {"sent": True},
        approval_activities.CLOSE_ROUND: lambda payload: payload,
        approval_activities.LOAD_VOTE: lambda p: stored.get((p["round"], p["stage"])),
    })  # fmt: skip


def test_after_the_deadline_iam_starts_break_glass_two_people_approve_and_both_grants_are_removed() -> None:
    stored: dict[tuple[int, str], dict[str, Any]] = {}

    async def cast(run: StepReplay, round_no: int, stage: str, who: str, verb: Verb, instance: str) -> None:
        vote = Vote(
            "req-1", round_no, stage, who, f"{who[-4:]}@contoso.test", "Someone", verb, datetime.now(UTC)
        )
        stored[(round_no, stage)] = vote.to_json()
        announcement = {"voteId": vote.vote_id, "round": round_no, "stage": stage}
        await run.raise_event(vote_event(round_no, stage), announcement, instance)

    async def steps(run: StepReplay) -> Any:
        while not any(
            p["round"]["purpose"] == "escalation" for p in run.inputs(approval_activities.POST_CARD)
        ):
            await run.fire_next()  # the proof's rounds, up to its deadline
        await cast(run, 1, "iam_duty_manager", IVY, "approve", run.instance_id)  # "Start break-glass"
        breakglass = approval.break_glass_instance_id("req-1")
        await cast(run, 2, "iam_duty_manager", IVY, "approve", breakglass)
        assert run.inputs(activities.ASSIGN_DIRECT) == []  # one approval is not enough
        await cast(run, 2, "security_lead", SEC, "approve", breakglass)
        return await resolved_then_end(run)

    run, output = drive("after_approval", after_input(), break_glass_script(stored), steps)
    assert output["state"] == "revoked" and output["proven"] is False
    purposes = [p["round"]["purpose"] for p in run.inputs(approval_activities.POST_CARD)]
    assert purposes == ["escalation", "break_glass", "break_glass"]
    assert len(run.inputs(activities.ASSIGN_DIRECT)) == 1
    grants = [p["path"] for p in run.inputs(activities.RECORD_GRANT)]
    assert grants == ["pim", "break_glass"]
    assert [p["assignmentId"] for p in run.inputs(activities.REMOVE_DIRECT)] == ["ra-1"]
    assert {(p["grantId"], p["state"]) for p in run.inputs(activities.SET_GRANT_STATE)} >= {
        ("req-1:break_glass", "removed"), ("req-1:pim", "removed")}  # fmt: skip
    found = kinds(run)
    for kind in (
        "escalation.answer",
        "breakglass.planned",
        "breakglass.decision",
        "breakglass.assign",
        "breakglass.assigned",
        "proof.effective",
        "revocation.remove_direct",
        "revocation.confirmed",
    ):
        assert kind in found, kind  # fmt: skip
    assert found.index("breakglass.assigned") < found.index("proof.effective")


def test_a_responder_cannot_start_break_glass_for_themselves_and_not_needed_closes_the_card() -> None:
    stored: dict[tuple[int, str], dict[str, Any]] = {}

    async def steps(run: StepReplay) -> Any:
        while not any(
            p["round"]["purpose"] == "escalation" for p in run.inputs(approval_activities.POST_CARD)
        ):
            await run.fire_next()
        # An event announcing the responder's own "Start break-glass" (the bot refuses it; the request too).
        vote = Vote(
            "req-1", 1, "iam_duty_manager", ALEX, "alex@contoso.test", "Alex", "approve", datetime.now(UTC)
        )
        stored[(1, "iam_duty_manager")] = vote.to_json()
        await run.raise_event("vote_r1_iam_duty_manager", {"voteId": vote.vote_id})
        # The card takes clicks again in round 2; IAM says it is not needed.
        vote = Vote("req-1", 2, "iam_duty_manager", IVY, "ivy@contoso.test", "Ivy", "deny", datetime.now(UTC))
        stored[(2, "iam_duty_manager")] = vote.to_json()
        await run.raise_event("vote_r2_iam_duty_manager", {"voteId": vote.vote_id})
        return await resolved_then_end(run)

    run, output = drive("after_approval", after_input(), break_glass_script(stored), steps)
    assert output["state"] == "revoked"
    answers = [p["entry"]["outcome"] for p in run.inputs(request_activities.RECORD_AUDIT)
               if p["entry"]["kind"] == "escalation.answer"]  # fmt: skip
    assert answers == ["refused", "declined"]
    assert run.inputs(activities.ASSIGN_DIRECT) == [] and run.inputs(activities.REMOVE_DIRECT) == []


def test_pim_unreachable_after_the_retries_escalates_with_the_break_glass_card_and_still_cleans_up() -> None:
    stored: dict[tuple[int, str], dict[str, Any]] = {}
    down = {"verdict": "unavailable", "code": "CircuitOpen", "retryAfter": 30, "graph": None}

    def remove(payload: dict[str, Any]) -> dict[str, Any]:
        return {"verdict": "absent", "code": "RoleAssignmentDoesNotExist", "graph": None}

    run, output = drive(
        "after_approval",
        after_input(),
        {**break_glass_script(stored), activities.ACTIVATE: lambda payload: down, activities.REMOVE: remove},
        resolved_then_end,
    )
    assert output["state"] == "revoked" and output["proven"] is False
    assert len(run.inputs(activities.ACTIVATE)) == 6  # bounded: the workflow's attempts, then escalation
    assert [p["path"] for p in run.inputs(activities.RECORD_GRANT)] == ["pim"]  # it may have taken effect
    assert [p["round"]["purpose"] for p in run.inputs(approval_activities.POST_CARD)] == ["escalation"]
    to_iam = [p["text"] for p in run.inputs(activities.NOTIFY) if p.get("conversationId") == "19:iam"]
    assert len(to_iam) == 1 and "CircuitOpen" in to_iam[0]
    assert len(run.inputs(activities.REMOVE)) == 1  # removed at the end whatever happened ("absent" is fine)
