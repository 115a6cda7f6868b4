"""The app's functions, discovered from its own registration (``app.get_functions()``).

Each function's bindings are read from ``get_function_json()`` exactly as the Functions host reads
them, and the user function is ``get_user_function()``: for an orchestrator that is the SDK's replay
handle, for a function with a Durable client input the SDK's wrapper that builds the client itself.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func

from .config import HostConfig, durable_client_binding
from .routing import RouteTemplate

SUPPORTED_TRIGGERS = {"httpTrigger", "timerTrigger", "orchestrationTrigger", "activityTrigger"}


class AppLoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    trigger: dict[str, Any]
    bindings: tuple[dict[str, Any], ...]
    user_function: Callable[..., Any]

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    def binding(self, binding_type: str) -> dict[str, Any] | None:
        return next((b for b in self.bindings if b.get("type") == binding_type), None)

    @property
    def wants_context(self) -> bool:
        return "context" in inspect.signature(self.user_function).parameters

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


@dataclass(frozen=True)
class HttpFunction:
    spec: FunctionSpec
    route: RouteTemplate
    methods: frozenset[str] | None  # None: every method, as the host does when none are listed
    auth_level: str  # anonymous, function, admin


@dataclass
class Catalog:
    http: list[HttpFunction] = field(default_factory=list)
    timers: list[FunctionSpec] = field(default_factory=list)
    orchestrators: dict[str, FunctionSpec] = field(default_factory=dict)
    activities: dict[str, FunctionSpec] = field(default_factory=dict)
    all: list[FunctionSpec] = field(default_factory=list)


def load_app(target: str, root: Path) -> Any:
    """Import ``module:attribute`` (default ``function_app:app``) with the app root on sys.path."""
    module_name, _, attribute = target.partition(":")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppLoadError(f"cannot import {module_name!r} from {root}: {type(exc).__name__}: {exc}") from exc
    app = getattr(module, attribute or "app", None)
    if app is None or not hasattr(app, "get_functions"):
        raise AppLoadError(f"{target!r} is not an azure.functions FunctionApp/DFApp")
    return app


def build_catalog(app: Any) -> Catalog:
    catalog = Catalog()
    for function in app.get_functions():
        name = function.get_function_name()
        bindings = tuple(json.loads(function.get_function_json())["bindings"])
        triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
        if len(triggers) != 1:
            raise AppLoadError(f"function {name!r} must have exactly one trigger, has {len(triggers)}")
        trigger = triggers[0]
        if trigger["type"] not in SUPPORTED_TRIGGERS:
            raise AppLoadError(
                f"function {name!r}: the devhost does not run {trigger['type']} functions "
                f"(supported: {', '.join(sorted(SUPPORTED_TRIGGERS))})"
            )
        for binding in bindings:
            if binding is trigger or binding.get("type") in ("http", "durableClient"):
                continue
            raise AppLoadError(f"function {name!r}: unsupported binding {binding.get('type')!r}")
        spec = FunctionSpec(name, trigger, bindings, function.get_user_function())
        catalog.all.append(spec)
        if trigger["type"] == "httpTrigger":
            methods = trigger.get("methods")
            catalog.http.append(
                HttpFunction(
                    spec=spec,
                    route=RouteTemplate(trigger.get("route") or name),
                    methods=frozenset(m.upper() for m in methods) if methods else None,
                    auth_level=str(trigger.get("authLevel", "FUNCTION")).lower(),
                )
            )
        elif trigger["type"] == "timerTrigger":
            catalog.timers.append(spec)
        elif trigger["type"] == "orchestrationTrigger":
            catalog.orchestrators[trigger.get("orchestration") or name] = spec
        else:
            catalog.activities[trigger.get("activity") or name] = spec
    # The host matches literal segments before parameters, whatever the registration order.
    catalog.http.sort(key=lambda f: f.route.precedence)
    return catalog


class InvocationContext(func.Context):
    """The ``context`` parameter the Python worker passes to functions that declare one."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._tls = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> threading.local:  # type: ignore[override]
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


async def invoke(spec: FunctionSpec, kwargs: dict[str, Any], config: HostConfig) -> Any:
    """Call a user function as the Python worker does: coroutines on the loop, the rest in a thread.

    ``kwargs`` holds the trigger's argument; the Durable client binding (any trigger type may declare
    one) and the ``context`` parameter are added here.
    """
    client = spec.binding("durableClient")
    if client is not None:
        kwargs[client["name"]] = json.dumps(durable_client_binding(config))
    if spec.wants_context:
        kwargs["context"] = InvocationContext(spec.name, str(config.root))
    if spec.is_async:
        return await spec.user_function(**kwargs)
    return await asyncio.to_thread(spec.user_function, **kwargs)
