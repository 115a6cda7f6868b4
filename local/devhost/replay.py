"""In-process replay of one orchestration: the devhost engine and the SDK's real replay handle, with an
in-memory store and scripted activities (design.md §6.2: orchestrator tests replay through the real
executor, deterministic, no processes, no network).

    result = await replay(function_app.app, "access_request", {...}, {"validate_role": lambda p: {...}})

Each scripted activity is called with the activity's input and returns its result (or raises, which
the orchestrator sees as a failed task, retried by ``call_activity_with_retry`` as in Azure). Every call
is recorded in order, so tests can assert what the orchestrator asked for, and how often.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import Catalog, FunctionSpec, build_catalog
from .config import HostConfig, HostKeys
from .engine import Engine
from .store import Instance, MemoryStore

ScriptedActivity = Callable[[Any], Any]
_catalogs: dict[int, Catalog] = {}


@dataclass
class Replay:
    instance: Instance
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def inputs(self, activity: str) -> list[Any]:
        return [payload for name, payload in self.calls if name == activity]

    @property
    def output(self) -> Any:
        return json.loads(self.instance.output_json) if self.instance.output_json else None


def _scripted(name: str, script: ScriptedActivity, calls: list[tuple[str, Any]]) -> FunctionSpec:
    async def activity(payload: Any) -> Any:
        calls.append((name, payload))
        result = script(payload)
        return await result if inspect.isawaitable(result) else result

    return FunctionSpec(name, {"type": "activityTrigger", "name": "payload"}, (), activity)


async def replay(app: Any, orchestrator: str, input_: Any, activities: Mapping[str, ScriptedActivity],
                 instance_id: str = "replay-1", within_seconds: float = 30.0) -> Replay:  # fmt: skip
    """Run ``orchestrator`` to its end with ``activities`` scripted; unscripted activities fail loudly."""
    # azure-functions refuses to index an app twice (get_functions), so each app is indexed once.
    if id(app) not in _catalogs:
        _catalogs[id(app)] = build_catalog(app)
    indexed = _catalogs[id(app)]
    catalog = dataclasses.replace(indexed, activities=dict(indexed.activities))
    calls: list[tuple[str, Any]] = []
    for name in catalog.activities:
        script = activities.get(name)
        catalog.activities[name] = _scripted(name, script or _unscripted(name), calls)
    keys = HostKeys(master="replay", host={})
    config = HostConfig(
        Path.cwd(), "127.0.0.1", 0, "Replay", "api", keys, storage_connection="", app_target=""
    )
    store = MemoryStore()
    engine = Engine(store, catalog, config)
    await engine.start_new(orchestrator, instance_id, json.dumps(input_))
    deadline = asyncio.get_running_loop().time() + within_seconds
    while True:
        instance = await store.load(instance_id)
        if instance is not None and instance.is_terminal:
            await engine.stop()
            return Replay(instance, calls)
        if asyncio.get_running_loop().time() > deadline:
            await engine.stop()
            raise TimeoutError(f"{orchestrator} did not end within {within_seconds} s; calls so far: {calls}")
        await asyncio.sleep(0.01)


def _unscripted(name: str) -> ScriptedActivity:
    def fail(payload: Any) -> Any:
        raise AssertionError(f"activity {name!r} was called but the test scripted no result for it")

    return fail
