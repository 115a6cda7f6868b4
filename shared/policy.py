"""The versioned policy file (``policy/policy.toml``): load, validate, hash.

The policy says which tickets start a request (trigger), how each ITSM's fields and states map to ours,
which Entra roles may be requested and how (tier, approval path, durations, proof), who approves, who is
on call, and the workflow's timings. It is validated once at start-up; every problem is reported in one
:class:`PolicyError`, one line per problem, each naming the file, the key, the value and the reason, e.g.::

    policy/policy.toml: roles[1].tier = 'critical': must be one of 'high', 'standard'

:attr:`Policy.version_hash` identifies the policy's meaning (not its formatting) and is recorded in every
audit row. See docs/policy.md for the reference of every key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import tomllib
import types
import typing
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Any, Literal, TypeAlias, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from shared.durations import EXPECTED_FORM, DurationError, format_duration, parse_duration

__all__ = [
    "PROBES",
    "STATE_KEYS",
    "Approval",
    "ApprovalPath",
    "ApproverGroup",
    "BreakerPolicy",
    "CanonicalField",
    "Escalation",
    "ItsmPolicy",
    "ItsmSystem",
    "Limits",
    "Policy",
    "PolicyError",
    "Priority",
    "Probe",
    "RolePolicy",
    "Roster",
    "RosterProvider",
    "StateKey",
    "StateLabels",
    "Tier",
    "Timings",
    "Trigger",
    "UnknownRoleError",
    "load_policy",
    "parse_policy",
]

Priority: TypeAlias = Literal["P1", "P2", "P3", "P4", "P5"]
ItsmSystem: TypeAlias = Literal["servicenow", "jira", "ivanti", "xurrent"]
Tier: TypeAlias = Literal["high", "standard"]
ApprovalPath: TypeAlias = Literal["two_person", "major_incident_window"]
Probe: TypeAlias = Literal[
    "pim_instance", "unified_assignment", "directory_role_member", "exchange_role_group", "responder_check"
]
StateKey: TypeAlias = Literal[
    "pending_approval",
    "pending_validated",
    "in_progress",
    "rejected",
    "denied",
    "expired",
    "escalated",
    "revoked",
    "cancelled",
]
CanonicalField: TypeAlias = Literal[
    "priority",
    "state",
    "summary",
    "opener",
    "assignee",
    "assignment_group",
    "incident_key",
    "incident_state",
    "major_incident",
    "access_type",
    "access_role",
    "access_duration",
    "justification",
]
RosterProvider: TypeAlias = Literal["entra_group", "pagerduty", "servicenow_rota"]

PROBES: tuple[str, ...] = get_args(Probe)
STATE_KEYS: tuple[str, ...] = get_args(StateKey)

# Fields an enabled ITSM other than ServiceNow must map: without them no request can be read from a ticket.
# ServiceNow needs none because our outbound script sends the canonical payload.
_REQUIRED_MAPPED_FIELDS: tuple[str, ...] = ("access_role", "access_type", "access_duration")

_DEFAULT_PROOF_DEADLINE = timedelta(minutes=10)
_DEFAULT_APPROVAL_DUE = timedelta(minutes=15)


class PolicyError(ValueError):
    """The policy file cannot be used. ``problems`` holds one line per problem; ``str()`` joins them."""

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class UnknownRoleError(LookupError):
    """A role name that the policy does not allow; the message lists the allowed roles."""

    def __init__(self, role: str, allowed: tuple[str, ...]) -> None:
        self.role = role
        self.allowed = allowed
        super().__init__(f"role {role!r} is not allowed by the policy (allowed: {', '.join(allowed)})")


# --- value types -------------------------------------------------------------------------------------


class _Issues(ValueError):
    """Problems found by a model-level check, each with a loc relative to the model that raised it.

    pydantic wraps this in its ValidationError (keeping the instance in ``ctx["error"]``);
    :func:`_problems_from` expands it into one line per issue with the full path.
    """

    def __init__(self) -> None:
        self.items: list[tuple[tuple[str | int, ...], str]] = []
        super().__init__("policy problems")

    def value(self, loc: tuple[str | int, ...], value: object, reason: str) -> None:
        self.items.append((loc, f" = {_short_repr(value)}: {reason}"))

    def key(self, loc: tuple[str | int, ...], reason: str) -> None:
        self.items.append((loc, f": {reason}"))

    def text(self, loc: tuple[str | int, ...], text: str) -> None:
        self.items.append((loc, f" {text}"))

    def raise_if_any(self) -> None:
        if self.items:
            self.args = ("; ".join(_render_loc(loc) + detail for loc, detail in self.items),)
            raise self


def _duration(value: object) -> timedelta:
    if not isinstance(value, str):
        raise ValueError(f"must be a duration string: expected {EXPECTED_FORM}")
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise ValueError(exc.reason) from None


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


_GUID_RE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE
)
_GROUP_KEY_RE = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)


def _guid(value: str) -> str:
    if not _GUID_RE.fullmatch(value):
        raise ValueError(
            "must be a GUID (8-4-4-4-12 hexadecimal digits, e.g. 62e90394-69f5-4237-9190-012177145e10)"
        )
    return value.lower()


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    return value


def _group_key(value: str) -> str:
    if not _GROUP_KEY_RE.fullmatch(value):
        raise ValueError("must be a lowercase identifier (a-z, 0-9, _; starting with a letter)")
    return value


def _positive_int(value: int) -> int:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


Duration = Annotated[
    timedelta,
    PlainValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    AfterValidator(_positive),
]
"""A positive ISO 8601 duration (PnDTnHnMnS), held as a timedelta and serialised canonically."""
Guid = Annotated[StrictStr, AfterValidator(_guid)]
Text = Annotated[StrictStr, AfterValidator(_text)]
GroupKey = Annotated[StrictStr, AfterValidator(_group_key)]
PositiveInt = Annotated[StrictInt, AfterValidator(_positive_int)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _duplicates(loc: tuple[str | int, ...], values: tuple[str, ...], issues: _Issues, what: str) -> None:
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in seen:
            issues.value((*loc, index), value, f"duplicate {what} (also at index {seen[value]})")
        else:
            seen[value] = index


# --- sections ----------------------------------------------------------------------------------------


class Trigger(_Model):
    """Which ticket starts a request: canonical priority, access type, and the longest duration asked."""

    priority: Priority
    access_type: Text
    max_duration: Duration


class Limits(_Model):
    """Limits on inbound webhooks."""

    max_body_bytes: PositiveInt = 262144
    webhook_clock_skew: Duration = timedelta(minutes=5)


class Timings(_Model):
    """Workflow timings. All positive; tests may use seconds (``PT2S``)."""

    approval_due: Duration = _DEFAULT_APPROVAL_DUE
    approval_reminder: Duration = _DEFAULT_APPROVAL_DUE / 2
    review_due: Duration = timedelta(hours=24)
    progress_interval: Duration = timedelta(minutes=2)
    probe_first_interval: Duration = timedelta(seconds=5)
    probe_max_interval: Duration = timedelta(minutes=1)
    slow_probe_interval: Duration = timedelta(minutes=5)
    default_proof_deadline: Duration = _DEFAULT_PROOF_DEADLINE
    store_mismatch_threshold: Duration = timedelta(minutes=5)
    sweep_interval: Duration = timedelta(minutes=5)
    pim_minimum_active: Duration = timedelta(minutes=5)

    @model_validator(mode="before")
    @classmethod
    def _default_reminder(cls, data: Any) -> Any:
        # The reminder defaults to half the due time (of the due time actually configured).
        if isinstance(data, dict) and "approval_reminder" not in data and "approval_due" in data:
            due = _try_duration(data["approval_due"])
            if due is not None:
                return {**data, "approval_reminder": format_duration(due / 2)}
        return data

    @model_validator(mode="after")
    def _check(self) -> Timings:
        issues = _Issues()
        if self.approval_reminder >= self.approval_due:
            issues.value(
                ("approval_reminder",),
                format_duration(self.approval_reminder),
                f"must be shorter than approval_due ({format_duration(self.approval_due)!r})",
            )
        issues.raise_if_any()
        return self


class StateLabels(_Model):
    """The ticket state (or label) the ITSM shows for each of our states."""

    pending_approval: Text = "Access pending (approval)"
    pending_validated: Text = "Access pending (validated)"
    in_progress: Text = "Work in progress"
    rejected: Text = "Access rejected"
    denied: Text = "Access denied"
    expired: Text = "Access expired"
    escalated: Text = "Access escalated"
    revoked: Text = "Access revoked"
    cancelled: Text = "Access cancelled"  # the incident was resolved before activation: nothing granted

    @model_validator(mode="after")
    def _check(self) -> StateLabels:
        issues = _Issues()
        seen: dict[str, str] = {}
        for key in STATE_KEYS:
            label: str = getattr(self, key)
            if label in seen:
                issues.value((key,), label, f"same label as {seen[label]} (each state needs its own label)")
            else:
                seen[label] = key
        issues.raise_if_any()
        return self


class ItsmPolicy(_Model):
    """How one ITSM's tickets map to the canonical request, and how our states are written back."""

    enabled: StrictBool
    priority_map: dict[Text, Priority] = Field(default_factory=dict)
    field_map: dict[CanonicalField, Text] = Field(default_factory=dict)
    major_incident_values: tuple[Text, ...] = ()
    state_labels: StateLabels = Field(default_factory=StateLabels)
    transitions: dict[StateKey, Text] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ItsmPolicy:
        issues = _Issues()
        _duplicates(("major_incident_values",), self.major_incident_values, issues, "value")
        if self.enabled and not self.priority_map:
            issues.key(("priority_map",), "must not be empty for an enabled ITSM")
        issues.raise_if_any()
        return self


