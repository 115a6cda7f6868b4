"""The simulators over real HTTP: one ``python -m local.simulators`` process for the module, reset before
each test. The Graph tests go through msgraph-sdk's typed request builders, so they prove that the SDK the
app uses parses the simulator's answers; the others use plain HTTP as the app's adapters do."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from azure.core.credentials import AccessToken, TokenCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.unified_role_assignment_schedule_request import (
    UnifiedRoleAssignmentScheduleRequest,
)
from msgraph.generated.models.user import User
from msgraph.generated.role_management.directory.role_assignment_schedule_instances.role_assignment_schedule_instances_request_builder import (  # noqa: E501
    RoleAssignmentScheduleInstancesRequestBuilder,
)
from msgraph.generated.role_management.directory.role_assignment_schedule_requests.role_assignment_schedule_requests_request_builder import (  # noqa: E501
    RoleAssignmentScheduleRequestsRequestBuilder,
)
from msgraph.generated.role_management.directory.role_eligibility_schedule_instances.role_eligibility_schedule_instances_request_builder import (  # noqa: E501
    RoleEligibilityScheduleInstancesRequestBuilder,
)
from msgraph.generated.users.item.check_member_groups.check_member_groups_post_request_body import (
    CheckMemberGroupsPostRequestBody,
)
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient

from local.simulators import SimulatorProcess
from shared.settings import SETTINGS_VARIABLES

pytestmark = pytest.mark.stack

REPO_ROOT = Path(__file__).resolve().parents[2]
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
EXCHANGE_ADMIN = "29232cdf-9323-42fd-ade2-1d097af3e4de"
SN_AUTH = ("svc-pim", "not-a-real-password")
JIRA_AUTH = ("pim-bot@contoso.test", "api-token")
PD_HEADERS = {"Authorization": "Token token=sim-key"}
GRAPH_HEADERS = {"Authorization": "Bearer sim-token"}

T = TypeVar("T")


# -- msgraph-sdk against the simulator ----------------------------------------------------------------------


class FixedTokenCredential(TokenCredential):
    """A credential that always hands out the same token (the simulator accepts any bearer token)."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.calls += 1
        return AccessToken("sim-token", int(time.time()) + 3600)


def graph_client(sim: SimulatorProcess) -> GraphServiceClient:
    # As facts.md describes: without allowed_hosts the provider silently sends no Authorization header.
    auth = AzureIdentityAuthenticationProvider(
        FixedTokenCredential(), scopes=["https://graph.microsoft.com/.default"], allowed_hosts=["127.0.0.1"]
    )
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = sim.graph_base_url
    return GraphServiceClient(request_adapter=adapter)


def run_graph(sim: SimulatorProcess, work: Callable[[GraphServiceClient], Awaitable[T]]) -> T:
    """Run ``work`` with a fresh client in a fresh event loop (the SDK's httpx client is loop-bound)."""

    async def main() -> T:
        return await work(graph_client(sim))

    return asyncio.run(main())


def seed_people(sim: SimulatorProcess) -> dict[str, Any]:
    alex = sim.seed(
        "graph/users", {"userPrincipalName": "alex@contoso.test", "displayName": "Alex Responder"}
    )
    sam = sim.seed("graph/users", {"userPrincipalName": "sam@contoso.test", "mail": "sam.ops@contoso.test"})
    return {"alex": alex, "sam": sam}


def test_sdk_reads_a_user_by_upn_and_by_id(sim: SimulatorProcess) -> None:
    people = seed_people(sim)

    async def work(client: GraphServiceClient) -> tuple[User | None, User | None]:
        by_upn = await client.users.by_user_id("ALEX@contoso.test").get()
        by_id = await client.users.by_user_id(people["alex"]["id"]).get()
        return by_upn, by_id

    by_upn, by_id = run_graph(sim, work)
    assert by_upn is not None and by_id is not None
    assert by_upn.id == by_id.id == people["alex"]["id"]
    assert by_upn.user_principal_name == "alex@contoso.test"
    assert by_upn.display_name == "Alex Responder"
    assert by_upn.mail == "alex@contoso.test"
    # The SDK sent its bearer token: the call was accepted and recorded.
    calls = sim.calls("graph", path_contains="/users/")
    assert [c["status"] for c in calls] == [200, 200]


def test_sdk_filter_query_finds_a_user_by_upn_or_mail(sim: SimulatorProcess) -> None:
    people = seed_people(sim)

    async def query(client: GraphServiceClient, expression: str) -> list[str]:
        params = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            filter=expression, select=["id", "userPrincipalName", "mail"]
        )
        page = await client.users.get(request_configuration=RequestConfiguration(query_parameters=params))
        assert page is not None and page.value is not None
        return [str(u.id) for u in page.value]

    async def work(client: GraphServiceClient) -> list[list[str]]:
        return [
            await query(
                client, "userPrincipalName eq 'sam.ops@contoso.test' or mail eq 'sam.ops@contoso.test'"
            ),
            await query(client, "userPrincipalName eq 'alex@contoso.test' or mail eq 'alex@contoso.test'"),
            await query(client, "userPrincipalName eq 'alex@contoso.test' and accountEnabled eq true"),
            await query(client, "mail eq 'nobody@contoso.test'"),
        ]

    by_mail, by_upn, both, none = run_graph(sim, work)
    assert by_mail == [people["sam"]["id"]]
    assert by_upn == [people["alex"]["id"]]
    assert both == [people["alex"]["id"]]
    assert none == []


