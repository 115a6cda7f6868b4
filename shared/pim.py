"""PIM writes and the stores an activation becomes visible in (design.md "Activation", "Proof of effective
access", "Revocation"; facts.md "Microsoft Graph: PIM for Entra directory roles").

- :meth:`Pim.assign` submits ``adminAssign`` with the ticket's information, the SDK's own retry off (it
  re-sends a POST after a 503 even when the POST took effect): the workflow retries, and looks for an
  existing assignment first (:meth:`Pim.find_activation`), so one approval gives at most one activation.
- :meth:`Pim.remove` submits ``adminRemove``; a second removal is a success.
- :meth:`Pim.assign_direct` and :meth:`Pim.remove_direct` are the break-glass path: a direct unified RBAC
  role assignment, which does not depend on PIM's schedule service (design.md "Break-glass").
- :meth:`Pim.role_holders` lists who holds a role tenant-wide, and through which path (the sweep).
- The probes read the three stores app-only: the PIM schedule instance, the unified RBAC role assignment and
  the directory role's members (each becomes visible at its own time).
- :func:`classify` turns every Graph answer into what the workflow does next.
- Every call goes through the shared circuit breaker (shared/breaker.py) when :class:`Pim` is given one.

Every call carries its own ``client-request-id`` and returns Graph's ``request-id`` as evidence.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

import httpx
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.expiration_pattern import ExpirationPattern
from msgraph.generated.models.expiration_pattern_type import ExpirationPatternType
from msgraph.generated.models.request_schedule import RequestSchedule
from msgraph.generated.models.ticket_info import TicketInfo
from msgraph.generated.models.unified_role_assignment import UnifiedRoleAssignment
from msgraph.generated.models.unified_role_assignment_schedule_request import (
    UnifiedRoleAssignmentScheduleRequest,
)
from msgraph.generated.models.unified_role_schedule_request_actions import UnifiedRoleScheduleRequestActions
from msgraph.generated.role_management.directory.role_assignment_schedule_instances.role_assignment_schedule_instances_request_builder import (  # noqa: E501
    RoleAssignmentScheduleInstancesRequestBuilder,
)
from msgraph.generated.role_management.directory.role_assignments.role_assignments_request_builder import (
    RoleAssignmentsRequestBuilder,
)

from shared.audit import GraphCall
from shared.breaker import CircuitBreaker
from shared.directory import (
    DirectoryError,
    EntraDirectory,
    RoleSchedule,
    Traced,
    _principal_and_role,
    _quoted,
    _require_guid,
)
from shared.durations import format_duration

__all__ = [
    "ACTIVE_STATUSES",
    "CIRCUIT_OPEN",
    "GRAPH",
    "PIM_SERVICE",
    "Pim",
    "PimAnswer",
    "RoleHolder",
    "ScheduleRequest",
    "classify",
]

T = TypeVar("T")

# Statuses of a schedule request after which nothing more will happen (facts.md); unknown ones are pending.
TERMINAL_STATUSES = frozenset({"Provisioned", "Denied", "Failed", "Canceled", "Revoked"})
ACTIVE_STATUSES = frozenset({"Provisioned"})
REQUESTS_PATH = "/roleManagement/directory/roleAssignmentScheduleRequests"
UNIFIED_PATH = "/roleManagement/directory/roleAssignments"
INSTANCES_PATH = "/roleManagement/directory/roleAssignmentScheduleInstances"
# The circuit breaker's dependencies: PIM's schedule service (requests and instances), and the rest of Graph
# (unified RBAC, directory roles, users), so that an outage of the one does not stop the other.
PIM_SERVICE = "graph-pim"
GRAPH = "graph"
_DEPENDENCY_NAMES = {PIM_SERVICE: "Graph (PIM schedule service)", GRAPH: "Graph (unified RBAC and directory)"}
# The code of a call the breaker refused: nothing was sent (its GraphCall has status 0).
CIRCUIT_OPEN = "CircuitOpen"

logger = logging.getLogger(__name__)
# Unified role assignment ids are opaque (base64url-like, not GUIDs): a path segment, nothing more.
_ASSIGNMENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")

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
    assignment_id: str = ""  # the direct path's unified role assignment (there is no schedule request)

    @property
    def retryable(self) -> bool:
        return self.verdict in ("not_found", "throttled", "unavailable")

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "requestId": self.request.id if self.request else self.assignment_id,
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


@dataclass(frozen=True)
class RoleHolder:
    """Someone who holds a role tenant-wide (scope "/"), and how: ``pim`` (a time-bound PIM schedule;
    ``assignment_id`` is the schedule instance's id, removed with ``adminRemove``) or ``direct`` (a unified
    RBAC assignment no time-bound PIM schedule stands for; ``assignment_id`` is that assignment's id, removed
    with ``DELETE roleAssignments/{id}``)."""

    principal_id: str
    source: Literal["pim", "direct"]
    assignment_id: str


def _conflict(error: DirectoryError) -> bool:
    """Graph's answer to a direct assignment that already exists: 400 ``Request_BadRequest`` (or 409) "A
    conflicting object with one or more of the specified property values is present in the directory."
    (what users report for ``POST roleAssignments``; no dedicated code)."""
    if error.code == "RoleAssignmentExists":
        return True
    return error.call.status in (400, 409) and "conflicting object" in str(error).lower()


def _request(item: UnifiedRoleAssignmentScheduleRequest) -> ScheduleRequest:
    action = item.action.value if item.action is not None else ""
    return ScheduleRequest(
        id=str(item.id or ""), status=str(item.status or ""), action=str(action),
        principal_id=str(item.principal_id or ""), role_definition_id=str(item.role_definition_id or ""),
    )  # fmt: skip


class Pim:
    """PIM and unified RBAC through msgraph-sdk, behind the shared circuit breaker when one is given.

    Before each Graph call the breaker is asked (:data:`PIM_SERVICE` for PIM's schedule service, :data:`GRAPH`
    for the rest, so that a PIM outage does not block the break-glass path, which design.md makes
    independent of it). Refused, a write answers ``unavailable`` with code ``CircuitOpen`` and a read raises
    :class:`DirectoryError` with that code; neither sends anything (the call's status is 0). After each call
    its outcome is recorded: 429, 5xx and transport errors count as failures, any other answer (4xx
    included) as a success. ``on_open`` runs once when this process's call opened a breaker (the notice
    to IAM); the breaker makes sure that only one caller per outage sees the opening."""

    def __init__(self, directory: EntraDirectory, breaker: CircuitBreaker | None = None,
                 on_open: Callable[[str], Awaitable[None]] | None = None) -> None:  # fmt: skip
        self._directory = directory
        self._client = directory.client
        self._breaker = breaker
        self._on_open = on_open

    # --- the breaker around every call -----------------------------------------------------------------

    async def _guarded(self, dependency: str, method: str, path: str, send: Callable[[], Awaitable[T]]) -> T:
        if self._breaker is not None:
            decision = await asyncio.to_thread(self._breaker.allow, dependency)
            if not decision.allowed:
                until = decision.retry_at.isoformat() if decision.retry_at else "later"
                raise DirectoryError(
                    f"not calling Graph {method} {path}: the circuit breaker for {dependency} is open after "
                    f"repeated failures (next trial at {until})",
                    CIRCUIT_OPEN, GraphCall(method, path, 0), decision.retry_after,
                )  # fmt: skip
        try:
            value = await send()
        except DirectoryError as error:
            await self._record(dependency, not _outage(error.call.status), str(error))
            raise
        except httpx.TransportError as error:
            # No answer (a timeout, a reset): a write may still have taken effect. Classified like a 5xx
            # (status 0: "unavailable"), so the workflow looks before it writes again.
            failure = f"Graph {method} {path}: no answer ({type(error).__name__})"
            await self._record(dependency, False, failure)
            raise DirectoryError(failure, "TransportError", GraphCall(method, path, 0)) from error
        await self._record(dependency, True, "")
        return value

    async def _record(self, dependency: str, ok: bool, failure: str) -> None:
        if self._breaker is None:
            return
        transition = await asyncio.to_thread(self._breaker.record, dependency, ok)
        if transition is None:
            return
        if transition.kind == "closed":
            logger.info(
                "circuit breaker closed", extra={"dependency": dependency, "outage": transition.outage}
            )
            return
        until = transition.retry_at.isoformat() if transition.retry_at else "later"
        detail = (
            f"Circuit breaker for {_DEPENDENCY_NAMES.get(dependency, dependency)} opened at "
            f"{transition.at.isoformat()} after {transition.failures} consecutive failed calls (outage "
            f"{transition.outage}). Requests stop calling it until {until}, then one trial call decides; "
            f"their deadlines keep running. Last failure: {failure[:400]}"
        )
        logger.warning(
            "circuit breaker opened", extra={"dependency": dependency, "outage": transition.outage}
        )
        if self._on_open is None:
            return
        try:
            await self._on_open(detail)
        except Exception:
            # The notice must not turn this call's answer into an error: the opening is in the breaker's
            # row and in this log either way.
            logger.exception(
                "the circuit breaker notice could not be delivered", extra={"dependency": dependency}
            )

    async def _traced(self, dependency: str, method: str, path: str,
                      send: Callable[[RequestConfiguration[Any]], Awaitable[T]], query: Any = None, *,
                      sdk_retries: bool = True, success_status: int = 200) -> Traced[T]:  # fmt: skip
        return await self._guarded(dependency, method, path, lambda: self._directory.traced(
            method, path, send, query, sdk_retries=sdk_retries, success_status=success_status))  # fmt: skip

    # --- PIM writes ------------------------------------------------------------------------------------

    async def _write(self, body: UnifiedRoleAssignmentScheduleRequest) -> PimAnswer:
        builder = self._client.role_management.directory.role_assignment_schedule_requests
        try:
            traced = await self._traced(
                PIM_SERVICE, "POST", REQUESTS_PATH, lambda c: builder.post(body, request_configuration=c),
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
        traced = await self._traced(
            PIM_SERVICE,
            "GET",
            f"{REQUESTS_PATH}/{request_id}",
            lambda c: builder.get(request_configuration=c),
        )
        if traced.value is None:
            raise DirectoryError(
                f"schedule request {request_id} came back empty", "EmptyResponse", traced.call
            )
        return Traced(_request(traced.value), traced.call)

    async def pending_requests(self, principal_id: str, role_template_id: str) -> Traced[list[RoleSchedule]]:
        """Schedule requests for the principal and role that PIM has not decided yet (behind the breaker)."""
        return await self._guarded(
            PIM_SERVICE, "GET", REQUESTS_PATH,
            lambda: self._directory.pending_requests(principal_id, role_template_id),
        )  # fmt: skip

    # --- break-glass: a direct unified RBAC assignment -------------------------------------------------

    async def assign_direct(self, principal_id: str, role_template_id: str) -> PimAnswer:
        """A permanent role assignment straight in the unified RBAC store (no PIM schedule service): the
        break-glass path. The SDK's retry is off, as for ``adminAssign``; a retried POST meets its first
        one as "exists", whose answer carries the existing assignment's id when the store shows it."""
        _require_guid(principal_id)
        _require_guid(role_template_id)
        body = UnifiedRoleAssignment(
            principal_id=principal_id, role_definition_id=role_template_id, directory_scope_id="/"
        )
        builder = self._client.role_management.directory.role_assignments
        try:
            traced = await self._traced(
                GRAPH, "POST", UNIFIED_PATH, lambda c: builder.post(body, request_configuration=c),
                sdk_retries=False, success_status=201,
            )  # fmt: skip
        except DirectoryError as error:
            if not _conflict(error):
                return PimAnswer(classify(error), None, error.call, error.code, str(error), error.retry_after)
            existing = await self._existing_direct(principal_id, role_template_id)
            return PimAnswer("exists", None, error.call, error.code, str(error), assignment_id=existing)
        assignment_id = str(traced.value.id or "") if traced.value else ""
        return PimAnswer("done", None, traced.call, assignment_id=assignment_id)

    async def _existing_direct(self, principal_id: str, role_template_id: str) -> str:
        # Best effort: the conflict is the answer; the id only saves the caller a read (a store that does
        # not show the assignment yet, or a failing read, leaves the lookup to the caller).
        try:
            found = await self.unified_assignments(principal_id, role_template_id)
        except DirectoryError:
            return ""
        return found.value[0] if found.value else ""

    async def remove_direct(self, assignment_id: str) -> PimAnswer:
        """Delete a unified RBAC assignment; 404 (already gone) is "absent", a success."""
        if not _ASSIGNMENT_ID.match(assignment_id):
            raise ValueError(f"{assignment_id!r} is not a role assignment id")
        builder = self._client.role_management.directory.role_assignments.by_unified_role_assignment_id(
            assignment_id
        )
        try:
            traced = await self._traced(
                GRAPH, "DELETE", f"{UNIFIED_PATH}/{assignment_id}",
                lambda c: builder.delete(request_configuration=c), sdk_retries=False, success_status=204,
            )  # fmt: skip
        except DirectoryError as error:
            verdict: Verdict = "absent" if error.call.status == 404 else classify(error)
            return PimAnswer(verdict, None, error.call, error.code, str(error), error.retry_after,
                             assignment_id=assignment_id)  # fmt: skip
        return PimAnswer("done", None, traced.call, assignment_id=assignment_id)

    async def role_holders(self, role_template_id: str) -> Traced[list[RoleHolder]]:
        """Everyone who holds the role at scope "/" now, each once, with the path it came through.

        The rule: a PIM schedule instance with an end, or an ``Activated`` one (a time-bound assignment or
        an activation: only PIM's schedule service makes those) is a ``pim`` holder, by the instance's id.
        Every unified RBAC assignment of the role is a ``direct`` holder, by its id, unless its principal is
        a ``pim`` holder (the PIM schedule and the unified assignment it produced are one grant). PIM also
        lists a permanent direct assignment, as an ``Assigned`` instance without an end: such an instance
        counts as ``direct`` under its ``roleAssignmentOriginId`` (the unified id), which also catches one
        the unified store does not show yet. The evidence is the last call made (the unified store's)."""
        _require_guid(role_template_id)
        expression = f"roleDefinitionId eq {_quoted(role_template_id)} and directoryScopeId eq '/'"
        instances_query = RoleAssignmentScheduleInstancesRequestBuilder.RoleAssignmentScheduleInstancesRequestBuilderGetQueryParameters(  # noqa: E501
            filter=expression
        )
        directory = self._client.role_management.directory
        instances, _ = await self._pages(
            PIM_SERVICE, INSTANCES_PATH, directory.role_assignment_schedule_instances, instances_query
        )
        assignments_query = RoleAssignmentsRequestBuilder.RoleAssignmentsRequestBuilderGetQueryParameters(
            filter=expression
        )
        assignments, call = await self._pages(
            GRAPH, UNIFIED_PATH, directory.role_assignments, assignments_query
        )
        holders: list[RoleHolder] = []
        through_pim: set[str] = set()
        direct: dict[str, RoleHolder] = {}
        for item in instances:
            principal = str(item.principal_id or "").lower()
            if (item.directory_scope_id or "/") != "/" or not principal:
                continue
            if item.end_date_time is not None or str(item.assignment_type or "") == "Activated":
                through_pim.add(principal)
                holders.append(RoleHolder(principal, "pim", str(item.id)))
            elif item.role_assignment_origin_id:
                origin = str(item.role_assignment_origin_id)
                direct[origin] = RoleHolder(principal, "direct", origin)
        for item in assignments:
            principal = str(item.principal_id or "").lower()
            if (item.directory_scope_id or "/") == "/" and principal and item.id:
                direct[str(item.id)] = RoleHolder(principal, "direct", str(item.id))
        holders.extend(h for h in direct.values() if h.principal_id not in through_pim)
        return Traced(holders, call)

    async def _pages(
        self, dependency: str, path: str, builder: Any, query: Any
    ) -> tuple[list[Any], GraphCall]:
        """Every item of a collection, following ``@odata.nextLink`` (a tenant may have many holders)."""
        items: list[Any] = []
        traced: Traced[Any] = await self._traced(dependency, "GET", path, _get(builder), query)
        while True:
            page = traced.value
            items.extend((page.value or []) if page else [])
            next_link = page.odata_next_link if page else None
            if not next_link:
                return items, traced.call
            traced = await self._traced(dependency, "GET", path, _get(builder.with_url(next_link)))

    # --- the stores (probes) --------------------------------------------------------------------------

    async def pim_instances(self, principal_id: str, role_template_id: str) -> Traced[list[str]]:
        """Active schedule instances (PIM's own view) of this principal and role: their ids."""
        found = await self._guarded(
            PIM_SERVICE, "GET", INSTANCES_PATH,
            lambda: self._directory.active_assignments(principal_id, role_template_id),
        )  # fmt: skip
        return Traced([s.id for s in found.value if s.directory_scope_id == "/"], found.call)

    async def unified_assignments(self, principal_id: str, role_template_id: str) -> Traced[list[str]]:
        """Role assignments in the unified RBAC store (what authorisation reads): their ids."""
        builder = self._client.role_management.directory.role_assignments
        query = RoleAssignmentsRequestBuilder.RoleAssignmentsRequestBuilderGetQueryParameters(
            filter=_principal_and_role(principal_id, role_template_id)
        )
        traced = await self._traced(
            GRAPH, "GET", UNIFIED_PATH, lambda c: builder.get(request_configuration=c), query
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
            traced = await self._traced(GRAPH, "GET", path, lambda c: builder.get(request_configuration=c))
        except DirectoryError as error:
            if error.call.status == 404:  # the role was never activated in this tenant: no members
                return Traced(frozenset(), error.call)
            raise
        items = list(traced.value.value or []) if traced.value else []
        return Traced(frozenset(str(i.id).lower() for i in items), traced.call)

    async def revoke_sessions(self, user_id: str) -> Traced[bool]:
        _require_guid(user_id)
        builder = self._client.users.by_user_id(user_id).revoke_sign_in_sessions
        traced = await self._traced(
            GRAPH, "POST", f"/users/{user_id}/revokeSignInSessions",
            lambda c: builder.post(request_configuration=c),
        )  # fmt: skip
        return Traced(bool(traced.value.value) if traced.value else False, traced.call)


def _get(builder: Any) -> Callable[[RequestConfiguration[Any]], Awaitable[Any]]:
    async def send(config: RequestConfiguration[Any]) -> Any:
        return await builder.get(request_configuration=config)

    return send


def _outage(status: int) -> bool:
    """Answers that count against the breaker: throttled, unavailable, or no answer at all."""
    return status == 429 or status >= 500 or status == 0
