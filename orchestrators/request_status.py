"""The read side of access requests: state and timeline from the audit rows, and the rows with their
verification (design.md section 4, ``GET /api/requests/{requestId}`` and ``.../audit``)."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from shared.audit import AuditRow, ChainVerification, current_state, verify_and_report
from shared.services import audit_ledger

# Request ids are Durable instance ids we build (shared.intake.instance_id); anything else is refused
# before it reaches a Table Storage query.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")

bp = df.Blueprint()


def _json(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def timeline_entry(row: AuditRow) -> dict[str, Any]:
    body = row.to_json()
    entry: dict[str, Any] = {
        "seq": row.seq,
        "time": row.time,
        "step": row.kind,
        "outcome": body["outcome"],
        "actor": {"id": body["actor_id"], "upn": body["actor_upn"]} if body["actor_id"] else None,
        "role": body["role"] or None,
        "detail": body["detail"],
    }
    if body["graph_method"]:
        entry["graph"] = {key: body[f"graph_{key}"] for key in ("method", "path", "status", "request_id",
                                                                 "client_request_id")}  # fmt: skip
    return entry


def approvals(rows: list[AuditRow]) -> list[dict[str, Any]]:
    """Who answered which card and when, counted or refused (from the ``approval.vote`` rows)."""
    found = []
    for row in rows:
        if row.kind in ("approval.vote", "approval.review") and row.to_json()["actor_id"]:
            body, detail = row.to_json(), row.to_json()["detail"]
            by = {"id": body["actor_id"], "upn": body["actor_upn"]}
            found.append({"stage": detail.get("stage"), "verb": detail.get("verb"), "at": detail.get("at"),
                          "by": by, "outcome": body["outcome"],
                          "reason": detail.get("reason") or None})  # fmt: skip
    return found


async def _read(request_id: str) -> tuple[list[AuditRow], ChainVerification]:
    ledger = audit_ledger()
    rows = await asyncio.to_thread(ledger.read, request_id)
    verification = await verify_and_report(ledger, request_id, datetime.now(UTC), "request_status")
    return rows, verification


@bp.route(route="requests/{requestId}", methods=["GET"])
async def get_request(req: func.HttpRequest) -> func.HttpResponse:
    request_id = req.route_params["requestId"]
    if not _REQUEST_ID.match(request_id):
        return _json(400, {"error": "requestId: not a request id"})
    rows, verification = await _read(request_id)
    if not rows:
        return _json(404, {"error": f"no request {request_id}"})
    return _json(200, {
        "requestId": request_id,
        "state": current_state(rows),
        "approvals": approvals(rows),
        "timeline": [timeline_entry(row) for row in rows],
        "auditVerified": verification.ok,
    })  # fmt: skip


@bp.route(route="requests/{requestId}/audit", methods=["GET"])
async def get_request_audit(req: func.HttpRequest) -> func.HttpResponse:
    request_id = req.route_params["requestId"]
    if not _REQUEST_ID.match(request_id):
        return _json(400, {"error": "requestId: not a request id"})
    rows, verification = await _read(request_id)
    if not rows and verification.head_count is None:
        return _json(404, {"error": f"no request {request_id}"})
    return _json(200, {"requestId": request_id, "rows": [row.to_json() for row in rows],
                       "verification": verification.to_json()})  # fmt: skip
