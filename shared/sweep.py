"""The sweep: reconcile the grant ledger against Graph (design.md "Revocation").

Every run (a timer trigger, every 5 minutes by default):

1. **Removes what is past its expiry.** Every outstanding grant past its expiry, and every grant whose removal
   failed before, is removed through the path it was granted by (``adminRemove`` for PIM, ``DELETE
   roleAssignments/{id}`` for break-glass) and read back: only when neither the PIM schedule instances nor the
   unified RBAC store show the principal with the role any more is the grant marked ``removed``. PIM's
   5-minute minimum (``too_soon``) leaves the grant for the next run; anything else marks it
   ``removal_failed`` with the reason, and the next run tries again.
2. **Reports drift.** Everyone who holds a role the policy manages but has no outstanding grant in the ledger
   (someone assigned it by hand, or the app's own identity did outside a request) is reported to IAM: one
   audit row and one Teams message per (principal, role, assignment), ever. The policy has no list of
   standing holders, so every such assignment is reported once (docs/sweep.md).

Two runs may overlap (a slow run, a manual run, two hosts). A lease row keeps them apart: a run that cannot
take it records ``sweep.skipped`` and ends. If two runs do act (a run outlived its lease), they still agree:
each grant (as it stands) and each drift report is claimed with a create-only row before anything is done
about it, so one run acts on it; and a grant is written only if nobody changed it since this run read it (a
request's own revocation wins).

Everything a run does is written to the day's sweep chain (``sweep-YYYY-MM-DD``) in the audit ledger:
``sweep.removed`` / ``sweep.removal_failed`` / ``sweep.removal_deferred`` / ``sweep.removal_superseded``
per grant with Graph's evidence, ``sweep.drift`` per report, ``sweep.skipped``, and ``sweep.run`` with the
run's summary.
The lease row also keeps ``LastRunAt`` and ``LastOutcome`` (to alert when the sweep has stopped running).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.audit import (
    ACCESS_ENDED_STATES,
    AuditEntry,
    AuditRow,
    ChainVerification,
    GraphCall,
    current_state,
    verify_and_report,
)
from shared.directory import DirectoryError, Traced
from shared.grants import Grant, GrantConflictError, RemovalState
from shared.pim import PimAnswer, RoleHolder
from shared.tables import ensure_table

__all__ = [
    "DRIFT_RECHECK_DELAY",
    "LEASE_DURATION",
    "SWEEP_CHAIN_PREFIX",
    "SWEEP_TABLE",
    "AuditTrail",
    "DriftReport",
    "GrantBook",
    "Notifier",
    "RoleStore",
    "Sweep",
    "SweepLease",
    "SweepState",
    "SweepStatus",
    "SweepSummary",
    "sweep_chain",
]

SWEEP_TABLE = "Sweep"
SWEEP_CHAIN_PREFIX = "sweep-"
WORKFLOW_VERSION = "sweep/1"
# A run takes seconds (a few Graph calls per due grant and per managed role). The lease lasts well beyond
# that, is renewed while a run works, and lapses on its own when a run dies, well before the next one is due.
LEASE_DURATION = timedelta(minutes=2)
# A request records its grant just after PIM accepted the activation: an assignment seen in that moment is
# not drift yet. Unknown holders are looked up in the ledger again after this pause before being reported.
DRIFT_RECHECK_DELAY = timedelta(seconds=15)
# The chains a run verifies: of the requests whose grants were confirmed removed since the watermark, less
# this overlap (a grant's removal time comes from its writer's clock, an orchestration's replay time
# included, which can lag); a first run looks back a day. A request that has not recorded the end of its
# access is waited for this long before its chain is verified as it stands.
VERIFY_OVERLAP = timedelta(minutes=5)
# The request itself removes its access when the approved duration ends (a durable timer at the grant's
# expiry, then adminRemove and a read-back of a few seconds): the sweep leaves that moment to it, so that a
# removal of its own (and the "grant past expiry still assigned" alert) means the request did not do it.
EXPIRY_GRACE = timedelta(seconds=30)
FIRST_RUN_VERIFY_LOOKBACK = timedelta(days=1)
UNFINISHED_PATIENCE = timedelta(hours=1)
# Read-back after a removal: the stores drop an assignment at their own pace (seconds before each look).
READ_BACK_WAITS: tuple[float, ...] = (0.0, 2.0, 5.0)

_LEASE_PARTITION = "lease"
_DRIFT_PARTITION = "drift"
_CHAINS_PARTITION = "chain"
_GRANT_PARTITION = "grant"
_REMOVED: frozenset[str] = frozenset({"done", "absent"})

Outcome = Literal["completed", "completed_with_errors", "lease_lost", "failed", "skipped"]

log = logging.getLogger(__name__)


def sweep_chain(moment: datetime) -> str:
    """The audit chain of the sweep runs of one day (UTC), like the security chain."""
    return f"{SWEEP_CHAIN_PREFIX}{moment.astimezone(UTC):%Y-%m-%d}"


# --- ports --------------------------------------------------------------------------------------------


class GrantBook(Protocol):
    """The grant ledger (shared.grants.GrantLedger)."""

    def outstanding(self) -> list[Grant]: ...

    def get(self, grant_id: str) -> Grant: ...

    def set_removal_state(
        self, grant_id: str, state: RemovalState, at: datetime, detail: str = ""
    ) -> Grant: ...

    def removed_since(self, since: datetime) -> list[Grant]: ...


class RoleStore(Protocol):
    """Graph's role stores and the two removal paths (shared.pim.Pim)."""

    async def remove(self, principal_id: str, role_template_id: str, justification: str) -> PimAnswer: ...

    async def remove_direct(self, assignment_id: str) -> PimAnswer: ...

    async def pim_instances(self, principal_id: str, role_template_id: str) -> Traced[list[str]]: ...

    async def unified_assignments(self, principal_id: str, role_template_id: str) -> Traced[list[str]]: ...

    async def role_holders(self, role_template_id: str) -> Traced[list[RoleHolder]]: ...


