"""The audit ledger against Azurite: hash chain, create-only rows, head row, tamper detection."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient, UpdateMode

from local.azurite import Azurite
from shared import telemetry
from shared.audit import (
    HEADS_TABLE,
    ROWS_TABLE,
    VERIFICATION_FAILED_KIND,
    AuditEntry,
    AuditError,
    AuditLedger,
    AuditRow,
    GraphCall,
    chain_hash,
    security_chain,
    verify_and_report,
)

pytestmark = pytest.mark.stack

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
def service(azurite: Azurite) -> Iterator[TableServiceClient]:
    with TableServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


@pytest.fixture
def ledger(service: TableServiceClient) -> AuditLedger:
    return AuditLedger(service, policy_version="sha256:" + "a" * 64, policy_file_hash="sha256:" + "b" * 64)


def chain_id() -> str:
    return f"servicenow-INC{uuid.uuid4().hex[:8]}-exchange-administrator-1"


def entry(n: int, graph: GraphCall | None = None, detail: dict[str, object] | None = None) -> AuditEntry:
    return AuditEntry(kind=f"step.{n}", outcome="passed", time=T0 + timedelta(seconds=n),
                      actor_id="11111111-0000-0000-0000-000000000001", actor_upn="alex@contoso.example",
                      role="Exchange Administrator", detail={"n": n} if detail is None else detail,
                      graph=graph, workflow_version="access_request/1")  # fmt: skip


def write_chain(ledger: AuditLedger, chain: str, rows: int = 4) -> None:
    for n in range(rows):
        ledger.append(chain, entry(n), seq=n)


def tamper(service: TableServiceClient, chain: str, seq: int, **changes: object) -> None:
    table = service.get_table_client(ROWS_TABLE)
    row = dict(table.get_entity(chain, f"{seq:010d}"))
    row.update(changes)
    table.upsert_entity(row, mode=UpdateMode.REPLACE)


def test_rows_form_a_hash_chain_with_versions_and_graph_evidence(ledger: AuditLedger) -> None:
    chain = chain_id()
    call = GraphCall(
        "POST", "/roleManagement/directory/roleAssignmentScheduleRequests", 201, "req-1", "cli-1"
    )
    first = ledger.append(chain, entry(0), seq=0)
    second = ledger.append(chain, entry(1, graph=call), seq=1)
    assert first.prev_hash == "0" * 64
    assert second.prev_hash == first.hash
    assert second.hash == chain_hash(first.hash, second.fields)
    stored = ledger.read(chain)[1].to_json()
    assert stored["graph_request_id"] == "req-1"
    assert stored["graph_client_request_id"] == "cli-1"
    assert stored["policy_version"] == "sha256:" + "a" * 64
    assert stored["policy_file_hash"] == "sha256:" + "b" * 64
    assert stored["workflow_version"] == "access_request/1"
    assert stored["app_version"]
    assert stored["actor_upn"] == "alex@contoso.example"
    assert stored["detail"] == {"n": 1}
    assert ledger.verify(chain).ok


def test_writing_the_same_row_again_is_idempotent(ledger: AuditLedger) -> None:
    chain = chain_id()
    first = ledger.append(chain, entry(0), seq=0)
    again = ledger.append(chain, entry(0), seq=0)  # a retried activity
    assert again == first
    assert len(ledger.read(chain)) == 1
    assert ledger.verify(chain).ok


def test_a_different_entry_at_a_taken_position_is_refused(ledger: AuditLedger) -> None:
    chain = chain_id()
    ledger.append(chain, entry(0), seq=0)
    with pytest.raises(AuditError, match="row 0 already holds a different entry"):
        ledger.append(chain, entry(7), seq=0)


def test_a_gap_in_the_sequence_is_refused(ledger: AuditLedger) -> None:
    chain = chain_id()
    with pytest.raises(AuditError, match="row 2 cannot be written before row 0"):
        ledger.append(chain, entry(2), seq=2)


def test_a_writer_that_stopped_before_the_head_is_completed_by_the_next(
    ledger: AuditLedger, service: TableServiceClient
) -> None:
    chain = chain_id()
    write_chain(ledger, chain, rows=2)
    heads = service.get_table_client(HEADS_TABLE)
    head = dict(heads.get_entity(chain, "head"))
    ledger.append(chain, entry(2), seq=2)
    heads.upsert_entity(head, mode=UpdateMode.REPLACE)  # as if the writer died before advancing the head
    assert not ledger.verify(chain).ok
    assert ledger.append(chain, entry(2), seq=2).seq == 2  # the retried activity
    ledger.append(chain, entry(3), seq=3)
    assert ledger.verify(chain).ok


def test_editing_a_row_is_detected_at_that_row(ledger: AuditLedger, service: TableServiceClient) -> None:
    chain = chain_id()
    write_chain(ledger, chain)
    tamper(service, chain, 2, Outcome="failed")
    result = ledger.verify(chain)
    assert not result.ok
    assert result.first_broken_seq == 2
    assert "modified" in result.reason


def test_editing_a_row_and_its_hash_is_detected_at_the_next_row(
    ledger: AuditLedger, service: TableServiceClient
) -> None:
    chain = chain_id()
    write_chain(ledger, chain)
    row = ledger.read(chain)[1]
    forged = {**row.fields, "Role": "Global Administrator"}
    tamper(service, chain, 1, Role="Global Administrator", Hash=chain_hash(row.prev_hash, forged))
    result = ledger.verify(chain)
    assert (result.ok, result.first_broken_seq) == (False, 2)


def test_reordering_two_rows_is_detected_at_the_first_of_them(
    ledger: AuditLedger, service: TableServiceClient
) -> None:
    chain = chain_id()
    write_chain(ledger, chain)
    table = service.get_table_client(ROWS_TABLE)
    one, two = (dict(table.get_entity(chain, f"{n:010d}")) for n in (1, 2))
    one["RowKey"], two["RowKey"] = two["RowKey"], one["RowKey"]
    for row in (one, two):
        table.upsert_entity(row, mode=UpdateMode.REPLACE)
    result = ledger.verify(chain)
    assert (result.ok, result.first_broken_seq) == (False, 1)
    assert "reordered" in result.reason


def test_deleting_the_last_row_is_detected(ledger: AuditLedger, service: TableServiceClient) -> None:
    chain = chain_id()
    write_chain(ledger, chain)
    service.get_table_client(ROWS_TABLE).delete_entity(chain, f"{3:010d}")
    result = ledger.verify(chain)
    assert (result.ok, result.first_broken_seq) == (False, 3)
    assert "missing" in result.reason


def test_deleting_a_middle_row_is_detected_at_that_row(
    ledger: AuditLedger, service: TableServiceClient
) -> None:
    chain = chain_id()
    write_chain(ledger, chain)
    service.get_table_client(ROWS_TABLE).delete_entity(chain, f"{1:010d}")
    result = ledger.verify(chain)
    assert (result.ok, result.first_broken_seq) == (False, 1)


def test_security_chain_allocates_positions_for_concurrent_writers(ledger: AuditLedger) -> None:
    chain = security_chain(T0) + "-" + uuid.uuid4().hex[:6]
    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(lambda n: ledger.append(chain, entry(n)), range(24)))
    assert sorted(row.seq for row in rows) == list(range(24))
    assert ledger.verify(chain).ok
    assert security_chain(T0) == "security-2026-11-27"


def test_an_oversized_detail_is_refused(ledger: AuditLedger) -> None:
    with pytest.raises(AuditError, match="record evidence, not payloads"):
        ledger.append(chain_id(), entry(0, detail={"blob": "x" * 40_000}), seq=0)


# --- the row observer (telemetry) -------------------------------------------------------------------------


def observed_ledger(service: TableServiceClient) -> tuple[AuditLedger, list[dict[str, object]]]:
    events: list[dict[str, object]] = []

    def observer(row: AuditRow, started_at: datetime | None, labels: Mapping[str, object]) -> None:
        events.append(telemetry.step_fields(row, started_at, labels))

    ledger = AuditLedger(service, "sha256:" + "a" * 64, "sha256:" + "b" * 64, observer=observer)
    return ledger, events


def test_each_row_written_is_observed_once_with_the_time_since_the_chain_began(
    service: TableServiceClient,
) -> None:
    ledger, events = observed_ledger(service)
    chain = chain_id()
    labels = {"ticket": "INC0012345", "system": "servicenow", "tier": "high"}
    write_chain(ledger, chain, rows=3)
    ledger.append(chain, entry(1), seq=1, labels=labels)  # a retried activity: the row is stored already
    ledger.append(chain, entry(3), seq=3, labels=labels)
    assert [(e["seq"], e["elapsedSeconds"]) for e in events] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)]
    assert (events[3]["ticket"], events[3]["tier"], events[3]["step"]) == ("INC0012345", "high", "step.3")
    assert "ticket" not in events[0]  # no labels given: none invented


def test_a_chain_that_does_not_verify_is_recorded_on_the_security_chain_and_raises_the_signal(
    service: TableServiceClient,
) -> None:
    ledger, events = observed_ledger(service)
    chain = chain_id()
    write_chain(ledger, chain)
    assert asyncio.run(verify_and_report(ledger, chain, T0, "test")).ok
    assert [e["step"] for e in events].count(VERIFICATION_FAILED_KIND) == 0

    tamper(service, chain, 2, Outcome="failed")
    verification = asyncio.run(verify_and_report(ledger, chain, T0, "test"))
    assert not verification.ok and verification.first_broken_seq == 2
    [row] = [r for r in ledger.read(security_chain(T0)) if r.to_json()["detail"].get("chain") == chain]
    assert row.kind == VERIFICATION_FAILED_KIND
    assert row.to_json()["detail"]["firstBrokenRow"] == 2 and row.to_json()["detail"]["by"] == "test"
    [event] = [e for e in events if e["step"] == VERIFICATION_FAILED_KIND and e["seq"] == row.seq]
    assert event["signal"] == "chain_verification_failed"
    # Read again (the runbook's first step): the same break is not reported twice.
    assert not asyncio.run(verify_and_report(ledger, chain, T0, "test")).ok
    reports = [r for r in ledger.read(security_chain(T0)) if r.to_json()["detail"].get("chain") == chain]
    assert len(reports) == 1


def test_from_a_coroutine_the_observer_is_told_on_the_event_loop_not_in_a_worker_thread(
    service: TableServiceClient,
) -> None:
    """The Functions worker forwards a log record only from the invocation's task (or its own pool)."""
    threads: list[str] = []

    def observer(row: AuditRow, started_at: datetime | None, labels: Mapping[str, object]) -> None:
        threads.append(threading.current_thread().name)

    ledger = AuditLedger(service, "sha256:" + "a" * 64, "sha256:" + "b" * 64, observer=observer)
    chain = chain_id()

    async def main() -> str:
        await ledger.append_async(chain, entry(0), seq=0)
        await ledger.append_async(chain, entry(0), seq=0)  # found written: not told again
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert threads == [loop_thread]
