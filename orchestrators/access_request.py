"""The access-request orchestration: one per (ITSM system, ticket, role) and generation (design.md §2).

Stages, each a short generator: validate -> (approve -> activate -> prove -> hand over -> hold -> revoke:
the next issues). Today the orchestration ends after validation, in state ``validated`` (waiting for the
approval stage) or ``rejected`` with the first failed check's reason.

Replay rules (design.md §3): time only from ``context.current_utc_datetime``; the audit row sequence is a
counter in the generator, so a replay allocates the same numbers and a retried activity rewrites the
same row; no I/O here, everything through activities.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from activities.access_request import (
    RECORD_AUDIT,
    UPDATE_TICKET,
    VALIDATE_DUPLICATES,
    VALIDATE_ELIGIBILITY,
    VALIDATE_INCIDENT,
    VALIDATE_RESPONDER,
    VALIDATE_ROLE,
)
from shared.audit import STATE_KIND
from shared.models import AccessRequest
from shared.validation import CheckResult

ACCESS_REQUEST_ORCHESTRATOR = "access_request"
WORKFLOW_VERSION = "access_request/1"

# Activities and ITSM calls are delivered at least once and may meet a passing fault (429/5xx).
_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)

bp = df.Blueprint()

Steps = Generator[Any, Any, Any]


class RequestFlow:
    """What every stage needs: the request, the audit sequence, and the ticket."""

    def __init__(self, context: df.DurableOrchestrationContext) -> None:
        start = context.get_input()
        self.context = context
        self.request_id: str = start["requestId"]
        self.request = AccessRequest.from_dict(start["request"])
        self.seq = 0
        self.checks: list[dict[str, Any]] = []

    def record(
        self,
        kind: str,
        outcome: str,
        detail: dict[str, Any] | None = None,
        role: str = "",
        actor_id: str = "",
        actor_upn: str = "",
        graph: dict[str, Any] | None = None,
    ) -> Steps:
        entry = {
            "kind": kind,
            "outcome": outcome,
            "time": self.context.current_utc_datetime.isoformat(),
            "actor_id": actor_id,
            "actor_upn": actor_upn,
            "role": role,
            "detail": detail or {},
            "graph": graph,
            "workflow_version": WORKFLOW_VERSION,
        }
        yield self.context.call_activity_with_retry(
            RECORD_AUDIT, _RETRY, {"chain": self.request_id, "seq": self.seq, "entry": entry}
        )
        # Only once written: when the write failed for good, the next record reuses the position.
        self.seq += 1

    def ticket(self, note: str, state_key: str | None = None) -> Steps:
        # The note and the state are separate activities, so that retrying a failed state change does
        # not post the note again.
        ref = {
            "system": self.request.system,
            "ticket": self.request.ticket,
            "ticketId": self.request.ticket_id,
        }
        yield self.context.call_activity_with_retry(
            UPDATE_TICKET, _RETRY, {**ref, "note": f"[Emergency access {self.request_id}] {note}"}
        )
        if state_key:
            yield self.context.call_activity_with_retry(UPDATE_TICKET, _RETRY, {**ref, "state": state_key})

    def set_state(self, state: str, reason: str = "") -> Steps:
        self.context.set_custom_status({"state": state, "checks": self.checks, "reason": reason or None})
        yield from self.record(STATE_KIND, "recorded", {"state": state, "reason": reason})


def validate(flow: RequestFlow) -> Generator[Any, Any, CheckResult | None]:
    """Run the chain in order; returns the first failed check, or None when all passed."""
    request_json = flow.request.to_dict()
    responder: dict[str, Any] = {}
    role: dict[str, Any] = {}
    for activity in (
        VALIDATE_RESPONDER,
        VALIDATE_ROLE,
        VALIDATE_INCIDENT,
        VALIDATE_ELIGIBILITY,
        VALIDATE_DUPLICATES,
    ):
        payload = {
            "request": request_json,
            "userId": responder.get("userId"),
            "role": role.get("role"),
            "templateId": role.get("templateId"),
        }
        result = CheckResult.from_json(
            (yield flow.context.call_activity_with_retry(activity, _RETRY, payload))
        )
        flow.checks.append({"check": result.check, "passed": result.passed})
        calls = [call.__dict__ for call in result.calls]
        yield from flow.record(
            f"validation.{result.check}",
            "passed" if result.passed else "failed",
            {"reason": result.reason, "evidence": result.evidence, "graphCalls": calls},
            role=flow.request.role,
            graph=calls[-1] if calls else None,
        )
        verdict = "passed" if result.passed else "FAILED"
        yield from flow.ticket(f"Check {result.check}: {verdict}. {result.reason}")
        if not result.passed:
            return result
        if result.check == "responder":
            responder = result.evidence
        elif result.check == "role":
            role = result.evidence
    return None


@bp.orchestration_trigger(context_name="context", orchestration=ACCESS_REQUEST_ORCHESTRATOR)
def access_request(context: df.DurableOrchestrationContext) -> Steps:
    flow = RequestFlow(context)
    try:
        return (yield from _run(flow))
    except Exception as error:  # an activity failed after its retries (e.g. the ITSM or Graph is down)
        # Never leave a request silently half-done: record why it stopped, then end. Escalation with
        # diagnostics comes with the escalation stage.
        reason = f"the request stopped: {str(error).splitlines()[0][:500]}"
        yield from flow.set_state("failed", reason)
        with contextlib.suppress(Exception):  # best effort: the ticket may be what failed
            yield from flow.ticket(f"The emergency access request stopped and needs IAM: {reason}")
        return {"requestId": flow.request_id, "state": "failed", "reason": reason}


def _run(flow: RequestFlow) -> Steps:
    request = flow.request
    yield from flow.record(
        "intake.accepted",
        "recorded",
        {
            "system": request.system,
            "ticket": request.ticket,
            "delivery": request.delivery_id,
            "priority": request.priority,
            "duration": request.duration.total_seconds(),
            "justification": request.justification,
            "assignee": request.assignee.to_dict() if request.assignee else None,
            "opener": request.opener.to_dict(),
        },
        role=request.role,
        actor_upn=request.opener.email or request.opener.user_name,
    )
    yield from flow.set_state("validating")

    failed = yield from validate(flow)
    if failed is not None:
        reason = f"{failed.check} check failed: {failed.reason}"
        # The ticket first, then the state: a request is "rejected" once the ticket says so.
        yield from flow.ticket(f"Access rejected: {reason}", state_key="rejected")
        yield from flow.set_state("rejected", reason)
        return {"requestId": flow.request_id, "state": "rejected", "reason": reason}

    yield from flow.ticket("All checks passed; waiting for approval.", state_key="pending_approval")
    yield from flow.set_state("validated")
    return {"requestId": flow.request_id, "state": "validated"}
