"""Grant the app's identity what it needs outside Azure RBAC: Microsoft Graph and Exchange Online application
permissions, and two Entra directory roles (docs/deploy.md, "Permissions").

Run it once after ``azd provision``, signed in with ``az login`` as a Privileged Role Administrator::

    python -m infra.scripts.grant_permissions --principal-id $(azd env get-value APP_IDENTITY_PRINCIPAL_ID)

It reads what the identity holds, then grants what is missing, one line of output per item (``granted``,
``already present``, or ``would grant`` with ``--dry-run``). It never removes anything: what the identity
holds beyond :data:`NEEDS` is reported as a warning, for a person to judge. A second run prints only
``already present``. Any failure is one line on stderr, with Graph's error code and ``request-id``, and exit
code 1.

:data:`NEEDS` is the one list of what the app needs, each item with the calls it covers and why. A test
(tests/infra/test_grant_permissions.py) checks it against every Graph and Exchange call the app makes.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO, TypeVar

import httpx
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import AzureCliCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.app_role_assignment import AppRoleAssignment
from msgraph.generated.models.service_principal import ServicePrincipal
from msgraph.generated.models.unified_role_assignment import UnifiedRoleAssignment
from msgraph.generated.role_management.directory.role_assignments.role_assignments_request_builder import (
    RoleAssignmentsRequestBuilder,
)
from msgraph.generated.service_principals.item.service_principal_item_request_builder import (
    ServicePrincipalItemRequestBuilder,
)
from msgraph.generated.service_principals.service_principals_request_builder import (
    ServicePrincipalsRequestBuilder,
)
from msgraph.graph_service_client import GraphServiceClient

from shared.directory import DirectoryError, EntraDirectory, graph_client

__all__ = [
    "NEEDS",
    "AppPermission",
    "EntraRole",
    "GrantError",
    "Outcome",
    "grant_permissions",
    "main",
    "shape_key",
]

GRAPH_BASE_URL: Final = "https://graph.microsoft.com/v1.0"
MICROSOFT_GRAPH: Final = "00000003-0000-0000-c000-000000000000"
EXCHANGE_ONLINE: Final = "00000002-0000-0ff1-ce00-000000000000"
PRIVILEGED_ROLE_ADMINISTRATOR: Final = "e8611ab8-c189-46e8-94e1-60213ab1f814"
GLOBAL_READER: Final = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"
TENANT_SCOPE: Final = "/"

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
T = TypeVar("T")


@dataclass(frozen=True)
class AppPermission:
    """An application permission: an app role of a resource's service principal, found by its ``value``."""

    resource: str
    resource_app_id: str
    value: str
    calls: tuple[str, ...]  # what the app sends that needs it: "METHOD /path/{placeholder}"
    reason: str

    @property
    def label(self) -> str:
        return f"{self.resource} application permission {self.value}"


@dataclass(frozen=True)
class EntraRole:
    """An Entra directory role, assigned to the identity at the tenant scope ("/")."""

    name: str
    template_id: str
    calls: tuple[str, ...]
    reason: str

    @property
    def label(self) -> str:
        return f"Entra role {self.name} (directory scope /)"


Need = AppPermission | EntraRole

_USERS = ("GET /users", "GET /users/{userId}")
_CHECK_MEMBER_GROUPS = "POST /users/{userId}/checkMemberGroups"
_RM = "/roleManagement/directory"
_PIM_WRITE = f"POST {_RM}/roleAssignmentScheduleRequests"
_DIRECT_WRITES = (f"POST {_RM}/roleAssignments", f"DELETE {_RM}/roleAssignments/{{assignmentId}}")
_EXCHANGE_INVOKE = "POST /adminapi/beta/{tenantId}/InvokeCommand"

