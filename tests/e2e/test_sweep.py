"""End to end: the sweep's timer function in the real function_app on the devhost, run on demand through the
Functions admin endpoint (``POST /admin/functions/sweep``), twice at once, against the Graph and Teams
simulators. Outcomes are read from the simulator's stores, the IAM conversation, the grant ledger and the
day's sweep chain.

The sweep removes every expired grant it finds, and the grant ledger's table is shared by every test that
writes grants: this module runs the app on an Azurite of its own."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from azure.data.tables import TableServiceClient

from local.azurite import Azurite
from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from local.stack import DevhostProcess
from shared.audit import STATE_KIND, AuditEntry, AuditLedger, AuditRow
from shared.grants import Grant, GrantLedger
from shared.policy import load_policy
from shared.settings import DEFAULT_POLICY_PATH
from shared.sweep import SweepState, sweep_chain
from tests.e2e.conftest import app_host_in

pytestmark = pytest.mark.stack

POLICY = load_policy(DEFAULT_POLICY_PATH)
EXCHANGE_ADMIN = "29232cdf-9323-42fd-ade2-1d097af3e4de"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
REMOVE_PIM = "POST /roleManagement/directory/roleAssignmentScheduleRequests"
NEVER_DURING_THE_TEST = "0 0 0 1 1 *"  # yearly: the test runs the sweep itself


@pytest.fixture(scope="module")
def storage() -> Iterator[Azurite]:
    with Azurite() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, storage: Azurite,
         simulators: SimulatorProcess) -> Iterator[DevhostProcess]:  # fmt: skip
    process = app_host_in(tmp_path_factory.mktemp("sweep"), storage, **simulators.settings,
                          IDENTITY_ENDPOINT=simulators.url + TOKEN_PATH, IDENTITY_HEADER=IDENTITY_HEADER,
                          SWEEP_SCHEDULE=NEVER_DURING_THE_TEST)  # fmt: skip
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
def service(storage: Azurite) -> Iterator[TableServiceClient]:
    with TableServiceClient.from_connection_string(storage.connection_string) as client:
        yield client


def _z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_sweep_now(host: DevhostProcess) -> int:
    response = httpx.post(f"{host.url}/admin/functions/sweep", json={"input": ""},
                          headers={"x-functions-key": str(host.keys["master"])}, timeout=10)  # fmt: skip
    return response.status_code


def sweep_rows(ledger: AuditLedger, count: int, timeout: float = 60) -> list[AuditRow]:
    """The day's sweep chain once ``count`` runs have ended (each ends with sweep.run or sweep.skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = ledger.read(sweep_chain(datetime.now(UTC)))
        if sum(row.kind in ("sweep.run", "sweep.skipped") for row in rows) >= count:
            return rows
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{count} sweep runs did not end within {timeout} s: {[r.kind for r in rows]}"
            )
        time.sleep(0.25)


def test_the_sweep_function_uses_the_schedule_setting(host: DevhostProcess) -> None:
    status = httpx.get(f"{host.url}/admin/host/status", params={"code": host.keys["master"]}).json()
    [timer] = [t for t in status["timers"] if t["name"] == "sweep"]
    assert timer["schedule"] == NEVER_DURING_THE_TEST and timer["runOnStartup"] is False


def test_two_sweeps_at_once_remove_the_expired_grant_and_report_the_orphan_once(
    host: DevhostProcess, sim: SimulatorProcess, service: TableServiceClient
) -> None:
    now = datetime.now(UTC)
    alex = str(sim.seed("graph/users", {"userPrincipalName": "alex@contoso.test"})["id"])
    bob = str(sim.seed("graph/users", {"userPrincipalName": "bob@contoso.test"})["id"])
    # Alex's Exchange Administrator activation, whose grant expired a minute ago.
    sim.seed("graph/assignments", {"principalId": alex, "roleDefinitionId": EXCHANGE_ADMIN,
                                   "startDateTime": _z(now - timedelta(hours=1)),
                                   "endDateTime": _z(now + timedelta(hours=1))})  # fmt: skip
    request_id = f"servicenow-INC{uuid.uuid4().hex[:8]}-29232cdf-g1"
    ledger = AuditLedger(service, POLICY.version_hash, POLICY.file_hash)
    # Its record: a request that stopped and handed its grant to the sweep.
    ledger.append(request_id, AuditEntry(kind="intake.accepted", outcome="accepted", time=now))
    ledger.append(request_id, AuditEntry(STATE_KIND, "recorded", now, detail={"state": "removal_failed"}))
    grant = GrantLedger(service).record(Grant(
        grant_id=Grant.id_for(request_id, "pim"), request_id=request_id, responder_id=alex,
        responder_upn="alex@contoso.test", role_name="Exchange Administrator",
        role_template_id=EXCHANGE_ADMIN, path="pim", assignment_request_id=str(uuid.uuid4()),
        granted_at=now - timedelta(hours=1), expires_at=now - timedelta(minutes=1),
    ))  # fmt: skip
    # Bob's permanent Global Administrator assignment, which no request stands for.
    orphan: dict[str, Any] = sim.seed("graph/assignments", {
        "principalId": bob, "roleDefinitionId": GLOBAL_ADMIN, "assignmentType": "Assigned",
        "startDateTime": _z(now - timedelta(days=7)),
    })  # fmt: skip

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: run_sweep_now(host), range(2)))
    assert answers == [202, 202]

    rows = sweep_rows(ledger, 2)
    ran = [row for row in rows if row.kind == "sweep.run"]
    assert len(ran) == 1 and sum(row.kind == "sweep.skipped" for row in rows) == 1, [r.kind for r in rows]
    assert ran[0].fields["Outcome"] == "completed", ran[0].to_json()["detail"]
    # The request's access has ended: its record is verified (once).
    assert ran[0].to_json()["detail"]["chainsVerified"] == [request_id]

    assert GrantLedger(service).get(grant.grant_id).removal_state == "removed"
    ended = sim.pim_stores()["ended"]
    assert [(g["principalId"], g["reason"]) for g in ended] == [(alex, "adminRemove")]
    assert sim.calls_summary("graph").get(REMOVE_PIM) == 1

    messages = list(sim.teams_conversation(POLICY.escalation.iam_conversation_id)["activities"])
    assert len(messages) == 1
    [drift] = [row for row in rows if row.kind == "sweep.drift"]
    detail = drift.to_json()["detail"]
    assert (drift.fields["ActorId"], detail["assignmentId"]) == (bob, orphan["roleAssignmentOriginId"])
    assert detail["role"] == "Global Administrator" and detail["source"] == "direct"

    assert ledger.verify(sweep_chain(datetime.now(UTC))).ok
    status = SweepState(service).status()
    assert status is not None and status.last_outcome == "completed"
    assert status.last_summary["removed"] == 1 and status.last_summary["driftReported"] == 1
