"""The demonstration that ``make demo`` runs against a live local stack (Azurite, the simulators, the devhost
running the unchanged ``function_app``).

First the Durable self-check, then the four scenarios of issue 5, each from a signed ServiceNow P1 to the
access removed again: (a) Exchange Administrator on a declared major incident, not effective in Exchange for
about 15 s; (b) a directory store that lags PIM beyond the mismatch threshold; (c) Global Administrator
through the two-person rule; (d) an activation PIM never provisions, escalated, then break-glass. Each prints
what it shows, a timeline read from the request's audit rows (Table Storage), what the ticket and Teams
show, and PASS/FAIL. At the end: every chain the demo touched is verified, the Graph simulator's stores are
checked for any assignment left, and scenario (a)'s Graph calls are counted.

The timings come from a short-timing copy of the policy (:func:`write_demo_policy`): the flow is the
production one, its clock is seconds instead of minutes.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from azure.data.tables import TableServiceClient

from local.devhost.history import EventType
from local.devhost.store import read_committed_history
from local.scenarios import (
    EXCHANGE_ADMINISTRATOR,
    GLOBAL_ADMINISTRATOR,
    assignments_in_effect,
    click_card,
    conversation_texts,
    personal_chat_texts,
    resolve_incident,
    seed_approver_world,
    seed_responder_world,
    send_servicenow,
    servicenow_payload,
    ticket_notes,
    unfinished_pim_requests,
)
from local.simulators.process import SimulatorProcess
from shared import telemetry
from shared.audit import AuditLedger, security_chain
from shared.policy import Policy, load_policy
from shared.settings import DEFAULT_POLICY_PATH

if TYPE_CHECKING:
    from local.stack import DevhostProcess

REPO_ROOT = Path(__file__).resolve().parents[1]

# The short-timing policy: (line in policy/policy.toml, what the demo uses instead). Every line must be
# found exactly once, so that a change to the committed policy cannot silently leave a 15-minute wait in.
DEMO_POLICY_LINES: tuple[tuple[str, str], ...] = (
    ('approval_due = "PT15M"', 'approval_due = "PT2M"'),
    ('approval_reminder = "PT7M30S"', 'approval_reminder = "PT1M"'),
    ('progress_interval = "PT2M"', 'progress_interval = "PT6S"'),
    ('probe_first_interval = "PT5S"', 'probe_first_interval = "PT1S"'),
    ('probe_max_interval = "PT1M"', 'probe_max_interval = "PT4S"'),
    ('slow_probe_interval = "PT5M"', 'slow_probe_interval = "PT5S"'),
    ('default_proof_deadline = "PT10M"', 'default_proof_deadline = "PT30S"'),
    ('store_mismatch_threshold = "PT5M"', 'store_mismatch_threshold = "PT6S"'),
    ('pim_minimum_active = "PT5M"', 'pim_minimum_active = "PT3S"'),
    ('proof_deadline = "PT15M"', 'proof_deadline = "PT30S"'),  # Exchange Administrator's own
)
# PIM's minimum active time in the Graph simulator: the policy's pim_minimum_active above.
PIM_MINIMUM_ACTIVE_SECONDS = 3
# The sweep would remove nothing here (every grant ends with its request), but a run in the middle of a
# scenario would add its reads to that scenario's Graph call counts: the demo keeps it quiet.
QUIET_SWEEP_SCHEDULE = "0 0 0 1 1 *"
ALL_STORES_AT_ONCE = {"pim": 0, "unified": 0, "directoryRole": 0, "exchange": 0}
FINAL_STATES = ("revoked", "removal_failed", "rejected", "denied", "expired", "cancelled", "failed")

_EVENT_NAMES = {
    EventType.EXECUTION_STARTED: "execution started",
    EventType.EXECUTION_COMPLETED: "execution completed",
    EventType.EXECUTION_TERMINATED: "execution terminated",
    EventType.TASK_SCHEDULED: "activity scheduled",
    EventType.TASK_COMPLETED: "activity completed",
    EventType.TASK_FAILED: "activity failed",
    EventType.SUB_ORCHESTRATION_CREATED: "sub-orchestration started",
    EventType.SUB_ORCHESTRATION_COMPLETED: "sub-orchestration completed",
    EventType.SUB_ORCHESTRATION_FAILED: "sub-orchestration failed",
    EventType.TIMER_CREATED: "timer created",
    EventType.TIMER_FIRED: "timer fired",
    EventType.EVENT_RAISED: "event raised",
}


class DemoSetupError(RuntimeError):
    """The demo cannot be set up as written (e.g. the committed policy no longer has a line it shortens)."""


def write_demo_policy(work: Path, source: Path = DEFAULT_POLICY_PATH) -> Path:
    """A copy of the policy with the demo's short timings, validated; returns its path."""
    text = source.read_text(encoding="utf-8")
    for old, new in DEMO_POLICY_LINES:
        found = text.count(old)
        if found != 1:
            raise DemoSetupError(f"{source}: expected the line {old!r} once, found it {found} times")
        text = text.replace(old, new)
    path = work / "policy.toml"
    path.write_text(text, encoding="utf-8")
    load_policy(path)  # a bad copy fails here, with the policy's own message, not in the devhost's log
    return path


