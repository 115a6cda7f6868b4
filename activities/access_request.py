"""Activities of the access-request orchestration: each parses its input, calls one service function
with the real adapters (shared.services), and returns small JSON. They raise on failure; the
orchestrator's retry policy decides what happens next."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import azure.durable_functions as df

from shared.audit import AuditEntry, GraphCall
from shared.configuration import load_configuration
from shared.itsm import TicketRef
from shared.models import AccessRequest
from shared.policy import UnknownRoleError
from shared.services import audit_ledger, directory, roster, ticket_system
from shared.validation import (
    check_duplicates,
    check_eligibility,
    check_incident,
    check_responder,
    check_role,
)

RECORD_AUDIT = "record_audit"
AUDIT_NEXT_SEQ = "audit_next_seq"
UPDATE_TICKET = "update_ticket"
VALIDATE_RESPONDER = "validate_responder"
VALIDATE_ROLE = "validate_role"
VALIDATE_INCIDENT = "validate_incident"
VALIDATE_ELIGIBILITY = "validate_eligibility"
VALIDATE_DUPLICATES = "validate_duplicates"

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload", activity=RECORD_AUDIT)
def record_audit(payload: dict[str, Any]) -> dict[str, Any]:
    entry = payload["entry"]
    graph = entry.get("graph")
    row = audit_ledger().append(
        payload["chain"],
        AuditEntry(
            kind=entry["kind"],
            outcome=entry["outcome"],
            time=datetime.fromisoformat(entry["time"]),
            actor_id=entry.get("actor_id", ""),
            actor_upn=entry.get("actor_upn", ""),
            role=entry.get("role", ""),
            detail=entry.get("detail") or {},
            graph=GraphCall(**graph) if graph else None,
            workflow_version=entry.get("workflow_version", ""),
        ),
        seq=int(payload["seq"]),
        labels=_labels(payload.get("labels") or {}),
    )
    return {"seq": row.seq, "hash": row.hash}


def _labels(labels: dict[str, Any]) -> dict[str, Any]:
    """The request's ticket and system, and its role's tier from the policy, for telemetry."""
    try:
        tier = load_configuration().policy.role(str(labels.get("role", ""))).tier
    except UnknownRoleError:
        tier = None
    return {"ticket": labels.get("ticket"), "system": labels.get("system"), "tier": tier}


@bp.activity_trigger(input_name="chain", activity=AUDIT_NEXT_SEQ)
def audit_next_seq(chain: str) -> int:
    return audit_ledger().next_seq(chain)


@bp.activity_trigger(input_name="payload", activity=UPDATE_TICKET)
async def update_ticket(payload: dict[str, Any]) -> dict[str, Any]:
    tickets = ticket_system(payload["system"])
    ref = TicketRef(payload["system"], payload["ticket"], payload["ticketId"])
    if payload.get("note"):
        call = await tickets.add_note(ref, payload["note"])
    else:
        call = await tickets.set_state(ref, payload["state"])
    return {"call": str(call)}


@bp.activity_trigger(input_name="payload", activity=VALIDATE_RESPONDER)
async def validate_responder(payload: dict[str, Any]) -> dict[str, Any]:
    request = AccessRequest.from_dict(payload["request"])
    return (await check_responder(request, directory(), roster())).to_json()


@bp.activity_trigger(input_name="payload", activity=VALIDATE_ROLE)
def validate_role(payload: dict[str, Any]) -> dict[str, Any]:
    request = AccessRequest.from_dict(payload["request"])
    return check_role(request, load_configuration().policy).to_json()


@bp.activity_trigger(input_name="payload", activity=VALIDATE_INCIDENT)
async def validate_incident(payload: dict[str, Any]) -> dict[str, Any]:
    request = AccessRequest.from_dict(payload["request"])
    return (await check_incident(request, ticket_system(request.system))).to_json()


@bp.activity_trigger(input_name="payload", activity=VALIDATE_ELIGIBILITY)
async def validate_eligibility(payload: dict[str, Any]) -> dict[str, Any]:
    result = await check_eligibility(payload["userId"], payload["role"], payload["templateId"], directory())
    return result.to_json()


@bp.activity_trigger(input_name="payload", activity=VALIDATE_DUPLICATES)
async def validate_duplicates(payload: dict[str, Any]) -> dict[str, Any]:
    result = await check_duplicates(payload["userId"], payload["role"], payload["templateId"], directory())
    return result.to_json()
