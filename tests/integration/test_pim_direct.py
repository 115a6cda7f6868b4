"""The break-glass path (a direct unified RBAC assignment) and the tenant-wide role holders, through the PIM
adapter and msgraph-sdk against the Graph simulator process, with the app's managed-identity credential."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from azure.identity import ManagedIdentityCredential

from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from shared.directory import EntraDirectory, graph_client
from shared.pim import Pim, RoleHolder

pytestmark = pytest.mark.stack

GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
UNIFIED_PATH = "/roleManagement/directory/roleAssignments"
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _managed_identity(sim: SimulatorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.url + TOKEN_PATH)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)


def run(sim: SimulatorProcess, work: Callable[[Pim], Awaitable[T]]) -> T:
    async def main() -> T:  # the SDK's httpx client belongs to one event loop
        directory = EntraDirectory(graph_client(sim.graph_base_url, ManagedIdentityCredential()))
        return await work(Pim(directory))

    return asyncio.run(main())


def seed_user(sim: SimulatorProcess, name: str) -> str:
    user: dict[str, Any] = sim.seed("graph/users", {"userPrincipalName": f"{name}@contoso.test"})
    return str(user["id"])


def grants(sim: SimulatorProcess) -> list[dict[str, Any]]:
    return list(sim.pim_stores()["grants"])


def test_a_direct_assignment_is_in_the_unified_store_with_its_id(sim: SimulatorProcess) -> None:
    alex = seed_user(sim, "alex")
    answer = run(sim, lambda pim: pim.assign_direct(alex, GLOBAL_ADMIN))
    assert answer.verdict == "done" and answer.assignment_id
    assert (answer.call.method, answer.call.path, answer.call.status) == ("POST", UNIFIED_PATH, 201)
    assert answer.to_json()["requestId"] == answer.assignment_id
    assert run(sim, lambda pim: pim.unified_assignments(alex, GLOBAL_ADMIN)).value == [answer.assignment_id]
    [grant] = grants(sim)
    assert (grant["id"], grant["origin"], grant["endDateTime"]) == (answer.assignment_id, "direct", None)


def test_a_second_direct_assignment_is_exists_and_names_the_first(sim: SimulatorProcess) -> None:
    alex = seed_user(sim, "alex")
    first = run(sim, lambda pim: pim.assign_direct(alex, GLOBAL_ADMIN))
    second = run(sim, lambda pim: pim.assign_direct(alex, GLOBAL_ADMIN))
    assert second.verdict == "exists" and not second.retryable
    assert second.assignment_id == first.assignment_id
    assert second.call.status == 400 and second.code == "Request_BadRequest"
    assert len(grants(sim)) == 1


def test_a_second_removal_is_absent(sim: SimulatorProcess) -> None:
    alex = seed_user(sim, "alex")
    assignment_id = run(sim, lambda pim: pim.assign_direct(alex, GLOBAL_ADMIN)).assignment_id
    removed = run(sim, lambda pim: pim.remove_direct(assignment_id))
    again = run(sim, lambda pim: pim.remove_direct(assignment_id))
    assert (removed.verdict, removed.call.method, removed.call.status) == ("done", "DELETE", 204)
    assert removed.call.path == f"{UNIFIED_PATH}/{assignment_id}"
    assert (again.verdict, again.call.status, again.assignment_id) == ("absent", 404, assignment_id)
    assert grants(sim) == [] and sim.pim_stores()["ended"][0]["reason"] == "deleted"


def test_an_assignment_id_that_could_change_the_path_is_refused(sim: SimulatorProcess) -> None:
    with pytest.raises(ValueError, match="not a role assignment id"):
        run(sim, lambda pim: pim.remove_direct("x/../../users"))
    assert sim.calls("graph") == []


def test_role_holders_name_each_holder_once_with_its_path(sim: SimulatorProcess) -> None:
    alex, sam = seed_user(sim, "alex"), seed_user(sim, "sam")
    sim.pim_behaviour(roleDefinitionId=GLOBAL_ADMIN, minimumActiveSeconds=0)

    async def grant_both(pim: Pim) -> tuple[str, str]:
        activated = await pim.assign(alex, GLOBAL_ADMIN, timedelta(hours=1), "INC1", "INC1", "ServiceNow")
        direct = await pim.assign_direct(sam, GLOBAL_ADMIN)
        assert (activated.verdict, direct.verdict) == ("done", "done")
        return (await pim.pim_instances(alex, GLOBAL_ADMIN)).value[0], direct.assignment_id

    instance_id, assignment_id = run(sim, grant_both)
    # PIM lists the direct assignment as well (an Assigned instance without an end): still one holder each.
    stores = sim.pim_stores()["stores"]
    assert sorted(g["principalId"] for g in stores["pim"]) == sorted([alex, sam])
    holders = run(sim, lambda pim: pim.role_holders(GLOBAL_ADMIN))
    assert sorted(holders.value, key=lambda h: h.source) == [
        RoleHolder(sam, "direct", assignment_id),
        RoleHolder(alex, "pim", instance_id),
    ]
    assert (holders.call.method, holders.call.path, holders.call.status) == ("GET", UNIFIED_PATH, 200)

    async def remove_both(pim: Pim) -> None:
        assert (await pim.remove(alex, GLOBAL_ADMIN, "INC1 resolved")).verdict == "done"
        assert (await pim.remove_direct(assignment_id)).verdict == "done"

    run(sim, remove_both)
    assert run(sim, lambda pim: pim.role_holders(GLOBAL_ADMIN)).value == []


def test_role_holders_follow_every_page(sim: SimulatorProcess) -> None:
    users = sim.seed("graph/users", [{"userPrincipalName": f"user{n}@contoso.test"} for n in range(105)])
    people = [str(u["id"]).lower() for u in users]
    sim.seed("graph/assignments", [{"principalId": p, "roleDefinitionId": GLOBAL_ADMIN} for p in people])
    found = run(sim, lambda pim: pim.role_holders(GLOBAL_ADMIN)).value
    # Seeded assignments are PIM activations (with an end): one pim holder each, beyond Graph's first page.
    assert sorted(h.principal_id for h in found) == sorted(people)
    assert {h.source for h in found} == {"pim"}
    assert sim.calls_summary("graph", method="GET") == {
        "GET /roleManagement/directory/roleAssignmentScheduleInstances": 2,
        f"GET {UNIFIED_PATH}": 2,
    }


def test_a_503_after_the_post_took_effect_is_unavailable_then_exists(sim: SimulatorProcess) -> None:
    alex = seed_user(sim, "alex")
    sim.fault(service="graph", path_contains=UNIFIED_PATH, method="POST", status=503, after=True)
    first = run(sim, lambda pim: pim.assign_direct(alex, GLOBAL_ADMIN))
    assert (first.verdict, first.call.status, first.assignment_id) == ("unavailable", 503, "")
    assert first.retryable
    # The SDK did not resend the POST: the workflow's retry meets the first POST's assignment.
    assert sim.calls_summary("graph", method="POST") == {f"POST {UNIFIED_PATH}": 1}
    second = run(sim, lambda pim: pim.assign_direct(alex, GLOBAL_ADMIN))
    [grant] = grants(sim)
    assert second.verdict == "exists" and second.assignment_id == grant["id"]
    assert grant["origin"] == "direct"
