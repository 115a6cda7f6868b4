"""The PIM side of the Graph simulator: how a role assignment comes into being and where it becomes visible.

A :class:`Grant` is one role assignment in effect (seeded, made by PIM through ``adminAssign``, or a direct
unified RBAC assignment). The tenant shows it in four places, each after its own delay: the PIM schedule
instances (``pim``), the unified RBAC store (``unified``), the directory role object's members
(``directoryRole``) and the Exchange role group (``exchange``, a workload-side store). A :class:`Behaviour`
(per role, or the default for all roles) says how long each of those delays is, which statuses an
``adminAssign`` request goes through before it ends (``Provisioned``, ``Failed`` or ``Denied``), which policy
rule fails, if any, and the role's minimum active time.

Times are kept with full precision (a test may use fractions of a second) and printed the way Graph does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from .common import JSON, SeedError, is_guid, iso_z, reject_unknown_keys

# The stores an assignment becomes visible in, in the order the control views list them.
STORES = ("pim", "unified", "directoryRole", "exchange")

# Statuses after which a request no longer changes; "Provisioned" is success (facts.md).
TERMINAL_STATUSES = ("Provisioned", "Denied", "Failed", "Canceled", "Revoked")
# What a request may show on its way to its final status (a behaviour's "statuses").
INTERIM_STATUSES = (
    "Granted",
    "PendingAdminDecision",
    "PendingApproval",
    "PendingProvisioning",
    "PendingScheduleCreation",
    "ScheduleCreated",
)
FINAL_STATUSES = ("Provisioned", "Failed", "Denied")
# Actions that create or prolong an assignment: one of them still pending blocks a new adminAssign.
ACTIVATING_ACTIONS = (
    "adminAssign",
    "adminUpdate",
    "adminExtend",
    "adminRenew",
    "selfActivate",
    "selfExtend",
    "selfRenew",
)
# Rule names a policy failure may name (the rule types of a role management policy, as PIM reports them).
POLICY_RULES = (
    "ApprovalRule",
    "AuthenticationContextRule",
    "EligibilityRule",
    "EnablementRule",
    "ExpirationRule",
    "JustificationRule",
    "MfaRule",
    "TicketingRule",
)

GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
EXCHANGE_ADMINISTRATOR = "29232cdf-9323-42fd-ade2-1d097af3e4de"
# Role template ids are the same in every tenant (facts.md); these exist as directory roles from the start.
WELL_KNOWN_ROLES: Mapping[str, tuple[str, str]] = {
    GLOBAL_ADMINISTRATOR: (
        "Global Administrator",
        "Can manage all aspects of Microsoft Entra ID and Microsoft services that use Microsoft Entra "
        "identities.",
    ),
    EXCHANGE_ADMINISTRATOR: ("Exchange Administrator", "Can manage all aspects of the Exchange product."),
    "e8611ab8-c189-46e8-94e1-60213ab1f814": (
        "Privileged Role Administrator",
        "Can manage role assignments in Microsoft Entra ID, and all aspects of Privileged Identity "
        "Management.",
    ),
    "f28a1f50-f6e7-4571-818b-6a12f2af6b6c": (
        "SharePoint Administrator",
        "Can manage all aspects of the SharePoint service.",
    ),
    "194ae4cb-b126-40b2-bd5b-6091b380977d": (
        "Security Administrator",
        "Can read security information and reports, and manage configuration in Microsoft Entra ID and "
        "Office 365.",
    ),
}
# The Exchange Online role group an Entra role lands in (the simulator flattens the real nesting, see README).
DEFAULT_ROLE_GROUPS: Mapping[str, tuple[str, ...]] = {"Organization Management": (EXCHANGE_ADMINISTRATOR,)}

# PIM refuses an active assignment shorter than this, and a removal sooner than this after activation.
DEFAULT_MINIMUM_ACTIVE_SECONDS = 300.0
_MAX_SECONDS = 7 * 24 * 3600.0


# -- durations ----------------------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: object) -> timedelta:
    """An ISO 8601 duration as Graph's ``Edm.Duration`` takes it (``PT2H``, ``P1DT30M``, ``PT0.5S``).

    ``2:00:00`` (what ``str(timedelta)`` prints, and what kiota's JSON writer sends for a ``timedelta``) is
    not one: Graph answers 400 for it, and so does the simulator.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO 8601 duration string, got {type(text).__name__}")
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"Cannot convert the literal '{text}' to the expected type 'Edm.Duration'.")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return timedelta(
        weeks=parts["w"], days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"]
    )


