"""ServiceNow: the Table API for incidents (and the tables an incident refers to) and the on-call rota API.

Wire format, as the Table API prints it without ``sysparm_display_value``: ``{"result": ...}``, every value a
string, reference fields as ``{"link": ".../api/now/table/<table>/<sys_id>", "value": "<sys_id>"}`` (or ``""``
when empty), journal fields (``work_notes``, ``comments``) read back as ``""``. Writing a journal field
appends a ``sys_journal_field`` row, which is how ServiceNow itself stores it; read it back with
``GET /api/now/table/sys_journal_field?sysparm_query=element_id=<sys_id>^element=work_notes``.

Served tables: ``incident``, ``sys_user``, ``sys_user_group``, ``sys_journal_field``. ``sysparm_query``
supports ``=``, ``!=``, ``IN``, ``ISEMPTY``, ``ISNOTEMPTY``, ``^`` (and), ``^OR`` and ``ORDERBY``/
``ORDERBYDESC``, with dot-walking (``assigned_to.email=...``). Real ServiceNow silently ignores a condition
it does not understand (and may return every row); the simulator answers 400 instead, so the mistake shows.

On-call: ``GET /api/now/on_call_rota/whoisoncall`` answers ``{"result": [{"userId", "rota", "roster",
"group", "memberId", "order", "isOverride"}]}``: sys_ids only (as we understand the real API), so a caller
resolves ``userId`` through ``sys_user`` for a user name or email.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from itertools import count
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .common import (
    JSON,
    ConflictError,
    SeedError,
    Service,
    ServiceError,
    new_sys_id,
    parse_datetime,
    read_json_body,
    reject_unknown_keys,
    require_str,
    service_base_url,
    utc_now,
)

PREFIX = "/servicenow"

# Reference fields per table -> the table they point to.
REFERENCES: dict[str, dict[str, str]] = {
    "incident": {
        "assigned_to": "sys_user",
        "assignment_group": "sys_user_group",
        "opened_by": "sys_user",
        "caller_id": "sys_user",
        "resolved_by": "sys_user",
        "closed_by": "sys_user",
    },
    "sys_user": {"manager": "sys_user"},
    "sys_user_group": {"manager": "sys_user"},
    "sys_journal_field": {},
}
JOURNAL_FIELDS = {"incident": ("work_notes", "comments")}

INCIDENT_FIELDS = (
    "sys_id",
    "number",
    "short_description",
    "description",
    "priority",
    "impact",
    "urgency",
    "state",
    "active",
    "category",
    "assigned_to",
    "assignment_group",
    "opened_by",
    "caller_id",
    "major_incident_state",
    "work_notes",
    "comments",
    "close_code",
    "close_notes",
    "opened_at",
    "resolved_at",
    "resolved_by",
    "closed_at",
    "closed_by",
    "sys_class_name",
    "sys_created_on",
    "sys_created_by",
    "sys_updated_on",
    "sys_updated_by",
    "sys_mod_count",
)
USER_FIELDS = (
    "sys_id",
    "user_name",
    "email",
    "name",
    "first_name",
    "last_name",
    "title",
    "active",
    "manager",
    "sys_created_on",
    "sys_updated_on",
)
GROUP_FIELDS = (
    "sys_id",
    "name",
    "description",
    "email",
    "manager",
    "active",
    "sys_created_on",
    "sys_updated_on",
)
JOURNAL_ROW_FIELDS = ("sys_id", "element", "element_id", "name", "value", "sys_created_on", "sys_created_by")
FIELDS: dict[str, tuple[str, ...]] = {
    "incident": INCIDENT_FIELDS,
    "sys_user": USER_FIELDS,
    "sys_user_group": GROUP_FIELDS,
    "sys_journal_field": JOURNAL_ROW_FIELDS,
}

# Incident states: 1 New, 2 In Progress, 3 On Hold, 6 Resolved, 7 Closed, 8 Canceled. Only Closed and
# Canceled make an incident inactive (a Resolved one still counts as active until it closes).
INACTIVE_STATES = {"7", "8"}

SUPPORTED_SYSPARMS = {
    "sysparm_query",
    "sysparm_fields",
    "sysparm_limit",
    "sysparm_offset",
    "sysparm_exclude_reference_link",
    "sysparm_display_value",
    "sysparm_suppress_pagination_header",
    "sysparm_no_count",
}

_CONDITION = re.compile(r"^(?P<field>[a-z0-9_.]+?)(?P<op>!=|=|ISNOTEMPTY|ISEMPTY|IN)(?P<value>.*)$")


def sn_time(moment: datetime) -> str:
    """``2024-05-01 10:00:00``: the Table API's date-time form (UTC without display values)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