def test_sdk_unknown_user_raises_odata_error_not_found(sim: SimulatorProcess) -> None:
    async def work(client: GraphServiceClient) -> User | None:
        return await client.users.by_user_id("ghost@contoso.test").get()

    with pytest.raises(ODataError) as caught:
        run_graph(sim, work)
    assert caught.value.response_status_code == 404
    assert caught.value.error is not None
    assert caught.value.error.code == "Request_ResourceNotFound"
    assert caught.value.error.inner_error is not None


def test_sdk_parses_eligibility_instances_filtered_by_principal_and_role(sim: SimulatorProcess) -> None:
    people = seed_people(sim)
    alex, sam = people["alex"]["id"], people["sam"]["id"]
    sim.seed(
        "graph/eligibility",
        [
            {"principalId": alex, "roleDefinitionId": EXCHANGE_ADMIN},
            {"principalId": "alex@contoso.test", "roleDefinitionId": GLOBAL_ADMIN, "memberType": "Group"},
            {"principalId": sam, "roleDefinitionId": EXCHANGE_ADMIN},
        ],
    )
    builder = RoleEligibilityScheduleInstancesRequestBuilder

    async def query(client: GraphServiceClient, expression: str) -> list[Any]:
        params = builder.RoleEligibilityScheduleInstancesRequestBuilderGetQueryParameters(filter=expression)
        page = await client.role_management.directory.role_eligibility_schedule_instances.get(
            request_configuration=RequestConfiguration(query_parameters=params)
        )
        assert page is not None and page.value is not None
        return list(page.value)

    async def work(client: GraphServiceClient) -> tuple[list[Any], list[Any]]:
        everything = await query(client, f"principalId eq '{alex}'")
        one = await query(client, f"principalId eq '{alex}' and roleDefinitionId eq '{GLOBAL_ADMIN}'")
        return everything, one

    everything, one = run_graph(sim, work)
    assert {i.role_definition_id for i in everything} == {EXCHANGE_ADMIN, GLOBAL_ADMIN}
    assert all(i.principal_id == alex for i in everything)
    [instance] = one
    assert instance.role_definition_id == GLOBAL_ADMIN
    assert instance.directory_scope_id == "/"
    assert instance.member_type == "Group"
    assert isinstance(instance.start_date_time, datetime)
    assert instance.end_date_time is None
    assert instance.id and instance.id.endswith("-1-e")


def test_sdk_parses_assignment_instances_and_hides_expired_ones(sim: SimulatorProcess) -> None:
    people = seed_people(sim)
    alex = people["alex"]["id"]
    now = datetime.now(UTC).replace(microsecond=0)
    seeded = sim.seed(
        "graph/assignments",
        {
            "principalId": alex,
            "roleDefinitionId": EXCHANGE_ADMIN,
            "startDateTime": (now - timedelta(minutes=5)).isoformat(),
            "endDateTime": (now + timedelta(hours=1)).isoformat(),
        },
    )
    sim.seed(
        "graph/assignments",
        {
            "principalId": alex,
            "roleDefinitionId": GLOBAL_ADMIN,
            "startDateTime": (now - timedelta(hours=2)).isoformat(),
            "endDateTime": (now - timedelta(hours=1)).isoformat(),
        },
    )
    builder = RoleAssignmentScheduleInstancesRequestBuilder

    async def work(client: GraphServiceClient) -> list[Any]:
        params = builder.RoleAssignmentScheduleInstancesRequestBuilderGetQueryParameters(
            filter=f"principalId eq '{alex}' and roleDefinitionId eq '{EXCHANGE_ADMIN}'"
        )
        page = await client.role_management.directory.role_assignment_schedule_instances.get(
            request_configuration=RequestConfiguration(query_parameters=params)
        )
        everything = await client.role_management.directory.role_assignment_schedule_instances.get()
        assert page is not None and page.value is not None
        assert everything is not None and everything.value is not None
        assert len(everything.value) == 1  # the expired Global Administrator assignment is not listed
        return list(page.value)

    [instance] = run_graph(sim, work)
    assert instance.id == seeded["id"]
    assert instance.principal_id == alex
    assert instance.role_definition_id == EXCHANGE_ADMIN
    assert instance.assignment_type == "Activated"
    assert instance.member_type == "Direct"
    assert instance.role_assignment_origin_id == seeded["roleAssignmentOriginId"]
    assert instance.end_date_time == now + timedelta(hours=1)


def test_sdk_lists_pending_schedule_requests(sim: SimulatorProcess) -> None:
    people = seed_people(sim)
    alex = people["alex"]["id"]
    pending = sim.seed(
        "graph/requests",
        {
            "principalId": alex,
            "roleDefinitionId": EXCHANGE_ADMIN,
            "status": "PendingProvisioning",
            "justification": "INC0010001: mail flow down",
            "ticketInfo": {"ticketNumber": "INC0010001", "ticketSystem": "ServiceNow"},
        },
    )
    sim.seed(
        "graph/requests", {"principalId": alex, "roleDefinitionId": GLOBAL_ADMIN, "status": "Provisioned"}
    )
    builder = RoleAssignmentScheduleRequestsRequestBuilder

    async def work(client: GraphServiceClient) -> list[UnifiedRoleAssignmentScheduleRequest]:
        params = builder.RoleAssignmentScheduleRequestsRequestBuilderGetQueryParameters(
            filter=f"principalId eq '{alex}' and status eq 'PendingProvisioning'"
        )
        page = await client.role_management.directory.role_assignment_schedule_requests.get(
            request_configuration=RequestConfiguration(query_parameters=params)
        )
        assert page is not None and page.value is not None
        return list(page.value)

    [request] = run_graph(sim, work)
    assert request.id == pending["id"]
    assert request.status == "PendingProvisioning"
    assert request.ticket_info is not None and request.ticket_info.ticket_number == "INC0010001"
    assert request.schedule_info is not None and request.schedule_info.expiration is not None
    assert request.schedule_info.expiration.duration == timedelta(hours=1)


