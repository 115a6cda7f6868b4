"""The grant ledger: every privileged assignment the app made, until its removal is confirmed.

It drives the sweep (design.md "Revocation"): anything here past its expiry and not confirmed removed is
removed again, and a managed-role assignment that Graph shows but this ledger does not know is reported.
One row per grant (partition ``grants``, RowKey = grant id); updates use ETags so that a sweep and a
request's own revocation racing on the same grant cannot overwrite each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.tables import ensure_table

GRANTS_TABLE = "Grants"
_PARTITION = "grants"

GrantPath = Literal["pim", "break_glass"]
# active -> removal_scheduled (PIM's 5-minute minimum) -> removed; removal_failed is retried by the sweep.
RemovalState = Literal["active", "removal_scheduled", "removed", "removal_failed"]
_STATES: tuple[RemovalState, ...] = ("active", "removal_scheduled", "removed", "removal_failed")


class GrantConflictError(RuntimeError):
    """The grant changed since it was read (another writer won); re-read and decide again."""


class UnknownGrantError(LookupError):
    pass


@dataclass(frozen=True)
class Grant:
    grant_id: str  # "<request id>:<path>": one request grants at most once per path
    request_id: str
    responder_id: str
    responder_upn: str
    role_name: str
    role_template_id: str
    path: GrantPath
    assignment_request_id: str  # PIM schedule request id, or the unified role assignment id
    granted_at: datetime
    expires_at: datetime
    removal_state: RemovalState = "active"
    removal_detail: str = ""
    updated_at: datetime | None = None

    @staticmethod
    def id_for(request_id: str, path: GrantPath) -> str:
        return f"{request_id}:{path}"

    @property
    def is_removed(self) -> bool:
        return self.removal_state == "removed"

    def is_past_expiry(self, now: datetime) -> bool:
        return now >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        for name in ("granted_at", "expires_at", "updated_at"):
            body[name] = body[name].isoformat() if body[name] else None
        return body


class GrantLedger:
    def __init__(self, service: TableServiceClient) -> None:
        self._table: TableClient = ensure_table(service, GRANTS_TABLE)

    def record(self, grant: Grant) -> Grant:
        """Record a new grant; recording the same grant again (a retried activity) changes nothing."""
        try:
            self._table.create_entity(_entity(grant))
        except ResourceExistsError:
            stored = self.get(grant.grant_id)
            if _identity(stored) != _identity(grant):
                raise GrantConflictError(
                    f"grant {grant.grant_id} is already recorded with other values"
                ) from None
            return stored
        return grant

    def get(self, grant_id: str) -> Grant:
        try:
            return _grant(self._table.get_entity(_PARTITION, grant_id))
        except ResourceNotFoundError:
            raise UnknownGrantError(f"no grant {grant_id}") from None

    def outstanding(self) -> list[Grant]:
        """Every grant whose removal is not confirmed (what the sweep reconciles)."""
        query = "PartitionKey eq @p and RemovalState ne 'removed'"
        return [_grant(e) for e in self._table.query_entities(query, parameters={"p": _PARTITION})]

    def removed_since(self, since: datetime) -> list[Grant]:
        """Grants confirmed removed at or after ``since`` (the sweep verifies their requests' chains)."""
        # UpdatedAt is an ISO text in UTC, so the service compares it as text; a second's slack covers
        # isoformat() leaving out zero microseconds, and the exact bound is applied here.
        bound = (since - timedelta(seconds=1)).astimezone(UTC).isoformat()
        query = "PartitionKey eq @p and RemovalState eq 'removed' and UpdatedAt ge @bound"
        entities = self._table.query_entities(query, parameters={"p": _PARTITION, "bound": bound})
        grants = (_grant(entity) for entity in entities)
        return [grant for grant in grants if grant.updated_at is not None and grant.updated_at >= since]

    def set_removal_state(self, grant_id: str, state: RemovalState, at: datetime, detail: str = "") -> Grant:
        """Move a grant to ``state`` if nobody changed it since it was read (ETag)."""
        if state not in _STATES:
            raise ValueError(f"unknown removal state {state!r}")
        try:
            entity = self._table.get_entity(_PARTITION, grant_id)
        except ResourceNotFoundError:
            raise UnknownGrantError(f"no grant {grant_id}") from None
        updated = replace(_grant(entity), removal_state=state, removal_detail=detail, updated_at=at)
        try:
            self._table.update_entity(_entity(updated), mode=UpdateMode.REPLACE, etag=entity.metadata["etag"],
                                      match_condition=MatchConditions.IfNotModified)  # fmt: skip
        except ResourceModifiedError:
            raise GrantConflictError(f"grant {grant_id} changed while it was being updated") from None
        return updated


def _identity(grant: Grant) -> tuple[Any, ...]:
    return (grant.request_id, grant.responder_id, grant.role_template_id, grant.path,
            grant.assignment_request_id, grant.granted_at, grant.expires_at)  # fmt: skip


def _entity(grant: Grant) -> dict[str, Any]:
    return {
        "PartitionKey": _PARTITION,
        "RowKey": grant.grant_id,
        "RequestId": grant.request_id,
        "ResponderId": grant.responder_id,
        "ResponderUpn": grant.responder_upn,
        "RoleName": grant.role_name,
        "RoleTemplateId": grant.role_template_id,
        "Path": grant.path,
        "AssignmentRequestId": grant.assignment_request_id,
        "GrantedAt": grant.granted_at.astimezone(UTC).isoformat(),
        "ExpiresAt": grant.expires_at.astimezone(UTC).isoformat(),
        "RemovalState": grant.removal_state,
        "RemovalDetail": grant.removal_detail,
        "UpdatedAt": grant.updated_at.astimezone(UTC).isoformat() if grant.updated_at else "",
    }


def _grant(entity: Mapping[str, Any]) -> Grant:
    updated = str(entity.get("UpdatedAt") or "")
    return Grant(
        grant_id=str(entity["RowKey"]),
        request_id=str(entity["RequestId"]),
        responder_id=str(entity["ResponderId"]),
        responder_upn=str(entity["ResponderUpn"]),
        role_name=str(entity["RoleName"]),
        role_template_id=str(entity["RoleTemplateId"]),
        path=entity["Path"],
        assignment_request_id=str(entity["AssignmentRequestId"]),
        granted_at=datetime.fromisoformat(str(entity["GrantedAt"])),
        expires_at=datetime.fromisoformat(str(entity["ExpiresAt"])),
        removal_state=entity["RemovalState"],
        removal_detail=str(entity.get("RemovalDetail", "")),
        updated_at=datetime.fromisoformat(updated) if updated else None,
    )
