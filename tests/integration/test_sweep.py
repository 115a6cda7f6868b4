"""The expiry sweep (shared.sweep) against Azurite and the Graph and Teams simulators over real HTTP: the
real grant ledger, PIM adapter, Bot Connector client and audit ledger.

The grant ledger's table is shared by every test that writes grants, and the sweep removes whatever is past
its expiry: this module runs on an Azurite of its own, emptied before each test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.identity import ManagedIdentityCredential

from local.azurite import Azurite
from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from shared.audit import (
    ROWS_TABLE,
    STATE_KIND,
    VERIFICATION_FAILED_KIND,
    AuditEntry,
    AuditLedger,
    AuditRow,
    security_chain,
)
from shared.directory import EntraDirectory, graph_client
from shared.grants import GRANTS_TABLE, Grant, GrantConflictError, GrantLedger, GrantPath, RemovalState
from shared.pim import Pim, PimAnswer
from shared.policy import load_policy
from shared.settings import DEFAULT_POLICY_PATH
from shared.sweep import SWEEP_TABLE, Sweep, SweepState, SweepSummary, sweep_chain
from shared.teams import BotConnector

pytestmark = pytest.mark.stack

POLICY = load_policy(DEFAULT_POLICY_PATH)
IAM = POLICY.escalation.iam_conversation_id
EXCHANGE_ADMIN = "29232cdf-9323-42fd-ade2-1d097af3e4de"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
BOT = "66666666-7777-4888-9999-000000000000"
TENANT = "11111111-2222-4333-8444-555555555555"
REMOVE_PIM = "POST /roleManagement/directory/roleAssignmentScheduleRequests"
REMOVE_DIRECT = "DELETE /roleManagement/directory/roleAssignments/{id}"
TABLES = (GRANTS_TABLE, SWEEP_TABLE, "AuditRows", "AuditHeads")


@pytest.fixture(scope="module")
def storage() -> Iterator[Azurite]:
    with Azurite() as emulator:
        yield emulator


@pytest.fixture
def service(storage: Azurite) -> Iterator[TableServiceClient]:
    with TableServiceClient.from_connection_string(storage.connection_string) as client:
        existing = {table.name for table in client.list_tables()}
        for name in existing.intersection(TABLES):
            table = client.get_table_client(name)
            for entity in list(table.list_entities()):
                table.delete_entity(entity["PartitionKey"], entity["RowKey"])
        yield client


@pytest.fixture(autouse=True)
def _managed_identity(sim: SimulatorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.url + TOKEN_PATH)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)


@pytest.fixture
def world(sim: SimulatorProcess, service: TableServiceClient) -> World:
    return World(sim, service)


@dataclass
class World:
    sim: SimulatorProcess
    service: TableServiceClient

    @property
    def ledger(self) -> GrantLedger:
        return GrantLedger(self.service)

    @property
    def audit(self) -> AuditLedger:
        return AuditLedger(self.service, POLICY.version_hash, POLICY.file_hash)

    def user(self, name: str) -> str:
        return str(self.sim.seed("graph/users", {"userPrincipalName": f"{name}@contoso.test"})["id"])

    def assignment(self, principal: str, role: str, *, started: timedelta, lasts: timedelta | None,
                   kind: str = "Activated") -> dict[str, Any]:  # fmt: skip
        """An assignment Graph already shows: a PIM activation (with an end) or a permanent one."""
        now = datetime.now(UTC)
        spec: dict[str, Any] = {"principalId": principal, "roleDefinitionId": role, "assignmentType": kind,
                                "startDateTime": _z(now - started)}  # fmt: skip
        if lasts is not None:
            spec["endDateTime"] = _z(now - started + lasts)
        seeded: dict[str, Any] = self.sim.seed("graph/assignments", spec)
        return seeded

    def grant(self, principal: str, role: str, *, expires_in: timedelta, path: GrantPath = "pim",
              assignment_id: str | None = None, state: RemovalState = "active",
              granted_ago: timedelta = timedelta(hours=1),
              request_state: str = "removal_failed") -> Grant:  # fmt: skip
        request_id = f"servicenow-INC{uuid.uuid4().hex[:8]}-{role[:8]}-g1"
        now = datetime.now(UTC)
        grant = Grant(
            grant_id=Grant.id_for(request_id, path), request_id=request_id, responder_id=principal,
            responder_upn=f"{principal[:8]}@contoso.test",
            role_name=next(r.name for r in POLICY.roles if r.template_id == role), role_template_id=role,
            path=path, assignment_request_id=str(uuid.uuid4()) if assignment_id is None else assignment_id,
            granted_at=now - granted_ago, expires_at=now + expires_in,
        )  # fmt: skip
        # The request's record, ended (by default, as a request that handed its grant to the sweep): the sweep
        # verifies it once the access has ended.
        self.audit.append(request_id, AuditEntry(kind="intake.accepted", outcome="accepted", time=now))
        self.state(request_id, request_state)
        recorded = self.ledger.record(grant)
        if state != "active":
            recorded = self.ledger.set_removal_state(grant.grant_id, state, now, "set up by the test")
        return recorded

    def state(self, request_id: str, state: str) -> None:
        now = datetime.now(UTC)
        self.audit.append(request_id, AuditEntry(STATE_KIND, "recorded", now, detail={"state": state}))

    def direct(self, principal: str, role: str) -> str:
        """A break-glass grant's assignment, made through the PIM adapter's direct path."""
        answer = _on_loop(self.sim, lambda pim: pim.assign_direct(principal, role))
        assert answer.verdict == "done", answer
        return answer.assignment_id

    def sweep(self, pim: Pim, connector: BotConnector, *, lease: str = "sweep", ledger: Any = None,
              graph: Any = None, read_back_waits: tuple[float, ...] = (0.0, 0.5)) -> Sweep:  # fmt: skip
        return Sweep(
            ledger=ledger or self.ledger, graph=graph or pim, notifier=connector, audit=self.audit,
            state=SweepState(self.service, lease_name=lease),
            roles={role.template_id: role.name for role in POLICY.roles}, iam_conversation_id=IAM,
            drift_recheck_delay=timedelta(0), read_back_waits=read_back_waits,
        )  # fmt: skip

    def run(self, count: int = 1, leases: tuple[str, ...] = (), **options: Any) -> list[SweepSummary]:
        """``count`` sweep runs started at the same moment (each with its own Graph and Teams clients), on
        the one lease unless ``leases`` names one per run."""

        async def main() -> list[SweepSummary]:
            sweeps = []
            for index in range(count):
                pim = Pim(EntraDirectory(graph_client(self.sim.graph_base_url, ManagedIdentityCredential())))
                connector = BotConnector(self.sim.teams_base_url, ManagedIdentityCredential(client_id=BOT),
                                         BOT, TENANT)  # fmt: skip
                lease = leases[index] if leases else "sweep"
                sweeps.append((self.sweep(pim, connector, lease=lease, **options), connector))
            try:
                return list(await asyncio.gather(*(sweep.run() for sweep, _ in sweeps)))
            finally:
                for _, connector in sweeps:
                    await connector.aclose()

        return asyncio.run(main())

    def rows(self, kind: str | None = None) -> list[AuditRow]:
        rows = self.audit.read(sweep_chain(datetime.now(UTC)))
        return [row for row in rows if kind is None or row.kind == kind]

    def iam_messages(self) -> list[dict[str, Any]]:
        try:
            conversation = self.sim.teams_conversation(IAM)
        except RuntimeError:  # no message was ever sent there
            return []
        activities = conversation["activities"]
        return list(activities.values() if isinstance(activities, dict) else activities)

    def removal_calls(self) -> dict[str, int]:
        counts = self.sim.calls_summary("graph")
        return {name: counts.get(name, 0) for name in (REMOVE_PIM, REMOVE_DIRECT)}

    def chain_verifies(self) -> bool:
        return self.audit.verify(sweep_chain(datetime.now(UTC))).ok


def _on_loop(sim: SimulatorProcess, work: Callable[[Pim], Awaitable[PimAnswer]]) -> PimAnswer:
    async def main() -> PimAnswer:  # the SDK's httpx client belongs to one event loop
        return await work(Pim(EntraDirectory(graph_client(sim.graph_base_url, ManagedIdentityCredential()))))

    return asyncio.run(main())


def _z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ended(sim: SimulatorProcess) -> dict[str, str]:
    """Principal -> why its assignment ended, as the Graph simulator recorded it."""
    return {str(g["principalId"]): str(g["reason"]) for g in sim.pim_stores()["ended"]}


def _one(summaries: list[SweepSummary]) -> SweepSummary:
    [summary] = summaries
    return summary


# --- removals ------------------------------------------------------------------------------------------


def test_a_pim_grant_past_its_expiry_is_removed_and_confirmed(world: World) -> None:
    alex = world.user("alex")
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))
    grant = world.grant(alex, EXCHANGE_ADMIN, expires_in=-timedelta(minutes=1))

    summary = _one(world.run())

    assert (summary.outcome, summary.removed, summary.still_failing) == ("completed", (grant.grant_id,), ())
    stored = world.ledger.get(grant.grant_id)
    assert (stored.removal_state, stored.removal_detail) == (
        "removed",
        "sweep: removal confirmed by read-back",
    )
    assert _ended(world.sim) == {alex: "adminRemove"}
    [row] = world.rows("sweep.removed")
    assert (row.fields["GraphMethod"], row.fields["GraphStatus"]) == ("POST", 201)
    assert row.fields["GraphPath"] == "/roleManagement/directory/roleAssignmentScheduleRequests"
    assert row.fields["GraphRequestId"] and row.fields["ActorId"] == alex
    detail = row.to_json()["detail"]
    assert (detail["grantId"], detail["verdict"], detail["runId"]) == (grant.grant_id, "done", summary.run_id)
    assert [look["stores"][0]["ids"] for look in detail["readBack"]] == [[]]
    assert world.chain_verifies()


def test_a_break_glass_grant_is_removed_by_deleting_its_assignment(world: World) -> None:
    alex = world.user("alex")
    assignment_id = world.direct(alex, GLOBAL_ADMIN)
    grant = world.grant(alex, GLOBAL_ADMIN, expires_in=-timedelta(minutes=1), path="break_glass",
                        assignment_id=assignment_id)  # fmt: skip

    summary = _one(world.run())

    assert summary.removed == (grant.grant_id,)
    assert world.ledger.get(grant.grant_id).removal_state == "removed"
    assert world.removal_calls() == {REMOVE_PIM: 0, REMOVE_DIRECT: 1}
    assert _ended(world.sim) == {alex: "deleted"}
    [row] = world.rows("sweep.removed")
    assert (row.fields["GraphMethod"], row.fields["GraphStatus"]) == ("DELETE", 204)
    assert row.fields["GraphPath"] == f"/roleManagement/directory/roleAssignments/{assignment_id}"


def test_a_break_glass_grant_recorded_without_its_assignment_id_is_found_and_removed(world: World) -> None:
    alex, bob = world.user("alex"), world.user("bob")
    world.direct(alex, GLOBAL_ADMIN)
    world.assignment(bob, GLOBAL_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))
    grant = world.grant(alex, GLOBAL_ADMIN, expires_in=-timedelta(minutes=1), path="break_glass",
                        assignment_id="")  # fmt: skip
    assert grant.assignment_request_id == ""

    summary = _one(world.run())

    assert summary.removed == (grant.grant_id,)
    assert world.removal_calls() == {REMOVE_PIM: 0, REMOVE_DIRECT: 1}
    assert _ended(world.sim) == {alex: "deleted"}  # bob's activation is no business of this grant


def test_an_old_failed_grant_never_removes_a_later_requests_access_to_the_same_role(world: World) -> None:
    alex = world.user("alex")
    old = world.grant(alex, EXCHANGE_ADMIN, expires_in=-timedelta(hours=1), granted_ago=timedelta(hours=3),
                      state="removal_failed")  # fmt: skip
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(minutes=10), lasts=timedelta(hours=1))
    current = world.grant(
        alex, EXCHANGE_ADMIN, expires_in=timedelta(minutes=50), granted_ago=timedelta(minutes=10)
    )

    summary = _one(world.run())

    assert summary.removed == () and old.grant_id in summary.skipped
    assert world.ledger.get(old.grant_id).removal_state == "removed"
    assert world.ledger.get(current.grant_id) == current
    assert world.removal_calls() == {REMOVE_PIM: 0, REMOVE_DIRECT: 0}
    assert _ended(world.sim) == {}  # the later request's activation is untouched
    assert len(world.rows("sweep.removal_superseded")) == 1


def test_a_grant_not_yet_expired_is_left_alone(world: World) -> None:
    alex = world.user("alex")
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(minutes=10), lasts=timedelta(hours=1))
    grant = world.grant(alex, EXCHANGE_ADMIN, expires_in=timedelta(minutes=50))
    scheduled = world.grant(world.user("sam"), EXCHANGE_ADMIN, expires_in=timedelta(minutes=50),
                            state="removal_scheduled")  # fmt: skip

    summary = _one(world.run())

    assert summary.removed == summary.still_failing == summary.deferred == summary.skipped == ()
    assert summary.drift_reported == ()  # the holder is known to the ledger
    assert world.ledger.get(grant.grant_id) == grant
    assert world.ledger.get(scheduled.grant_id) == scheduled
    assert world.removal_calls() == {REMOVE_PIM: 0, REMOVE_DIRECT: 0}
    assert _ended(world.sim) == {}


def test_a_removal_pim_refuses_as_too_soon_is_left_for_the_next_run(world: World) -> None:
    world.sim.pim_behaviour(roleDefinitionId=EXCHANGE_ADMIN, minimumActiveSeconds=2)
    alex = world.user("alex")
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(0), lasts=timedelta(hours=1))
    grant = world.grant(alex, EXCHANGE_ADMIN, expires_in=-timedelta(minutes=1))

    first = _one(world.run())

    assert (first.deferred, first.removed, first.still_failing) == ((grant.grant_id,), (), ())
    assert world.ledger.get(grant.grant_id) == grant  # unchanged: nothing failed
    [deferred] = world.rows("sweep.removal_deferred")
    assert deferred.to_json()["detail"]["code"] == "ActiveDurationTooShort"
    assert _ended(world.sim) == {}

    world.sim.control("POST", "graph/pim-behaviour", json={"roleDefinitionId": EXCHANGE_ADMIN,
                                                           "minimumActiveSeconds": 0})  # fmt: skip
    second = _one(world.run())

    assert second.removed == (grant.grant_id,)
    assert world.ledger.get(grant.grant_id).removal_state == "removed"
    assert _ended(world.sim) == {alex: "adminRemove"}


def test_a_grant_the_request_revokes_meanwhile_is_not_overwritten(world: World) -> None:
    alex = world.user("alex")
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))
    grant = world.grant(alex, EXCHANGE_ADMIN, expires_in=-timedelta(minutes=1))

    class RequestRevokesFirst:
        """PIM, with the request's own revocation landing while the sweep's removal is on its way."""

        def __init__(self, pim: Pim) -> None:
            self._pim = pim

        async def remove(self, principal_id: str, role_template_id: str, justification: str) -> PimAnswer:
            world.ledger.set_removal_state(grant.grant_id, "removal_failed", datetime.now(UTC),
                                           "request: read-back still shows it")  # fmt: skip
            return await self._pim.remove(principal_id, role_template_id, justification)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._pim, name)

    async def main() -> SweepSummary:
        pim = Pim(EntraDirectory(graph_client(world.sim.graph_base_url, ManagedIdentityCredential())))
        async with BotConnector(world.sim.teams_base_url, ManagedIdentityCredential(client_id=BOT), BOT,
                                TENANT) as connector:  # fmt: skip
            return await world.sweep(pim, connector, graph=RequestRevokesFirst(pim)).run()

    summary = asyncio.run(main())

    assert (summary.skipped, summary.removed, summary.still_failing) == ((grant.grant_id,), (), ())
    stored = world.ledger.get(grant.grant_id)
    assert (stored.removal_state, stored.removal_detail) == (
        "removal_failed",
        "request: read-back still shows it",
    )
    [row] = world.rows("sweep.removal_superseded")
    assert "changed while the sweep removed it" in row.to_json()["detail"]["conflict"]


def test_a_grant_conflict_on_the_ledger_write_is_skipped(world: World) -> None:
    alex = world.user("alex")
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))
    grant = world.grant(alex, EXCHANGE_ADMIN, expires_in=-timedelta(minutes=1))

    class RacedLedger(GrantLedger):
        """The ETag check losing to another writer between the sweep's last look and its write."""

        def set_removal_state(
            self, grant_id: str, state: RemovalState, at: datetime, detail: str = ""
        ) -> Grant:
            super().set_removal_state(grant_id, "removed", at, "another sweep run")
            raise GrantConflictError(f"grant {grant_id} changed while it was being updated")

    summary = _one(world.run(ledger=RacedLedger(world.service)))

    assert (summary.skipped, summary.removed) == ((grant.grant_id,), ())
    assert world.ledger.get(grant.grant_id).removal_detail == "another sweep run"
    assert len(world.rows("sweep.removal_superseded")) == 1