def test_sdk_post_of_a_schedule_request_without_action_is_refused_and_cancel_is_not_served(
    sim: SimulatorProcess,
) -> None:
    # The writes themselves are covered in test_graph_pim.py; here: a body without an action is a 400, and
    # /cancel (not simulated) says so with 501 rather than pretending.
    async def post(client: GraphServiceClient) -> Any:
        body = UnifiedRoleAssignmentScheduleRequest(principal_id="x", role_definition_id=GLOBAL_ADMIN)
        return await client.role_management.directory.role_assignment_schedule_requests.post(body)

    async def cancel(client: GraphServiceClient) -> Any:
        requests = client.role_management.directory.role_assignment_schedule_requests
        return await requests.by_unified_role_assignment_schedule_request_id("r-1").cancel.post()

    for work, status, code in ((post, 400, "BadRequest"), (cancel, 501, "NotImplemented")):
        with pytest.raises(ODataError) as caught:
            run_graph(sim, work)
        assert caught.value.response_status_code == status
        assert caught.value.error is not None and caught.value.error.code == code


def test_sdk_group_membership_direct_transitive_and_check_member_groups(sim: SimulatorProcess) -> None:
    people = seed_people(sim)
    alex, sam = people["alex"]["id"], people["sam"]["id"]
    leads = sim.seed("graph/groups", {"displayName": "On-call leads", "members": ["alex@contoso.test"]})
    approvers = sim.seed("graph/groups", {"displayName": "Approvers", "members": [leads["id"], sam]})
    unrelated = sim.seed("graph/groups", {"displayName": "Unrelated"})

    async def work(client: GraphServiceClient) -> tuple[list[str], list[str], list[str]]:
        members = await client.groups.by_group_id(approvers["id"]).members.get()
        transitive = await client.groups.by_group_id(approvers["id"]).transitive_members.get()
        body = CheckMemberGroupsPostRequestBody(group_ids=[approvers["id"], unrelated["id"], leads["id"]])
        checked = await client.users.by_user_id(alex).check_member_groups.post(body)
        assert members is not None and members.value is not None
        assert transitive is not None and transitive.value is not None
        assert checked is not None and checked.value is not None
        direct_types = {type(m).__name__ for m in members.value}
        assert direct_types == {"User", "Group"}  # @odata.type picked the model class
        return (
            sorted(str(m.id) for m in members.value),
            sorted(str(m.id) for m in transitive.value if isinstance(m, User)),
            list(checked.value),
        )

    direct, transitive_users, checked = run_graph(sim, work)
    assert direct == sorted([leads["id"], sam])
    assert transitive_users == sorted([alex, sam])
    assert checked == [approvers["id"], leads["id"]]


# -- Graph over plain HTTP: auth, headers, errors, paging ---------------------------------------------------


