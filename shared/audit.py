"""The audit ledger: hash-chained, create-only rows in Table Storage (design.md section 4).

- One chain per request (partition = request id) with sequence numbers allocated by the orchestrator,
  and one security chain per day (``security-YYYY-MM-DD``) for events that belong to no request
  (bad signatures, forged approvals), written from HTTP functions.
- Rows are create-only: RowKey is the zero-padded sequence, so a retried activity that writes the same
  row again meets a conflict and finds the identical row ("already written"), never a second row.
  That is why the entry's time comes from the caller (the orchestrator's replay-safe clock).
- ``hash = sha256(prev_hash + canonical_json(row))``; the row holds its chain id and sequence number,
  so a row moved to another position or chain no longer verifies.
- Each chain has a head row, kept in a table of its own: the count of rows and the last hash. It is
  advanced with optimistic concurrency (ETag); a writer that finds the next row already present
  completes the head for the writer that stopped before doing so. Verification recomputes the chain,
  checks it against the head, and names the first broken row, so an edited, reordered or deleted row
  (the last one included) is detected.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.tables import ensure_table
from shared.version import APP_VERSION

# The kind of row that records a request's state change (detail: {"state": ...}); the request's state
# is the one its latest such row names.
STATE_KIND = "request.state"
# The states in which a request's access has ended (it may still record a post-facto review after them).
ACCESS_ENDED_STATES = frozenset(
    {"revoked", "removal_failed", "cancelled", "denied", "expired", "rejected", "failed"}
)
# A chain that did not verify, recorded on the security chain (shared.telemetry's alert signal).
VERIFICATION_FAILED_KIND = "audit.verification_failed"
ROWS_TABLE = "AuditRows"
HEADS_TABLE = "AuditHeads"
GENESIS_HASH = "0" * 64
SECURITY_CHAIN_PREFIX = "security-"
# A Table Storage string property holds 32K characters; an audit detail is evidence, not a payload.
MAX_DETAIL_CHARS = 30_000
_HEAD_KEY = "head"
_MAX_RACE_ATTEMPTS = 50


class AuditError(RuntimeError):
    """The ledger cannot record a row (e.g. a different row already holds this sequence number)."""


@dataclass(frozen=True)
class GraphCall:
    """One Microsoft Graph call as evidence: what ran and the ids that let Microsoft trace it."""

    method: str
    path: str
    status: int
    request_id: str = ""
    client_request_id: str = ""


@dataclass(frozen=True)
class AuditEntry:
    """What a step records; the ledger adds the chain position, versions and hashes."""

    kind: str  # the step, e.g. "intake.accepted", "validation.responder", "signature.rejected"
    outcome: str  # e.g. "passed", "failed", "rejected", "recorded"
    time: datetime  # replay-safe: the orchestrator's current_utc_datetime, or the HTTP function's clock
    actor_id: str = ""  # Entra object id of the person (or "system")
    actor_upn: str = ""
    role: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    graph: GraphCall | None = None
    workflow_version: str = ""  # the orchestrator and its version, e.g. "access_request/1"


@dataclass(frozen=True)
class AuditRow:
    chain: str
    seq: int
    fields: Mapping[str, Any]  # every hashed column, PrevHash included
    hash: str

    @property
    def prev_hash(self) -> str:
        return str(self.fields["PrevHash"])

    @property
    def kind(self) -> str:
        return str(self.fields["Kind"])

    @property
    def time(self) -> str:
        return str(self.fields["Time"])

    def to_json(self) -> dict[str, Any]:
        body = {_snake(name): value for name, value in self.fields.items()}
        body["detail"] = json.loads(str(self.fields["Detail"]))
        body["hash"] = self.hash
        return body


# Told of each row this ledger writes (not of one it finds written): the row, the chain's first time, and
# labels that are not part of the row. shared.telemetry's observer turns it into a telemetry event.
RowObserver = Callable[[AuditRow, datetime | None, Mapping[str, Any]], None]


@dataclass(frozen=True)
class ChainVerification:
    chain: str
    ok: bool
    count: int  # rows read
    head_count: int | None
    first_broken_seq: int | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "ok": self.ok,
            "rows": self.count,
            "headCount": self.head_count,
            "firstBrokenRow": self.first_broken_seq,
            "reason": self.reason,
        }


# The hashed columns, in one place: writing, reading back and verifying all use this list.
_COLUMNS: tuple[tuple[str, type], ...] = (
    ("Chain", str),
    ("Seq", int),
    ("Time", str),
    ("Kind", str),
    ("Outcome", str),
    ("ActorId", str),
    ("ActorUpn", str),
    ("Role", str),
    ("Detail", str),
    ("GraphMethod", str),
    ("GraphPath", str),
    ("GraphStatus", int),
    ("GraphRequestId", str),
    ("GraphClientRequestId", str),
    ("AppVersion", str),
    ("WorkflowVersion", str),
    ("PolicyVersion", str),
    ("PolicyFileHash", str),
    ("PrevHash", str),
)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """The one definition of a row's hash."""
    return hashlib.sha256((prev_hash + canonical_json(dict(fields))).encode("utf-8")).hexdigest()