def test_a_graph_503_on_read_back_fails_the_removal_and_the_next_run_completes_it(world: World) -> None:
    alex = world.user("alex")
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))
    grant = world.grant(alex, EXCHANGE_ADMIN, expires_in=-timedelta(minutes=1))
    # The first read-back look: the SDK's GET and its three retries all answer 503.
    world.sim.fault(service="graph", method="GET", path_contains="roleAssignmentScheduleInstances",
                    status=503, count=4, retry_after=1)  # fmt: skip

    first = _one(world.run(read_back_waits=(0.0,)))

    assert (first.outcome, first.still_failing, first.removed) == (
        "completed_with_errors",
        (grant.grant_id,),
        (),
    )
    failed = world.ledger.get(grant.grant_id)
    assert failed.removal_state == "removal_failed"
    assert failed.removal_detail.startswith("sweep: read-back failed: ") and "503" in failed.removal_detail
    [row] = world.rows("sweep.removal_failed")
    assert row.to_json()["detail"]["readBack"][0]["graph"]["status"] == 503
    assert SweepState(world.service).status().last_outcome == "completed_with_errors"  # type: ignore[union-attr]

    second = _one(world.run())

    assert (second.outcome, second.removed) == ("completed", (grant.grant_id,))
    assert world.ledger.get(grant.grant_id).removal_state == "removed"
    [again] = world.rows("sweep.removed")
    assert again.to_json()["detail"]["verdict"] == "absent"  # the first run's removal had taken effect
    assert world.removal_calls()[REMOVE_PIM] == 2
    assert world.chain_verifies()