def _hub() -> str:
    return str(json.loads((REPO_ROOT / "host.json").read_text())["extensions"]["durableTask"]["hubName"])


def _wait(client: httpx.Client, url: str, done: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(url).json()
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def history_timeline(connection: str, instance_id: str) -> list[str]:
    """Readable lines from the persisted history rows (what the engine stored, in order)."""
    lines = []
    scheduled: dict[int, str] = {}
    for event in read_committed_history(connection, _hub(), instance_id):
        kind = EventType(event["EventType"])
        label = _EVENT_NAMES.get(kind)
        if label is None:
            continue
        detail = event.get("Name") or ""
        if kind == EventType.TASK_SCHEDULED:
            scheduled[int(event["EventId"])] = detail
        if "TaskScheduledId" in event:
            detail = scheduled.get(int(event["TaskScheduledId"]), "")
        if "FireAt" in event:
            detail = f"timer {event.get('TimerId', event['EventId'])}, due {event['FireAt'][11:19]}"
        lines.append(f"  {event['Timestamp'][11:23]}  {label:<22} {detail}")
    return lines


def self_check(base_url: str, function_key: str, storage_connection: str) -> bool:
    print("== The Durable self-check: an HTTP start, an activity, a timer, an external event, completion")
    with httpx.Client(base_url=base_url, params={"code": function_key}, timeout=15.0) as client:
        print("1. POST /api/selfcheck: start it (activity, 2 s timer, acknowledgement)")
        started = client.post("/api/selfcheck", json={"timerSeconds": 2, "acknowledgeWithinSeconds": 60})
        started.raise_for_status()
        instance_id = started.json()["instanceId"]
        status_url = f"/api/selfcheck/{instance_id}"
        print(f"   instance {instance_id}")
        waiting = _wait(
            client,
            status_url,
            lambda b: (b.get("customStatus") or {}).get("stage") == "awaiting_acknowledgement",
        )
        print(f"2. custom status: {waiting.get('customStatus')}")
        print("3. POST /api/selfcheck/{id}/acknowledge: raise the external event")
        client.post(f"{status_url}/acknowledge").raise_for_status()
        final = _wait(client, status_url, lambda b: b.get("runtimeStatus") not in ("Running", "Pending"))
        outcome = (final.get("output") or {}).get("outcome")
        print(f"4. runtime status: {final['runtimeStatus']}, outcome: {outcome}")
    print("5. timeline from the persisted orchestration history (Table Storage):")
    print("\n".join(history_timeline(storage_connection, instance_id)))
    return bool(final.get("runtimeStatus") == "Completed" and outcome == "passed")


# ------------------------------------------------------------------ reading the audit rows


def _clock(iso: str) -> str:
    return iso[11:19] if len(iso) >= 19 else iso


def _failing(results: list[dict[str, Any]]) -> list[str]:
    return [r["probe"] for r in results if not r.get("passed")]


def _probe_summary(results: list[dict[str, Any]]) -> str:
    failing = _failing(results)
    if not failing:
        return f"all {len(results)} probes pass"
    return f"{', '.join(failing)} failing ({len(results) - len(failing)}/{len(results)} pass)"


def describe(step: dict[str, Any]) -> str:
    """One audit row as a service-desk lead would say it (``step``: a timeline entry of
    ``GET /api/requests/{id}``)."""
    kind, outcome, detail = step["step"], step["outcome"], step.get("detail") or {}
    results: list[dict[str, Any]] = detail.get("results") or []
    if kind == "intake.accepted":
        minutes = int(detail.get("duration") or 0) // 60
        return f"{detail.get('ticket')} {detail.get('priority')}: {step.get('role')} for {minutes} min"
    if kind == "request.state":
        reason = detail.get("reason") or ""
        return f"{detail.get('state')}" + (f": {reason}" if reason else "")
    if kind.startswith("approval.card"):
        return f"{detail.get('purpose')} card to {detail.get('stage')} (Teams)"
    if kind == "approval.vote":
        reason = f": {detail['reason']}" if detail.get("reason") else ""
        return f"{detail.get('verb')} for {detail.get('stage')}{reason}"
    if kind == "approval.review":
        return f"post-facto review: {detail.get('verb') or outcome}"
    if kind == "approval.confirmation":
        return "the responder says the request is theirs" if outcome == "approved" else outcome
    if kind == "approval.reminder":
        return f"one reminder to {detail.get('stage')}"
    if kind in ("approval.planned", "approval.rule"):
        return str(detail.get("reason") or detail.get("path"))
    if kind == "activation.submit":
        status = f" {detail['status']}" if detail.get("status") else ""
        code = f" {detail['code']}" if detail.get("code") else ""
        return f"PIM adminAssign: {detail.get('verdict')}{status}{code} (request {detail.get('requestId')})"
    if kind == "activation.provisioned":
        seconds = float(detail.get("secondsAfterSubmission") or 0)
        return (
            f"PIM reports Provisioned at {_clock(str(detail.get('provisionedAt') or ''))} ({seconds:.1f} s)"
        )
    if kind == "proof.poll":
        label = "slow poll" if detail.get("cadence") == "slow" else f"poll {detail.get('poll') or ''}".strip()
        return f"{label}: {_probe_summary(results)}"
    if kind == "proof.progress":
        return (
            f"Teams + ticket: {', '.join(detail.get('failing') or [])} still failing, "
            f"next update by {_clock(detail.get('nextUpdate') or '')}"
        )
    if kind == "proof.store_mismatch":
        return f"PIM shows it, {', '.join(_failing(results))} does not: routed to IAM with the evidence"
    if kind == "proof.effective":
        if detail.get("late"):
            return f"effective at {_clock(detail.get('effectiveAt') or '')} (after the deadline)"
        lower = detail.get("lowerBound")
        return (
            f"effective at {_clock(detail.get('effectiveAt') or '')}, "
            f"{float(detail.get('secondsAfterSubmission') or 0):.1f} s after submission"
            + (f" (still failing at {_clock(lower)})" if lower else "")
        )
    if kind in ("hold.resolved", "proof.stopped"):
        return "the incident was resolved (ServiceNow event)"
    if kind.startswith("revocation.remove"):
        what = "the break-glass assignment" if kind == "revocation.remove_direct" else "PIM adminRemove"
        verdict = " ".join(str(detail[k]) for k in ("verdict", "code") if detail.get(k))
        return f"{what}: {verdict or step['outcome']} ({detail.get('reason')})"
    if kind == "revocation.confirmed":
        return f"read back: gone from {', '.join(r['probe'] for r in results)}"
    if kind == "revocation.unconfirmed":
        return f"read back: still in {', '.join(r['probe'] for r in results if r.get('passed'))}"
    if kind == "revocation.sessions":
        return f"revokeSignInSessions: HTTP {(step.get('graph') or {}).get('status')}"
    if kind == "escalation.answer":
        return f"{detail.get('verb')!r} on the escalation card ('Start break-glass')"
    if kind == "breakglass.assign":
        verdict = " ".join(str(detail[k]) for k in ("verdict", "code") if detail.get(k))
        return f"direct unified RBAC assignment (POST roleAssignments): {verdict or outcome}"
    if kind == "breakglass.assigned":
        return (
            f"assignment {detail.get('assignmentId')}, expires {_clock(str(detail.get('expiresAt') or ''))}"
        )
    if kind == "breakglass.planned":
        stages = " and ".join(detail.get("stages") or [])
        return f"two-person approval by {stages}, due {_clock(detail.get('dueAt') or '')}"
    for key in ("reason", "note", "text", "message"):
        if detail.get(key):
            return str(detail[key])
    scalars = {k: v for k, v in detail.items() if isinstance(v, str | int | float | bool) and v != ""}
    return ", ".join(f"{k}={v}" for k, v in scalars.items())


def _epoch(iso: str) -> float:
    moment = datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def timeline_lines(steps: list[dict[str, Any]], origin: float, width: int = 150) -> list[str]:
    """``+12.3s  proof.progress  sent  (...)`` for each audit row, relative to ``origin`` (epoch seconds)."""
    lines = []
    for step in steps:
        actor = (step.get("actor") or {}).get("upn") or ""
        text = describe(step) + (f" [{actor}]" if actor else "")
        line = f"  {_epoch(step['time']) - origin:+7.1f}s  {step['step']:<24} {step['outcome']:<9} {text}"
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    return lines


# ------------------------------------------------------------------ the scenarios


@dataclass
class DemoRun:
    """What every scenario shares: the stack, the demo policy, and what the demo touched."""

    devhost: DevhostProcess
    sims: SimulatorProcess
    storage_connection: str
    policy: Policy
    secret: str
    client: httpx.Client
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    request_ids: list[str] = field(default_factory=list)
    responders: dict[str, str] = field(default_factory=dict)  # object id -> UPN
    graph_calls: dict[str, int] = field(default_factory=dict)  # scenario (a)'s, per endpoint


class Scenario:
    """One scenario on the live stack: deliveries in, clicks in Teams, audit rows out, checks at the end."""

    def __init__(self, run: DemoRun, letter: str, title: str, shows: str) -> None:
        self.run, self.sims, self.client = run, run.sims, run.client
        self.letter, self.title = letter, title
        self.checks: list[tuple[bool, str]] = []
        self.origin = time.time()
        print(f"\n== ({letter}) {title}")
        print(textwrap.fill(shows, width=110, initial_indent="   Shows: ", subsequent_indent=" " * 10))

    # -- narration and checks -------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"  {time.time() - self.origin:+7.1f}s  > {text}")

    def expect(self, ok: bool, what: str) -> bool:
        self.checks.append((bool(ok), what))
        return bool(ok)

    def finish(self) -> bool:
        print("   Checks:")
        for ok, what in self.checks:
            print(f"     [{'ok' if ok else 'FAIL'}] {what}")
        passed = bool(self.checks) and all(ok for ok, _ in self.checks)
        print(f"   ({self.letter}) {'PASS' if passed else 'FAIL'}")
        return passed

    # -- the world and the request --------------------------------------------------------------------

    def world(self, *, major_incident: bool) -> dict[str, Any]:
        responders = seed_responder_world(self.sims, self.run.policy, major_incident=major_incident)
        people = seed_approver_world(self.sims, self.run.policy, responders)
        self.run.responders[responders["alex"]["id"]] = responders["alex"]["userPrincipalName"]
        return {**responders, "people": people}

    def start(self, world: dict[str, Any], **changes: Any) -> str | None:
        self.origin = time.time()
        answer = send_servicenow(
            self.sims, self.run.devhost.url, self.run.secret, servicenow_payload(world, **changes)
        )
        request_id = answer["body"].get("requestId") if answer["status"] == 202 else None
        self.say(f"ServiceNow sends the signed P1 webhook: {answer['status']} {request_id or answer['body']}")
        if self.expect(request_id is not None, "the signed webhook started a request (202)"):
            self.run.request_ids.append(str(request_id))
        return str(request_id) if request_id else None

    def status(self, request_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/requests/{request_id}")
        if response.status_code == 404:  # not a row written yet
            return {"state": None, "timeline": []}
        body: dict[str, Any] = response.json()
        return body

    def wait(self, request_id: str, done: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = self.status(request_id)
            if done(body) or time.monotonic() > deadline:
                return body
            time.sleep(0.5)

    def wait_state(self, request_id: str, states: tuple[str, ...], timeout: float = 90.0) -> dict[str, Any]:
        return self.wait(request_id, lambda b: b.get("state") in (*states, *FINAL_STATES), timeout)

    def wait_step(self, request_id: str, step: str, timeout: float = 90.0) -> dict[str, Any] | None:
        """The first audit row of kind ``step`` once written (None after ``timeout`` or a final state)."""
        body = self.wait(request_id, lambda b: bool(rows(b, step)) or b.get("state") in FINAL_STATES, timeout)
        found = rows(body, step)
        return found[0] if found else None

    def card(self, request_id: str, stage: str, purpose: str, timeout: float = 60.0) -> dict[str, Any] | None:
        """Where the latest ``purpose`` card for ``stage`` was posted (from the request's audit rows)."""

        def posted(body: dict[str, Any]) -> list[dict[str, Any]]:
            return [
                s["detail"]
                for s in body.get("timeline", [])
                if s["step"] in ("approval.card_posted", "approval.card_updated")
                and s["detail"].get("stage") == stage
                and s["detail"].get("purpose") == purpose
            ]

        body = self.wait(request_id, lambda b: bool(posted(b)) or b.get("state") in FINAL_STATES, timeout)
        found = posted(body)
        return found[-1] if found else None

    def click(self, where: dict[str, Any], user: dict[str, Any], verb: str, label: str) -> int:
        answer = click_card(self.sims, self.run.devhost.url, where, user, verb)
        said = (
            "card updated" if answer["status"] == 200 else answer["body"].get("value", {}).get("message", "")
        )
        self.say(f"{user['userPrincipalName']} clicks {label!r}: {answer['status']} {said}")
        return int(answer["status"])

    def wait_counted(self, request_id: str, user: dict[str, Any], timeout: float = 30.0) -> bool:
        """Until ``user``'s vote is counted (an ``approval.vote`` row), so that the output shows each decision
        in the order it was made (clicks close together are counted too: tests/replay/test_approval.py)."""
        body = self.wait(
            request_id,
            lambda b: any(
                s["outcome"] == "counted" and (s.get("actor") or {}).get("id") == user["id"]
                for s in rows(b, "approval.vote")
            ),
            timeout,
        )
        counted = any((s.get("actor") or {}).get("id") == user["id"] for s in rows(body, "approval.vote"))
        self.say(f"{user['userPrincipalName']}'s vote {'is counted' if counted else 'was NOT counted'}")
        return counted

    def resolve(self, world: dict[str, Any]) -> None:
        answer = resolve_incident(self.sims, self.run.devhost.url, self.run.secret, world)
        self.say(
            f"the service desk resolves {world['incident']['number']}; ServiceNow sends the resolved "
            f"event: {answer['status']} {answer['body']}"
        )

    # -- what the request's rows, the ticket and Teams show --------------------------------------------

    def show(self, request_id: str, world: dict[str, Any]) -> dict[str, Any]:
        body = self.status(request_id)
        print(f"   Timeline ({request_id}, from its audit rows; seconds since the webhook):")
        print("\n".join(timeline_lines(body.get("timeline", []), self.origin)))
        labels = ticket_labels(self.sims, world)
        print(f"   Ticket {world['incident']['number']}: {' -> '.join(labels) or '(no state written)'}")
        print(f"   Final state: {body.get('state')}; audit chain verified: {body.get('auditVerified')}")
        self.expect(body.get("auditVerified") is True, "the request's audit chain verifies")
        return body

    def expect_removed(self, body: dict[str, Any], world: dict[str, Any]) -> None:
        alex = world["alex"]
        self.expect(
            body.get("state") == "revoked", f"the request ended 'revoked' (it is {body.get('state')!r})"
        )
        self.expect(
            bool(rows(body, "hold.resolved")) or bool(rows(body, "proof.stopped")),
            "the resolution reached the request",
        )
        self.expect(bool(rows(body, "revocation.confirmed")), "removal read back: revocation.confirmed")
        self.expect("Access revoked" in ticket_labels(self.sims, world), "the ticket says 'Access revoked'")
        left = assignments_in_effect(self.sims, [alex["id"]])
        self.expect(
            not left,
            f"the Graph stores hold no assignment for {alex['userPrincipalName']}"
            + (f" (left: {left})" if left else ""),
        )


def rows(body: dict[str, Any], step: str) -> list[dict[str, Any]]:
    return [s for s in body.get("timeline", []) if s["step"] == step]


def states(body: dict[str, Any]) -> list[str]:
    return [s["detail"]["state"] for s in rows(body, "request.state")]


def ticket_labels(sims: SimulatorProcess, world: dict[str, Any]) -> list[str]:
    """The state labels the app wrote on the ticket, in order (``[Label] Emergency access state: ...``)."""
    labels = []
    for note in ticket_notes(sims, world):
        if note.startswith("[") and "] Emergency access state:" in note:
            labels.append(note[1 : note.index("]")])
    return labels


def scenario_a(run: DemoRun) -> bool:
    scene = Scenario(
        run,
        "a",
        "P1 'Mail flow down': Exchange Administrator, PIM approved but Exchange still refuses",
        "approval by the major-incident rule (IAM reviews after the fact), activation through PIM at once, "
        "Exchange not honouring the role for ~15 s (progress to the responder and the ticket), 'Work in "
        "progress' only once proven, removal when the incident is resolved.",
    )
    world = scene.world(major_incident=True)
    people = world["people"]
    run.sims.pim_behaviour(
        roleDefinitionId=EXCHANGE_ADMINISTRATOR,
        statuses=[],
        propagation={**ALL_STORES_AT_ONCE, "exchange": 15},
        minimumActiveSeconds=PIM_MINIMUM_ACTIVE_SECONDS,
    )
    scene.say(
        f"seeded: responder {world['alex']['userPrincipalName']} (on call, eligible), incident "
        f"{world['incident']['number']} declared major; the Exchange role group lags PIM by 15 s"
    )
    before = run.sims.calls_summary(service="graph")
    request_id = scene.start(world)
    if request_id is None:
        return scene.finish()
    forged = send_servicenow(
        run.sims, run.devhost.url, "not-the-secret-" + "x" * 32, servicenow_payload(world)
    )
    scene.say(
        f"the same delivery with a forged signature: {forged['status']} (recorded on the security chain)"
    )
    scene.expect(forged["status"] == 401, "a forged signature is refused (401)")
    review = scene.card(request_id, "iam_duty_manager", "review")
    if scene.expect(review is not None, "the post-facto review card went to the IAM duty managers"):
        assert review is not None
        answered = scene.click(review, people["ivy"], "approve", "Approve (review)")
        scene.expect(answered == 200, "the IAM duty manager's review click is accepted")
    effective = scene.wait_step(request_id, "proof.effective")
    if effective:
        scene.say(
            f"access proven effective at {_clock(effective['detail']['effectiveAt'])}, "
            f"{effective['detail']['secondsAfterSubmission']:.1f} s after submission"
        )
    scene.wait(request_id, lambda b: bool(rows(b, "approval.review")), 15)
    scene.resolve(world)
    body = scene.wait_state(request_id, ())
    after = run.sims.calls_summary(service="graph")
    run.graph_calls = {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }

    body = scene.show(request_id, world)
    progress = [t for t in personal_chat_texts(run.sims, world["alex"]["id"]) if "not effective yet" in t]
    notes = ticket_notes(run.sims, world)
    print(
        f"   Teams, the responder's chat with the bot: {len(progress)} progress post(s)"
        + (f", e.g. {progress[0]!r}" if progress else "")
    )
    handed_over = next((n for n in notes if "Access effective at" in n), "(none)")
    print(f"   Ticket note at hand-over: {handed_over}")
    recorded = states(body)
    scene.expect(bool(rows(body, "approval.rule")), "approved by the major-incident rule")
    scene.expect(
        any(s["outcome"] == "confirmed" for s in rows(body, "approval.review")),
        "the review is recorded as confirmed by the IAM duty manager",
    )
    submits = rows(body, "activation.submit")
    scene.expect(
        len(submits) == 1 and submits[0]["detail"].get("status") == "Provisioned",
        "one adminAssign, Provisioned at once",
    )
    scene.expect(
        len(rows(body, "proof.progress")) >= 1
        and len(progress) >= 1
        and any("not effective yet" in n for n in notes),
        "progress while not effective: audit rows, the responder's Teams chat and the ticket",
    )
    seconds = float(effective["detail"]["secondsAfterSubmission"]) if effective else 0.0
    scene.expect(
        effective is not None and seconds >= 14,
        f"effective only once Exchange shows the role ({seconds:.1f} s after submission)",
    )
    labels = ticket_labels(run.sims, world)
    in_progress = labels.index("Work in progress") if "Work in progress" in labels else -1
    scene.expect(
        in_progress >= 0 and any("Access effective at" in n for n in notes),
        "the ticket says 'Work in progress' with the time access became effective",
    )
    scene.expect(
        "effective" in recorded and recorded.index("effective") > recorded.index("activated"),
        "states: activated, then effective",
    )
    scene.expect_removed(body, world)
    return scene.finish()


def scenario_b(run: DemoRun) -> bool:
    scene = Scenario(
        run,
        "b",
        "Portal mismatch: PIM shows the role, the directory role does not",
        "one on-call lead approves (no major incident); the directory role's members lag PIM by ~14 s, more "
        "than the 6 s threshold: the request is routed to IAM with the evidence, then proven and removed.",
    )
    world = scene.world(major_incident=False)
    run.sims.pim_behaviour(
        roleDefinitionId=EXCHANGE_ADMINISTRATOR,
        statuses=[],
        propagation={**ALL_STORES_AT_ONCE, "directoryRole": 14},
        minimumActiveSeconds=PIM_MINIMUM_ACTIVE_SECONDS,
    )
    iam = run.policy.escalation.iam_conversation_id
    iam_before = len(conversation_texts(run.sims, iam))
    request_id = scene.start(world)
    if request_id is None:
        return scene.finish()
    lead = scene.card(request_id, "on_call_lead", "approve")
    if scene.expect(lead is not None, "an approval card went to the on-call leads"):
        assert lead is not None
        scene.expect(
            scene.click(lead, world["people"]["lee"], "approve", "Approve") == 200,
            "the on-call lead's approval is accepted",
        )
    mismatch = scene.wait_step(request_id, "proof.store_mismatch")
    if mismatch:
        scene.say(f"routed to IAM: {describe(mismatch)}")
    effective = scene.wait_step(request_id, "proof.effective")
    if effective:
        scene.say(
            f"access proven effective {effective['detail']['secondsAfterSubmission']:.1f} s after submission"
        )
    scene.resolve(world)
    scene.wait_state(request_id, ())
    body = scene.show(request_id, world)
    posts = [t for t in conversation_texts(run.sims, iam)[iam_before:] if request_id in t]
    print(f"   Teams, IAM on call: {posts[0][:300] if posts else '(nothing)'}")
    scene.expect(
        mismatch is not None and mismatch["outcome"] == "routed",
        "proof.store_mismatch recorded, outcome 'routed'",
    )
    scene.expect(
        any("directory_role_member" in p and "Evidence" in p for p in posts),
        "IAM on call got the mismatch with its evidence in Teams",
    )
    scene.expect(any("routed to IAM" in n for n in ticket_notes(run.sims, world)), "the ticket says so too")
    scene.expect(
        effective is not None and mismatch is not None and effective["seq"] > mismatch["seq"],
        "later proven effective (after the routing)",
    )
    scene.expect_removed(body, world)
    return scene.finish()


def scenario_c(run: DemoRun) -> bool:
    scene = Scenario(
        run,
        "c",
        "P1 'Tenant lockout': Global Administrator through the two-person rule",
        "the responder confirms in Teams; the ticket's opener may not approve (403); two people from the two "
        "groups approve; activation, proof, and at resolution removal (after PIM's minimum active time) and "
        "the responder's sign-in sessions revoked.",
    )
    world = scene.world(major_incident=False)
    people = world["people"]
    run.sims.pim_behaviour(
        roleDefinitionId=GLOBAL_ADMINISTRATOR,
        statuses=[],
        propagation=ALL_STORES_AT_ONCE,
        minimumActiveSeconds=PIM_MINIMUM_ACTIVE_SECONDS,
    )
    request_id = scene.start(world, short_description="Tenant lockout", access__role="Global Administrator")
    if request_id is None:
        return scene.finish()
    confirm = scene.card(request_id, "responder", "confirm")
    if scene.expect(confirm is not None, "the responder was asked to confirm, in their 1:1 chat"):
        assert confirm is not None
        scene.expect(
            scene.click(confirm, people["alex"], "confirm", "Yes, this is my request") == 200,
            "the responder's confirmation is accepted",
        )
    lead = scene.card(request_id, "on_call_lead", "approve")
    iam = scene.card(request_id, "iam_duty_manager", "approve")
    if scene.expect(lead is not None and iam is not None, "approval cards went to both groups at once"):
        assert lead is not None and iam is not None
        scene.expect(
            scene.click(lead, people["sam"], "approve", "Approve") == 403,
            "the ticket's opener cannot approve (403)",
        )
        scene.expect(
            scene.click(lead, people["lee"], "approve", "Approve") == 200, "the on-call lead approves"
        )
        scene.wait_counted(request_id, people["lee"])
        waiting = scene.status(request_id).get("state")
        scene.say(f"one approval is not enough: the request is still {waiting}")
        scene.expect(
            scene.click(iam, people["ivy"], "approve", "Approve") == 200, "the IAM duty manager approves"
        )
    effective = scene.wait_step(request_id, "proof.effective")
    if effective:
        scene.say(
            f"access proven effective {effective['detail']['secondsAfterSubmission']:.1f} s after "
            "submission; the incident is resolved at once (inside PIM's 3 s minimum)"
        )
    scene.resolve(world)
    scene.wait_state(request_id, ())
    body = scene.show(request_id, world)
    revocations = run.sims.control("GET", "graph/session-revocations")["sessionRevocations"]
    count = int((revocations.get(world["alex"]["id"]) or {}).get("count", 0))
    print(f"   Graph: {world['alex']['userPrincipalName']}'s sign-in sessions revoked {count} time(s)")
    counted = {(a["stage"], a["by"]["upn"]) for a in body.get("approvals", []) if a["outcome"] == "counted"}
    scene.expect(
        {
            ("on_call_lead", people["lee"]["userPrincipalName"]),
            ("iam_duty_manager", people["ivy"]["userPrincipalName"]),
        }
        <= counted,
        "two approvals counted, from the two groups, by two people",
    )
    scene.expect("effective" in states(body), "proven effective")
    scene.expect(
        any(s["outcome"] == "revoked" for s in rows(body, "revocation.sessions")) and count >= 1,
        "sign-in sessions revoked (high-risk role)",
    )
    scene.expect_removed(body, world)
    return scene.finish()


def scenario_d(run: DemoRun) -> bool:
    scene = Scenario(
        run,
        "d",
        "Never effective: PIM keeps the activation pending",
        "PIM holds the request in PendingProvisioning; the 30 s proof deadline passes: escalation to IAM "
        "with the diagnostics; IAM starts break-glass from the escalation card, two people approve it, the "
        "app assigns the role directly in unified RBAC; at resolution every grant is removed.",
    )
    world = scene.world(major_incident=False)
    people = world["people"]
    run.sims.pim_behaviour(
        roleDefinitionId=EXCHANGE_ADMINISTRATOR,
        statuses=[{"status": "PendingProvisioning", "seconds": 3600}],
        propagation=ALL_STORES_AT_ONCE,
        minimumActiveSeconds=PIM_MINIMUM_ACTIVE_SECONDS,
    )
    iam = run.policy.escalation.iam_conversation_id
    iam_before = len(conversation_texts(run.sims, iam))
    request_id = scene.start(world)
    if request_id is None:
        return scene.finish()
    lead = scene.card(request_id, "on_call_lead", "approve")
    if scene.expect(lead is not None, "an approval card went to the on-call leads"):
        assert lead is not None
        scene.expect(
            scene.click(lead, people["lee"], "approve", "Approve") == 200,
            "the on-call lead's approval is accepted",
        )
    body = scene.wait_state(request_id, ("escalated",), timeout=120)
    escalated = body.get("state") == "escalated"
    scene.expect(escalated, f"escalated at the proof deadline (state {body.get('state')!r})")
    if escalated:
        scene.say("the proof deadline passed: escalated to IAM on call")
    start = scene.card(request_id, "iam_duty_manager", "escalation", timeout=30) if escalated else None
    if not scene.expect(
        start is not None,
        "an escalation card (purpose 'escalation') went to the IAM duty managers: 'Start break-glass'",
    ):
        scene.say("no escalation card: break-glass cannot start from Teams in this build")
    else:
        assert start is not None
        scene.expect(
            scene.click(start, people["ivy"], "approve", "Start break-glass") == 200,
            "an IAM duty manager starts break-glass",
        )
        glass_iam = scene.card(request_id, "iam_duty_manager", "break_glass")
        glass_sec = scene.card(request_id, "security_lead", "break_glass")
        if scene.expect(
            glass_iam is not None and glass_sec is not None,
            "break-glass cards went to the IAM duty managers and the security leads",
        ):
            assert glass_iam is not None and glass_sec is not None
            scene.expect(
                scene.click(glass_iam, people["ivy"], "approve", "Approve break-glass") == 200,
                "the IAM duty manager approves break-glass",
            )
            scene.wait_counted(request_id, people["ivy"])
            scene.expect(
                scene.click(glass_sec, people["sec"], "approve", "Approve break-glass") == 200,
                "the security lead approves break-glass",
            )
            assigned = scene.wait_step(request_id, "breakglass.assigned", timeout=60)
            scene.expect(assigned is not None, "assigned through unified RBAC (breakglass.assigned)")
            body = scene.wait_state(request_id, ("effective",), timeout=60)
            scene.expect(body.get("state") == "effective", "the request is effective through break-glass")
    scene.resolve(world)
    scene.wait_state(request_id, (), timeout=90)
    body = scene.show(request_id, world)
    posts = [t for t in conversation_texts(run.sims, iam)[iam_before:] if request_id in t]
    escalation = next((p for p in posts if "not effective" in p), "")
    print(f"   Teams, IAM on call: {escalation[:400] or '(nothing)'}")
    scene.expect("escalated" in states(body), "the request recorded 'escalated'")
    scene.expect(
        "requestId" in escalation and "clientRequestId" in escalation,
        "the IAM post carries the diagnostics (probe codes, Graph request ids)",
    )
    scene.expect_removed(body, world)
    return scene.finish()


# ------------------------------------------------------------------ after the scenarios


def verify_chains(run: DemoRun) -> bool:
    print("\n== Every audit chain the demo touched")
    ok = True
    for request_id in run.request_ids:
        body = run.client.get(f"/api/requests/{request_id}").json()
        verified = body.get("auditVerified") is True
        ok &= verified
        print(
            f"   {request_id}: {len(body.get('timeline', []))} rows, {'verified' if verified else 'BROKEN'}"
        )
    days = sorted({security_chain(run.started_at), security_chain(datetime.now(UTC))})
    with TableServiceClient.from_connection_string(run.storage_connection) as service:
        ledger = AuditLedger(service, run.policy.version_hash, run.policy.file_hash)
        for chain in days:
            result = ledger.verify(chain)
            ok &= result.ok
            print(
                f"   {chain} (security chain: refused deliveries and clicks): {result.count} rows, "
                f"{'verified' if result.ok else 'BROKEN: ' + result.reason}"
            )
    return ok


def show_telemetry(run: DemoRun) -> bool:
    """What the workbook and the alert rules read in Azure: the app's telemetry lines (one per audit row),
    here from the devhost's log."""
    print("\n== Telemetry (shared/telemetry.py: what the Azure Monitor workbook and alert rules read)")
    events: dict[str, list[dict[str, Any]]] = {request_id: [] for request_id in run.request_ids}
    for line in run.devhost.log_path.read_text(errors="replace").splitlines():
        if '"pim.step ' in line:
            event = telemetry.parse(json.loads(line)["msg"])
            if event is not None and event["chain"] in events:
                events[event["chain"]].append(event)
    ok = True
    for request_id, found in events.items():
        rows = len(run.client.get(f"/api/requests/{request_id}").json().get("timeline", []))
        ok &= sorted(e["seq"] for e in found) == list(range(rows))
        at = {e["state"]: e["elapsedSeconds"] for e in found if e["step"] == "request.state"}
        signals = sorted({e["signal"] for e in found if e.get("signal")})
        tier = next((e.get("tier") for e in found if e.get("tier")), "?")
        approved, effective = (f"+{at[s]:.1f}s" if s in at else "never" for s in ("approved", "effective"))
        print(
            f"   {request_id}: {len(found)} events for {rows} rows, tier {tier}; approved {approved}, "
            f"effective {effective}; alert signals: {', '.join(signals) or 'none'}"
        )
    print(f"   {'one event per audit row' if ok else 'FAIL: events and audit rows differ'}")
    return ok


def nothing_left(run: DemoRun) -> bool:
    print("\n== Privileged assignments left (the Graph simulator's stores, every demo responder)")
    left = assignments_in_effect(run.sims, list(run.responders))
    for grant in left:
        print(
            f"   LEFT: {run.responders.get(grant['principalId'])} holds {grant['roleDefinitionId']} "
            f"({grant['origin']}, since {grant.get('activatedAt')})"
        )
    pending = unfinished_pim_requests(run.sims, list(run.responders))
    for request in pending:
        print(
            f"   Note: PIM request {request['id']} ({request['action']}, {request['status']}) for "
            f"{run.responders.get(request['principalId'])} is still not final: nothing is assigned now, "
            "but PIM could still provision it"
        )
    if left:
        print(f"   FAIL: {len(left)} assignment(s) still in effect")
        return False
    print(f"   No privileged assignment left ({len(run.responders)} responders checked)")
    return True


def show_graph_calls(run: DemoRun) -> None:
    print(
        "\n== Graph calls of scenario (a), from the simulator's call log (PIM and role assignment endpoints)"
    )
    shown = {k: v for k, v in run.graph_calls.items() if "roleManagement" in k or "directoryRoles" in k}
    for endpoint, count in sorted(shown.items(), key=lambda item: item[0].split(" ", 1)[1]):
        print(f"   {count:>4}  {endpoint}")
    print(f"   {sum(run.graph_calls.values()):>4}  Graph calls in all (users and groups included)")


def run_demo(
    devhost: DevhostProcess, sims: SimulatorProcess, storage_connection: str, policy_path: Path
) -> bool:
    began = time.monotonic()
    policy = load_policy(policy_path)
    secret = json.loads((REPO_ROOT / "local.settings.sample.json").read_text())["Values"][
        "SERVICENOW_WEBHOOK_SECRET"
    ]
    results = {"self-check": self_check(devhost.url, devhost.function_key, storage_connection)}
    with httpx.Client(base_url=devhost.url, params={"code": devhost.function_key}, timeout=30.0) as client:
        run = DemoRun(devhost, sims, storage_connection, policy, secret, client)
        sims.pim_behaviour(minimumActiveSeconds=PIM_MINIMUM_ACTIVE_SECONDS)  # every role's default
        for name, scenario in (
            ("(a) Exchange not yet honouring the role, then Work in progress, then removed", scenario_a),
            ("(b) store mismatch routed to IAM, then effective, then removed", scenario_b),
            ("(c) Global Administrator, two-person rule, sessions revoked", scenario_c),
            ("(d) never effective: escalation, break-glass, then removed", scenario_d),
        ):
            try:
                results[name] = scenario(run)
            except Exception as exc:  # one scenario's crash must not hide the others' results
                print(f"   ({name[1]}) FAIL: {type(exc).__name__}: {exc}")
                results[name] = False
        results["every audit chain verifies"] = verify_chains(run)
        results["one telemetry event per audit row"] = show_telemetry(run)
        results["no privileged assignment left"] = nothing_left(run)
        show_graph_calls(run)
    print()
    for name, ok in results.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    ok = all(results.values())
    print(f"demo: {'PASSED' if ok else 'FAILED'} in {time.monotonic() - began:.0f} s")
    return ok