def test_graph_requires_a_bearer_token(sim: SimulatorProcess) -> None:
    seed_people(sim)
    for headers in ({}, {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer"}):
        response = httpx.get(f"{sim.graph_base_url}/users/alex@contoso.test", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
        assert response.headers["www-authenticate"].startswith("Bearer ")
        assert response.headers["request-id"]
    assert [c["status"] for c in sim.calls("graph")] == [401, 401, 401]


def test_graph_correlation_headers_on_every_response(sim: SimulatorProcess) -> None:
    ok = httpx.get(
        f"{sim.graph_base_url}/users", headers={**GRAPH_HEADERS, "client-request-id": "my-correlation"}
    )
    assert ok.status_code == 200
    assert ok.headers["client-request-id"] == "my-correlation"
    assert ok.headers["content-type"].startswith("application/json")
    missing = httpx.get(f"{sim.graph_base_url}/users/ghost@contoso.test", headers=GRAPH_HEADERS)
    error = missing.json()["error"]
    # The body's innerError names the same ids as the headers; a caller-less id is invented.
    assert error["innerError"]["request-id"] == missing.headers["request-id"]
    assert error["innerError"]["client-request-id"] == missing.headers["client-request-id"]
    assert missing.headers["request-id"] != ok.headers["request-id"]
    recorded = sim.calls("graph")
    assert recorded[0]["client_request_id"] == "my-correlation"


def test_graph_refuses_what_it_does_not_support(sim: SimulatorProcess) -> None:
    base = f"{sim.graph_base_url}/users"
    cases = {
        "$filter=jobTitle eq 'x'": "Request_UnsupportedQuery",
        "$filter=startswith(mail,'a')": "BadRequest",
        "$filter=mail ne 'a'": "BadRequest",
        "$filter=mail eq": "BadRequest",
        "$expand=manager": "BadRequest",
        "$select=nonsense": "BadRequest",
    }
    for query, code in cases.items():
        response = httpx.get(f"{base}?{query}", headers=GRAPH_HEADERS)
        assert response.status_code == 400, query
        assert response.json()["error"]["code"] == code, query
    unknown_route = httpx.get(f"{sim.graph_base_url}/me/nonsense", headers=GRAPH_HEADERS)
    assert unknown_route.status_code == 404
    assert "error" in unknown_route.json()


def test_graph_pages_with_next_link(sim: SimulatorProcess) -> None:
    sim.seed("graph/users", [{"userPrincipalName": f"user{n}@contoso.test"} for n in range(5)])
    first = f"{sim.graph_base_url}/users?$top=2&$count=true"
    assert httpx.get(first, headers=GRAPH_HEADERS).status_code == 400  # $count needs ConsistencyLevel
    url: str | None = first
    seen: list[str] = []
    pages = 0
    while url:
        body = httpx.get(url, headers={**GRAPH_HEADERS, "ConsistencyLevel": "eventual"}).json()
        assert body["@odata.count"] == 5
        seen += [u["userPrincipalName"] for u in body["value"]]
        url = body.get("@odata.nextLink")
        pages += 1
    assert pages == 3
    assert seen == [f"user{n}@contoso.test" for n in range(5)]


def test_calls_are_recorded_per_endpoint(sim: SimulatorProcess) -> None:
    people = seed_people(sim)
    url = f"{sim.graph_base_url}/roleManagement/directory/roleEligibilityScheduleInstances"
    for _ in range(3):
        httpx.get(url, params={"$filter": f"principalId eq '{people['alex']['id']}'"}, headers=GRAPH_HEADERS)
    httpx.get(f"{sim.graph_base_url}/users", headers=GRAPH_HEADERS)
    eligibility = sim.calls("graph", path_contains="roleEligibilityScheduleInstances")
    assert len(eligibility) == 3
    assert eligibility[0]["method"] == "GET"
    assert eligibility[0]["path"] == "/roleManagement/directory/roleEligibilityScheduleInstances"
    assert eligibility[0]["query"] == {"$filter": f"principalId eq '{people['alex']['id']}'"}
    assert len(sim.calls("graph")) == 4
    assert sim.calls("servicenow") == []


# -- ServiceNow ---------------------------------------------------------------------------------------------


def seed_incident(sim: SimulatorProcess, **fields: Any) -> dict[str, Any]:
    spec = {
        "short_description": "Mail flow down",
        "priority": 1,
        "state": 2,
        "assigned_to": {"user_name": "alex", "email": "alex@contoso.test", "name": "Alex Responder"},
        "opened_by": {"user_name": "desk", "email": "desk@contoso.test"},
        "assignment_group": "Messaging Ops",
        "major_incident_state": "accepted",
        **fields,
    }
    return dict(sim.seed("servicenow/incidents", spec))


def test_servicenow_get_incident_by_sys_id_and_by_number(sim: SimulatorProcess) -> None:
    incident = seed_incident(sim)
    assert len(incident["sys_id"]) == 32 and incident["number"].startswith("INC")
    base = f"{sim.servicenow_base_url}/api/now/table/incident"
    one = httpx.get(f"{base}/{incident['sys_id']}", auth=SN_AUTH)
    assert one.status_code == 200
    record = one.json()["result"]
    assert record["number"] == incident["number"]
    assert record["priority"] == "1" and record["state"] == "2" and record["active"] == "true"
    assert record["work_notes"] == ""
    assignee = record["assigned_to"]
    assert assignee["value"] == incident["assigned_to"]
    assert assignee["link"] == f"{sim.servicenow_base_url}/api/now/table/sys_user/{assignee['value']}"
    user = httpx.get(assignee["link"], auth=SN_AUTH).json()["result"]
    assert user["email"] == "alex@contoso.test" and user["user_name"] == "alex"

    listed = httpx.get(base, params={"sysparm_query": f"number={incident['number']}"}, auth=SN_AUTH)
    assert [r["sys_id"] for r in listed.json()["result"]] == [incident["sys_id"]]
    assert listed.headers["x-total-count"] == "1"
    walked = httpx.get(
        base,
        params={
            "sysparm_query": "assigned_to.email=ALEX@contoso.test^active=true",
            "sysparm_fields": "number,assigned_to.email",
        },
        auth=SN_AUTH,
    )
    assert walked.json()["result"] == [
        {"number": incident["number"], "assigned_to.email": "alex@contoso.test"}
    ]


def test_servicenow_patch_state_and_work_notes_journal(sim: SimulatorProcess) -> None:
    incident = seed_incident(sim)
    url = f"{sim.servicenow_base_url}/api/now/table/incident/{incident['sys_id']}"
    first = httpx.patch(url, json={"work_notes": "Validation: responder is on call"}, auth=SN_AUTH)
    assert first.status_code == 200
    assert first.json()["result"]["work_notes"] == ""  # journal fields read back empty, as in ServiceNow
    second = httpx.patch(url, json={"work_notes": "Access pending (approval)", "state": 3}, auth=SN_AUTH)
    record = second.json()["result"]
    assert record["state"] == "3" and record["sys_mod_count"] == "2" and record["sys_updated_by"] == "svc-pim"

    view = sim.control("GET", f"servicenow/incidents/{incident['number']}")
    assert [n["value"] for n in view["work_notes"]] == [
        "Validation: responder is on call",
        "Access pending (approval)",
    ]
    assert view["work_notes"][0]["sys_created_by"] == "svc-pim"
    assert view["incident"]["state"] == "3"
    # The journal is also readable the way ServiceNow stores it.
    journal = httpx.get(
        f"{sim.servicenow_base_url}/api/now/table/sys_journal_field",
        params={"sysparm_query": f"element_id={incident['sys_id']}^element=work_notes"},
        auth=SN_AUTH,
    ).json()["result"]
    assert [row["value"] for row in journal] == [n["value"] for n in view["work_notes"]]

    closed = httpx.patch(url, json={"state": "7", "u_not_a_field": "x"}, auth=SN_AUTH).json()["result"]
    assert closed["active"] == "false" and closed["closed_at"]
    assert sim.control("GET", f"servicenow/incidents/{incident['sys_id']}")["updates"][-1][
        "ignored_fields"
    ] == ["u_not_a_field"]


def test_servicenow_errors_and_auth(sim: SimulatorProcess) -> None:
    base = f"{sim.servicenow_base_url}/api/now/table"
    missing = httpx.get(f"{base}/incident/{'0' * 32}", auth=SN_AUTH)
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "message": "No Record found",
            "detail": "Record doesn't exist or ACL restricts the record retrieval",
        },
        "status": "failure",
    }
    assert httpx.get(f"{base}/cmdb_ci", auth=SN_AUTH).status_code == 400
    assert (
        httpx.get(f"{base}/incident", params={"sysparm_query": "numberLIKEINC"}, auth=SN_AUTH).status_code
        == 400
    )
    for auth in (None, ("user", "")):
        denied = httpx.get(f"{base}/incident", auth=auth)
        assert denied.status_code == 401
        assert denied.json()["error"]["message"] == "User Not Authenticated"
    assert sim.calls("servicenow")[0]["identity"] == "svc-pim"


def test_servicenow_who_is_on_call(sim: SimulatorProcess) -> None:
    now = datetime.now(UTC)
    rota = sim.seed(
        "servicenow/oncall",
        {"group": "Messaging Ops", "users": [{"user_name": "alex", "email": "alex@contoso.test"}, "alex"]},
    )
    sim.seed(
        "servicenow/oncall",
        {
            "group": "Identity Ops",
            "users": [{"user_name": "kim", "email": "kim@contoso.test"}],
            "start": (now + timedelta(hours=1)).isoformat(),
        },
    )
    url = f"{sim.servicenow_base_url}/api/now/on_call_rota/whoisoncall"
    by_rota = httpx.get(url, params={"rota_ids": rota["rota_id"]}, auth=SN_AUTH).json()["result"]
    assert [entry["order"] for entry in by_rota] == [1, 2]
    assert {entry["userId"] for entry in by_rota} == {rota["members"][0]["userId"]}
    assert set(by_rota[0]) == {"userId", "rota", "roster", "group", "memberId", "order", "isOverride"}
    by_group = httpx.get(url, params={"group_ids": rota["group_id"]}, auth=SN_AUTH).json()["result"]
    assert len(by_group) == 2
    # Kim's shift has not started: nobody from Identity Ops is on call now.
    everyone = httpx.get(url, auth=SN_AUTH).json()["result"]
    assert {e["group"] for e in everyone} == {rota["group_id"]}
    user = httpx.get(
        f"{sim.servicenow_base_url}/api/now/table/sys_user/{by_rota[0]['userId']}", auth=SN_AUTH
    ).json()["result"]
    assert user["email"] == "alex@contoso.test"


# -- Jira ---------------------------------------------------------------------------------------------------


def adf(text: str) -> dict[str, Any]:
    return {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}],
    }