# --- drift ---------------------------------------------------------------------------------------------


def test_drift_is_reported_once_across_runs(world: World) -> None:
    bob, carol = world.user("bob"), world.user("carol")
    activation = world.assignment(bob, GLOBAL_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))
    permanent = world.assignment(
        carol, EXCHANGE_ADMIN, started=timedelta(days=30), lasts=None, kind="Assigned"
    )

    first = _one(world.run())
    second = _one(world.run())

    reported = {(r.principal_id, r.role_template_id, r.source, r.assignment_id) for r in first.drift_reported}
    assert reported == {
        (bob, GLOBAL_ADMIN, "pim", activation["id"]),
        (carol, EXCHANGE_ADMIN, "direct", permanent["roleAssignmentOriginId"]),
    }
    assert second.drift_reported == ()
    messages = world.iam_messages()
    assert len(messages) == 2
    assert any(bob in m["text"] and "Global Administrator" in m["text"] for m in messages)
    rows = world.rows("sweep.drift")
    assert sorted(row.fields["ActorId"] for row in rows) == sorted([bob, carol])
    assert all(row.fields["Outcome"] == "reported" and row.fields["GraphRequestId"] for row in rows)
    assert world.chain_verifies()


def test_a_holder_the_ledger_knows_is_not_drift(world: World) -> None:
    alex = world.user("alex")
    world.assignment(alex, GLOBAL_ADMIN, started=timedelta(minutes=5), lasts=timedelta(hours=1))
    world.grant(alex, GLOBAL_ADMIN, expires_in=timedelta(minutes=55))
    assert _one(world.run()).drift_reported == ()
    assert world.iam_messages() == []