# What the app needs. Derived from every Graph call in shared/directory.py and shared/pim.py and the Exchange
# call in shared/exchange.py: for each call, the least privileged application permission Microsoft's reference
# lists for it, then one permission per set of calls (a ReadWrite permission covers its Read).
NEEDS: Final[tuple[Need, ...]] = (
    AppPermission(
        "Microsoft Graph",
        MICROSOFT_GRAPH,
        "User.Read.All",
        calls=(*_USERS, _CHECK_MEMBER_GROUPS),
        reason="Find the responder by exact UPN or mail and read an approver named by a verified Teams token "
        "(id, UPN, mail, accountEnabled). checkMemberGroups on a user needs it with GroupMember.Read.All. "
        "User.ReadBasic.All does not return accountEnabled.",
    ),
    AppPermission(
        "Microsoft Graph",
        MICROSOFT_GRAPH,
        "GroupMember.Read.All",
        calls=(_CHECK_MEMBER_GROUPS,),
        reason="Transitive group membership: the on-call roster (entra_group) and the approver groups. Reads "
        "memberships only, unlike Group.Read.All.",
    ),
    AppPermission(
        "Microsoft Graph",
        MICROSOFT_GRAPH,
        "RoleManagement.ReadWrite.Directory",
        calls=(
            *_DIRECT_WRITES,
            f"GET {_RM}/roleAssignments",
            _PIM_WRITE,
            f"GET {_RM}/roleAssignmentScheduleRequests",
            f"GET {_RM}/roleAssignmentScheduleRequests/{{requestId}}",
            f"GET {_RM}/roleAssignmentScheduleInstances",
            f"GET {_RM}/roleEligibilityScheduleInstances",
            "GET /directoryRoles(roleTemplateId='{roleTemplateId}')/members",
        ),
        reason="The break-glass path creates and deletes direct role assignments (POST and DELETE "
        "roleAssignments): no narrower application permission allows that. It also covers PIM adminAssign "
        "and adminRemove, the schedule instances and requests, eligibility, the unified store and directory "
        "role members. Alone, those would need RoleAssignmentSchedule.ReadWrite.Directory, "
        "RoleEligibilitySchedule.Read.Directory and RoleManagement.Read.Directory; granting them too would "
        "add nothing.",
    ),
    AppPermission(
        "Microsoft Graph",
        MICROSOFT_GRAPH,
        "User.RevokeSessions.All",
        calls=("POST /users/{userId}/revokeSignInSessions",),
        reason="Revocation signs the responder out everywhere when the policy says so (revoke_sessions, on "
        "for high-risk roles). Least privileged: it cannot write users, unlike User.ReadWrite.All.",
    ),
    AppPermission(
        "Office 365 Exchange Online",
        EXCHANGE_ONLINE,
        "Exchange.ManageAsApp",
        calls=(_EXCHANGE_INVOKE,),
        reason="The Exchange role-group probe calls the Exchange Online admin API app-only "
        "(Get-RoleGroupMember). It grants no Exchange rights by itself: the Entra role Global Reader does.",
    ),
    EntraRole(
        "Privileged Role Administrator",
        PRIVILEGED_ROLE_ADMINISTRATOR,
        calls=(_PIM_WRITE, *_DIRECT_WRITES),
        reason="PIM refuses adminAssign and adminRemove for directory roles, and Entra refuses direct role "
        "assignments, from a caller that does not hold it (or Global Administrator), whatever its Graph "
        "permissions. It is the least privileged role that may assign roles.",
    ),
    EntraRole(
        "Global Reader",
        GLOBAL_READER,
        calls=(_EXCHANGE_INVOKE,),
        reason="The Exchange admin API authorises an app by the Entra role in its token. "
        "Get-RoleGroupMember needs the Exchange role View-Only Configuration, which Global Reader brings, "
        "read-only (View-Only Organization Management). The other Entra roles Exchange accepts for apps can "
        "write, or are not documented to bring that role (Security Reader).",
    ),
)


def shape_key(shape: str) -> str:
    """A call shape with every placeholder as ``{id}``: ``GET /users/{userId}`` -> ``GET /users/{id}``, the
    form in which the Graph simulator summarises the calls it received."""
    return _PLACEHOLDER.sub("{id}", shape)


class GrantError(RuntimeError):
    """Why the script stopped, in one line a person can act on."""


@dataclass
class Outcome:
    """What a run did (or, with ``--dry-run``, would do), item by item, by label."""

    granted: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    would_grant: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Resource:
    """A resource's service principal and its application permissions (value: app role id)."""

    id: str
    name: str
    role_ids: dict[str, str]

    def value_of(self, role_id: str) -> str:
        return next((value for value, rid in self.role_ids.items() if rid == role_id), role_id)


