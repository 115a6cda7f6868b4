"""The grant ledger against Azurite: create-only grants, outstanding list, ETag-guarded removal states."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from local.azurite import Azurite
from shared.grants import Grant, GrantConflictError, GrantLedger, UnknownGrantError

pytestmark = pytest.mark.stack

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
def ledger(azurite: Azurite) -> Iterator[GrantLedger]:
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        yield GrantLedger(service)


def new_grant(path: str = "pim") -> Grant:
    request_id = f"servicenow-INC{uuid.uuid4().hex[:8]}-29232cdf-g1"
    return Grant(
        grant_id=Grant.id_for(request_id, path),  # type: ignore[arg-type]
        request_id=request_id,
        responder_id="11111111-0000-0000-0000-000000000001",
        responder_upn="alex@contoso.example",
        role_name="Exchange Administrator",
        role_template_id="29232cdf-9323-42fd-ade2-1d097af3e4de",
        path=path,  # type: ignore[arg-type]
        assignment_request_id=str(uuid.uuid4()),
        granted_at=T0,
        expires_at=T0 + timedelta(hours=1),
    )


def test_a_recorded_grant_reads_back_and_is_outstanding(ledger: GrantLedger) -> None:
    grant = ledger.record(new_grant())
    assert ledger.get(grant.grant_id) == grant
    assert grant.grant_id in {g.grant_id for g in ledger.outstanding()}
    assert grant.is_past_expiry(T0 + timedelta(hours=1))
    assert not grant.is_past_expiry(T0 + timedelta(minutes=59))


def test_recording_the_same_grant_again_changes_nothing(ledger: GrantLedger) -> None:
    grant = ledger.record(new_grant())
    assert ledger.record(grant) == grant


def test_recording_other_values_under_the_same_id_is_refused(ledger: GrantLedger) -> None:
    grant = ledger.record(new_grant())
    with pytest.raises(GrantConflictError):
        ledger.record(replace(grant, assignment_request_id="another-request"))


def test_a_removed_grant_is_no_longer_outstanding(ledger: GrantLedger) -> None:
    grant = ledger.record(new_grant("break_glass"))
    ledger.set_removal_state(
        grant.grant_id, "removal_scheduled", T0 + timedelta(minutes=2), "PIM 5-minute minimum"
    )
    removed = ledger.set_removal_state(
        grant.grant_id, "removed", T0 + timedelta(minutes=6), "read back: absent"
    )
    assert removed.is_removed
    assert ledger.get(grant.grant_id).removal_detail == "read back: absent"
    assert grant.grant_id not in {g.grant_id for g in ledger.outstanding()}


def test_an_unknown_grant_is_named(ledger: GrantLedger) -> None:
    with pytest.raises(UnknownGrantError, match="no grant nothing:pim"):
        ledger.set_removal_state("nothing:pim", "removed", T0)


def test_removed_since_finds_the_grants_removed_at_or_after_a_moment(ledger: GrantLedger) -> None:
    earlier, exactly, later, active = (ledger.record(new_grant()) for _ in range(4))
    ledger.set_removal_state(earlier.grant_id, "removed", T0 - timedelta(microseconds=1))
    ledger.set_removal_state(exactly.grant_id, "removed", T0)  # isoformat() leaves its microseconds out
    ledger.set_removal_state(later.grant_id, "removed", T0 + timedelta(minutes=3, microseconds=5))
    ledger.set_removal_state(active.grant_id, "removal_failed", T0 + timedelta(minutes=1))
    found = {grant.grant_id for grant in ledger.removed_since(T0)}
    assert {exactly.grant_id, later.grant_id} <= found
    assert not {earlier.grant_id, active.grant_id} & found
