"""The devhost's HTTP front: function routes under the route prefix, the Durable RPC API, admin pings.

- ``/{routePrefix}/...``: HTTP-triggered functions with their route templates, methods and auth levels
  (function keys from local settings, in the ``code`` query parameter or the ``x-functions-key``
  header, compared in constant time).
- ``/durabletask/...``: the RPC routes that the SDK's ``DurableOrchestrationClient`` calls through
  ``rpcBaseUrl`` (start, status, list, raise event, terminate, purge). Like the real host's local RPC
  endpoint they answer loopback callers only.
- ``/runtime/webhooks/durabletask/...``: the same operations behind the Durable system key, which is
  what the management URLs in the client binding point to (never expose them: they carry the key).
- ``/admin/...`` (master key): ``GET /admin/host/status``, and ``POST /admin/functions/{name}`` with
  ``{"input": "..."}``, which runs a timer function now and answers 202 at once, as the host does for
  non-HTTP functions (``GET /admin/host/ping`` is anonymous).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import azure.functions as func
from azure.durable_functions.models.utils.http_utils import _close_session as close_durable_client_session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from . import history as h
from . import logs
from .catalog import Catalog, HttpFunction, invoke
from .config import RPC_PREFIX, WEBHOOK_PREFIX, HostConfig
from .engine import (
    Engine,
    InstanceExistsError,
    InstanceGoneError,
    InstanceNotFoundError,
    OrchestratorNotFoundError,
)
from .schedule import TimerTriggers
from .store import Instance

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1", "localhost"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class HostApp:
    """ASGI application; the engine and timer triggers start and stop with the ASGI lifespan."""

    def __init__(self, config: HostConfig, catalog: Catalog, engine: Engine, timers: TimerTriggers) -> None:
        self.config = config
        self.catalog = catalog
        self.engine = engine
        self.timers = timers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._route(request)
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.engine.start()
                except Exception as exc:
                    logs.event("host.start_failed", logging.ERROR, exc_info=True)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                logs.event(
                    "host.started",
                    url=self.config.base_url,
                    hub=self.config.hub,
                    functions=len(self.catalog.all),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.timers.stop()
                await self.engine.stop()
                # The SDK's Durable client keeps one module-level aiohttp session and never closes it.
                await close_durable_client_session()
                logs.event("host.stopped")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, request: Request) -> Response:
        path = request.url.path
        try:
            if path in ("/admin/host/ping", "/admin/host/ping/"):
                return Response(status_code=200)
            if path.startswith("/admin/"):
                return await self._admin(request)
            if path.startswith(RPC_PREFIX):
                client = request.client.host if request.client else ""
                if client not in LOOPBACK:
                    return _error(403, "the Durable RPC endpoint answers loopback callers only")
                return await self._durable(request, path[len(RPC_PREFIX) :])
            if path.startswith(WEBHOOK_PREFIX):
                if not self._key_ok(request, self.config.keys.system_keys()):
                    return _error(401, "a valid Durable system key is required")
                return await self._durable(request, path[len(WEBHOOK_PREFIX) :])
            # Like the Functions host (ASP.NET Core routing), the prefix and literals match in any case.
            prefix = "/" + self.config.route_prefix if self.config.route_prefix else ""
            if path.lower() == prefix.lower() or path.lower().startswith(prefix.lower() + "/"):
                return await self._function(request, path[len(prefix) :] or "/")
            return _error(404, f"no route for {path}")
        except Exception:
            logs.event("http.unhandled", logging.ERROR, path=path, exc_info=True)
            return _error(500, "internal error in the devhost (see its log)")

    async def _admin(self, request: Request) -> Response:
        if not self._key_ok(request, self.config.keys.admin_keys()):
            return _error(401, "the master key is required for admin routes")
        path = request.url.path.rstrip("/")
        if path.startswith("/admin/functions/") and request.method == "POST":
            return await self._run_function(request, path[len("/admin/functions/") :])
        if path == "/admin/host/status":
            return JSONResponse(
                {
                    "state": "Running",
                    "hub": self.config.hub,
                    "functions": [
                        {"name": spec.name, "trigger": spec.trigger_type} for spec in self.catalog.all
                    ],
                    "timers": self.timers.describe(),
                }
            )
        return _error(404, f"no admin route {request.url.path}")

    async def _run_function(self, request: Request, name: str) -> Response:
        """Run a non-HTTP function now (Core Tools and the host: ``POST /admin/functions/{name}``)."""
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, 'the body must be JSON: {"input": "..."}')
        if not isinstance(body, dict):
            return _error(400, 'the body must be a JSON object: {"input": "..."}')
        spec = next((s for s in self.catalog.all if s.name.lower() == name.lower()), None)
        if spec is None:
            return _error(404, f"no function named {name!r}")
        if spec.name in self.timers.errors:
            return _error(400, f"function {spec.name!r} is in error: {self.timers.errors[spec.name]}")
        if spec.trigger_type != "timerTrigger":
            return _error(
                400, f"the devhost runs only timer functions on demand ({spec.name} is {spec.trigger_type})"
            )
        self.timers.run_now(spec.name)
        logs.event("function.run_requested", function=spec.name)
        return Response(status_code=202)

    # ----------------------------------------------------------------- functions

    def _key_ok(self, request: Request, accepted: list[str]) -> bool:
        supplied = request.headers.get("x-functions-key") or request.query_params.get("code") or ""
        # Compare against every accepted key so that the time taken does not reveal which one matched.
        results = [hmac.compare_digest(supplied.encode(), key.encode()) for key in accepted if key]
        return bool(supplied) and any(results)

    async def _function(self, request: Request, subpath: str) -> Response:
        matched: tuple[HttpFunction, dict[str, str]] | None = None
        wrong_method = False
        for candidate in self.catalog.http:
            params = candidate.route.match(subpath)
            if params is None:
                continue
            if candidate.methods is not None and request.method not in candidate.methods:
                wrong_method = True
                continue
            matched = (candidate, params)
            break
        if matched is None:
            # The Functions host answers 404 for a method a function does not accept, too.
            reason = "method not allowed for this route" if wrong_method else "no function matches this route"
            return _error(404, f"{request.method} {request.url.path}: {reason}")
        function, route_params = matched
        if function.auth_level != "anonymous":
            accepted = (
                self.config.keys.admin_keys()
                if function.auth_level == "admin"
                else self.config.keys.function_keys(function.spec.name)
            )
            if not self._key_ok(request, accepted):
                logs.event(
                    "http.unauthorized", logging.WARNING, function=function.spec.name, path=request.url.path
                )
                return _error(
                    401, "a valid function key is required (code query parameter or x-functions-key header)"
                )
        body = await request.body()
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=_forwarded(request),
            params=dict(request.query_params),
            route_params=route_params,
            body=body,
        )
        kwargs: dict[str, Any] = {function.spec.trigger["name"]: http_request}
        logs.event(
            "function.invoked", function=function.spec.name, method=request.method, path=request.url.path
        )
        try:
            result = await invoke(function.spec, kwargs, self.config)
        except Exception:
            logs.event("function.failed", logging.ERROR, function=function.spec.name, exc_info=True)
            return _error(500, f"function '{function.spec.name}' raised an exception (see the devhost log)")
        return _to_response(result)

    # ----------------------------------------------------------------- Durable RPC

    async def _durable(self, request: Request, rest: str) -> Response:
        parts = [p for p in rest.split("/") if p]
        method = request.method
        if parts and parts[0] == "orchestrators" and method == "POST" and len(parts) in (2, 3):
            return await self._start(request, parts[1], parts[2] if len(parts) == 3 else None)
        if parts and parts[0] == "instances":
            if len(parts) == 1 and method == "GET":
                return await self._list(request)
            if len(parts) == 1 and method == "DELETE":
                return await self._purge_matching(request)
            if len(parts) == 2 and method == "GET":
                return await self._status(request, parts[1])
            if len(parts) == 2 and method == "DELETE":
                return await self._purge(parts[1])
            if len(parts) == 4 and parts[2] == "raiseEvent" and method == "POST":
                return await self._raise(request, parts[1], parts[3])
            if len(parts) == 3 and parts[2] == "terminate" and method == "POST":
                return await self._terminate(request, parts[1])
            if len(parts) >= 3 and parts[2] in ("rewind", "suspend", "resume", "restart"):
                return _error(501, f"the devhost does not implement '{parts[2]}'")
        return _error(404, f"unknown Durable operation {method} /{rest}")

    async def _start(self, request: Request, name: str, instance_id: str | None) -> Response:
        try:
            input_json = _payload(await request.body())
        except ValueError:
            return JSONResponse(
                {"ExceptionMessage": "Only application/json request content is supported"}, status_code=400
            )
        try:
            new_id = await self.engine.start_new(name, instance_id, input_json)
        except OrchestratorNotFoundError as exc:
            return JSONResponse({"ExceptionMessage": str(exc)}, status_code=400)
        except InstanceExistsError as exc:
            return JSONResponse({"ExceptionMessage": str(exc)}, status_code=409)
        logs.event("orchestration.scheduled", instanceId=new_id, function=name)
        return JSONResponse({"id": new_id}, status_code=202)

    async def _status(self, request: Request, instance_id: str) -> Response:
        instance = await self.engine.get(instance_id)
        if instance is None:
            # A JSON string body: the SDK turns it into a status whose runtime_status is None.
            return JSONResponse(f"No instance with ID '{instance_id}' found.", status_code=404)
        query = request.query_params
        body = instance.status_json(
            show_input=_flag(query.get("showInput"), True),
            show_history=_flag(query.get("showHistory"), False),
        )
        code = {"Completed": 200, "Failed": 500, "Terminated": 400}.get(instance.status, 202)
        return JSONResponse(body, status_code=code)

    async def _list(self, request: Request) -> Response:
        wanted = _instance_filter(request)
        found = [i.status_json(show_input=True) for i in await self.engine.list_instances() if wanted(i)]
        return JSONResponse(found, status_code=200)

    async def _purge_matching(self, request: Request) -> Response:
        if not request.query_params.get("createdTimeFrom"):
            return _error(400, "createdTimeFrom is required to purge instances by filter")
        wanted = _instance_filter(request)
        deleted = 0
        for instance in await self.engine.list_instances():
            if instance.is_terminal and wanted(instance) and await self.engine.purge(instance.instance_id):
                deleted += 1
        return JSONResponse({"instancesDeleted": deleted}, status_code=200 if deleted else 404)

    async def _purge(self, instance_id: str) -> Response:
        try:
            deleted = await self.engine.purge(instance_id)
        except InstanceExistsError as exc:
            return _error(409, str(exc))
        if not deleted:
            return JSONResponse({"instancesDeleted": 0}, status_code=404)
        return JSONResponse({"instancesDeleted": 1}, status_code=200)

    async def _raise(self, request: Request, instance_id: str, event_name: str) -> Response:
        try:
            payload = _payload(await request.body())
        except ValueError:
            return _error(400, "Only application/json request content is supported")
        return await _operation(lambda: self.engine.raise_event(instance_id, event_name, payload))

    async def _terminate(self, request: Request, instance_id: str) -> Response:
        reason = request.query_params.get("reason") or ""
        return await _operation(lambda: self.engine.terminate(instance_id, reason))


async def _operation(call: Callable[[], Awaitable[None]]) -> Response:
    try:
        await call()
    except InstanceNotFoundError as exc:
        return _error(404, str(exc))
    except InstanceGoneError as exc:
        return _error(410, str(exc))
    return Response(status_code=202)


def _payload(body: bytes) -> str | None:
    """The JSON text of a start input or event payload.

    The SDK's client JSON-encodes the value (df_dumps / json.dumps) and posts that text as a JSON
    string, so the body is a JSON string holding JSON: unwrap it. Any other JSON body is taken as is.
    Raises ValueError for a body that is not JSON.
    """
    if not body.strip():
        return None
    decoded = json.loads(body)
    if isinstance(decoded, str):
        try:
            json.loads(decoded)
            return decoded
        except ValueError:
            pass
    return json.dumps(decoded)


def _instance_filter(request: Request) -> Callable[[Instance], bool]:
    """The list/purge query filters: runtimeStatus, instanceIdPrefix, createdTimeFrom, createdTimeTo."""
    query = request.query_params
    statuses = {s for s in (query.get("runtimeStatus") or "").split(",") if s}
    prefix = query.get("instanceIdPrefix") or ""
    created_from = _time(query.get("createdTimeFrom"))
    created_to = _time(query.get("createdTimeTo"))

    def wanted(instance: Instance) -> bool:
        created = h.parse_time(instance.created_time)
        return (
            (not statuses or instance.status in statuses)
            and instance.instance_id.startswith(prefix)
            and (created_from is None or created >= created_from)
            and (created_to is None or created <= created_to)
        )

    return wanted


def _forwarded(request: Request) -> dict[str, str]:
    """The request headers, with the caller's address in X-Forwarded-For as Azure's front end adds it."""
    headers = dict(request.headers)
    if request.client is not None and "x-forwarded-for" not in headers:
        headers["x-forwarded-for"] = request.client.host
    return headers


def _flag(value: str | None, default: bool) -> bool:
    return default if value is None else value.lower() == "true"


def _time(value: str | None) -> datetime | None:
    return h.parse_time(value) if value else None


def _to_response(result: Any) -> Response:
    """Convert a function's return value as the Python worker's HTTP output converter does."""
    if isinstance(result, func.HttpResponse):
        headers = {k: v for k, v in result.headers.items() if k.lower() != "content-length"}
        media_type = result.mimetype
        if result.charset and media_type and "charset" not in media_type:
            media_type = f"{media_type}; charset={result.charset}"
        return Response(
            result.get_body(), status_code=result.status_code, headers=headers, media_type=media_type
        )
    if result is None:
        return Response(status_code=204)
    if isinstance(result, bytes | str):
        return Response(result, status_code=200, media_type="text/plain")
    return JSONResponse(result, status_code=200)
