"""``POST /api/itsm/{system}``: an ITSM webhook becomes an access request, or a clear answer.

Order of the checks (design.md §4): size (413), signature (401), body (400), trigger (200 ignored),
duplicates (200 with the existing request), then a new request (202). Every rejection and every ignored
delivery is recorded on the day's security chain; a started request records its own chain. Nothing is
started before the signature and the body are known good.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from orchestrators.access import proof_instance_id
from orchestrators.access_request import ACCESS_REQUEST_ORCHESTRATOR
from orchestrators.approval import approval_instance_id, break_glass_instance_id
from orchestrators.flow import RESOLUTION_EVENT
from shared.audit import ACCESS_ENDED_STATES, AuditEntry, security_chain
from shared.configuration import load_configuration
from shared.intake import PayloadError, instance_id, parse, request_digest, ticket_key, trigger_decision
from shared.models import AccessRequest
from shared.policy import UnknownRoleError
from shared.request_index import IndexedRequest
from shared.services import audit_ledger, deliveries, request_index
from shared.webhooks import SignatureError, UnsupportedSystemError, verify_signature

_RUNNING = (df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending)


def _access_ended(status: df.DurableOrchestrationStatus) -> bool:
    # A request whose access has ended may still run for a while (a rule-approved request waits for its
    # post-facto review, up to timings.review_due): for a new delivery it has ended.
    custom = status.custom_status
    return isinstance(custom, dict) and custom.get("state") in ACCESS_ENDED_STATES


bp = df.Blueprint()


def _json(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


async def _security_row(now: datetime, kind: str, outcome: str, detail: dict[str, Any]) -> None:
    entry = AuditEntry(kind=kind, outcome=outcome, time=now, detail=detail, workflow_version="intake/1")
    await audit_ledger().append_async(security_chain(now), entry)


def _status_url(req: func.HttpRequest, request_id: str) -> str:
    return f"{req.url.split('/api/', 1)[0]}/api/requests/{request_id}"


@bp.route(route="itsm/{system}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def itsm_webhook(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    # Anonymous at the Functions level: the webhook signature is the authentication (design.md §4).
    now = datetime.now(UTC)
    configuration = load_configuration()
    policy, settings = configuration.policy, configuration.settings
    system = req.route_params["system"].lower()
    body = req.get_body()
    evidence = {
        "system": system,
        "bodyBytes": len(body),
        "bodySha256": hashlib.sha256(body).hexdigest(),
        # Who sent it, as the platform's front end reports it (Azure and the devhost set this header).
        "remote": (req.headers.get("x-forwarded-for") or "").split(",")[0].strip()[:100],
    }
    if system not in policy.enabled_itsm:
        await _security_row(now, "intake.unknown_system", "rejected", evidence)
        return _json(404, {"error": f"system: {system!r} is not an enabled ITSM"})
    if len(body) > policy.limits.max_body_bytes:
        await _security_row(now, "intake.body_too_large", "rejected", evidence)
        return _json(
            413, {"error": f"body: {len(body)} bytes is over the {policy.limits.max_body_bytes} limit"}
        )
    try:
        verify_signature(
            system,
            dict(req.headers),
            body,
            settings.webhook_secrets(system),
            now,
            policy.limits.webhook_clock_skew,
        )
    except (SignatureError, UnsupportedSystemError) as error:
        code = getattr(error, "code", "unsupported")
        await _security_row(
            now, "intake.signature_rejected", "rejected", {**evidence, "code": code, "reason": str(error)}
        )
        return _json(401, {"error": str(error)})
    try:
        request = parse(system, body, policy, dict(req.headers))
    except PayloadError as error:
        await _security_row(now, "intake.payload_rejected", "rejected", {**evidence, "reason": str(error)})
        return _json(400, {"error": str(error)})
    except UnsupportedSystemError as error:
        await _security_row(now, "intake.unsupported_system", "rejected", {**evidence, "reason": str(error)})
        return _json(501, {"error": str(error)})

    key = ticket_key(request.system, request.ticket)
    if request.event == "resolved":
        return await _resolution(client, request, key, now, evidence)
    decision = trigger_decision(request, policy)
    if not decision.starts:
        await _security_row(
            now,
            "intake.ignored",
            "ignored",
            {**evidence, "ticket": request.ticket, "reason": decision.reason},
        )
        return _json(200, {"status": "ignored", "reason": decision.reason})
    return await _start_or_find(req, client, request, key, now, evidence["bodySha256"])


async def _start_or_find(
    req: func.HttpRequest,
    client: df.DurableOrchestrationClient,
    request: AccessRequest,
    key: str,
    now: datetime,
    body_sha256: str,
) -> func.HttpResponse:
    template = _role_key(request.role)
    digest = request_digest(request)
    index = request_index()
    for_role = [r for r in await asyncio.to_thread(index.requests_for, key) if r.role_template_id == template]
    for existing in reversed(for_role):
        status = await client.get_status(existing.request_id)
        if status.runtime_status in _RUNNING and not _access_ended(status):
            # A new delivery for a running request changes nothing but the record (design.md §2).
            return _found(req, existing.request_id, "running")
    latest = for_role[-1] if for_role else None
    if latest is not None and latest.digest == digest:
        # The ticket changed but not what it asks (e.g. the app's own notes): no new request, no loop.
        return _found(req, latest.request_id, "unchanged")
    generation = max((r.generation for r in for_role), default=0) + 1
    request_id = instance_id(request.system, request.ticket, template, generation)
    # One delivery, one outcome: by the ITSM's delivery id and by the signed body itself (a replayed
    # body with a new, unsigned delivery header is still the same delivery).
    claims = deliveries()
    for delivery in (request.delivery_id, f"body:{body_sha256}"):
        earlier = await asyncio.to_thread(claims.claim, key, delivery, "started", request_id, now)
        if earlier is not None:
            return await _duplicate(req, client, request, earlier)
    added = await asyncio.to_thread(
        index.add, key, IndexedRequest(request_id, template, generation, now, digest)
    )
    if not added:
        return _found(req, request_id, "running")  # a concurrent delivery took this generation and starts it
    await _start(client, request_id, request)
    return _json(202, {"requestId": request_id, "statusUrl": _status_url(req, request_id)})


def _found(req: func.HttpRequest, request_id: str, status: str) -> func.HttpResponse:
    return _json(200, {"requestId": request_id, "status": status, "statusUrl": _status_url(req, request_id)})


async def _start(client: df.DurableOrchestrationClient, request_id: str, request: AccessRequest) -> None:
    try:
        await client.start_new(
            ACCESS_REQUEST_ORCHESTRATOR, request_id, {"requestId": request_id, "request": request.to_dict()}
        )
    except Exception:
        # Starting an id that is already Pending/Running fails: another delivery started it first.
        status = await client.get_status(request_id)
        if status.runtime_status is None:
            raise


async def _duplicate(
    req: func.HttpRequest, client: df.DurableOrchestrationClient, request: AccessRequest, request_id: str
) -> func.HttpResponse:
    if not request_id:
        return _json(200, {"status": "duplicate", "reason": "this delivery was already handled"})
    status = await client.get_status(request_id)
    if status.runtime_status is None and request_id in {
        r.request_id
        for r in await asyncio.to_thread(
            request_index().requests_for, ticket_key(request.system, request.ticket)
        )
    }:
        # The first delivery indexed the request but did not start it (e.g. the host stopped): start it now.
        await _start(client, request_id, request)
    return _found(req, request_id, "duplicate")


async def _resolution(
    client: df.DurableOrchestrationClient,
    request: AccessRequest,
    key: str,
    now: datetime,
    evidence: dict[str, Any],
) -> func.HttpResponse:
    raised = []
    for indexed in await asyncio.to_thread(request_index().requests_for, key):
        status = await client.get_status(indexed.request_id)
        if status.runtime_status not in _RUNNING:
            continue
        event = {"at": now.isoformat(), "delivery": request.delivery_id}
        await client.raise_event(indexed.request_id, RESOLUTION_EVENT, event)
        raised.append(indexed.request_id)
        # The request's approval, proof or break-glass approval, when running, stops on it too (the request
        # waits for them).
        stages = (approval_instance_id, proof_instance_id, break_glass_instance_id)
        for stage in (instance(indexed.request_id) for instance in stages):
            if (await client.get_status(stage)).runtime_status in _RUNNING:
                await client.raise_event(stage, RESOLUTION_EVENT, event)
    if not raised:
        reason = f"ticket {request.ticket} has no running request to resolve"
        await _security_row(
            now, "intake.ignored", "ignored", {**evidence, "ticket": request.ticket, "reason": reason}
        )
        return _json(200, {"status": "ignored", "reason": reason})
    return _json(200, {"status": "resolution", "requestIds": raised})


def _role_key(name: str) -> str:
    """The role's template id; for a role the policy does not know, a GUID derived from its name, so that
    the request still starts and the validation chain rejects it with the reason on the ticket."""
    try:
        return load_configuration().policy.role(name).template_id
    except UnknownRoleError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "unknown-role:" + name.strip().casefold()))
