"""The demonstration that ``make demo`` runs against a live local stack.

For now it is the Durable self-check through HTTP (start, an activity, a timer, an external event,
completion); the product scenarios join it as their issues land. The timeline is read back from the
orchestration history persisted in Table Storage, not from the app's own prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from local.devhost.history import EventType
from local.devhost.store import read_committed_history
from local.scenarios import seed_responder_world, send_servicenow, servicenow_payload
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
        reason = row["detail"].get("reason") or row["detail"].get("state") or ""
        lines.append(
            f"  #{row['seq']:<2} {row['time'][11:23]}  {row['kind']:<24} {row['outcome']:<8} {reason}"
        )
    return lines, bool(audit["verification"]["ok"])


def intake_and_validation(devhost: DevhostProcess, sims: SimulatorProcess) -> bool:
    print("\n== ServiceNow P1 'Mail flow down': Exchange Administrator for the on-call responder")
    policy = load_policy(REPO_ROOT / "policy" / "policy.toml")
    secret = json.loads((REPO_ROOT / "local.settings.sample.json").read_text())["Values"][
        "SERVICENOW_WEBHOOK_SECRET"
    ]
    world = seed_responder_world(sims, policy)
    print(
        f"1. seeded: {world['alex']['userPrincipalName']} (on call, eligible in PIM), incident "
        f"{world['incident']['number']} open"
    )
    answer = send_servicenow(sims, devhost.url, secret, servicenow_payload(world))
    print(f"2. signed webhook -> POST /api/itsm/servicenow: {answer['status']} {answer['body']}")
    if answer["status"] != 202:
        return False
    request_id = answer["body"]["requestId"]
    with httpx.Client(base_url=devhost.url, params={"code": devhost.function_key}, timeout=15.0) as client:
        final = _wait(
            client,
            f"/api/requests/{request_id}",
            lambda b: b.get("state") in ("validated", "rejected", "failed"),
        )
        print(f"3. request {request_id}: {final.get('state')}")
        print("4. timeline from the request's audit rows (hash-chained, Table Storage):")
        lines, verified = _audit_timeline(client, request_id)
        print("\n".join(lines))
        print(f"   chain verified: {verified}")
    notes = sims.control("GET", f"servicenow/incidents/{world['incident']['sys_id']}")["work_notes"]
    print("5. the ticket's work notes (ServiceNow simulator):")
    for note in notes:
        print(f"   - {str(note.get('value', note))[:150]}")

    print("\n== The same delivery with a forged signature, and a P2")
    forged = send_servicenow(sims, devhost.url, "not-the-secret-" + "x" * 32, servicenow_payload(world))
    print(f"6. forged signature: {forged['status']} {forged['body']}")
    p2 = send_servicenow(sims, devhost.url, secret, servicenow_payload(world, priority="2"))
    print(f"7. P2: {p2['status']} {p2['body']}")
    return bool(
        final.get("state") == "validated"
        and verified
        and forged["status"] == 401
        and p2["status"] == 200
        and p2["body"].get("status") == "ignored"
    )


def run_demo(devhost: DevhostProcess, sims: SimulatorProcess, storage_connection: str) -> bool:
    results = {
        "self-check": self_check(devhost.url, devhost.function_key, storage_connection),
        "intake and validation": intake_and_validation(devhost, sims),
    }
    print()
    for name, ok in results.items():
        print(f"{name}: {'PASSED' if ok else 'FAILED'}")
    ok = all(results.values())
    print("demo: PASSED" if ok else "demo: FAILED")
    return ok
