"""PagerDuty REST API v2: who is on call (``GET /oncalls``).

``GET /oncalls?schedule_ids[]=P...`` (also ``escalation_policy_ids[]``, ``user_ids[]``, ``since``/``until``,
``include[]``, ``limit``/``offset``/``total``) answers ``{"oncalls": [...], "limit", "offset", "more",
"total"}``. As in the real API each on-call's ``user`` is a *reference* (``id``, ``type:
"user_reference"``, ``summary`` = the name, ``self``, ``html_url``) without an email; ``include[]=users``
expands it to the full user object, which carries ``email``. Ask for it if you need the email.

The real API reads array parameters only with the ``[]`` suffix; the simulator refuses the bare names
(``schedule_ids=...``) with 400 rather than silently returning every on-call.

Authentication: ``Authorization: Token token=<api key>`` (any key).
"""

from __future__ import annotations

import secrets
import string
from datetime import datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .common import (
    JSON,
    Fault,
    SeedError,
    Service,
    ServiceError,
    iso_z,
    parse_datetime,
    reject_unknown_keys,
    require_str,
    service_base_url,
    utc_now,
)

PREFIX = "/pagerduty"
HTML_BASE = "https://simulated.pagerduty.com"
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
ARRAY_PARAMS = ("schedule_ids", "escalation_policy_ids", "user_ids", "include")
_ID_ALPHABET = string.ascii_uppercase + string.digits
_HOUR = timedelta(hours=1)


def new_pd_id() -> str:
    """PagerDuty object ids: ``P`` followed by six upper-case letters or digits (``PXPGF42``)."""
    return "P" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))


