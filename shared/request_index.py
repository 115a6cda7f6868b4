"""Which requests a ticket has, and which deliveries were already handled (design.md "Orchestration ids
and duplicates").

- ``RequestIndex`` maps (system, ticket) to its requests: a resolution revokes all of them, and a new
  request for the same role gets the next generation (Durable silently reruns a completed instance id,
  so the id of a re-request must differ).
- ``Deliveries`` holds one create-only row per delivery id: a webhook delivered twice (Jira repeats
  deliveries; ServiceNow retries) finds the first delivery's outcome and starts nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient

from shared.tables import ensure_table

INDEX_TABLE = "RequestIndex"
DELIVERIES_TABLE = "Deliveries"


@dataclass(frozen=True)
class IndexedRequest:
    request_id: str
    role_template_id: str
    generation: int
    created_at: datetime
    # What the request asked (shared.intake.request_digest): an update that asks the same thing after
    # the request ended starts nothing, so the app's own ticket notes cannot loop into new requests.
    digest: str = ""


class RequestIndex:
    def __init__(self, service: TableServiceClient) -> None:
        self._table: TableClient = ensure_table(service, INDEX_TABLE)

    def requests_for(self, ticket_key: str) -> list[IndexedRequest]:
        rows = self._table.query_entities("PartitionKey eq @k", parameters={"k": ticket_key})
        found = [
            IndexedRequest(
                str(r["RowKey"]),
                str(r["RoleTemplateId"]),
                int(r["Generation"]),
                datetime.fromisoformat(str(r["CreatedAt"])),
                str(r.get("Digest", "")),
            )
            for r in rows
        ]
        return sorted(found, key=lambda r: (r.role_template_id, r.generation))

    def add(self, ticket_key: str, entry: IndexedRequest) -> bool:
        """Index a new request; False when that request id is already indexed (a concurrent delivery)."""
        try:
            self._table.create_entity(
                {
                    "PartitionKey": ticket_key,
                    "RowKey": entry.request_id,
                    "RoleTemplateId": entry.role_template_id,
                    "Generation": entry.generation,
                    "CreatedAt": entry.created_at.astimezone(UTC).isoformat(),
                    "Digest": entry.digest,
                }
            )
        except ResourceExistsError:
            return False
        return True


class Deliveries:
    def __init__(self, service: TableServiceClient) -> None:
        self._table: TableClient = ensure_table(service, DELIVERIES_TABLE)

    @staticmethod
    def _key(delivery_id: str) -> str:
        # Delivery ids are ITSM text (``<sys_id>:<sys_updated_on>``): hash them into a valid RowKey.
        return hashlib.sha256(delivery_id.encode("utf-8")).hexdigest()

    def claim(
        self, ticket_key: str, delivery_id: str, outcome: str, request_id: str, at: datetime
    ) -> str | None:
        """Record the first handling of a delivery; returns None, or the earlier outcome's request id
        (``""`` when the earlier delivery started nothing) when it was already handled."""
        row = {
            "PartitionKey": ticket_key,
            "RowKey": self._key(delivery_id),
            "DeliveryId": delivery_id[:1000],
            "Outcome": outcome,
            "RequestId": request_id,
            "At": at.astimezone(UTC).isoformat(),
        }
        try:
            self._table.create_entity(row)
        except ResourceExistsError:
            earlier = self._table.get_entity(ticket_key, self._key(delivery_id))
            return str(earlier.get("RequestId", ""))
        return None