class RolePolicy(_Model):
    """One Entra directory role that may be requested, and how."""

    name: Text
    template_id: Guid
    tier: Tier
    approval: ApprovalPath = "major_incident_window"
    max_duration: Duration
    proof_deadline: Duration = _DEFAULT_PROOF_DEADLINE
    required_probes: tuple[Probe, ...]
    revoke_sessions: StrictBool = False
    responder_confirmation: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _tier_defaults(cls, data: Any) -> Any:
        # design.md: the default is two-person approval, session revocation and responder confirmation
        # for high-tier roles, the major-incident window rule for standard roles; a policy may choose
        # the window rule for a high-tier role too ("both exist, chosen per role").
        if isinstance(data, dict) and data.get("tier") in ("high", "standard"):
            high = data["tier"] == "high"
            defaults = {
                "approval": "two_person" if high else "major_incident_window",
                "revoke_sessions": high,
                "responder_confirmation": high,
            }
            return {**defaults, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> RolePolicy:
        issues = _Issues()
        if self.proof_deadline >= self.max_duration:
            issues.value(
                ("proof_deadline",),
                format_duration(self.proof_deadline),
                f"must be shorter than max_duration ({format_duration(self.max_duration)!r})"
                " (when not set on the role, it is timings.default_proof_deadline)",
            )
        if not self.required_probes:
            issues.key(("required_probes",), f"must name at least one probe of {_quoted(PROBES)}")
        _duplicates(("required_probes",), self.required_probes, issues, "probe")
        issues.raise_if_any()
        return self


class ApproverGroup(_Model):
    """An Entra group whose members may approve, and the Teams conversation its cards go to."""

    group_id: Guid
    display_name: Text
    teams_conversation_id: Text


class Approval(_Model):
    """Which approver groups act on which approval path (keys of ``[approver_groups]``)."""

    two_person_groups: tuple[GroupKey, ...] = ("on_call_lead", "iam_duty_manager")
    window_fallback_group: GroupKey = "on_call_lead"
    review_group: GroupKey = "iam_duty_manager"
    break_glass_groups: tuple[GroupKey, ...] = ("iam_duty_manager", "security_lead")

    @model_validator(mode="after")
    def _check(self) -> Approval:
        issues = _Issues()
        for key in ("two_person_groups", "break_glass_groups"):
            groups: tuple[str, ...] = getattr(self, key)
            if len(groups) != 2:
                issues.value((key,), list(groups), "must name exactly 2 distinct approver groups")
            else:
                _duplicates((key,), groups, issues, "approver group (the two groups must differ)")
        issues.raise_if_any()
        return self


class Roster(_Model):
    """Who is on call: the provider and its one parameter."""

    provider: RosterProvider
    group_id: Guid | None = None
    schedule_ids: tuple[Text, ...] | None = None
    rota_group: Text | None = None

    @property
    def parameter_name(self) -> str:
        return _ROSTER_PARAMETERS[self.provider]

    @model_validator(mode="after")
    def _check(self) -> Roster:
        issues = _Issues()
        wanted = _ROSTER_PARAMETERS[self.provider]
        for parameter in _ROSTER_PARAMETERS.values():
            value = getattr(self, parameter)
            if parameter == wanted:
                if value is None:
                    issues.key(
                        (parameter,), f"missing required key: provider {self.provider!r} needs {parameter}"
                    )
                elif parameter == "schedule_ids" and not value:
                    issues.value((parameter,), [], "must list at least one PagerDuty schedule id")
                elif parameter == "schedule_ids":
                    _duplicates((parameter,), value, issues, "schedule id")
            elif value is not None:
                issues.value(
                    (parameter,),
                    list(value) if isinstance(value, tuple) else value,
                    f"not used by provider {self.provider!r} (it takes {wanted})",
                )
        issues.raise_if_any()
        return self


_ROSTER_PARAMETERS: dict[str, str] = {
    "entra_group": "group_id",
    "pagerduty": "schedule_ids",
    "servicenow_rota": "rota_group",
}


class BreakerPolicy(_Model):
    """The circuit breaker shared by all requests (design.md "Guardrails"): after ``failures`` consecutive
    throttled or unavailable Graph answers it opens for ``open_for``, then lets one trial call through."""

    failures: PositiveInt = 5
    open_for: Duration = timedelta(minutes=1)


class Escalation(_Model):
    """Where escalations to IAM on call go."""

    iam_conversation_id: Text


class Policy(_Model):
    """The validated policy. Build it with :func:`load_policy` or :func:`parse_policy`."""

    version: Text
    trigger: Trigger
    limits: Limits = Field(default_factory=Limits)
    timings: Timings = Field(default_factory=Timings)
    itsm: dict[ItsmSystem, ItsmPolicy]
    roles: tuple[RolePolicy, ...]
    approver_groups: dict[GroupKey, ApproverGroup]
    approval: Approval = Field(default_factory=Approval)
    roster: Roster
    escalation: Escalation
    circuit_breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)

    @model_validator(mode="before")
    @classmethod
    def _default_proof_deadline(cls, data: Any) -> Any:
        # A role without proof_deadline gets timings.default_proof_deadline (when that one is valid;
        # otherwise its own error is reported and the role keeps the built-in default).
        if not isinstance(data, dict) or not isinstance(data.get("roles"), list):
            return data
        timings = data.get("timings")
        raw = timings.get("default_proof_deadline") if isinstance(timings, dict) else None
        default = _try_duration(raw) if raw is not None else None
        if default is None:
            return data
        roles = [
            {**role, "proof_deadline": format_duration(default)}
            if isinstance(role, dict) and "proof_deadline" not in role
            else role
            for role in data["roles"]
        ]
        return {**data, "roles": roles}

    @model_validator(mode="after")
    def _check(self) -> Policy:
        issues = _Issues()
        self._check_roles(issues)
        self._check_approvers(issues)
        self._check_itsm(issues)
        issues.raise_if_any()
        return self

    def _check_roles(self, issues: _Issues) -> None:
        if not self.roles:
            issues.key(("roles",), "must define at least one role ([[roles]])")
        names: dict[str, int] = {}
        template_ids: dict[str, int] = {}
        for index, role in enumerate(self.roles):
            folded = role.name.casefold()
            if folded in names:
                issues.value(
                    ("roles", index, "name"), role.name, f"duplicate role name (also roles[{names[folded]}])"
                )
            else:
                names[folded] = index
            if role.template_id in template_ids:
                issues.value(
                    ("roles", index, "template_id"),
                    role.template_id,
                    f"duplicate template_id (also roles[{template_ids[role.template_id]}])",
                )
            else:
                template_ids[role.template_id] = index
            if role.max_duration > self.trigger.max_duration:
                issues.value(
                    ("roles", index, "max_duration"),
                    format_duration(role.max_duration),
                    f"must not exceed trigger.max_duration ({format_duration(self.trigger.max_duration)!r})",
                )

    def _check_approvers(self, issues: _Issues) -> None:
        known = ", ".join(sorted(self.approver_groups))
        references: list[tuple[tuple[str | int, ...], str]] = []
        for key in ("two_person_groups", "break_glass_groups"):
            references.extend((("approval", key), group) for group in getattr(self.approval, key))
        for key in ("window_fallback_group", "review_group"):
            references.append((("approval", key), getattr(self.approval, key)))
        for loc, group in references:
            if group not in self.approver_groups:
                issues.text(loc, f"references unknown approver group {group!r} (known: {known})")
        owners: dict[str, str] = {}
        for key, approver_group in self.approver_groups.items():
            if approver_group.group_id in owners:
                issues.value(
                    ("approver_groups", key, "group_id"),
                    approver_group.group_id,
                    f"same Entra group as approver_groups.{owners[approver_group.group_id]}"
                    " (each approver group must be its own Entra group: two groups, two sets of people)",
                )
            else:
                owners[approver_group.group_id] = key

    def _check_itsm(self, issues: _Issues) -> None:
        for system, config in self.itsm.items():
            if not config.enabled:
                continue
            if config.priority_map and self.trigger.priority not in config.priority_map.values():
                issues.key(
                    ("itsm", system, "priority_map"),
                    f"maps no value to the trigger priority {self.trigger.priority!r}, so no {system} ticket "
                    "could ever start a request",
                )
            if system != "servicenow":
                missing = [name for name in _REQUIRED_MAPPED_FIELDS if name not in config.field_map]
                if missing:
                    issues.key(
                        ("itsm", system, "field_map"),
                        f"must map {', '.join(missing)} for an enabled ITSM "
                        "(to the ticket field that holds each)",
                    )

    # --- queries ---------------------------------------------------------------------------------------

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(role.name for role in self.roles)

    def role(self, name: str) -> RolePolicy:
        """The role called ``name``, in any case (names are unique ignoring case, so this is unambiguous,
        and an ITSM form may not keep the case); :class:`UnknownRoleError` lists the allowed roles."""
        wanted = name.strip().casefold()
        for role in self.roles:
            if role.name.casefold() == wanted:
                return role
        raise UnknownRoleError(name, self.role_names)

    @property
    def enabled_itsm(self) -> tuple[str, ...]:
        """The ITSM systems whose webhooks are accepted (in file order)."""
        return tuple(system for system, config in self.itsm.items() if config.enabled)

    def canonical_json(self) -> str:
        """The validated, normalised policy as canonical JSON: sorted keys, no whitespace, UTF-8 text.

        Defaults are filled in, durations are in canonical form (``PT120M`` -> ``PT2H``), GUIDs are lower
        case, so formatting, comments, key order and spelling-out a default do not change it.
        """
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )

    @cached_property
    def version_hash(self) -> str:
        """``sha256:<64 hex>`` of :meth:`canonical_json` (what the policy means); in every audit row."""
        return "sha256:" + hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    @property
    def file_hash(self) -> str:
        """``sha256:<64 hex>`` of the policy file's exact bytes (``sha256sum policy/policy.toml``), so an
        auditor can tie an audit row to the file at a commit; recorded beside :attr:`version_hash`."""
        return self._file_hash

    _file_hash: str = PrivateAttr(default="")