def seed_issue(sim: SimulatorProcess) -> dict[str, Any]:
    return dict(
        sim.seed(
            "jira/issues",
            {
                "key": "OPS-42",
                "summary": "Mail flow down",
                "priority": "Highest",
                "assignee": {"emailAddress": "alex@contoso.test", "displayName": "Alex Responder"},
                "reporter": "desk@contoso.test",
                "labels": ["major-incident"],
                "fields": {"customfield_10050": "Exchange Administrator", "customfield_10054": "OPS-41"},
            },
        )
    )


def test_jira_get_issue(sim: SimulatorProcess) -> None:
    seed_issue(sim)
    response = httpx.get(f"{sim.jira_base_url}/rest/api/3/issue/OPS-42", auth=JIRA_AUTH)
    assert response.status_code == 200
    issue = response.json()
    fields = issue["fields"]
    assert issue["key"] == "OPS-42" and issue["id"].isdigit()
    assert fields["status"]["name"] == "Open" and fields["status"]["statusCategory"]["key"] == "new"
    assert fields["priority"]["name"] == "Highest"
    assert fields["assignee"]["emailAddress"] == "alex@contoso.test"
    assert fields["customfield_10050"] == "Exchange Administrator"
    assert fields["labels"] == ["major-incident"]
    narrowed = httpx.get(
        f"{sim.jira_base_url}/rest/api/3/issue/OPS-42?fields=status,priority", auth=JIRA_AUTH
    )
    assert set(narrowed.json()["fields"]) == {"status", "priority"}
    missing = httpx.get(f"{sim.jira_base_url}/rest/api/3/issue/OPS-999", auth=JIRA_AUTH)
    assert missing.status_code == 404 and missing.json()["errorMessages"]