# --- overlapping runs ----------------------------------------------------------------------------------


def test_a_run_that_cannot_take_the_lease_records_skipped_and_does_nothing(world: World) -> None:
    alex = world.user("alex")
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))
    grant = world.grant(alex, EXCHANGE_ADMIN, expires_in=-timedelta(minutes=1))
    SweepState(world.service).claim_lease("a-run-on-another-host", datetime.now(UTC), timedelta(minutes=2))

    summary = _one(world.run())

    assert summary.outcome == "skipped"
    assert world.ledger.get(grant.grant_id).removal_state == "active"
    assert world.removal_calls() == {REMOVE_PIM: 0, REMOVE_DIRECT: 0}
    [row] = world.rows()
    assert (row.kind, row.to_json()["detail"]["holder"]) == ("sweep.skipped", "a-run-on-another-host")


def test_two_runs_started_at_once_remove_each_grant_once_and_report_drift_once(world: World) -> None:
    alex, sam, bob = world.user("alex"), world.user("sam"), world.user("bob")
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))
    expired = world.grant(alex, EXCHANGE_ADMIN, expires_in=-timedelta(minutes=1))
    glass = world.grant(sam, GLOBAL_ADMIN, expires_in=-timedelta(minutes=1), path="break_glass",
                        assignment_id=world.direct(sam, GLOBAL_ADMIN))  # fmt: skip
    world.assignment(bob, GLOBAL_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))

    summaries = world.run(count=2)

    assert sorted(s.outcome for s in summaries) == ["completed", "skipped"]
    [ran] = [s for s in summaries if s.outcome == "completed"]
    assert sorted(ran.removed) == sorted([expired.grant_id, glass.grant_id])
    assert world.removal_calls() == {REMOVE_PIM: 1, REMOVE_DIRECT: 1}
    assert len(world.iam_messages()) == 1
    assert sorted(row.kind for row in world.rows() if row.kind in ("sweep.run", "sweep.skipped")) == [
        "sweep.run", "sweep.skipped",
    ]  # fmt: skip
    status = SweepState(world.service).status()
    assert status is not None and (status.last_run_id, status.last_outcome) == (ran.run_id, "completed")
    assert world.chain_verifies()