def human_seconds(seconds: float) -> str:
    """``5 minutes`` for 300, ``2 seconds`` for 2: how ActiveDurationTooShort messages name the minimum."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    shown = int(seconds) if float(seconds).is_integer() else seconds
    return f"{shown} second{'s' if shown != 1 else ''}"


def graph_time(moment: datetime | None) -> str | None:
    """As Graph prints a date-time: ``2024-05-01T10:00:00Z``, with milliseconds when there are any
    (``2024-05-01T10:00:00.310Z``), so that an end a fraction of a second away is not printed early."""
    if moment is None or moment.microsecond == 0:
        return iso_z(moment)
    return iso_ms(moment)


def iso_ms(moment: datetime | None) -> str | None:
    """Millisecond precision for the control views (tests compare sub-second delays)."""
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# -- behaviours ---------------------------------------------------------------------------------------------

_BEHAVIOUR_KEYS = (
    "roleDefinitionId",
    "statuses",
    "final",
    "propagation",
    "policyFailure",
    "minimumActiveSeconds",
)


@dataclass(frozen=True)
class Behaviour:
    """How PIM treats requests for one role (or for every role without one of its own)."""

    statuses: tuple[tuple[str, float], ...] = ()
    final: str = "Provisioned"
    propagation: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(STORES, 0.0))
    policy_failure: tuple[str, ...] = ()
    minimum_active_seconds: float = DEFAULT_MINIMUM_ACTIVE_SECONDS

    @property
    def settle_seconds(self) -> float:
        """Seconds from submission until the request reaches ``final``."""
        return sum(seconds for _, seconds in self.statuses)

    def status_after(self, elapsed: float) -> str:
        for status, seconds in self.statuses:
            if elapsed < seconds:
                return status
            elapsed -= seconds
        return self.final

    def as_json(self) -> JSON:
        return {
            "statuses": [{"status": s, "seconds": n} for s, n in self.statuses],
            "final": self.final,
            "propagation": dict(self.propagation),
            "policyFailure": list(self.policy_failure) or None,
            "minimumActiveSeconds": self.minimum_active_seconds,
        }


def _seconds(value: object, what: str) -> float:
    # bool is an int in Python: "seconds": true is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SeedError(f"{what} must be a number of seconds")
    if not 0 <= value <= _MAX_SECONDS:
        raise SeedError(f"{what} must be between 0 and {_MAX_SECONDS:g} seconds")
    return float(value)


def parse_behaviour(spec: object) -> tuple[str | None, JSON]:
    """A behaviour spec (strict): ``(roleDefinitionId or None for the default, the keys it sets)``."""
    if not isinstance(spec, dict):
        raise SeedError("a PIM behaviour is a JSON object")
    reject_unknown_keys(spec, _BEHAVIOUR_KEYS, "pim-behaviour")
    role = spec.get("roleDefinitionId")
    if role is not None and (not isinstance(role, str) or not is_guid(role)):
        raise SeedError(f"pim-behaviour.roleDefinitionId must be a role template id (a GUID), got {role!r}")
    parsed: JSON = {}
    if "statuses" in spec:
        statuses = spec["statuses"]
        if not isinstance(statuses, list):
            raise SeedError("pim-behaviour.statuses is a list of {status, seconds}")
        steps: list[tuple[str, float]] = []
        for index, step in enumerate(statuses):
            what = f"pim-behaviour.statuses[{index}]"
            if not isinstance(step, dict):
                raise SeedError(f"{what} is an object {{status, seconds}}")
            reject_unknown_keys(step, ("status", "seconds"), what)
            if step.get("status") not in INTERIM_STATUSES:
                raise SeedError(
                    f"{what}.status must be one of {list(INTERIM_STATUSES)}, got {step.get('status')!r}"
                )
            steps.append((str(step["status"]), _seconds(step.get("seconds"), f"{what}.seconds")))
        parsed["statuses"] = tuple(steps)
    if "final" in spec:
        if spec["final"] not in FINAL_STATUSES:
            raise SeedError(
                f"pim-behaviour.final must be one of {list(FINAL_STATUSES)}, got {spec['final']!r}"
            )
        parsed["final"] = spec["final"]
    if "propagation" in spec:
        propagation = spec["propagation"]
        if not isinstance(propagation, dict):
            raise SeedError(f"pim-behaviour.propagation is an object with any of {list(STORES)}")
        reject_unknown_keys(propagation, STORES, "pim-behaviour.propagation")
        parsed["propagation"] = {
            store: _seconds(value, f"pim-behaviour.propagation.{store}")
            for store, value in propagation.items()
        }
    if "policyFailure" in spec:
        failure = spec["policyFailure"]
        rules = [failure] if isinstance(failure, str) else failure
        if rules is None:
            rules = []
        if not isinstance(rules, list) or not all(isinstance(r, str) and r in POLICY_RULES for r in rules):
            raise SeedError(
                "pim-behaviour.policyFailure is null, a rule name or a list of them, from "
                f"{list(POLICY_RULES)}"
            )
        parsed["policy_failure"] = tuple(rules)
    if "minimumActiveSeconds" in spec:
        parsed["minimum_active_seconds"] = _seconds(
            spec["minimumActiveSeconds"], "pim-behaviour.minimumActiveSeconds"
        )
    return (role.lower() if role else None), parsed


def _layer(base: Behaviour, parsed: Mapping[str, Any]) -> Behaviour:
    changes = dict(parsed)
    if "propagation" in changes:
        changes["propagation"] = {**base.propagation, **changes["propagation"]}
    return replace(base, **changes)


class Behaviours:
    """The built-in behaviour, overlaid by the default spec (``roleDefinitionId`` omitted), overlaid by a
    role's own spec. A POST replaces the spec it names; keys it leaves out come from the layer below."""

    def __init__(self) -> None:
        self.default_spec: JSON = {}
        self.role_specs: dict[str, JSON] = {}

    def set(self, spec: object) -> tuple[str | None, Behaviour]:
        role, parsed = parse_behaviour(spec)
        if role is None:
            self.default_spec = parsed
        else:
            self.role_specs[role] = parsed
        return role, self.for_role(role)

    def for_role(self, role: str | None) -> Behaviour:
        behaviour = _layer(Behaviour(), self.default_spec)
        if role is not None and role.lower() in self.role_specs:
            behaviour = _layer(behaviour, self.role_specs[role.lower()])
        return behaviour

    def as_json(self) -> JSON:
        return {
            "default": self.for_role(None).as_json(),
            "roles": {role: self.for_role(role).as_json() for role in self.role_specs},
        }