class Notifier(Protocol):
    """Plain messages to a Teams conversation (shared.teams.BotConnector)."""

    async def post_text(self, conversation_id: str, text: str) -> Any: ...


class AuditTrail(Protocol):
    """The audit ledger (shared.audit.AuditLedger)."""

    async def append_async(self, chain: str, entry: AuditEntry, seq: int | None = None) -> AuditRow: ...

    def read(self, chain: str) -> list[AuditRow]: ...

    def verify(self, chain: str) -> ChainVerification: ...

    def claim_report(self, verification: ChainVerification, now: datetime) -> bool: ...


# --- values -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepLease:
    """The lease row as a claim left it: who holds it until when (``etag`` to renew or release it)."""

    owner: str
    expires_at: datetime
    etag: str


@dataclass(frozen=True)
class SweepStatus:
    """What the last finished run recorded on the lease row (for the "sweep stopped running" alert)."""

    last_run_at: datetime | None
    last_outcome: str
    last_run_id: str
    last_summary: Mapping[str, Any]
    last_run_started_at: datetime | None = None


@dataclass(frozen=True)
class DriftReport:
    """A holder of a managed role that the grant ledger does not know."""

    principal_id: str
    role_template_id: str
    role_name: str
    source: str  # "pim" or "direct"
    assignment_id: str

    @property
    def key(self) -> str:
        """The drift row's key: one report per (principal, role, assignment), whatever the id's characters."""
        raw = f"{self.principal_id.lower()}|{self.role_template_id.lower()}|{self.assignment_id}"
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def to_json(self) -> dict[str, str]:
        return {
            "principalId": self.principal_id,
            "roleTemplateId": self.role_template_id,
            "role": self.role_name,
            "source": self.source,
            "assignmentId": self.assignment_id,
        }


@dataclass(frozen=True)
class SweepSummary:
    """What one run did. Grant lists hold grant ids."""

    run_id: str
    outcome: Outcome
    started_at: datetime
    finished_at: datetime
    removed: tuple[str, ...] = ()
    still_failing: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()  # PIM's minimum active time: the next run removes them
    skipped: tuple[str, ...] = ()  # changed by someone else while this run worked on them: left alone
    drift_reported: tuple[DriftReport, ...] = ()
    chains_verified: tuple[str, ...] = ()  # chains of requests whose access ended since the previous run
    chains_broken: tuple[str, ...] = ()  # of those, the ones that did not verify (on the security chain)
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "outcome": self.outcome,
            "startedAt": self.started_at.isoformat(),
            "finishedAt": self.finished_at.isoformat(),
            "removed": list(self.removed),
            "stillFailing": list(self.still_failing),
            "deferred": list(self.deferred),
            "skipped": list(self.skipped),
            "driftReported": [report.to_json() for report in self.drift_reported],
            "chainsVerified": list(self.chains_verified),
            "chainsBroken": list(self.chains_broken),
            "errors": list(self.errors),
        }

    def counts(self) -> dict[str, int]:
        return {
            "removed": len(self.removed),
            "stillFailing": len(self.still_failing),
            "deferred": len(self.deferred),
            "skipped": len(self.skipped),
            "driftReported": len(self.drift_reported),
            "chainsVerified": len(self.chains_verified),
            "chainsBroken": len(self.chains_broken),
            "errors": len(self.errors),
        }


@dataclass
class _Tally:
    removed: list[str] = field(default_factory=list)
    still_failing: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    drift_reported: list[DriftReport] = field(default_factory=list)
    chains_verified: list[str] = field(default_factory=list)
    chains_broken: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class LeaseLostError(RuntimeError):
    """Another run took the lease while this one worked (it outlived its lease): this run stops."""


# --- the sweep's own rows (Table Storage) ----------------------------------------------------------------


