"""Durable history events and orchestrator actions, in the shapes of the SDK's JSON replay protocol.

History events are PascalCase dicts as the Durable extension sends them to out-of-process workers
(azure-functions-durable 1.7: ``HistoryEvent(**event)``). Actions come back from the orchestrator as
camelCase dicts, possibly nested in WhenAny/WhenAll compound actions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

HistoryEvent = dict[str, Any]
OrchestratorAction = dict[str, Any]


class EventType(IntEnum):
    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_CREATED = 7
    SUB_ORCHESTRATION_COMPLETED = 8
    SUB_ORCHESTRATION_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16


class ActionType(IntEnum):
    CALL_ACTIVITY = 0
    CALL_ACTIVITY_WITH_RETRY = 1
    CALL_SUB_ORCHESTRATOR = 2
    CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
    CONTINUE_AS_NEW = 4
    CREATE_TIMER = 5
    WAIT_FOR_EXTERNAL_EVENT = 6
    CALL_ENTITY = 7
    CALL_HTTP = 8
    SIGNAL_ENTITY = 9
    WHEN_ANY = 11
    WHEN_ALL = 12


# Actions that take the next sequence id when first scheduled (external events are matched by name).
SEQUENCED_ACTIONS = frozenset(
    {
        ActionType.CALL_ACTIVITY,
        ActionType.CALL_ACTIVITY_WITH_RETRY,
        ActionType.CALL_SUB_ORCHESTRATOR,
        ActionType.CALL_SUB_ORCHESTRATOR_WITH_RETRY,
        ActionType.CREATE_TIMER,
    }
)

# Event types that complete a sequenced task, and the field naming that task's id.
COMPLETION_KEY = {
    EventType.TASK_COMPLETED: "TaskScheduledId",
    EventType.TASK_FAILED: "TaskScheduledId",
    EventType.SUB_ORCHESTRATION_COMPLETED: "TaskScheduledId",
    EventType.SUB_ORCHESTRATION_FAILED: "TaskScheduledId",
    EventType.TIMER_FIRED: "TimerId",
}


# Only the step-by-step replay harness (local/devhost/replay.py) moves this: when a test fires a timer, the
# orchestration wakes at the timer's time, as it would in Azure, without the test waiting for it.
_clock_offset = timedelta(0)


def utcnow() -> datetime:
    return datetime.now(UTC) + _clock_offset


def advance_clock(to: datetime) -> None:
    """Make :func:`utcnow` at least ``to`` from now on (never backwards)."""
    global _clock_offset
    behind = to - utcnow()
    if behind > timedelta(0):
        _clock_offset += behind


def reset_clock() -> None:
    global _clock_offset
    _clock_offset = timedelta(0)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def event(event_type: EventType, event_id: int = -1, **fields: Any) -> HistoryEvent:
    body: HistoryEvent = {
        "EventType": int(event_type),
        "EventId": event_id,
        "IsPlayed": False,
        "Timestamp": format_time(utcnow()),
    }
    body.update({key: value for key, value in fields.items() if value is not None})
    return body


def orchestrator_started() -> HistoryEvent:
    return event(EventType.ORCHESTRATOR_STARTED)


def orchestrator_completed() -> HistoryEvent:
    return event(EventType.ORCHESTRATOR_COMPLETED)


def execution_started(
    name: str, instance_id: str, execution_id: str, input_json: str | None, parent_instance_id: str | None
) -> HistoryEvent:
    # azure-functions-durable 1.7 reads ExecutionStarted.Version; an empty string is what the
    # extension sends when no version was requested.
    parent = {"OrchestrationInstance": {"InstanceId": parent_instance_id}} if parent_instance_id else None
    return event(
        EventType.EXECUTION_STARTED,
        Name=name,
        Input=input_json,
        Version="",
        OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
        ParentInstance=parent,
    )


def task_scheduled(task_id: int, name: str, input_json: str | None) -> HistoryEvent:
    return event(EventType.TASK_SCHEDULED, task_id, Name=name, Input=input_json)


def task_completed(task_id: int, result_json: str | None) -> HistoryEvent:
    return event(EventType.TASK_COMPLETED, TaskScheduledId=task_id, Result=result_json)


def task_failed(task_id: int, reason: str, details: str) -> HistoryEvent:
    return event(EventType.TASK_FAILED, TaskScheduledId=task_id, Reason=reason, Details=details)


def timer_created(timer_id: int, fire_at: str) -> HistoryEvent:
    return event(EventType.TIMER_CREATED, timer_id, FireAt=fire_at)


def timer_fired(timer_id: int, fire_at: str) -> HistoryEvent:
    return event(EventType.TIMER_FIRED, TimerId=timer_id, FireAt=fire_at)


def event_raised(name: str, input_json: str | None) -> HistoryEvent:
    return event(EventType.EVENT_RAISED, Name=name, Input=input_json)


def sub_orchestration_created(
    task_id: int, name: str, instance_id: str, input_json: str | None
) -> HistoryEvent:
    return event(
        EventType.SUB_ORCHESTRATION_CREATED, task_id, Name=name, InstanceId=instance_id, Input=input_json
    )


def sub_orchestration_completed(task_id: int, result_json: str | None) -> HistoryEvent:
    return event(EventType.SUB_ORCHESTRATION_COMPLETED, TaskScheduledId=task_id, Result=result_json)


def sub_orchestration_failed(task_id: int, reason: str, details: str) -> HistoryEvent:
    return event(EventType.SUB_ORCHESTRATION_FAILED, TaskScheduledId=task_id, Reason=reason, Details=details)


def execution_completed(status: str, result_json: str | None) -> HistoryEvent:
    return event(EventType.EXECUTION_COMPLETED, OrchestrationStatus=status, Result=result_json)


def execution_terminated(reason: str) -> HistoryEvent:
    return event(EventType.EXECUTION_TERMINATED, Input=json.dumps(reason))


def flatten_actions(actions: list[Any]) -> Iterator[OrchestratorAction]:
    """Yield atomic actions in the order the SDK allocated their sequence ids.

    Schema V1 nests one list per yield; V2+ nests WhenAny/WhenAll compound actions. Both flatten
    depth-first in list order, which is the order the SDK's ``_add_to_open_tasks`` numbers them.
    """
    for item in actions:
        if isinstance(item, list):
            yield from flatten_actions(item)
        elif item.get("actionType") in (ActionType.WHEN_ANY, ActionType.WHEN_ALL):
            yield from flatten_actions(item.get("compoundActions", []))
        else:
            yield item