def test_two_runs_that_both_act_agree_on_every_grant_and_report_drift_once(world: World) -> None:
    # As if one run outlived its lease: no lease keeps them apart, only the grant and drift claims.
    alex, bob = world.user("alex"), world.user("bob")
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))
    grant = world.grant(alex, EXCHANGE_ADMIN, expires_in=-timedelta(minutes=1))
    world.assignment(bob, GLOBAL_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))

    first, second = world.run(count=2, leases=("lease-a", "lease-b"))

    assert first.outcome == second.outcome == "completed"
    assert sorted([*first.removed, *second.removed]) == [grant.grant_id]
    assert sorted([*first.removed, *first.skipped, *second.removed, *second.skipped]) == [grant.grant_id] * 2
    assert world.ledger.get(grant.grant_id).removal_state == "removed"
    assert world.removal_calls() == {REMOVE_PIM: 1, REMOVE_DIRECT: 0}  # the grant claim let one run act
    assert len(first.drift_reported) + len(second.drift_reported) == 1
    assert len(world.iam_messages()) == 1
    assert world.chain_verifies()


# --- audit chains -------------------------------------------------------------------------------------------


def test_the_chain_of_a_request_whose_access_ended_is_verified_once(world: World) -> None:
    alex = world.user("alex")
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))
    expired = world.grant(alex, EXCHANGE_ADMIN, expires_in=-timedelta(minutes=1))  # the sweep removes it
    ended = world.grant(world.user("blake"), GLOBAL_ADMIN, expires_in=timedelta(hours=1), state="removed")
    running = world.grant(world.user("casey"), GLOBAL_ADMIN, expires_in=timedelta(hours=1))

    first = _one(world.run())
    assert first.outcome == "completed"
    assert sorted(first.chains_verified) == sorted([expired.request_id, ended.request_id])
    assert running.request_id not in first.chains_verified and first.chains_broken == ()
    # The next run's look-back overlaps this one's: what was verified is not verified again.
    assert _one(world.run()).chains_verified == ()


