"""What every simulated service shares: the request pipeline, call recording, fault injection, ids, times.

Each service (Graph, ServiceNow, Jira, PagerDuty) is a :class:`Service`: its routes, how it authenticates
callers and how it renders an error in its own wire format. :class:`ServiceApp` wraps it in the same
pipeline for every request: read the body, record the call, authenticate, apply an injected fault, route,
and let the service add its per-response headers (Graph's ``request-id``) to *every* answer, errors included.

All state lives in one event loop (uvicorn runs one): a handler never awaits between reading and writing
state, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Router
from starlette.types import Message, Receive, Scope, Send

JSON = dict[str, Any]

log = logging.getLogger("simulators")

# Bodies are recorded for inspection; a cap keeps a test that posts megabytes from bloating /_sim/calls.
_MAX_RECORDED_BODY = 64 * 1024


# -- ids and times ------------------------------------------------------------------------------------------


def new_guid() -> str:
    """A GUID as Entra prints object ids (lower case, hyphenated)."""
    return str(uuid.uuid4())


def new_sys_id() -> str:
    """A ServiceNow sys_id: 32 lower-case hex digits."""
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_datetime(value: object, what: str) -> datetime | None:
    """An ISO 8601 date-time (``Z`` or an offset; a naive value is taken as UTC), or ``None`` for null."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SeedError(f"{what}: expected an ISO 8601 date-time string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SeedError(f"{what}: {value!r} is not an ISO 8601 date-time") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def iso_z(moment: datetime | None) -> str | None:
    """``2024-05-01T10:00:00Z``: the form Graph and PagerDuty print (UTC, second precision)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- errors -------------------------------------------------------------------------------------------------


class SeedError(ValueError):
    """A control-API request that cannot be applied (answered 400 with the message)."""


class ConflictError(SeedError):
    """A seed that clashes with existing state (answered 409)."""


@dataclass
class ServiceError(Exception):
    """Raised by a handler; the service renders it in its own error format (OData, ServiceNow, Jira, ...)."""

    status: int
    message: str
    code: str | None = None
    detail: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code or ''} {self.message}"


def control_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_json_body(request: Request) -> Any:
    """The request body as JSON; a ServiceError(400) for an empty or malformed body."""
    raw = await request.body()
    if not raw:
        raise ServiceError(400, "The request body is empty; a JSON body is required.", code="BadRequest")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ServiceError(400, f"The request body is not valid JSON: {exc}", code="BadRequest") from exc


def query_dict(request: Request) -> dict[str, str | list[str]]:
    """Query parameters as recorded: one value as a string, a repeated key (``ids[]=a&ids[]=b``) as a list."""
    result: dict[str, str | list[str]] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        result[key] = values[0] if len(values) == 1 else list(values)
    return result


def service_base_url(request: Request) -> str:
    """The URL at which the caller reached this service (``http://127.0.0.1:7081/graph/v1.0``)."""
    root = str(request.scope.get("root_path", ""))
    return f"{request.url.scheme}://{request.url.netloc}{root}"


# -- call recording -----------------------------------------------------------------------------------------


@dataclass
class Call:
    """One request a simulated service received, as ``GET /_sim/calls`` shows it.

    ``path`` is relative to the service's prefix (``/users/abc``), the way the service itself names it, so a
    test can count calls per endpoint without knowing the port or prefix. Credentials are never recorded:
    only who the caller said it is (the Basic-auth user name) where the service has such a notion.
    """

    seq: int
    time: str
    service: str
    method: str
    path: str
    query: dict[str, str | list[str]]
    client_request_id: str | None
    identity: str | None
    body: Any
    status: int | None = None
    fault: str | None = None
    # With an "after" fault: what the handler answered (its effect stands) before the fault replaced it.
    effect_status: int | None = None


class CallLog:
    def __init__(self) -> None:
        self._calls: list[Call] = []
        self._seq = count(1)

    def add(self, call_without_seq: JSON) -> Call:
        call = Call(seq=next(self._seq), **call_without_seq)
        self._calls.append(call)
        return call

    def select(
        self, service: str | None = None, method: str | None = None, path_contains: str | None = None
    ) -> list[Call]:
        return [
            c
            for c in self._calls
            if (service is None or c.service == service)
            and (method is None or c.method == method.upper())
            and (path_contains is None or path_contains in c.path)
        ]

    def clear(self) -> None:
        self._calls.clear()

    def as_json(self, calls: Iterable[Call] | None = None) -> list[JSON]:
        return [asdict(c) for c in (self._calls if calls is None else calls)]

    def summary(self, service: str | None = None, method: str | None = None) -> JSON:
        """Calls per endpoint: ``{"counts": {"POST /roleManagement/...": 1, ...}}`` with ids in paths replaced
        by ``{id}`` and query strings left out (keys carry the service name too when none is given), plus
        the statuses each endpoint answered."""
        counts: dict[str, int] = {}
        statuses: dict[str, dict[str, int]] = {}
        selected = self.select(service=service, method=method)
        for call in selected:
            key = f"{call.method} {normalise_path(call.path)}"
            if service is None:
                key = f"{call.service} {key}"
            counts[key] = counts.get(key, 0) + 1
            per_status = statuses.setdefault(key, {})
            status = str(call.status) if call.status is not None else "none"
            per_status[status] = per_status.get(status, 0) + 1
        return {"service": service, "total": len(selected), "counts": counts, "statuses": statuses}


_GUID_IN_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX_ID = re.compile(r"^[0-9a-fA-F]{32}$")  # ServiceNow sys_id
_ISSUE_KEY = re.compile(r"^[A-Z][A-Z0-9]+-\d+$")  # Jira issue key
_OPAQUE_ID = re.compile(r"^[A-Za-z0-9_-]{16,}$")  # PIM/unified assignment ids, tokens


def normalise_path(path: str) -> str:
    """``/users/alex@contoso.test/revokeSignInSessions`` -> ``/users/{id}/revokeSignInSessions``: GUIDs
    anywhere (also inside ``directoryRoles(roleTemplateId='...')``), and every segment that looks like an
    id rather than a name: a UPN or domain, a ServiceNow sys_id, a Jira key, a Teams conversation id, a
    number of 4+ digits, a long opaque id with a digit in it. Names such as ``roleAssignments`` or
    ``sys_journal_field`` and short version numbers (``/rest/api/3``) stay."""
    segments = []
    for segment in _GUID_IN_TEXT.sub("{id}", path).split("/"):
        if segment and (
            "@" in segment
            or "." in segment
            or ":" in segment
            or _HEX_ID.match(segment)
            or _ISSUE_KEY.match(segment)
            or (segment.isdigit() and len(segment) >= 4)
            or (_OPAQUE_ID.match(segment) and any(ch.isdigit() for ch in segment))
        ):
            segment = "{id}"
        segments.append(segment)
    return "/".join(segments)


def recorded_body(raw: bytes) -> Any:
    if not raw:
        return None
    if len(raw) > _MAX_RECORDED_BODY:
        return {"truncated": True, "bytes": len(raw)}
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


# -- fault injection ----------------------------------------------------------------------------------------


@dataclass
class Fault:
    """An injected failure: the next ``count`` matching calls get ``status`` (after ``latency_ms``).

    ``status`` None with a latency only slows matching calls down. ``count`` None means every matching call
    until the fault is cleared. ``code``/``message`` override the error body (Graph's OData error code, e.g.
    ``RoleAssignmentExists``); otherwise the service picks the code its real counterpart uses for the status.
    ``after`` lets the call through first (its effect stands: the POST created what it creates) and then
    answers the fault instead of the real response: the "503 after the POST took effect" case.
    """

    id: str
    service: str
    path_contains: str
    method: str | None
    status: int | None
    count: int | None
    retry_after: int | None
    latency_ms: int
    code: str | None
    message: str | None
    after: bool = False
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.hits >= self.count


_FAULT_KEYS = {
    "service",
    "path_contains",
    "method",
    "status",
    "count",
    "retry_after",
    "latency_ms",
    "code",
    "message",
    "after",
}


class Faults:
    def __init__(self, services: Iterable[str]) -> None:
        self._services = set(services)
        self._faults: list[Fault] = []

    def add(self, spec: object) -> Fault:
        if not isinstance(spec, dict):
            raise SeedError("a fault is a JSON object")
        unknown = set(spec) - _FAULT_KEYS
        if unknown:
            raise SeedError(f"unknown fault keys: {sorted(unknown)} (known: {sorted(_FAULT_KEYS)})")
        service = spec.get("service")
        if service not in self._services:
            raise SeedError(f"fault.service must be one of {sorted(self._services)}, got {service!r}")
        status = _optional_int(spec, "status", 100, 599)
        latency = _optional_int(spec, "latency_ms", 0, 60_000) or 0
        if status is None and latency == 0:
            raise SeedError("a fault needs a status, a latency_ms, or both")
        count_value = spec.get("count", 1)
        if count_value is not None and (not isinstance(count_value, int) or count_value < 1):
            raise SeedError("fault.count must be a positive integer, or null for every matching call")
        method = spec.get("method")
        if method is not None and not isinstance(method, str):
            raise SeedError("fault.method must be a string such as 'GET'")
        for key in ("path_contains", "code", "message"):
            if spec.get(key) is not None and not isinstance(spec.get(key), str):
                raise SeedError(f"fault.{key} must be a string")
        after = spec.get("after", False)
        if not isinstance(after, bool):
            raise SeedError("fault.after must be true or false")
        if after and status is None:
            raise SeedError("fault.after needs a status: the error that replaces the real answer")
        fault = Fault(
            id=new_guid(),
            service=service,
            path_contains=spec.get("path_contains") or "",
            method=method.upper() if method else None,
            status=status,
            count=count_value,
            retry_after=_optional_int(spec, "retry_after", 0, 3600),
            latency_ms=latency,
            code=spec.get("code"),
            message=spec.get("message"),
            after=after,
        )
        self._faults.append(fault)
        return fault

    def take(self, service: str, method: str, path: str) -> Fault | None:
        """The first live fault matching this call, its hit counted (faults apply in the order added)."""
        for fault in self._faults:
            if fault.exhausted or fault.service != service:
                continue
            if fault.method is not None and fault.method != method:
                continue
            if fault.path_contains not in path:
                continue
            fault.hits += 1
            return fault
        return None

    def clear(self) -> None:
        self._faults.clear()

    def as_json(self) -> list[JSON]:
        return [{**asdict(f), "exhausted": f.exhausted} for f in self._faults]


def _optional_int(spec: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    # bool is an int in Python; `"status": true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SeedError(f"fault.{key} must be an integer in [{low}, {high}]")
    return value


# -- services -----------------------------------------------------------------------------------------------


class Service(ABC):
    """One simulated service: state, routes, authentication and error format."""

    name: str
    prefix: str

    @abstractmethod
    def routes(self) -> list[BaseRoute]: ...

    @abstractmethod
    def authenticate(self, request: Request) -> tuple[bool, str | None]:
        """(accepted, identity to record). Credentials themselves are checked for shape only."""

    @abstractmethod
    def error_response(self, request: Request, error: ServiceError) -> Response: ...

    @abstractmethod
    def unauthenticated(self) -> ServiceError: ...

    @abstractmethod
    def reset(self) -> None: ...

    @abstractmethod
    def snapshot(self, base_url: str) -> JSON: ...

    def fault_error(self, fault: Fault) -> ServiceError:
        status = fault.status or 500
        error = ServiceError(status, fault.message or f"Injected fault ({status}).", code=fault.code)
        if fault.retry_after is not None:
            error.headers["Retry-After"] = str(fault.retry_after)
        return error

    def begin(self, request: Request) -> str | None:
        """Called first for every request (before authentication): set up per-request values in
        ``request.state`` and return the caller's correlation id to record, if the service has one."""
        return None

    def response_headers(self, request: Request) -> dict[str, str]:
        """Headers added to every response of this service (after the handler ran)."""
        return {}


class ServiceApp:
    """ASGI app for one service mounted under its prefix: the shared pipeline around its router."""

    def __init__(self, service: Service, calls: CallLog, faults: Faults) -> None:
        self.service = service
        self.calls = calls
        self.faults = faults
        # redirect_slashes off: a real API answers "/users/" itself, it does not redirect to "/users".
        self.router = Router(routes=service.routes(), default=self._no_route, redirect_slashes=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        replay = _replaying_receive(body, receive)
        request = Request(scope, replay)
        relative = scope["path"][len(scope.get("root_path", "")) :] or "/"
        client_request_id = self.service.begin(request)
        ok, identity = self.service.authenticate(request)
        call = self.calls.add(
            {
                "time": iso_z(utc_now()),
                "service": self.service.name,
                "method": request.method,
                "path": relative,
                "query": query_dict(request),
                "client_request_id": client_request_id,
                "identity": identity,
                "body": recorded_body(body),
            }
        )
        extra_headers = self.service.response_headers(request)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.status = int(message["status"])
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for key, value in extra_headers.items():
                    if key.lower().encode() not in present:
                        headers.append((key.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        response: Response | None = None
        after: Fault | None = None
        if not ok:
            response = self.service.error_response(request, self.service.unauthenticated())
        else:
            fault = self.faults.take(self.service.name, request.method, relative)
            if fault is not None:
                call.fault = fault.id
                if fault.latency_ms:
                    await asyncio.sleep(fault.latency_ms / 1000)
                if fault.after:
                    after = fault
                elif fault.status is not None:
                    response = self.service.error_response(request, self.service.fault_error(fault))
        if response is not None:
            await response(scope, replay, send_with_headers)
        elif after is not None:
            # The handler runs and its effect stands; the caller gets the fault instead of its answer.
            async def discard(message: Message) -> None:
                if message["type"] == "http.response.start":
                    call.effect_status = int(message["status"])

            await self._dispatch(request, relative, scope, replay, discard, lambda: call.effect_status)
            error = self.service.error_response(request, self.service.fault_error(after))
            await error(scope, replay, send_with_headers)
        else:
            await self._dispatch(request, relative, scope, replay, send_with_headers, lambda: call.status)
        log.info("%s %s %s -> %s", self.service.name, request.method, relative, call.status)

    async def _dispatch(
        self,
        request: Request,
        relative: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        started: Callable[[], int | None],
    ) -> None:
        """Route the call to its handler; an error it raises is answered in the service's own format."""
        try:
            await self.router(scope, receive, send)
        except ServiceError as err:
            # Raised by a handler before it started its response: render it the service's way.
            await self.service.error_response(request, err)(scope, receive, send)
        except HTTPException as exc:
            # Starlette's own 405 (a known path with another method), in the service's error format.
            error = ServiceError(
                exc.status_code, str(exc.detail), code="MethodNotAllowed", headers=dict(exc.headers or {})
            )
            await self.service.error_response(request, error)(scope, receive, send)
        except Exception:
            log.exception("unhandled error in %s %s %s", self.service.name, request.method, relative)
            if started() is not None:
                raise
            error = ServiceError(
                500, "Internal error in the simulator (see its log).", code="InternalServerError"
            )
            await self.service.error_response(request, error)(scope, receive, send)

    async def _no_route(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        relative = scope["path"][len(scope.get("root_path", "")) :] or "/"
        error = ServiceError(
            404,
            f"The simulator has no {request.method} route for {relative} in {self.service.name}.",
            code="UnknownRoute",
        )
        await self.service.error_response(request, error)(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying_receive(body: bytes, receive: Receive) -> Receive:
    # The pipeline has consumed the body (to record it); hand it to the handler once, then defer to the
    # server's receive (which then reports the client's disconnect, as Starlette expects).
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def reject_unknown_keys(spec: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    """Seeds are strict: a mistyped key in a test fails loudly instead of being silently ignored."""
    unknown = set(spec) - set(allowed)
    if unknown:
        raise SeedError(f"{what}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def require_str(spec: Mapping[str, Any], key: str, what: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value:
        raise SeedError(f"{what}.{key} is required (a non-empty string)")
    return value


def optional_str(spec: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str | None:
    value = spec.get(key, default)
    if value is not None and not isinstance(value, str):
        raise SeedError(f"{what}.{key} must be a string or null")
    return value
