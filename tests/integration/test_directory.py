"""The Entra directory adapter (msgraph-sdk) against the Graph simulator, with the managed-identity
credential the app uses in Azure, pointed at the simulator's App Service token endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from azure.identity import ManagedIdentityCredential

from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from shared.directory import DirectoryError, EntraDirectory, graph_client

pytestmark = pytest.mark.stack

EXCHANGE_ADMIN = "29232cdf-9323-42fd-ade2-1d097af3e4de"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _managed_identity(sim: SimulatorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.url + TOKEN_PATH)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)


def run(sim: SimulatorProcess, work: Callable[[EntraDirectory], Awaitable[T]]) -> T:
    async def main() -> T:  # the SDK's httpx client belongs to one event loop
        return await work(EntraDirectory(graph_client(sim.graph_base_url, ManagedIdentityCredential())))

    return asyncio.run(main())


def seed_alex(sim: SimulatorProcess) -> dict[str, Any]:
    spec = {"userPrincipalName": "alex@contoso.test", "mail": "alex.ops@contoso.test", "displayName": "Alex"}
    user: dict[str, Any] = sim.seed("graph/users", spec)
    return user


def test_finds_a_user_by_exact_upn_or_mail_with_correlation_ids(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    by_upn = run(sim, lambda d: d.find_user("alex@contoso.test"))
    by_mail = run(sim, lambda d: d.find_user("alex.ops@contoso.test"))
    assert by_upn.value is not None and by_upn.value.id == alex["id"]
    assert by_mail.value is not None and by_mail.value.user_principal_name == "alex@contoso.test"
    recorded = sim.calls("graph", path_contains="/users")
    assert [c["client_request_id"] for c in recorded] == [
        by_upn.call.client_request_id,
        by_mail.call.client_request_id,
    ]
    assert by_upn.call.request_id and by_upn.call.status == 200
    assert by_upn.call.method == "GET" and by_upn.call.path == "/users"


def test_an_unknown_user_is_none_and_no_fuzzy_match(sim: SimulatorProcess) -> None:
    seed_alex(sim)
    assert run(sim, lambda d: d.find_user("alex@contoso.tes")).value is None
    assert run(sim, lambda d: d.find_user("ALEX@contoso.test")).value is not None  # UPNs ignore case


def test_an_identifier_that_could_change_the_filter_is_refused(sim: SimulatorProcess) -> None:
    with pytest.raises(ValueError, match="not a user principal name"):
        run(sim, lambda d: d.find_user("x' or userPrincipalName eq 'admin@contoso.test"))
    assert sim.calls("graph") == []


def test_member_groups_are_resolved_transitively(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    leads = sim.seed("graph/groups", {"displayName": "On-call leads", "members": [alex["id"]]})
    responders = sim.seed("graph/groups", {"displayName": "Responders", "members": [leads["id"]]})
    other = sim.seed("graph/groups", {"displayName": "Other"})
    found = run(sim, lambda d: d.member_groups(alex["id"], [responders["id"], other["id"]]))
    assert found.value == {responders["id"].lower()}
    assert found.call.path == f"/users/{alex['id']}/checkMemberGroups"


def test_eligibility_assignments_and_pending_requests_for_a_role(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    sim.seed("graph/eligibility", {"principalId": alex["id"], "roleDefinitionId": EXCHANGE_ADMIN})
    sim.seed("graph/eligibility", {"principalId": alex["id"], "roleDefinitionId": GLOBAL_ADMIN})
    sim.seed("graph/assignments", {"principalId": alex["id"], "roleDefinitionId": EXCHANGE_ADMIN,
                                   "assignmentType": "Activated"})  # fmt: skip
    sim.seed("graph/requests", {"principalId": alex["id"], "roleDefinitionId": EXCHANGE_ADMIN,
                                "status": "PendingProvisioning"})  # fmt: skip
    sim.seed("graph/requests", {"principalId": alex["id"], "roleDefinitionId": EXCHANGE_ADMIN,
                                "status": "Provisioned"})  # fmt: skip

    async def work(d: EntraDirectory) -> tuple[Any, Any, Any]:
        user, role = alex["id"], EXCHANGE_ADMIN
        return (await d.role_eligibilities(user, role), await d.active_assignments(user, role),
                await d.pending_requests(user, role))  # fmt: skip

    eligible, active, pending = run(sim, work)
    assert [(e.principal_id, e.role_definition_id) for e in eligible.value] == [(alex["id"], EXCHANGE_ADMIN)]
    assert [a.kind for a in active.value] == ["Activated"]
    assert [p.kind for p in pending.value] == ["PendingProvisioning"]


def test_a_graph_error_carries_its_code_status_and_ids(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    sim.control("POST", "faults", json={"service": "graph", "path_contains": "roleEligibilitySchedule",
                                        "status": 403, "code": "Authorization_RequestDenied"})  # fmt: skip
    with pytest.raises(DirectoryError) as failure:
        run(sim, lambda d: d.role_eligibilities(alex["id"], EXCHANGE_ADMIN))
    error = failure.value
    assert error.code == "Authorization_RequestDenied"
    assert error.call.status == 403 and not error.transient
    assert error.call.request_id and error.call.client_request_id
    assert "Authorization_RequestDenied" in str(error)


def test_an_apostrophe_in_an_address_is_escaped_not_refused(sim: SimulatorProcess) -> None:
    sim.seed("graph/users", {"userPrincipalName": "o'brien@contoso.test"})
    assert run(sim, lambda d: d.find_user("o'brien@contoso.test")).value is not None


def test_a_granted_request_is_still_pending(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    sim.seed(
        "graph/requests", {"principalId": alex["id"], "roleDefinitionId": EXCHANGE_ADMIN, "status": "Granted"}
    )
    pending = run(sim, lambda d: d.pending_requests(alex["id"], EXCHANGE_ADMIN))
    assert [p.kind for p in pending.value] == ["Granted"]