class SweepState:
    """The lease row and the drift rows, in the ``Sweep`` table.

    - Lease: partition ``lease``, RowKey = the lease name. Claimed and renewed with ETags; a claim succeeds
      when the row is free or its holder's time is up. It also keeps the last finished run's outcome.
    - Grant claims: partition ``grant``, RowKey = a hash of the grant id and its state, detail and update
      time. Created (create-only) by the run that acts on that version of the grant and deleted when it is
      done with it; a claim whose run died is taken over (ETag) once it is older than the claim timeout.
    - Drift: partition ``drift``, RowKey = :attr:`DriftReport.key`. Created (create-only) by the run that
      reports it, so overlapping runs report once; ``Status`` goes ``claimed`` -> ``reported``, and the row
      stays (that is what "reported once" remembers). Claims that time out are taken over, as for grants.
    - Audit chains: partition ``chain``, RowKey = the request id, once a run has verified the chain of a
      request whose access ended (so overlapping look-back windows verify and report it once).
    """

    def __init__(self, service: TableServiceClient, lease_name: str = "sweep") -> None:
        self._table: TableClient = ensure_table(service, SWEEP_TABLE)
        self._lease_name = lease_name

    # -- lease

    def claim_lease(self, owner: str, now: datetime, duration: timedelta) -> SweepLease:
        """Take the lease for ``owner`` if it is free (or lapsed); return the lease as it now stands, so
        ``result.owner == owner`` says whether this run holds it."""
        for _ in range(3):
            try:
                entity = self._table.get_entity(_LEASE_PARTITION, self._lease_name)
            except ResourceNotFoundError:
                row = {
                    "PartitionKey": _LEASE_PARTITION,
                    "RowKey": self._lease_name,
                    **_lease_fields(owner, now, duration),
                }
                try:
                    metadata = self._table.create_entity(row)
                except ResourceExistsError:
                    continue  # another run created it first: look again
                return SweepLease(owner, now + duration, str(metadata["etag"]))
            holder = str(entity.get("Owner") or "")
            expires = _time(entity.get("ExpiresAt"))
            if holder and holder != owner and expires is not None and expires > now:
                return SweepLease(holder, expires, str(entity.metadata["etag"]))
            try:
                metadata = self._table.update_entity(
                    {
                        "PartitionKey": _LEASE_PARTITION,
                        "RowKey": self._lease_name,
                        **_lease_fields(owner, now, duration),
                    },
                    mode=UpdateMode.MERGE,
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                continue  # someone else claimed it in between: look again
            return SweepLease(owner, now + duration, str(metadata["etag"]))
        entity = self._table.get_entity(_LEASE_PARTITION, self._lease_name)
        return SweepLease(
            str(entity.get("Owner") or ""),
            _time(entity.get("ExpiresAt")) or now,
            str(entity.metadata["etag"]),
        )

    def renew_lease(self, lease: SweepLease, now: datetime, duration: timedelta) -> SweepLease | None:
        """Extend a held lease; None when it is no longer ours (it lapsed and another run took it)."""
        try:
            metadata = self._table.update_entity(
                {
                    "PartitionKey": _LEASE_PARTITION,
                    "RowKey": self._lease_name,
                    "ExpiresAt": _iso(now + duration),
                },
                mode=UpdateMode.MERGE,
                etag=lease.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return SweepLease(lease.owner, now + duration, str(metadata["etag"]))

    def finish(self, lease: SweepLease, summary: SweepSummary) -> None:
        """Record the run's outcome on the lease row and free the lease if this run still holds it (another
        run holding it keeps it: only the ``Last*`` columns change then)."""
        last = {
            "LastRunAt": _iso(summary.finished_at),
            "LastRunStartedAt": _iso(summary.started_at),
            "LastRunId": summary.run_id,
            "LastOutcome": summary.outcome,
            "LastSummary": json.dumps(summary.counts(), sort_keys=True),
        }
        etag: str | None = lease.etag
        for _ in range(5):
            if etag is None:
                entity = self._table.get_entity(_LEASE_PARTITION, self._lease_name)
                etag = str(entity.metadata["etag"])
                ours = entity.get("Owner") == lease.owner
            else:
                ours = True
            free = {"Owner": "", "ExpiresAt": _iso(summary.finished_at)} if ours else {}
            try:
                self._table.update_entity(
                    {"PartitionKey": _LEASE_PARTITION, "RowKey": self._lease_name, **last, **free},
                    mode=UpdateMode.MERGE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
                return
            except ResourceModifiedError:
                etag = None  # renewed by us, or taken by another run: read it and try again
        raise RuntimeError(f"could not record the outcome of sweep run {summary.run_id} on the lease row")

    def status(self) -> SweepStatus | None:
        """The last finished run (None if no run has finished yet)."""
        try:
            entity = self._table.get_entity(_LEASE_PARTITION, self._lease_name)
        except ResourceNotFoundError:
            return None
        if not entity.get("LastRunAt"):
            return None
        return SweepStatus(
            last_run_at=_time(entity.get("LastRunAt")),
            last_run_started_at=_time(entity.get("LastRunStartedAt")),
            last_outcome=str(entity.get("LastOutcome") or ""),
            last_run_id=str(entity.get("LastRunId") or ""),
            last_summary=json.loads(str(entity.get("LastSummary") or "{}")),
        )

    # -- grants

    def claim_grant(self, grant: Grant, run_id: str, now: datetime, timeout: timedelta) -> bool:
        """Claim the right to act on ``grant`` as it stands (its state and last update): True for exactly one
        run, so that two runs never remove the same grant or both write its state. The claim of a run that
        died is taken over once it is older than ``timeout``."""
        key = _grant_version(grant)
        row = {"GrantId": grant.grant_id, "RemovalState": grant.removal_state}
        return self._claim(_GRANT_PARTITION, key, row, run_id, now, timeout)

    def release_grant(self, grant: Grant) -> None:
        """Drop the claim once the run is done with the grant (a later version of it is claimed afresh)."""
        with contextlib.suppress(ResourceNotFoundError):
            self._table.delete_entity(_GRANT_PARTITION, _grant_version(grant))

    def _claim(self, partition: str, key: str, row: Mapping[str, Any], run_id: str, now: datetime,
               timeout: timedelta) -> bool:  # fmt: skip
        """A create-only row; an existing one is taken over (ETag) only while ``Status`` is ``claimed`` and
        its claim is older than ``timeout``."""
        claim = {"Status": "claimed", "ClaimedBy": run_id, "ClaimedAt": _iso(now)}
        try:
            self._table.create_entity({"PartitionKey": partition, "RowKey": key, **row, **claim})
            return True
        except ResourceExistsError:
            pass
        try:
            entity = self._table.get_entity(partition, key)
        except ResourceNotFoundError:
            return False  # released meanwhile: what it guarded has changed, so there is nothing to claim
        claimed_at = _time(entity.get("ClaimedAt"))
        if entity.get("Status") != "claimed" or (claimed_at is not None and now - claimed_at < timeout):
            return False
        try:
            self._table.update_entity(
                {"PartitionKey": partition, "RowKey": key, **claim},
                mode=UpdateMode.MERGE,
                etag=entity.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    # -- drift

    def settled_drift(self, now: datetime, timeout: timedelta) -> frozenset[str]:
        """Keys of the drift reported already, or being reported by a run whose claim has not timed out."""
        rows = self._table.query_entities(
            "PartitionKey eq @p", parameters={"p": _DRIFT_PARTITION}, select=["RowKey", "Status", "ClaimedAt"]
        )
        settled = set()
        for row in rows:
            claimed_at = _time(row.get("ClaimedAt"))
            if row.get("Status") == "reported" or (claimed_at is not None and now - claimed_at < timeout):
                settled.add(str(row["RowKey"]))
        return frozenset(settled)

    def claim_drift(self, report: DriftReport, run_id: str, now: datetime, timeout: timedelta) -> bool:
        """Claim the right to report ``report``: True for exactly one run (create-only row); a claim left
        by a run that died before reporting is taken over once it is older than ``timeout``."""
        row = {**_drift_fields(report), "FirstSeenAt": _iso(now)}
        return self._claim(_DRIFT_PARTITION, report.key, row, run_id, now, timeout)

    def drift_reported(self, report: DriftReport, now: datetime, activity_id: str) -> None:
        self._table.update_entity(
            {
                "PartitionKey": _DRIFT_PARTITION,
                "RowKey": report.key,
                "Status": "reported",
                "ReportedAt": _iso(now),
                "ActivityId": activity_id,
            },
            mode=UpdateMode.MERGE,
        )

    # -- audit chains

    def chains_verified_through(self) -> datetime | None:
        """The sweep's verification watermark (on the lease row): grants removed before it are done."""
        try:
            entity = self._table.get_entity(_LEASE_PARTITION, self._lease_name)
        except ResourceNotFoundError:
            return None
        return _time(entity.get("ChainsVerifiedThrough"))

    def set_chains_verified_through(self, moment: datetime) -> None:
        key = {"PartitionKey": _LEASE_PARTITION, "RowKey": self._lease_name}
        self._table.update_entity({**key, "ChainsVerifiedThrough": _iso(moment)}, mode=UpdateMode.MERGE)

    def chain_checked(self, chain: str) -> bool:
        """Whether a run verified ``chain`` already (each ended request's chain is verified once)."""
        try:
            self._table.get_entity(_CHAINS_PARTITION, chain)
        except ResourceNotFoundError:
            return False
        return True

    def chain_verified(self, chain: str, ok: bool, now: datetime, run_id: str) -> None:
        row = {"PartitionKey": _CHAINS_PARTITION, "RowKey": chain, "Ok": ok, "VerifiedAt": _iso(now),
               "RunId": run_id}  # fmt: skip
        self._table.upsert_entity(row)

    def drift_status(self, report: DriftReport) -> str | None:
        try:
            return str(self._table.get_entity(_DRIFT_PARTITION, report.key).get("Status") or "")
        except ResourceNotFoundError:
            return None


def _grant_version(grant: Grant) -> str:
    updated = grant.updated_at.isoformat() if grant.updated_at else ""
    raw = f"{grant.grant_id}|{grant.removal_state}|{updated}|{grant.removal_detail}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _lease_fields(owner: str, now: datetime, duration: timedelta) -> dict[str, str]:
    return {"Owner": owner, "ClaimedAt": _iso(now), "ExpiresAt": _iso(now + duration)}


def _drift_fields(report: DriftReport) -> dict[str, str]:
    return {
        "PrincipalId": report.principal_id,
        "RoleTemplateId": report.role_template_id,
        "RoleName": report.role_name,
        "Source": report.source,
        "AssignmentId": report.assignment_id,
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


# --- the reconciliation ----------------------------------------------------------------------------------


class Sweep:
    """One reconciliation run per :meth:`run`. ``roles`` maps the policy's role template ids to their names;
    ``iam_conversation_id`` is where drift is reported."""

    def __init__(
        self,
        ledger: GrantBook,
        graph: RoleStore,
        notifier: Notifier,
        audit: AuditTrail,
        state: SweepState,
        roles: Mapping[str, str],
        iam_conversation_id: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        lease_duration: timedelta = LEASE_DURATION,
        drift_recheck_delay: timedelta = DRIFT_RECHECK_DELAY,
        read_back_waits: tuple[float, ...] = READ_BACK_WAITS,
    ) -> None:
        self._setup = _Setup(
            ledger=ledger,
            graph=graph,
            notifier=notifier,
            audit=audit,
            state=state,
            roles={template.lower(): name for template, name in roles.items()},
            iam_conversation_id=iam_conversation_id,
            clock=clock,
            lease_duration=lease_duration,
            drift_recheck_delay=drift_recheck_delay,
            read_back_waits=read_back_waits or (0.0,),
        )

    async def run(self) -> SweepSummary:
        run = _Run(self._setup, str(uuid.uuid4()), self._setup.clock())
        return await run.execute()


@dataclass(frozen=True)
class _Setup:
    ledger: GrantBook
    graph: RoleStore
    notifier: Notifier
    audit: AuditTrail
    state: SweepState
    roles: Mapping[str, str]
    iam_conversation_id: str
    clock: Callable[[], datetime]
    lease_duration: timedelta
    drift_recheck_delay: timedelta
    read_back_waits: tuple[float, ...]


class _Run:
    """The state of one run: its id, lease, chain and tally."""

    def __init__(self, setup: _Setup, run_id: str, started_at: datetime) -> None:
        self.s = setup
        self.run_id = run_id
        self.started_at = started_at
        self.chain = sweep_chain(started_at)
        self.tally = _Tally()
        self.lease: SweepLease | None = None

    # -- the run

    async def execute(self) -> SweepSummary:
        s = self.s
        lease = await asyncio.to_thread(s.state.claim_lease, self.run_id, self.started_at, s.lease_duration)
        if lease.owner != self.run_id:
            return await self._skipped(lease)
        self.lease = lease
        outcome: Outcome = "completed"
        try:
            known = await self._remove_expired()
            await self._report_drift(known)
            await self._verify_ended()
        except LeaseLostError as exc:
            outcome = "lease_lost"
            self.tally.errors.append(str(exc))
        except Exception as exc:  # the run is recorded whatever went wrong; the next run starts over
            log.exception("sweep run %s failed", self.run_id)
            outcome = "failed"
            self.tally.errors.append(f"{type(exc).__name__}: {exc}")
        if outcome == "completed" and (self.tally.errors or self.tally.still_failing):
            outcome = "completed_with_errors"
        summary = self._summary(outcome)
        try:
            await self._record("sweep.run", outcome, summary.to_json())
        finally:  # the lease is freed and the outcome kept even if the audit row could not be written
            await asyncio.to_thread(s.state.finish, self.lease, summary)
        log.info("sweep run %s: %s %s", self.run_id, outcome, json.dumps(summary.counts(), sort_keys=True))
        return summary

    async def _skipped(self, lease: SweepLease) -> SweepSummary:
        detail = {
            "runId": self.run_id,
            "reason": "another sweep run holds the lease",
            "holder": lease.owner,
            "heldUntil": lease.expires_at.isoformat(),
        }
        await self._record("sweep.skipped", "skipped", detail)
        log.info("sweep run %s skipped: run %s holds the lease", self.run_id, lease.owner)
        return self._summary("skipped")

    def _summary(self, outcome: Outcome) -> SweepSummary:
        t = self.tally
        return SweepSummary(
            run_id=self.run_id,
            outcome=outcome,
            started_at=self.started_at,
            finished_at=self.s.clock(),
            removed=tuple(t.removed),
            still_failing=tuple(t.still_failing),
            deferred=tuple(t.deferred),
            skipped=tuple(t.skipped),
            drift_reported=tuple(t.drift_reported),
            chains_verified=tuple(t.chains_verified),
            chains_broken=tuple(t.chains_broken),
            errors=tuple(t.errors),
        )

    async def _keep_lease(self) -> None:
        """Renew the lease when half of it is gone, so that a long run keeps it; stop if it was lost."""
        s, lease = self.s, self.lease
        assert lease is not None
        now = s.clock()
        if lease.expires_at - now > s.lease_duration / 2:
            return
        renewed = await asyncio.to_thread(s.state.renew_lease, lease, now, s.lease_duration)
        if renewed is None:
            raise LeaseLostError(f"sweep run {self.run_id} lost its lease (it ran longer than the lease)")
        self.lease = renewed

    async def _record(
        self,
        kind: str,
        outcome: str,
        detail: Mapping[str, Any],
        *,
        graph: GraphCall | None = None,
        actor_id: str = "",
        actor_upn: str = "",
        role: str = "",
    ) -> None:
        entry = AuditEntry(
            kind=kind,
            outcome=outcome,
            time=self.s.clock(),
            actor_id=actor_id,
            actor_upn=actor_upn,
            role=role,
            detail={"runId": self.run_id, **detail},
            graph=graph,
            workflow_version=WORKFLOW_VERSION,
        )
        await self.s.audit.append_async(self.chain, entry)

    # -- 1. removals

    async def _remove_expired(self) -> set[tuple[str, str]]:
        """Remove every due grant; return the (principal, role) pairs the ledger knew at the start."""
        grants = await asyncio.to_thread(self.s.ledger.outstanding)
        now = self.s.clock()
        for grant in grants:
            if not _due(grant, now):
                continue
            if _superseded(grant, grants, now):
                # A later request of the same responder and role holds it now (its duplicates check found
                # nothing assigned, so this grant's assignment had ended): removing "the responder's role"
                # would remove the later access. Close this grant instead.
                detail = "sweep: superseded by a later grant of the same responder and role"
                await asyncio.to_thread(
                    self.s.ledger.set_removal_state, grant.grant_id, "removed", now, detail
                )
                await self._record("sweep.removal_superseded", "recorded", {"grantId": grant.grant_id,
                                   "reason": detail}, role=grant.role_name)  # fmt: skip
                self.tally.skipped.append(grant.grant_id)
                continue
            await self._keep_lease()
            try:
                await self._reconcile(grant)
            except LeaseLostError:
                raise
            except Exception as exc:  # one grant must not keep the others from being removed
                log.exception("sweep run %s: grant %s", self.run_id, grant.grant_id)
                self.tally.errors.append(f"{grant.grant_id}: {type(exc).__name__}: {exc}")
        return {_pair(grant.responder_id, grant.role_template_id) for grant in grants}

    async def _reconcile(self, grant: Grant) -> None:
        s = self.s
        claimed = await asyncio.to_thread(
            s.state.claim_grant, grant, self.run_id, s.clock(), s.lease_duration
        )
        if not claimed:  # another run is on it
            self.tally.skipped.append(grant.grant_id)
            return
        try:
            await self._remove(grant)
        finally:
            await asyncio.to_thread(s.state.release_grant, grant)

    async def _remove(self, grant: Grant) -> None:
        s = self.s
        if not await self._unchanged(grant):
            self.tally.skipped.append(grant.grant_id)
            return
        if grant.path == "break_glass":
            answer = await self._remove_direct(grant)
        else:
            reason = f"emergency access {grant.request_id} expired at {grant.expires_at.isoformat()}"
            answer = await s.graph.remove(
                grant.responder_id, grant.role_template_id, f"Removed by the expiry sweep: {reason}"
            )
        removal: dict[str, Any] = {
            "verdict": answer.verdict,
            "code": answer.code,
            "message": answer.message[:500],
        }
        if answer.verdict == "too_soon":
            # PIM refuses a removal within its minimum active time: the next run removes it.
            self.tally.deferred.append(grant.grant_id)
            await self._record_grant("sweep.removal_deferred", "deferred", grant, answer, removal)
            return
        if answer.verdict not in _REMOVED:
            detail = f"sweep: removal answered {answer.verdict}" + (
                f" ({answer.code})" if answer.code else ""
            )
            await self._settle(grant, "removal_failed", detail, answer, removal)
            return
        confirmed, read_back = await self._read_back(grant)
        removal["readBack"] = read_back
        if confirmed:
            await self._settle(grant, "removed", "sweep: removal confirmed by read-back", answer, removal)
        else:
            problem = read_back[-1].get("error") or "still visible: " + ", ".join(
                f"{r['store']} {r['ids']}" for r in read_back[-1]["stores"] if r["ids"]
            )
            await self._settle(
                grant, "removal_failed", f"sweep: read-back failed: {problem}", answer, removal
            )

    async def _remove_direct(self, grant: Grant) -> PimAnswer:
        s = self.s
        if grant.assignment_request_id:
            return await s.graph.remove_direct(grant.assignment_request_id)
        # A retried break-glass POST met its first one ("exists") before the store showed it, so no id was
        # recorded: the responder's direct assignments of the role are that one (validation refuses a
        # request for a role the responder already holds).
        holders = await s.graph.role_holders(grant.role_template_id)
        answer = PimAnswer("absent", None, holders.call)
        for holder in holders.value:
            if holder.source == "direct" and holder.principal_id == grant.responder_id.lower():
                answer = await s.graph.remove_direct(holder.assignment_id)
                if answer.verdict not in _REMOVED:
                    break
        return answer

    async def _unchanged(self, grant: Grant) -> bool:
        """True if the grant is still as this run read it: anything else is another writer's decision
        (the request's own revocation, another sweep run) and is never overwritten."""
        current = await asyncio.to_thread(self.s.ledger.get, grant.grant_id)
        return (current.removal_state, current.updated_at, current.removal_detail) == (
            grant.removal_state,
            grant.updated_at,
            grant.removal_detail,
        )

    async def _read_back(self, grant: Grant) -> tuple[bool, list[dict[str, Any]]]:
        """Look until neither PIM's instances nor the unified RBAC store show the principal with the role."""
        s = self.s
        looks: list[dict[str, Any]] = []
        for wait in s.read_back_waits:
            if wait:
                await asyncio.sleep(wait)
            try:
                instances = await s.graph.pim_instances(grant.responder_id, grant.role_template_id)
                unified = await s.graph.unified_assignments(grant.responder_id, grant.role_template_id)
            except DirectoryError as error:
                looks.append(
                    {
                        "error": f"{error.code or error.call.status}: {str(error)[:300]}",
                        "graph": error.call.__dict__,
                    }
                )
                continue
            stores = [
                {"store": "pim_instance", "ids": instances.value, "graph": instances.call.__dict__},
                {"store": "unified_assignment", "ids": unified.value, "graph": unified.call.__dict__},
            ]
            looks.append({"stores": stores})
            if not instances.value and not unified.value:
                return True, looks
        return False, looks

    async def _settle(
        self, grant: Grant, state: RemovalState, detail: str, answer: PimAnswer, removal: dict[str, Any]
    ) -> None:
        s = self.s
        try:
            if not await self._unchanged(grant):
                raise GrantConflictError(f"grant {grant.grant_id} changed while the sweep removed it")
            await asyncio.to_thread(s.ledger.set_removal_state, grant.grant_id, state, s.clock(), detail)
        except GrantConflictError as exc:
            self.tally.skipped.append(grant.grant_id)
            removal["conflict"] = str(exc)
            await self._record_grant("sweep.removal_superseded", "skipped", grant, answer, removal)
            return
        if state == "removed":
            self.tally.removed.append(grant.grant_id)
            await self._record_grant("sweep.removed", "removed", grant, answer, removal)
        else:
            self.tally.still_failing.append(grant.grant_id)
            removal["detail"] = detail
            await self._record_grant("sweep.removal_failed", "failed", grant, answer, removal)

    async def _record_grant(
        self, kind: str, outcome: str, grant: Grant, answer: PimAnswer, removal: dict[str, Any]
    ) -> None:
        detail = {
            "grantId": grant.grant_id,
            "requestId": grant.request_id,
            "path": grant.path,
            "roleTemplateId": grant.role_template_id,
            "assignmentRequestId": grant.assignment_request_id,
            "expiresAt": grant.expires_at.isoformat(),
            "stateBefore": grant.removal_state,
            **removal,
        }
        await self._record(
            kind,
            outcome,
            detail,
            graph=answer.call,
            actor_id=grant.responder_id,
            actor_upn=grant.responder_upn,
            role=grant.role_name,
        )

    # -- 3. audit chains

    async def _verify_ended(self) -> None:
        """Verify, once, the audit chain of every request whose access ended, so that a changed or deleted
        record raises an alert without anyone reading it.

        The requests are those with a grant confirmed removed since the watermark (less an overlap: a
        removal's time comes from its writer's clock). A chain whose request has not recorded the end of
        its access yet is left for a later run (for at most ``UNFINISHED_PATIENCE``), and holds the
        watermark back; the watermark moves only when every chain was looked at without an error."""
        s = self.s
        watermark = await asyncio.to_thread(s.state.chains_verified_through)
        since = watermark - VERIFY_OVERLAP if watermark else self.started_at - FIRST_RUN_VERIFY_LOOKBACK
        removed: dict[str, list[datetime]] = {}
        for grant in await asyncio.to_thread(s.ledger.removed_since, since):
            removed.setdefault(grant.request_id, []).append(grant.updated_at or since)
        next_mark, clean = self.started_at, True
        for request_id in sorted(removed):
            await self._keep_lease()
            removed_at = min(removed[request_id])
            try:
                if await asyncio.to_thread(s.state.chain_checked, request_id):
                    continue
                rows = await asyncio.to_thread(s.audit.read, request_id)
                unfinished = rows and current_state(rows) not in ACCESS_ENDED_STATES
                if unfinished and s.clock() - removed_at < UNFINISHED_PATIENCE:
                    next_mark = min(next_mark, removed_at)
                    continue
                found = await verify_and_report(s.audit, request_id, s.clock(), "sweep", expect_rows=True)
                await asyncio.to_thread(s.state.chain_verified, request_id, found.ok, s.clock(), self.run_id)
            except LeaseLostError:
                raise
            except Exception as exc:  # not marked verified, and the watermark stays: the next run tries again
                log.exception("sweep run %s: verifying %s", self.run_id, request_id)
                self.tally.errors.append(f"verifying {request_id}: {type(exc).__name__}: {exc}")
                clean = False
                continue
            self.tally.chains_verified.append(request_id)
            if not found.ok:
                self.tally.chains_broken.append(request_id)
                self.tally.errors.append(f"audit chain {request_id} does not verify: {found.reason}")
        if clean:
            await asyncio.to_thread(s.state.set_chains_verified_through, next_mark)

    # -- 2. drift

    async def _report_drift(self, known: set[tuple[str, str]]) -> None:
        s = self.s
        candidates: list[tuple[DriftReport, GraphCall]] = []
        for template_id, name in s.roles.items():
            await self._keep_lease()
            try:
                holders = await s.graph.role_holders(template_id)
            except DirectoryError as error:
                self.tally.errors.append(f"holders of {name}: {error.code or error.call.status}: {error}")
                continue
            for holder in holders.value:
                if _pair(holder.principal_id, template_id) not in known:
                    report = DriftReport(
                        holder.principal_id, template_id, name, holder.source, holder.assignment_id
                    )
                    candidates.append((report, holders.call))
        if not candidates:
            return
        settled = await asyncio.to_thread(s.state.settled_drift, s.clock(), s.lease_duration)
        candidates = [(report, call) for report, call in candidates if report.key not in settled]
        if not candidates:
            return
        # A request records its grant just after PIM accepted the activation: look at the ledger again
        # after a pause before calling an assignment drift.
        if s.drift_recheck_delay > timedelta(0):
            await asyncio.sleep(s.drift_recheck_delay.total_seconds())
        fresh = await asyncio.to_thread(s.ledger.outstanding)
        known = known | {_pair(grant.responder_id, grant.role_template_id) for grant in fresh}
        for report, call in candidates:
            if _pair(report.principal_id, report.role_template_id) in known:
                continue
            await self._keep_lease()
            try:
                await self._report(report, call)
            except LeaseLostError:
                raise
            except Exception as exc:
                log.exception("sweep run %s: drift report %s", self.run_id, report.key)
                self.tally.errors.append(f"drift {report.assignment_id}: {type(exc).__name__}: {exc}")

    async def _report(self, report: DriftReport, call: GraphCall) -> None:
        s = self.s
        claimed = await asyncio.to_thread(
            s.state.claim_drift, report, self.run_id, s.clock(), s.lease_duration
        )
        if not claimed:
            return  # another run reports it (or has)
        text = (
            f"Sweep: {report.role_name} is held by {report.principal_id} through a {report.source} "
            f"assignment ({report.assignment_id}) that no emergency-access request stands for (the grant "
            "ledger does not know it). Review it in Entra ID; the sweep reports each such assignment once."
        )
        detail = {**report.to_json(), "conversationId": s.iam_conversation_id}
        try:
            posted = await s.notifier.post_text(s.iam_conversation_id, text)
        except Exception as exc:
            # The claim stays "claimed": a later run takes it over after the timeout and tries again.
            detail["error"] = f"{type(exc).__name__}: {exc}"[:500]
            await self._record(
                "sweep.drift",
                "notify_failed",
                detail,
                graph=call,
                actor_id=report.principal_id,
                role=report.role_name,
            )
            raise
        activity_id = str(getattr(posted, "activity_id", "") or "")
        detail["activityId"] = activity_id
        await self._record(
            "sweep.drift", "reported", detail, graph=call, actor_id=report.principal_id, role=report.role_name
        )
        await asyncio.to_thread(s.state.drift_reported, report, s.clock(), activity_id)
        self.tally.drift_reported.append(report)


def _due(grant: Grant, now: datetime) -> bool:
    """Past its expiry by more than the grace (whatever its state short of removed), or a removal that
    failed before."""
    return grant.removal_state == "removal_failed" or grant.is_past_expiry(now - EXPIRY_GRACE)


def _superseded(grant: Grant, grants: list[Grant], now: datetime) -> bool:
    """Whether a later, still current grant covers the same responder and role, and this grant would be
    removed by that pair (a PIM grant, or a break-glass one recorded without its assignment id)."""
    if grant.path == "break_glass" and grant.assignment_request_id:
        return False  # removed by its own id: never touches another grant's assignment
    pair = _pair(grant.responder_id, grant.role_template_id)
    return any(
        other.grant_id != grant.grant_id
        and _pair(other.responder_id, other.role_template_id) == pair
        and other.granted_at > grant.granted_at
        and not _due(other, now)
        for other in grants
    )


def _pair(principal_id: str, role_template_id: str) -> tuple[str, str]:
    return principal_id.lower(), role_template_id.lower()
