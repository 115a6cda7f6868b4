"""Microsoft Graph v1.0, the part the app uses: users, groups and membership, PIM schedule instances and
schedule requests (``adminAssign``, ``adminRemove``, ``adminExtend``), the unified RBAC role assignments
(read, and the direct assignments of the break-glass path), directory roles and their members, and
``revokeSignInSessions``. For the admin script (``infra/scripts/grant_permissions.py``): service principals
(Microsoft Graph, Office 365 Exchange Online and the app's own identity, seeded with their ``appRoles``), the
application permissions granted to them (``appRoleAssignments``) and ``GET /directoryObjects/{id}``.

An assignment becomes visible in each store (PIM instances, unified RBAC, directory role members, the Exchange
role group served by ``exchange.py``) after that store's own delay, and a request goes through the statuses
its role's behaviour names (see ``pim.py``); both are set through the control API.

Responses follow the Graph reference closely enough that msgraph-sdk's typed request builders parse them:
OData collections (``@odata.context``, ``value``, ``@odata.nextLink`` when paged), ``@odata.type`` on
directory objects, OData errors (``{"error": {"code", "message", "innerError": {...}}}``), and the
``request-id``/``client-request-id`` headers on every response.

Query support is a deliberate subset: ``$filter`` with ``eq`` joined by ``and``/``or`` (and parentheses) on
the properties each collection lists, ``$select``, ``$top`` with ``@odata.nextLink`` paging and ``$count``.
Anything else (``$expand``, ``$orderby``, ``ne``, ``startswith``, lambda operators) is answered 400, so an
app that starts relying on it fails here first instead of passing against a simulator that ignored it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .common import (
    JSON,
    ConflictError,
    Fault,
    SeedError,
    Service,
    ServiceError,
    b64url,
    is_guid,
    iso_z,
    new_guid,
    optional_str,
    parse_datetime,
    read_json_body,
    reject_unknown_keys,
    require_str,
    utc_now,
)
from .pim import (
    ACTIVATING_ACTIONS,
    DEFAULT_ROLE_GROUPS,
    STORES,
    TERMINAL_STATUSES,
    WELL_KNOWN_ROLES,
    Behaviour,
    Behaviours,
    Grant,
    Timeline,
    graph_time,
    human_seconds,
    iso_ms,
    parse_duration,
    visibility,
)

PREFIX = "/graph/v1.0"

# Graph's own media type for JSON payloads; kiota picks the JSON parser from the part before ";".
ODATA_JSON = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
)

# What GET /users/{id} returns without $select (the Graph reference's default property set).
USER_DEFAULT_PROPS = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
USER_EXTRA_PROPS = (
    "accountEnabled",
    "userType",
    "employeeId",
    "department",
    "otherMails",
    "createdDateTime",
    "onPremisesSamAccountName",
)
USER_PROPS = USER_DEFAULT_PROPS + USER_EXTRA_PROPS
USER_FILTERABLE = (
    "id",
    "userPrincipalName",
    "mail",
    "displayName",
    "givenName",
    "surname",
    "accountEnabled",
    "userType",
    "employeeId",
    "onPremisesSamAccountName",
)

GROUP_PROPS = (
    "id",
    "displayName",
    "description",
    "mail",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "groupTypes",
    "createdDateTime",
)

ELIGIBILITY_PROPS = (
    "id",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "startDateTime",
    "endDateTime",
    "memberType",
    "roleEligibilityScheduleId",
)
ASSIGNMENT_PROPS = (
    "id",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "startDateTime",
    "endDateTime",
    "assignmentType",
    "memberType",
    "roleAssignmentOriginId",
    "roleAssignmentScheduleId",
)
REQUEST_PROPS = (
    "id",
    "status",
    "createdDateTime",
    "completedDateTime",
    "approvalId",
    "customData",
    "action",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "isValidationOnly",
    "targetScheduleId",
    "justification",
    "createdBy",
    "scheduleInfo",
    "ticketInfo",
)
ELIGIBILITY_FILTERABLE = (
    "id",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "memberType",
)
ASSIGNMENT_FILTERABLE = (*ELIGIBILITY_FILTERABLE, "assignmentType", "roleAssignmentOriginId")
REQUEST_FILTERABLE = (
    "id",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "status",
    "action",
    "targetScheduleId",
)

MEMBER_TYPES = ("Direct", "Group", "Inherited")
ASSIGNMENT_TYPES = ("Assigned", "Activated")
REQUEST_STATUSES = (
    "Canceled",
    "Denied",
    "Failed",
    "Granted",
    "PendingAdminDecision",
    "PendingApproval",
    "PendingProvisioning",
    "PendingScheduleCreation",
    "Provisioned",
    "Revoked",
    "ScheduleCreated",
)
REQUEST_ACTIONS = (
    "adminAssign",
    "adminUpdate",
    "adminRemove",
    "adminExtend",
    "adminRenew",
    "selfActivate",
    "selfDeactivate",
    "selfExtend",
    "selfRenew",
)

# The actions POST roleAssignmentScheduleRequests carries out; the others are answered 400 InvalidRequest.
SERVED_ACTIONS = ("adminAssign", "adminRemove", "adminExtend")
# What a schedule request body may carry (anything else: 400, as OData refuses an unknown property).
REQUEST_WRITABLE = (
    "@odata.type",
    "action",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "justification",
    "scheduleInfo",
    "ticketInfo",
    "isValidationOnly",
    "customData",
)
UNIFIED_PROPS = ("id", "principalId", "roleDefinitionId", "directoryScopeId", "appScopeId", "condition")
UNIFIED_FILTERABLE = ("id", "principalId", "roleDefinitionId", "directoryScopeId", "appScopeId")
UNIFIED_WRITABLE = (
    "@odata.type",
    "principalId",
    "roleDefinitionId",
    "directoryScopeId",
    "appScopeId",
    "condition",
)
DIRECTORY_ROLE_PROPS = ("id", "deletedDateTime", "description", "displayName", "roleTemplateId")
DIRECTORY_ROLE_FILTERABLE = ("id", "displayName", "roleTemplateId")
# Who created a request when the bearer token does not say (the simulator's tokens are opaque).
SIMULATED_CALLER = {
    "id": "5e7a3c1d-0b7f-4c55-9d3a-6f1e2b8c9a01",
    "displayName": "pim-emergency-access (simulated)",
}
# Directory role object ids differ from the template ids in a real tenant; here they derive from them.
_DIRECTORY_ROLE_NAMESPACE = uuid.UUID("8d6c1b2e-3f4a-4b5c-9d8e-7f6a5b4c3d2e")

# Graph caps checkMemberGroups at 20 group ids per call.
CHECK_MEMBER_GROUPS_MAX = 20
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 999
SUPPORTED_QUERY_OPTIONS = {"$filter", "$select", "$top", "$skiptoken", "$count"}

# The application id of Microsoft Graph, as real 401s name it in WWW-Authenticate.
_GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

# -- service principals and their app role assignments (infra/scripts/grant_permissions.py) -----------------

SERVICE_PRINCIPAL_PROPS = (
    "id",
    "deletedDateTime",
    "accountEnabled",
    "appDisplayName",
    "appId",
    "appOwnerOrganizationId",
    "appRoleAssignmentRequired",
    "appRoles",
    "displayName",
    "servicePrincipalNames",
    "servicePrincipalType",
    "tags",
)
SERVICE_PRINCIPAL_FILTERABLE = ("id", "appId", "displayName", "servicePrincipalType")
APP_ROLE_ASSIGNMENT_PROPS = (
    "id",
    "deletedDateTime",
    "appRoleId",
    "createdDateTime",
    "principalDisplayName",
    "principalId",
    "principalType",
    "resourceDisplayName",
    "resourceId",
)
APP_ROLE_ASSIGNMENT_FILTERABLE = ("appRoleId", "resourceId", "principalId")
APP_ROLE_ASSIGNMENT_WRITABLE = ("@odata.type", "principalId", "resourceId", "appRoleId")
EXCHANGE_ONLINE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
# Object ids of service principals are the tenant's own (appIds are the same everywhere); fixed here.
GRAPH_SERVICE_PRINCIPAL_ID = "2c7b3a19-5d4e-4f61-9a8b-3e2f1d0c4b75"
EXCHANGE_SERVICE_PRINCIPAL_ID = "8e5d4c3b-2a19-4f07-b6e5-d4c3b2a19f08"
# The app's own identity: a user-assigned managed identity whose appId is the simulated caller's.
APP_IDENTITY_PRINCIPAL_ID = "0c9f4e3a-7b21-4d5e-a8c6-2f1d9b7e4a53"
_MICROSOFT_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"  # appOwnerOrganizationId of Microsoft's apps

# A realistic subset of each resource's application permissions (real ids and values): the ones the app needs
# and a few it does not, so that a grant of the wrong one is visible.
_GRAPH_APP_ROLES = (
    ("df021288-bdef-4463-88db-98f22de89214", "User.Read.All", "Read all users' full profiles"),
    ("741f803b-c850-494e-b5df-cde7c675a1ca", "User.ReadWrite.All", "Read and write all users' full profiles"),
    ("77f3a031-c388-4f99-b373-dc68676a979e", "User.RevokeSessions.All",
     "Revoke all sign in sessions for a user"),
    ("98830695-27a2-44f7-8c18-0c3ebc9698f6", "GroupMember.Read.All", "Read all group memberships"),
    ("5b567255-7703-4780-807c-7be8301ae99b", "Group.Read.All", "Read all groups"),
    ("7ab1d382-f21e-4acd-a863-ba3e13f7da61", "Directory.Read.All", "Read directory data"),
    ("483bed4a-2ad3-4361-a73b-c83ccdbdc53c", "RoleManagement.Read.Directory",
     "Read all directory RBAC settings"),
    ("9e3f62cf-ca93-4989-b6ce-bf83c28f9fe8", "RoleManagement.ReadWrite.Directory",
     "Read and write all directory RBAC settings"),
    ("dd199f4a-f148-40a4-a2ec-f0069cc799ec", "RoleAssignmentSchedule.ReadWrite.Directory",
     "Read, update, and delete all policies for privileged role assignments of your company's directory"),
    ("9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30", "Application.Read.All", "Read all applications"),
    ("06b708a9-e830-4db3-a914-8e69da51d44f", "AppRoleAssignment.ReadWrite.All",
     "Manage app permission grants and app role assignments"),
)  # fmt: skip
_EXCHANGE_APP_ROLES = (
    ("dc50a0fb-09a3-484d-be87-e023b12c6440", "Exchange.ManageAsApp", "Manage Exchange As Application"),
    ("dc890d15-9560-4a4c-9b7f-a736ec74ec40", "full_access_as_app",
     "Use Exchange Web Services with full access to all mailboxes"),
)  # fmt: skip


def _app_roles(roles: Iterable[tuple[str, str, str]]) -> list[JSON]:
    return [
        {
            "allowedMemberTypes": ["Application"],
            "description": f"Allows the app to {name[0].lower()}{name[1:]}, without a signed-in user.",
            "displayName": name,
            "id": role_id,
            "isEnabled": True,
            "origin": "Application",
            "value": value,
        }
        for role_id, value, name in roles
    ]


def _service_principal(
    object_id: str, app_id: str, name: str, kind: str, roles: list[JSON], owner: str | None
) -> JSON:
    return {
        "id": object_id,
        "deletedDateTime": None,
        "accountEnabled": True,
        "appDisplayName": name,
        "appId": app_id,
        "appOwnerOrganizationId": owner,
        "appRoleAssignmentRequired": False,
        "appRoles": roles,
        "displayName": name,
        "servicePrincipalNames": [app_id],
        "servicePrincipalType": kind,
        "tags": [],
    }


def default_service_principals() -> dict[str, JSON]:
    """Microsoft Graph and Office 365 Exchange Online (in every tenant) and the app's own identity."""
    principals = (
        _service_principal(GRAPH_SERVICE_PRINCIPAL_ID, _GRAPH_APP_ID, "Microsoft Graph", "Application",
                           _app_roles(_GRAPH_APP_ROLES), _MICROSOFT_TENANT),
        _service_principal(EXCHANGE_SERVICE_PRINCIPAL_ID, EXCHANGE_ONLINE_APP_ID,
                           "Office 365 Exchange Online", "Application", _app_roles(_EXCHANGE_APP_ROLES),
                           _MICROSOFT_TENANT),
        _service_principal(APP_IDENTITY_PRINCIPAL_ID, SIMULATED_CALLER["id"], "id-pim-app-sim",
                           "ManagedIdentity", [], None),
    )  # fmt: skip
    return {sp["id"]: sp for sp in principals}


