"""The orchestration engine: runs orchestrators through the SDK's replay handle and schedules their work.

How it mirrors the Durable Task Framework, so that the SDK's replay sees what it would see in Azure:
- Each *episode* appends ``OrchestratorStarted``, exactly one new event (ExecutionStarted, a task
  or timer completion, or a raised event), then calls the orchestrator handle with the whole history
  and schedules the actions that are new since the previous episode.
- Sequence ids: the SDK numbers activities, timers and sub-orchestrations in the order they are
  first yielded; a ``*_with_retry`` call takes one more id for the retry timer when an attempt fails
  and one for the next attempt when that timer fires. Delivering one event per episode makes that
  order deterministic, so the engine allocates the same ids by walking the flattened actions.
- A completed orchestration stays Running while a timer it did not cancel is pending, as in Azure.
- Everything is persisted in Table Storage before side effects start (activities, timers, children),
  and every side effect is re-derived from the stored history after a restart: activities run at
  least once, as in Azure.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import traceback
import uuid
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.functions import meta
from azure.functions._durable_functions import OrchestrationContext
from azure.functions.durable_functions import ActivityTriggerConverter

from . import history as h
from . import logs
from .catalog import Catalog, FunctionSpec, invoke
from .config import HostConfig
from .store import Instance, PayloadTooLargeError, Store

# The replay schema the engine asks for: 1 = one cumulative action list with WhenAny/WhenAll
# compound actions (facts.md: "1 and above").
UPPER_SCHEMA_VERSION = 1
_OUT_OF_PROC_MARKER = "$OutOfProcData$:"
# Storage errors (Azurite restarting) are retried for internal events for this long.
_STORAGE_RETRY_FOR = timedelta(seconds=120)


class OrchestratorNotFoundError(LookupError):
    pass


class InstanceNotFoundError(LookupError):
    pass


class InstanceGoneError(RuntimeError):
    """The instance has completed, failed or been terminated."""


class InstanceExistsError(RuntimeError):
    pass


@dataclass
class _Effects:
    """Side effects of one episode, started only after the episode is committed."""

    activities: list[tuple[int, str, str | None]] = field(default_factory=list)
    timers: list[tuple[int, str]] = field(default_factory=list)
    cancelled_timers: list[int] = field(default_factory=list)
    children: list[tuple[int, str, str, str | None]] = field(default_factory=list)
    parent_event: h.HistoryEvent | None = None


class Engine:
    def __init__(
        self, store: Store, catalog: Catalog, config: HostConfig, activity_concurrency: int = 16
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._config = config
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._cache: dict[str, Instance] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer_tasks: dict[tuple[str, int], asyncio.Task[Any]] = {}
        self._activity_slots = asyncio.Semaphore(activity_concurrency)
        self._stopping = False

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Resume every in-flight instance from storage (after a crash or a clean restart)."""
        resumed = 0
        for summary in await self._store.list():
            if summary.is_terminal:
                continue
            instance = await self._store.load(summary.instance_id)
            if instance is None:
                continue
            self._cache[instance.instance_id] = instance
            resumed += 1
            if instance.status == "Pending":
                self._spawn(self._apply(instance.instance_id, None))
                continue
            await self._resume_pending_work(instance)
        logs.event("host.resumed", instances=resumed)

    async def stop(self, grace_seconds: float = 5.0) -> None:
        self._stopping = True
        for task in self._timer_tasks.values():
            task.cancel()
        running = [t for t in self._tasks if not t.done()]
        if running:
            # Activities still running are re-run after the next start (at-least-once, as in Azure).
            _done, pending = await asyncio.wait(running, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # ----------------------------------------------------------------- client operations

    async def start_new(self, name: str, instance_id: str | None, input_json: str | None) -> str:
        if name not in self._catalog.orchestrators:
            raise OrchestratorNotFoundError(
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function. "
                f"Orchestrators: {', '.join(sorted(self._catalog.orchestrators)) or 'none'}"
            )
        instance_id = instance_id or uuid.uuid4().hex
        async with self._locks[instance_id]:
            existing = await self._load(instance_id)
            if existing is not None:
                if not existing.is_terminal:
                    raise InstanceExistsError(
                        f"An orchestration instance with the ID '{instance_id}' is already {existing.status}."
                    )
                # Durable silently starts a completed instance id again, with a fresh history.
                await self._store.delete(instance_id)
                self._cache.pop(instance_id, None)
            await self._create(instance_id, name, input_json, parent=None)
        self._spawn(self._apply(instance_id, None))
        return instance_id

    async def raise_event(self, instance_id: str, name: str, input_json: str | None) -> None:
        instance = await self._load(instance_id)
        if instance is None:
            raise InstanceNotFoundError(f"No instance with ID '{instance_id}' found.")
        if instance.is_terminal:
            raise InstanceGoneError(f"Instance '{instance_id}' is {instance.status}.")
        logs.event("event.raised", instanceId=instance_id, eventName=name)
        # Applied before answering: the caller's 202 means the event is in the stored history.
        await self._apply(instance_id, h.event_raised(name, input_json), retry=False)

    async def terminate(self, instance_id: str, reason: str) -> None:
        async with self._locks[instance_id]:
            instance = await self._load(instance_id)
            if instance is None:
                raise InstanceNotFoundError(f"No instance with ID '{instance_id}' found.")
            if instance.is_terminal:
                raise InstanceGoneError(f"Instance '{instance_id}' is {instance.status}.")
            instance = copy.deepcopy(instance)  # readers see the cached state only once committed
            start = len(instance.history)
            effects = _Effects()
            instance.history.append(h.execution_terminated(reason))
            self._finish(instance, "Terminated", json.dumps(reason), effects, failure=(reason, "terminated"))
            await self._commit(instance, start)
        self._cancel_all_timers(instance_id)
        logs.event("orchestration.terminated", instanceId=instance_id, reason=reason)
        self._dispatch(instance, effects)

    async def get(self, instance_id: str) -> Instance | None:
        return await self._load(instance_id)

    async def list_instances(self) -> list[Instance]:
        return await self._store.list()

    async def purge(self, instance_id: str) -> bool:
        async with self._locks[instance_id]:
            instance = await self._load(instance_id)
            if instance is None:
                return False
            if not instance.is_terminal:
                raise InstanceExistsError(
                    f"Instance '{instance_id}' is {instance.status}; terminate it first."
                )
            await self._store.delete(instance_id)
            self._cache.pop(instance_id, None)
        return True

    # ----------------------------------------------------------------- the episode

    async def _apply(self, instance_id: str, new_event: h.HistoryEvent | None, retry: bool = True) -> None:
        """Run one episode for ``new_event`` (None: the first episode of a Pending instance)."""
        deadline = asyncio.get_running_loop().time() + _STORAGE_RETRY_FOR.total_seconds()
        while True:
            try:
                await self._apply_once(instance_id, new_event)
                return
            except Exception as exc:
                # Only a storage outage (Azurite restarting) is worth retrying; anything else would
                # fail the same way again.
                if not _is_transient(exc) or not retry or self._stopping:
                    raise
                if asyncio.get_running_loop().time() > deadline:
                    raise
                logs.event("episode.retry", logging.WARNING, instanceId=instance_id, exc_info=True)
                await asyncio.sleep(1.0)

    async def _apply_once(self, instance_id: str, new_event: h.HistoryEvent | None) -> None:
        dispatch: list[tuple[Instance, _Effects]] = []
        async with self._locks[instance_id]:
            instance = await self._load(instance_id)
            if instance is None or instance.is_terminal:
                if new_event is not None:
                    logs.event(
                        "event.dropped",
                        instanceId=instance_id,
                        eventType=new_event["EventType"],
                        reason="instance missing or ended",
                    )
                return
            if instance.status == "Pending":
                instance, effects = await self._episode_and_commit(instance, None)
                dispatch.append((instance, effects))
                if instance.is_terminal:
                    new_event = None
            if new_event is not None:
                if not self._accepts(instance, new_event):
                    return
                dispatch.append(await self._episode_and_commit(instance, new_event))
        for inst, effects in dispatch:
            self._dispatch(inst, effects)

    async def _episode_and_commit(
        self, committed: Instance, new_event: h.HistoryEvent | None
    ) -> tuple[Instance, _Effects]:
        # The episode works on a copy: status queries (which do not take the lock) must never see a
        # state that is not yet in storage and could be lost by a crash.
        instance = copy.deepcopy(committed)
        start = len(instance.history)
        effects = self._episode(instance, new_event)
        try:
            await self._commit(instance, start)
        except PayloadTooLargeError as exc:
            # Retrying cannot help: fail the instance, from its committed state, with the reason.
            instance = copy.deepcopy(committed)
            start = len(instance.history)
            effects = _Effects()
            message = f"The orchestration's state cannot be stored: {exc}"
            instance.history.append(h.execution_completed("Failed", json.dumps(message)))
            self._finish(instance, "Failed", json.dumps(message), effects, failure=(message, ""))
            await self._commit(instance, start)
            logs.event("orchestration.failed", logging.ERROR, instanceId=instance.instance_id,
                       function=instance.name, error=message)  # fmt: skip
        return instance, effects

    def _episode(self, instance: Instance, new_event: h.HistoryEvent | None) -> _Effects:
        engine = instance.engine
        engine.setdefault("nextSeq", 0)
        engine.setdefault("actionCount", 0)
        engine.setdefault("timers", {})
        engine.setdefault("retries", {})
        effects = _Effects()
        for past in instance.history:
            past["IsPlayed"] = True
        instance.history.append(h.orchestrator_started())
        if new_event is None:
            instance.status = "Running"
            instance.history.append(
                h.execution_started(
                    instance.name,
                    instance.instance_id,
                    instance.execution_id,
                    instance.input_json,
                    instance.parent_instance_id,
                )
            )
            logs.event("orchestration.started", instanceId=instance.instance_id, function=instance.name)
        else:
            instance.history.append(new_event)
            self._retry_bookkeeping(instance, new_event, effects)

        state, error = self._run_orchestrator(instance)
        if error is not None:
            instance.history.append(h.orchestrator_completed())
            message, details = error
            instance.history.append(h.execution_completed("Failed", json.dumps(message)))
            self._finish(instance, "Failed", json.dumps(message), effects, failure=(message, details))
            logs.event(
                "orchestration.failed",
                logging.ERROR,
                instanceId=instance.instance_id,
                function=instance.name,
                error=message,
            )
            return effects
        assert state is not None
        if state.get("customStatus") is not None:
            instance.custom_status_json = json.dumps(state["customStatus"])
        actions = list(h.flatten_actions(state.get("actions", [])))
        for index in range(engine["actionCount"], len(actions)):
            continued = self._schedule(instance, index, actions[index], effects)
            if continued:
                return effects
        engine["actionCount"] = len(actions)
        self._apply_cancellations(instance, actions, effects)
        instance.history.append(h.orchestrator_completed())

        if state.get("isDone"):
            output_json = json.dumps(state.get("output"))
            waiting = [tid for tid, t in engine["timers"].items() if not t["fired"] and not t["cancelled"]]
            if waiting:
                # Durable does not complete an orchestration while one of its timers is pending.
                engine["completion"] = output_json
                logs.event("orchestration.awaiting_timers", instanceId=instance.instance_id, timers=waiting)
            else:
                instance.history.append(h.execution_completed("Completed", output_json))
                self._finish(instance, "Completed", output_json, effects)
                logs.event("orchestration.completed", instanceId=instance.instance_id, function=instance.name)
        return effects

    def _run_orchestrator(self, instance: Instance) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
        spec = self._catalog.orchestrators.get(instance.name)
        if spec is None:
            return None, (f"The orchestrator function '{instance.name}' does not exist in this app.", "")
        context = {
            "history": instance.history,
            "instanceId": instance.instance_id,
            "isReplaying": False,
            "parentInstanceId": instance.parent_instance_id,
            "input": instance.input_json,
            "upperSchemaVersion": UPPER_SCHEMA_VERSION,
        }
        try:
            raw = spec.user_function(OrchestrationContext(json.dumps(context)))
            return json.loads(raw), None
        except Exception as exc:  # the handle raises for any orchestrator failure
            text = str(exc)
            message = text.split(_OUT_OF_PROC_MARKER, 1)[0].strip() if _OUT_OF_PROC_MARKER in text else text
            cause = exc.__cause__ or exc
            details = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
            return None, (message or type(cause).__name__, details)

    def _schedule(
        self, instance: Instance, index: int, action: h.OrchestratorAction, effects: _Effects
    ) -> bool:
        """Schedule one new action; returns True when the orchestration continued as new."""
        engine = instance.engine
        kind = action.get("actionType")
        if kind == h.ActionType.WAIT_FOR_EXTERNAL_EVENT:
            return False
        if kind == h.ActionType.CONTINUE_AS_NEW:
            self._continue_as_new(instance, action, effects)
            return True
        if kind not in h.SEQUENCED_ACTIONS:
            raise_unsupported = (
                f"the devhost does not support orchestrator action type {kind} "
                "(entities and call_http are not used by this app)"
            )
            instance.history.append(h.orchestrator_completed())
            instance.history.append(h.execution_completed("Failed", json.dumps(raise_unsupported)))
            self._finish(
                instance, "Failed", json.dumps(raise_unsupported), effects, failure=(raise_unsupported, "")
            )
            return True
        task_id = engine["nextSeq"]
        engine["nextSeq"] += 1
        if kind == h.ActionType.CREATE_TIMER:
            fire_at = action["fireAt"]
            engine["timers"][str(task_id)] = {
                "fireAt": fire_at,
                "fired": False,
                "cancelled": bool(action.get("isCanceled")),
                "action": index,
                "retryOf": None,
            }
            instance.history.append(h.timer_created(task_id, fire_at))
            if not action.get("isCanceled"):
                effects.timers.append((task_id, fire_at))
            return False
        retry = action.get("retryOptions")
        if retry:
            engine["retries"][str(task_id)] = {
                "kind": kind,
                "name": action["functionName"],
                "input": action.get("input"),
                "instanceId": action.get("instanceId"),
                "attempt": 1,
                "max": int(retry["maxNumberOfAttempts"]),
                "intervalMs": int(retry["firstRetryIntervalInMilliseconds"]),
            }
        if kind in (h.ActionType.CALL_ACTIVITY, h.ActionType.CALL_ACTIVITY_WITH_RETRY):
            self._schedule_activity(instance, task_id, action["functionName"], action.get("input"), effects)
        else:
            self._schedule_child(
                instance,
                task_id,
                action["functionName"],
                action.get("input"),
                action.get("instanceId"),
                effects,
            )
        return False

    def _schedule_activity(
        self, instance: Instance, task_id: int, name: str, input_json: str | None, effects: _Effects
    ) -> None:
        instance.history.append(h.task_scheduled(task_id, name, input_json))
        effects.activities.append((task_id, name, input_json))

    def _schedule_child(
        self,
        instance: Instance,
        task_id: int,
        name: str,
        input_json: str | None,
        child_id: str | None,
        effects: _Effects,
    ) -> None:
        child_id = child_id or f"{instance.instance_id}:{task_id:04d}"
        instance.history.append(h.sub_orchestration_created(task_id, name, child_id, input_json))
        effects.children.append((task_id, name, child_id, input_json))

    def _retry_bookkeeping(self, instance: Instance, new_event: h.HistoryEvent, effects: _Effects) -> None:
        """Allocate the ids the SDK allocates for a ``*_with_retry`` task when an attempt fails."""
        engine = instance.engine
        kind = new_event["EventType"]
        if kind in (h.EventType.TASK_FAILED, h.EventType.SUB_ORCHESTRATION_FAILED):
            failed = str(new_event["TaskScheduledId"])
            retry = engine["retries"].get(failed)
            if retry is None:
                return
            timer_id = engine["nextSeq"]
            engine["nextSeq"] += 1
            fire_at = h.format_time(h.utcnow() + timedelta(milliseconds=retry["intervalMs"]))
            engine["timers"][str(timer_id)] = {
                "fireAt": fire_at,
                "fired": False,
                "cancelled": False,
                "action": None,
                "retryOf": failed,
            }
            instance.history.append(h.timer_created(timer_id, fire_at))
            effects.timers.append((timer_id, fire_at))
        elif kind == h.EventType.TIMER_FIRED:
            timer = engine["timers"][str(new_event["TimerId"])]
            timer["fired"] = True
            if timer["retryOf"] is None:
                return
            retry = engine["retries"].pop(timer["retryOf"])
            if retry["attempt"] >= retry["max"]:
                return  # the SDK now fails the task with the last attempt's error
            task_id = engine["nextSeq"]
            engine["nextSeq"] += 1
            retry["attempt"] += 1
            engine["retries"][str(task_id)] = retry
            if retry["kind"] == h.ActionType.CALL_ACTIVITY_WITH_RETRY:
                self._schedule_activity(instance, task_id, retry["name"], retry["input"], effects)
            else:
                self._schedule_child(
                    instance, task_id, retry["name"], retry["input"], retry["instanceId"], effects
                )

    def _apply_cancellations(
        self, instance: Instance, actions: list[h.OrchestratorAction], effects: _Effects
    ) -> None:
        by_action = {
            t["action"]: tid for tid, t in instance.engine["timers"].items() if t["action"] is not None
        }
        for index, action in enumerate(actions):
            if action.get("actionType") == h.ActionType.CREATE_TIMER and action.get("isCanceled"):
                timer = instance.engine["timers"].get(by_action.get(index, ""))
                if timer is not None and not timer["cancelled"]:
                    timer["cancelled"] = True
                    effects.cancelled_timers.append(int(by_action[index]))

    def _continue_as_new(self, instance: Instance, action: h.OrchestratorAction, effects: _Effects) -> None:
        # The Python SDK drops buffered events on continue_as_new (facts.md); so does the devhost.
        instance.input_json = action.get("input")
        instance.history = []
        instance.engine = {}
        instance.execution_id = uuid.uuid4().hex
        instance.status = "Pending"
        # Work scheduled earlier in this episode belongs to the old execution, whose ids the new one
        # reuses: starting it could complete the wrong task.
        effects.activities.clear()
        effects.timers.clear()
        effects.children.clear()
        logs.event("orchestration.continued_as_new", instanceId=instance.instance_id)

    def _finish(
        self,
        instance: Instance,
        status: str,
        output_json: str,
        effects: _Effects,
        failure: tuple[str, str] | None = None,
    ) -> None:
        instance.status = status
        instance.output_json = output_json
        instance.engine.pop("completion", None)
        if instance.parent_instance_id is not None and instance.parent_task_id is not None:
            if status == "Completed":
                effects.parent_event = h.sub_orchestration_completed(instance.parent_task_id, output_json)
            else:
                reason, details = failure or (status, "")
                effects.parent_event = h.sub_orchestration_failed(
                    instance.parent_task_id,
                    f"Sub-orchestration '{instance.name}' ({instance.instance_id}) "
                    f"{status.lower()}: {reason}",
                    details,
                )

    def _accepts(self, instance: Instance, new_event: h.HistoryEvent) -> bool:
        """Drop duplicate or stale completions (activities and events are delivered at least once)."""
        key = h.COMPLETION_KEY.get(h.EventType(new_event["EventType"]))
        if key is None:
            return True
        task_id = new_event[key]
        scheduled = completed = False
        for past in instance.history:
            kind = past["EventType"]
            if (
                kind
                in (
                    h.EventType.TASK_SCHEDULED,
                    h.EventType.TIMER_CREATED,
                    h.EventType.SUB_ORCHESTRATION_CREATED,
                )
                and past["EventId"] == task_id
            ):
                scheduled = True
            past_key = h.COMPLETION_KEY.get(h.EventType(kind)) if kind in h.COMPLETION_KEY else None
            if past_key is not None and past.get(past_key) == task_id:
                completed = True
        timer = instance.engine.get("timers", {}).get(str(task_id))
        if key == "TimerId" and timer is not None and timer["cancelled"]:
            return False
        if not scheduled or completed:
            logs.event("event.duplicate", instanceId=instance.instance_id, taskId=task_id)
            return False
        return True

    # ----------------------------------------------------------------- persistence and side effects

    async def _load(self, instance_id: str) -> Instance | None:
        if instance_id in self._cache:
            return self._cache[instance_id]
        instance = await self._store.load(instance_id)
        if instance is not None and not instance.is_terminal:  # ended instances are read, not worked on
            self._cache[instance_id] = instance
        return instance

    async def _commit(self, instance: Instance, history_from: int) -> None:
        instance.last_updated_time = h.format_time(h.utcnow())
        if not instance.history:  # continued as new: the old rows are rewritten from 0
            history_from = 0
        await self._store.save(instance, history_from)
        self._cache[instance.instance_id] = instance

    async def _create(
        self, instance_id: str, name: str, input_json: str | None, parent: tuple[str, int] | None
    ) -> Instance:
        now = h.format_time(h.utcnow())
        instance = Instance(
            instance_id=instance_id,
            name=name,
            status="Pending",
            execution_id=uuid.uuid4().hex,
            created_time=now,
            last_updated_time=now,
            input_json=input_json,
            parent_instance_id=parent[0] if parent else None,
            parent_task_id=parent[1] if parent else None,
        )
        await self._store.save(instance, 0)
        self._cache[instance_id] = instance
        return instance

    def _dispatch(self, instance: Instance, effects: _Effects) -> None:
        instance_id = instance.instance_id
        for timer_id in effects.cancelled_timers:
            task = self._timer_tasks.pop((instance_id, timer_id), None)
            if task is not None:
                task.cancel()
        for task_id, name, input_json in effects.activities:
            self._spawn(self._run_activity(instance_id, task_id, name, input_json))
        for timer_id, fire_at in effects.timers:
            self._arm_timer(instance_id, timer_id, fire_at)
        for task_id, name, child_id, input_json in effects.children:
            self._spawn(self._start_child(instance_id, task_id, name, child_id, input_json))
        if effects.parent_event is not None and instance.parent_instance_id is not None:
            self._spawn(self._apply(instance.parent_instance_id, effects.parent_event))
        if instance.status == "Pending":  # continued as new: the old execution's timers are void
            self._cancel_all_timers(instance_id)
            self._spawn(self._apply(instance_id, None))
        if instance.is_terminal:
            self._cancel_all_timers(instance_id)
            self._cache.pop(instance_id, None)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        async def guarded() -> None:
            try:
                await coroutine
            except asyncio.CancelledError:
                raise
            except Exception:
                logs.event("host.task_failed", logging.ERROR, exc_info=True)

        task = asyncio.ensure_future(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _arm_timer(self, instance_id: str, timer_id: int, fire_at: str) -> None:
        async def fire() -> None:
            delay = (h.parse_time(fire_at) - h.utcnow()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            self._timer_tasks.pop((instance_id, timer_id), None)
            logs.event("timer.fired", instanceId=instance_id, timerId=timer_id)
            await self._apply(instance_id, h.timer_fired(timer_id, fire_at))

        previous = self._timer_tasks.pop((instance_id, timer_id), None)
        if previous is not None:
            previous.cancel()
        task = asyncio.ensure_future(fire())
        self._timer_tasks[(instance_id, timer_id)] = task
        task.add_done_callback(_log_crash)

    def _cancel_all_timers(self, instance_id: str) -> None:
        for key in [k for k in self._timer_tasks if k[0] == instance_id]:
            self._timer_tasks.pop(key).cancel()

    async def _run_activity(self, instance_id: str, task_id: int, name: str, input_json: str | None) -> None:
        spec = self._catalog.activities.get(name)
        async with self._activity_slots:
            if self._stopping:
                return
            logs.event("activity.started", instanceId=instance_id, function=name, taskId=task_id)
            if spec is None:
                outcome = h.task_failed(
                    task_id, f"The activity function '{name}' does not exist in this app.", ""
                )
            else:
                outcome = await self._call_activity(spec, instance_id, task_id, input_json)
        failed = outcome["EventType"] == h.EventType.TASK_FAILED
        logs.event(
            "activity.failed" if failed else "activity.completed",
            logging.WARNING if failed else logging.INFO,
            instanceId=instance_id,
            function=name,
            taskId=task_id,
            reason=outcome.get("Reason"),
        )
        await self._apply(instance_id, outcome)

    async def _call_activity(
        self, spec: FunctionSpec, instance_id: str, task_id: int, input_json: str | None
    ) -> h.HistoryEvent:
        try:
            value = ActivityTriggerConverter.decode(
                meta.Datum(type="json", value=input_json or "null"), trigger_metadata=None
            )
            result = await invoke(spec, {spec.trigger["name"]: value}, self._config)
            encoded = ActivityTriggerConverter.encode(result, expected_type=None)
            return h.task_completed(task_id, encoded.value)
        except Exception as exc:
            reason = f"Activity function '{spec.name}' failed: {type(exc).__name__}: {exc}"
            return h.task_failed(task_id, reason, "".join(traceback.format_exception(exc)))

    async def _start_child(
        self, parent_id: str, task_id: int, name: str, child_id: str, input_json: str | None
    ) -> None:
        async with self._locks[child_id]:
            existing = await self._load(child_id)
            if existing is not None and not existing.is_terminal:
                return  # already started (recovery after a restart)
            if existing is not None:
                await self._store.delete(child_id)
                self._cache.pop(child_id, None)
            if name not in self._catalog.orchestrators:
                failure = h.sub_orchestration_failed(
                    task_id, f"The orchestrator function '{name}' does not exist.", ""
                )
                self._spawn(self._apply(parent_id, failure))
                return
            await self._create(child_id, name, input_json, parent=(parent_id, task_id))
        await self._apply(child_id, None)

    async def _resume_pending_work(self, instance: Instance) -> None:
        completed: set[int] = set()
        scheduled: dict[int, h.HistoryEvent] = {}
        for event in instance.history:
            kind = event["EventType"]
            if kind in (h.EventType.TASK_SCHEDULED, h.EventType.SUB_ORCHESTRATION_CREATED):
                scheduled[event["EventId"]] = event
            key = h.COMPLETION_KEY.get(h.EventType(kind)) if kind in h.COMPLETION_KEY else None
            if key is not None:
                completed.add(event[key])
        for task_id, event in scheduled.items():
            if task_id in completed:
                continue
            if event["EventType"] == h.EventType.TASK_SCHEDULED:
                logs.event(
                    "activity.resumed",
                    instanceId=instance.instance_id,
                    function=event["Name"],
                    taskId=task_id,
                )
                self._spawn(
                    self._run_activity(instance.instance_id, task_id, event["Name"], event.get("Input"))
                )
            else:
                await self._resume_child(instance, task_id, event)
        for timer_id, timer in instance.engine.get("timers", {}).items():
            if not timer["fired"] and not timer["cancelled"]:
                self._arm_timer(instance.instance_id, int(timer_id), timer["fireAt"])

    async def _resume_child(self, parent: Instance, task_id: int, created: h.HistoryEvent) -> None:
        child = await self._store.load(created["InstanceId"])
        if child is None:
            self._spawn(
                self._start_child(
                    parent.instance_id, task_id, created["Name"], created["InstanceId"], created.get("Input")
                )
            )
        elif child.is_terminal:
            # The child ended but the parent had not recorded it when the host stopped.
            effects = _Effects()
            failure = (child.output_json or "", "") if child.status != "Completed" else None
            self._finish(child, child.status, child.output_json or "null", effects, failure=failure)
            if effects.parent_event is not None:
                self._spawn(self._apply(parent.instance_id, effects.parent_event))


def _is_transient(exc: BaseException) -> bool:
    """A storage or network fault that a later attempt may not meet (e.g. Azurite restarting)."""
    if isinstance(exc, HttpResponseError):
        return exc.status_code is None or exc.status_code == 429 or exc.status_code >= 500
    return isinstance(
        exc, ServiceRequestError | ServiceResponseError | aiohttp.ClientError | OSError | TimeoutError
    )


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logs.event("timer.crashed", logging.ERROR, error=repr(task.exception()))


__all__ = [
    "Engine",
    "InstanceExistsError",
    "InstanceGoneError",
    "InstanceNotFoundError",
    "OrchestratorNotFoundError",
]
