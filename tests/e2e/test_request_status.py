"""End to end: GET /api/requests/{id} and /audit read the audit rows (seeded here through the ledger)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from azure.data.tables import TableServiceClient, UpdateMode

from local.azurite import Azurite
from local.stack import DevhostProcess
from shared.audit import ROWS_TABLE, STATE_KIND, AuditEntry, AuditLedger, GraphCall
from shared.policy import load_policy
from shared.settings import DEFAULT_POLICY_PATH

pytestmark = pytest.mark.stack

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
ELIGIBILITY = "/roleManagement/directory/roleEligibilityScheduleInstances"


def seed(azurite: Azurite) -> str:
    """A request chain as the access-request orchestration writes it (intake, a check, a state)."""
    request_id = f"servicenow-INC{uuid.uuid4().hex[:8]}-29232cdf-g1"
    policy = load_policy(DEFAULT_POLICY_PATH)
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        ledger = AuditLedger(service, policy.version_hash, policy.file_hash)
        ledger.append(request_id, AuditEntry("intake.accepted", "recorded", T0, detail={"ticket": "INC1"}), 0)
        ledger.append(request_id, AuditEntry(
            "validation.eligibility", "passed", T0 + timedelta(seconds=1), actor_id="system",
            role="Exchange Administrator",
            graph=GraphCall("GET", ELIGIBILITY, 200, "r-1", "c-1"),
        ), 1)  # fmt: skip
        ledger.append(request_id, AuditEntry(STATE_KIND, "recorded", T0 + timedelta(seconds=2),
                                             detail={"state": "validated"}), 2)  # fmt: skip
    return request_id


def get(host: DevhostProcess, path: str, key: str | None = "default") -> httpx.Response:
    params = {"code": host.function_key} if key == "default" else ({"code": key} if key else {})
    return httpx.get(f"{host.url}{path}", params=params, timeout=10)


def test_request_shows_its_state_and_timeline_from_the_audit_rows(
    app_host: DevhostProcess, azurite: Azurite
) -> None:
    request_id = seed(azurite)
    response = get(app_host, f"/api/requests/{request_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "validated"
    assert body["auditVerified"] is True
    assert [step["step"] for step in body["timeline"]] == [
        "intake.accepted",
        "validation.eligibility",
        STATE_KIND,
    ]
    eligibility = body["timeline"][1]
    assert eligibility["graph"]["request_id"] == "r-1"
    assert eligibility["role"] == "Exchange Administrator"


def test_audit_returns_rows_and_names_the_first_broken_row(
    app_host: DevhostProcess, azurite: Azurite
) -> None:
    request_id = seed(azurite)
    clean = get(app_host, f"/api/requests/{request_id}/audit").json()
    assert clean["verification"]["ok"] is True
    assert [row["seq"] for row in clean["rows"]] == [0, 1, 2]
    assert all(row["policy_version"].startswith("sha256:") for row in clean["rows"])

    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        table = service.get_table_client(ROWS_TABLE)
        row = dict(table.get_entity(request_id, f"{1:010d}"))
        row["Outcome"] = "failed"
        table.upsert_entity(row, mode=UpdateMode.REPLACE)
    tampered = get(app_host, f"/api/requests/{request_id}/audit").json()
    assert tampered["verification"]["ok"] is False
    assert tampered["verification"]["firstBrokenRow"] == 1
    assert get(app_host, f"/api/requests/{request_id}").json()["auditVerified"] is False


def test_unknown_and_malformed_request_ids(app_host: DevhostProcess) -> None:
    assert get(app_host, "/api/requests/servicenow-INC0-nothing-g1").status_code == 404
    assert get(app_host, "/api/requests/servicenow-INC0-nothing-g1/audit").status_code == 404
    assert get(app_host, "/api/requests/bad%20id'").status_code == 400


def test_request_endpoints_need_a_function_key(app_host: DevhostProcess) -> None:
    assert get(app_host, "/api/requests/anything", key=None).status_code == 401
    assert get(app_host, "/api/requests/anything/audit", key="wrong").status_code == 401
