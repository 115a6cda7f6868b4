"""PIM writes and the stores an activation becomes visible in (design.md "Activation", "Proof of effective
access", "Revocation"; facts.md "Microsoft Graph: PIM for Entra directory roles").

- :meth:`Pim.assign` submits ``adminAssign`` with the ticket's information, the SDK's own retry off (it
  re-sends a POST after a 503 even when the POST took effect): the workflow retries, and looks for an
  existing assignment first (:meth:`Pim.find_activation`), so one approval gives at most one activation.
- :meth:`Pim.remove` submits ``adminRemove``; a second removal is a success.
- The probes read the three stores app-only: the PIM schedule instance, the unified RBAC role assignment and
  the directory role's members (each becomes visible at its own time).
- :func:`classify` turns every Graph answer into what the workflow does next.

Every call carries its own ``client-request-id`` and returns Graph's ``request-id`` as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from msgraph.generated.models.expiration_pattern import ExpirationPattern
from msgraph.generated.models.expiration_pattern_type import ExpirationPatternType
from msgraph.generated.models.request_schedule import RequestSchedule
from msgraph.generated.models.ticket_info import TicketInfo
from msgraph.generated.models.unified_role_assignment_schedule_request import (
    UnifiedRoleAssignmentScheduleRequest,
)
from msgraph.generated.models.unified_role_schedule_request_actions import UnifiedRoleScheduleRequestActions
from msgraph.generated.role_management.directory.role_assignments.role_assignments_request_builder import (
    RoleAssignmentsRequestBuilder,
)

from shared.audit import GraphCall
from shared.directory import DirectoryError, EntraDirectory, Traced, _principal_and_role, _require_guid
from shared.durations import format_duration

__all__ = ["ACTIVE_STATUSES", "Pim", "PimAnswer", "ScheduleRequest", "classify"]

# Statuses of a schedule request after which nothing more will happen (facts.md); unknown ones are pending.
TERMINAL_STATUSES = frozenset({"Provisioned", "Denied", "Failed", "Canceled", "Revoked"})
ACTIVE_STATUSES = frozenset({"Provisioned"})

Verdict = Literal[
    "done",  # the write took effect
    "exists",  # already assigned: after a retried POST, usually our first POST (verify, then success)
    "absent",  # a removal of something not there: a second removal, a success
    "pending",  # a request is already pending: follow it
    "too_soon",  # PIM's 5-minute minimum: schedule the removal, do not fail
    "policy",  # a PIM policy rule refused it: not retryable, IAM must see which rule
    "auth_context",  # the role needs an authentication context the app cannot satisfy
    "not_found",  # 404, e.g. a user created a minute ago (replication lag): retry a few times
    "throttled",  # 429: wait Retry-After
    "unavailable",  # 5xx: retry with backoff
    "failed",  # anything else: not retryable
]

_BY_CODE: dict[str, Verdict] = {
    "RoleAssignmentExists": "exists",
    "RoleAssignmentDoesNotExist": "absent",
    "PendingRoleAssignmentRequest": "pending",
    "ActiveDurationTooShort": "too_soon",
    "RoleAssignmentRequestPolicyValidationFailed": "policy",
    "RoleAssignmentRequestAcrsValidationFailed": "auth_context",
}


@dataclass(frozen=True)
class ScheduleRequest:
    id: str
    status: str
    action: str
    principal_id: str
    role_definition_id: str

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class PimAnswer:
    """What a PIM write came to: the verdict, the request when there is one, the call, Graph's words."""

    verdict: Verdict
    request: ScheduleRequest | None
    call: GraphCall
    code: str = ""
    message: str = ""
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.verdict in ("not_found", "throttled", "unavailable")

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "requestId": self.request.id if self.request else "",
            "status": self.request.status if self.request else "",
            "code": self.code,
            "message": self.message[:500],
            "retryAfter": self.retry_after,
            "graph": self.call.__dict__,
        }


def classify(error: DirectoryError) -> Verdict:
    """The verdict for a failed Graph call (facts.md: errors worth classifying, never treated alike)."""
    if error.code in _BY_CODE:
        return _BY_CODE[error.code]
    status = error.call.status
    if status == 429:
        return "throttled"
    if status >= 500 or status == 0:
        return "unavailable"
    if status == 404:
        return "not_found"
    return "failed"


def _request(item: UnifiedRoleAssignmentScheduleRequest) -> ScheduleRequest:
    action = item.action.value if item.action is not None else ""
    return ScheduleRequest(
        id=str(item.id or ""), status=str(item.status or ""), action=str(action),
        principal_id=str(item.principal_id or ""), role_definition_id=str(item.role_definition_id or ""),
    )  # fmt: skip


