"""What every stage of an access request needs, in the parent orchestration and in its sub-orchestrations:
the request, the audit sequence, the ticket, the state.

Replay rules (design.md §3): time only from ``context.current_utc_datetime``; the audit row sequence is a
counter in the generator, so a replay allocates the same numbers and a retried activity rewrites the same
row; a sub-orchestration continues the parent's sequence (it gets ``seq`` in its input and returns it).
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from activities.access import NOTIFY
from activities.access_request import AUDIT_NEXT_SEQ, RECORD_AUDIT, UPDATE_TICKET
from shared.audit import STATE_KIND
from shared.models import AccessRequest

WORKFLOW_VERSION = "access_request/3"

# Raised by the intake when the ticket's incident is resolved, to the request and to whichever of its
# sub-orchestrations is running (approval, proof), so each ends its own wait. Each orchestration waits for
# it with ONE task for its whole life: the Python SDK gives an event that arrives while several waits of
# the same name are open to the newest one only, so a wait created per loop turn could miss it.
RESOLUTION_EVENT = "IncidentResolved"

# Activities and ITSM calls are delivered at least once and may meet a passing fault (429/5xx).
RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)

Steps = Generator[Any, Any, Any]

# Graph writes (PIM, unified RBAC) are retried by the workflow, never blindly by the SDK: only these
# classified answers (shared.pim.classify), a bounded number of times, on durable timers.
MAX_WRITE_ATTEMPTS = 6
RETRYABLE_VERDICTS = ("throttled", "unavailable", "not_found")


class RequestFlow:
    def __init__(self, context: df.DurableOrchestrationContext) -> None:
        start = context.get_input()
        self.context = context
        self.request_id: str = start["requestId"]
        self.request = AccessRequest.from_dict(start["request"])
        self.seq: int = int(start.get("seq", 0))
        self.checks: list[dict[str, Any]] = list(start.get("checks", []))
        # Once access is granted, a ticket note or a Teams message that cannot be delivered is recorded and
        # the flow goes on: stopping would leave the access assigned until the sweep finds it.
        self.soft_messages: bool = bool(start.get("softMessages", False))
        self.grants: list[str] = []  # grant ids recorded and not yet confirmed removed

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
        # Labels go to telemetry only (shared.telemetry), not into the hashed row.
        labels = {"ticket": self.request.ticket, "system": self.request.system, "role": self.request.role}
        yield self.context.call_activity_with_retry(
            RECORD_AUDIT, RETRY, {"chain": self.request_id, "seq": self.seq, "entry": entry, "labels": labels}
        )
        # Only once written: when the write failed for good, the next record reuses the position.
        self.seq += 1

    def resync(self) -> Steps:
        """Continue after rows written by a sub-orchestration that failed (and so could not say how many)."""
        self.seq = int((yield self.context.call_activity_with_retry(AUDIT_NEXT_SEQ, RETRY, self.request_id)))

    def ticket(self, note: str, state_key: str | None = None) -> Steps:
        # The note and the state are separate activities, so that retrying a failed state change does
        # not post the note again.
        ref = {
            "system": self.request.system,
            "ticket": self.request.ticket,
            "ticketId": self.request.ticket_id,
        }
        try:
            yield self.context.call_activity_with_retry(
                UPDATE_TICKET, RETRY, {**ref, "note": f"[Emergency access {self.request_id}] {note}"}
            )
            if state_key:
                yield self.context.call_activity_with_retry(UPDATE_TICKET, RETRY, {**ref, "state": state_key})
        except Exception as error:
            if not self.soft_messages:
                raise
            yield from self.record("ticket.failed", "failed", {"note": note[:300], "state": state_key,
                                                               "error": _first_line(error)})  # fmt: skip

    def tell(self, payload: dict[str, Any]) -> Steps:
        """A plain Teams message (to ``userId``'s 1:1 chat or ``conversationId``)."""
        try:
            yield self.context.call_activity_with_retry(NOTIFY, RETRY, payload)
        except Exception as error:
            if not self.soft_messages:
                raise
            yield from self.record("teams.failed", "failed", {"to": payload.get("conversationId") or
                                   payload.get("userId"), "error": _first_line(error)})  # fmt: skip

    def set_state(self, state: str, reason: str = "", **status: Any) -> Steps:
        self.context.set_custom_status(
            {"state": state, "checks": self.checks, "reason": reason or None, **status}
        )
        yield from self.record(STATE_KIND, "recorded", {"state": state, "reason": reason})

    def write(
        self,
        activity: str,
        payload: dict[str, Any],
        kind: str,
        accepted: tuple[str, ...],
        detail: dict[str, Any] | None = None,
        actor: dict[str, Any] | None = None,
    ) -> Steps:
        """A Graph write through ``activity``, which returns its classified answer (PimAnswer.to_json): one
        audit row per attempt (with the call's ids); throttling, outages and replication lag retried on
        durable timers that honour Retry-After. Returns the last answer; it was accepted when its verdict
        is in ``accepted``."""
        answer: dict[str, Any] = {}
        for attempt in range(MAX_WRITE_ATTEMPTS):
            answer = yield self.context.call_activity_with_retry(activity, RETRY, payload)
            ok = answer["verdict"] in accepted
            yield from self.record(
                kind, "accepted" if ok else answer["verdict"],
                {"attempt": attempt + 1, "verdict": answer["verdict"],
                 "requestId": answer.get("requestId", ""), "status": answer.get("status", ""),
                 "code": answer.get("code", ""),
                 "message": answer.get("message", ""), **(detail or {})},
                role=self.request.role, actor_id=(actor or {}).get("userId", ""),
                actor_upn=(actor or {}).get("upn", ""), graph=answer.get("graph"),
            )  # fmt: skip
            if ok or answer["verdict"] not in RETRYABLE_VERDICTS:
                return answer
            retry_after = answer.get("retryAfter")
            wait = timedelta(seconds=float(retry_after)) if retry_after else timedelta(seconds=5 * 2**attempt)
            yield self.context.create_timer(self.context.current_utc_datetime + wait)
        return answer


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__
