"""The circuit breaker shared by all requests (design.md "Guardrails"): when a dependency keeps failing,
requests stop calling it, and the outage is announced once, not once per request.

State lives in Table Storage (table ``CircuitBreaker``, one row per dependency), because every instance of
the app and every activity of every request must see the same breaker. Each change is an ETag-conditional
update, retried after a conflict on a fresh read, so that concurrent callers agree on what happened:

- ``closed``: calls go through; ``failures`` consecutive failures (a success resets the count) open it.
  Exactly one :meth:`CircuitBreaker.record` makes that move and returns ``opened``: one notice per outage.
- ``open``: calls are refused until ``retry_at`` (``open_for`` after opening).
- ``half_open``: after ``retry_at`` exactly one caller wins the trial (its claim is the conditional update);
  everyone else is refused until the trial reports. A success closes the breaker (``closed``); a failure
  opens it again for ``open_for``, as the same outage (no second notice). A trial that never reports back
  (the process died) expires after ``open_for`` and the next caller gets a new one.

Which answers count as failures is the caller's call (for Graph: 429 and 5xx or no answer, never a 4xx
business answer). Deadlines do not pause while the breaker is open: it only decides whether to call.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, TableServiceClient, UpdateMode

from shared.policy import BreakerPolicy
from shared.tables import ensure_table

__all__ = ["BREAKER_TABLE", "BreakerState", "CircuitBreaker", "Decision", "Transition"]

BREAKER_TABLE = "CircuitBreaker"
_PARTITION = "breaker"
# Each attempt is one read and one conditional write; a conflict means another caller changed the row, so
# with N racing callers every one of them is through within about N attempts.
_MAX_ATTEMPTS = 50

BreakerState = Literal["closed", "open", "half_open"]


class BreakerConflictError(RuntimeError):
    """The row kept changing under us (far more concurrent writers than expected)."""


@dataclass(frozen=True)
class Decision:
    """Whether a caller may call the dependency now. ``trial``: this caller holds the half-open trial and
    must :meth:`CircuitBreaker.record` its outcome. When refused, ``retry_at`` says when to ask again and
    ``retry_after`` how many seconds that is from the decision."""

    allowed: bool
    state: BreakerState
    retry_at: datetime | None = None
    retry_after: float | None = None
    trial: bool = False


@dataclass(frozen=True)
class Transition:
    """A change a :meth:`CircuitBreaker.record` call made, returned to that one caller only. ``outage``
    numbers the openings of this dependency (1, 2, ...): a key for the one notice per outage."""

    kind: Literal["opened", "closed"]
    dependency: str
    at: datetime
    failures: int  # consecutive failures that opened it (for "closed": the count before closing)
    outage: int
    retry_at: datetime | None = None


@dataclass(frozen=True)
class _Row:
    state: BreakerState
    failures: int
    outage: int
    retry_at: datetime | None
    etag: str


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CircuitBreaker:
    def __init__(
        self, service: TableServiceClient, settings: BreakerPolicy, clock: Callable[[], datetime] = _utc_now,
        *, table: str = BREAKER_TABLE,
    ) -> None:  # fmt: skip
        self._table: TableClient = ensure_table(service, table)
        self._settings = settings
        self._clock = clock

    def allow(self, dependency: str) -> Decision:
        """May this caller call ``dependency`` now? See the module docstring for the states."""
        for _ in range(_MAX_ATTEMPTS):
            row = self._read(dependency)
            if row is None or row.state == "closed":
                return Decision(True, "closed")
            now = self._clock()
            assert row.retry_at is not None  # open and half_open rows always carry one
            if now < row.retry_at:
                return Decision(False, row.state, row.retry_at, (row.retry_at - now).total_seconds())
            # Cooled down (or a trial nobody reported in time): claim the one trial. Only the caller whose
            # conditional update lands gets it; the others read the claim on their next attempt.
            trial_until = now + self._settings.open_for
            if self._write(dependency, row, "half_open", row.failures, row.outage, trial_until, now):
                return Decision(True, "half_open", trial_until, 0.0, trial=True)
            _pause()
        raise BreakerConflictError(f"circuit breaker row {dependency!r} kept changing; try again")

    def record(self, dependency: str, ok: bool) -> Transition | None:
        """Count one call's outcome. Returns ``opened`` to the one caller whose failure opened the breaker,
        ``closed`` to the one whose success closed it; None otherwise."""
        for _ in range(_MAX_ATTEMPTS):
            row = self._read(dependency)
            now = self._clock()
            if row is None:
                if ok:
                    return None  # nothing has failed yet: no write on the hot path
                created, transition = self._create_failed(dependency, now)
                if created:
                    return transition
            elif ok:
                if row.state == "closed" and row.failures == 0:
                    return None
                if self._write(dependency, row, "closed", 0, row.outage, None, now):
                    if row.state == "closed":
                        return None
                    return Transition("closed", dependency, now, row.failures, row.outage)
            elif row.state == "open":
                return None  # a call that started before it opened: the outage is already counted
            elif row.state == "half_open":
                # The trial failed (or a straggler did): the same outage, open for another while.
                retry_at = now + self._settings.open_for
                if self._write(dependency, row, "open", row.failures + 1, row.outage, retry_at, now):
                    return None
            else:
                failures = row.failures + 1
                if failures < self._settings.failures:
                    if self._write(dependency, row, "closed", failures, row.outage, None, now):
                        return None
                else:
                    retry_at = now + self._settings.open_for
                    if self._write(dependency, row, "open", failures, row.outage + 1, retry_at, now):
                        return Transition("opened", dependency, now, failures, row.outage + 1, retry_at)
            _pause()
        raise BreakerConflictError(f"circuit breaker row {dependency!r} kept changing; try again")

    def state(self, dependency: str) -> tuple[BreakerState, int, datetime | None]:
        """``(state, consecutive failures, retry_at)`` as stored now (for status pages and tests)."""
        row = self._read(dependency)
        if row is None:
            return "closed", 0, None
        return row.state, row.failures, row.retry_at

    # --- storage --------------------------------------------------------------------------------------

    def _read(self, dependency: str) -> _Row | None:
        try:
            entity = self._table.get_entity(_PARTITION, dependency)
        except ResourceNotFoundError:
            return None
        return _row(entity)

    def _create_failed(self, dependency: str, now: datetime) -> tuple[bool, Transition | None]:
        """The first failure ever recorded for ``dependency``; ``(False, None)`` when another caller created
        the row first (read it and count again)."""
        opens = self._settings.failures <= 1
        retry_at = now + self._settings.open_for if opens else None
        state: BreakerState = "open" if opens else "closed"
        try:
            self._table.create_entity(_entity(dependency, state, 1, int(opens), retry_at, now))
        except ResourceExistsError:
            return False, None
        return True, Transition("opened", dependency, now, 1, 1, retry_at) if opens else None

    def _write(self, dependency: str, row: _Row, state: BreakerState, failures: int, outage: int,
               retry_at: datetime | None, now: datetime) -> bool:  # fmt: skip
        """Replace the row if nobody changed it since ``row`` was read; False after a conflict."""
        try:
            self._table.update_entity(
                _entity(dependency, state, failures, outage, retry_at, now), mode=UpdateMode.REPLACE,
                etag=row.etag, match_condition=MatchConditions.IfNotModified,
            )  # fmt: skip
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True


def _entity(dependency: str, state: BreakerState, failures: int, outage: int, retry_at: datetime | None,
            now: datetime) -> dict[str, Any]:  # fmt: skip
    # Times as ISO strings: exact to the microsecond and free of the SDK's Edm.DateTime conversions.
    return {
        "PartitionKey": _PARTITION, "RowKey": dependency, "State": state, "Failures": failures,
        "Outage": outage, "RetryAt": retry_at.isoformat() if retry_at else "", "ChangedAt": now.isoformat(),
    }  # fmt: skip


def _row(entity: TableEntity) -> _Row:
    retry_at = str(entity.get("RetryAt") or "")
    return _Row(
        state=entity["State"], failures=int(entity["Failures"]), outage=int(entity["Outage"]),
        retry_at=datetime.fromisoformat(retry_at) if retry_at else None,
        etag=str(entity.metadata["etag"]),
    )  # fmt: skip


def _pause() -> None:
    # After a lost race: a short random wait so that the racers do not collide again in lockstep.
    time.sleep(random.uniform(0.0, 0.02))
