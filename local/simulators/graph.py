"""Microsoft Graph v1.0, the part the app reads: users, groups and membership, PIM schedule instances and
pending schedule requests.

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

# Graph caps checkMemberGroups at 20 group ids per call.
CHECK_MEMBER_GROUPS_MAX = 20
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 999
SUPPORTED_QUERY_OPTIONS = {"$filter", "$select", "$top", "$skiptoken", "$count"}

# The application id of Microsoft Graph, as real 401s name it in WWW-Authenticate.
_GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


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
        self.assignments: list[JSON] = []
        self.requests: list[JSON] = []

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def snapshot(self, base_url: str) -> JSON:
        return {
            "users": list(self.users.values()),
            "groups": [{**g, "members": list(self.members[g["id"]])} for g in self.groups.values()],
            "eligibility": list(self.eligibility),
            "assignments": list(self.assignments),
            "requests": list(self.requests),
        }

    # ---------------------------------------------------------------- pipeline hooks

    def begin(self, request: Request) -> str | None:
        # One request-id per request, shared by the header and the error body's innerError; the caller's
        # client-request-id echoed back (Graph invents one when the caller sent none).
        request.state.request_id = new_guid()
        request.state.client_request_id = request.headers.get("client-request-id") or new_guid()
        request.state.date = datetime.now(UTC)
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
            Route(f"{rm}/roleAssignmentScheduleRequests", self.not_implemented, methods=["POST"]),
            Route(f"{rm}/roleAssignmentScheduleRequests/{{request_id}}", self.get_request, methods=["GET"]),
            Route(
                f"{rm}/roleAssignmentScheduleRequests/{{request_id}}/cancel",
                self.not_implemented,
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

    def _directory_objects(self, request: Request, object_ids: list[str]) -> Response:
        objects: list[JSON] = []
        for object_id in object_ids:
            if object_id in self.users:
                objects.append({"@odata.type": "#microsoft.graph.user", **self.users[object_id]})
            elif object_id in self.groups:
                objects.append({"@odata.type": "#microsoft.graph.group", **self.groups[object_id]})
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
        return self._pim_collection(
            request,
            self.assignments,
            "roleAssignmentScheduleInstances",
            ASSIGNMENT_PROPS,
            ASSIGNMENT_FILTERABLE,
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
        wanted = request.path_params["request_id"].lower()
        for item in self.requests:
            if item["id"].lower() == wanted:
                entity_set = "roleManagement/directory/roleAssignmentScheduleRequests"
                context = f"{self._base(request)}/$metadata#{entity_set}/$entity"
                props = self._select(
                    request,
                    REQUEST_PROPS,
                    REQUEST_PROPS,
                    "microsoft.graph.unifiedRoleAssignmentScheduleRequest",
                )
                return GraphJSON({"@odata.context": context, **_project(item, props)})
        raise _not_found(request.path_params["request_id"])

    async def not_implemented(self, request: Request) -> Response:
        raise ServiceError(
            501,
            "The simulator does not create or cancel role assignment schedule requests yet (a later "
            "issue adds it); only GET is served.",
            code="NotImplemented",
        )

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
        spec = _as_object(spec, "assignment")
        reject_unknown_keys(spec, ASSIGNMENT_PROPS, "assignment")
        principal = self._principal(spec, "assignment")
        role = _required_guid(spec, "roleDefinitionId", "assignment")
        schedule_id = optional_str(spec, "roleAssignmentScheduleId", "assignment") or new_guid()
        instance = {
            "id": spec.get("id") or self._instance_id(self.assignments, role, principal, ""),
            "principalId": principal,
            "roleDefinitionId": role,
            "directoryScopeId": optional_str(spec, "directoryScopeId", "assignment", "/"),
            "appScopeId": optional_str(spec, "appScopeId", "assignment"),
            **self._window(spec, "assignment"),
            "assignmentType": _choice(spec, "assignmentType", ASSIGNMENT_TYPES, "Activated", "assignment"),
            "memberType": _choice(spec, "memberType", MEMBER_TYPES, "Direct", "assignment"),
            # In PIM the unified role assignment that an instance produced; a GUID-like id here.
            "roleAssignmentOriginId": optional_str(spec, "roleAssignmentOriginId", "assignment")
            or new_guid(),
            "roleAssignmentScheduleId": schedule_id,
        }
        self._upsert(self.assignments, instance)
        return instance

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