class GraphJSON(JSONResponse):
    media_type = ODATA_JSON

    def render(self, content: Any) -> bytes:
        # Compact like the real service (Starlette's default is also compact; explicit for clarity).
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- $filter ------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<lp>\()|(?P<rp>\))|'(?P<str>(?:[^']|'')*)'|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_$][\w./]*))"
)

Predicate = Callable[[Mapping[str, Any]], bool]


class _FilterParser:
    """Recursive descent over ``expr := and_expr ('or' and_expr)*; and_expr := atom ('and' atom)*;
    atom := '(' expr ')' | property 'eq' literal``. String comparison is case-insensitive, as Graph's
    is for the directory properties and GUIDs used here."""

    def __init__(self, text: str, properties: Iterable[str], resource: str, unsupported_code: str) -> None:
        self.text = text
        self.properties = {p.lower(): p for p in properties}
        self.resource = resource
        self.unsupported_code = unsupported_code
        self.tokens = self._tokenize(text)
        self.pos = 0

    def _tokenize(self, text: str) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise self._syntax(f"unexpected character at position {pos}")
            kind = match.lastgroup
            assert kind is not None
            value = match.group(kind)
            tokens.append((kind, value.replace("''", "'") if kind == "str" else value))
            pos = match.end()
        return tokens

    def _syntax(self, why: str) -> ServiceError:
        return ServiceError(400, f"Invalid filter clause: {why}.", code="BadRequest")

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise self._syntax("the expression ends too early")
        self.pos += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token[0] == "word" and token[1].lower() == word:
            self.pos += 1
            return True
        return False

    def parse(self) -> Predicate:
        predicate = self._or()
        extra = self._peek()
        if extra is not None:
            raise self._syntax(f"unexpected {extra[1]!r}")
        return predicate

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._keyword("or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda obj: any(p(obj) for p in parts))

    def _and(self) -> Predicate:
        parts = [self._atom()]
        while self._keyword("and"):
            parts.append(self._atom())
        return parts[0] if len(parts) == 1 else (lambda obj: all(p(obj) for p in parts))

    def _atom(self) -> Predicate:
        kind, value = self._next()
        if kind == "lp":
            inner = self._or()
            if self._next()[0] != "rp":
                raise self._syntax("missing ')'")
            return inner
        if kind != "word":
            raise self._syntax(f"expected a property name, found {value!r}")
        prop = self.properties.get(value.lower())
        if prop is None:
            raise ServiceError(
                400,
                f"Unsupported or invalid query filter clause specified for property '{value}' of resource "
                f"'{self.resource}' (the simulator filters on: {', '.join(self.properties.values())}).",
                code=self.unsupported_code,
            )
        op_kind, op = self._next()
        if op_kind != "word" or op.lower() != "eq":
            raise ServiceError(
                400,
                f"Invalid filter clause: the simulator supports only 'eq' (joined by 'and'/'or'), "
                f"not {op!r}.",
                code="BadRequest",
            )
        literal = self._literal()
        return _equals(prop, literal)

    def _literal(self) -> object:
        kind, value = self._next()
        if kind == "str":
            return value
        if kind == "num":
            return float(value) if "." in value else int(value)
        if kind == "word" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if kind == "word" and value.lower() == "null":
            return None
        raise self._syntax(f"expected a literal ('text', a number, true, false or null), found {value!r}")


def _equals(prop: str, literal: object) -> Predicate:
    def predicate(obj: Mapping[str, Any]) -> bool:
        actual = obj.get(prop)
        if isinstance(literal, str) and isinstance(actual, str):
            return actual.casefold() == literal.casefold()
        return bool(actual == literal and type(actual) is type(literal))

    return predicate


# -- the service --------------------------------------------------------------------------------------------


class GraphService(Service):
    name = "graph"
    prefix = PREFIX

    def __init__(self) -> None:
        self.users: dict[str, JSON] = {}
        self.groups: dict[str, JSON] = {}
        self.members: dict[str, list[str]] = {}
        self.eligibility: list[JSON] = []
        # Role assignments in effect (seeded, PIM, direct); each store shows them after its own delay.
        self.grants: list[Grant] = []
        # Assignments no longer in effect: removed (adminRemove, DELETE) or expired, for the control view.
        self.ended: list[JSON] = []
        self.requests: list[JSON] = []
        self.timelines: dict[str, Timeline] = {}
        self.behaviours = Behaviours()
        self.session_revocations: dict[str, list[str]] = {}
        # Exchange Online role groups (served by exchange.py): the Entra roles whose holders land in each, and
        # members seeded as already there. Keyed by the case-folded name.
        self.role_groups: dict[str, JSON] = {
            name.casefold(): {"name": name, "roleDefinitionIds": list(roles), "members": []}
            for name, roles in DEFAULT_ROLE_GROUPS.items()
        }
        # Assignment ids ever handed out: a removed assignment's id is not reused for a new one.
        self._issued_ids: set[str] = set()
        # Service principals (Microsoft Graph, Exchange Online, the app's identity) and the application
        # permissions granted to them (appRoleAssignments).
        self.service_principals: dict[str, JSON] = default_service_principals()
        self.app_role_assignments: list[JSON] = []

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    @property
    def assignments(self) -> list[JSON]:
        """Every assignment in effect, as a schedule instance (whichever stores show it yet)."""
        now = utc_now()
        return [g.instance() for g in self.grants if g.live(now)]

    def snapshot(self, base_url: str) -> JSON:
        now = self.advance()
        return {
            "users": list(self.users.values()),
            "groups": [{**g, "members": list(self.members[g["id"]])} for g in self.groups.values()],
            "eligibility": list(self.eligibility),
            "assignments": self.assignments,
            "unifiedAssignments": [g.unified() for g in self.grants if g.visible("unified", now)],
            "requests": list(self.requests),
            "requestTimelines": [t.as_json() for t in self.timelines.values()],
            "stores": self.stores_view(now),
            "pimBehaviour": self.behaviours.as_json(),
            "sessionRevocations": self.revocations_view(),
            "roleGroups": self.role_groups_view(now),
            "servicePrincipals": [
                {k: sp[k] for k in ("id", "appId", "displayName", "servicePrincipalType")}
                for sp in self.service_principals.values()
            ],
            "appRoleAssignments": list(self.app_role_assignments),
        }

    def stores_view(self, now: datetime | None = None) -> JSON:
        """``GET /_sim/graph/stores``: each assignment and when each store shows it, what each store shows
        now, and the assignments that ended (removed or expired)."""
        now = now or self.advance()
        return {
            "now": iso_ms(now),
            "grants": [g.view(now) for g in self.grants],
            "stores": {
                store: [
                    {
                        "id": g.id,
                        "principalId": g.principal_id,
                        "roleDefinitionId": g.role_id,
                        "visibleAt": iso_ms(g.visible_at[store]),
                    }
                    for g in sorted(self.grants, key=lambda grant: grant.visible_at[store])
                    if g.visible(store, now)
                ]
                for store in STORES
            },
            "ended": list(self.ended),
        }

    def revocations_view(self) -> JSON:
        return {
            user: {"count": len(times), "times": list(times)}
            for user, times in self.session_revocations.items()
        }

    def advance(self, now: datetime | None = None) -> datetime:
        """Bring time-driven state up to ``now``: requests move along their behaviour's statuses (a
        ``Provisioned`` one creates its assignment, dated when it was provisioned), and assignments whose end
        has passed leave every store. Called before every request and every control view."""
        now = now or utc_now()
        for timeline in self.timelines.values():
            if timeline.done:
                continue
            status = timeline.status_at(now)
            item = self._request(timeline.request_id)
            if item is not None:
                item["status"] = status
            if status not in TERMINAL_STATUSES:
                continue
            timeline.done = True
            settled = timeline.settles_at
            if item is not None:
                item["completedDateTime"] = graph_time(settled)
            if status == "Provisioned":
                self._grant_from(timeline, settled)
        for grant in [g for g in self.grants if not g.live(now)]:
            self._end(grant, now, "expired", None, at=grant.end)
        return now

    # ---------------------------------------------------------------- pipeline hooks

    def begin(self, request: Request) -> str | None:
        # One request-id per request, shared by the header and the error body's innerError; the caller's
        # client-request-id echoed back (Graph invents one when the caller sent none).
        request.state.request_id = new_guid()
        request.state.client_request_id = request.headers.get("client-request-id") or new_guid()
        request.state.date = datetime.now(UTC)
        self.advance()
        return str(request.state.client_request_id)

    def response_headers(self, request: Request) -> dict[str, str]:
        diagnostic = {
            "ServerInfo": {"DataCenter": "Local Simulator", "Slice": "E", "Ring": "0", "ScaleUnit": "000"}
        }
        return {
            "request-id": request.state.request_id,
            "client-request-id": request.state.client_request_id,
            "x-ms-ags-diagnostic": json.dumps(diagnostic, separators=(",", ":")),
        }

    def authenticate(self, request: Request) -> tuple[bool, str | None]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(token.strip()), None

    def unauthenticated(self) -> ServiceError:
        return ServiceError(
            401,
            "Access token is empty.",
            code="InvalidAuthenticationToken",
            headers={
                "WWW-Authenticate": 'Bearer realm="", authorization_uri='
                '"https://login.microsoftonline.com/common/oauth2/authorize", '
                f'client_id="{_GRAPH_APP_ID}"'
            },
        )

    def fault_error(self, fault: Fault) -> ServiceError:
        error = super().fault_error(fault)
        if fault.code is None:
            error.code = _CODE_FOR_STATUS.get(error.status, "UnknownError")
        return error

    def error_response(self, request: Request, error: ServiceError) -> Response:
        body = {
            "error": {
                "code": error.code or _CODE_FOR_STATUS.get(error.status, "UnknownError"),
                "message": error.message,
                "innerError": {
                    # Graph prints this one without a zone designator.
                    "date": request.state.date.strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": request.state.request_id,
                    "client-request-id": request.state.client_request_id,
                },
            }
        }
        return GraphJSON(body, status_code=error.status, headers=error.headers)

    def routes(self) -> list[BaseRoute]:
        rm = "/roleManagement/directory"
        return [
            Route("/users", self.list_users, methods=["GET"]),
            Route("/users/{user_id}", self.get_user, methods=["GET"]),
            Route("/users/{user_id}/checkMemberGroups", self.check_member_groups, methods=["POST"]),
            Route("/groups/{group_id}", self.get_group, methods=["GET"]),
            Route("/groups/{group_id}/members", self.group_members, methods=["GET"]),
            Route("/groups/{group_id}/transitiveMembers", self.group_transitive_members, methods=["GET"]),
            Route(f"{rm}/roleEligibilityScheduleInstances", self.list_eligibility, methods=["GET"]),
            Route(f"{rm}/roleAssignmentScheduleInstances", self.list_assignments, methods=["GET"]),
            Route(f"{rm}/roleAssignmentScheduleRequests", self.list_requests, methods=["GET"]),
            Route(f"{rm}/roleAssignmentScheduleRequests", self.create_request, methods=["POST"]),
            Route(f"{rm}/roleAssignmentScheduleRequests/{{request_id}}", self.get_request, methods=["GET"]),
            Route(
                f"{rm}/roleAssignmentScheduleRequests/{{request_id}}/cancel",
                self.not_implemented,
                methods=["POST"],
            ),
            Route(f"{rm}/roleAssignments", self.list_unified, methods=["GET"]),
            Route(f"{rm}/roleAssignments", self.create_unified, methods=["POST"]),
            Route(f"{rm}/roleAssignments/{{assignment_id}}", self.get_unified, methods=["GET"]),
            Route(f"{rm}/roleAssignments/{{assignment_id}}", self.delete_unified, methods=["DELETE"]),
            Route("/users/{user_id}/revokeSignInSessions", self.revoke_sign_in_sessions, methods=["POST"]),
            Route("/directoryRoles", self.list_directory_roles, methods=["GET"]),
            # The alternate key: Starlette escapes the literal parts, so "(", "'" and ")" match as written.
            Route(
                "/directoryRoles(roleTemplateId='{template_id}')", self.get_directory_role, methods=["GET"]
            ),
            Route(
                "/directoryRoles(roleTemplateId='{template_id}')/members",
                self.directory_role_members,
                methods=["GET"],
            ),
            Route("/directoryRoles/{role_id}", self.get_directory_role, methods=["GET"]),
            Route("/directoryRoles/{role_id}/members", self.directory_role_members, methods=["GET"]),
            Route("/directoryObjects/{object_id}", self.get_directory_object, methods=["GET"]),
            Route("/servicePrincipals", self.list_service_principals, methods=["GET"]),
            Route("/servicePrincipals/{sp_id}", self.get_service_principal, methods=["GET"]),
            Route(
                "/servicePrincipals/{sp_id}/appRoleAssignments",
                self.list_app_role_assignments,
                methods=["GET"],
            ),
            Route(
                "/servicePrincipals/{sp_id}/appRoleAssignments",
                self.create_app_role_assignment,
                methods=["POST"],
            ),
        ]

    # ---------------------------------------------------------------- users and groups

    async def list_users(self, request: Request) -> Response:
        return self._collection(
            request,
            list(self.users.values()),
            "users",
            resource="User",
            filterable=USER_FILTERABLE,
            unsupported_code="Request_UnsupportedQuery",
            default_props=USER_DEFAULT_PROPS,
            all_props=USER_PROPS,
            odata_type="microsoft.graph.user",
        )

    async def get_user(self, request: Request) -> Response:
        user = self._find_user(request.path_params["user_id"])
        props = self._select(request, USER_DEFAULT_PROPS, USER_PROPS, "microsoft.graph.user")
        body = {"@odata.context": f"{self._base(request)}/$metadata#users/$entity", **_project(user, props)}
        return GraphJSON(body)

    async def get_group(self, request: Request) -> Response:
        group = self._find_group(request.path_params["group_id"])
        props = self._select(request, GROUP_PROPS, GROUP_PROPS, "microsoft.graph.group")
        body = {"@odata.context": f"{self._base(request)}/$metadata#groups/$entity", **_project(group, props)}
        return GraphJSON(body)

    async def group_members(self, request: Request) -> Response:
        group = self._find_group(request.path_params["group_id"])
        return self._directory_objects(request, self.members[group["id"]])

    async def group_transitive_members(self, request: Request) -> Response:
        group = self._find_group(request.path_params["group_id"])
        seen: list[str] = []
        pending = list(self.members[group["id"]])
        while pending:
            object_id = pending.pop(0)
            if object_id in seen or object_id == group["id"]:
                continue
            seen.append(object_id)
            pending.extend(self.members.get(object_id, []))
        return self._directory_objects(request, seen)

    async def check_member_groups(self, request: Request) -> Response:
        user = self._find_user(request.path_params["user_id"])
        body = await read_json_body(request)
        group_ids = body.get("groupIds") if isinstance(body, dict) else None
        if not isinstance(group_ids, list) or not all(isinstance(g, str) for g in group_ids):
            raise ServiceError(
                400, "The request body must carry 'groupIds': an array of strings.", code="BadRequest"
            )
        if not 1 <= len(group_ids) <= CHECK_MEMBER_GROUPS_MAX:
            raise ServiceError(
                400,
                f"'groupIds' must hold between 1 and {CHECK_MEMBER_GROUPS_MAX} ids, got {len(group_ids)}.",
                code="Request_BadRequest",
            )
        member_of = self.transitive_groups_of(user["id"])
        matched = [g for g in group_ids if g.lower() in member_of]
        return GraphJSON(
            {"@odata.context": f"{self._base(request)}/$metadata#Collection(Edm.String)", "value": matched}
        )

    def transitive_groups_of(self, object_id: str) -> set[str]:
        """Ids of every group that contains ``object_id`` directly or through nested groups."""
        found: set[str] = set()
        frontier = {object_id}
        while frontier:
            parents = {gid for gid, members in self.members.items() if frontier & set(members)} - found
            found |= parents
            frontier = parents
        return found

    def _directory_objects(
        self, request: Request, object_ids: list[str], *, unknown_as_user: bool = False
    ) -> Response:
        objects: list[JSON] = []
        for object_id in object_ids:
            if object_id in self.users:
                objects.append({"@odata.type": "#microsoft.graph.user", **self.users[object_id]})
            elif object_id in self.groups:
                objects.append({"@odata.type": "#microsoft.graph.group", **self.groups[object_id]})
            elif object_id in self.service_principals:
                objects.append(_typed_service_principal(self.service_principals[object_id]))
            elif unknown_as_user:
                # A role seeded for a principal id the simulator has no user for: listed by id only.
                objects.append(
                    {"@odata.type": "#microsoft.graph.user", "id": object_id, "userPrincipalName": None,
                     "displayName": None}
                )  # fmt: skip
        return self._collection(
            request,
            objects,
            "directoryObjects",
            resource="DirectoryObject",
            filterable=(),
            unsupported_code="Request_UnsupportedQuery",
            # A directoryObject collection mixes types: project each object on its own type's properties.
            default_props=None,
            all_props=USER_PROPS + GROUP_PROPS,
            odata_type="microsoft.graph.directoryObject",
        )

    # ---------------------------------------------------------------- PIM

    async def list_eligibility(self, request: Request) -> Response:
        return self._pim_collection(
            request,
            self.eligibility,
            "roleEligibilityScheduleInstances",
            ELIGIBILITY_PROPS,
            ELIGIBILITY_FILTERABLE,
        )

    async def list_assignments(self, request: Request) -> Response:
        # The PIM store: assignments PIM shows once its own propagation delay has passed (and until they
        # end: visible() compares the exact end, not the printed one).
        now = utc_now()
        return self._collection(
            request,
            [g.instance() for g in self.grants if g.visible("pim", now)],
            "roleManagement/directory/roleAssignmentScheduleInstances",
            resource="roleAssignmentScheduleInstances",
            filterable=ASSIGNMENT_FILTERABLE,
            unsupported_code="BadRequest",
            default_props=ASSIGNMENT_PROPS,
            all_props=ASSIGNMENT_PROPS,
            odata_type="microsoft.graph.unifiedRoleScheduleInstanceBase",
        )

    async def list_requests(self, request: Request) -> Response:
        return self._collection(
            request,
            self.requests,
            "roleManagement/directory/roleAssignmentScheduleRequests",
            resource="UnifiedRoleAssignmentScheduleRequest",
            filterable=REQUEST_FILTERABLE,
            unsupported_code="BadRequest",
            default_props=REQUEST_PROPS,
            all_props=REQUEST_PROPS,
            odata_type="microsoft.graph.unifiedRoleAssignmentScheduleRequest",
        )

    async def get_request(self, request: Request) -> Response:
        item = self._request(request.path_params["request_id"])
        if item is None:
            raise _not_found(request.path_params["request_id"])
        props = self._select(
            request, REQUEST_PROPS, REQUEST_PROPS, "microsoft.graph.unifiedRoleAssignmentScheduleRequest"
        )
        return GraphJSON({"@odata.context": self._request_context(request), **_project(item, props)})

    async def not_implemented(self, request: Request) -> Response:
        raise ServiceError(
            501,
            "The simulator does not cancel role assignment schedule requests (adminRemove ends an "
            "assignment).",
            code="NotImplemented",
        )

    async def create_request(self, request: Request) -> Response:
        """``POST roleAssignmentScheduleRequests``: ``adminAssign``, ``adminRemove`` and ``adminExtend``,
        checked in the order PIM reports its errors, each answered with Graph's code."""
        body = await read_json_body(request)
        now = self.advance()
        spec = _request_body(body)
        action = spec["action"]
        if action not in SERVED_ACTIONS:
            raise ServiceError(
                400,
                f"The action '{action}' is not supported here: an application can submit "
                f"{', '.join(SERVED_ACTIONS)} (self* actions act as the signed-in user).",
                code="InvalidRequest",
            )
        principal, role, scope = spec["principalId"], spec["roleDefinitionId"], spec["directoryScopeId"]
        self._require_principal(principal)
        behaviour = self.behaviours.for_role(role)
        validation_only = bool(spec.get("isValidationOnly", False))
        item: JSON = {
            "id": new_guid(),
            "status": "Granted",
            "createdDateTime": graph_time(now),
            "completedDateTime": None,
            "approvalId": None,
            "customData": spec.get("customData"),
            "action": action,
            "principalId": principal,
            "roleDefinitionId": role,
            "directoryScopeId": scope,
            "appScopeId": spec.get("appScopeId"),
            "isValidationOnly": validation_only,
            "targetScheduleId": None,
            "justification": spec.get("justification"),
            "createdBy": {"application": _caller(request), "device": None, "user": None},
            "scheduleInfo": None,
            "ticketInfo": _ticket(spec.get("ticketInfo")),
        }
        if action == "adminAssign":
            self._admin_assign(item, spec, behaviour, now)
        elif action == "adminRemove":
            self._admin_remove(item, spec, behaviour, now)
        else:
            self._admin_extend(item, spec, behaviour, now)
        return GraphJSON({"@odata.context": self._request_context(request), **item}, status_code=201)

    def _admin_assign(self, item: JSON, spec: JSON, behaviour: Behaviour, now: datetime) -> None:
        principal, role, scope = item["principalId"], item["roleDefinitionId"], item["directoryScopeId"]
        if self._pending_request(principal, role, scope) is not None:
            raise ServiceError(
                400,
                "There is already an existing pending Role assignment request.",
                code="PendingRoleAssignmentRequest",
            )
        if self._live_grants(principal, role, scope, now):
            raise ServiceError(400, "The Role assignment already exists.", code="RoleAssignmentExists")
        start, end, schedule = _schedule(spec.get("scheduleInfo"), now)
        item["scheduleInfo"] = schedule
        if end is not None and (end - start).total_seconds() < behaviour.minimum_active_seconds:
            raise _too_short(
                "The role assignment request's active duration is too short.",
                behaviour.minimum_active_seconds,
            )
        _check_policy(behaviour)
        if item["isValidationOnly"]:
            return  # validated; nothing stored, nothing assigned
        item["targetScheduleId"] = item["id"]
        timeline = Timeline(
            request_id=item["id"],
            submitted=now,
            behaviour=behaviour,
            principal_id=principal,
            role_id=role,
            scope=scope,
            app_scope=item["appScopeId"],
            start=start,
            end=end,
        )
        self.requests.append(item)
        self.timelines[item["id"]] = timeline
        self.advance(now)  # with no interim statuses it is Provisioned (and assigned) at once

    def _admin_remove(self, item: JSON, spec: JSON, behaviour: Behaviour, now: datetime) -> None:
        principal, role, scope = item["principalId"], item["roleDefinitionId"], item["directoryScopeId"]
        grants = self._live_grants(principal, role, scope, now)
        if not grants:
            raise ServiceError(400, "The Role assignment does not exist.", code="RoleAssignmentDoesNotExist")
        youngest = max(g.activated_at for g in grants)
        if (now - youngest).total_seconds() < behaviour.minimum_active_seconds:
            raise _too_short(
                "The role assignment cannot be removed this soon after it was activated.",
                behaviour.minimum_active_seconds,
            )
        info = spec.get("scheduleInfo")
        item["scheduleInfo"] = _schedule(info, now)[2] if info is not None else None
        item["targetScheduleId"] = grants[0].schedule_id
        item["status"] = "Revoked"
        if item["isValidationOnly"]:
            return
        item["completedDateTime"] = graph_time(now)
        for grant in grants:
            self._end(grant, now, "adminRemove", item["id"])
        self.requests.append(item)

    def _admin_extend(self, item: JSON, spec: JSON, behaviour: Behaviour, now: datetime) -> None:
        principal, role, scope = item["principalId"], item["roleDefinitionId"], item["directoryScopeId"]
        grants = self._live_grants(principal, role, scope, now)
        if not grants:
            raise ServiceError(400, "The Role assignment does not exist.", code="RoleAssignmentDoesNotExist")
        _, end, schedule = _schedule(spec.get("scheduleInfo"), now)
        item["scheduleInfo"] = schedule
        current = grants[0].end
        if end is not None and current is not None and end <= current:
            raise ServiceError(
                400,
                f"The extension must end after the assignment's current end ({iso_z(current)}); it ends "
                f"{iso_z(end)}.",
                code="InvalidRequest",
            )
        _check_policy(behaviour)
        item["targetScheduleId"] = grants[0].schedule_id
        item["status"] = "Provisioned"
        if item["isValidationOnly"]:
            return
        item["completedDateTime"] = graph_time(now)
        for grant in grants:
            grant.end = end
        self.requests.append(item)

    def _request_context(self, request: Request) -> str:
        return (
            f"{self._base(request)}/$metadata#roleManagement/directory/roleAssignmentScheduleRequests/$entity"
        )

    def _request(self, request_id: str) -> JSON | None:
        wanted = request_id.lower()
        return next((r for r in self.requests if str(r["id"]).lower() == wanted), None)

    def _pending_request(self, principal: str, role: str, scope: str) -> JSON | None:
        for item in self.requests:
            if (
                item["action"] in ACTIVATING_ACTIONS
                and item["status"] not in TERMINAL_STATUSES
                and str(item["principalId"]).lower() == principal.lower()
                and str(item["roleDefinitionId"]).lower() == role.lower()
                and str(item.get("directoryScopeId") or "/").lower() == scope.lower()
            ):
                return item
        return None

    def _live_grants(self, principal: str, role: str, scope: str, now: datetime) -> list[Grant]:
        # What the directory holds, whichever stores show it yet: PIM itself knows at once.
        return [g for g in self.grants if g.live(now) and g.matches(principal, role, scope)]

    def _require_principal(self, principal: str) -> None:
        known = (
            principal in self.users
            or principal in self.groups
            or principal in self.service_principals
            or any(g.principal_id == principal for g in self.grants)
            or any(e["principalId"] == principal for e in self.eligibility)
        )
        if not known:
            raise _not_found(principal)

    def _new_assignment_id(self, role: str, principal: str) -> str:
        # PIM and unified assignment ids read like base64url of (role, principal) plus a sequence: opaque.
        stem = b64url(uuid.UUID(role).bytes_le + uuid.UUID(principal).bytes_le)
        n = 1
        while f"{stem}-{n}" in self._issued_ids:
            n += 1
        self._issued_ids.add(f"{stem}-{n}")
        return f"{stem}-{n}"

    def _grant_from(self, timeline: Timeline, provisioned: datetime) -> Grant:
        assignment_id = self._new_assignment_id(timeline.role_id, timeline.principal_id)
        grant = Grant(
            id=assignment_id,
            instance_id=assignment_id,
            principal_id=timeline.principal_id,
            role_id=timeline.role_id,
            scope=timeline.scope,
            app_scope=timeline.app_scope,
            start=timeline.start,
            end=timeline.end,
            assignment_type="Assigned",
            member_type="Direct",
            schedule_id=timeline.request_id,
            origin="pim",
            request_id=timeline.request_id,
            activated_at=provisioned,
            visible_at=visibility(provisioned, timeline.behaviour),
        )
        self.grants.append(grant)
        return grant

    def _end(
        self, grant: Grant, now: datetime, reason: str, request_id: str | None, at: datetime | None = None
    ) -> None:
        """Take an assignment out of every store (removal is immediate everywhere)."""
        self.grants = [g for g in self.grants if g is not grant]
        self.ended.append(
            {**grant.view(now), "endedAt": iso_ms(at or now), "reason": reason, "endedBy": request_id}
        )

    # ---------------------------------------------------------------- unified RBAC (break-glass path)

    async def list_unified(self, request: Request) -> Response:
        now = utc_now()
        return self._collection(
            request,
            [g.unified() for g in self.grants if g.visible("unified", now)],
            "roleManagement/directory/roleAssignments",
            resource="unifiedRoleAssignment",
            filterable=UNIFIED_FILTERABLE,
            unsupported_code="BadRequest",
            default_props=UNIFIED_PROPS,
            all_props=UNIFIED_PROPS,
            odata_type="microsoft.graph.unifiedRoleAssignment",
        )

    def _unified(self, assignment_id: str) -> Grant:
        now = utc_now()
        for grant in self.grants:
            if grant.id == assignment_id and grant.visible("unified", now):
                return grant
        raise _not_found(assignment_id)

    async def get_unified(self, request: Request) -> Response:
        grant = self._unified(request.path_params["assignment_id"])
        props = self._select(request, UNIFIED_PROPS, UNIFIED_PROPS, "microsoft.graph.unifiedRoleAssignment")
        context = f"{self._base(request)}/$metadata#roleManagement/directory/roleAssignments/$entity"
        return GraphJSON({"@odata.context": context, **_project(grant.unified(), props)})

    async def create_unified(self, request: Request) -> Response:
        """A direct role assignment in the unified RBAC store: no PIM schedule service involved, so no PIM
        behaviour (statuses, policy rules) applies; the other stores follow after their delays."""
        body = await read_json_body(request)
        now = self.advance()
        if not isinstance(body, dict):
            raise ServiceError(400, "The request body must be a JSON object.", code="BadRequest")
        _known_properties(body, UNIFIED_WRITABLE, "microsoft.graph.unifiedRoleAssignment")
        principal = _body_guid(body, "principalId")
        role = _body_guid(body, "roleDefinitionId")
        scope = _body_scope(body)
        self._require_principal(principal)
        if self._live_grants(principal, role, scope, now):
            raise ServiceError(
                400,
                "A conflicting object with one or more of the specified property values is present in the "
                "directory.",
                code="Request_BadRequest",
            )
        assignment_id = self._new_assignment_id(role, principal)
        grant = Grant(
            id=assignment_id,
            instance_id=assignment_id,
            principal_id=principal,
            role_id=role,
            scope=scope,
            app_scope=_optional_body_str(body, "appScopeId"),
            start=now,
            end=None,
            assignment_type="Assigned",
            member_type="Direct",
            schedule_id=new_guid(),
            origin="direct",
            request_id=None,
            activated_at=now,
            visible_at=visibility(now, self.behaviours.for_role(role), unified_now=True),
        )
        self.grants.append(grant)
        context = f"{self._base(request)}/$metadata#roleManagement/directory/roleAssignments/$entity"
        return GraphJSON({"@odata.context": context, **grant.unified()}, status_code=201)

    async def delete_unified(self, request: Request) -> Response:
        grant = self._unified(request.path_params["assignment_id"])
        self._end(grant, utc_now(), "deleted", None)
        return Response(status_code=204)

    # ---------------------------------------------------------------- sessions and directory roles

    async def revoke_sign_in_sessions(self, request: Request) -> Response:
        user = self._find_user(request.path_params["user_id"])
        self.session_revocations.setdefault(user["id"], []).append(iso_ms(utc_now()) or "")
        return GraphJSON({"@odata.context": f"{self._base(request)}/$metadata#Edm.Boolean", "value": True})

    def _directory_roles(self) -> list[JSON]:
        """Built-in roles exist as directory role objects; so does any other role someone holds."""
        templates = list(WELL_KNOWN_ROLES)
        templates += [g.role_id for g in self.grants if g.role_id not in templates]
        roles = []
        for template in dict.fromkeys(templates):
            name, description = WELL_KNOWN_ROLES.get(template, (f"Role {template}", None))
            roles.append(
                {
                    "id": str(uuid.uuid5(_DIRECTORY_ROLE_NAMESPACE, template)),
                    "deletedDateTime": None,
                    "description": description,
                    "displayName": name,
                    "roleTemplateId": template,
                }
            )
        return roles

    def _directory_role(self, request: Request) -> JSON:
        # /directoryRoles/{id} takes the object id or the template id (as Graph's does); the alternate key
        # (roleTemplateId='...') only the template id.
        params = request.path_params
        key = str(params.get("template_id") or params.get("role_id") or "").lower()
        for role in self._directory_roles():
            if role["roleTemplateId"] == key or ("role_id" in params and role["id"] == key):
                return role
        raise _not_found(key)

    async def list_directory_roles(self, request: Request) -> Response:
        return self._collection(
            request,
            self._directory_roles(),
            "directoryRoles",
            resource="directoryRole",
            filterable=DIRECTORY_ROLE_FILTERABLE,
            unsupported_code="Request_UnsupportedQuery",
            default_props=DIRECTORY_ROLE_PROPS,
            all_props=DIRECTORY_ROLE_PROPS,
            odata_type="microsoft.graph.directoryRole",
        )

    async def get_directory_role(self, request: Request) -> Response:
        role = self._directory_role(request)
        props = self._select(
            request, DIRECTORY_ROLE_PROPS, DIRECTORY_ROLE_PROPS, "microsoft.graph.directoryRole"
        )
        context = f"{self._base(request)}/$metadata#directoryRoles/$entity"
        return GraphJSON({"@odata.context": context, **_project(role, props)})

    async def directory_role_members(self, request: Request) -> Response:
        role = self._directory_role(request)
        now = utc_now()
        principals = [
            g.principal_id
            for g in sorted(self.grants, key=lambda grant: grant.visible_at["directoryRole"])
            if g.role_id == role["roleTemplateId"] and g.visible("directoryRole", now)
        ]
        return self._directory_objects(request, list(dict.fromkeys(principals)), unknown_as_user=True)

    # ---------------------------------------------------------------- service principals and app permissions

    async def get_directory_object(self, request: Request) -> Response:
        """``GET /directoryObjects/{id}``: a user, group or service principal, typed by ``@odata.type``."""
        object_id = request.path_params["object_id"].lower()
        _check_query_options(request)
        if object_id in self.users:
            body = {
                "@odata.type": "#microsoft.graph.user",
                **_project(self.users[object_id], USER_DEFAULT_PROPS),
            }
        elif object_id in self.groups:
            body = {"@odata.type": "#microsoft.graph.group", **self.groups[object_id]}
        elif object_id in self.service_principals:
            body = _typed_service_principal(self.service_principals[object_id])
        else:
            raise _not_found(object_id)
        return GraphJSON(
            {"@odata.context": f"{self._base(request)}/$metadata#directoryObjects/$entity", **body}
        )

    async def list_service_principals(self, request: Request) -> Response:
        return self._collection(
            request,
            list(self.service_principals.values()),
            "servicePrincipals",
            resource="ServicePrincipal",
            filterable=SERVICE_PRINCIPAL_FILTERABLE,
            unsupported_code="Request_UnsupportedQuery",
            default_props=SERVICE_PRINCIPAL_PROPS,
            all_props=SERVICE_PRINCIPAL_PROPS,
            odata_type="microsoft.graph.servicePrincipal",
        )

    def _service_principal(self, key: str) -> JSON:
        principal = self.service_principals.get(key.lower())
        if principal is None:
            raise _not_found(key)
        return principal

    async def get_service_principal(self, request: Request) -> Response:
        principal = self._service_principal(request.path_params["sp_id"])
        props = self._select(
            request, SERVICE_PRINCIPAL_PROPS, SERVICE_PRINCIPAL_PROPS, "microsoft.graph.servicePrincipal"
        )
        context = f"{self._base(request)}/$metadata#servicePrincipals/$entity"
        return GraphJSON({"@odata.context": context, **_project(principal, props)})

    async def list_app_role_assignments(self, request: Request) -> Response:
        """The application permissions a service principal holds (it is their principal)."""
        principal = self._service_principal(request.path_params["sp_id"])
        return self._collection(
            request,
            [a for a in self.app_role_assignments if a["principalId"] == principal["id"]],
            f"servicePrincipals('{principal['id']}')/appRoleAssignments",
            resource="appRoleAssignment",
            filterable=APP_ROLE_ASSIGNMENT_FILTERABLE,
            unsupported_code="Request_UnsupportedQuery",
            default_props=APP_ROLE_ASSIGNMENT_PROPS,
            all_props=APP_ROLE_ASSIGNMENT_PROPS,
            odata_type="microsoft.graph.appRoleAssignment",
        )

    async def create_app_role_assignment(self, request: Request) -> Response:
        """Grant an application permission: ``{principalId, resourceId, appRoleId}``, the principal being the
        service principal in the path. Checked in order: body, principal, resource, app role, duplicate."""
        principal = self._service_principal(request.path_params["sp_id"])
        body = await read_json_body(request)
        if not isinstance(body, dict):
            raise ServiceError(400, "The request body must be a JSON object.", code="BadRequest")
        _known_properties(body, APP_ROLE_ASSIGNMENT_WRITABLE, "microsoft.graph.appRoleAssignment")
        principal_id = _body_guid(body, "principalId")
        resource_id = _body_guid(body, "resourceId")
        app_role_id = _body_guid(body, "appRoleId")
        if principal_id != principal["id"]:
            raise ServiceError(
                400,
                f"The principalId {principal_id} must be the service principal in the path "
                f"({principal['id']}).",
                code="Request_BadRequest",
            )
        resource = self._service_principal(resource_id)
        roles = {
            str(role["id"]).lower()
            for role in resource["appRoles"]
            if role["isEnabled"] and "Application" in role["allowedMemberTypes"]
        }
        if app_role_id not in roles:
            raise ServiceError(
                400,
                f"Permission being assigned was not found on application '{resource['appId']}'.",
                code="Request_BadRequest",
            )
        if any(
            a["principalId"] == principal_id
            and a["resourceId"] == resource_id
            and a["appRoleId"] == app_role_id
            for a in self.app_role_assignments
        ):
            raise ServiceError(
                400, "Permission being assigned already exists on the object.", code="Request_BadRequest"
            )
        assignment: JSON = {
            # Graph's ids here are base64url, 43 characters, starting with the principal's id bytes.
            "id": b64url(uuid.UUID(principal_id).bytes_le + uuid.uuid4().bytes),
            "deletedDateTime": None,
            "appRoleId": app_role_id,
            "createdDateTime": iso_z(utc_now()),
            "principalDisplayName": principal["displayName"],
            "principalId": principal_id,
            "principalType": "ServicePrincipal",
            "resourceDisplayName": resource["displayName"],
            "resourceId": resource_id,
        }
        self.app_role_assignments.append(assignment)
        context = (
            f"{self._base(request)}/$metadata#servicePrincipals('{principal_id}')/appRoleAssignments/$entity"
        )
        return GraphJSON({"@odata.context": context, **assignment}, status_code=201)

    # ---------------------------------------------------------------- Exchange role groups (exchange.py)

    def role_group_members(self, identity: str, now: datetime | None = None) -> list[JSON] | None:
        """Members of an Exchange role group as ``Get-RoleGroupMember`` lists them, or None if no such group:
        its seeded members, then holders of its roles once the ``exchange`` delay has passed."""
        now = now or self.advance()
        group = self.role_groups.get(identity.casefold())
        if group is None:
            return None
        roles = {r.lower() for r in group["roleDefinitionIds"]}
        ids = list(group["members"])
        ids += [
            g.principal_id
            for g in sorted(self.grants, key=lambda grant: grant.visible_at["exchange"])
            if g.role_id in roles and g.visible("exchange", now)
        ]
        return [self._exchange_recipient(object_id) for object_id in dict.fromkeys(ids)]

    def _exchange_recipient(self, object_id: str) -> JSON:
        user = self.users.get(object_id)
        group = self.groups.get(object_id)
        if user is not None:
            alias = str(user["userPrincipalName"]).split("@", 1)[0]
            return {
                "Name": alias,
                "DisplayName": user["displayName"],
                "Alias": alias,
                "Identity": alias,
                "ExternalDirectoryObjectId": object_id,
                "PrimarySmtpAddress": user["mail"] or user["userPrincipalName"],
                "WindowsLiveID": user["userPrincipalName"],
                "RecipientType": "UserMailbox",
                "RecipientTypeDetails": "UserMailbox",
            }
        name = str(group["displayName"]) if group is not None else object_id
        return {
            "Name": name,
            "DisplayName": name,
            "Alias": group["mailNickname"] if group is not None else None,
            "Identity": name,
            "ExternalDirectoryObjectId": object_id,
            "PrimarySmtpAddress": group["mail"] if group is not None else None,
            "WindowsLiveID": None,
            "RecipientType": "MailUniversalSecurityGroup" if group is not None else "User",
            "RecipientTypeDetails": "RoleGroup" if group is not None else "User",
        }

    def seed_role_group(self, spec: object) -> JSON:
        spec = _as_object(spec, "role group")
        reject_unknown_keys(spec, ("name", "members", "roleDefinitionIds"), "roleGroup")
        name = require_str(spec, "name", "roleGroup")
        members = spec.get("members", [])
        roles = spec.get("roleDefinitionIds", [])
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise SeedError("roleGroup.members is a list of user ids or UPNs (or group ids)")
        if not isinstance(roles, list) or not all(isinstance(r, str) and is_guid(r) for r in roles):
            raise SeedError("roleGroup.roleDefinitionIds is a list of role template ids (GUIDs)")
        member_ids = []
        for ref in members:
            user = self.find_user(ref)
            if user is None and ref.lower() not in self.groups:
                raise SeedError(
                    f"roleGroup member {ref!r} is neither a seeded user (id or UPN) nor a seeded group"
                )
            member_ids.append(str(user["id"]) if user is not None else ref.lower())
        # Seeding an existing group (e.g. Organization Management) adds to it.
        group = self.role_groups.setdefault(
            name.casefold(), {"name": name, "roleDefinitionIds": [], "members": []}
        )
        group["roleDefinitionIds"] = list(
            dict.fromkeys([*group["roleDefinitionIds"], *(r.lower() for r in roles)])
        )
        group["members"] = list(dict.fromkeys([*group["members"], *member_ids]))
        return dict(group)

    def role_groups_view(self, now: datetime | None = None) -> JSON:
        now = now or self.advance()
        return {
            group["name"]: {**group, "visibleMembers": self.role_group_members(group["name"], now)}
            for group in self.role_groups.values()
        }

    # ---------------------------------------------------------------- control: behaviours

    def set_behaviour(self, spec: object) -> JSON:
        role, behaviour = self.behaviours.set(spec)
        return {"roleDefinitionId": role, **behaviour.as_json()}

    def _pim_collection(
        self,
        request: Request,
        items: list[JSON],
        segment: str,
        props: tuple[str, ...],
        filterable: tuple[str, ...],
    ) -> Response:
        # Instances are what is in effect now (or later): one whose end has passed is no longer listed.
        now = utc_now()
        current = [
            i
            for i in items
            if (end := parse_datetime(i.get("endDateTime"), "endDateTime")) is None or end > now
        ]
        return self._collection(
            request,
            current,
            f"roleManagement/directory/{segment}",
            resource=segment,
            filterable=filterable,
            unsupported_code="BadRequest",
            default_props=props,
            all_props=props,
            odata_type="microsoft.graph.unifiedRoleScheduleInstanceBase",
        )

    # ---------------------------------------------------------------- OData plumbing

    def _base(self, request: Request) -> str:
        root = str(request.scope.get("root_path", ""))
        return f"{request.url.scheme}://{request.url.netloc}{root}"

    def _select(
        self, request: Request, default_props: tuple[str, ...], all_props: tuple[str, ...], odata_type: str
    ) -> tuple[str, ...]:
        _check_query_options(request)
        raw = request.query_params.get("$select")
        if not raw:
            return default_props
        known = {p.lower(): p for p in all_props}
        chosen: list[str] = []
        for name in (part.strip() for part in raw.split(",")):
            prop = known.get(name.lower())
            if prop is None:
                raise ServiceError(
                    400,
                    "Parsing OData Select and Expand failed: Could not find a property named "
                    f"'{name}' on type '{odata_type}'.",
                    code="BadRequest",
                )
            chosen.append(prop)
        # Graph returns the id of an entity even when $select leaves it out.
        return tuple(dict.fromkeys([*chosen, "id"]))

    def _collection(
        self,
        request: Request,
        items: list[JSON],
        entity_set: str,
        *,
        resource: str,
        filterable: tuple[str, ...],
        unsupported_code: str,
        default_props: tuple[str, ...] | None,
        all_props: tuple[str, ...],
        odata_type: str,
    ) -> Response:
        _check_query_options(request)
        raw_filter = request.query_params.get("$filter")
        if raw_filter:
            if not filterable:
                raise ServiceError(
                    400, f"The simulator does not support $filter on {entity_set}.", code=unsupported_code
                )
            predicate = _FilterParser(raw_filter, filterable, resource, unsupported_code).parse()
            items = [i for i in items if predicate(i)]
        props: tuple[str, ...] | None = None
        if default_props is not None or request.query_params.get("$select"):
            props = self._select(request, default_props or all_props, all_props, odata_type)
        top = _int_option(request, "$top", 1, MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        skip = _skiptoken(request)
        page = items[skip : skip + top]
        base = self._base(request)
        body: JSON = {"@odata.context": f"{base}/$metadata#{entity_set}"}
        if request.query_params.get("$count", "").lower() == "true":
            # Directory objects count only as an "advanced query", which needs ConsistencyLevel: eventual.
            directory = entity_set in ("users", "directoryObjects")
            if directory and request.headers.get("consistencylevel", "").lower() != "eventual":
                raise ServiceError(
                    400,
                    "$count on directory objects needs the header ConsistencyLevel: eventual.",
                    code="Request_BadRequest",
                )
            body["@odata.count"] = len(items)
        if skip + top < len(items):
            # Opaque to the caller, like Graph's: follow @odata.nextLink as given, never build it.
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "$skiptoken"]
            query.append(("$skiptoken", f"sim{skip + top}"))
            relative = request.url.path[len(str(request.scope.get("root_path", ""))) :]
            body["@odata.nextLink"] = f"{base}{relative}?{urlencode(query)}"
        body["value"] = [_project(i, props) if props is not None else _own_props(i) for i in page]
        return GraphJSON(body)

    def _find_user(self, key: str) -> JSON:
        user = self.find_user(key)
        if user is None:
            raise _not_found(key)
        return user

    def find_user(self, key: str) -> JSON | None:
        """A user by object id or by userPrincipalName (both case-insensitive), as /users/{id} resolves."""
        folded = key.casefold()
        for user in self.users.values():
            if user["id"].casefold() == folded or user["userPrincipalName"].casefold() == folded:
                return user
        return None

    def _find_group(self, key: str) -> JSON:
        group = self.groups.get(key.lower())
        if group is None:
            raise _not_found(key)
        return group

    # ---------------------------------------------------------------- seeding (control API)

    def seed_user(self, spec: object) -> JSON:
        spec = _as_object(spec, "user")
        reject_unknown_keys(spec, USER_PROPS, "user")
        upn = require_str(spec, "userPrincipalName", "user")
        if "@" not in upn:
            raise SeedError(f"user.userPrincipalName {upn!r} must look like name@domain")
        user_id = _guid_or_new(spec.get("id"), "user.id")
        clash = self.find_user(upn)
        if clash is not None and clash["id"] != user_id:
            raise ConflictError(f"userPrincipalName {upn!r} already belongs to user {clash['id']}")
        if user_id in self.groups:
            raise ConflictError(f"id {user_id} is already a group")
        local_part = upn.split("@", 1)[0]
        user: JSON = {
            "businessPhones": spec.get("businessPhones", []),
            "displayName": optional_str(spec, "displayName", "user", local_part),
            "givenName": optional_str(spec, "givenName", "user"),
            "jobTitle": optional_str(spec, "jobTitle", "user"),
            # Most tenants give licensed users mail = UPN; pass "mail": null for one without a mailbox.
            "mail": optional_str(spec, "mail", "user", upn),
            "mobilePhone": optional_str(spec, "mobilePhone", "user"),
            "officeLocation": optional_str(spec, "officeLocation", "user"),
            "preferredLanguage": optional_str(spec, "preferredLanguage", "user"),
            "surname": optional_str(spec, "surname", "user"),
            "userPrincipalName": upn,
            "id": user_id,
            "accountEnabled": bool(spec.get("accountEnabled", True)),
            "userType": optional_str(spec, "userType", "user", "Member"),
            "employeeId": optional_str(spec, "employeeId", "user"),
            "department": optional_str(spec, "department", "user"),
            "otherMails": spec.get("otherMails", []),
            "createdDateTime": iso_z(
                parse_datetime(spec.get("createdDateTime"), "user.createdDateTime") or utc_now()
            ),
            "onPremisesSamAccountName": optional_str(spec, "onPremisesSamAccountName", "user"),
        }
        self.users[user_id] = user
        return user

    def seed_group(self, spec: object) -> JSON:
        spec = _as_object(spec, "group")
        reject_unknown_keys(spec, (*GROUP_PROPS, "members"), "group")
        name = require_str(spec, "displayName", "group")
        group_id = _guid_or_new(spec.get("id"), "group.id")
        if group_id in self.users:
            raise ConflictError(f"id {group_id} is already a user")
        members_spec = spec.get("members", [])
        if not isinstance(members_spec, list):
            raise SeedError("group.members must be a list of user ids/UPNs or group ids")
        members = [self._member_id(ref, group_id) for ref in members_spec]
        group: JSON = {
            "id": group_id,
            "displayName": name,
            "description": optional_str(spec, "description", "group"),
            "mail": optional_str(spec, "mail", "group"),
            "mailEnabled": bool(spec.get("mailEnabled", False)),
            "mailNickname": optional_str(
                spec, "mailNickname", "group", re.sub(r"[^A-Za-z0-9]", "", name) or "group"
            ),
            "securityEnabled": bool(spec.get("securityEnabled", True)),
            "groupTypes": spec.get("groupTypes", []),
            "createdDateTime": iso_z(utc_now()),
        }
        self.groups[group_id] = group
        self.members[group_id] = list(dict.fromkeys(members))
        return {**group, "members": self.members[group_id]}

    def _member_id(self, ref: object, group_id: str) -> str:
        if not isinstance(ref, str):
            raise SeedError("group.members entries are strings (user id, UPN, or group id)")
        user = self.find_user(ref)
        if user is not None:
            return str(user["id"])
        if ref.lower() in self.groups and ref.lower() != group_id:
            return ref.lower()
        raise SeedError(f"group member {ref!r} is neither a seeded user (id or UPN) nor another seeded group")

    def _principal(self, spec: JSON, what: str) -> str:
        ref = require_str(spec, "principalId", what)
        user = self.find_user(ref)
        if user is not None:
            return str(user["id"])
        if not is_guid(ref):
            raise SeedError(f"{what}.principalId {ref!r} is neither a GUID nor a seeded user's UPN")
        return ref.lower()

    def seed_eligibility(self, spec: object) -> JSON:
        spec = _as_object(spec, "eligibility")
        reject_unknown_keys(spec, ELIGIBILITY_PROPS, "eligibility")
        principal = self._principal(spec, "eligibility")
        role = _required_guid(spec, "roleDefinitionId", "eligibility")
        instance = {
            "id": spec.get("id") or self._instance_id(self.eligibility, role, principal, "-e"),
            "principalId": principal,
            "roleDefinitionId": role,
            "directoryScopeId": optional_str(spec, "directoryScopeId", "eligibility", "/"),
            "appScopeId": optional_str(spec, "appScopeId", "eligibility"),
            **self._window(spec, "eligibility"),
            "memberType": _choice(spec, "memberType", MEMBER_TYPES, "Direct", "eligibility"),
            "roleEligibilityScheduleId": optional_str(spec, "roleEligibilityScheduleId", "eligibility")
            or new_guid(),
        }
        self._upsert(self.eligibility, instance)
        return instance

    def seed_assignment(self, spec: object) -> JSON:
        """An assignment that already exists: in every store at once (no propagation delay)."""
        spec = _as_object(spec, "assignment")
        reject_unknown_keys(spec, ASSIGNMENT_PROPS, "assignment")
        principal = self._principal(spec, "assignment")
        role = _required_guid(spec, "roleDefinitionId", "assignment")
        schedule_id = optional_str(spec, "roleAssignmentScheduleId", "assignment") or new_guid()
        window = self._window(spec, "assignment")
        start = parse_datetime(window["startDateTime"], "assignment.startDateTime") or utc_now()
        taken = [{"id": i} for i in self._issued_ids | {g.instance_id for g in self.grants}]
        instance_id = spec.get("id") or self._instance_id(taken, role, principal, "")
        self._issued_ids.add(str(instance_id))
        grant = Grant(
            # In PIM the unified role assignment that an instance produced; a GUID-like id here.
            id=optional_str(spec, "roleAssignmentOriginId", "assignment") or new_guid(),
            instance_id=str(instance_id),
            principal_id=principal,
            role_id=role,
            scope=optional_str(spec, "directoryScopeId", "assignment", "/") or "/",
            app_scope=optional_str(spec, "appScopeId", "assignment"),
            start=start,
            end=parse_datetime(window["endDateTime"], "assignment.endDateTime"),
            assignment_type=_choice(spec, "assignmentType", ASSIGNMENT_TYPES, "Activated", "assignment"),
            member_type=_choice(spec, "memberType", MEMBER_TYPES, "Direct", "assignment"),
            schedule_id=schedule_id,
            origin="seed",
            request_id=None,
            activated_at=start,
            # Already there: every store shows it from now on (or since it started).
            visible_at=dict.fromkeys(STORES, min(start, utc_now())),
        )
        # Seeding the same instance id again replaces it, in place.
        for index, existing in enumerate(self.grants):
            if existing.instance_id == grant.instance_id:
                self.grants[index] = grant
                break
        else:
            self.grants.append(grant)
        return grant.instance()

    def seed_request(self, spec: object) -> JSON:
        spec = _as_object(spec, "request")
        reject_unknown_keys(spec, REQUEST_PROPS, "request")
        principal = self._principal(spec, "request")
        role = _required_guid(spec, "roleDefinitionId", "request")
        status = spec.get("status")
        if status not in REQUEST_STATUSES:
            raise SeedError(f"request.status is required, one of {list(REQUEST_STATUSES)}")
        created = parse_datetime(spec.get("createdDateTime"), "request.createdDateTime") or utc_now()
        schedule = spec.get("scheduleInfo") or {
            "startDateTime": iso_z(created),
            "recurrence": None,
            "expiration": {"type": "afterDuration", "endDateTime": None, "duration": "PT1H"},
        }
        if not isinstance(schedule, dict):
            raise SeedError("request.scheduleInfo must be an object")
        ticket = spec.get("ticketInfo") or {"ticketNumber": None, "ticketSystem": None}
        if not isinstance(ticket, dict):
            raise SeedError("request.ticketInfo must be an object")
        item = {
            "id": _guid_or_new(spec.get("id"), "request.id"),
            "status": status,
            "createdDateTime": iso_z(created),
            "completedDateTime": iso_z(
                parse_datetime(spec.get("completedDateTime"), "request.completedDateTime")
            ),
            "approvalId": optional_str(spec, "approvalId", "request"),
            "customData": optional_str(spec, "customData", "request"),
            "action": _choice(spec, "action", REQUEST_ACTIONS, "adminAssign", "request"),
            "principalId": principal,
            "roleDefinitionId": role,
            "directoryScopeId": optional_str(spec, "directoryScopeId", "request", "/"),
            "appScopeId": optional_str(spec, "appScopeId", "request"),
            "isValidationOnly": bool(spec.get("isValidationOnly", False)),
            "targetScheduleId": optional_str(spec, "targetScheduleId", "request"),
            "justification": optional_str(spec, "justification", "request"),
            "createdBy": spec.get("createdBy")
            or {"application": None, "device": None, "user": {"displayName": None, "id": new_guid()}},
            "scheduleInfo": schedule,
            "ticketInfo": ticket,
        }
        self._upsert(self.requests, item)
        return item

    def _window(self, spec: JSON, what: str) -> JSON:
        start = parse_datetime(spec.get("startDateTime"), f"{what}.startDateTime") or utc_now()
        end = parse_datetime(spec.get("endDateTime"), f"{what}.endDateTime")
        if end is not None and end <= start:
            raise SeedError(f"{what}.endDateTime must be after startDateTime")
        return {"startDateTime": iso_z(start), "endDateTime": iso_z(end)}

    @staticmethod
    def _instance_id(existing: list[JSON], role: str, principal: str, suffix: str) -> str:
        # PIM instance ids are not GUIDs: they read like base64url of (role, principal) plus a sequence
        # ("...-1-e" for eligibility). The exact recipe is an observation, not a contract: treat as opaque.
        stem = b64url(uuid.UUID(role).bytes_le + uuid.UUID(principal).bytes_le)
        taken = {i["id"] for i in existing}
        n = 1
        while f"{stem}-{n}{suffix}" in taken:
            n += 1
        return f"{stem}-{n}{suffix}"

    @staticmethod
    def _upsert(items: list[JSON], item: JSON) -> None:
        for index, existing in enumerate(items):
            if existing["id"] == item["id"]:
                items[index] = item
                return
        items.append(item)


_CODE_FOR_STATUS = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "Authorization_RequestDenied",
    404: "Request_ResourceNotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalServerError",
    501: "NotImplemented",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def _not_found(key: str) -> ServiceError:
    return ServiceError(
        404,
        f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
        code="Request_ResourceNotFound",
    )


def _check_query_options(request: Request) -> None:
    for key in request.query_params:
        if key.startswith("$") and key not in SUPPORTED_QUERY_OPTIONS:
            raise ServiceError(
                400,
                f"The simulator does not support the query option {key} (supported: "
                f"{', '.join(sorted(SUPPORTED_QUERY_OPTIONS))}).",
                code="BadRequest",
            )


def _int_option(request: Request, key: str, low: int, high: int) -> int | None:
    raw = request.query_params.get(key)
    if raw is None:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ServiceError(400, f"Invalid value '{raw}' for query option {key}.", code="BadRequest")
    return int(raw)


def _skiptoken(request: Request) -> int:
    raw = request.query_params.get("$skiptoken")
    if raw is None:
        return 0
    if not raw.startswith("sim") or not raw[3:].isdigit():
        raise ServiceError(400, "The $skiptoken is not one this service issued.", code="BadRequest")
    return int(raw[3:])


def _project(obj: Mapping[str, Any], props: tuple[str, ...]) -> JSON:
    projected: JSON = {k: obj[k] for k in obj if k.startswith("@odata.")}
    projected.update({p: obj.get(p) for p in props if p in obj})
    return projected


def _typed_service_principal(principal: JSON) -> JSON:
    return {"@odata.type": "#microsoft.graph.servicePrincipal", **principal}


def _own_props(obj: Mapping[str, Any]) -> JSON:
    """A directory object in a mixed collection: a user shows its default properties, a group all of its."""
    if obj.get("@odata.type") == "#microsoft.graph.user":
        return _project(obj, USER_DEFAULT_PROPS)
    return dict(obj)


def _as_object(spec: object, what: str) -> JSON:
    if not isinstance(spec, dict):
        raise SeedError(f"a {what} is a JSON object")
    return spec


def _guid_or_new(value: object, what: str) -> str:
    if value is None:
        return new_guid()
    if not isinstance(value, str) or not is_guid(value):
        raise SeedError(f"{what} must be a GUID, got {value!r}")
    return value.lower()


def _required_guid(spec: JSON, key: str, what: str) -> str:
    value = require_str(spec, key, what)
    if not is_guid(value):
        raise SeedError(f"{what}.{key} must be a GUID (a role template id), got {value!r}")
    return value.lower()


def _choice(spec: JSON, key: str, choices: tuple[str, ...], default: str, what: str) -> str:
    value = spec.get(key, default)
    if value not in choices:
        raise SeedError(f"{what}.{key} must be one of {list(choices)}, got {value!r}")
    return str(value)


# -- request bodies (POST roleAssignmentScheduleRequests, POST roleAssignments) -----------------------------


def _known_properties(body: Mapping[str, Any], allowed: Iterable[str], odata_type: str) -> None:
    for key in body:
        if key not in allowed:
            raise ServiceError(
                400,
                f"The property '{key}' does not exist on type '{odata_type}'. Make sure to only use property "
                "names that are defined by the type.",
                code="BadRequest",
            )


def _body_guid(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        raise ServiceError(400, f"The property '{key}' is required.", code="BadRequest")
    if not isinstance(value, str) or not is_guid(value):
        raise ServiceError(400, f"Invalid value for '{key}': {value!r} is not a GUID.", code="BadRequest")
    return value.lower()


def _body_scope(body: Mapping[str, Any]) -> str:
    scope = body.get("directoryScopeId")
    if scope is None:
        raise ServiceError(
            400, "The property 'directoryScopeId' is required ('/' for the tenant).", code="BadRequest"
        )
    if not isinstance(scope, str) or not scope.startswith("/"):
        raise ServiceError(400, f"Invalid directoryScopeId {scope!r}: it starts with '/'.", code="BadRequest")
    return scope


def _optional_body_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ServiceError(400, f"The property '{key}' must be a string.", code="BadRequest")
    return value


def _request_body(body: object) -> JSON:
    """A schedule request body, shape-checked the way OData does (unknown properties and wrong types: 400)."""
    if not isinstance(body, dict):
        raise ServiceError(400, "The request body must be a JSON object.", code="BadRequest")
    _known_properties(body, REQUEST_WRITABLE, "microsoft.graph.unifiedRoleAssignmentScheduleRequest")
    action = body.get("action")
    if action is None:
        raise ServiceError(400, "The property 'action' is required.", code="BadRequest")
    if action not in REQUEST_ACTIONS:
        raise ServiceError(
            400,
            f"The requested value '{action}' is not a valid member of enum type "
            "'microsoft.graph.unifiedRoleScheduleRequestActions'.",
            code="BadRequest",
        )
    validation_only = body.get("isValidationOnly", False)
    if not isinstance(validation_only, bool):
        raise ServiceError(400, "The property 'isValidationOnly' must be a boolean.", code="BadRequest")
    for key in ("justification", "customData", "appScopeId"):
        _optional_body_str(body, key)
    for key in ("scheduleInfo", "ticketInfo"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise ServiceError(400, f"The property '{key}' must be an object.", code="BadRequest")
    return {
        **body,
        "principalId": _body_guid(body, "principalId"),
        "roleDefinitionId": _body_guid(body, "roleDefinitionId"),
        "directoryScopeId": _body_scope(body),
    }


def _body_datetime(value: object, what: str) -> datetime | None:
    try:
        return parse_datetime(value, what)
    except SeedError as exc:
        raise ServiceError(400, f"Invalid value for {what}: {exc}", code="BadRequest") from exc


def _schedule(info: object, now: datetime) -> tuple[datetime, datetime | None, JSON]:
    """(start, end or None, the scheduleInfo as Graph echoes it) from a request's ``scheduleInfo``."""
    if info is None:
        info = {}
    if not isinstance(info, dict):
        raise ServiceError(400, "The property 'scheduleInfo' must be an object.", code="BadRequest")
    _known_properties(
        info, ("@odata.type", "startDateTime", "expiration", "recurrence"), "microsoft.graph.requestSchedule"
    )
    if info.get("recurrence") is not None:
        raise ServiceError(
            400, "Recurrence is not supported for role assignment schedules.", code="BadRequest"
        )
    start = _body_datetime(info.get("startDateTime"), "scheduleInfo.startDateTime") or now
    expiration = info.get("expiration") or {"type": "noExpiration"}
    if not isinstance(expiration, dict):
        raise ServiceError(400, "The property 'expiration' must be an object.", code="BadRequest")
    _known_properties(
        expiration, ("@odata.type", "type", "duration", "endDateTime"), "microsoft.graph.expirationPattern"
    )
    kind = expiration.get("type")
    duration_text: str | None = None
    end: datetime | None
    if kind == "afterDuration":
        try:
            duration = parse_duration(expiration.get("duration"))
        except ValueError as exc:
            raise ServiceError(400, f"scheduleInfo.expiration.duration: {exc}", code="BadRequest") from exc
        duration_text = str(expiration["duration"])
        end = start + duration
    elif kind == "afterDateTime":
        end = _body_datetime(expiration.get("endDateTime"), "scheduleInfo.expiration.endDateTime")
        if end is None:
            raise ServiceError(400, "expiration type afterDateTime needs an endDateTime.", code="BadRequest")
        if end <= start:
            raise ServiceError(
                400, "The expiration's endDateTime must be after the start.", code="BadRequest"
            )
    elif kind == "noExpiration":
        end = None
    else:
        raise ServiceError(
            400,
            "scheduleInfo.expiration.type must be afterDuration, afterDateTime or noExpiration, "
            f"got {kind!r}.",
            code="BadRequest",
        )
    echoed = {
        "startDateTime": graph_time(start),
        "recurrence": None,
        "expiration": {
            "type": kind,
            "endDateTime": graph_time(end) if kind == "afterDateTime" else None,
            "duration": duration_text,
        },
    }
    return start, end, echoed


def _ticket(info: object) -> JSON:
    if info is None:
        return {"ticketNumber": None, "ticketSystem": None}
    assert isinstance(info, dict)  # _request_body checked it
    _known_properties(info, ("@odata.type", "ticketNumber", "ticketSystem"), "microsoft.graph.ticketInfo")
    return {
        "ticketNumber": _optional_body_str(info, "ticketNumber"),
        "ticketSystem": _optional_body_str(info, "ticketSystem"),
    }


def _too_short(what: str, minimum: float) -> ServiceError:
    return ServiceError(
        400, f"{what} Minimum Required is {human_seconds(minimum)}.", code="ActiveDurationTooShort"
    )


def _check_policy(behaviour: Behaviour) -> None:
    if behaviour.policy_failure:
        rules = json.dumps(list(behaviour.policy_failure), separators=(",", ":"))
        raise ServiceError(
            400,
            f"The following policy rules failed: {rules}",
            code="RoleAssignmentRequestPolicyValidationFailed",
        )


def _caller(request: Request) -> JSON:
    """The calling application, as ``createdBy.application``: from the token's ``appid``/``azp`` claim if the
    bearer token is a JWT, else the simulator's stand-in (its own tokens are opaque)."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    parts = token.split(".")
    if len(parts) == 3:
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, binascii.Error):
            claims = None
        if isinstance(claims, dict) and isinstance(claims.get("appid") or claims.get("azp"), str):
            return {
                "id": claims.get("appid") or claims.get("azp"),
                "displayName": claims.get("app_displayname"),
            }
    return dict(SIMULATED_CALLER)