class PagerDutyService(Service):
    name = "pagerduty"
    prefix = PREFIX

    def __init__(self) -> None:
        self.users: dict[str, JSON] = {}
        self.schedules: dict[str, JSON] = {}
        self.policies: dict[str, JSON] = {}
        self.oncalls: list[JSON] = []

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def snapshot(self, base_url: str) -> JSON:
        return {
            "users": list(self.users.values()),
            "schedules": list(self.schedules.values()),
            "escalation_policies": list(self.policies.values()),
            "oncalls": list(self.oncalls),
        }

    # ---------------------------------------------------------------- pipeline hooks

    def authenticate(self, request: Request) -> tuple[bool, str | None]:
        header = request.headers.get("authorization", "")
        scheme, _, rest = header.partition(" ")
        ok = scheme == "Token" and rest.startswith("token=") and len(rest) > len("token=")
        return ok, None

    def unauthenticated(self) -> ServiceError:
        return ServiceError(401, "Authentication failed", code="2006")

    def fault_error(self, fault: Fault) -> ServiceError:
        error = super().fault_error(fault)
        if fault.code is None and error.status == 429:
            error.code = "2020"
            error.message = fault.message or "Rate Limit Exceeded"
        return error

    def error_response(self, request: Request, error: ServiceError) -> Response:
        body: JSON = {"error": {"message": error.message}}
        if error.code and error.code.isdigit():
            body["error"]["code"] = int(error.code)
        if error.detail:
            body["error"]["errors"] = [error.detail]
        return JSONResponse(body, status_code=error.status, headers=error.headers)

    def routes(self) -> list[BaseRoute]:
        return [Route("/oncalls", self.list_oncalls, methods=["GET"])]

    # ---------------------------------------------------------------- REST

    async def list_oncalls(self, request: Request) -> Response:
        params = request.query_params
        for bare in ARRAY_PARAMS:
            if bare in params:
                raise ServiceError(
                    400,
                    "Invalid Input Provided",
                    code="2001",
                    detail=f"use '{bare}[]=' (array parameters need [])",
                )
        schedule_ids = set(params.getlist("schedule_ids[]"))
        policy_ids = set(params.getlist("escalation_policy_ids[]"))
        user_ids = set(params.getlist("user_ids[]"))
        include = set(params.getlist("include[]"))
        unknown_include = include - {"users", "schedules", "escalation_policies"}
        if unknown_include:
            raise ServiceError(
                400,
                "Invalid Input Provided",
                code="2001",
                detail=f"unknown include[] {sorted(unknown_include)}",
            )
        since = self._time_param(request, "since") or utc_now()
        until = self._time_param(request, "until") or since
        if until < since:
            raise ServiceError(400, "Invalid Input Provided", code="2001", detail="until is before since")
        limit = self._int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = self._int_param(request, "offset", 0, 0, 10_000)
        matching = []
        for entry in self.oncalls:
            if schedule_ids and (entry["schedule"] is None or entry["schedule"] not in schedule_ids):
                continue
            if policy_ids and entry["escalation_policy"] not in policy_ids:
                continue
            if user_ids and entry["user"] not in user_ids:
                continue
            start = parse_datetime(entry["start"], "start")
            end = parse_datetime(entry["end"], "end")
            # An on-call overlaps [since, until] (a single instant when neither is given: "now").
            if (start is not None and start > until) or (end is not None and end <= since):
                continue
            matching.append(entry)
        page = matching[offset : offset + limit]
        base = service_base_url(request)
        body: JSON = {
            "oncalls": [self._render(base, entry, include) for entry in page],
            "limit": limit,
            "offset": offset,
            "more": offset + limit < len(matching),
            "total": len(matching) if params.get("total", "false").lower() == "true" else None,
        }
        return JSONResponse(body)

    def _time_param(self, request: Request, key: str) -> datetime | None:
        raw = request.query_params.get(key)
        if raw is None:
            return None
        try:
            return parse_datetime(raw, key)
        except SeedError as exc:
            raise ServiceError(
                400, "Invalid 'since' or 'until' Parameter Values", code="2004", detail=str(exc)
            ) from exc

    def _int_param(self, request: Request, key: str, default: int, low: int, high: int) -> int:
        raw = request.query_params.get(key)
        if raw is None:
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ServiceError(
                400, "Invalid Input Provided", code="2001", detail=f"{key} must be in [{low}, {high}]"
            )
        return int(raw)

    def _reference(self, base: str, kind: str, collection: str, obj: JSON, expand: bool) -> JSON:
        reference = {
            "id": obj["id"],
            "type": kind if expand else f"{kind}_reference",
            "summary": obj["name"],
            "self": f"{base}/{collection}/{obj['id']}",
            "html_url": f"{HTML_BASE}/{collection}/{obj['id']}",
        }
        if expand:
            reference.update({k: v for k, v in obj.items() if k != "id"})
        return reference

    def _render(self, base: str, entry: JSON, include: set[str]) -> JSON:
        schedule = self.schedules.get(entry["schedule"]) if entry["schedule"] else None
        return {
            "escalation_policy": self._reference(
                base,
                "escalation_policy",
                "escalation_policies",
                self.policies[entry["escalation_policy"]],
                "escalation_policies" in include,
            ),
            "escalation_level": entry["escalation_level"],
            "schedule": self._reference(base, "schedule", "schedules", schedule, "schedules" in include)
            if schedule
            else None,
            "user": self._reference(base, "user", "users", self.users[entry["user"]], "users" in include),
            "start": entry["start"],
            "end": entry["end"],
        }

    # ---------------------------------------------------------------- seeding (control API)

    def _user(self, ref: object) -> str:
        if isinstance(ref, str):
            for user in self.users.values():
                if ref in (user["id"], user["email"]):
                    return str(user["id"])
            raise SeedError(
                f"oncall.user: no PagerDuty user with id or email {ref!r} (pass an object to create one)"
            )
        if not isinstance(ref, dict):
            raise SeedError("oncall.user is an id/email string or an object {id?, name, email}")
        reject_unknown_keys(ref, ("id", "name", "email", "time_zone", "role", "job_title"), "oncall.user")
        email = require_str(ref, "email", "oncall.user")
        for user in self.users.values():
            if user["email"].casefold() == email.casefold():
                return str(user["id"])
        user_id = str(ref.get("id") or new_pd_id())
        self.users[user_id] = {
            "id": user_id,
            "name": str(ref.get("name") or email.split("@", 1)[0]),
            "email": email,
            "time_zone": str(ref.get("time_zone") or "Etc/UTC"),
            "color": "green",
            "role": str(ref.get("role") or "user"),
            "avatar_url": f"{HTML_BASE}/avatars/{user_id}.png",
            "description": None,
            "invitation_sent": False,
            "job_title": ref.get("job_title"),
            "teams": [],
            "contact_methods": [],
            "notification_rules": [],
        }
        return user_id

    def _named(self, store: dict[str, JSON], ref: object, what: str, default_name: str) -> str:
        if isinstance(ref, str):
            if ref not in store:
                store[ref] = {"id": ref, "name": default_name}
            return ref
        if ref is None:
            ref = {}
        if not isinstance(ref, dict):
            raise SeedError(f"{what} is an id string or an object {{id?, name?}}")
        reject_unknown_keys(ref, ("id", "name"), what)
        object_id = str(ref.get("id") or new_pd_id())
        store[object_id] = {
            "id": object_id,
            "name": str(ref.get("name") or store.get(object_id, {}).get("name") or default_name),
        }
        return object_id

    def seed_oncall(self, spec: object) -> JSON:
        if not isinstance(spec, dict):
            raise SeedError("an on-call is a JSON object")
        reject_unknown_keys(
            spec, ("user", "schedule", "escalation_policy", "escalation_level", "start", "end"), "oncall"
        )
        if "user" not in spec:
            raise SeedError("oncall.user is required")
        user = self._user(spec["user"])
        # No schedule means the user is a direct target of the escalation policy: always on call.
        schedule = (
            self._named(self.schedules, spec["schedule"], "oncall.schedule", "Primary on-call")
            if spec.get("schedule")
            else None
        )
        policy_ref = spec.get("escalation_policy")
        if policy_ref is None:
            policy = next(iter(self.policies), None) or self._named(
                self.policies, None, "oncall.escalation_policy", "Default"
            )
        else:
            policy = self._named(self.policies, policy_ref, "oncall.escalation_policy", "Default")
        level = spec.get("escalation_level", 1)
        if isinstance(level, bool) or not isinstance(level, int) or level < 1:
            raise SeedError("oncall.escalation_level is a positive integer")
        start = parse_datetime(spec.get("start"), "oncall.start")
        end = parse_datetime(spec.get("end"), "oncall.end")
        if schedule is not None and start is None:
            # A schedule's on-call has a shift: default to one that started an hour ago and lasts a day.
            now = utc_now()
            start = now.replace(microsecond=0) - _HOUR
            end = end or start + 24 * _HOUR
        entry = {
            "user": user,
            "schedule": schedule,
            "escalation_policy": policy,
            "escalation_level": level,
            "start": iso_z(start),
            "end": iso_z(end),
        }
        self.oncalls.append(entry)
        return {**entry, "user": self.users[user]}