def test_a_changed_or_missing_record_is_reported_on_the_security_chain_once(world: World) -> None:
    edited = world.grant(world.user("alex"), GLOBAL_ADMIN, expires_in=timedelta(hours=1), state="removed")
    rows = world.service.get_table_client(ROWS_TABLE)
    row = dict(rows.get_entity(edited.request_id, f"{0:010d}"))
    rows.update_entity({**row, "Outcome": "rejected"})
    deleted = world.grant(world.user("blake"), GLOBAL_ADMIN, expires_in=timedelta(hours=1), state="removed")
    for row in list(rows.query_entities("PartitionKey eq @p", parameters={"p": deleted.request_id})):
        rows.delete_entity(row["PartitionKey"], row["RowKey"])
    world.service.get_table_client("AuditHeads").delete_entity(deleted.request_id, "head")

    summary = _one(world.run())
    assert summary.outcome == "completed_with_errors"
    assert sorted(summary.chains_broken) == sorted([edited.request_id, deleted.request_id])
    found = {
        row.to_json()["detail"]["chain"]: row.to_json()["detail"]
        for row in world.audit.read(security_chain(datetime.now(UTC)))
        if row.kind == VERIFICATION_FAILED_KIND
    }
    assert found[edited.request_id]["firstBrokenRow"] == 0 and found[edited.request_id]["by"] == "sweep"
    assert found[deleted.request_id]["reason"] == "the chain has no rows"
    assert _one(world.run()).chains_broken == ()  # reported once


