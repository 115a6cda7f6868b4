"""The roster providers (shared.roster) against the Graph, PagerDuty and ServiceNow simulators, over real
HTTP."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from azure.identity import ManagedIdentityCredential

from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from shared.directory import EntraDirectory, graph_client
from shared.models import Person
from shared.policy import Policy, parse_policy
from shared.roster import (
    EntraGroupRoster,
    OnCallAnswer,
    OnCallRoster,
    PagerDutyRoster,
    RosterError,
    ServiceNowRotaRoster,
    on_call_roster,
)
from shared.settings import Settings, SettingsError
from tests.unit.test_settings import minimal_env

pytestmark = pytest.mark.stack

REPO_POLICY_PATH = Path(__file__).resolve().parents[2] / "policy" / "policy.toml"
PD_TOKEN = "pd-token-never-shown-0042"
SN_USER = "svc-pim"
SN_PASSWORD = "sn-password-never-shown-0815"
SCHEDULE = "PSCHED1"
OTHER_SCHEDULE = "PSCHED2"
ROTA_GROUP = "Messaging on-call"
ALEX = Person(user_name="alex", email="alex@contoso.test")
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _clean(sim: SimulatorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    sim.reset()
    # The Graph client authenticates as the app does in Azure: managed identity, here the simulator's.
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.url + TOKEN_PATH)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)


def ask(
    make: Callable[[], OnCallRoster], person: Person, directory_user_id: str | None = None
) -> OnCallAnswer:
    return run(make, lambda roster: roster.is_on_call(person, directory_user_id))


def run(make: Callable[[], OnCallRoster], work: Callable[[OnCallRoster], Awaitable[T]]) -> T:
    async def main() -> T:  # httpx clients belong to one event loop: build the provider inside it
        roster = make()
        try:
            return await work(roster)
        finally:
            await roster.aclose()

    return asyncio.run(main())


def refused(
    make: Callable[[], OnCallRoster], person: Person, directory_user_id: str | None = None
) -> RosterError:
    with pytest.raises(RosterError) as caught:
        ask(make, person, directory_user_id)
    return caught.value


def fault(sim: SimulatorProcess, service: str, status: int, **extra: Any) -> None:
    sim.control("POST", "faults", {"service": service, "status": status, **extra})


def directory(sim: SimulatorProcess) -> EntraDirectory:
    return EntraDirectory(graph_client(sim.graph_base_url, ManagedIdentityCredential()))


def policy_with_roster(roster: str) -> Policy:
    """The repo policy with its [roster] section replaced."""
    text = REPO_POLICY_PATH.read_text()
    text = re.sub(r'(?m)^provider = "entra_group"\ngroup_id = .*$', roster, text)
    return parse_policy(text)


# --- Entra group -----------------------------------------------------------------------------------------


def seed_entra(sim: SimulatorProcess) -> tuple[str, str, str]:
    alex = sim.seed("graph/users", {"userPrincipalName": "alex@contoso.test"})
    sam = sim.seed("graph/users", {"userPrincipalName": "sam@contoso.test"})
    group = sim.seed("graph/groups", {"displayName": "On-call responders", "members": [alex["id"]]})
    return alex["id"], sam["id"], group["id"]


def test_entra_group_member_is_on_call(sim: SimulatorProcess) -> None:
    alex, _, group = seed_entra(sim)
    answer = ask(lambda: EntraGroupRoster(directory(sim), group), ALEX, alex)
    assert answer.on_call
    assert answer.reason == f"member of the on-call Entra group {group}"
    assert answer.evidence["provider"] == "entra_group" and answer.evidence["userId"] == alex
    (call,) = answer.evidence["calls"]
    assert call["path"] == f"/users/{alex}/checkMemberGroups" and call["status"] == 200
    assert call["requestId"] and call["clientRequestId"]


def test_entra_group_non_member_is_not_on_call(sim: SimulatorProcess) -> None:
    _, sam, group = seed_entra(sim)
    answer = ask(lambda: EntraGroupRoster(directory(sim), group), Person("sam", "sam@contoso.test"), sam)
    assert not answer.on_call
    assert answer.reason == f"not a member of the on-call Entra group {group}"


def test_entra_group_membership_through_a_nested_group_counts(sim: SimulatorProcess) -> None:
    alex = sim.seed("graph/users", {"userPrincipalName": "alex@contoso.test"})
    inner = sim.seed("graph/groups", {"displayName": "Messaging responders", "members": [alex["id"]]})
    outer = sim.seed("graph/groups", {"displayName": "On-call responders", "members": [inner["id"]]})
    assert ask(lambda: EntraGroupRoster(directory(sim), outer["id"]), ALEX, alex["id"]).on_call


def test_entra_group_without_a_directory_user_id_is_not_on_call_and_calls_nothing(
    sim: SimulatorProcess,
) -> None:
    _, _, group = seed_entra(sim)
    answer = ask(lambda: EntraGroupRoster(directory(sim), group), ALEX, None)
    assert not answer.on_call and "Entra user id is not known" in answer.reason
    assert sim.calls("graph") == []


def test_entra_group_graph_failure_is_a_roster_error(sim: SimulatorProcess) -> None:
    alex, _, group = seed_entra(sim)
    # 500: the SDK's own retry handler retries 429, 503 and 504, so those would succeed on a later attempt.
    fault(sim, "graph", 500, path_contains="checkMemberGroups", count=None)
    error = refused(lambda: EntraGroupRoster(directory(sim), group), ALEX, alex)
    assert error.provider == "entra_group" and error.status == 500 and error.transient
    assert error.request_id


# --- PagerDuty -------------------------------------------------------------------------------------------


def pagerduty(sim: SimulatorProcess, *schedules: str) -> Callable[[], OnCallRoster]:
    return lambda: PagerDutyRoster(sim.pagerduty_base_url, PD_TOKEN, schedules or (SCHEDULE,))


def on_call_in_pagerduty(sim: SimulatorProcess, email: str, schedule: str = SCHEDULE, **extra: Any) -> None:
    sim.seed("pagerduty/oncalls", {"user": {"name": email.split("@")[0], "email": email},
                                   "schedule": {"id": schedule}, **extra})  # fmt: skip


def test_pagerduty_on_call_by_email(sim: SimulatorProcess) -> None:
    on_call_in_pagerduty(sim, "alex@contoso.test")
    on_call_in_pagerduty(sim, "sam@contoso.test", escalation_level=2)
    answer = ask(pagerduty(sim), ALEX)
    assert answer.on_call
    assert answer.reason.startswith(f"on call in PagerDuty schedule {SCHEDULE}, until ")
    assert answer.evidence["matched"]["scheduleId"] == SCHEDULE
    assert len(answer.evidence["onCallUserIds"]) == 2
    (recorded,) = sim.calls("pagerduty")
    assert recorded["path"] == "/oncalls"
    assert recorded["query"]["schedule_ids[]"] == SCHEDULE
    assert recorded["query"]["include[]"] == "users"  # without it PagerDuty sends no emails


def test_pagerduty_email_that_differs_only_in_case_matches(sim: SimulatorProcess) -> None:
    on_call_in_pagerduty(sim, "Alex.Ops@Contoso.TEST")
    assert ask(pagerduty(sim), Person("alex", "alex.ops@contoso.test")).on_call


def test_pagerduty_someone_else_on_call_means_not_on_call(sim: SimulatorProcess) -> None:
    on_call_in_pagerduty(sim, "sam@contoso.test")
    on_call_in_pagerduty(
        sim, "alex@contoso.test", schedule=OTHER_SCHEDULE
    )  # a schedule the policy does not name
    answer = ask(pagerduty(sim), ALEX)
    assert not answer.on_call
    assert answer.reason == (
        f"none of the 1 people on call now in PagerDuty schedule(s) {SCHEDULE} has the email "
        "alex@contoso.test"
    )
    assert "matched" not in answer.evidence


def test_pagerduty_several_schedules_are_asked_at_once(sim: SimulatorProcess) -> None:
    on_call_in_pagerduty(sim, "alex@contoso.test", schedule=OTHER_SCHEDULE)
    answer = ask(pagerduty(sim, SCHEDULE, OTHER_SCHEDULE), ALEX)
    assert answer.on_call and answer.evidence["matched"]["scheduleId"] == OTHER_SCHEDULE
    (recorded,) = sim.calls("pagerduty")
    assert recorded["query"]["schedule_ids[]"] == [SCHEDULE, OTHER_SCHEDULE]


def test_pagerduty_a_shift_that_ended_does_not_count(sim: SimulatorProcess) -> None:
    now = datetime.now(UTC)
    on_call_in_pagerduty(
        sim,
        "alex@contoso.test",
        start=(now - timedelta(hours=9)).isoformat(),
        end=(now - timedelta(hours=1)).isoformat(),
    )
    answer = ask(pagerduty(sim), ALEX)
    assert not answer.on_call
    assert answer.reason == f"nobody is on call now in PagerDuty schedule(s) {SCHEDULE}"


def test_pagerduty_empty_schedule_means_nobody_on_call(sim: SimulatorProcess) -> None:
    answer = ask(pagerduty(sim), ALEX)
    assert not answer.on_call and answer.reason.startswith("nobody is on call now")
    assert answer.evidence["onCallUserIds"] == []


def test_pagerduty_person_without_email_is_not_on_call_and_nothing_is_asked(sim: SimulatorProcess) -> None:
    on_call_in_pagerduty(sim, "alex@contoso.test")
    answer = ask(pagerduty(sim), Person(user_name="5b10ac8d82e05b22cc7d4ef5", email=None))
    assert not answer.on_call and "no email address" in answer.reason
    assert sim.calls("pagerduty") == []


def test_pagerduty_reads_every_page(sim: SimulatorProcess) -> None:
    sim.seed(
        "pagerduty/oncalls",
        [{"user": {"email": f"user{i:03d}@contoso.test"}, "schedule": SCHEDULE} for i in range(120)],
    )
    on_call_in_pagerduty(sim, "alex@contoso.test")
    assert ask(pagerduty(sim), ALEX).on_call
    assert [c["query"]["offset"] for c in sim.calls("pagerduty")] == ["0", "100"]


@pytest.mark.parametrize(("status", "transient"), [(401, False), (429, True), (500, True)])
def test_pagerduty_errors_are_roster_errors(sim: SimulatorProcess, status: int, transient: bool) -> None:
    fault(sim, "pagerduty", status)
    error = refused(pagerduty(sim), ALEX)
    assert (error.provider, error.status, error.transient, error.path) == (
        "pagerduty",
        status,
        transient,
        "/oncalls",
    )
    assert PD_TOKEN not in str(error)


def test_pagerduty_without_a_token_is_refused_by_the_service(sim: SimulatorProcess) -> None:
    error = refused(lambda: PagerDutyRoster(sim.pagerduty_base_url, "", [SCHEDULE]), ALEX)
    assert error.status == 401 and "Authentication failed" in error.service_message


# --- ServiceNow on-call rota -----------------------------------------------------------------------------


def servicenow_rota(sim: SimulatorProcess, group: str = ROTA_GROUP) -> Callable[[], OnCallRoster]:
    return lambda: ServiceNowRotaRoster(sim.servicenow_base_url, SN_USER, SN_PASSWORD, group)


def seed_rota(sim: SimulatorProcess, users: list[str], **extra: Any) -> dict[str, Any]:
    for name, email in (("alex", "Alex@Contoso.test"), ("sam", "sam@contoso.test"), ("kim", "")):
        sim.seed("servicenow/users", {"user_name": name, "email": email} if email else {"user_name": name})
    rota: dict[str, Any] = sim.seed("servicenow/oncall", {"group": ROTA_GROUP, "users": users, **extra})
    return rota


def test_servicenow_rota_primary_is_on_call_by_user_name(sim: SimulatorProcess) -> None:
    seed_rota(sim, ["alex", "sam"])
    answer = ask(servicenow_rota(sim), Person("alex", None))
    assert answer.on_call
    assert answer.reason == f"on call (primary) in the ServiceNow rota of group {ROTA_GROUP}"
    assert answer.evidence["matched"]["by"] == "user_name"
    paths = [c["path"] for c in sim.calls("servicenow")]
    assert paths == [
        "/api/now/table/sys_user_group",
        "/api/now/on_call_rota/whoisoncall",
        "/api/now/table/sys_user",
    ]
    assert {c["identity"] for c in sim.calls("servicenow")} == {SN_USER}


def test_servicenow_rota_backup_is_on_call_by_email_ignoring_case(sim: SimulatorProcess) -> None:
    seed_rota(sim, ["sam", "alex"])
    answer = ask(servicenow_rota(sim), Person("alex.jira.account", "alex@contoso.TEST"))
    assert answer.on_call
    matched = {key: value for key, value in answer.evidence["matched"].items() if key != "userId"}
    assert matched == {"userName": "alex", "by": "email", "order": 2, "isOverride": False}
    assert "on-call member 2" in answer.reason


def test_servicenow_rota_someone_else_on_call_means_not_on_call(sim: SimulatorProcess) -> None:
    seed_rota(sim, ["sam", "kim"])
    answer = ask(servicenow_rota(sim), ALEX)
    assert not answer.on_call
    assert answer.reason == (
        f"none of the 2 people on call now in the ServiceNow rota of group {ROTA_GROUP} is 'alex' or "
        "'alex@contoso.test'"
    )


def test_servicenow_rota_empty_now_means_nobody_on_call(sim: SimulatorProcess) -> None:
    now = datetime.now(UTC)
    seed_rota(
        sim, ["alex"], start=(now - timedelta(days=2)).isoformat(), end=(now - timedelta(days=1)).isoformat()
    )
    answer = ask(servicenow_rota(sim), ALEX)
    assert not answer.on_call
    assert answer.reason == f"nobody is on call now in the ServiceNow rota of group {ROTA_GROUP}"
    assert answer.evidence["onCall"] == []
    assert [c["path"] for c in sim.calls("servicenow")][-1] == "/api/now/on_call_rota/whoisoncall"


def test_servicenow_rota_group_by_sys_id(sim: SimulatorProcess) -> None:
    rota = seed_rota(sim, ["alex"])
    answer = ask(servicenow_rota(sim, rota["group_id"]), ALEX)
    assert answer.on_call and answer.evidence["groupSysId"] == rota["group_id"]
    assert sim.calls("servicenow")[0]["path"] == "/api/now/on_call_rota/whoisoncall"


def test_servicenow_rota_unknown_group_is_a_roster_error(sim: SimulatorProcess) -> None:
    seed_rota(sim, ["alex"])
    error = refused(servicenow_rota(sim, "Messaging on call"), ALEX)
    assert not error.transient
    assert "no ServiceNow group is named 'Messaging on call' (roster.rota_group)" in str(error)


def test_servicenow_rota_person_without_user_name_or_email_is_not_on_call(sim: SimulatorProcess) -> None:
    seed_rota(sim, ["alex"])
    answer = ask(servicenow_rota(sim), Person("", None))
    assert not answer.on_call and sim.calls("servicenow") == []


@pytest.mark.parametrize(("status", "transient"), [(401, False), (503, True)])
def test_servicenow_rota_errors_are_roster_errors(
    sim: SimulatorProcess, status: int, transient: bool
) -> None:
    seed_rota(sim, ["alex"])
    fault(sim, "servicenow", status, path_contains="whoisoncall")
    error = refused(servicenow_rota(sim), ALEX)
    assert (error.provider, error.status, error.transient) == ("servicenow_rota", status, transient)
    assert error.path == "/api/now/on_call_rota/whoisoncall"
    assert SN_PASSWORD not in str(error)


# --- factory ---------------------------------------------------------------------------------------------


def sim_settings(sim: SimulatorProcess, **overrides: str) -> Settings:
    values = {
        **sim.settings,
        "PAGERDUTY_API_TOKEN": PD_TOKEN,
        "SERVICENOW_API_USER": SN_USER,
        "SERVICENOW_API_PASSWORD": SN_PASSWORD,
        **overrides,
    }
    return Settings.from_env(minimal_env(**values))


def test_factory_builds_the_policy_provider(sim: SimulatorProcess) -> None:
    alex, _, group = seed_entra(sim)
    on_call_in_pagerduty(sim, "alex@contoso.test")
    seed_rota(sim, ["alex"])
    settings = sim_settings(sim)
    entra = policy_with_roster(f'provider = "entra_group"\ngroup_id = "{group}"')
    pd = policy_with_roster(f'provider = "pagerduty"\nschedule_ids = ["{SCHEDULE}"]')
    rota = policy_with_roster(f'provider = "servicenow_rota"\nrota_group = "{ROTA_GROUP}"')

    assert ask(lambda: on_call_roster(settings, entra, directory(sim)), ALEX, alex).on_call
    assert ask(lambda: on_call_roster(settings, pd), ALEX).on_call
    assert ask(lambda: on_call_roster(settings, rota), ALEX).on_call


def test_factory_names_what_is_missing(sim: SimulatorProcess) -> None:
    pd = policy_with_roster(f'provider = "pagerduty"\nschedule_ids = ["{SCHEDULE}"]')
    rota = policy_with_roster(f'provider = "servicenow_rota"\nrota_group = "{ROTA_GROUP}"')
    entra = policy_with_roster('provider = "entra_group"\ngroup_id = "00000000-0000-0000-0000-000000000004"')
    with pytest.raises(SettingsError, match="set PAGERDUTY_API_TOKEN"):
        on_call_roster(sim_settings(sim, PAGERDUTY_API_TOKEN="<unset>"), pd)
    with pytest.raises(SettingsError, match="set PAGERDUTY_BASE_URL"):
        on_call_roster(sim_settings(sim, PAGERDUTY_BASE_URL="<unset>"), pd)
    with pytest.raises(SettingsError, match="set SERVICENOW_API_USER and SERVICENOW_API_PASSWORD"):
        on_call_roster(
            sim_settings(sim, SERVICENOW_API_USER="<unset>", SERVICENOW_API_PASSWORD="<unset>"), rota
        )
    with pytest.raises(ValueError, match="needs the Entra directory"):
        on_call_roster(sim_settings(sim), entra)
