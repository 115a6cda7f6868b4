"""The demonstration that ``make demo`` runs against a live local stack.

For now it is the Durable self-check through HTTP (start, an activity, a timer, an external event,
completion); the product scenarios join it as their issues land. The timeline is read back from the
orchestration history persisted in Table Storage, not from the app's own prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from local.devhost.history import EventType
from local.devhost.store import read_committed_history

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


def run_demo(base_url: str, function_key: str, storage_connection: str) -> bool:
    with httpx.Client(base_url=base_url, params={"code": function_key}, timeout=15.0) as client:
        print("1. POST /api/selfcheck: start the Durable self-check (activity, 2 s timer, acknowledgement)")
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
        environment = next(
            (
                s.get("environment")
                for s in (final.get("output") or {}).get("steps", [])
                if s.get("step") == "activity"
            ),
            None,
        )
        print(f"   the activity reported: {environment}")
    print("5. timeline from the persisted orchestration history (Table Storage):")
    print("\n".join(history_timeline(storage_connection, instance_id)))
    ok = final.get("runtimeStatus") == "Completed" and final["output"].get("outcome") == "passed"
    print("demo: PASSED" if ok else "demo: FAILED")
    return ok