def test_jira_comments_must_be_adf(sim: SimulatorProcess) -> None:
    seed_issue(sim)
    url = f"{sim.jira_base_url}/rest/api/3/issue/OPS-42/comment"
    created = httpx.post(url, json={"body": adf("Validation passed: responder on call")}, auth=JIRA_AUTH)
    assert created.status_code == 201
    comment = created.json()
    assert comment["id"].isdigit() and comment["author"]["emailAddress"] == "pim-bot@contoso.test"
    assert comment["body"] == adf("Validation passed: responder on call")
    for bad in (
        "plain text, as API v2 took it",
        {"type": "doc", "content": []},
        {"type": "doc", "version": 1, "content": [{"type": "blink", "content": []}]},
        {
            "type": "doc",
            "version": 1,
            "content": [{"type": "paragraph", "content": [{"type": "text", "text": ""}]}],
        },
        {"type": "doc", "version": 1, "content": [{"type": "text", "text": "inline at top level"}]},
    ):
        refused = httpx.post(url, json={"body": bad}, auth=JIRA_AUTH)
        assert refused.status_code == 400, bad
        assert "Atlassian Document" in refused.json()["errors"]["comment"]
    view = sim.control("GET", "jira/issues/OPS-42")
    assert [c["text"] for c in view["comments"]] == ["Validation passed: responder on call"]
    listed = httpx.get(url, auth=JIRA_AUTH).json()
    assert listed["total"] == 1 and listed["comments"][0]["body"] == adf(
        "Validation passed: responder on call"
    )


def test_jira_transitions(sim: SimulatorProcess) -> None:
    seed_issue(sim)
    url = f"{sim.jira_base_url}/rest/api/3/issue/OPS-42/transitions"
    transitions = httpx.get(url, auth=JIRA_AUTH).json()["transitions"]
    by_name = {t["name"]: t for t in transitions}
    assert "Access pending (approval)" in by_name and "Work in progress" in by_name
    target = by_name["Access pending (approval)"]
    assert target["to"]["name"] == "Access pending (approval)" and target["id"].isdigit()

    done = httpx.post(
        url,
        json={"transition": {"id": target["id"]}, "update": {"comment": [{"add": {"body": adf("Waiting")}}]}},
        auth=JIRA_AUTH,
    )
    assert done.status_code == 204 and done.content == b""
    issue = httpx.get(f"{sim.jira_base_url}/rest/api/3/issue/OPS-42", auth=JIRA_AUTH).json()
    assert issue["fields"]["status"]["name"] == "Access pending (approval)"
    unknown = httpx.post(url, json={"transition": {"id": "999"}}, auth=JIRA_AUTH)
    assert unknown.status_code == 400
    assert unknown.json()["errorMessages"] == ["Transition id '999' is not valid for this issue."]
    view = sim.control("GET", "jira/issues/OPS-42")
    assert view["status"] == "Access pending (approval)"
    assert [h["to"] for h in view["history"]] == ["Access pending (approval)"]
    assert [c["text"] for c in view["comments"]] == ["Waiting"]


def test_jira_auth_and_hidden_email(sim: SimulatorProcess) -> None:
    sim.seed(
        "jira/issues",
        {"key": "OPS-7", "assignee": {"emailAddress": "hidden@contoso.test", "emailVisible": False}},
    )
    assert httpx.get(f"{sim.jira_base_url}/rest/api/3/issue/OPS-7").status_code == 401
    assignee = httpx.get(f"{sim.jira_base_url}/rest/api/3/issue/OPS-7", auth=JIRA_AUTH).json()["fields"][
        "assignee"
    ]
    assert "emailAddress" not in assignee and assignee["accountId"]


# -- PagerDuty ----------------------------------------------------------------------------------------------


