"""The validation chain (design.md section 2): each check reads what it needs through a port and returns
a result with a reason a person can act on and the evidence an auditor needs. The orchestrator runs
them in order (one activity each), records each result, writes it to the ticket, and stops at the first
failure, which ends the request as ``Access rejected`` with that reason.

1. responder: the ticket's assignee, found in Entra by an exact UPN/mail match, enabled, and on call;
2. role: in the policy's allowed list (its tier decides the approval path);
3. incident: a linked incident is present and open (read fresh from the ITSM, not from the delivery);
4. eligibility: the responder is eligible for the role in PIM;
5. duplicates: no active assignment and no pending request for the responder and role.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from shared.audit import GraphCall
from shared.directory import DirectoryError, DirectoryUser, RoleSchedule, Traced
from shared.durations import format_duration
from shared.models import AccessRequest, LinkedIncident, Person
from shared.policy import Policy, UnknownRoleError

RESPONDER = "responder"
ROLE = "role"
INCIDENT = "incident"
ELIGIBILITY = "eligibility"
DUPLICATES = "duplicates"
CHECKS = (RESPONDER, ROLE, INCIDENT, ELIGIBILITY, DUPLICATES)


class Directory(Protocol):
    """The Graph reads the chain needs (shared.directory.EntraDirectory implements it)."""

    async def find_user(self, identifier: str) -> Traced[DirectoryUser | None]: ...

    async def role_eligibilities(self, user_id: str, role_template_id: str) -> Traced[list[RoleSchedule]]: ...

    async def active_assignments(self, user_id: str, role_template_id: str) -> Traced[list[RoleSchedule]]: ...

    async def pending_requests(self, user_id: str, role_template_id: str) -> Traced[list[RoleSchedule]]: ...


class OnCallAnswer(Protocol):
    @property
    def on_call(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def evidence(self) -> dict[str, Any]: ...


class OnCall(Protocol):
    """Whether a person is on call now, per the policy's roster provider (shared.roster implements it)."""

    async def is_on_call(self, person: Person, directory_user_id: str | None) -> OnCallAnswer: ...


class Incidents(Protocol):
    """A fresh read of a linked incident from the ITSM (None: it does not exist)."""

    async def get_incident(self, number: str) -> LinkedIncident | None: ...