class ServiceNowService(Service):
    name = "servicenow"
    prefix = PREFIX

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, JSON]] = {name: {} for name in FIELDS}
        self.oncall: list[JSON] = []
        self.updates: dict[str, list[JSON]] = {}
        self._numbers = count(10001)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def snapshot(self, base_url: str) -> JSON:
        return {
            "incidents": [self.incident_view(sys_id) for sys_id in self.tables["incident"]],
            "users": list(self.tables["sys_user"].values()),
            "groups": list(self.tables["sys_user_group"].values()),
            "oncall": list(self.oncall),
        }

    # ---------------------------------------------------------------- pipeline hooks

    def authenticate(self, request: Request) -> tuple[bool, str | None]:
        user = basic_auth_user(request)
        return user is not None, user

    def unauthenticated(self) -> ServiceError:
        return ServiceError(
            401,
            "User Not Authenticated",
            detail="Required to provide Auth information",
            headers={"WWW-Authenticate": 'BASIC realm="Service-now"'},
        )

    def error_response(self, request: Request, error: ServiceError) -> Response:
        body = {"error": {"message": error.message, "detail": error.detail}, "status": "failure"}
        return JSONResponse(body, status_code=error.status, headers=error.headers)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/now/table/{table}", self.list_records, methods=["GET"]),
            Route("/api/now/table/{table}/{sys_id}", self.get_record, methods=["GET"]),
            Route("/api/now/table/{table}/{sys_id}", self.update_record, methods=["PATCH", "PUT"]),
            Route("/api/now/on_call_rota/whoisoncall", self.who_is_on_call, methods=["GET"]),
        ]

    # ---------------------------------------------------------------- Table API

    def _table(self, request: Request) -> str:
        table = str(request.path_params["table"])
        if table not in self.tables:
            raise ServiceError(
                400, f"Invalid table {table}", detail=f"the simulator serves: {sorted(self.tables)}"
            )
        for key in request.query_params:
            if key.startswith("sysparm_") and key not in SUPPORTED_SYSPARMS:
                raise ServiceError(
                    400, f"The simulator does not support {key}", detail="see local/simulators/README.md"
                )
        if request.query_params.get("sysparm_display_value", "false").lower() != "false":
            raise ServiceError(
                400, "The simulator does not support sysparm_display_value", detail="use sys_ids"
            )
        return table

    def _record(self, table: str, sys_id: str) -> JSON:
        record = self.tables[table].get(sys_id)
        if record is None:
            raise ServiceError(
                404, "No Record found", detail="Record doesn't exist or ACL restricts the record retrieval"
            )
        return record

    async def get_record(self, request: Request) -> Response:
        table = self._table(request)
        record = self._record(table, request.path_params["sys_id"])
        return JSONResponse({"result": self._render(request, table, record)})

    async def list_records(self, request: Request) -> Response:
        table = self._table(request)
        records = list(self.tables[table].values())
        query = request.query_params.get("sysparm_query", "")
        if query:
            predicate, order = self._parse_query(table, query)
            records = [r for r in records if predicate(r)]
            # Stable sorts applied last key first give the ORDERBY precedence ServiceNow uses.
            for field, descending in reversed(order):
                records.sort(key=functools.partial(self._value, table, path=field), reverse=descending)
        offset = _int_param(request, "sysparm_offset", 0)
        limit = _int_param(request, "sysparm_limit", 10000)
        page = records[offset : offset + limit]
        result = [self._render(request, table, r) for r in page]
        return JSONResponse({"result": result}, headers={"X-Total-Count": str(len(records))})

    async def update_record(self, request: Request) -> Response:
        table = self._table(request)
        record = self._record(table, request.path_params["sys_id"])
        body = await read_json_body(request)
        if not isinstance(body, dict):
            raise ServiceError(
                400, "Exception while reading request", detail="The payload is not a JSON object"
            )
        user = basic_auth_user(request) or "admin"
        self.apply_update(table, record, body, user)
        return JSONResponse({"result": self._render(request, table, record)})

    def apply_update(self, table: str, record: JSON, body: Mapping[str, Any], user: str) -> None:
        now = utc_now()
        applied: JSON = {}
        ignored: list[str] = []
        for field, raw in body.items():
            if isinstance(raw, dict | list):
                raise ServiceError(400, f"Field '{field}': the simulator expects a string, number or boolean")
            value = "" if raw is None else ("true" if raw is True else "false" if raw is False else str(raw))
            if field in JOURNAL_FIELDS.get(table, ()):
                if value:
                    self._journal(table, record["sys_id"], field, value, user, now)
                    applied[field] = value
            elif field.startswith("sys_") or field not in record:
                # ServiceNow ignores fields a record does not have (and system fields) without an error.
                ignored.append(field)
            else:
                record[field] = value
                applied[field] = value
        if table == "incident" and "state" in applied:
            record["active"] = "false" if record["state"] in INACTIVE_STATES else "true"
            if record["state"] == "6" and not record["resolved_at"]:
                record["resolved_at"] = sn_time(now)
            if record["state"] == "7" and not record["closed_at"]:
                record["closed_at"] = sn_time(now)
        record["sys_updated_on"] = sn_time(now)
        if "sys_updated_by" in record:
            record["sys_updated_by"] = user
        if "sys_mod_count" in record:
            record["sys_mod_count"] = str(int(record["sys_mod_count"] or "0") + 1)
        self.updates.setdefault(record["sys_id"], []).append(
            {"time": sn_time(now), "user": user, "fields": applied, "ignored_fields": ignored}
        )

    def _journal(
        self, table: str, element_id: str, element: str, value: str, user: str, now: datetime
    ) -> None:
        row = {
            "sys_id": new_sys_id(),
            "element": element,
            "element_id": element_id,
            "name": table,
            "value": value,
            "sys_created_on": sn_time(now),
            "sys_created_by": user,
        }
        self.tables["sys_journal_field"][row["sys_id"]] = row

    def journal(self, element_id: str, element: str) -> list[JSON]:
        """Journal rows of one record's field, oldest first (creation order)."""
        return [
            r
            for r in self.tables["sys_journal_field"].values()
            if r["element_id"] == element_id and r["element"] == element
        ]

    def _render(self, request: Request, table: str, record: JSON) -> JSON:
        base = service_base_url(request)
        plain = request.query_params.get("sysparm_exclude_reference_link", "false").lower() == "true"
        fields_param = request.query_params.get("sysparm_fields")
        if fields_param:
            wanted = [f.strip() for f in fields_param.split(",") if f.strip()]
            for field in wanted:
                self._check_field(table, field)
        else:
            wanted = list(record)
        rendered: JSON = {}
        refs = REFERENCES[table]
        for field in wanted:
            if field in refs and not plain:
                sys_id = record.get(field, "")
                rendered[field] = (
                    {"link": f"{base}/api/now/table/{refs[field]}/{sys_id}", "value": sys_id}
                    if sys_id
                    else ""
                )
            elif field in JOURNAL_FIELDS.get(table, ()):
                rendered[field] = ""
            else:
                rendered[field] = self._value(table, record, field)
        return rendered

    def _check_field(self, table: str, path: str) -> None:
        head, _, rest = path.partition(".")
        if head not in FIELDS[table] and not head.startswith("u_"):
            raise ServiceError(
                400, f"Unknown field '{head}' on table {table}", detail="the simulator refuses it"
            )
        if rest:
            target = REFERENCES[table].get(head)
            if target is None:
                raise ServiceError(
                    400, f"'{head}' on table {table} is not a reference: cannot dot-walk to '{rest}'"
                )
            self._check_field(target, rest)

    def _value(self, table: str, record: JSON | None, path: str) -> str:
        if record is None:
            return ""
        head, _, rest = path.partition(".")
        value = str(record.get(head, ""))
        if not rest:
            return value
        target = REFERENCES[table][head]
        return self._value(target, self.tables[target].get(value), rest)

    def _parse_query(self, table: str, query: str) -> tuple[Callable[[JSON], bool], list[tuple[str, bool]]]:
        groups: list[list[Callable[[JSON], bool]]] = []
        order: list[tuple[str, bool]] = []
        for index, part in enumerate(query.split("^")):
            connector_or = part.startswith("OR") and index > 0
            if connector_or:
                part = part[2:]
            if part.startswith("NQ"):
                raise ServiceError(400, "The simulator does not support ^NQ queries", detail=query)
            if part.startswith("ORDERBYDESC") or part.startswith("ORDERBY"):
                descending = part.startswith("ORDERBYDESC")
                field = part[len("ORDERBYDESC") :] if descending else part[len("ORDERBY") :]
                self._check_field(table, field)
                order.append((field, descending))
                continue
            match = _CONDITION.match(part)
            if match is None:
                raise ServiceError(
                    400, f"The simulator cannot parse the query condition '{part}'", detail=query
                )
            field, op, value = match["field"], match["op"], match["value"]
            self._check_field(table, field)
            condition = self._condition(table, field, op, value)
            if connector_or:
                if not groups:
                    raise ServiceError(400, "A query cannot start with ^OR", detail=query)
                groups[-1].append(condition)
            else:
                groups.append([condition])
        # ServiceNow binds OR tighter than AND: a^b^ORc means a AND (b OR c).
        return (lambda record: all(any(c(record) for c in group) for group in groups)), order

    def _condition(self, table: str, field: str, op: str, value: str) -> Callable[[JSON], bool]:
        def actual(record: JSON) -> str:
            return self._value(table, record, field).casefold()

        wanted = value.casefold()
        if op == "=":
            return lambda record: actual(record) == wanted
        if op == "!=":
            return lambda record: actual(record) != wanted
        if op == "IN":
            options = {v.strip().casefold() for v in value.split(",")}
            return lambda record: actual(record) in options
        if op == "ISEMPTY":
            return lambda record: actual(record) == ""
        return lambda record: actual(record) != ""

    # ---------------------------------------------------------------- on-call

    async def who_is_on_call(self, request: Request) -> Response:
        rota_ids = _id_list(request, "rota_ids")
        group_ids = _id_list(request, "group_ids")
        roster_ids = _id_list(request, "roster_ids")
        raw_time = request.query_params.get("date_time")
        at = utc_now()
        if raw_time:
            try:
                at = parse_datetime(raw_time.replace(" ", "T"), "date_time") or at
            except SeedError as exc:
                raise ServiceError(400, f"Invalid date_time '{raw_time}'", detail=str(exc)) from exc
        result = []
        for entry in self.oncall:
            if rota_ids and entry["rota"] not in rota_ids:
                continue
            if group_ids and entry["group"] not in group_ids:
                continue
            if roster_ids and entry["roster"] not in roster_ids:
                continue
            start = parse_datetime(entry["start"], "start")
            end = parse_datetime(entry["end"], "end")
            if (start is not None and at < start) or (end is not None and at >= end):
                continue
            result.append(
                {
                    "userId": entry["userId"],
                    "rota": entry["rota"],
                    "roster": entry["roster"],
                    "group": entry["group"],
                    "memberId": entry["memberId"],
                    "order": entry["order"],
                    "isOverride": entry["isOverride"],
                }
            )
        return JSONResponse({"result": result})

    # ---------------------------------------------------------------- seeding (control API)

    def seed_user(self, spec: object) -> JSON:
        spec = _as_object(spec, "user")
        reject_unknown_keys(
            spec,
            ("sys_id", "user_name", "email", "name", "first_name", "last_name", "title", "active"),
            "user",
        )
        user_name = require_str(spec, "user_name", "user")
        sys_id = _sys_id_or_new(spec.get("sys_id"), "user.sys_id")
        for existing in self.tables["sys_user"].values():
            if existing["user_name"].casefold() == user_name.casefold() and existing["sys_id"] != sys_id:
                raise ConflictError(
                    f"user_name {user_name!r} already belongs to sys_user {existing['sys_id']}"
                )
        now = sn_time(utc_now())
        first = str(spec.get("first_name") or "")
        last = str(spec.get("last_name") or "")
        record = {
            "sys_id": sys_id,
            "user_name": user_name,
            "email": str(spec.get("email") or ""),
            "name": str(spec.get("name") or f"{first} {last}".strip() or user_name),
            "first_name": first,
            "last_name": last,
            "title": str(spec.get("title") or ""),
            "active": "false" if spec.get("active") is False else "true",
            "manager": "",
            "sys_created_on": now,
            "sys_updated_on": now,
        }
        self.tables["sys_user"][sys_id] = record
        return record

    def _user_ref(self, ref: object, what: str) -> str:
        """A user given as a sys_id, user_name or email (must exist), or as an object (created if new)."""
        if ref is None or ref == "":
            return ""
        users = self.tables["sys_user"]
        if isinstance(ref, str):
            for user in users.values():
                if ref in (user["sys_id"], user["user_name"]) or (
                    user["email"] and user["email"].casefold() == ref.casefold()
                ):
                    return str(user["sys_id"])
            raise SeedError(
                f"{what}: no sys_user with sys_id, user_name or email {ref!r} (seed it, or pass an object)"
            )
        if isinstance(ref, dict):
            user_name = ref.get("user_name") or ref.get("email")
            if not isinstance(user_name, str) or not user_name:
                raise SeedError(f"{what}: a user object needs user_name or email")
            for user in users.values():
                if user["user_name"].casefold() == user_name.casefold():
                    return str(user["sys_id"])
            return str(
                self.seed_user(
                    {"user_name": user_name, **{k: v for k, v in ref.items() if k != "user_name"}}
                )["sys_id"]
            )
        raise SeedError(f"{what}: a user is a string (sys_id, user_name, email) or an object")

    def _group_ref(self, ref: object, what: str) -> str:
        """A group given as a sys_id or name (created by name if new), or as an object with a name."""
        if ref is None or ref == "":
            return ""
        spec = ref if isinstance(ref, dict) else {"name": ref} if isinstance(ref, str) else None
        if spec is None:
            raise SeedError(f"{what}: a group is a string (sys_id or name) or an object with a name")
        reject_unknown_keys(spec, ("sys_id", "name", "description", "email"), what)
        groups = self.tables["sys_user_group"]
        name = spec.get("name")
        if isinstance(name, str) and name in groups:
            return name
        for group in groups.values():
            if group["name"] == name:
                return str(group["sys_id"])
        if not isinstance(name, str) or not name:
            raise SeedError(f"{what}: a group needs a name")
        sys_id = _sys_id_or_new(spec.get("sys_id"), f"{what}.sys_id")
        now = sn_time(utc_now())
        groups[sys_id] = {
            "sys_id": sys_id,
            "name": name,
            "description": str(spec.get("description") or ""),
            "email": str(spec.get("email") or ""),
            "manager": "",
            "active": "true",
            "sys_created_on": now,
            "sys_updated_on": now,
        }
        return sys_id

    def seed_incident(self, spec: object) -> JSON:
        spec = _as_object(spec, "incident")
        allowed = [f for f in INCIDENT_FIELDS if f not in ("work_notes", "comments")]
        reject_unknown_keys(spec, [*allowed, *[k for k in spec if k.startswith("u_")]], "incident")
        sys_id = _sys_id_or_new(spec.get("sys_id"), "incident.sys_id")
        number = spec.get("number") or f"INC{next(self._numbers):07d}"
        for existing in self.tables["incident"].values():
            if existing["number"] == number and existing["sys_id"] != sys_id:
                raise ConflictError(f"incident number {number} already belongs to {existing['sys_id']}")
        now = sn_time(utc_now())
        record: JSON = {field: "" for field in INCIDENT_FIELDS}
        record.update(
            {
                "sys_id": sys_id,
                "number": str(number),
                "priority": "4",
                "impact": "3",
                "urgency": "3",
                "state": "1",
                "sys_class_name": "incident",
                "opened_at": now,
                "sys_created_on": now,
                "sys_created_by": "admin",
                "sys_updated_on": now,
                "sys_updated_by": "admin",
                "sys_mod_count": "0",
            }
        )
        for field, raw in spec.items():
            if field in ("sys_id", "number"):
                continue
            if field in REFERENCES["incident"]:
                target = REFERENCES["incident"][field]
                record[field] = (
                    self._group_ref(raw, f"incident.{field}")
                    if target == "sys_user_group"
                    else self._user_ref(raw, f"incident.{field}")
                )
            elif isinstance(raw, dict | list):
                raise SeedError(f"incident.{field}: a string, number or boolean")
            else:
                record[field] = (
                    "" if raw is None else ("true" if raw is True else "false" if raw is False else str(raw))
                )
        record["active"] = "false" if record["state"] in INACTIVE_STATES else "true"
        self.tables["incident"][sys_id] = record
        return record

    def find_incident(self, key: str) -> JSON | None:
        """An incident by sys_id or number."""
        incidents = self.tables["incident"]
        if key in incidents:
            return incidents[key]
        return next((r for r in incidents.values() if r["number"] == key), None)

    def incident_view(self, key: str) -> JSON:
        record = self.find_incident(key)
        if record is None:
            raise SeedError(f"no incident with sys_id or number {key!r}")
        sys_id = record["sys_id"]
        return {
            "incident": dict(record),
            "work_notes": self.journal(sys_id, "work_notes"),
            "comments": self.journal(sys_id, "comments"),
            "updates": list(self.updates.get(sys_id, [])),
        }

    def seed_oncall(self, spec: object) -> JSON:
        spec = _as_object(spec, "oncall")
        reject_unknown_keys(
            spec, ("group", "rota_id", "roster_id", "users", "start", "end", "override"), "oncall"
        )
        group = self._group_ref(spec.get("group"), "oncall.group")
        if not group:
            raise SeedError("oncall.group is required (a group sys_id, a name, or an object)")
        users = spec.get("users")
        if not isinstance(users, list) or not users:
            raise SeedError("oncall.users is required: a non-empty list, primary first")
        start = parse_datetime(spec.get("start"), "oncall.start")
        end = parse_datetime(spec.get("end"), "oncall.end")
        rota = _sys_id_or_new(spec.get("rota_id"), "oncall.rota_id")
        roster = _sys_id_or_new(spec.get("roster_id"), "oncall.roster_id")
        entries = []
        for order, ref in enumerate(users, start=1):
            entry = {
                "userId": self._user_ref(ref, f"oncall.users[{order - 1}]"),
                "rota": rota,
                "roster": roster,
                "group": group,
                "memberId": new_sys_id(),
                "order": order,
                "isOverride": bool(spec.get("override", False)),
                "start": start.isoformat() if start else None,
                "end": end.isoformat() if end else None,
            }
            self.oncall.append(entry)
            entries.append(entry)
        return {"rota_id": rota, "roster_id": roster, "group_id": group, "members": entries}


def basic_auth_user(request: Request) -> str | None:
    """The user name of a well-formed ``Authorization: Basic`` header with a non-empty user and password."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return user if sep and user and password else None


def _id_list(request: Request, key: str) -> set[str]:
    raw = request.query_params.get(key, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _int_param(request: Request, key: str, default: int) -> int:
    raw = request.query_params.get(key)
    if raw is None:
        return default
    if not raw.isdigit():
        raise ServiceError(400, f"Invalid {key}: '{raw}'")
    return int(raw)


def _as_object(spec: object, what: str) -> JSON:
    if not isinstance(spec, dict):
        raise SeedError(f"a {what} is a JSON object")
    return spec


def _sys_id_or_new(value: object, what: str) -> str:
    if value is None:
        return new_sys_id()
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{32}", value):
        raise SeedError(f"{what} must be 32 lower-case hex digits, got {value!r}")
    return value
