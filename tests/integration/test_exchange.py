"""The Exchange role-group adapter and probe against the simulators' Exchange admin API, over real HTTP, with
the managed-identity credential the app uses in Azure pointed at the simulators' token endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential

from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from shared.directory import DirectoryError
from shared.exchange import (
    EXCHANGE_SCOPE,
    ExchangeRoleGroups,
    UnknownRoleGroupError,
    exchange_role_group_probe,
    role_group_for,
)

pytestmark = pytest.mark.stack

TENANT = "11111111-2222-4333-8444-555555555555"
EXCHANGE_ADMIN = "29232cdf-9323-42fd-ade2-1d097af3e4de"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
INVOKE_PATH = f"/adminapi/beta/{TENANT}/InvokeCommand"
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _managed_identity(sim: SimulatorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.url + TOKEN_PATH)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)


class RecordingCredential(TokenCredential):
    """The real managed-identity credential, recording the scopes asked for (or failing, as told)."""

    def __init__(self, fail: bool = False) -> None:
        self.inner = ManagedIdentityCredential()
        self.scopes: list[tuple[str, ...]] = []
        self.fail = fail

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.scopes.append(scopes)
        if self.fail:
            raise ClientAuthenticationError("managed identity unavailable")
        token: AccessToken = self.inner.get_token(*scopes)
        return token


def run(
    sim: SimulatorProcess,
    work: Callable[[ExchangeRoleGroups], Awaitable[T]],
    credential: TokenCredential | None = None,
) -> T:
    async def main() -> T:  # the httpx client belongs to one event loop
        async with ExchangeRoleGroups(
            sim.exchange_base_url, TENANT, credential or RecordingCredential()
        ) as adapter:
            return await work(adapter)

    return asyncio.run(main())


def failure(sim: SimulatorProcess, work: Callable[[ExchangeRoleGroups], Awaitable[Any]]) -> DirectoryError:
    with pytest.raises(DirectoryError) as caught:
        run(sim, work)
    return caught.value


def probe(sim: SimulatorProcess, responder: str, role: str = EXCHANGE_ADMIN) -> dict[str, Any]:
    return run(sim, lambda adapter: exchange_role_group_probe(adapter, responder, role))


def seed_user(sim: SimulatorProcess, name: str) -> str:
    user = sim.seed("graph/users", {"userPrincipalName": f"{name}@contoso.test", "displayName": name.title()})
    return str(user["id"])


def activate(sim: SimulatorProcess, principal: str, role: str = EXCHANGE_ADMIN) -> None:
    """PIM ``adminAssign`` on the Graph simulator, as the activation stage submits it."""
    body = {
        "action": "adminAssign",
        "principalId": principal,
        "roleDefinitionId": role,
        "directoryScopeId": "/",
        "justification": "INC0010001: mail flow down",
        "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": "PT1H"}},
        "ticketInfo": {"ticketNumber": "INC0010001", "ticketSystem": "ServiceNow"},
    }
    response = httpx.post(
        f"{sim.graph_base_url}/roleManagement/directory/roleAssignmentScheduleRequests",
        json=body,
        headers={"Authorization": "Bearer test"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "Provisioned"


def test_the_responder_appears_in_organization_management_after_the_exchange_delay(
    sim: SimulatorProcess,
) -> None:
    alex = seed_user(sim, "alex")
    # The directory role shows the assignment at once; Exchange only after 1.5 s (the "Exchange 403s" case).
    sim.pim_behaviour(roleDefinitionId=EXCHANGE_ADMIN, propagation={"directoryRole": 0, "exchange": 1.5})
    activate(sim, alex)

    before = probe(sim, alex)
    assert before["passed"] is False
    assert before["reason"] == "not a member of the Exchange role group 'Organization Management' yet"
    assert before["evidence"]["memberCount"] == 0

    started = time.monotonic()
    after = probe(sim, alex)
    while not after["passed"]:
        assert time.monotonic() - started < 10, "the role group never showed the responder"
        time.sleep(0.1)
        after = probe(sim, alex)
    assert after["probe"] == "exchange_role_group" and after["reason"] == ""
    assert after["evidence"]["roleGroup"] == "Organization Management"
    assert after["evidence"]["cmdlet"] == "Get-RoleGroupMember" and after["evidence"]["memberCount"] == 1
    assert isinstance(after["evidence"]["durationMs"], int)
    [grant] = sim.pim_stores()["grants"]
    assert grant["visible"]["exchange"] is True

    # The evidence names the call as the simulator recorded it: our client-request-id, its request-id.
    graph = after["graph"]
    assert (graph["method"], graph["path"], graph["status"]) == ("POST", INVOKE_PATH, 200)
    assert graph["request_id"]
    recorded = sim.calls("exchange")[-1]
    assert recorded["client_request_id"] == graph["client_request_id"]
    assert recorded["body"]["CmdletInput"] == {
        "CmdletName": "Get-RoleGroupMember",
        "Parameters": {"Identity": "Organization Management", "ResultSize": "Unlimited"},
    }


def test_members_are_lower_cased_object_ids_and_the_token_is_for_exchange_online(
    sim: SimulatorProcess,
) -> None:
    alex = seed_user(sim, "alex")
    sim.seed("graph/assignments", {"principalId": alex, "roleDefinitionId": EXCHANGE_ADMIN})
    credential = RecordingCredential()
    members = run(sim, lambda adapter: adapter.members("organization management"), credential)
    assert members.value == frozenset({alex.lower()})
    assert credential.scopes == [(EXCHANGE_SCOPE,)]
    assert EXCHANGE_SCOPE == "https://outlook.office365.com/.default"
    assert members.call.status == 200 and members.call.request_id


def test_someone_without_the_role_is_not_a_member(sim: SimulatorProcess) -> None:
    alex, kim = seed_user(sim, "alex"), seed_user(sim, "kim")
    sim.seed("graph/assignments", {"principalId": alex, "roleDefinitionId": EXCHANGE_ADMIN})
    # Kim holds another Exchange role group and another Entra role: neither makes her Organization Management.
    sim.seed("exchange/role-groups", {"name": "Recipient Management", "members": [kim]})
    sim.seed("graph/assignments", {"principalId": kim, "roleDefinitionId": GLOBAL_ADMIN})

    result = probe(sim, kim)
    assert result["passed"] is False
    assert result["evidence"]["memberCount"] == 1  # Alex
    assert "not a member" in result["reason"]
    assert probe(sim, alex.upper())["passed"] is True  # object ids compare case-insensitively


@pytest.mark.parametrize(
    ("status", "code", "retry_after"), [(503, "ServiceUnavailable", None), (429, "TooManyRequests", 7)]
)
def test_a_fault_is_a_directory_error_with_its_code_and_ids(
    sim: SimulatorProcess, status: int, code: str, retry_after: int | None
) -> None:
    alex = seed_user(sim, "alex")
    sim.seed("graph/assignments", {"principalId": alex, "roleDefinitionId": EXCHANGE_ADMIN})
    sim.fault(service="exchange", path_contains="InvokeCommand", status=status, retry_after=retry_after)

    error = failure(sim, lambda adapter: adapter.members("Organization Management"))
    assert error.code == code
    assert error.call.status == status and error.transient
    assert error.call.request_id and error.call.client_request_id
    assert error.retry_after == (float(retry_after) if retry_after is not None else None)
    assert f"({status} {code})" in str(error)
    assert sim.calls("exchange")[-1]["client_request_id"] == error.call.client_request_id

    # The probe records the failure, never a pass; the next read (fault spent) proves the membership.
    sim.fault(service="exchange", path_contains="InvokeCommand", status=status, retry_after=retry_after)
    failed = probe(sim, alex)
    assert (failed["passed"], failed["code"]) == (False, code)
    assert failed["graph"]["status"] == status and failed["graph"]["request_id"]
    assert code in failed["reason"]
    assert probe(sim, alex)["passed"] is True


def test_an_unknown_role_group_is_not_found_with_the_exchange_message(sim: SimulatorProcess) -> None:
    error = failure(sim, lambda adapter: adapter.members("No Such Group"))
    assert (error.code, error.call.status) == ("NotFound", 404)
    # Exchange wraps the cmdlet's exception as "|<type>|<text>": the message shows the text, then the type.
    assert str(error).endswith(
        "couldn't be found on 'SIM01MB0001.PROD.OUTLOOK.COM'. (ManagementObjectNotFoundException)"
    )
    assert "|" not in str(error)


def test_an_unknown_role_template_is_a_clear_error_and_calls_nothing(sim: SimulatorProcess) -> None:
    assert role_group_for(EXCHANGE_ADMIN.upper()) == "Organization Management"
    with pytest.raises(UnknownRoleGroupError) as caught:
        role_group_for(GLOBAL_ADMIN)
    assert GLOBAL_ADMIN in str(caught.value) and "exchange_role_group" in str(caught.value)

    result = probe(sim, seed_user(sim, "alex"), role=GLOBAL_ADMIN)
    assert (result["passed"], result["code"], result["graph"]) == (False, "UnknownRoleGroup", None)
    assert GLOBAL_ADMIN in result["reason"]
    assert sim.calls("exchange") == []


def test_no_token_means_no_call_and_a_failed_read(sim: SimulatorProcess) -> None:
    credential = RecordingCredential(fail=True)
    with pytest.raises(DirectoryError) as caught:
        run(sim, lambda adapter: adapter.members("Organization Management"), credential)
    assert (caught.value.code, caught.value.call.status) == ("TokenUnavailable", 0)
    assert EXCHANGE_SCOPE in str(caught.value)
    assert sim.calls("exchange") == []