@dataclass(frozen=True)
class CheckResult:
    check: str
    passed: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    calls: tuple[GraphCall, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "calls": [asdict(call) for call in self.calls]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> CheckResult:
        return CheckResult(
            data["check"],
            bool(data["passed"]),
            str(data["reason"]),
            dict(data["evidence"]),
            tuple(GraphCall(**call) for call in data.get("calls", ())),
        )


def _result(
    check: str, passed: bool, reason: str, evidence: dict[str, Any], calls: Sequence[GraphCall] = ()
) -> CheckResult:
    return CheckResult(check, passed, reason, evidence, tuple(calls))


async def check_responder(request: AccessRequest, directory: Directory, roster: OnCall) -> CheckResult:
    """The assignee is the responder: found in Entra by an exact UPN/mail match, enabled, on call."""
    assignee = request.assignee
    if assignee is None:
        reason = "the ticket has no assignee: assign it to the engineer who needs the role"
        return _result(RESPONDER, False, reason, {})
    identifiers = list(dict.fromkeys(v for v in (assignee.email, assignee.user_name) if v and "@" in v))
    if not identifiers:
        reason = f"the assignee {assignee.user_name!r} has no UPN or mail address to look up in Entra"
        return _result(RESPONDER, False, reason, {"assignee": assignee.user_name})
    calls: list[GraphCall] = []
    user: DirectoryUser | None = None
    for identifier in identifiers:
        try:
            found = await directory.find_user(identifier)
        except ValueError as error:  # not an address Graph can be asked about: no retry will help
            return _result(RESPONDER, False, f"the assignee cannot be looked up: {error}", {}, calls)
        except DirectoryError as error:
            if error.code != "AmbiguousUser":
                raise  # Graph itself failed: the orchestrator's retry policy decides
            return _result(RESPONDER, False, f"{error}: fix the directory so that one account matches",
                           {"lookedUp": identifier}, [*calls, error.call])  # fmt: skip
        calls.append(found.call)
        if found.value is not None:
            user = found.value
            break
    if user is None:
        reason = (
            f"no Entra user has the UPN or mail {' or '.join(repr(i) for i in identifiers)} (exact match)"
        )
        return _result(RESPONDER, False, reason, {"lookedUp": identifiers}, calls)
    evidence: dict[str, Any] = {"userId": user.id, "upn": user.user_principal_name}
    if not user.account_enabled:
        return _result(
            RESPONDER, False, f"the Entra account {user.user_principal_name} is disabled", evidence, calls
        )
    # The roster is asked about the Entra identity the role would go to, not the ITSM's profile fields
    # (which a user may be able to edit), so that "on call" and "gets the role" are the same person.
    answer = await roster.is_on_call(
        Person(user.user_principal_name, user.mail or user.user_principal_name), user.id
    )
    evidence["onCall"] = dict(answer.evidence)
    upn = user.user_principal_name
    if not answer.on_call:
        return _result(RESPONDER, False, f"{upn} is not on call: {answer.reason}", evidence, calls)
    return _result(RESPONDER, True, f"{upn} is the assignee and on call ({answer.reason})", evidence, calls)


def check_role(request: AccessRequest, policy: Policy) -> CheckResult:
    try:
        role = policy.role(request.role)
    except UnknownRoleError as error:
        return _result(ROLE, False, str(error), {"requested": request.role})
    if request.duration > role.max_duration:
        reason = (f"{format_duration(request.duration)} is longer than {role.name} allows "
                  f"({format_duration(role.max_duration)}): ask for a shorter duration")  # fmt: skip
        return _result(
            ROLE, False, reason, {"role": role.name, "requested": format_duration(request.duration)}
        )
    minimum = policy.timings.pim_minimum_active
    if request.duration < minimum:
        # PIM refuses an activation shorter than its minimum active time (ActiveDurationTooShort): say so now,
        # not after the approvers have been asked.
        reason = (f"{format_duration(request.duration)} is shorter than PIM's minimum active time "
                  f"({format_duration(minimum)}): ask for a longer duration")  # fmt: skip
        return _result(
            ROLE, False, reason, {"role": role.name, "requested": format_duration(request.duration)}
        )
    reason = f"{role.name} may be requested ({role.tier} tier, {role.approval.replace('_', ' ')} approval)"
    return _result(
        ROLE,
        True,
        reason,
        {"role": role.name, "templateId": role.template_id, "tier": role.tier, "approval": role.approval},
    )


async def check_incident(request: AccessRequest, incidents: Incidents) -> CheckResult:
    linked = request.incident
    if linked is None or not linked.number:
        return _result(INCIDENT, False, "the ticket names no linked incident: link the P1 incident", {})
    current = await incidents.get_incident(linked.number)
    if current is None:
        return _result(
            INCIDENT,
            False,
            f"incident {linked.number} does not exist in the ITSM",
            {"incident": linked.number},
        )
    evidence = {"incident": current.number, "state": current.state, "majorIncident": current.major_incident}
    if current.is_open is not True:
        return _result(
            INCIDENT, False, f"incident {current.number} is not open (state {current.state!r})", evidence
        )
    return _result(INCIDENT, True, f"incident {current.number} is open (state {current.state!r})", evidence)


async def check_eligibility(
    user_id: str, role_name: str, role_template_id: str, directory: Directory
) -> CheckResult:
    found = await directory.role_eligibilities(user_id, role_template_id)
    # Only a tenant-wide eligibility ("/") can become the tenant-wide assignment this app makes; one
    # scoped to an administrative unit would fail at activation.
    tenant_wide = [s for s in found.value if s.directory_scope_id == "/"]
    evidence = {
        "eligibilities": [s.id for s in tenant_wide],
        "scoped": [s.id for s in found.value if s not in tenant_wide],
    }
    if not tenant_wide:
        reason = f"the responder is not eligible for {role_name} in PIM: ask IAM for an eligible assignment"
        return _result(ELIGIBILITY, False, reason, evidence, [found.call])
    return _result(ELIGIBILITY, True, f"eligible for {role_name} in PIM", evidence, [found.call])


async def check_duplicates(
    user_id: str, role_name: str, role_template_id: str, directory: Directory
) -> CheckResult:
    active = await directory.active_assignments(user_id, role_template_id)
    pending = await directory.pending_requests(user_id, role_template_id)
    calls = [active.call, pending.call]
    evidence = {"active": [s.id for s in active.value], "pending": [s.id for s in pending.value]}
    if active.value:
        ends = ", ".join(s.end or "no end" for s in active.value)
        return _result(
            DUPLICATES,
            False,
            f"{role_name} is already active for the responder (until {ends})",
            evidence,
            calls,
        )
    if pending.value:
        return _result(
            DUPLICATES,
            False,
            f"a request for {role_name} is already pending in PIM "
            f"({', '.join(s.kind for s in pending.value)})",
            evidence,
            calls,
        )
    return _result(DUPLICATES, True, f"no active or pending {role_name} assignment", evidence, calls)
