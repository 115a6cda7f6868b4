"""The validation chain's checks, with fakes for the directory, the roster and the ITSM (pure logic)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.audit import GraphCall
from shared.directory import DirectoryError, DirectoryUser, RoleSchedule, Traced
from shared.models import AccessRequest, LinkedIncident, Person
from shared.policy import load_policy
from shared.validation import (
    CheckResult,
    check_duplicates,
    check_eligibility,
    check_incident,
    check_responder,
    check_role,
)

POLICY = load_policy(Path(__file__).resolve().parents[2] / "policy" / "policy.toml")
EXCHANGE = "29232cdf-9323-42fd-ade2-1d097af3e4de"
ALEX_ID = "11111111-0000-4000-8000-000000000001"
CALL = GraphCall("GET", "/users", 200, "request-1", "client-1")

REQUEST = AccessRequest(
    system="servicenow", event="created", ticket="INC0012345", ticket_id="a" * 32, priority="P1",
    itsm_priority="1", state="2", short_description="Mail flow down",
    opener=Person("sam.opener", "sam@contoso.test"), assignee=Person("alex", "alex@contoso.test"),
    assignment_group="Messaging", incident=LinkedIncident("INC0012345", "2", True, True),
    access_type="privileged", role="Exchange Administrator", duration=timedelta(hours=1),
    justification="restore mail flow", delivery_id="d-1",
)  # fmt: skip


def schedule(kind: str, end: str | None = None) -> RoleSchedule:
    return RoleSchedule("s-1", ALEX_ID, EXCHANGE, "/", kind, None, end)


@dataclass
class FakeDirectory:
    users: dict[str, DirectoryUser] = field(default_factory=dict)
    eligible: list[RoleSchedule] = field(default_factory=list)
    active: list[RoleSchedule] = field(default_factory=list)
    pending: list[RoleSchedule] = field(default_factory=list)
    looked_up: list[str] = field(default_factory=list)

    async def find_user(self, identifier: str) -> Traced[DirectoryUser | None]:
        self.looked_up.append(identifier)
        return Traced(self.users.get(identifier.casefold()), CALL)

    async def role_eligibilities(self, user_id: str, role_template_id: str) -> Traced[list[RoleSchedule]]:
        return Traced(self.eligible, CALL)

    async def active_assignments(self, user_id: str, role_template_id: str) -> Traced[list[RoleSchedule]]:
        return Traced(self.active, CALL)

    async def pending_requests(self, user_id: str, role_template_id: str) -> Traced[list[RoleSchedule]]:
        return Traced(self.pending, CALL)


@dataclass(frozen=True)
class Answer:
    on_call: bool
    reason: str
    evidence: dict[str, Any]


@dataclass
class FakeRoster:
    on_call: bool = True

    async def is_on_call(self, person: Person, directory_user_id: str | None) -> Answer:
        return Answer(
            self.on_call, "in the responder group" if self.on_call else "not in the group", {"p": 1}
        )


@dataclass
class FakeIncidents:
    incidents: dict[str, LinkedIncident] = field(default_factory=dict)

    async def get_incident(self, number: str) -> LinkedIncident | None:
        return self.incidents.get(number)


def alex(enabled: bool = True) -> DirectoryUser:
    return DirectoryUser(ALEX_ID, "alex@contoso.test", "alex@contoso.test", "Alex", enabled)


def run(coroutine: Any) -> CheckResult:
    result: CheckResult = asyncio.run(coroutine)
    return result


def test_responder_who_is_found_and_on_call_passes_with_evidence() -> None:
    directory = FakeDirectory(users={"alex@contoso.test": alex()})
    result = run(check_responder(REQUEST, directory, FakeRoster()))
    assert result.passed
    assert result.evidence["userId"] == ALEX_ID
    assert result.calls == (CALL,)


@pytest.mark.parametrize(
    ("assignee", "users", "on_call", "reason"),
    [
        (None, {}, True, "the ticket has no assignee"),
        (Person("alex"), {}, True, "has no UPN or mail address"),
        (
            Person("alex", "alex@contoso.test"),
            {},
            True,
            "no Entra user has the UPN or mail 'alex@contoso.test'",
        ),
        (
            Person("alex", "alex@contoso.test"),
            {"alex@contoso.test": alex(enabled=False)},
            True,
            "is disabled",
        ),
        (Person("alex", "alex@contoso.test"), {"alex@contoso.test": alex()}, False, "is not on call"),
    ],
    ids=["not assigned", "no address", "unknown user", "disabled", "not on call"],
)
def test_responder_failures_say_why(assignee: Person | None, users: dict[str, DirectoryUser], on_call: bool,
                                    reason: str) -> None:  # fmt: skip
    result = run(
        check_responder(replace(REQUEST, assignee=assignee), FakeDirectory(users=users), FakeRoster(on_call))
    )
    assert not result.passed
    assert reason in result.reason


def test_responder_is_looked_up_by_mail_then_user_name() -> None:
    directory = FakeDirectory(users={"alex.admin@contoso.test": alex()})
    request = replace(REQUEST, assignee=Person("alex.admin@contoso.test", "alex@contoso.test"))
    assert run(check_responder(request, directory, FakeRoster())).passed
    assert directory.looked_up == ["alex@contoso.test", "alex.admin@contoso.test"]


def test_role_allowed_and_unknown() -> None:
    allowed = check_role(REQUEST, POLICY)
    assert allowed.passed and allowed.evidence["tier"] == "standard"
    unknown = check_role(replace(REQUEST, role="Tenant Owner"), POLICY)
    assert not unknown.passed
    assert "Tenant Owner" in unknown.reason and "Exchange Administrator" in unknown.reason


def test_incident_open_closed_missing_and_unlinked() -> None:
    incidents = FakeIncidents({"INC0012345": LinkedIncident("INC0012345", "2", True, True)})
    assert run(check_incident(REQUEST, incidents)).passed
    closed = FakeIncidents({"INC0012345": LinkedIncident("INC0012345", "7", False, False)})
    assert "is not open (state '7')" in run(check_incident(REQUEST, closed)).reason
    assert "does not exist" in run(check_incident(REQUEST, FakeIncidents())).reason
    assert (
        "names no linked incident" in run(check_incident(replace(REQUEST, incident=None), incidents)).reason
    )


def test_eligibility_is_required() -> None:
    assert run(check_eligibility(ALEX_ID, "Exchange Administrator", EXCHANGE,
                                 FakeDirectory(eligible=[schedule("Direct")]))).passed  # fmt: skip
    missing = run(check_eligibility(ALEX_ID, "Exchange Administrator", EXCHANGE, FakeDirectory()))
    assert not missing.passed and "not eligible for Exchange Administrator" in missing.reason


def test_an_active_or_pending_assignment_is_a_duplicate() -> None:
    assert run(check_duplicates(ALEX_ID, "Exchange Administrator", EXCHANGE, FakeDirectory())).passed
    assigned = FakeDirectory(active=[schedule("Activated", "2026-11-27T10:00:00+00:00")])
    active = run(check_duplicates(ALEX_ID, "Exchange Administrator", EXCHANGE, assigned))
    assert not active.passed and "already active" in active.reason and "2026-11-27T10:00" in active.reason
    pending = run(check_duplicates(ALEX_ID, "Exchange Administrator", EXCHANGE,
                                   FakeDirectory(pending=[schedule("PendingProvisioning")])))  # fmt: skip
    assert not pending.passed and "already pending" in pending.reason


def test_results_cross_the_activity_boundary_as_json() -> None:
    result = run(check_responder(REQUEST, FakeDirectory(users={"alex@contoso.test": alex()}), FakeRoster()))
    assert CheckResult.from_json(result.to_json()) == result


def test_a_duration_over_the_roles_maximum_is_refused() -> None:
    too_long = check_role(replace(REQUEST, role="Global Administrator", duration=timedelta(hours=2)), POLICY)
    assert not too_long.passed
    assert "PT2H is longer than Global Administrator allows (PT1H)" in too_long.reason


def test_a_duration_under_pims_minimum_active_time_is_refused_before_anyone_is_asked() -> None:
    too_short = check_role(replace(REQUEST, duration=timedelta(minutes=2)), POLICY)
    assert not too_short.passed
    assert "PT2M is shorter than PIM's minimum active time (PT5M)" in too_short.reason
    assert check_role(replace(REQUEST, duration=timedelta(minutes=5)), POLICY).passed


def test_only_a_tenant_wide_eligibility_counts() -> None:
    scoped = RoleSchedule("s-2", ALEX_ID, EXCHANGE, "/administrativeUnits/au-1", "Direct", None, None)
    result = run(
        check_eligibility(ALEX_ID, "Exchange Administrator", EXCHANGE, FakeDirectory(eligible=[scoped]))
    )
    assert not result.passed
    assert result.evidence["scoped"] == ["s-2"]


def test_an_address_that_matches_two_accounts_is_a_rejection_not_a_retry() -> None:
    class Ambiguous(FakeDirectory):
        async def find_user(self, identifier: str) -> Traced[DirectoryUser | None]:
            raise DirectoryError(
                "'alex@contoso.test' matches 2 users; refusing to guess", "AmbiguousUser", CALL
            )

    result = run(check_responder(REQUEST, Ambiguous(), FakeRoster()))
    assert not result.passed
    assert "matches 2 users" in result.reason


def test_the_roster_is_asked_about_the_entra_identity() -> None:
    asked: list[Person] = []

    @dataclass
    class Recording(FakeRoster):
        async def is_on_call(self, person: Person, directory_user_id: str | None) -> Answer:
            asked.append(person)
            return await super().is_on_call(person, directory_user_id)

    directory = FakeDirectory(users={"alex@contoso.test": alex()})
    request = replace(REQUEST, assignee=Person("someone-else", "alex@contoso.test"))
    assert run(check_responder(request, directory, Recording())).passed
    assert asked == [Person("alex@contoso.test", "alex@contoso.test")]
