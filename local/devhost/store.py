"""Persistence of orchestration instances and their history in Table Storage (Azurite locally).

Two tables per task hub: ``{hub}Instances`` (one row per instance: status, input, output, custom
status and the engine's bookkeeping) and ``{hub}History`` (one row per history event, partition =
instance id, RowKey = zero-padded position). The instance row is the commit point: history rows are
written first and only the first ``HistoryLength`` rows count, so a process killed half-way through
an episode leaves at most orphan rows that the next episode overwrites.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient as TableServiceClient_sync
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from .history import HistoryEvent

TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Terminated"})

# A Table Storage string property holds 64 KiB of UTF-16 (32K characters): longer JSON is split
# over numbered properties. An entity is capped at 1 MiB, so payloads stay well under that (Azure's
# Durable provider offloads large payloads to blobs; the devhost refuses them with a clear error).
_CHUNK = 30_000
_MAX_CHUNKS = 15


class PayloadTooLargeError(ValueError):
    pass


def put_text(entity: dict[str, Any], name: str, text: str | None) -> None:
    if text is None:
        return
    chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
    if len(chunks) > _MAX_CHUNKS:
        raise PayloadTooLargeError(
            f"{name} is {len(text)} characters; the devhost stores at most {_CHUNK * _MAX_CHUNKS}. "
            "Keep orchestration payloads small (design.md: small JSON across activity boundaries)."
        )
    entity[name] = chunks[0]
    for index, chunk in enumerate(chunks[1:], start=1):
        entity[f"{name}_{index}"] = chunk


def get_text(entity: dict[str, Any], name: str) -> str | None:
    if name not in entity:
        return None
    parts = [entity[name]]
    index = 1
    while f"{name}_{index}" in entity:
        parts.append(entity[f"{name}_{index}"])
        index += 1
    return "".join(parts)


@dataclass
class Instance:
    """One orchestration instance as the engine sees it."""

    instance_id: str
    name: str
    status: str  # Pending, Running, Completed, Failed, Terminated
    execution_id: str
    created_time: str
    last_updated_time: str
    input_json: str | None = None
    output_json: str | None = None
    custom_status_json: str | None = None
    parent_instance_id: str | None = None
    parent_task_id: int | None = None
    history: list[HistoryEvent] = field(default_factory=list)
    # Engine bookkeeping (see engine.py): next sequence id, number of flattened actions already
    # scheduled, timers by id, retry chains by the id of their current attempt.
    engine: dict[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def status_json(self, show_input: bool = False, show_history: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "instanceId": self.instance_id,
            "runtimeStatus": self.status,
            "customStatus": json.loads(self.custom_status_json) if self.custom_status_json else None,
            "output": json.loads(self.output_json) if self.output_json is not None else None,
            "createdTime": self.created_time,
            "lastUpdatedTime": self.last_updated_time,
        }
        if show_input:
            body["input"] = json.loads(self.input_json) if self.input_json is not None else None
        if show_history:
            body["historyEvents"] = self.history
        return body


class Store(Protocol):
    """What the engine needs from persistence (Table Storage here; memory for in-process replay tests)."""

    async def save(self, instance: Instance, history_from: int) -> None: ...

    async def load(self, instance_id: str) -> Instance | None: ...

    async def list(self) -> list[Instance]: ...

    async def delete(self, instance_id: str) -> None: ...


class MemoryStore:
    """Instances kept in this process only: for tests that replay an orchestration in-process."""

    def __init__(self) -> None:
        self._rows: dict[str, Instance] = {}

    async def save(self, instance: Instance, history_from: int) -> None:
        self._rows[instance.instance_id] = copy.deepcopy(instance)

    async def load(self, instance_id: str) -> Instance | None:
        stored = self._rows.get(instance_id)
        return copy.deepcopy(stored) if stored is not None else None

    async def list(self) -> list[Instance]:
        return [copy.deepcopy(i) for i in self._rows.values()]

    async def delete(self, instance_id: str) -> None:
        self._rows.pop(instance_id, None)


class InstanceStore:
    def __init__(self, connection_string: str, hub: str) -> None:
        self._service = TableServiceClient.from_connection_string(connection_string)
        self.instances_table = f"{hub}Instances"
        self.history_table = f"{hub}History"
        self._instances: TableClient = self._service.get_table_client(self.instances_table)
        self._history: TableClient = self._service.get_table_client(self.history_table)

    async def open(self) -> None:
        for table in (self.instances_table, self.history_table):
            with contextlib.suppress(ResourceExistsError):
                await self._service.create_table(table)

    async def close(self) -> None:
        await self._instances.close()
        await self._history.close()
        await self._service.close()

    async def save(self, instance: Instance, history_from: int) -> None:
        """Write history rows from ``history_from`` on, then the instance row (the commit point)."""
        rows = []
        for position in range(history_from, len(instance.history)):
            event = instance.history[position]
            row: dict[str, Any] = {
                "PartitionKey": instance.instance_id,
                "RowKey": f"{position:08d}",
                "EventType": int(event["EventType"]),
                "EventId": int(event.get("EventId", -1)),
                "Name": event.get("Name") or "",
                "EventTimestamp": event["Timestamp"],
            }
            put_text(row, "Event", json.dumps(event, separators=(",", ":")))
            rows.append(row)
        await asyncio.gather(*(self._history.upsert_entity(row, mode=UpdateMode.REPLACE) for row in rows))
        entity: dict[str, Any] = {
            "PartitionKey": instance.instance_id,
            "RowKey": "state",
            "Name": instance.name,
            "RuntimeStatus": instance.status,
            "ExecutionId": instance.execution_id,
            "CreatedTime": instance.created_time,
            "LastUpdatedTime": instance.last_updated_time,
            "HistoryLength": len(instance.history),
            "ParentInstanceId": instance.parent_instance_id or "",
            "ParentTaskId": -1 if instance.parent_task_id is None else instance.parent_task_id,
        }
        put_text(entity, "Input", instance.input_json)
        put_text(entity, "Output", instance.output_json)
        put_text(entity, "CustomStatus", instance.custom_status_json)
        put_text(entity, "Engine", json.dumps(instance.engine, separators=(",", ":")))
        await self._instances.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def load(self, instance_id: str) -> Instance | None:
        try:
            entity = await self._instances.get_entity(instance_id, "state")
        except ResourceNotFoundError:
            return None
        instance = self._from_entity(entity)
        length = int(entity.get("HistoryLength", 0))
        if length:
            rows = [
                row
                async for row in self._history.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": instance_id}
                )
            ]
            rows.sort(key=lambda row: row["RowKey"])
            instance.history = [json.loads(get_text(row, "Event") or "{}") for row in rows[:length]]
        return instance

    async def list(self) -> list[Instance]:
        """All instances without their history (for queries and for recovery after a restart)."""
        return [
            self._from_entity(entity) async for entity in self._instances.query_entities("RowKey eq 'state'")
        ]

    async def delete(self, instance_id: str) -> None:
        async for row in self._history.query_entities("PartitionKey eq @pk", parameters={"pk": instance_id}):
            await self._history.delete_entity(row["PartitionKey"], row["RowKey"])
        await self._instances.delete_entity(instance_id, "state")

    @staticmethod
    def _from_entity(entity: dict[str, Any]) -> Instance:
        parent_task = int(entity.get("ParentTaskId", -1))
        return Instance(
            instance_id=entity["PartitionKey"],
            name=entity["Name"],
            status=entity["RuntimeStatus"],
            execution_id=entity.get("ExecutionId", ""),
            created_time=entity["CreatedTime"],
            last_updated_time=entity["LastUpdatedTime"],
            input_json=get_text(entity, "Input"),
            output_json=get_text(entity, "Output"),
            custom_status_json=get_text(entity, "CustomStatus"),
            parent_instance_id=entity.get("ParentInstanceId") or None,
            parent_task_id=None if parent_task < 0 else parent_task,
            engine=json.loads(get_text(entity, "Engine") or "{}"),
        )


def read_committed_history(connection_string: str, hub: str, instance_id: str) -> list[HistoryEvent]:
    """The committed history of an instance, read synchronously (for the demo and the tests).

    Only the first ``HistoryLength`` rows count (rows past it are left-overs of an uncommitted
    episode); events longer than one property are reassembled.
    """
    with TableServiceClient_sync.from_connection_string(connection_string) as service:
        try:
            state = service.get_table_client(f"{hub}Instances").get_entity(instance_id, "state")
        except ResourceNotFoundError:
            return []
        rows = sorted(
            service.get_table_client(f"{hub}History").query_entities(
                "PartitionKey eq @pk", parameters={"pk": instance_id}
            ),
            key=lambda row: row["RowKey"],
        )
    return [json.loads(get_text(row, "Event") or "{}") for row in rows[: int(state.get("HistoryLength", 0))]]