class _Grants:
    """The calls the script makes, through the app's own Graph adapter (client-request-id, request-id)."""

    def __init__(self, client: GraphServiceClient) -> None:
        self._client = client
        self._directory = EntraDirectory(client)

    async def _call(
        self, method: str, path: str, send: Callable[[RequestConfiguration[Any]], Awaitable[T]],
        query: Any = None, *, write: bool = False,
    ) -> T:  # fmt: skip
        # A write is sent once: the SDK would re-send a POST after a 503 even when it took effect.
        traced = await self._directory.traced(
            method, path, send, query, sdk_retries=not write, success_status=201 if write else 200
        )
        return traced.value

    async def principal(self, principal_id: str) -> ServicePrincipal:
        builder = self._client.service_principals.by_service_principal_id(principal_id)
        query = ServicePrincipalItemRequestBuilder.ServicePrincipalItemRequestBuilderGetQueryParameters(
            select=["id", "appId", "displayName", "servicePrincipalType"]
        )
        try:
            found = await self._call(
                "GET",
                f"/servicePrincipals/{principal_id}",
                lambda c: builder.get(request_configuration=c),
                query,
            )
        except DirectoryError as error:
            if error.call.status != 404:
                raise
            raise GrantError(await self._not_a_service_principal(principal_id)) from None
        if found is None:
            raise GrantError(f"Graph returned no service principal for {principal_id}")
        return found

    async def _not_a_service_principal(self, principal_id: str) -> str:
        hint = "pass the identity's principal (object) id: azd env get-value APP_IDENTITY_PRINCIPAL_ID"
        builder = self._client.directory_objects.by_directory_object_id(principal_id)
        try:
            found = await self._call(
                "GET", f"/directoryObjects/{principal_id}", lambda c: builder.get(request_configuration=c)
            )
        except DirectoryError as error:
            if error.call.status != 404:
                raise
            found = None
        if found is None:
            return f"no service principal with object id {principal_id} in this tenant; {hint}"
        kind = (found.odata_type or "directory object").rsplit(".", 1)[-1]
        return f"{principal_id} is a {kind}, not a service principal; {hint}"

    async def resource(self, app_id: str, name: str) -> _Resource:
        query = ServicePrincipalsRequestBuilder.ServicePrincipalsRequestBuilderGetQueryParameters(
            filter=f"appId eq '{app_id}'", select=["id", "appId", "displayName", "appRoles"]
        )
        page = await self._call("GET", "/servicePrincipals", _get(self._client.service_principals), query)
        found = list(page.value or []) if page else []
        if not found or not found[0].id:
            raise GrantError(
                f"this tenant has no service principal for {name} (appId {app_id}); it appears once the "
                "service is in use in the tenant"
            )
        roles = {
            role.value: str(role.id).lower()
            for role in found[0].app_roles or []
            if role.value and role.id and role.is_enabled is not False
            and "Application" in (role.allowed_member_types or [])
        }  # fmt: skip
        return _Resource(str(found[0].id).lower(), name, roles)

    async def held_app_roles(self, principal_id: str) -> set[tuple[str, str]]:
        """(resource id, app role id) of every application permission the principal holds."""
        builder = self._client.service_principals.by_service_principal_id(principal_id).app_role_assignments
        items = await self._pages(f"/servicePrincipals/{principal_id}/appRoleAssignments", builder)
        return {(str(a.resource_id).lower(), str(a.app_role_id).lower()) for a in items}

    async def held_directory_roles(self, principal_id: str) -> set[tuple[str, str]]:
        """(role definition id, directory scope) of every active Entra role assignment of the principal."""
        builder = self._client.role_management.directory.role_assignments
        query = RoleAssignmentsRequestBuilder.RoleAssignmentsRequestBuilderGetQueryParameters(
            filter=f"principalId eq '{principal_id}'"
        )
        items = await self._pages(f"{_RM}/roleAssignments", builder, query)
        return {(str(a.role_definition_id).lower(), a.directory_scope_id or TENANT_SCOPE) for a in items}

    async def _pages(self, path: str, builder: Any, query: Any = None) -> list[Any]:
        """Every item of a collection, following ``@odata.nextLink`` as given."""
        items: list[Any] = []
        page = await self._call("GET", path, _get(builder), query)
        while page is not None:
            items.extend(page.value or [])
            if not page.odata_next_link:
                break
            page = await self._call("GET", path, _get(builder.with_url(page.odata_next_link)))
        return items

    async def grant_app_role(self, principal_id: str, resource_id: str, role_id: str) -> bool:
        """True if granted now, False if Graph says it is already there (a run in parallel)."""
        body = AppRoleAssignment(
            principal_id=uuid.UUID(principal_id),
            resource_id=uuid.UUID(resource_id),
            app_role_id=uuid.UUID(role_id),
        )
        builder = self._client.service_principals.by_service_principal_id(principal_id).app_role_assignments
        path = f"/servicePrincipals/{principal_id}/appRoleAssignments"
        try:
            await self._call("POST", path, lambda c: builder.post(body, request_configuration=c), write=True)
        except DirectoryError as error:
            # Graph's answer to a duplicate: 400 "Permission being assigned already exists on the object."
            if error.call.status == 400 and "already exists" in str(error).lower():
                return False
            raise
        return True

    async def assign_directory_role(self, principal_id: str, template_id: str) -> bool:
        body = UnifiedRoleAssignment(
            principal_id=principal_id, role_definition_id=template_id, directory_scope_id=TENANT_SCOPE
        )
        builder = self._client.role_management.directory.role_assignments
        try:
            await self._call(
                "POST",
                f"{_RM}/roleAssignments",
                lambda c: builder.post(body, request_configuration=c),
                write=True,
            )
        except DirectoryError as error:
            # "A conflicting object with one or more of the specified property values is present ..."
            if error.call.status in (400, 409) and "conflicting object" in str(error).lower():
                return False
            raise
        return True


