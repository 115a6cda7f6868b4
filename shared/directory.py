"""Microsoft Graph reads the validation chain needs: the responder's identity, group membership, and the
responder's PIM eligibility and assignments for a role (design.md "Validation chain").

Every call sends its own ``client-request-id`` and returns, beside its value, a :class:`GraphCall` with
Graph's ``request-id``: the evidence an audit row records and Microsoft support asks for. Graph errors
(``ODataError``) are translated here into :class:`DirectoryError` with the code, status and ids.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options.headers_inspection_handler_option import HeadersInspectionHandlerOption
from kiota_http.middleware.options.retry_handler_option import RetryHandlerOption
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.role_management.directory.role_assignment_schedule_instances.role_assignment_schedule_instances_request_builder import (  # noqa: E501
    RoleAssignmentScheduleInstancesRequestBuilder,
)
from msgraph.generated.role_management.directory.role_assignment_schedule_requests.role_assignment_schedule_requests_request_builder import (  # noqa: E501
    RoleAssignmentScheduleRequestsRequestBuilder,
)
from msgraph.generated.role_management.directory.role_eligibility_schedule_instances.role_eligibility_schedule_instances_request_builder import (  # noqa: E501
    RoleEligibilityScheduleInstancesRequestBuilder,
)
from msgraph.generated.users.item.check_member_groups.check_member_groups_post_request_body import (
    CheckMemberGroupsPostRequestBody,
)
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient

from shared.audit import GraphCall

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# Statuses of a schedule request that mean "not decided yet" (facts.md: unknown values count as pending).
# (Granted is not final: the request can still be canceled and is not provisioned yet.)
_TERMINAL_REQUEST_STATUSES = frozenset({"Provisioned", "Denied", "Failed", "Canceled", "Revoked"})
# An apostrophe is legal in a UPN or mail (o'brien@...): _quoted escapes it for OData.
_IDENTIFIER = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

T = TypeVar("T")


class DirectoryError(RuntimeError):
    """A Graph call failed; ``code`` is Graph's error code, ``call`` carries the correlation ids,
    ``retry_after`` the seconds Graph asked us to wait (429/503), when it said."""

    def __init__(self, message: str, code: str, call: GraphCall, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.call = call
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        # 429, 5xx, or no answer at all (status 0: a transport error, or our circuit breaker refusing).
        return self.call.status in (0, 429) or self.call.status >= 500


@dataclass(frozen=True)
class Traced(Generic[T]):
    """A value read from Graph and the call that read it."""

    value: T
    call: GraphCall


@dataclass(frozen=True)
class DirectoryUser:
    id: str
    user_principal_name: str
    mail: str | None
    display_name: str
    account_enabled: bool


@dataclass(frozen=True)
class RoleSchedule:
    """An eligibility or assignment schedule instance (or a pending schedule request)."""

    id: str
    principal_id: str
    role_definition_id: str
    directory_scope_id: str
    kind: str  # assignmentType/memberType for instances, the status for requests
    start: str | None
    end: str | None


def graph_client(graph_base_url: str, credential: TokenCredential) -> GraphServiceClient:
    """msgraph-sdk against ``graph_base_url`` (Graph, a national cloud, or the local simulator)."""
    host = urlsplit(graph_base_url).hostname or ""
    # Without the host in allowed_hosts the provider silently sends no Authorization header (facts.md).
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE], allowed_hosts=[host])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = graph_base_url
    return GraphServiceClient(request_adapter=adapter)


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"  # OData string literal


class EntraDirectory:
    def __init__(self, client: GraphServiceClient) -> None:
        self._client = client

    @property
    def client(self) -> GraphServiceClient:
        return self._client

    async def traced(
        self, method: str, path: str, send: Callable[[RequestConfiguration[Any]], Awaitable[T]],
        query: Any = None, *, sdk_retries: bool = True, success_status: int = 200,
    ) -> Traced[T]:  # fmt: skip
        """Run one Graph call with our own ``client-request-id`` and return it with its evidence.

        ``sdk_retries=False`` turns the SDK's own retry off for this call: it re-sends a POST after a
        503 even when the POST took effect (facts.md), so writes are retried by the workflow instead,
        which first looks for what the earlier attempt did."""
        client_request_id = str(uuid.uuid4())
        inspection = HeadersInspectionHandlerOption(inspect_request_headers=False)
        options: list[Any] = [inspection]
        if not sdk_retries:
            options.append(RetryHandlerOption(max_retries=0, should_retry=False))
        config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query, options=options)
        config.headers.add("client-request-id", client_request_id)
        try:
            value = await send(config)
        except ODataError as error:
            status = error.response_status_code or 0
            call = GraphCall(method, path, status, _header(inspection, "request-id"), client_request_id)
            code = error.error.code if error.error and error.error.code else "unknown"
            detail = error.error.message if error.error and error.error.message else str(error)
            raise DirectoryError(
                f"Graph {method} {path} failed ({status} {code}): {detail}",
                code,
                call,
                _retry_after(_header(inspection, "retry-after")),
            ) from None
        # msgraph-sdk does not expose a success status: the caller says what its call answers.
        call = GraphCall(method, path, success_status, _header(inspection, "request-id"), client_request_id)
        return Traced(value, call)

    async def find_user(self, identifier: str) -> Traced[DirectoryUser | None]:
        """The user whose UPN or mail is exactly ``identifier`` (no fuzzy matching; design.md "People")."""
        if not _IDENTIFIER.match(identifier):
            raise ValueError(f"{identifier!r} is not a user principal name or mail address")
        expression = f"userPrincipalName eq {_quoted(identifier)} or mail eq {_quoted(identifier)}"
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            filter=expression, select=["id", "userPrincipalName", "mail", "displayName", "accountEnabled"]
        )
        traced = await self.traced(
            "GET", "/users", lambda c: self._client.users.get(request_configuration=c), query
        )
        users = list(traced.value.value or []) if traced.value else []
        wanted = identifier.casefold()
        exact = [
            u
            for u in users
            if wanted in ((u.user_principal_name or "").casefold(), (u.mail or "").casefold())
        ]
        if len(exact) > 1:
            raise DirectoryError(f"{identifier!r} matches {len(exact)} users; refusing to guess",
                                 "AmbiguousUser", traced.call)  # fmt: skip
        if not exact:
            return Traced(None, traced.call)
        user = exact[0]
        return Traced(
            DirectoryUser(
                id=str(user.id), user_principal_name=str(user.user_principal_name), mail=user.mail,
                display_name=str(user.display_name or ""), account_enabled=bool(user.account_enabled),
            ),
            traced.call,
        )  # fmt: skip

    async def get_user(self, user_id: str) -> Traced[DirectoryUser | None]:
        """The user with object id ``user_id`` (an approver named by a verified token), or None."""
        _require_guid(user_id)
        query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
            select=["id", "userPrincipalName", "mail", "displayName", "accountEnabled"]
        )
        builder = self._client.users.by_user_id(user_id)
        try:
            traced = await self.traced(
                "GET", f"/users/{user_id}", lambda c: builder.get(request_configuration=c), query
            )
        except DirectoryError as error:
            if error.call.status == 404:
                return Traced(None, error.call)
            raise
        user = traced.value
        if user is None:
            return Traced(None, traced.call)
        return Traced(
            DirectoryUser(
                id=str(user.id), user_principal_name=str(user.user_principal_name), mail=user.mail,
                display_name=str(user.display_name or ""), account_enabled=bool(user.account_enabled),
            ),
            traced.call,
        )  # fmt: skip

    async def member_groups(self, user_id: str, group_ids: list[str]) -> Traced[frozenset[str]]:
        """Which of ``group_ids`` the user belongs to, transitively (checkMemberGroups)."""
        for value in (user_id, *group_ids):
            _require_guid(value)
        body = CheckMemberGroupsPostRequestBody(group_ids=group_ids)
        builder = self._client.users.by_user_id(user_id).check_member_groups
        traced = await self.traced(
            "POST",
            f"/users/{user_id}/checkMemberGroups",
            lambda c: builder.post(body, request_configuration=c),
        )
        found = frozenset(str(g).lower() for g in (traced.value.value or [])) if traced.value else frozenset()
        return Traced(found, traced.call)

    async def role_eligibilities(self, user_id: str, role_template_id: str) -> Traced[list[RoleSchedule]]:
        builder = self._client.role_management.directory.role_eligibility_schedule_instances
        traced = await self._schedules("roleEligibilityScheduleInstances", builder, user_id, role_template_id,
                                       RoleEligibilityScheduleInstancesRequestBuilder)  # fmt: skip
        return Traced([_schedule(i, str(i.member_type or "")) for i in traced.value], traced.call)

    async def active_assignments(self, user_id: str, role_template_id: str) -> Traced[list[RoleSchedule]]:
        builder = self._client.role_management.directory.role_assignment_schedule_instances
        traced = await self._schedules("roleAssignmentScheduleInstances", builder, user_id, role_template_id,
                                       RoleAssignmentScheduleInstancesRequestBuilder)  # fmt: skip
        return Traced([_schedule(i, str(i.assignment_type or "")) for i in traced.value], traced.call)

    async def pending_requests(self, user_id: str, role_template_id: str) -> Traced[list[RoleSchedule]]:
        """Schedule requests for the user and role that PIM has not decided yet."""
        builder = self._client.role_management.directory.role_assignment_schedule_requests
        traced = await self._schedules("roleAssignmentScheduleRequests", builder, user_id, role_template_id,
                                       RoleAssignmentScheduleRequestsRequestBuilder)  # fmt: skip
        pending = [i for i in traced.value if str(i.status or "") not in _TERMINAL_REQUEST_STATUSES]
        return Traced([_schedule(i, str(i.status or "")) for i in pending], traced.call)

    async def _schedules(self, collection: str, builder: Any, user_id: str, role_template_id: str,
                         builder_type: Any) -> Traced[list[Any]]:  # fmt: skip
        """One PIM collection filtered to a principal and a role (the three reads differ only in that)."""
        query_type = getattr(builder_type, f"{builder_type.__name__}GetQueryParameters")
        query = query_type(filter=_principal_and_role(user_id, role_template_id))
        traced = await self.traced("GET", f"/roleManagement/directory/{collection}",
                                    lambda c: builder.get(request_configuration=c), query)  # fmt: skip
        items = list(traced.value.value) if traced.value and traced.value.value else []
        return Traced(items, traced.call)


def _require_guid(value: str) -> None:
    if not _GUID.match(value):
        raise ValueError(f"{value!r} is not an object id (GUID)")


def _principal_and_role(user_id: str, role_template_id: str) -> str:
    _require_guid(user_id)
    _require_guid(role_template_id)
    return f"principalId eq {_quoted(user_id)} and roleDefinitionId eq {_quoted(role_template_id)}"


def _schedule(item: Any, kind: str) -> RoleSchedule:
    start = getattr(item, "start_date_time", None)
    end = getattr(item, "end_date_time", None)
    return RoleSchedule(
        id=str(item.id), principal_id=str(item.principal_id), role_definition_id=str(item.role_definition_id),
        directory_scope_id=str(item.directory_scope_id or "/"), kind=kind,
        start=start.isoformat() if start else None, end=end.isoformat() if end else None,
    )  # fmt: skip


def _retry_after(value: str) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare from Graph; the caller's own backoff applies


def _header(option: HeadersInspectionHandlerOption, name: str) -> str:
    values = option.response_headers.get(name)
    return next(iter(values), "") if values else ""