def test_pagerduty_oncalls_by_schedule(sim: SimulatorProcess) -> None:
    sim.seed(
        "pagerduty/oncalls",
        [
            {
                "schedule": {"id": "PSCHED1", "name": "Messaging primary"},
                "user": {"name": "Alex", "email": "alex@contoso.test"},
            },
            {
                "schedule": "PSCHED1",
                "user": {"name": "Sam", "email": "sam@contoso.test"},
                "escalation_level": 2,
            },
            {"schedule": {"id": "POTHER1"}, "user": {"name": "Kim", "email": "kim@contoso.test"}},
        ],
    )
    url = f"{sim.pagerduty_base_url}/oncalls"
    plain = httpx.get(url, params={"schedule_ids[]": "PSCHED1"}, headers=PD_HEADERS).json()
    assert [o["user"]["summary"] for o in plain["oncalls"]] == ["Alex", "Sam"]
    first = plain["oncalls"][0]
    assert first["user"]["type"] == "user_reference" and "email" not in first["user"]
    assert first["schedule"]["id"] == "PSCHED1" and first["escalation_level"] == 1
    assert first["start"].endswith("Z") and first["end"].endswith("Z")
    assert (plain["limit"], plain["offset"], plain["more"]) == (25, 0, False)

    expanded = httpx.get(
        url, params={"schedule_ids[]": "PSCHED1", "include[]": "users"}, headers=PD_HEADERS
    ).json()
    assert [o["user"]["email"] for o in expanded["oncalls"]] == ["alex@contoso.test", "sam@contoso.test"]
    paged = httpx.get(url, params={"limit": 1, "total": "true"}, headers=PD_HEADERS).json()
    assert len(paged["oncalls"]) == 1 and paged["more"] is True and paged["total"] == 3

    assert httpx.get(url, params={"schedule_ids": "PSCHED1"}, headers=PD_HEADERS).status_code == 400
    denied = httpx.get(url, headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 401 and denied.json()["error"]["message"] == "Authentication failed"


# -- senders ------------------------------------------------------------------------------------------------

SECRET = "a-webhook-secret-that-is-long-enough-0123456789"


def test_servicenow_sender_signs_like_the_outbound_script(sim: SimulatorProcess) -> None:
    payload = {
        "event": "created",
        "number": "INC0010001",
        "priority": "1",
        "short_description": "Mail flow ↓",
    }
    answer = sim.control(
        "POST",
        "servicenow/send",
        json={
            "url": f"{sim.control_url}/echo/api/itsm/servicenow?status=202",
            "payload": payload,
            "secret": SECRET,
        },
    )
    assert answer["status"] == 202
    received = answer["body"]
    headers = received["headers"]
    body = received["body"].encode()
    assert json.loads(body) == payload
    timestamp = headers["x-signature-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["x-signature"] == f"sha256={expected}"
    assert received["path"] == "/_sim/echo/api/itsm/servicenow"

    # Negative-test knobs: a fixed stale timestamp, a signature over another body, a raw malformed body.
    stale = sim.control(
        "POST",
        "servicenow/send",
        json={
            "url": f"{sim.control_url}/echo",
            "body": "{not json",
            "secret": SECRET,
            "timestamp": 1000,
            "signed_body": "{}",
        },
    )
    sent = stale["body"]
    assert sent["body"] == "{not json" and sent["headers"]["x-signature-timestamp"] == "1000"
    other = hmac.new(SECRET.encode(), b"1000.{}", hashlib.sha256).hexdigest()
    assert sent["headers"]["x-signature"] == f"sha256={other}"
    unsigned = sim.control(
        "POST",
        "servicenow/send",
        json={
            "url": f"{sim.control_url}/echo",
            "payload": {},
            "secret": SECRET,
            "omit_headers": ["X-Signature"],
        },
    )
    assert "x-signature" not in unsigned["body"]["headers"]


def test_jira_sender_signs_like_a_jira_webhook(sim: SimulatorProcess) -> None:
    payload = {"webhookEvent": "jira:issue_created", "timestamp": 1, "issue": {"key": "OPS-42", "fields": {}}}
    answer = sim.control(
        "POST",
        "jira/send",
        json={
            "url": f"{sim.control_url}/echo",
            "payload": payload,
            "secret": SECRET,
            "webhookIdentifier": "delivery-1",
        },
    )
    received = answer["body"]
    body = received["body"].encode()
    assert json.loads(body) == payload
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert received["headers"]["x-hub-signature"] == f"sha256={expected}"
    assert received["headers"]["x-atlassian-webhook-identifier"] == "delivery-1"
    generated = sim.control(
        "POST", "jira/send", json={"url": f"{sim.control_url}/echo", "payload": {}, "secret": SECRET}
    )
    assert generated["body"]["headers"]["x-atlassian-webhook-identifier"]


def test_sender_posts_to_a_separate_receiver(sim: SimulatorProcess, tmp_path: Path) -> None:
    # A second simulator process stands in for the app: the sender really crosses processes.
    with SimulatorProcess(log_path=tmp_path / "receiver.log") as receiver:
        answer = sim.control(
            "POST",
            "jira/send",
            json={"url": f"{receiver.control_url}/echo?status=401", "payload": {}, "secret": "s"},
        )
        assert answer["status"] == 401
        assert answer["sent"]["url"].startswith(receiver.url)


def test_senders_refuse_non_loopback_targets_and_bad_specs(sim: SimulatorProcess) -> None:
    for spec in (
        {"url": "https://example.com/api/itsm/servicenow", "payload": {}, "secret": SECRET},
        {"url": f"{sim.control_url}/echo", "secret": SECRET},
        {"url": f"{sim.control_url}/echo", "payload": {}},
        {"url": f"{sim.control_url}/echo", "payload": {}, "secret": SECRET, "surprise": 1},
    ):
        response = httpx.post(f"{sim.control_url}/servicenow/send", json=spec)
        assert response.status_code == 400, spec


# -- fault injection ----------------------------------------------------------------------------------------


def test_fault_429_with_retry_after_then_recovery(sim: SimulatorProcess) -> None:
    seed_people(sim)
    sim.control(
        "POST",
        "faults",
        json={"service": "graph", "path_contains": "/users", "status": 429, "retry_after": 7},
    )
    url = f"{sim.graph_base_url}/users/alex@contoso.test"
    throttled = httpx.get(url, headers=GRAPH_HEADERS)
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "7"
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert throttled.headers["request-id"]
    assert httpx.get(url, headers=GRAPH_HEADERS).status_code == 200  # count defaults to 1
    calls = sim.calls("graph")
    assert calls[0]["fault"] is not None and calls[1]["fault"] is None
    assert sim.control("GET", "faults")["faults"][0]["exhausted"] is True


def test_sdk_retries_an_injected_503_honouring_retry_after(sim: SimulatorProcess) -> None:
    seed_people(sim)
    sim.control(
        "POST",
        "faults",
        json={"service": "graph", "path_contains": "/users/", "status": 503, "retry_after": 1},
    )

    async def work(client: GraphServiceClient) -> User | None:
        return await client.users.by_user_id("alex@contoso.test").get()

    started = time.monotonic()
    user = run_graph(sim, work)
    assert user is not None and user.user_principal_name == "alex@contoso.test"
    assert time.monotonic() - started >= 1.0
    assert [c["status"] for c in sim.calls("graph")] == [503, 200]


def test_fault_with_code_override_and_method_filter(sim: SimulatorProcess) -> None:
    sim.control(
        "POST",
        "faults",
        json={
            "service": "graph",
            "path_contains": "roleAssignmentScheduleRequests",
            "method": "POST",
            "status": 400,
            "code": "RoleAssignmentExists",
            "message": "The Role assignment already exists.",
            "count": None,
        },
    )
    url = f"{sim.graph_base_url}/roleManagement/directory/roleAssignmentScheduleRequests"
    assert httpx.get(url, headers=GRAPH_HEADERS).status_code == 200  # GET is not affected

    async def work(client: GraphServiceClient) -> Any:
        body = UnifiedRoleAssignmentScheduleRequest(principal_id="x", role_definition_id=GLOBAL_ADMIN)
        return await client.role_management.directory.role_assignment_schedule_requests.post(body)

    for _ in range(2):  # count None: every matching call
        with pytest.raises(ODataError) as caught:
            run_graph(sim, work)
        assert caught.value.error is not None and caught.value.error.code == "RoleAssignmentExists"


def test_latency_fault_and_other_services(sim: SimulatorProcess) -> None:
    seed_incident(sim, number="INC0099999")
    sim.control("POST", "faults", json={"service": "servicenow", "latency_ms": 300})
    started = time.monotonic()
    slow = httpx.get(f"{sim.servicenow_base_url}/api/now/table/incident", auth=SN_AUTH)
    assert slow.status_code == 200 and time.monotonic() - started >= 0.3
    sim.control("POST", "faults", json={"service": "pagerduty", "status": 429, "retry_after": 2})
    limited = httpx.get(f"{sim.pagerduty_base_url}/oncalls", headers=PD_HEADERS)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == 2020
    sim.control("POST", "faults", json={"service": "jira", "status": 503})
    assert httpx.get(f"{sim.jira_base_url}/rest/api/3/issue/X-1", auth=JIRA_AUTH).status_code == 503
    for bad in (
        {"service": "nope", "status": 500},
        {"service": "graph"},
        {"service": "graph", "status": 1000},
    ):
        assert httpx.post(f"{sim.control_url}/faults", json=bad).status_code == 400
    httpx.delete(f"{sim.control_url}/faults")
    assert sim.control("GET", "faults")["faults"] == []


# -- control API and process --------------------------------------------------------------------------------


def test_seeding_is_strict_and_reset_clears_everything(sim: SimulatorProcess) -> None:
    seed_people(sim)
    seed_issue(sim)
    typo = httpx.post(f"{sim.control_url}/graph/users", json={"userPrincipalName": "a@b.test", "mial": "x"})
    assert typo.status_code == 400 and "mial" in typo.json()["error"]
    clash = httpx.post(f"{sim.control_url}/graph/users", json={"userPrincipalName": "alex@contoso.test"})
    assert clash.status_code == 409
    bad_role = httpx.post(
        f"{sim.control_url}/graph/eligibility",
        json={"principalId": "alex@contoso.test", "roleDefinitionId": "Exchange"},
    )
    assert bad_role.status_code == 400
    assert httpx.get(f"{sim.control_url}/jira/issues/NOPE-1").status_code == 404

    state = sim.state()
    assert len(state["graph"]["users"]) == 2 and len(state["jira"]["issues"]) == 1
    assert state["base_urls"]["graph"] == sim.graph_base_url
    sim.reset()
    state = sim.state()
    assert state["graph"]["users"] == [] and state["jira"]["issues"] == [] and state["calls"] == []


def test_settings_names_are_the_apps() -> None:
    process = SimulatorProcess(port=7081)
    assert process.settings == {
        "GRAPH_BASE_URL": "http://127.0.0.1:7081/graph/v1.0",
        "SERVICENOW_BASE_URL": "http://127.0.0.1:7081/servicenow",
        "JIRA_BASE_URL": "http://127.0.0.1:7081/jira",
        "PAGERDUTY_BASE_URL": "http://127.0.0.1:7081/pagerduty",
        "BOT_CONNECTOR_SERVICE_URL": "http://127.0.0.1:7081/teams",
        "BOT_OPENID_METADATA_URL": "http://127.0.0.1:7081/botframework/v1/.well-known/openidconfiguration",
        "EXCHANGE_ADMIN_BASE_URL": "http://127.0.0.1:7081/exchange",
    }
    assert set(process.settings) <= set(SETTINGS_VARIABLES)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_process_exits_cleanly_on_signal(sig: signal.Signals, tmp_path: Path) -> None:
    process = SimulatorProcess(log_path=tmp_path / "sim.log")
    process.start()
    assert process.running
    assert process.stop(sig) == 0
    assert not process.running
    assert "listening on" in (tmp_path / "sim.log").read_text()


def test_cli_refuses_a_non_loopback_host() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "local.simulators", "--host", "0.0.0.0", "--port", "0"],  # noqa: S104
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "loopback" in result.stderr


def test_basic_auth_helper_is_strict() -> None:
    # The shape check behind ServiceNow's and Jira's 401s, exercised without a server.
    from starlette.requests import Request

    from local.simulators.servicenow import basic_auth_user

    def request_with(header: str | None) -> Request:
        headers = [(b"authorization", header.encode())] if header is not None else []
        return Request(
            {"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""}
        )

    def basic(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert basic_auth_user(request_with(basic("user:pw"))) == "user"
    assert basic_auth_user(request_with(basic("user:"))) is None
    assert basic_auth_user(request_with(basic("nocolon"))) is None
    assert basic_auth_user(request_with("Basic !!!")) is None
    assert basic_auth_user(request_with(None)) is None