class Pim:
    def __init__(self, directory: EntraDirectory) -> None:
        self._directory = directory
        self._client = directory.client

    async def _write(self, body: UnifiedRoleAssignmentScheduleRequest) -> PimAnswer:
        path = "/roleManagement/directory/roleAssignmentScheduleRequests"
        builder = self._client.role_management.directory.role_assignment_schedule_requests
        try:
            traced = await self._directory.traced(
                "POST", path, lambda c: builder.post(body, request_configuration=c),
                sdk_retries=False, success_status=201,
            )  # fmt: skip
        except DirectoryError as error:
            return PimAnswer(classify(error), None, error.call, error.code, str(error), error.retry_after)
        request = _request(traced.value) if traced.value else None
        return PimAnswer("done", request, traced.call)

    async def assign(self, principal_id: str, role_template_id: str, duration: timedelta, justification: str,
                     ticket_number: str, ticket_system: str) -> PimAnswer:  # fmt: skip
        """``adminAssign`` for ``duration`` from now, with the ticket's number and system."""
        _require_guid(principal_id)
        _require_guid(role_template_id)
        body = UnifiedRoleAssignmentScheduleRequest(
            action=UnifiedRoleScheduleRequestActions.AdminAssign, principal_id=principal_id,
            role_definition_id=role_template_id, directory_scope_id="/", justification=justification[:500],
            # An ISO 8601 string, not a timedelta: msgraph-sdk writes a timedelta as "2:00:00", which Graph
            # refuses (msgraph-sdk-python issue #1262); a string goes out unchanged ("PT2H").
            schedule_info=RequestSchedule(expiration=ExpirationPattern(
                type=ExpirationPatternType.AfterDuration, duration=format_duration(duration))),  # type: ignore[arg-type]
            ticket_info=TicketInfo(ticket_number=ticket_number, ticket_system=ticket_system),
        )  # fmt: skip
        return await self._write(body)

    async def remove(self, principal_id: str, role_template_id: str, justification: str) -> PimAnswer:
        _require_guid(principal_id)
        _require_guid(role_template_id)
        body = UnifiedRoleAssignmentScheduleRequest(
            action=UnifiedRoleScheduleRequestActions.AdminRemove, principal_id=principal_id,
            role_definition_id=role_template_id, directory_scope_id="/", justification=justification[:500],
        )  # fmt: skip
        return await self._write(body)

    async def get_request(self, request_id: str) -> Traced[ScheduleRequest]:
        _require_guid(request_id)
        builder = self._client.role_management.directory.role_assignment_schedule_requests.by_unified_role_assignment_schedule_request_id(  # noqa: E501
            request_id
        )
        traced = await self._directory.traced(
            "GET", f"/roleManagement/directory/roleAssignmentScheduleRequests/{request_id}",
            lambda c: builder.get(request_configuration=c),
        )  # fmt: skip
        if traced.value is None:
            raise DirectoryError(
                f"schedule request {request_id} came back empty", "EmptyResponse", traced.call
            )
        return Traced(_request(traced.value), traced.call)

    # --- the stores (probes) --------------------------------------------------------------------------

    async def pim_instances(self, principal_id: str, role_template_id: str) -> Traced[list[str]]:
        """Active schedule instances (PIM's own view) of this principal and role: their ids."""
        found = await self._directory.active_assignments(principal_id, role_template_id)
        return Traced([s.id for s in found.value if s.directory_scope_id == "/"], found.call)

    async def unified_assignments(self, principal_id: str, role_template_id: str) -> Traced[list[str]]:
        """Role assignments in the unified RBAC store (what authorisation reads): their ids."""
        builder = self._client.role_management.directory.role_assignments
        query = RoleAssignmentsRequestBuilder.RoleAssignmentsRequestBuilderGetQueryParameters(
            filter=_principal_and_role(principal_id, role_template_id)
        )
        path = "/roleManagement/directory/roleAssignments"
        traced = await self._directory.traced(
            "GET", path, lambda c: builder.get(request_configuration=c), query
        )
        items = list(traced.value.value or []) if traced.value else []
        return Traced([str(i.id) for i in items if (i.directory_scope_id or "/") == "/"], traced.call)

    async def directory_role_members(self, role_template_id: str) -> Traced[frozenset[str]]:
        """Members of the activated directory role object (``/directoryRoles(roleTemplateId=...)``)."""
        _require_guid(role_template_id)
        path = f"/directoryRoles(roleTemplateId='{role_template_id}')/members"
        # msgraph-sdk has no builder for members by the alternate key: the members builder on that URL.
        builder = self._client.directory_roles.by_directory_role_id("x").members.with_url(
            self._client.request_adapter.base_url.rstrip("/") + path
        )
        try:
            traced = await self._directory.traced("GET", path, lambda c: builder.get(request_configuration=c))
        except DirectoryError as error:
            if error.call.status == 404:  # the role was never activated in this tenant: no members
                return Traced(frozenset(), error.call)
            raise
        items = list(traced.value.value or []) if traced.value else []
        return Traced(frozenset(str(i.id).lower() for i in items), traced.call)

    async def revoke_sessions(self, user_id: str) -> Traced[bool]:
        _require_guid(user_id)
        builder = self._client.users.by_user_id(user_id).revoke_sign_in_sessions
        traced = await self._directory.traced(
            "POST", f"/users/{user_id}/revokeSignInSessions", lambda c: builder.post(request_configuration=c)
        )
        return Traced(bool(traced.value.value) if traced.value else False, traced.call)