def security_chain(moment: datetime) -> str:
    return f"{SECURITY_CHAIN_PREFIX}{moment.astimezone(UTC):%Y-%m-%d}"


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _row_key(seq: int) -> str:
    return f"{seq:010d}"


class AuditLedger:
    """Appends to and verifies audit chains. Sync (azure-data-tables); async callers use a thread."""

    def __init__(self, service: TableServiceClient, policy_version: str, policy_file_hash: str,
                 app_version: str = APP_VERSION, observer: RowObserver | None = None) -> None:  # fmt: skip
        self._rows: TableClient = ensure_table(service, ROWS_TABLE)
        self._heads: TableClient = ensure_table(service, HEADS_TABLE)
        self._policy_version = policy_version
        self._policy_file_hash = policy_file_hash
        self._app_version = app_version
        self._observer = observer

    # ------------------------------------------------------------------ writing

    def append(
        self,
        chain: str,
        entry: AuditEntry,
        seq: int | None = None,
        labels: Mapping[str, Any] | None = None,
    ) -> AuditRow:
        """Record ``entry`` as row ``seq`` of ``chain`` (``None``: the next free position).

        Idempotent for a given ``seq``: writing the same entry again returns the stored row; a
        different entry at a taken position raises :class:`AuditError`. A row written here (not one
        found written) is told to the observer (shared.telemetry), with ``labels`` (ticket, system,
        tier) that are not part of the row. Blocking: from a coroutine, use :meth:`append_async`.
        """
        row, written, started_at = self._append(chain, entry, seq)
        if written:
            self._observe(row, started_at, labels)
        return row

    async def append_async(
        self,
        chain: str,
        entry: AuditEntry,
        seq: int | None = None,
        labels: Mapping[str, Any] | None = None,
    ) -> AuditRow:
        """:meth:`append` from a coroutine: the Table Storage calls run in a thread, and the observer is
        told on the event loop's task. The Functions Python worker forwards a log record to Application
        Insights only when it can tell the invocation it belongs to, which it reads from the current task
        (or a thread of its own pool), never from a thread asyncio.to_thread started."""
        row, written, started_at = await asyncio.to_thread(self._append, chain, entry, seq)
        if written:
            self._observe(row, started_at, labels)
        return row

    def _observe(self, row: AuditRow, started_at: datetime | None, labels: Mapping[str, Any] | None) -> None:
        if self._observer is not None:
            self._observer(row, started_at, labels or {})

    def _append(
        self, chain: str, entry: AuditEntry, seq: int | None
    ) -> tuple[AuditRow, bool, datetime | None]:
        """The row, whether this call wrote it (False: it was written before), and the chain's first time
        (None when the head does not know it)."""
        for _ in range(_MAX_RACE_ATTEMPTS):
            count, last_hash, etag, started_at = self._head(chain)
            position = count if seq is None else seq
            if position < count:
                return self._already_written(chain, position, entry), False, None
            if position > count:
                raise AuditError(f"{chain}: row {position} cannot be written before row {count}")
            fields = self._fields(chain, position, entry, last_hash)
            row = AuditRow(chain, position, fields, chain_hash(last_hash, fields))
            try:
                self._rows.create_entity(self._entity(row))
            except ResourceExistsError:
                # Another writer (or an earlier attempt of this one) wrote row ``position`` but did not
                # advance the head yet: advance it for them, then look again.
                self._advance_head(chain, self._read_row(chain, position), etag)
                continue
            self._advance_head(chain, row, etag)
            return row, True, (started_at if position else entry.time)
        raise AuditError(f"{chain}: could not append after {_MAX_RACE_ATTEMPTS} concurrent attempts")

    def claim_report(self, verification: ChainVerification, now: datetime) -> bool:
        """True the first time a given break of a chain (its first broken row and reason) is claimed for a
        report, False after: each break is reported once, however often the chain is read. The claim is a
        create-only row beside the chain's head (its RowKey is never "head")."""
        reason = hashlib.sha256(verification.reason.encode("utf-8")).hexdigest()[:16]
        key = f"reported-{verification.first_broken_seq}-{reason}"
        try:
            claim = {"PartitionKey": verification.chain, "RowKey": key, "At": now.isoformat()}
            self._heads.create_entity(claim)
        except ResourceExistsError:
            return False
        return True

    def next_seq(self, chain: str) -> int:
        """The position the next row of ``chain`` takes (its row count)."""
        return self._head(chain)[0]

    def _already_written(self, chain: str, seq: int, entry: AuditEntry) -> AuditRow:
        stored = self._read_row(chain, seq)
        expected = self._fields(chain, seq, entry, stored.prev_hash)
        if dict(expected) != dict(stored.fields):
            raise AuditError(f"{chain}: row {seq} already holds a different entry ({stored.kind})")
        return stored

    def _advance_head(self, chain: str, row: AuditRow, etag: str | None) -> None:
        head = {"PartitionKey": chain, "RowKey": _HEAD_KEY, "Count": row.seq + 1, "LastHash": row.hash}
        if row.seq == 0:
            # The chain's first time, kept for telemetry's durations (not hashed: the rows hold the record).
            head["StartedAt"] = row.time
        try:
            if etag is None:
                self._heads.create_entity(head)
            else:
                self._heads.update_entity(head, mode=UpdateMode.MERGE, etag=etag,
                                          match_condition=MatchConditions.IfNotModified)  # fmt: skip
        except (ResourceExistsError, ResourceModifiedError):
            pass  # someone else advanced it first: the caller re-reads the head

    def _head(self, chain: str) -> tuple[int, str, str | None, datetime | None]:
        """The row count, the last hash, the head's ETag (None: no head yet) and the chain's first time."""
        try:
            head = self._heads.get_entity(chain, _HEAD_KEY)
        except ResourceNotFoundError:
            return 0, GENESIS_HASH, None, None
        started = datetime.fromisoformat(str(head["StartedAt"])) if head.get("StartedAt") else None
        return int(head["Count"]), str(head["LastHash"]), str(head.metadata["etag"]), started

    def _fields(self, chain: str, seq: int, entry: AuditEntry, prev_hash: str) -> dict[str, Any]:
        detail = canonical_json(dict(entry.detail))
        if len(detail) > MAX_DETAIL_CHARS:
            raise AuditError(f"{chain}: the detail of {entry.kind} is {len(detail)} characters "
                             f"(at most {MAX_DETAIL_CHARS}); record evidence, not payloads")  # fmt: skip
        graph = entry.graph
        return {
            "Chain": chain,
            "Seq": seq,
            "Time": entry.time.astimezone(UTC).isoformat(timespec="microseconds"),
            "Kind": entry.kind,
            "Outcome": entry.outcome,
            "ActorId": entry.actor_id,
            "ActorUpn": entry.actor_upn,
            "Role": entry.role,
            "Detail": detail,
            "GraphMethod": graph.method if graph else "",
            "GraphPath": graph.path if graph else "",
            "GraphStatus": graph.status if graph else 0,
            "GraphRequestId": graph.request_id if graph else "",
            "GraphClientRequestId": graph.client_request_id if graph else "",
            "AppVersion": self._app_version,
            "WorkflowVersion": entry.workflow_version,
            "PolicyVersion": self._policy_version,
            "PolicyFileHash": self._policy_file_hash,
            "PrevHash": prev_hash,
        }

    @staticmethod
    def _entity(row: AuditRow) -> dict[str, Any]:
        return {"PartitionKey": row.chain, "RowKey": _row_key(row.seq), **row.fields, "Hash": row.hash}

    # ------------------------------------------------------------------ reading and verifying

    def _read_row(self, chain: str, seq: int) -> AuditRow:
        return _row_from(self._rows.get_entity(chain, _row_key(seq)))

    def read(self, chain: str) -> list[AuditRow]:
        """Every row of the chain in RowKey order, as stored (verification decides what they are worth)."""
        entities = self._rows.query_entities("PartitionKey eq @chain", parameters={"chain": chain})
        return [_row_from(entity) for entity in sorted(entities, key=lambda e: str(e["RowKey"]))]

    def verify(self, chain: str) -> ChainVerification:
        rows = self.read(chain)
        count, last_hash, etag, _ = self._head(chain)
        head_count = None if etag is None else count

        def broken(seq: int, reason: str) -> ChainVerification:
            return ChainVerification(chain, False, len(rows), head_count, seq, reason)

        prev_hash = GENESIS_HASH
        for position, row in enumerate(rows):
            if row.seq != position or row.fields.get("Chain") != chain:
                where = f"row {row.seq} of {row.fields.get('Chain')}"
                return broken(
                    position, f"row {position} holds {where}: rows were reordered, moved or removed"
                )
            if row.prev_hash != prev_hash:
                return broken(
                    position, f"row {position} does not follow row {position - 1} (previous hash differs)"
                )
            if chain_hash(row.prev_hash, row.fields) != row.hash:
                return broken(position, f"row {position} ({row.kind}) was modified after it was written")
            prev_hash = row.hash
        if head_count is None:
            if rows:
                return broken(0, "the chain has rows but no head row")
            return ChainVerification(chain, True, 0, None)
        if len(rows) < head_count:
            return broken(len(rows), f"row {len(rows)} is missing: the head records {head_count} rows")
        if len(rows) > head_count:
            # A writer that stopped between its row and the head leaves exactly one such row.
            return broken(head_count, f"row {head_count} is not recorded in the head ({head_count} rows)")
        if rows and last_hash != prev_hash:
            return broken(len(rows) - 1, f"row {len(rows) - 1} differs from the last hash the head records")
        return ChainVerification(chain, True, len(rows), head_count)


