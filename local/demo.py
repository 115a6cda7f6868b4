"""The demonstration that ``make demo`` runs against a live local stack.

The Durable self-check through HTTP (start, an activity, a timer, an external event, completion), then the
product scenarios so far: a ServiceNow P1 validated and approved by the major-incident rule with its review
in Teams, and a Global Administrator request through the two-person rule with signed Teams clicks. What it
prints is read back from Table Storage (orchestration history, audit rows) and the simulators, not from the
app's own prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from local.devhost.history import EventType
from local.devhost.store import read_committed_history
from local.scenarios import (
    click_card,
    seed_approver_world,
    seed_responder_world,
    send_servicenow,
    servicenow_payload,
)
from local.simulators.process import SimulatorProcess
from shared.policy import load_policy

if TYPE_CHECKING:
    from local.stack import DevhostProcess

REPO_ROOT = Path(__file__).resolve().parents[1]

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


def _audit_timeline(client: httpx.Client, request_id: str) -> tuple[list[str], bool]:
    audit = client.get(f"/api/requests/{request_id}/audit").json()
    lines = []
    for row in audit["rows"]:
        detail = row["detail"]
        said = detail.get("reason") or detail.get("stage") or ""
        if detail.get("state"):
            said = f"{detail['state']}" + (f": {said}" if said else "")
        who = f" [{row['actor_upn']}]" if row.get("actor_upn") else ""
        lines.append(f"  #{row['seq']:<2} {row['time'][11:23]}  {row['kind']:<24} {row['outcome']:<8} "
                     f"{str(said)[:90]}{who}")  # fmt: skip
    return lines, bool(audit["verification"]["ok"])


class _Scene:
    """One product scenario on the live stack: deliveries in, clicks in Teams, the audit rows out."""

    def __init__(self, devhost: DevhostProcess, sims: SimulatorProcess) -> None:
        self.devhost, self.sims = devhost, sims
        self.policy = load_policy(REPO_ROOT / "policy" / "policy.toml")
        self.secret = json.loads((REPO_ROOT / "local.settings.sample.json").read_text())["Values"][
            "SERVICENOW_WEBHOOK_SECRET"
        ]
        self.client = httpx.Client(base_url=devhost.url, params={"code": devhost.function_key}, timeout=15.0)

    def send(self, payload: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
        return send_servicenow(self.sims, self.devhost.url, secret or self.secret, payload)

    def wait_state(self, request_id: str, states: tuple[str, ...]) -> str:
        body = _wait(self.client, f"/api/requests/{request_id}", lambda b: b.get("state") in states)
        return str(body.get("state"))

    def card(self, request_id: str, stage: str, purpose: str) -> dict[str, Any]:
        def posted(body: dict[str, Any]) -> list[dict[str, Any]]:
            return [s["detail"] for s in body.get("timeline", []) if s["step"] == "approval.card_posted"
                    and s["detail"]["stage"] == stage and s["detail"]["purpose"] == purpose]  # fmt: skip

        body = _wait(self.client, f"/api/requests/{request_id}", lambda b: bool(posted(b)))
        return posted(body)[-1]

    def click(self, card: dict[str, Any], user: dict[str, Any], verb: str) -> dict[str, Any]:
        answer = click_card(self.sims, self.devhost.url, card, user, verb)
        message = (
            answer["body"].get("value", {}).get("message", "") if answer["status"] != 200 else "card updated"
        )
        print(f"   {user.get('userPrincipalName', user['id'])} clicks {verb!r}: {answer['status']} {message}")
        return answer

    def show(self, request_id: str) -> bool:
        lines, verified = _audit_timeline(self.client, request_id)
        print("\n".join(lines))
        print(f"   chain verified: {verified}")
        return verified


def rule_approval(devhost: DevhostProcess, sims: SimulatorProcess) -> bool:
    print("\n== ServiceNow P1 'Mail flow down' (a declared major incident): Exchange Administrator")
    scene = _Scene(devhost, sims)
    world = seed_responder_world(sims, scene.policy, major_incident=True)
    people = seed_approver_world(sims, scene.policy, world)
    print(f"1. seeded: {world['alex']['userPrincipalName']} (on call, eligible in PIM), incident "
          f"{world['incident']['number']} open and a declared major incident")  # fmt: skip
    answer = scene.send(servicenow_payload(world))
    print(f"2. signed webhook -> POST /api/itsm/servicenow: {answer['status']} {answer['body']}")
    if answer["status"] != 202:
        return False
    request_id = answer["body"]["requestId"]
    state = scene.wait_state(request_id, ("approved", "rejected", "failed"))
    print(f"3. request {request_id}: {state} (by the major-incident rule); the review card goes to IAM")
    review = scene.card(request_id, "iam_duty_manager", "review")
    scene.click(review, people["ivy"], "approve")
    _wait(scene.client, f"/api/requests/{request_id}",
          lambda b: any(s["step"] == "approval.review" for s in b.get("timeline", [])))  # fmt: skip
    print("4. the request's audit rows (hash-chained, Table Storage):")
    verified = scene.show(request_id)
    notes = sims.control("GET", f"servicenow/incidents/{world['incident']['sys_id']}")["work_notes"]
    print("5. the ticket's work notes (ServiceNow simulator):")
    for note in notes:
        print(f"   - {str(note.get('value', note))[:150]}")
    print("\n== The same delivery with a forged signature, and a P2")
    forged = scene.send(servicenow_payload(world), secret="not-the-secret-" + "x" * 32)
    print(f"6. forged signature: {forged['status']} {forged['body']}")
    p2 = scene.send(servicenow_payload(world, priority="2"))
    print(f"7. P2: {p2['status']} {p2['body']}")
    return bool(state == "approved" and verified and forged["status"] == 401
                and p2["status"] == 200 and p2["body"].get("status") == "ignored")  # fmt: skip


def two_person_approval(devhost: DevhostProcess, sims: SimulatorProcess) -> bool:
    print("\n== ServiceNow P1 'Tenant lockout': Global Administrator (two-person rule)")
    scene = _Scene(devhost, sims)
    world = seed_responder_world(sims, scene.policy)
    people = seed_approver_world(sims, scene.policy, world)
    answer = scene.send(servicenow_payload(world, short_description="Tenant lockout",
                                           access__role="Global Administrator"))  # fmt: skip
    print(f"1. signed webhook: {answer['status']} {answer['body'].get('requestId')}")
    if answer["status"] != 202:
        return False
    request_id = answer["body"]["requestId"]
    print("2. the responder confirms in their 1:1 chat with the bot; the opener and Bo try to cut corners")
    scene.click(scene.card(request_id, "responder", "confirm"), people["alex"], "confirm")
    lead = scene.card(request_id, "on_call_lead", "approve")
    iam = scene.card(request_id, "iam_duty_manager", "approve")
    opener = scene.click(lead, people["sam"], "approve")
    scene.click(lead, people["bo"], "approve")
    twice = scene.click(iam, people["bo"], "approve")
    waiting = scene.wait_state(request_id, ("awaiting_approval",))
    print(f"3. still {waiting}: one approval is not enough; Ivy (IAM duty manager) approves")
    scene.click(iam, people["ivy"], "approve")
    state = scene.wait_state(request_id, ("approved", "denied", "expired", "failed"))
    print(f"4. request {request_id}: {state}")
    print("5. the request's audit rows:")
    verified = scene.show(request_id)
    card = sims.teams_conversation(lead["conversationId"])["activities"][0]["card"]
    print("6. the on-call lead card in Teams now reads:")
    for block in card["body"][3:]:
        print(f"   | {block.get('text', '')}")
    return bool(state == "approved" and verified and opener["status"] == 403 and twice["status"] == 403)


def run_demo(devhost: DevhostProcess, sims: SimulatorProcess, storage_connection: str) -> bool:
    results = {
        "self-check": self_check(devhost.url, devhost.function_key, storage_connection),
        "intake, validation, rule approval and review": rule_approval(devhost, sims),
        "two-person approval in Teams": two_person_approval(devhost, sims),
    }
    print()
    for name, ok in results.items():
        print(f"{name}: {'PASSED' if ok else 'FAILED'}")
    ok = all(results.values())
    print("demo: PASSED" if ok else "demo: FAILED")
    return ok