async def grant_permissions(
    client: GraphServiceClient,
    principal_id: str,
    *,
    dry_run: bool = False,
    report: Callable[[str], None] = print,
    needs: Sequence[Need] = NEEDS,
) -> Outcome:
    """Grant ``principal_id`` (a service principal's object id) what ``needs`` lists and it lacks.

    Everything is resolved and read before the first write, so a mistake in the list or a missing resource
    stops the run with nothing changed."""
    if not _GUID.match(principal_id):
        raise GrantError(f"--principal-id must be an object id (a GUID), got {principal_id!r}")
    principal_id = principal_id.lower()
    grants = _Grants(client)
    principal = await grants.principal(principal_id)
    report(
        f"service principal {principal.display_name} ({principal.service_principal_type or 'unknown type'}), "
        f"object id {principal_id}, appId {principal.app_id}"
    )
    resources: dict[str, _Resource] = {}
    for need in needs:
        if isinstance(need, AppPermission) and need.resource_app_id not in resources:
            resources[need.resource_app_id] = await grants.resource(need.resource_app_id, need.resource)
    for need in needs:
        if isinstance(need, AppPermission) and need.value not in resources[need.resource_app_id].role_ids:
            raise GrantError(f"{need.resource} has no application permission named {need.value!r}")
    held_roles = await grants.held_app_roles(principal_id)
    held_directory_roles = await grants.held_directory_roles(principal_id)

    outcome = Outcome()
    for need in needs:
        if isinstance(need, AppPermission):
            resource = resources[need.resource_app_id]
            role_id = resource.role_ids[need.value]
            present = (resource.id, role_id) in held_roles
            write = _bind(grants.grant_app_role, principal_id, resource.id, role_id)
        else:
            present = (need.template_id.lower(), TENANT_SCOPE) in held_directory_roles
            write = _bind(grants.assign_directory_role, principal_id, need.template_id)
        if present:
            _record(outcome.present, "already present", need.label, report)
        elif dry_run:
            _record(outcome.would_grant, "would grant", need.label, report)
        elif await write():
            _record(outcome.granted, "granted", need.label, report)
        else:
            _record(outcome.present, "already present", need.label, report)

    # Least privilege is the point: anything more is shown, never removed (a person decides).
    wanted_roles = {
        (resources[n.resource_app_id].id, resources[n.resource_app_id].role_ids[n.value])
        for n in needs
        if isinstance(n, AppPermission)
    }
    for resource in resources.values():
        for held_resource, role_id in sorted(held_roles - wanted_roles):
            if held_resource == resource.id:
                label = f"{resource.name} application permission {resource.value_of(role_id)}"
                _extra(outcome, label, report)
    wanted_directory_roles = {
        (n.template_id.lower(), TENANT_SCOPE) for n in needs if isinstance(n, EntraRole)
    }
    for role_id, scope in sorted(held_directory_roles - wanted_directory_roles):
        _extra(outcome, f"Entra role {role_id} (directory scope {scope})", report)

    report(_summary(outcome, dry_run))
    return outcome


