"""The Graph simulator's PIM writes, the four stores an assignment becomes visible in (each after its own
delay), the unified RBAC break-glass path, session revocation, the Exchange role group, after-effect faults
and the per-endpoint call summary.

The Graph calls go through msgraph-sdk's typed request builders, so each test also proves that the SDK the app
uses parses what the simulator answers (and sends what the simulator accepts). Delays are fractions of a
second; waits poll with a deadline instead of sleeping for a fixed time where the outcome allows it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import httpx
import pytest
from azure.core.credentials import AccessToken, TokenCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options.retry_handler_option import RetryHandlerOption
from msgraph.generated.models.directory_object_collection_response import DirectoryObjectCollectionResponse
from msgraph.generated.models.expiration_pattern import ExpirationPattern
from msgraph.generated.models.expiration_pattern_type import ExpirationPatternType
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.request_schedule import RequestSchedule
from msgraph.generated.models.ticket_info import TicketInfo
from msgraph.generated.models.unified_role_assignment import UnifiedRoleAssignment
from msgraph.generated.models.unified_role_assignment_schedule_request import (
    UnifiedRoleAssignmentScheduleRequest,
)
from msgraph.generated.models.unified_role_schedule_request_actions import UnifiedRoleScheduleRequestActions
from msgraph.generated.models.user import User
from msgraph.generated.role_management.directory.role_assignment_schedule_instances.role_assignment_schedule_instances_request_builder import (  # noqa: E501
    RoleAssignmentScheduleInstancesRequestBuilder,
)
from msgraph.generated.role_management.directory.role_assignments.role_assignments_request_builder import (
    RoleAssignmentsRequestBuilder,
)
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient

from local.simulators import SimulatorProcess

pytestmark = pytest.mark.stack

GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
EXCHANGE_ADMIN = "29232cdf-9323-42fd-ade2-1d097af3e4de"
SECURITY_ADMIN = "194ae4cb-b126-40b2-bd5b-6091b380977d"
TENANT = "7d3c9f52-1b7e-4c8a-9a51-3f2e8d6b0c14"
GRAPH_HEADERS = {"Authorization": "Bearer sim-token"}
REQUESTS_PATH = "/roleManagement/directory/roleAssignmentScheduleRequests"
INSTANCES_PATH = "/roleManagement/directory/roleAssignmentScheduleInstances"
UNIFIED_PATH = "/roleManagement/directory/roleAssignments"
SIMULATED_APP_ID = "5e7a3c1d-0b7f-4c55-9d3a-6f1e2b8c9a01"

T = TypeVar("T")


# -- msgraph-sdk against the simulator ----------------------------------------------------------------------


class StaticToken(TokenCredential):
    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken("sim-token", int(time.time()) + 3600)


def run_graph(sim: SimulatorProcess, work: Callable[[GraphServiceClient], Awaitable[T]]) -> T:
    """``work`` with a fresh client in a fresh event loop (the SDK's httpx client is loop-bound)."""

    async def main() -> T:
        auth = AzureIdentityAuthenticationProvider(
            StaticToken(), scopes=["https://graph.microsoft.com/.default"], allowed_hosts=["127.0.0.1"]
        )
        adapter = GraphRequestAdapter(auth)
        adapter.base_url = sim.graph_base_url
        return await work(GraphServiceClient(request_adapter=adapter))

    return asyncio.run(main())


def odata_error(sim: SimulatorProcess, work: Callable[[GraphServiceClient], Awaitable[Any]]) -> ODataError:
    with pytest.raises(ODataError) as caught:
        run_graph(sim, work)
    return caught.value


def code_of(error: ODataError) -> str | None:
    return error.error.code if error.error is not None else None


def message_of(error: ODataError) -> str:
    return (error.error.message or "") if error.error is not None else ""


def no_retry() -> RequestConfiguration[Any]:
    # As the app sends the activation POST: the SDK's own retry off, the workflow owns the retry (facts.md).
    return RequestConfiguration(options=[RetryHandlerOption(max_retries=0)])


def schedule_request(
    action: UnifiedRoleScheduleRequestActions,
    principal: str,
    role: str = EXCHANGE_ADMIN,
    duration: str | timedelta | None = "PT2H",
    *,
    validation_only: bool = False,
) -> UnifiedRoleAssignmentScheduleRequest:
    # kiota's JSON writer sends a timedelta as str(timedelta) ("2:00:00"), which Graph refuses; an ISO 8601
    # string ("PT2H") is written as given. The model is typed timedelta, hence the cast.
    expiration = (
        ExpirationPattern(type=ExpirationPatternType.AfterDuration, duration=cast(timedelta, duration))
        if duration is not None
        else None
    )
    return UnifiedRoleAssignmentScheduleRequest(
        action=action,
        principal_id=principal,
        role_definition_id=role,
        directory_scope_id="/",
        justification="INC0010001: mail flow down",
        schedule_info=RequestSchedule(expiration=expiration) if action != ADMIN_REMOVE else None,
        ticket_info=TicketInfo(ticket_number="INC0010001", ticket_system="ServiceNow"),
        is_validation_only=validation_only,
    )


ADMIN_ASSIGN = UnifiedRoleScheduleRequestActions.AdminAssign
ADMIN_REMOVE = UnifiedRoleScheduleRequestActions.AdminRemove
ADMIN_EXTEND = UnifiedRoleScheduleRequestActions.AdminExtend


def submit(
    sim: SimulatorProcess,
    action: UnifiedRoleScheduleRequestActions,
    principal: str,
    role: str = EXCHANGE_ADMIN,
    duration: str | timedelta | None = "PT2H",
    *,
    validation_only: bool = False,
) -> UnifiedRoleAssignmentScheduleRequest:
    body = schedule_request(action, principal, role, duration, validation_only=validation_only)

    async def work(client: GraphServiceClient) -> UnifiedRoleAssignmentScheduleRequest:
        created = await client.role_management.directory.role_assignment_schedule_requests.post(
            body, request_configuration=no_retry()
        )
        assert created is not None
        return created

    return run_graph(sim, work)


def submit_error(
    sim: SimulatorProcess,
    action: UnifiedRoleScheduleRequestActions,
    principal: str,
    role: str = EXCHANGE_ADMIN,
    duration: str | timedelta | None = "PT2H",
    *,
    validation_only: bool = False,
) -> ODataError:
    body = schedule_request(action, principal, role, duration, validation_only=validation_only)

    async def work(client: GraphServiceClient) -> Any:
        return await client.role_management.directory.role_assignment_schedule_requests.post(
            body, request_configuration=no_retry()
        )

    return odata_error(sim, work)


# -- reading the four stores --------------------------------------------------------------------------------


def pim_instances(sim: SimulatorProcess, principal: str, role: str = EXCHANGE_ADMIN) -> list[Any]:
    builder = RoleAssignmentScheduleInstancesRequestBuilder
    params = builder.RoleAssignmentScheduleInstancesRequestBuilderGetQueryParameters(
        filter=f"principalId eq '{principal}' and roleDefinitionId eq '{role}'"
    )

    async def work(client: GraphServiceClient) -> list[Any]:
        page = await client.role_management.directory.role_assignment_schedule_instances.get(
            request_configuration=RequestConfiguration(query_parameters=params)
        )
        assert page is not None and page.value is not None
        return list(page.value)

    return run_graph(sim, work)


def unified_assignments(sim: SimulatorProcess, principal: str, role: str = EXCHANGE_ADMIN) -> list[Any]:
    params = RoleAssignmentsRequestBuilder.RoleAssignmentsRequestBuilderGetQueryParameters(
        filter=f"principalId eq '{principal}' and roleDefinitionId eq '{role}'"
    )

    async def work(client: GraphServiceClient) -> list[Any]:
        page = await client.role_management.directory.role_assignments.get(
            request_configuration=RequestConfiguration(query_parameters=params)
        )
        assert page is not None and page.value is not None
        return list(page.value)

    return run_graph(sim, work)


def role_members(sim: SimulatorProcess, role: str = EXCHANGE_ADMIN) -> list[Any]:
    """``GET /directoryRoles/{templateId}/members`` (Graph takes the template id as the key, too)."""

    async def work(client: GraphServiceClient) -> list[Any]:
        page = await client.directory_roles.by_directory_role_id(role).members.get()
        assert page is not None and page.value is not None
        return list(page.value)

    return run_graph(sim, work)


def role_members_by_alternate_key(sim: SimulatorProcess, role: str = EXCHANGE_ADMIN) -> list[Any]:
    """``GET /directoryRoles(roleTemplateId='{r}')/members``: the SDK has no builder for it; with_url does."""
    url = f"{sim.graph_base_url}/directoryRoles(roleTemplateId='{role}')/members"

    async def work(client: GraphServiceClient) -> list[Any]:
        builder = client.directory_roles.by_directory_role_id("unused").members.with_url(url)
        page: DirectoryObjectCollectionResponse | None = await builder.get()
        assert page is not None and page.value is not None
        return list(page.value)

    return run_graph(sim, work)


def exchange_members(sim: SimulatorProcess, role_group: str = "Organization Management") -> httpx.Response:
    return httpx.post(
        f"{sim.exchange_base_url}/adminapi/beta/{TENANT}/InvokeCommand",
        json={"CmdletInput": {"CmdletName": "Get-RoleGroupMember", "Parameters": {"Identity": role_group}}},
        headers={"Authorization": "Bearer exo-token", "X-ResponseFormat": "json"},
    )


def exchange_member_ids(sim: SimulatorProcess, role_group: str = "Organization Management") -> list[str]:
    response = exchange_members(sim, role_group)
    assert response.status_code == 200, response.text
    return [m["ExternalDirectoryObjectId"] for m in response.json()["value"]]


def seed_alex(sim: SimulatorProcess) -> str:
    alex = sim.seed(
        "graph/users", {"userPrincipalName": "alex@contoso.test", "displayName": "Alex Responder"}
    )
    return str(alex["id"])


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll until ``condition`` holds; the seconds it took. Fails the test at the deadline."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def parse_ms(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- adminAssign --------------------------------------------------------------------------------------------


def test_admin_assign_round_trip_through_the_sdk(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    created = submit(sim, ADMIN_ASSIGN, alex)

    assert created.id and len(created.id) == 36
    assert created.status == "Provisioned"
    assert created.action == ADMIN_ASSIGN
    assert (created.principal_id, created.role_definition_id, created.directory_scope_id) == (
        alex,
        EXCHANGE_ADMIN,
        "/",
    )
    assert created.app_scope_id is None and created.approval_id is None
    assert created.is_validation_only is False
    assert created.justification == "INC0010001: mail flow down"
    assert created.ticket_info is not None and created.ticket_info.ticket_number == "INC0010001"
    assert created.ticket_info.ticket_system == "ServiceNow"
    assert created.schedule_info is not None and created.schedule_info.expiration is not None
    assert created.schedule_info.expiration.type == ExpirationPatternType.AfterDuration
    assert created.schedule_info.expiration.duration == timedelta(hours=2)
    assert isinstance(created.schedule_info.start_date_time, datetime)
    assert created.target_schedule_id == created.id
    assert isinstance(created.created_date_time, datetime) and isinstance(
        created.completed_date_time, datetime
    )
    assert created.created_by is not None and created.created_by.application is not None
    assert created.created_by.application.id == SIMULATED_APP_ID
    assert created.created_by.application.display_name

    request_id = created.id

    async def read_back(client: GraphServiceClient) -> UnifiedRoleAssignmentScheduleRequest | None:
        requests = client.role_management.directory.role_assignment_schedule_requests
        return await requests.by_unified_role_assignment_schedule_request_id(request_id).get()

    again = run_graph(sim, read_back)
    assert again is not None and again.id == created.id and again.status == "Provisioned"

    [instance] = pim_instances(sim, alex)
    assert instance.assignment_type == "Assigned" and instance.member_type == "Direct"
    assert instance.principal_id == alex and instance.role_definition_id == EXCHANGE_ADMIN
    assert instance.end_date_time - instance.start_date_time == timedelta(hours=2)
    assert instance.role_assignment_schedule_id == created.id

    [unified] = unified_assignments(sim, alex)
    assert unified.id == instance.role_assignment_origin_id
    assert (unified.principal_id, unified.role_definition_id, unified.directory_scope_id) == (
        alex,
        EXCHANGE_ADMIN,
        "/",
    )

    for members in (role_members(sim), role_members_by_alternate_key(sim)):
        [member] = members
        assert isinstance(member, User)  # @odata.type picked the model class
        assert member.id == alex and member.user_principal_name == "alex@contoso.test"
        assert member.display_name == "Alex Responder"

    async def directory_role(client: GraphServiceClient) -> Any:
        return await client.directory_roles_with_role_template_id(EXCHANGE_ADMIN).get()

    role = run_graph(sim, directory_role)
    assert role.display_name == "Exchange Administrator" and role.role_template_id == EXCHANGE_ADMIN
    assert role.id != EXCHANGE_ADMIN  # the role object has its own id, as in a tenant

    assert exchange_member_ids(sim) == [alex]
    counts = sim.calls_summary("graph")
    assert counts[f"POST {REQUESTS_PATH}"] == 1
    assert counts[f"GET {REQUESTS_PATH}/{{id}}"] == 1
    assert counts["GET /directoryRoles/{id}/members"] == 1
    assert counts["GET /directoryRoles(roleTemplateId='{id}')/members"] == 1


def test_a_timedelta_duration_is_refused_as_graph_refuses_it(sim: SimulatorProcess) -> None:
    # msgraph-sdk (kiota) serialises timedelta(hours=2) as "2:00:00", not ISO 8601: Graph answers 400.
    alex = seed_alex(sim)
    error = submit_error(sim, ADMIN_ASSIGN, alex, duration=timedelta(hours=2))
    assert error.response_status_code == 400 and code_of(error) == "BadRequest"
    assert "'2:00:00'" in message_of(error) and "Edm.Duration" in message_of(error)
    sent = sim.calls("graph", method="POST")[0]["body"]
    assert sent["scheduleInfo"]["expiration"]["duration"] == "2:00:00"
    assert pim_instances(sim, alex) == []


def test_role_assignment_exists_is_an_odata_error_with_that_code(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    submit(sim, ADMIN_ASSIGN, alex)
    error = submit_error(sim, ADMIN_ASSIGN, alex)
    assert error.response_status_code == 400
    assert code_of(error) == "RoleAssignmentExists"
    assert error.error is not None and error.error.inner_error is not None
    assert error.error.inner_error.request_id and error.error.inner_error.client_request_id
    # Another role for the same person is not affected.
    assert submit(sim, ADMIN_ASSIGN, alex, role=GLOBAL_ADMIN).status == "Provisioned"
    assert len(sim.state()["graph"]["requests"]) == 2  # a refused request is not stored


def test_statuses_over_time_and_a_pending_request_blocks_another(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    sim.pim_behaviour(
        roleDefinitionId=EXCHANGE_ADMIN,
        statuses=[{"status": "PendingProvisioning", "seconds": 2.0}],
        final="Provisioned",
    )
    created = submit(sim, ADMIN_ASSIGN, alex)
    assert created.status == "PendingProvisioning" and created.completed_date_time is None
    assert pim_instances(sim, alex) == []  # the instance exists only once provisioned
    pending = submit_error(sim, ADMIN_ASSIGN, alex)
    assert code_of(pending) == "PendingRoleAssignmentRequest"
    assert code_of(submit_error(sim, ADMIN_REMOVE, alex)) == "RoleAssignmentDoesNotExist"  # not yet

    request_id = str(created.id)

    def status() -> str | None:
        async def work(client: GraphServiceClient) -> str | None:
            requests = client.role_management.directory.role_assignment_schedule_requests
            item = await requests.by_unified_role_assignment_schedule_request_id(request_id).get()
            return item.status if item is not None else None

        return run_graph(sim, work)

    waited = wait_for(lambda: status() == "Provisioned")
    assert waited >= 0.5  # it really was pending for a while
    assert len(pim_instances(sim, alex)) == 1
    assert code_of(submit_error(sim, ADMIN_ASSIGN, alex)) == "RoleAssignmentExists"
    [timeline] = sim.state()["graph"]["requestTimelines"]
    assert timeline["done"] is True and timeline["final"] == "Provisioned"
    listed = httpx.get(
        f"{sim.graph_base_url}{REQUESTS_PATH}",
        params={"$filter": f"principalId eq '{alex}' and status eq 'Provisioned'"},
        headers=GRAPH_HEADERS,
    ).json()["value"]
    assert [r["id"] for r in listed] == [request_id]
    assert listed[0]["completedDateTime"] is not None


@pytest.mark.parametrize("final", ["Failed", "Denied"])
def test_a_request_that_ends_failed_or_denied_assigns_nothing(sim: SimulatorProcess, final: str) -> None:
    alex = seed_alex(sim)
    sim.pim_behaviour(statuses=[{"status": "Granted", "seconds": 0.2}], final=final)  # default for all roles
    created = submit(sim, ADMIN_ASSIGN, alex, role=SECURITY_ADMIN)
    assert created.status == "Granted"
    wait_for(
        lambda: (
            httpx.get(f"{sim.graph_base_url}{REQUESTS_PATH}/{created.id}", headers=GRAPH_HEADERS).json()[
                "status"
            ]
            == final
        )
    )
    assert pim_instances(sim, alex, SECURITY_ADMIN) == []
    assert unified_assignments(sim, alex, SECURITY_ADMIN) == []
    assert sim.pim_stores()["grants"] == []
    # A failed request is over: a new one may be submitted (and fails the same way).
    assert submit(sim, ADMIN_ASSIGN, alex, role=SECURITY_ADMIN).status == "Granted"


def test_each_store_shows_the_assignment_after_its_own_delay(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    delays = {"pim": 0.0, "unified": 1.0, "directoryRole": 1.6, "exchange": 2.2}
    effective = sim.pim_behaviour(roleDefinitionId=EXCHANGE_ADMIN, propagation=delays)
    assert effective["propagation"] == delays
    submit(sim, ADMIN_ASSIGN, alex)

    # Right after the POST: provisioned, in PIM, nowhere else yet.
    assert len(pim_instances(sim, alex)) == 1
    assert unified_assignments(sim, alex) == []
    assert role_members(sim) == []
    assert exchange_member_ids(sim) == []

    wait_for(lambda: len(unified_assignments(sim, alex)) == 1)
    wait_for(lambda: len(role_members(sim)) == 1)
    wait_for(lambda: exchange_member_ids(sim) == [alex])

    [grant] = sim.pim_stores()["grants"]
    activated = parse_ms(grant["activatedAt"])
    for store, delay in delays.items():
        offset = (parse_ms(grant["visibleAt"][store]) - activated).total_seconds()
        assert abs(offset - delay) < 0.002, store
        assert grant["visible"][store] is True
    assert grant["origin"] == "pim"
    stores = sim.pim_stores()["stores"]
    assert {store: [g["principalId"] for g in stores[store]] for store in delays} == {
        store: [alex] for store in delays
    }


def test_policy_rule_failure_names_the_rule_for_that_role_only(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    sim.pim_behaviour(roleDefinitionId=EXCHANGE_ADMIN, policyFailure="ExpirationRule")
    error = submit_error(sim, ADMIN_ASSIGN, alex)
    assert error.response_status_code == 400
    assert code_of(error) == "RoleAssignmentRequestPolicyValidationFailed"
    assert message_of(error) == 'The following policy rules failed: ["ExpirationRule"]'
    assert submit(sim, ADMIN_ASSIGN, alex, role=GLOBAL_ADMIN).status == "Provisioned"
    sim.pim_behaviour(roleDefinitionId=EXCHANGE_ADMIN, policyFailure=["MfaRule", "JustificationRule"])
    assert message_of(submit_error(sim, ADMIN_ASSIGN, alex)).endswith('["MfaRule","JustificationRule"]')


def test_minimum_active_duration_for_assign_and_remove(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    short = submit_error(sim, ADMIN_ASSIGN, alex, duration="PT4M")
    assert code_of(short) == "ActiveDurationTooShort"
    assert "Minimum Required is 5 minutes" in message_of(short)
    submit(sim, ADMIN_ASSIGN, alex, duration="PT5M")
    soon = submit_error(sim, ADMIN_REMOVE, alex)
    assert code_of(soon) == "ActiveDurationTooShort" and "5 minutes" in message_of(soon)
    assert len(pim_instances(sim, alex)) == 1  # still assigned


def test_admin_remove_clears_every_store_and_a_second_removal_says_it_does_not_exist(
    sim: SimulatorProcess,
) -> None:
    alex = seed_alex(sim)
    sim.pim_behaviour(roleDefinitionId=EXCHANGE_ADMIN, minimumActiveSeconds=1.5)
    assigned = submit(sim, ADMIN_ASSIGN, alex)
    assert code_of(submit_error(sim, ADMIN_REMOVE, alex)) == "ActiveDurationTooShort"
    assert exchange_member_ids(sim) == [alex]
    time.sleep(1.6)

    removed = submit(sim, ADMIN_REMOVE, alex)
    assert removed.status == "Revoked" and removed.action == ADMIN_REMOVE
    assert removed.target_schedule_id == assigned.id
    assert removed.completed_date_time is not None
    assert pim_instances(sim, alex) == []
    assert unified_assignments(sim, alex) == []
    assert role_members(sim) == []
    assert exchange_member_ids(sim) == []
    again = submit_error(sim, ADMIN_REMOVE, alex)
    assert again.response_status_code == 400 and code_of(again) == "RoleAssignmentDoesNotExist"

    [ended] = sim.pim_stores()["ended"]
    assert ended["reason"] == "adminRemove" and ended["endedBy"] == removed.id
    # A new activation after the removal gets a new assignment id.
    assert submit(sim, ADMIN_ASSIGN, alex).status == "Provisioned"
    [unified] = unified_assignments(sim, alex)
    assert unified.id != ended["id"]


def test_admin_extend_moves_the_end(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    assert code_of(submit_error(sim, ADMIN_EXTEND, alex)) == "RoleAssignmentDoesNotExist"
    submit(sim, ADMIN_ASSIGN, alex, duration="PT30M")
    [before] = pim_instances(sim, alex)
    extended = submit(sim, ADMIN_EXTEND, alex, duration="PT2H")
    assert extended.status == "Provisioned" and extended.action == ADMIN_EXTEND
    [after] = pim_instances(sim, alex)
    assert after.id == before.id
    assert after.end_date_time - before.end_date_time >= timedelta(minutes=89)
    assert code_of(submit_error(sim, ADMIN_EXTEND, alex, duration="PT10M")) == "InvalidRequest"


def test_an_assignment_leaves_every_store_when_it_ends(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    sim.pim_behaviour(minimumActiveSeconds=1)
    submit(sim, ADMIN_ASSIGN, alex, duration="PT2.5S")
    assert len(pim_instances(sim, alex)) == 1 and exchange_member_ids(sim) == [alex]
    wait_for(lambda: pim_instances(sim, alex) == [], timeout=6)
    assert unified_assignments(sim, alex) == [] and role_members(sim) == [] and exchange_member_ids(sim) == []
    [ended] = sim.pim_stores()["ended"]
    assert ended["reason"] == "expired"
    assert code_of(submit_error(sim, ADMIN_REMOVE, alex)) == "RoleAssignmentDoesNotExist"


def test_validation_only_validates_and_stores_nothing(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    checked = submit(sim, ADMIN_ASSIGN, alex, validation_only=True)
    assert checked.is_validation_only is True and checked.id
    assert checked.target_schedule_id is None and checked.completed_date_time is None
    assert pim_instances(sim, alex) == [] and sim.state()["graph"]["requests"] == []
    missing = httpx.get(f"{sim.graph_base_url}{REQUESTS_PATH}/{checked.id}", headers=GRAPH_HEADERS)
    assert missing.status_code == 404
    # It reports what a real request would meet.
    assert code_of(submit_error(sim, ADMIN_ASSIGN, alex, duration="PT1M", validation_only=True)) == (
        "ActiveDurationTooShort"
    )
    submit(sim, ADMIN_ASSIGN, alex)
    assert code_of(submit_error(sim, ADMIN_ASSIGN, alex, validation_only=True)) == "RoleAssignmentExists"


def test_request_bodies_are_checked_as_graph_checks_them(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    url = f"{sim.graph_base_url}{REQUESTS_PATH}"
    base = {
        "action": "adminAssign",
        "principalId": alex,
        "roleDefinitionId": EXCHANGE_ADMIN,
        "directoryScopeId": "/",
        "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": "PT1H"}},
    }
    ghost = "0b1e6a52-7f0c-4f4e-9d7e-2c6f0c9e8a11"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**base, "principalId": ghost}, 404, "Request_ResourceNotFound"),
        ({**base, "action": "selfActivate"}, 400, "InvalidRequest"),
        ({**base, "action": "adminRenew"}, 400, "InvalidRequest"),
        ({**base, "action": "activate"}, 400, "BadRequest"),
        ({**base, "surprise": 1}, 400, "BadRequest"),
        ({**base, "principalId": "alex"}, 400, "BadRequest"),
        (
            {**base, "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": "1h"}}},
            400,
            "BadRequest",
        ),
        ({**base, "scheduleInfo": {"expiration": {"type": "afterDateTime"}}}, 400, "BadRequest"),
        ({**base, "isValidationOnly": "yes"}, 400, "BadRequest"),
    ]
    for body, status, code in cases:
        response = httpx.post(url, json=body, headers=GRAPH_HEADERS)
        assert response.status_code == status, body
        error = response.json()["error"]
        assert error["code"] == code, body
        assert error["innerError"]["request-id"] == response.headers["request-id"]
    end = (datetime.now(UTC) + timedelta(minutes=45)).isoformat()
    by_date = httpx.post(
        url,
        json={**base, "scheduleInfo": {"expiration": {"type": "afterDateTime", "endDateTime": end}}},
        headers=GRAPH_HEADERS,
    )
    assert by_date.status_code == 201, by_date.text
    created = by_date.json()
    assert created["@odata.context"].endswith(
        "$metadata#roleManagement/directory/roleAssignmentScheduleRequests/$entity"
    )
    assert created["scheduleInfo"]["expiration"]["type"] == "afterDateTime"
    assert created["createdBy"] == {
        "application": {"id": SIMULATED_APP_ID, "displayName": "pim-emergency-access (simulated)"},
        "device": None,
        "user": None,
    }


# -- the unified RBAC path (break-glass) --------------------------------------------------------------------


def test_direct_unified_assignment_create_read_delete(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    # PIM's behaviour does not stand in the way of a direct assignment; the stores' delays still apply.
    sim.pim_behaviour(
        roleDefinitionId=GLOBAL_ADMIN, policyFailure="ApprovalRule", propagation={"directoryRole": 2.0}
    )
    body = UnifiedRoleAssignment(principal_id=alex, role_definition_id=GLOBAL_ADMIN, directory_scope_id="/")

    async def create(client: GraphServiceClient) -> UnifiedRoleAssignment | None:
        return await client.role_management.directory.role_assignments.post(
            body, request_configuration=no_retry()
        )

    created = run_graph(sim, create)
    assert created is not None and created.id
    assert (created.principal_id, created.role_definition_id, created.directory_scope_id) == (
        alex,
        GLOBAL_ADMIN,
        "/",
    )
    assignment_id = created.id

    async def read(client: GraphServiceClient) -> UnifiedRoleAssignment | None:
        return await client.role_management.directory.role_assignments.by_unified_role_assignment_id(
            assignment_id
        ).get()

    read_back = run_graph(sim, read)
    assert read_back is not None and read_back.id == assignment_id
    assert [a.id for a in unified_assignments(sim, alex, GLOBAL_ADMIN)] == [assignment_id]
    [instance] = pim_instances(sim, alex, GLOBAL_ADMIN)
    assert instance.assignment_type == "Assigned" and instance.member_type == "Direct"
    assert instance.role_assignment_origin_id == assignment_id and instance.end_date_time is None
    assert role_members(sim, GLOBAL_ADMIN) == []  # the directory role lags behind
    wait_for(lambda: [m.id for m in role_members(sim, GLOBAL_ADMIN)] == [alex])

    duplicate = odata_error(sim, create)
    assert duplicate.response_status_code == 400 and code_of(duplicate) == "Request_BadRequest"
    assert "conflicting object" in message_of(duplicate)
    # An adminAssign for the same role sees the existing assignment.
    assert code_of(submit_error(sim, ADMIN_ASSIGN, alex, role=GLOBAL_ADMIN)) == "RoleAssignmentExists"

    async def delete(client: GraphServiceClient) -> None:
        await client.role_management.directory.role_assignments.by_unified_role_assignment_id(
            assignment_id
        ).delete()

    run_graph(sim, delete)
    assert unified_assignments(sim, alex, GLOBAL_ADMIN) == [] and pim_instances(sim, alex, GLOBAL_ADMIN) == []
    assert role_members(sim, GLOBAL_ADMIN) == []
    for work in (read, delete):
        gone = odata_error(sim, work)
        assert gone.response_status_code == 404 and code_of(gone) == "Request_ResourceNotFound"
    assert [c["status"] for c in sim.calls("graph", method="DELETE")] == [204, 404]
    [ended] = sim.pim_stores()["ended"]
    assert ended["origin"] == "direct" and ended["reason"] == "deleted"


def test_unified_assignment_bodies_are_checked(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    url = f"{sim.graph_base_url}{UNIFIED_PATH}"
    ok = {"principalId": alex, "roleDefinitionId": GLOBAL_ADMIN, "directoryScopeId": "/"}
    for body, status in (
        ({**ok, "principalId": "0b1e6a52-7f0c-4f4e-9d7e-2c6f0c9e8a11"}, 404),
        ({**ok, "roleDefinitionId": "Global Administrator"}, 400),
        ({"principalId": alex, "roleDefinitionId": GLOBAL_ADMIN}, 400),
        ({**ok, "extra": True}, 400),
    ):
        assert httpx.post(url, json=body, headers=GRAPH_HEADERS).status_code == status, body
    created = httpx.post(url, json=ok, headers=GRAPH_HEADERS)
    assert created.status_code == 201
    assert created.json()["@odata.context"].endswith(
        "$metadata#roleManagement/directory/roleAssignments/$entity"
    )
    assert httpx.get(f"{url}/not-an-assignment", headers=GRAPH_HEADERS).status_code == 404


# -- sessions -----------------------------------------------------------------------------------------------


def test_revoke_sign_in_sessions_is_counted_per_user(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)

    async def revoke(client: GraphServiceClient) -> bool | None:
        answer = await client.users.by_user_id(alex).revoke_sign_in_sessions.post()
        return answer.value if answer is not None else None

    assert run_graph(sim, revoke) is True
    assert run_graph(sim, revoke) is True
    raw = httpx.post(
        f"{sim.graph_base_url}/users/alex@contoso.test/revokeSignInSessions", headers=GRAPH_HEADERS
    )
    assert raw.status_code == 200
    assert raw.json() == {"@odata.context": f"{sim.graph_base_url}/$metadata#Edm.Boolean", "value": True}
    revocations = sim.state()["graph"]["sessionRevocations"]
    assert list(revocations) == [alex] and revocations[alex]["count"] == 3
    assert sim.control("GET", "graph/session-revocations")["sessionRevocations"][alex]["count"] == 3
    unknown = httpx.post(
        f"{sim.graph_base_url}/users/ghost@contoso.test/revokeSignInSessions", headers=GRAPH_HEADERS
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "Request_ResourceNotFound"
    assert sim.calls_summary("graph") == {"POST /users/{id}/revokeSignInSessions": 4}


# -- seeded assignments and the Exchange role group ---------------------------------------------------------


def test_seeded_assignments_are_in_every_store_at_once(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    sim.pim_behaviour(propagation={"pim": 30, "unified": 30, "directoryRole": 30, "exchange": 30})
    seeded = sim.seed("graph/assignments", {"principalId": alex, "roleDefinitionId": EXCHANGE_ADMIN})
    [instance] = pim_instances(sim, alex)
    assert instance.id == seeded["id"] and instance.assignment_type == "Activated"
    [unified] = unified_assignments(sim, alex)
    assert unified.id == seeded["roleAssignmentOriginId"]
    assert [m.id for m in role_members(sim)] == [alex]
    assert exchange_member_ids(sim) == [alex]
    assert sim.state()["graph"]["unifiedAssignments"][0]["id"] == unified.id
    # And a seeded assignment counts for PIM's checks.
    assert code_of(submit_error(sim, ADMIN_ASSIGN, alex)) == "RoleAssignmentExists"


def test_exchange_get_role_group_member(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    kim = sim.seed("graph/users", {"userPrincipalName": "kim@contoso.test", "mail": "kim.ops@contoso.test"})
    sim.seed("exchange/role-groups", {"name": "Recipient Management", "members": ["kim@contoso.test"]})
    sim.seed("exchange/role-groups", {"name": "Organization Management", "roleDefinitionIds": [GLOBAL_ADMIN]})
    sim.pim_behaviour(propagation={"exchange": 1.0})
    submit(sim, ADMIN_ASSIGN, alex, role=GLOBAL_ADMIN)

    empty = exchange_members(sim)
    assert empty.status_code == 200 and empty.json()["value"] == []
    assert empty.json()["@odata.context"] == (
        f"{sim.exchange_base_url}/adminapi/beta/{TENANT}/$metadata#Collection(Exchange.GenericHashTable)"
    )
    assert empty.headers["request-id"]
    wait_for(lambda: exchange_member_ids(sim) == [alex])
    [member] = exchange_members(sim).json()["value"]
    assert member["ExternalDirectoryObjectId"] == alex
    assert member["PrimarySmtpAddress"] == "alex@contoso.test" and member["Name"] == "alex"
    assert member["RecipientType"] == "UserMailbox"
    assert exchange_member_ids(sim, "recipient management") == [kim["id"]]  # names are case-insensitive

    missing = exchange_members(sim, "Nope")
    assert missing.status_code == 404
    assert "couldn't be found" in missing.json()["error"]["message"]
    url = f"{sim.exchange_base_url}/adminapi/beta/{TENANT}/InvokeCommand"
    anonymous = httpx.post(url, json={"CmdletInput": {"CmdletName": "Get-RoleGroupMember"}})
    assert anonymous.status_code == 401
    for body in (
        {"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"Identity": "alex"}}},
        {"CmdletInput": {"CmdletName": "Get-RoleGroupMember", "Parameters": {"Identity": "x", "Bogus": 1}}},
        {"CmdletInput": {"CmdletName": "Get-RoleGroupMember", "Parameters": {}}},
        {"Cmdlet": "Get-RoleGroupMember"},
    ):
        refused = httpx.post(url, json=body, headers={"Authorization": "Bearer t"})
        assert refused.status_code == 400, body
        assert refused.json()["error"]["message"]
    groups = sim.control("GET", "exchange/role-groups")["roleGroups"]
    assert groups["Organization Management"]["roleDefinitionIds"] == [EXCHANGE_ADMIN, GLOBAL_ADMIN]
    assert list(sim.calls_summary("exchange")) == ["POST /adminapi/beta/{id}/InvokeCommand"]
    assert (
        httpx.post(
            f"{sim.control_url}/exchange/role-groups", json={"name": "X", "members": ["ghost"]}
        ).status_code
        == 400
    )


# -- faults after the effect --------------------------------------------------------------------------------


def test_a_503_after_the_post_took_effect(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    sim.fault(
        service="graph", path_contains="roleAssignmentScheduleRequests", method="POST", status=503, after=True
    )
    error = submit_error(sim, ADMIN_ASSIGN, alex)
    assert error.response_status_code == 503 and code_of(error) == "ServiceUnavailable"
    # The caller saw a failure, yet the assignment exists: the retry must look before it leaps.
    assert len(pim_instances(sim, alex)) == 1
    [call] = sim.calls("graph", method="POST")
    assert (call["status"], call["effect_status"]) == (503, 201) and call["fault"]
    assert code_of(submit_error(sim, ADMIN_ASSIGN, alex)) == "RoleAssignmentExists"


def test_the_sdk_retry_resends_a_post_that_took_effect(sim: SimulatorProcess) -> None:
    # Why the app turns the SDK's retry off for the activation POST: with it on, the retry meets its own work.
    alex = seed_alex(sim)
    sim.fault(
        service="graph", path_contains=REQUESTS_PATH, method="POST", status=503, retry_after=1, after=True
    )
    body = schedule_request(ADMIN_ASSIGN, alex)

    async def with_default_retry(client: GraphServiceClient) -> Any:
        return await client.role_management.directory.role_assignment_schedule_requests.post(body)

    error = odata_error(sim, with_default_retry)
    assert code_of(error) == "RoleAssignmentExists"
    statuses = [(c["status"], c["effect_status"]) for c in sim.calls("graph", method="POST")]
    assert statuses == [(503, 201), (400, None)]


def test_after_faults_latency_429_and_their_validation(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    fault_id = sim.fault(
        service="graph",
        path_contains="/revokeSignInSessions",
        status=429,
        retry_after=4,
        latency_ms=200,
        after=True,
    )
    url = f"{sim.graph_base_url}/users/{alex}/revokeSignInSessions"
    started = time.monotonic()
    throttled = httpx.post(url, headers=GRAPH_HEADERS)
    assert time.monotonic() - started >= 0.2
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "4"
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert throttled.json()["error"]["innerError"]["request-id"] == throttled.headers["request-id"]
    assert sim.state()["graph"]["sessionRevocations"][alex]["count"] == 1  # it happened all the same
    assert httpx.post(url, headers=GRAPH_HEADERS).status_code == 200  # count defaults to 1
    [listed] = sim.control("GET", "faults")["faults"]
    assert listed["id"] == fault_id and listed["after"] is True and listed["exhausted"] is True
    for bad in (
        {"service": "graph", "after": True, "latency_ms": 10},  # nothing to answer afterwards
        {"service": "graph", "status": 503, "after": "yes"},
    ):
        assert httpx.post(f"{sim.control_url}/faults", json=bad).status_code == 400, bad
    # Other services take "after" too; the handler's answer is recorded as the effect.
    sim.fault(service="exchange", status=502, after=True, count=None)
    for _ in range(2):
        assert exchange_members(sim).status_code == 502
    assert [c["effect_status"] for c in sim.calls("exchange")] == [200, 200]


# -- behaviour control --------------------------------------------------------------------------------------


def test_behaviour_control_is_strict_layered_and_reset(sim: SimulatorProcess) -> None:
    url = f"{sim.control_url}/graph/pim-behaviour"
    initial = httpx.get(url).json()
    assert initial == {
        "default": {
            "statuses": [],
            "final": "Provisioned",
            "propagation": {"pim": 0.0, "unified": 0.0, "directoryRole": 0.0, "exchange": 0.0},
            "policyFailure": None,
            "minimumActiveSeconds": 300.0,
        },
        "roles": {},
    }
    for bad in (
        {"statuses": [{"status": "Provisioned", "seconds": 1}]},  # a final status is not an interim one
        {"statuses": [{"status": "PendingProvisioning", "seconds": -1}]},
        {"statuses": [{"status": "PendingProvisioning", "seconds": True}]},
        {"statuses": [{"status": "PendingProvisioning", "secs": 1}]},
        {"final": "Revoked"},
        {"propagation": {"sharepoint": 1}},
        {"policyFailure": "NoSuchRule"},
        {"roleDefinitionId": "Exchange Administrator"},
        {"minimumActiveSeconds": "300"},
        {"surprise": 1},
    ):
        response = httpx.post(url, json=bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]
    sim.pim_behaviour(propagation={"exchange": 2.5}, minimumActiveSeconds=1)
    role = sim.pim_behaviour(
        roleDefinitionId=EXCHANGE_ADMIN.upper(), policyFailure="TicketingRule", propagation={"pim": 0.5}
    )
    assert role["roleDefinitionId"] == EXCHANGE_ADMIN
    # Keys a role leaves out come from the default; propagation merges store by store.
    assert role["propagation"] == {"pim": 0.5, "unified": 0.0, "directoryRole": 0.0, "exchange": 2.5}
    assert role["minimumActiveSeconds"] == 1.0 and role["policyFailure"] == ["TicketingRule"]
    assert set(httpx.get(url).json()["roles"]) == {EXCHANGE_ADMIN}
    assert sim.state()["graph"]["pimBehaviour"]["default"]["propagation"]["exchange"] == 2.5
    sim.reset()
    assert httpx.get(url).json() == initial
    sim.pim_behaviour(minimumActiveSeconds=5)
    assert httpx.delete(url).json() == initial


# -- call counts --------------------------------------------------------------------------------------------


def test_calls_summary_counts_per_endpoint_with_ids_normalised(sim: SimulatorProcess) -> None:
    alex = seed_alex(sim)
    submit(sim, ADMIN_ASSIGN, alex)
    for _ in range(3):
        pim_instances(sim, alex)
    unified_assignments(sim, alex)
    httpx.get(f"{sim.graph_base_url}/users/alex@contoso.test", headers=GRAPH_HEADERS)
    httpx.get(f"{sim.graph_base_url}/users/{alex}?$select=id", headers=GRAPH_HEADERS)
    httpx.get(f"{sim.graph_base_url}/users/ghost@contoso.test", headers=GRAPH_HEADERS)
    [unified] = unified_assignments(sim, alex)
    httpx.get(f"{sim.graph_base_url}{UNIFIED_PATH}/{unified.id}", headers=GRAPH_HEADERS)
    exchange_members(sim)

    counts = sim.calls_summary("graph")
    assert counts == {
        f"POST {REQUESTS_PATH}": 1,
        f"GET {INSTANCES_PATH}": 3,
        f"GET {UNIFIED_PATH}": 2,
        "GET /users/{id}": 3,
        f"GET {UNIFIED_PATH}/{{id}}": 1,
    }
    full = sim.control("GET", "calls/summary", service="graph")
    assert full["total"] == 10
    assert full["statuses"]["GET /users/{id}"] == {"200": 2, "404": 1}
    everything = sim.calls_summary()
    assert everything[f"graph POST {REQUESTS_PATH}"] == 1
    assert everything["exchange POST /adminapi/beta/{id}/InvokeCommand"] == 1
    assert sim.calls_summary("graph", method="POST") == {f"POST {REQUESTS_PATH}": 1}