def test_a_request_that_has_not_recorded_its_end_is_verified_later_and_holds_the_watermark(
    world: World,
) -> None:
    ending = world.grant(world.user("alex"), GLOBAL_ADMIN, expires_in=timedelta(hours=1), state="removed",
                         request_state="effective")  # fmt: skip
    assert _one(world.run()).chains_verified == ()
    held = SweepState(world.service).chains_verified_through()
    assert held is not None and held <= world.ledger.get(ending.grant_id).updated_at  # type: ignore[operator]

    world.state(ending.request_id, "revoked")  # the request records the end of its access
    assert _one(world.run()).chains_verified == (ending.request_id,)
    assert SweepState(world.service).chains_verified_through() > held  # type: ignore[operator]


def test_a_grant_within_the_grace_after_its_expiry_is_left_to_its_request(world: World) -> None:
    alex = world.user("alex")
    world.assignment(alex, EXCHANGE_ADMIN, started=timedelta(hours=1), lasts=timedelta(hours=2))
    grant = world.grant(alex, EXCHANGE_ADMIN, expires_in=-timedelta(seconds=1))  # the request removes it now

    summary = _one(world.run())

    assert (summary.removed, summary.deferred, summary.still_failing) == ((), (), ())
    assert world.ledger.get(grant.grant_id).removal_state == "active"
    assert world.removal_calls() == {REMOVE_PIM: 0, REMOVE_DIRECT: 0}
