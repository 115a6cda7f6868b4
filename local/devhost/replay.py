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

from . import history as h
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


def _engine(app: Any, activities: Mapping[str, ScriptedActivity], calls: list[tuple[str, Any]],
            engine_type: type[Engine] = Engine) -> tuple[Engine, MemoryStore]:  # fmt: skip
    # azure-functions refuses to index an app twice (get_functions), so each app is indexed once.
    if id(app) not in _catalogs:
        _catalogs[id(app)] = build_catalog(app)
    indexed = _catalogs[id(app)]
    catalog = dataclasses.replace(indexed, activities=dict(indexed.activities))
    for name in catalog.activities:
        script = activities.get(name)
        catalog.activities[name] = _scripted(name, script or _unscripted(name), calls)
    keys = HostKeys(master="replay", host={})
    config = HostConfig(
        Path.cwd(), "127.0.0.1", 0, "Replay", "api", keys, storage_connection="", app_target=""
    )
    store = MemoryStore()
    return engine_type(store, catalog, config), store


async def replay(app: Any, orchestrator: str, input_: Any, activities: Mapping[str, ScriptedActivity],
                 instance_id: str = "replay-1", within_seconds: float = 30.0) -> Replay:  # fmt: skip
    """Run ``orchestrator`` to its end with ``activities`` scripted; unscripted activities fail loudly."""
    calls: list[tuple[str, Any]] = []
    engine, store = _engine(app, activities, calls)
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


class _ManualClockEngine(Engine):
    """The devhost engine with timers that fire only when told to (StepReplay.fire)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fire_times: dict[tuple[str, int], str] = {}

    def _arm_timer(self, instance_id: str, timer_id: int, fire_at: str) -> None:
        # A placeholder task, so that the engine's own cancellation (an event won the race) applies to it.
        self.fire_times[(instance_id, timer_id)] = fire_at
        self._timer_tasks[(instance_id, timer_id)] = asyncio.ensure_future(asyncio.Event().wait())

    def pending_timers(self) -> list[tuple[str, int, str]]:
        return sorted(
            (
                (i, t, self.fire_times[(i, t)])
                for (i, t), task in self._timer_tasks.items()
                if not task.done()
            ),
            key=lambda timer: (timer[2], timer[1]),
        )

    async def fire(self, instance_id: str, timer_id: int) -> None:
        task = self._timer_tasks.pop((instance_id, timer_id))
        task.cancel()
        fire_at = self.fire_times[(instance_id, timer_id)]
        h.advance_clock(h.parse_time(fire_at))  # the orchestration wakes at the timer's time
        await self._apply(instance_id, h.timer_fired(timer_id, fire_at))

    def busy(self) -> bool:
        return any(not task.done() for task in self._tasks)


class StepReplay:
    """An orchestration driven step by step, for races (design.md §6.2): scripted activities run as they
    are scheduled, but time stands still: a timer fires only when the test fires it, and an event arrives
    only when the test raises it, in the order the test chooses.

        run = await StepReplay.start(app, "approval", {...}, {"post_approval_card": ...})
        await run.raise_event("vote_r1_on_call_lead", {...})
        await run.fire_next()          # the earliest pending timer (e.g. the due time)
        assert run.output["outcome"] == "expired"
    """

    def __init__(self, engine: _ManualClockEngine, store: MemoryStore, instance_id: str,
                 calls: list[tuple[str, Any]]) -> None:  # fmt: skip
        self._engine = engine
        self._store = store
        self.instance_id = instance_id
        self.calls = calls

    @classmethod
    async def start(cls, app: Any, orchestrator: str, input_: Any, activities: Mapping[str, ScriptedActivity],
                    instance_id: str = "replay-1") -> StepReplay:  # fmt: skip
        calls: list[tuple[str, Any]] = []
        engine, store = _engine(app, activities, calls, _ManualClockEngine)
        assert isinstance(engine, _ManualClockEngine)
        await engine.start_new(orchestrator, instance_id, json.dumps(input_))
        run = cls(engine, store, instance_id, calls)
        await run.settle()
        return run

    async def settle(self, within_seconds: float = 10.0) -> None:
        """Wait until nothing runs: every scheduled activity has completed and been applied."""
        deadline = asyncio.get_running_loop().time() + within_seconds
        while self._engine.busy():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"still busy after {within_seconds} s; calls so far: {self.calls}")
            await asyncio.sleep(0.002)

    def timers(self) -> list[tuple[str, int, str]]:
        """Pending timers: (instance id, timer id, fire time), earliest first."""
        return self._engine.pending_timers()

    async def fire_next(self, settle: bool = True) -> str:
        """Fire the earliest pending timer; returns its fire time."""
        pending = self.timers()
        if not pending:
            raise AssertionError(f"no pending timer; calls so far: {self.calls}")
        instance_id, timer_id, fire_at = pending[0]
        await self._engine.fire(instance_id, timer_id)
        if settle:
            await self.settle()
        return fire_at

    async def raise_event(self, name: str, payload: Any, instance_id: str | None = None,
                          settle: bool = True) -> None:  # fmt: skip
        await self._engine.raise_event(instance_id or self.instance_id, name, json.dumps(payload))
        if settle:
            await self.settle()

    async def run_to_end(self, max_timers: int = 200) -> Replay:
        """Fire pending timers, earliest first, until the orchestration ends; its result."""
        for _ in range(max_timers):
            instance = await self.instance()
            if instance.is_terminal:
                return Replay(instance, self.calls)
            if not self.timers():
                raise AssertionError(f"{self.instance_id} waits for an event; calls so far: {self.calls}")
            await self.fire_next()
        raise AssertionError(f"{self.instance_id} did not end after {max_timers} timers")

    async def instance(self, instance_id: str | None = None) -> Instance:
        found = await self._store.load(instance_id or self.instance_id)
        assert found is not None
        return found

    async def output(self) -> Any:
        instance = await self.instance()
        return json.loads(instance.output_json) if instance.output_json else None

    def inputs(self, activity: str) -> list[Any]:
        return [payload for name, payload in self.calls if name == activity]

    async def stop(self) -> None:
        await self._engine.stop()
        h.reset_clock()
