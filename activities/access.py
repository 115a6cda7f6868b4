"""Activities of activation, proof, hold and revocation: each calls one adapter with the real clients and
returns small JSON. PIM writes return their classified answer (shared.pim.PimAnswer) rather than raising,
so that the orchestration, not a blind retry, decides what a 429, a 503 or "already assigned" means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df

from shared import services
from shared.configuration import load_configuration
from shared.directory import DirectoryError
from shared.exchange import exchange_role_group_probe
from shared.grants import Grant
from shared.models import AccessRequest
from shared.pim import Pim, PimAnswer, classify
from shared.services import bot_connector, exchange, grant_ledger

ACTIVATE = "activate_role"
RUN_PROBES = "run_access_probes"
RECORD_GRANT = "record_grant"
SET_GRANT_STATE = "set_grant_state"
REMOVE = "remove_role"
REVOKE_SESSIONS = "revoke_sign_in_sessions"
NOTIFY = "notify_in_teams"
PLAN_ACCESS = "plan_access"
ASSIGN_DIRECT = "assign_role_directly"
REMOVE_DIRECT = "remove_direct_assignment"

bp = df.Blueprint()


def _pim() -> Pim:
    # PIM and unified RBAC behind the circuit breaker shared by all requests (shared.breaker).
    return services.pim()


@bp.activity_trigger(input_name="payload", activity=PLAN_ACCESS)
def plan_access(payload: dict[str, Any]) -> dict[str, Any]:
    """What the policy says about activating, proving and removing this request's role (the orchestration
    reads no files)."""
    policy = load_configuration().policy
    request = AccessRequest.from_dict(payload["request"])
    role, timings = policy.role(request.role), policy.timings
    return {
        "role": role.name, "templateId": role.template_id, "probes": list(role.required_probes),
        "proofDeadline": role.proof_deadline.total_seconds(), "revokeSessions": role.revoke_sessions,
        "progress": timings.progress_interval.total_seconds(),
        "firstProbe": timings.probe_first_interval.total_seconds(),
        "maxProbe": timings.probe_max_interval.total_seconds(),
        "slowProbe": timings.slow_probe_interval.total_seconds(),
        "mismatch": timings.store_mismatch_threshold.total_seconds(),
        "minimumActive": timings.pim_minimum_active.total_seconds(),
        "iamConversationId": policy.escalation.iam_conversation_id,
    }  # fmt: skip


@bp.activity_trigger(input_name="payload", activity=ACTIVATE)
async def activate(payload: dict[str, Any]) -> dict[str, Any]:
    """Submit ``adminAssign``, unless an earlier attempt of this very activation already took effect: a
    retry first looks for an active or pending assignment of the responder and role (the validation chain
    found none, so one now is this request's), so one approval gives at most one activation."""
    pim, responder, role = _pim(), payload["responderId"], payload["templateId"]
    try:
        active = await pim.pim_instances(responder, role)
        pending = await pim.pending_requests(responder, role) if not active.value else None
    except DirectoryError as error:  # the look itself failed: an answer like the write's, never a raise
        return PimAnswer(
            classify(error), None, error.call, error.code, str(error), error.retry_after
        ).to_json()
    if active.value:
        return {"verdict": "exists", "requestId": "", "instances": active.value,
                "graph": active.call.__dict__}  # fmt: skip
    if pending is not None and pending.value:
        return {"verdict": "pending", "requestId": pending.value[0].id, "status": pending.value[0].kind,
                "graph": pending.call.__dict__}  # fmt: skip
    answer: PimAnswer = await pim.assign(
        responder, role, timedelta(seconds=payload["durationSeconds"]), payload["justification"],
        payload["ticketNumber"], payload["ticketSystem"],
    )  # fmt: skip
    return answer.to_json()


@bp.activity_trigger(input_name="payload", activity=RUN_PROBES)
async def run_probes(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Each required probe once, read-only; a probe that cannot read its store fails with the reason (a
    Graph outage is evidence too, never a pass)."""
    pim, responder, role = _pim(), payload["responderId"], payload["templateId"]
    results = []
    for probe in payload["probes"]:
        try:
            if probe == "pim_instance":
                found = await pim.pim_instances(responder, role)
                passed, evidence, call = bool(found.value), {"instances": found.value}, found.call
            elif probe == "unified_assignment":
                assigned = await pim.unified_assignments(responder, role)
                passed, evidence, call = bool(assigned.value), {"assignments": assigned.value}, assigned.call
            elif probe == "directory_role_member":
                members = await pim.directory_role_members(role)
                passed, evidence, call = responder.lower() in members.value, {}, members.call
            elif probe == "exchange_role_group":  # the workload's own view (shared/exchange.py)
                results.append(await exchange_role_group_probe(exchange(), responder, role))
                continue
            else:
                reason = f"probe {probe!r} is not available in this version"
                results.append({"probe": probe, "passed": False, "reason": reason, "graph": None})
                continue
        except DirectoryError as error:
            results.append({"probe": probe, "passed": False, "reason": str(error)[:300],
                            "graph": error.call.__dict__, "code": error.code,
                            "retryAfter": error.retry_after})  # fmt: skip
            continue
        results.append({"probe": probe, "passed": passed, "evidence": evidence, "graph": call.__dict__,
                        "reason": "" if passed else "not visible yet"})  # fmt: skip
    return results


@bp.activity_trigger(input_name="payload", activity=RECORD_GRANT)
def record_grant(payload: dict[str, Any]) -> dict[str, Any]:
    grant = Grant(
        grant_id=Grant.id_for(payload["requestId"], payload["path"]), request_id=payload["requestId"],
        responder_id=payload["responderId"], responder_upn=payload["responderUpn"], role_name=payload["role"],
        role_template_id=payload["templateId"], path=payload["path"],
        assignment_request_id=payload["assignmentRequestId"],
        granted_at=datetime.fromisoformat(payload["grantedAt"]),
        expires_at=datetime.fromisoformat(payload["expiresAt"]),
    )  # fmt: skip
    return grant_ledger().record(grant).to_json()


@bp.activity_trigger(input_name="payload", activity=SET_GRANT_STATE)
def set_grant_state(payload: dict[str, Any]) -> dict[str, Any]:
    return (
        grant_ledger()
        .set_removal_state(payload["grantId"], payload["state"], datetime.now(UTC), payload.get("detail", ""))
        .to_json()
    )


@bp.activity_trigger(input_name="payload", activity=REMOVE)
async def remove(payload: dict[str, Any]) -> dict[str, Any]:
    answer = await _pim().remove(payload["responderId"], payload["templateId"], payload["justification"])
    return answer.to_json()


@bp.activity_trigger(input_name="payload", activity=ASSIGN_DIRECT)
async def assign_directly(payload: dict[str, Any]) -> dict[str, Any]:
    """Break-glass: a direct unified RBAC assignment (no PIM schedule service). A retry after a write that
    took effect answers "exists" with the assignment's id, so one approval assigns once."""
    answer = await _pim().assign_direct(payload["responderId"], payload["templateId"])
    return answer.to_json()


@bp.activity_trigger(input_name="payload", activity=REMOVE_DIRECT)
async def remove_direct(payload: dict[str, Any]) -> dict[str, Any]:
    """Delete the break-glass assignment. Recorded without its id (a retried POST met the first one and the
    look-up of its id failed): the responder's direct assignments of the role are found and deleted."""
    pim = _pim()
    ids = [payload["assignmentId"]] if payload.get("assignmentId") else []
    if not ids:
        try:
            holders = await pim.role_holders(payload["templateId"])
        except DirectoryError as error:
            return PimAnswer(
                classify(error), None, error.call, error.code, str(error), error.retry_after
            ).to_json()
        responder = payload["responderId"].lower()
        ids = [h.assignment_id for h in holders.value if h.principal_id == responder and h.source == "direct"]
        if not ids:
            nothing = "the responder holds no direct assignment of the role"
            return PimAnswer("absent", None, holders.call, "", nothing).to_json()
    answer = None
    for assignment_id in ids:
        answer = await pim.remove_direct(assignment_id)
        if answer.verdict not in ("done", "absent"):
            break
    assert answer is not None
    return answer.to_json()


@bp.activity_trigger(input_name="payload", activity=REVOKE_SESSIONS)
async def revoke_sessions(payload: dict[str, Any]) -> dict[str, Any]:
    try:
        revoked = await _pim().revoke_sessions(payload["userId"])
    except DirectoryError as error:  # recorded as failed by the orchestration; the access is removed anyway
        return {"revoked": False, "code": error.code, "graph": error.call.__dict__}
    return {"revoked": revoked.value, "graph": revoked.call.__dict__}


@bp.activity_trigger(input_name="payload", activity=NOTIFY)
async def notify(payload: dict[str, Any]) -> dict[str, Any]:
    """A plain message in Teams: to the responder's 1:1 chat, or to a named conversation (IAM)."""
    connector = bot_connector()
    conversation = payload.get("conversationId") or await connector.personal_conversation(payload["userId"])
    posted = await connector.post_text(conversation, payload["text"])
    return {"conversationId": posted.conversation_id, "activityId": posted.activity_id}