# --- loading -----------------------------------------------------------------------------------------


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate the policy file at ``path``; :class:`PolicyError` names every problem."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise PolicyError([f"{source}: policy file not found"]) from None
    except OSError as exc:
        raise PolicyError([f"{source}: cannot read the policy file: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([f"{source}: not valid UTF-8 (byte {exc.start}); TOML files are UTF-8"]) from None
    return parse_policy(text, source)


def parse_policy(text: str, source: str = "<string>") -> Policy:
    """Validate policy TOML ``text``; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([f"{source}: invalid TOML: {exc}"]) from None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError([f"{source}: {problem}" for problem in _problems_from(exc)]) from None
    policy._file_hash = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return policy


# --- error formatting --------------------------------------------------------------------------------

_REASONS: dict[str, str] = {
    "missing": "missing required key",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "list_type": "must be an array",
    "tuple_type": "must be an array",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
}


def _problems_from(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc: tuple[str | int, ...] = tuple(error["loc"])
        kind = error["type"]
        ctx = error.get("ctx") or {}
        value = error.get("input")
        if kind == "value_error" and isinstance(ctx.get("error"), _Issues):
            issues: _Issues = ctx["error"]
            problems.extend(_render_loc((*loc, *rel)) + detail for rel, detail in issues.items)
            continue
        reason = _reason(error["type"], str(error["msg"]), ctx)
        if "[key]" in loc:
            # An invalid key of a table whose keys are constrained (e.g. [itsm.<system>]).
            index = loc.index("[key]")
            problems.append(
                f"{_render_loc(loc[: index - 1])}: invalid key {value!r}: {reason}{_hint(value, ctx)}"
            )
        elif kind == "missing":
            problems.append(f"{_render_loc(loc)}: {reason}")
        elif kind == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            hint = _suggest(loc[-1], allowed)
            known = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""
            if isinstance(value, dict):
                problems.append(f"{_render_loc(loc)}: unknown table{hint}{known}")
            else:
                problems.append(f"{_render_loc(loc)} = {_short_repr(value)}: unknown key{hint}{known}")
        else:
            problems.append(f"{_render_loc(loc)} = {_short_repr(value)}: {reason}{_hint(value, ctx)}")
    return problems


def _reason(kind: str, message: str, ctx: dict[str, Any]) -> str:
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        return "must be one of " + str(ctx.get("expected", "")).replace(" or ", ", ")
    return _REASONS.get(kind, message)


def _hint(value: object, ctx: dict[str, Any]) -> str:
    if "expected" not in ctx or not isinstance(value, str):
        return ""
    choices = re.findall(r"'([^']*)'", str(ctx["expected"]))
    return _suggest(value, choices)


def _suggest(word: object, choices: list[str]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The field names of the model at ``loc`` (walking Policy's annotations), or [] if not a model."""
    annotation: Any = Policy
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) in (tuple, list):
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


_BARE_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)


def _render_loc(loc: tuple[str | int, ...]) -> str:
    """``('roles', 1, 'tier')`` -> ``roles[1].tier``; keys that are not bare words are quoted as in TOML."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _BARE_KEY_RE.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            text += f".{key}" if text else key
    return text or "(top level)"


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(repr(value) for value in values)


def _try_duration(value: object) -> timedelta | None:
    try:
        return _positive(_duration(value))
    except ValueError:
        return None
