"""``make bench``: how many Graph calls one activation costs, as the propagation delay grows.

The real ``proof`` sub-orchestration (orchestrators/access.py) runs under the Durable SDK's replay with the
step-by-step harness (local/devhost/replay.py): timers fire at once and the orchestration's clock moves to
each timer's time, so ten minutes of polling take well under a second and the counts are exact, not timed.
The stores show the assignment once the given delay has passed since submission (PIM and unified RBAC at
once, the slowest store after the delay), as the worked example of design.md §8 (8 minutes) and slower.

The activation itself adds a fixed number of calls, counted separately: the activity's look for an existing
assignment and pending request (2 GETs) and the POST.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df  # type: ignore[import-untyped,unused-ignore]  # mypy quirk (see test_activation)

from activities import access as activities
from activities import access_request as request_activities
from local.devhost import history
from local.devhost.replay import StepReplay
from orchestrators import access
from shared.models import AccessRequest, LinkedIncident, Person
from shared.policy import Timings

ACTIVATION_CALLS = 3  # GET schedule instances, GET pending requests, POST adminAssign
PROBES = ("pim_instance", "unified_assignment", "directory_role_member")
DELAYS = (timedelta(0), timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=2),
          timedelta(minutes=4), timedelta(minutes=8), timedelta(minutes=9, seconds=59), None)  # fmt: skip
REQUEST = AccessRequest(
    system="servicenow", event="created", ticket="INC0012345", ticket_id="a" * 32, priority="P1",
    itsm_priority="1", state="2", short_description="Mail flow down",
    opener=Person("sam", "sam@contoso.test"), assignee=Person("alex", "alex@contoso.test"),
    assignment_group="Messaging",
    incident=LinkedIncident("INC0012345", "2", True, True), access_type="privileged",
    role="Exchange Administrator", duration=timedelta(hours=1), justification="restore mail flow",
    delivery_id="bench",
)  # fmt: skip

app = df.DFApp()
app.register_functions(access.bp)
app.register_functions(activities.bp)
app.register_functions(request_activities.bp)


def plan(timings: Timings) -> dict[str, Any]:
    """The policy's defaults (policy/policy.toml), as plan_access gives them."""
    return {
        "role": REQUEST.role, "templateId": "29232cdf-9323-42fd-ade2-1d097af3e4de", "probes": list(PROBES),
        "proofDeadline": timings.default_proof_deadline.total_seconds(), "revokeSessions": False,
        "progress": timings.progress_interval.total_seconds(),
        "firstProbe": timings.probe_first_interval.total_seconds(),
        "maxProbe": timings.probe_max_interval.total_seconds(),
        "slowProbe": timings.slow_probe_interval.total_seconds(),
        "mismatch": timings.store_mismatch_threshold.total_seconds(),
        "minimumActive": timings.pim_minimum_active.total_seconds(), "iamConversationId": "19:iam",
    }  # fmt: skip


async def proof_rounds(delay: timedelta | None, timings: Timings) -> tuple[int, str]:
    """Probe rounds until the proof ended, and how it ended, for a slowest store visible after ``delay``."""
    submitted = history.utcnow()

    def probes(payload: dict[str, Any]) -> list[dict[str, Any]]:
        visible = delay is not None and history.utcnow() >= submitted + delay
        return [{"probe": p, "passed": visible or p != PROBES[-1], "graph": None, "reason": ""}
                for p in payload["probes"]]  # fmt: skip

    script = {
        activities.RUN_PROBES: probes,
        activities.NOTIFY: lambda payload: {"conversationId": "a:1", "activityId": "1"},
        request_activities.RECORD_AUDIT: lambda payload: {"seq": payload["seq"], "hash": "h"},
        request_activities.UPDATE_TICKET: lambda payload: {"call": "ok"},
    }
    start = {"requestId": "bench", "request": REQUEST.to_dict(), "seq": 0, "checks": [],
             "responder": {"userId": "11111111-0000-4000-8000-000000000001", "upn": "alex@contoso.test"},
             "plan": plan(timings), "submittedAt": submitted.isoformat()}  # fmt: skip
    run = await StepReplay.start(app, access.PROOF_ORCHESTRATOR, start, script)
    try:
        await run.run_to_end(max_timers=500)
        output = await run.output()
        return len(run.inputs(activities.RUN_PROBES)), str(output["outcome"])
    finally:
        await run.stop()


def main() -> int:
    timings = Timings()
    first, cap = timings.probe_first_interval.total_seconds(), timings.probe_max_interval.total_seconds()
    deadline = timings.default_proof_deadline.total_seconds() / 60
    print(f"Graph calls for one activation (policy defaults: first probe after {first:.0f} s, waits doubling "
          f"to {cap:.0f} s; proof deadline {deadline:.0f} min; {len(PROBES)} probes a round)")  # fmt: skip
    print(f"{'slowest store after':>20} {'outcome':>10} {'rounds':>7} {'probe reads':>12} {'all calls':>10}")
    for delay in DELAYS:
        rounds, outcome = asyncio.run(proof_rounds(delay, timings))
        label = "never" if delay is None else f"{delay.total_seconds():.0f} s"
        reads = rounds * len(PROBES)
        print(f"{label:>20} {outcome:>10} {rounds:>7} {reads:>12} {reads + ACTIVATION_CALLS:>10}")
    print(
        "Rounds at 5, 10, 20, 40 and 80 s, then one a minute: after the first 80 s the count grows by one "
        "round per minute of delay, not at the first pace (a fixed 5 s poll: 120 rounds in 10 min)."
    )
    return 0


if __name__ == "__main__":
    started = datetime.now(UTC)
    code = main()
    print(f"(computed in {(datetime.now(UTC) - started).total_seconds():.1f} s)", file=sys.stderr)
    sys.exit(code)
