"""The admin script that grants the app's identity its permissions (infra/scripts/grant_permissions.py), run
against the Graph simulator process over HTTP with the managed-identity credential pointed at the simulators'
token endpoint; and its one list of what the app needs (``NEEDS``), checked against every Graph and Exchange
call the app makes, so that the list cannot fall behind the code (nor ahead of it)."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import io
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from azure.identity import ManagedIdentityCredential

from local.simulators.graph import (
    APP_IDENTITY_PRINCIPAL_ID,
    EXCHANGE_SERVICE_PRINCIPAL_ID,
    GRAPH_SERVICE_PRINCIPAL_ID,
    default_service_principals,
)
from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from shared.directory import EntraDirectory, graph_client
from shared.exchange import ExchangeRoleGroups
from shared.pim import Pim

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "infra" / "scripts" / "grant_permissions.py"


def _load_script() -> ModuleType:
    """The script's module, loaded from its file. Not imported as ``infra.scripts...``: under pytest the name
    ``infra`` is this test package (tests/ has no __init__.py). Without bytecode: test_no_secrets_in_clear.py
    reads every file under infra/ as text, and a __pycache__ there would fail it."""
    spec = importlib.util.spec_from_file_location("grant_permissions", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


if TYPE_CHECKING:
    from infra.scripts import grant_permissions as gp
else:
    gp = _load_script()

APP = APP_IDENTITY_PRINCIPAL_ID
PRIVILEGED_ROLE_ADMIN = "e8611ab8-c189-46e8-94e1-60213ab1f814"
GLOBAL_READER = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
EXCHANGE_ADMIN = "29232cdf-9323-42fd-ade2-1d097af3e4de"
TENANT = "11111111-2222-4333-8444-555555555555"
GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
STATUSES = ("granted", "already present", "would grant", "warning")
LABELS = [need.label for need in gp.NEEDS]


# -- running the script against the simulator ----------------------------------------------------------------


@pytest.fixture
def credential(sim: SimulatorProcess, monkeypatch: pytest.MonkeyPatch) -> ManagedIdentityCredential:
    """A real azure-identity credential (the script's AzureCliCredential needs az): the managed-identity one,
    pointed at the simulators' token endpoint, as the integration tests use."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.url + TOKEN_PATH)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    return ManagedIdentityCredential()


@dataclass(frozen=True)
class Run:
    code: int
    lines: list[str]
    err: str

    @property
    def items(self) -> list[tuple[str, str]]:
        """(status, the rest) of each item line, in order."""
        found = []
        for line in self.lines:
            status = next((s for s in STATUSES if line.startswith(f"{s} ")), None)
            if status is not None:
                found.append((status, line[len(status) :].strip()))
        return found


def run_script(sim: SimulatorProcess, credential: Any, *args: str, principal: str = APP) -> Run:
    out, err = io.StringIO(), io.StringIO()
    argv = ["--principal-id", principal, "--graph-base-url", sim.graph_base_url, *args]
    code = gp.main(argv, credential=credential, out=out, err=err)
    return Run(code, out.getvalue().splitlines(), err.getvalue())


def graph_post(sim: SimulatorProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A write straight on the simulator's Graph API (what someone did by hand before the script ran)."""
    response = httpx.post(f"{sim.graph_base_url}{path}", json=body, headers={"Authorization": "Bearer test"})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def role_id(resource_id: str, value: str) -> str:
    """The seeded app role id of ``value`` (read from the simulator's data, not from the script)."""
    roles = default_service_principals()[resource_id]["appRoles"]
    return str(next(role["id"] for role in roles if role["value"] == value))


def grant_by_hand(sim: SimulatorProcess, resource_id: str, value: str) -> None:
    body = {"principalId": APP, "resourceId": resource_id, "appRoleId": role_id(resource_id, value)}
    graph_post(sim, f"/servicePrincipals/{APP}/appRoleAssignments", body)


def assign_by_hand(sim: SimulatorProcess, template_id: str) -> None:
    body = {"principalId": APP, "roleDefinitionId": template_id, "directoryScopeId": "/"}
    graph_post(sim, "/roleManagement/directory/roleAssignments", body)


def held(sim: SimulatorProcess) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """What the app's identity holds now: (resource id, app role id) and (Entra role, directory scope)."""
    graph = sim.state()["graph"]
    app_roles = {
        (a["resourceId"], a["appRoleId"]) for a in graph["appRoleAssignments"] if a["principalId"] == APP
    }
    roles = {(a["roleDefinitionId"], a["directoryScopeId"]) for a in graph["unifiedAssignments"]
             if a["principalId"] == APP}  # fmt: skip
    return app_roles, roles


def writes(sim: SimulatorProcess) -> list[dict[str, Any]]:
    return [c for c in sim.calls("graph") if c["method"] in ("POST", "PATCH", "PUT", "DELETE")]


# The least-privilege list, pinned: a change to it is a decision, made here and in docs/deploy.md.
GRAPH_PERMISSIONS = ("User.Read.All", "GroupMember.Read.All", "RoleManagement.ReadWrite.Directory",
                     "User.RevokeSessions.All")  # fmt: skip
EXPECTED_APP_ROLES = {
    (GRAPH_SERVICE_PRINCIPAL_ID, role_id(GRAPH_SERVICE_PRINCIPAL_ID, v)) for v in GRAPH_PERMISSIONS
}
EXPECTED_APP_ROLES.add(
    (EXCHANGE_SERVICE_PRINCIPAL_ID, role_id(EXCHANGE_SERVICE_PRINCIPAL_ID, "Exchange.ManageAsApp"))
)
EXPECTED_ROLES = {(PRIVILEGED_ROLE_ADMIN, "/"), (GLOBAL_READER, "/")}


@pytest.mark.stack
def test_a_first_run_grants_everything_and_the_identity_then_holds_exactly_that(
    sim: SimulatorProcess, credential: ManagedIdentityCredential
) -> None:
    run = run_script(sim, credential)
    assert (run.code, run.err) == (0, "")
    assert run.lines[0].startswith(f"service principal id-pim-app-sim (ManagedIdentity), object id {APP}")
    assert run.items == [("granted", label) for label in LABELS]
    assert run.lines[-1] == f"done: {len(LABELS)} granted, 0 already present"
    assert held(sim) == (EXPECTED_APP_ROLES, EXPECTED_ROLES)
    # Each write is sent once (the SDK's retry is off for writes), with its own client-request-id.
    assert len(writes(sim)) == len(LABELS)
    assert len({c["client_request_id"] for c in sim.calls("graph")}) == len(sim.calls("graph"))


@pytest.mark.stack
def test_a_second_run_changes_nothing_and_says_so(
    sim: SimulatorProcess, credential: ManagedIdentityCredential
) -> None:
    assert run_script(sim, credential).code == 0
    before = held(sim)
    sim.control("DELETE", "calls")
    again = run_script(sim, credential)
    assert (again.code, again.err) == (0, "")
    assert again.items == [("already present", label) for label in LABELS]
    assert again.lines[-1] == f"nothing to grant: {len(LABELS)} already present"
    assert writes(sim) == [] and held(sim) == before


@pytest.mark.stack
def test_a_dry_run_changes_nothing(sim: SimulatorProcess, credential: ManagedIdentityCredential) -> None:
    assign_by_hand(sim, PRIVILEGED_ROLE_ADMIN)
    sim.control("DELETE", "calls")
    run = run_script(sim, credential, "--dry-run")
    assert (run.code, run.err) == (0, "")
    expected = [
        ("already present" if "Privileged Role Administrator" in label else "would grant", label)
        for label in LABELS
    ]
    assert run.items == expected
    assert run.lines[-1] == f"dry run: {len(LABELS) - 1} would be granted, 1 already present, nothing changed"
    assert writes(sim) == []
    assert held(sim) == (set(), {(PRIVILEGED_ROLE_ADMIN, "/")})


@pytest.mark.stack
def test_permissions_beyond_the_list_are_reported_and_kept(
    sim: SimulatorProcess, credential: ManagedIdentityCredential
) -> None:
    grant_by_hand(sim, GRAPH_SERVICE_PRINCIPAL_ID, "Directory.Read.All")
    grant_by_hand(sim, GRAPH_SERVICE_PRINCIPAL_ID, "User.Read.All")
    assign_by_hand(sim, GLOBAL_ADMIN)
    run = run_script(sim, credential)
    assert (run.code, run.err) == (0, "")
    warnings = [rest for status, rest in run.items if status == "warning"]
    assert warnings == [
        "Microsoft Graph application permission Directory.Read.All is held but not needed by the app; "
        "not removed, review it",
        f"Entra role {GLOBAL_ADMIN} (directory scope /) is held but not needed by the app; "
        "not removed, review it",
    ]
    assert ("already present", "Microsoft Graph application permission User.Read.All") in run.items
    assert run.lines[-1] == f"done: {len(LABELS) - 1} granted, 1 already present; 2 warning(s)"
    app_roles, roles = held(sim)
    assert app_roles == EXPECTED_APP_ROLES | {
        (GRAPH_SERVICE_PRINCIPAL_ID, role_id(GRAPH_SERVICE_PRINCIPAL_ID, "Directory.Read.All"))
    }
    assert roles == EXPECTED_ROLES | {(GLOBAL_ADMIN, "/")}
    assert not [c for c in sim.calls("graph") if c["method"] == "DELETE"]


@pytest.mark.stack
def test_an_unknown_principal_is_a_clear_error_and_nothing_changes(
    sim: SimulatorProcess, credential: ManagedIdentityCredential
) -> None:
    unknown = str(uuid.uuid4())
    run = run_script(sim, credential, principal=unknown)
    assert (run.code, run.lines) == (1, [])
    assert run.err == (
        f"error: no service principal with object id {unknown} in this tenant; pass the identity's principal "
        "(object) id: azd env get-value APP_IDENTITY_PRINCIPAL_ID\n"
    )
    assert writes(sim) == [] and held(sim) == (set(), set())


@pytest.mark.stack
def test_a_user_is_not_taken_for_the_identity(
    sim: SimulatorProcess, credential: ManagedIdentityCredential
) -> None:
    alex = sim.seed("graph/users", {"userPrincipalName": "alex@contoso.test"})["id"]
    run = run_script(sim, credential, principal=alex)
    assert run.code == 1
    assert run.err.startswith(f"error: {alex} is a user, not a service principal;")
    assert writes(sim) == []


@pytest.mark.stack
def test_a_principal_id_that_is_not_a_guid_is_refused_before_any_call(
    sim: SimulatorProcess, credential: ManagedIdentityCredential
) -> None:
    run = run_script(sim, credential, principal="id-pim-app-sim")
    assert run.code == 1
    assert run.err == "error: --principal-id must be an object id (a GUID), got 'id-pim-app-sim'\n"
    assert sim.calls("graph") == []


def test_the_module_runs_as_documented_and_refuses_a_bad_id_before_signing_in() -> None:
    # `python -m infra.scripts.grant_permissions` from the repository root, as docs/deploy.md says; no az
    # needed: the id is checked before the first token is asked for.
    result = subprocess.run(
        [sys.executable, "-m", "infra.scripts.grant_permissions", "--principal-id", "not-a-guid"],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: --principal-id must be an object id (a GUID), got 'not-a-guid'\n"


@pytest.mark.stack
@pytest.mark.parametrize(
    ("method", "path_contains"),
    [("GET", "/servicePrincipals/"), ("POST", "/appRoleAssignments")],
    ids=["reading the principal", "the first grant"],
)
def test_a_403_from_graph_is_one_line_with_its_code_and_request_id(
    sim: SimulatorProcess, credential: ManagedIdentityCredential, method: str, path_contains: str
) -> None:
    sim.fault(
        service="graph", method=method, path_contains=path_contains, status=403,
        code="Authorization_RequestDenied", message="Insufficient privileges to complete the operation.",
    )  # fmt: skip
    run = run_script(sim, credential)
    assert run.code == 1
    assert run.err.count("\n") == 1 and run.err.startswith(f"error: Graph {method} /servicePrincipals/")
    assert (
        "failed (403 Authorization_RequestDenied): Insufficient privileges to complete the operation."
        in run.err
    )
    failed = next(c for c in sim.calls("graph") if c["status"] == 403)
    assert re.search(rf"\(request-id {GUID}, client-request-id {failed['client_request_id']}\)", run.err)
    assert run.err.rstrip().endswith(
        "sign in (az login) as a Privileged Role Administrator or Global Administrator"
    )
    assert not any(status == "granted" for status, _ in run.items)
    assert held(sim) == (set(), set())


# -- the list against the code -------------------------------------------------------------------------------

GRAPH_SHAPES = {
    gp.shape_key(call)
    for need in gp.NEEDS
    if isinstance(need, gp.AppPermission) and need.resource_app_id == gp.MICROSOFT_GRAPH
    for call in need.calls
}
EXCHANGE_SHAPES = {
    gp.shape_key(call)
    for need in gp.NEEDS
    if isinstance(need, gp.AppPermission) and need.resource_app_id == gp.EXCHANGE_ONLINE
    for call in need.calls
}
# The adapters through which the app talks to Graph and to Exchange's admin API.
GRAPH_MODULES = {"shared/directory.py", "shared/pim.py"}
UNIFIED = "/roleManagement/directory/roleAssignments"
EXCHANGE_MODULES = {"shared/exchange.py"}
APP_CODE = ("function_app.py", "orchestrators", "activities", "shared", "teams")


def _python_files() -> Iterator[Path]:
    for entry in APP_CODE:
        path = REPO_ROOT / entry
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _imports_msgraph(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "msgraph":
            return True
        if isinstance(node, ast.Import) and any(
            alias.name.split(".")[0] == "msgraph" for alias in node.names
        ):
            return True
    return False


def _path_literals(tree: ast.Module) -> set[str]:
    """Every string in the module that reads like a URL path ("/users", f"/users/{user_id}"): placeholders as
    ``{}``, module constants substituted (f"{REQUESTS_PATH}/{request_id}")."""
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    parts_of_fstrings = {
        id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                str(part.value) if isinstance(part, ast.Constant)
                else constants[part.value.id] if isinstance(part, ast.FormattedValue)
                and isinstance(part.value, ast.Name) and part.value.id in constants
                else "{}"
                for part in node.values
            )  # fmt: skip
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in parts_of_fstrings
        ):
            text = node.value
        else:
            continue
        if re.fullmatch(r"/[A-Za-z][^\s]*", text):
            found.add(text)
    return found


def _paths_in(modules: set[str]) -> set[str]:
    return set().union(*(_path_literals(ast.parse((REPO_ROOT / module).read_text())) for module in modules))


def _uncovered(paths: set[str], shapes: set[str]) -> set[str]:
    """The paths (placeholders ``{}``: any one segment) that match no shape's path."""
    concrete = {re.sub(r"\{id\}", "x", shape.split(" ", 1)[1]) for shape in shapes}
    return {
        path
        for path in paths
        if not any(re.fullmatch(re.escape(path).replace(r"\{\}", "[^/]+"), shape) for shape in concrete)
    }


def test_only_the_graph_adapters_import_msgraph() -> None:
    # The coverage checks below read (and exercise) these modules: Graph calls elsewhere would escape them.
    importing = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in _python_files()
        if _imports_msgraph(ast.parse(path.read_text(), str(path)))
    }
    assert importing == GRAPH_MODULES


def test_every_graph_and_exchange_path_in_the_source_is_covered_by_a_listed_permission() -> None:
    graph_paths = _paths_in(GRAPH_MODULES)
    exchange_paths = _paths_in(EXCHANGE_MODULES)
    # The scan finds what is there (so that an empty scan cannot pass) ...
    assert {"/users", "/users/{}/checkMemberGroups", f"{UNIFIED}/{{}}"} <= graph_paths
    assert exchange_paths == {"/adminapi/beta/{}/InvokeCommand"}
    # ... and the check finds a call no permission covers.
    assert _uncovered({"/sites/{}/drives", "/users/{}"}, GRAPH_SHAPES) == {"/sites/{}/drives"}
    assert _uncovered(graph_paths, GRAPH_SHAPES) == set()
    assert _uncovered(exchange_paths, EXCHANGE_SHAPES) == set()


# Every public coroutine of the adapters, each exercised below: a new one fails this test until it is.
EXERCISED = {
    EntraDirectory: {"find_user", "get_user", "member_groups", "role_eligibilities", "active_assignments",
                     "pending_requests"},
    Pim: {"assign", "remove", "get_request", "pending_requests", "assign_direct", "remove_direct",
          "role_holders", "pim_instances", "unified_assignments", "directory_role_members",
          "revoke_sessions"},
    ExchangeRoleGroups: {"members"},
}  # fmt: skip
NOT_CALLS = {EntraDirectory: {"traced"}, ExchangeRoleGroups: {"aclose"}}  # the funnel, and a close


async def _every_call(sim: SimulatorProcess, credential: ManagedIdentityCredential) -> None:
    alex = sim.seed("graph/users", {"userPrincipalName": "alex@contoso.test"})["id"]
    group = sim.seed("graph/groups", {"displayName": "On-call responders", "members": [alex]})["id"]
    sim.seed("graph/eligibility", {"principalId": alex, "roleDefinitionId": EXCHANGE_ADMIN})
    directory = EntraDirectory(graph_client(sim.graph_base_url, credential))
    pim = Pim(directory)
    await directory.find_user("alex@contoso.test")
    await directory.get_user(alex)
    await directory.member_groups(alex, [group])
    await directory.role_eligibilities(alex, EXCHANGE_ADMIN)
    await directory.active_assignments(alex, EXCHANGE_ADMIN)
    await directory.pending_requests(alex, EXCHANGE_ADMIN)
    assigned = await pim.assign(
        alex, EXCHANGE_ADMIN, timedelta(hours=1), "INC0010001: mail", "INC0010001", "ServiceNow"
    )
    assert assigned.request is not None, assigned
    await pim.get_request(assigned.request.id)
    await pim.pending_requests(alex, EXCHANGE_ADMIN)
    await pim.pim_instances(alex, EXCHANGE_ADMIN)
    await pim.unified_assignments(alex, EXCHANGE_ADMIN)
    await pim.directory_role_members(EXCHANGE_ADMIN)
    await pim.role_holders(EXCHANGE_ADMIN)
    # Too soon after the assignment: PIM refuses it, which is a call all the same.
    await pim.remove(alex, EXCHANGE_ADMIN, "INC0010001 resolved")
    direct = await pim.assign_direct(alex, GLOBAL_ADMIN)
    await pim.remove_direct(direct.assignment_id)
    await pim.revoke_sessions(alex)
    async with ExchangeRoleGroups(sim.exchange_base_url, TENANT, credential) as exchange:
        await exchange.members("Organization Management")


@pytest.mark.stack
def test_every_call_the_app_makes_is_covered_and_every_listed_call_is_made(
    sim: SimulatorProcess, credential: ManagedIdentityCredential
) -> None:
    for adapter, names in EXERCISED.items():
        public = {
            name for name, _ in inspect.getmembers(adapter, inspect.iscoroutinefunction)
            if not name.startswith("_")
        } - NOT_CALLS.get(adapter, set())  # fmt: skip
        assert public == names, f"{adapter.__name__}: exercise every public call here, and cover it in NEEDS"
    asyncio.run(_every_call(sim, credential))
    graph_calls = set(sim.calls_summary("graph"))
    exchange_calls = set(sim.calls_summary("exchange"))
    assert [c for c in sim.calls() if c["status"] >= 500] == []
    assert graph_calls - GRAPH_SHAPES == set(), "calls no permission in NEEDS covers"
    assert GRAPH_SHAPES - graph_calls == set(), "calls listed in NEEDS that the app no longer makes"
    assert exchange_calls == EXCHANGE_SHAPES