# -- grants -------------------------------------------------------------------------------------------------


@dataclass
class Grant:
    """One role assignment in effect, and when each store shows it.

    ``id`` is the unified role assignment's id (``roleAssignmentOriginId`` of the schedule instance);
    ``instance_id`` the schedule instance's. ``activated_at`` is when it took effect (PIM provisioned it,
    the direct assignment was made, or the seeded start): the minimum active time counts from there.
    """

    id: str
    instance_id: str
    principal_id: str
    role_id: str
    scope: str
    app_scope: str | None
    start: datetime
    end: datetime | None
    assignment_type: str
    member_type: str
    schedule_id: str
    origin: str  # "seed" | "pim" | "direct"
    request_id: str | None
    activated_at: datetime
    visible_at: dict[str, datetime]

    def live(self, now: datetime) -> bool:
        return self.end is None or self.end > now

    def visible(self, store: str, now: datetime) -> bool:
        return self.live(now) and self.visible_at[store] <= now

    def matches(self, principal: str, role: str, scope: str) -> bool:
        return (
            self.principal_id.lower() == principal.lower()
            and self.role_id.lower() == role.lower()
            and self.scope.lower() == scope.lower()
        )

    def instance(self) -> JSON:
        """As ``roleAssignmentScheduleInstances`` lists it."""
        return {
            "id": self.instance_id,
            "principalId": self.principal_id,
            "roleDefinitionId": self.role_id,
            "directoryScopeId": self.scope,
            "appScopeId": self.app_scope,
            "startDateTime": graph_time(self.start),
            "endDateTime": graph_time(self.end),
            "assignmentType": self.assignment_type,
            "memberType": self.member_type,
            "roleAssignmentOriginId": self.id,
            "roleAssignmentScheduleId": self.schedule_id,
        }

    def unified(self) -> JSON:
        """As ``roleManagement/directory/roleAssignments`` lists it (a unifiedRoleAssignment)."""
        return {
            "id": self.id,
            "principalId": self.principal_id,
            "roleDefinitionId": self.role_id,
            "directoryScopeId": self.scope,
            "appScopeId": self.app_scope,
            "condition": None,
        }

    def view(self, now: datetime) -> JSON:
        """The control view: where it is visible now and since when (or from when)."""
        return {
            "id": self.id,
            "instanceId": self.instance_id,
            "principalId": self.principal_id,
            "roleDefinitionId": self.role_id,
            "directoryScopeId": self.scope,
            "origin": self.origin,
            "requestId": self.request_id,
            "assignmentType": self.assignment_type,
            "activatedAt": iso_ms(self.activated_at),
            "startDateTime": iso_ms(self.start),
            "endDateTime": iso_ms(self.end),
            "visibleAt": {store: iso_ms(self.visible_at[store]) for store in STORES},
            "visible": {store: self.visible(store, now) for store in STORES},
        }


@dataclass
class Timeline:
    """An ``adminAssign`` on its way to its final status: the behaviour it was submitted under, and the
    assignment it creates once ``Provisioned``."""

    request_id: str
    submitted: datetime
    behaviour: Behaviour
    principal_id: str
    role_id: str
    scope: str
    app_scope: str | None
    start: datetime
    end: datetime | None
    done: bool = False

    def status_at(self, now: datetime) -> str:
        return self.behaviour.status_after((now - self.submitted).total_seconds())

    @property
    def settles_at(self) -> datetime:
        return self.submitted + timedelta(seconds=self.behaviour.settle_seconds)

    def as_json(self) -> JSON:
        return {
            "requestId": self.request_id,
            "submitted": iso_ms(self.submitted),
            "settlesAt": iso_ms(self.settles_at),
            "final": self.behaviour.final,
            "statuses": [{"status": s, "seconds": n} for s, n in self.behaviour.statuses],
            "done": self.done,
        }


def visibility(moment: datetime, behaviour: Behaviour, *, unified_now: bool = False) -> dict[str, datetime]:
    """When each store shows an assignment that took effect at ``moment``. A direct unified RBAC assignment
    is in the unified store at once (it was written there)."""
    return {
        store: moment
        if (unified_now and store == "unified")
        else moment + timedelta(seconds=behaviour.propagation.get(store, 0.0))
        for store in STORES
    }
