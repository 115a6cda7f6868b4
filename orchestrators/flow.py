"""What every stage of an access request needs, in the parent orchestration and in its sub-orchestrations:
the request, the audit sequence, the ticket, the state.

Replay rules (design.md §3): time only from ``context.current_utc_datetime``; the audit row sequence is a
counter in the generator, so a replay allocates the same numbers and a retried activity rewrites the same
row; a sub-orchestration continues the parent's sequence (it gets ``seq`` in its input and returns it).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from activities.access_request import AUDIT_NEXT_SEQ, RECORD_AUDIT, UPDATE_TICKET
from shared.audit import STATE_KIND
from shared.models import AccessRequest

WORKFLOW_VERSION = "access_request/2"

# Activities and ITSM calls are delivered at least once and may meet a passing fault (429/5xx).
RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)

Steps = Generator[Any, Any, Any]


class RequestFlow:
    def __init__(self, context: df.DurableOrchestrationContext) -> None:
        start = context.get_input()
        self.context = context
        self.request_id: str = start["requestId"]
        self.request = AccessRequest.from_dict(start["request"])
        self.seq: int = int(start.get("seq", 0))
        self.checks: list[dict[str, Any]] = list(start.get("checks", []))

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
            RECORD_AUDIT, RETRY, {"chain": self.request_id, "seq": self.seq, "entry": entry}
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
        yield self.context.call_activity_with_retry(
            UPDATE_TICKET, RETRY, {**ref, "note": f"[Emergency access {self.request_id}] {note}"}
        )
        if state_key:
            yield self.context.call_activity_with_retry(UPDATE_TICKET, RETRY, {**ref, "state": state_key})

    def set_state(self, state: str, reason: str = "", **status: Any) -> Steps:
        self.context.set_custom_status(
            {"state": state, "checks": self.checks, "reason": reason or None, **status}
        )
        yield from self.record(STATE_KIND, "recorded", {"state": state, "reason": reason})