def _get(builder: Any) -> Callable[[RequestConfiguration[Any]], Awaitable[Any]]:
    async def send(config: RequestConfiguration[Any]) -> Any:
        return await builder.get(request_configuration=config)

    return send


def _bind(write: Callable[..., Awaitable[bool]], *args: str) -> Callable[[], Awaitable[bool]]:
    async def call() -> bool:
        return await write(*args)

    return call


def _record(bucket: list[str], status: str, label: str, report: Callable[[str], None]) -> None:
    bucket.append(label)
    report(f"{status:<16} {label}")


def _extra(outcome: Outcome, label: str, report: Callable[[str], None]) -> None:
    outcome.extra.append(label)
    report(f"{'warning':<16} {label} is held but not needed by the app; not removed, review it")


def _summary(outcome: Outcome, dry_run: bool) -> str:
    warnings = f"; {len(outcome.extra)} warning(s)" if outcome.extra else ""
    if dry_run:
        counts = f"{len(outcome.would_grant)} would be granted, {len(outcome.present)} already present"
        return f"dry run: {counts}, nothing changed{warnings}"
    if not outcome.granted:
        return f"nothing to grant: {len(outcome.present)} already present{warnings}"
    return f"done: {len(outcome.granted)} granted, {len(outcome.present)} already present{warnings}"


def _describe(error: DirectoryError) -> str:
    """One line: what failed, Graph's status and code, its request-id, and what to do on 401/403."""
    text = " ".join(str(error).split())
    if error.call.request_id:
        text += f" (request-id {error.call.request_id}, client-request-id {error.call.client_request_id})"
    if error.call.status in (401, 403):
        text += "; sign in (az login) as a Privileged Role Administrator or Global Administrator"
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.scripts.grant_permissions",
        description="Grant the app's identity its Microsoft Graph and Exchange Online application "
        "permissions and Entra roles (Privileged Role Administrator, Global Reader). Idempotent; never "
        "removes anything.",
    )
    parser.add_argument(
        "--principal-id",
        required=True,
        help="object id of the app's identity: azd output APP_IDENTITY_PRINCIPAL_ID",
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would be granted; change nothing")
    parser.add_argument(
        "--graph-base-url",
        default=GRAPH_BASE_URL,
        help=f"Microsoft Graph endpoint (default {GRAPH_BASE_URL})",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    credential: TokenCredential | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The command line: 0 when done (warnings included), 1 with a one-line error on stderr."""
    args = _parser().parse_args(argv)
    out = out or sys.stdout
    err = err or sys.stderr

    def report(line: str) -> None:
        print(line, file=out, flush=True)

    async def run() -> Outcome:
        # The SDK's HTTP client belongs to the event loop it was made in: make it here.
        client = graph_client(args.graph_base_url, credential or AzureCliCredential())
        return await grant_permissions(client, args.principal_id, dry_run=args.dry_run, report=report)

    try:
        asyncio.run(run())
    except GrantError as error:
        message = str(error)
    except DirectoryError as error:
        message = _describe(error)
    except ClientAuthenticationError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        message = f"no token for Microsoft Graph (run az login first): {first}"
    except httpx.HTTPError as error:
        message = f"cannot reach Microsoft Graph at {args.graph_base_url}: {type(error).__name__} {error}"
    else:
        return 0
    print(f"error: {message}", file=err, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