class VerifiableLedger(Protocol):
    def verify(self, chain: str) -> ChainVerification: ...

    def claim_report(self, verification: ChainVerification, now: datetime) -> bool: ...

    async def append_async(self, chain: str, entry: AuditEntry, seq: int | None = None) -> AuditRow: ...


# A chain being written while it is read can look broken for a moment (rows read, then a head that has
# moved on): it is read again before anything is reported.
_VERIFY_ATTEMPTS = 3
_VERIFY_PAUSE_S = 0.5


async def verify_and_report(
    ledger: VerifiableLedger, chain: str, now: datetime, by: str, expect_rows: bool = False
) -> ChainVerification:
    """Verify ``chain``; a chain that does not verify is recorded on the day's security chain (which raises
    the ``chain_verification_failed`` alert), with who found it (``by``: the status endpoint, the sweep),
    once per break however often it is read.
    ``expect_rows``: the chain must exist (a request that granted access has a record; deleting a whole
    chain, head included, would otherwise verify as an empty one)."""

    async def verify() -> ChainVerification:
        found = await asyncio.to_thread(ledger.verify, chain)
        if found.ok and found.count == 0 and expect_rows:
            return ChainVerification(chain, False, 0, found.head_count, 0, "the chain has no rows")
        return found

    verification = await verify()
    for _ in range(_VERIFY_ATTEMPTS - 1):
        if verification.ok:
            return verification
        await asyncio.sleep(_VERIFY_PAUSE_S)
        verification = await verify()
    if not verification.ok and await asyncio.to_thread(ledger.claim_report, verification, now):
        detail = {**verification.to_json(), "by": by}
        entry = AuditEntry(kind=VERIFICATION_FAILED_KIND, outcome="failed", time=now, actor_id="system",
                           detail=detail, workflow_version="audit/1")  # fmt: skip
        await ledger.append_async(security_chain(now), entry)
    return verification


def current_state(rows: list[AuditRow]) -> str | None:
    states = [row for row in rows if row.kind == STATE_KIND]
    return str(json.loads(str(states[-1].fields["Detail"])).get("state")) if states else None


def _row_from(entity: Mapping[str, Any]) -> AuditRow:
    fields = {name: (int(entity.get(name, 0)) if kind is int else str(entity.get(name, "")))
              for name, kind in _COLUMNS}  # fmt: skip
    return AuditRow(str(entity["PartitionKey"]), int(fields["Seq"]), fields, str(entity.get("Hash", "")))
