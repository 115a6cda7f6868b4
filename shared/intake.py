"""ITSM intake: a webhook body becomes one canonical :class:`~shared.models.AccessRequest`, or a precise
:class:`PayloadError` (answered 400, naming the field and why); then the trigger decision and the
deterministic orchestration instance id.

- ServiceNow sends the canonical payload of design.md section 4 (our outbound script builds it).
- Jira sends its own webhook body; the policy's ``[itsm.jira.field_map]`` says which issue field holds each
  canonical field (``access_role = "customfield_10050"``).

Pure functions: no I/O, no clock. The signature has been checked before (shared.webhooks) and the body size
too (the HTTP layer refuses bodies over ``limits.max_body_bytes``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, cast

from shared.durations import DurationError, format_duration, parse_duration
from shared.models import ITSM_SYSTEMS, AccessRequest, Event, LinkedIncident, Person
from shared.policy import CanonicalField, ItsmPolicy, ItsmSystem, Policy
from shared.webhooks import UnsupportedSystemError

__all__ = [
    "JIRA_DELIVERY_HEADER",
    "SERVICENOW_CLOSED_STATES",
    "SERVICENOW_OPEN_STATES",
    "PayloadError",
    "TriggerDecision",
    "instance_id",
    "parse",
    "parse_jira",
    "parse_servicenow",
    "request_digest",
    "ticket_key",
    "trigger_decision",
]

JIRA_DELIVERY_HEADER = "X-Atlassian-Webhook-Identifier"

# ServiceNow incident states (value and display label): 1 New, 2 In Progress, 3 On Hold are open;
# 6 Resolved, 7 Closed, 8 Canceled are not. Any other state is unknown (is_open None).
SERVICENOW_OPEN_STATES: Mapping[str, str] = {"1": "new", "2": "in progress", "3": "on hold"}
SERVICENOW_CLOSED_STATES: Mapping[str, str] = {"6": "resolved", "7": "closed", "8": "canceled"}

_JIRA_EVENTS: Mapping[str, Event] = {"jira:issue_created": "created", "jira:issue_updated": "updated"}
# Where a canonical field lives in a Jira issue when the policy's field_map does not say.
_JIRA_DEFAULT_PATHS: Mapping[str, str] = {
    "priority": "priority",
    "state": "status",
    "summary": "summary",
    "opener": "reporter",
    "assignee": "assignee",
}


class PayloadError(ValueError):
    """A webhook body that cannot be read as an access request: ``field`` is the path of the offending
    field (``access.duration``, ``issue.fields.customfield_10052``, ``body``); ``reason`` says why.
    ``str()`` is ``"<field>: <reason>"``, what the 400 answer says."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass(frozen=True)
class TriggerDecision:
    """Whether a delivery starts a request; ``reason`` says why (every failed condition, when not)."""

    starts: bool
    reason: str


# --- ServiceNow ------------------------------------------------------------------------------------------


def parse_servicenow(body: bytes, policy: Policy) -> AccessRequest:
    """Read the canonical ServiceNow payload (design.md section 4) into an :class:`AccessRequest`.

    ``priority`` goes through ``[itsm.servicenow].priority_map`` (a value not in the map gives
    ``priority=None``: not a trigger, not an error); the incident is open in states 1-3 and not in 6-8;
    ``major_incident_state`` in ``major_incident_values`` marks a declared major incident.
    """
    config = _itsm_config(policy, "servicenow")
    root = _Object(_load(body), "")
    # Read in the payload's order, so the first problem reported is the first in the document.
    event = root.choice("event", ("created", "updated", "resolved"))
    ticket_id = root.text("sys_id")
    ticket = root.text("number")
    itsm_priority = root.scalar("priority")
    state = root.scalar("state", allow_empty=True)
    short_description = root.text("short_description", allow_empty=True)
    opener = _required_person(root.object("opened_by"))
    assignee = _optional_person(root.optional_object("assigned_to"))
    assignment_group = root.optional_text("assignment_group") or ""
    incident = None
    incident_object = root.optional_object("incident")
    if incident_object is not None:
        number = incident_object.text("number")
        incident_state = incident_object.scalar("state", allow_empty=True)
        major_state = incident_object.optional_text("major_incident_state") or ""
        incident = LinkedIncident(
            number=number,
            state=incident_state,
            is_open=_servicenow_is_open(incident_state),
            major_incident=_is_major(major_state, config.major_incident_values),
        )
    access = root.object("access")
    access_type = access.text("type")
    role = access.text("role")
    duration = access.duration("duration")
    justification = access.text("justification", allow_empty=True)
    delivery_id = root.text("delivery_id")
    return AccessRequest(
        system="servicenow",
        event=cast(Event, event),
        ticket=ticket,
        ticket_id=ticket_id,
        priority=config.priority_map.get(itsm_priority),
        itsm_priority=itsm_priority,
        state=state,
        short_description=short_description,
        opener=opener,
        assignee=assignee,
        assignment_group=assignment_group,
        incident=incident,
        access_type=access_type,
        role=role,
        duration=duration,
        justification=justification,
        delivery_id=delivery_id,
    )


def _servicenow_is_open(state: str) -> bool | None:
    folded = state.strip().casefold()
    if folded in SERVICENOW_OPEN_STATES or folded in SERVICENOW_OPEN_STATES.values():
        return True
    if folded in SERVICENOW_CLOSED_STATES or folded in SERVICENOW_CLOSED_STATES.values():
        return False
    return None


def _required_person(user: _Object) -> Person:
    person = _optional_person(user)
    if person is None:
        raise PayloadError(user.path, "must name a user: user_name or email (both are empty)")
    return person


def _optional_person(user: _Object | None) -> Person | None:
    """None for an absent user or one whose user_name and email are both empty (unassigned)."""
    if user is None:
        return None
    user_name = user.optional_text("user_name") or ""
    email = user.optional_text("email") or None
    if not user_name and email is None:
        return None
    return Person(user_name=user_name, email=email)


# --- Jira ------------------------------------------------------------------------------------------------


def parse_jira(body: bytes, policy: Policy, headers: Mapping[str, str] | None = None) -> AccessRequest:
    """Read a Jira webhook body (``jira:issue_created`` / ``jira:issue_updated``) into an
    :class:`AccessRequest` through ``[itsm.jira.field_map]``.

    Field values may be plain text or Jira option objects (``{"value": ...}``); ``priority`` is the
    priority's name through ``priority_map``; users are ``{"accountId", "emailAddress", ...}``
    (``user_name`` is the accountId). A resolution (``fields.resolution`` set, or a status in the "done"
    category) makes the event ``resolved``. The delivery id is the ``X-Atlassian-Webhook-Identifier``
    header, or ``<issue id>:<timestamp>`` when the header is absent.
    """
    config = _itsm_config(policy, "jira")
    root = _Object(_load(body), "")
    webhook_event = root.text("webhookEvent")
    event = _JIRA_EVENTS.get(webhook_event)
    if event is None:
        raise PayloadError(
            "webhookEvent",
            f"{webhook_event!r} is not handled (expected {' or '.join(_JIRA_EVENTS)}): "
            "limit the Jira webhook to 'Issue created' and 'Issue updated'",
        )
    issue = root.object("issue")
    issue_id = issue.scalar("id")
    fields = issue.object("fields")
    mapped = _JiraFields(fields, config)

    itsm_priority = mapped.text("priority")
    resolution = fields.get("resolution")
    status = fields.get("status")
    if resolution is not None or _status_category(status) == "done":
        event = "resolved"

    incident = None
    incident_key = mapped.optional_text("incident_key")
    if incident_key:
        incident_state = mapped.optional_text("incident_state") or ""
        incident = LinkedIncident(
            number=incident_key,
            state=incident_state,
            is_open=_jira_is_open(mapped.raw("incident_state")),
            major_incident=_jira_major(mapped, config),
        )

    delivery_id = _header(headers or {}, JIRA_DELIVERY_HEADER)
    if delivery_id is None:
        delivery_id = f"{issue_id}:{root.scalar('timestamp')}"

    return AccessRequest(
        system="jira",
        event=event,
        ticket=issue.text("key"),
        ticket_id=issue_id,
        priority=config.priority_map.get(itsm_priority),
        itsm_priority=itsm_priority,
        state=mapped.optional_text("state") or "",
        short_description=mapped.optional_text("summary") or "",
        opener=mapped.person("opener"),
        assignee=mapped.optional_person("assignee"),
        assignment_group=mapped.optional_text("assignment_group") or "",
        incident=incident,
        access_type=mapped.text("access_type"),
        role=mapped.text("access_role"),
        duration=mapped.duration("access_duration"),
        justification=mapped.optional_text("justification") or "",
        delivery_id=delivery_id,
    )


def _status_category(status: object) -> str | None:
    if isinstance(status, Mapping):
        category = status.get("statusCategory")
        if isinstance(category, Mapping) and isinstance(category.get("key"), str):
            return cast(str, category["key"])
    return None


def _jira_is_open(value: object) -> bool | None:
    """A status object tells (its category); plain text does not (the validation chain looks it up)."""
    category = _status_category(value)
    if category is None:
        return None
    return category != "done"


def _jira_major(mapped: _JiraFields, config: ItsmPolicy) -> bool:
    value = mapped.raw("major_incident")
    items = value if isinstance(value, list) else [value]
    for item in items:
        text = str(item).lower() if isinstance(item, bool) else _option_text(item) or ""
        if text and _is_major(text, config.major_incident_values):
            return True
    return False


class _JiraFields:
    """Reads canonical fields from ``issue.fields`` through the policy's field map."""

    def __init__(self, fields: _Object, config: ItsmPolicy) -> None:
        self._fields = fields
        self._map: Mapping[CanonicalField, str] = config.field_map

    def _path(self, canonical: CanonicalField) -> str | None:
        return self._map.get(canonical) or _JIRA_DEFAULT_PATHS.get(canonical)

    def _where(self, canonical: CanonicalField) -> str:
        path = self._path(canonical)
        return f"{self._fields.path}.{path}"

    def _about(self, canonical: CanonicalField) -> str:
        if canonical in self._map:
            return f" ({canonical}, mapped by itsm.jira.field_map.{canonical})"
        return f" ({canonical})"

    def _fail(self, canonical: CanonicalField, reason: str) -> NoReturn:
        raise PayloadError(self._where(canonical), reason + self._about(canonical))

    def raw(self, canonical: CanonicalField) -> object:
        path = self._path(canonical)
        if path is None:
            return None
        value: object = self._fields.data
        for part in path.split("."):
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value

    def optional_text(self, canonical: CanonicalField) -> str | None:
        value = self.raw(canonical)
        if value is None:
            return None
        text = _option_text(value)
        if text is None:
            self._fail(
                canonical,
                f"must be text or a Jira option ({{'value': ...}}), not {_json_type(value)}",
            )
        return text.strip()

    def text(self, canonical: CanonicalField) -> str:
        if self._path(canonical) is None:  # pragma: no cover - the policy requires the access fields
            raise PayloadError(f"itsm.jira.field_map.{canonical}", "not mapped in the policy")
        text = self.optional_text(canonical)
        if text is None:
            self._fail(canonical, "missing: the issue has no value for this field")
        if not text:
            self._fail(canonical, "must not be empty")
        return text

    def duration(self, canonical: CanonicalField) -> timedelta:
        return _parse_duration_text(self.text(canonical), self._where(canonical), self._about(canonical))

    def optional_person(self, canonical: CanonicalField) -> Person | None:
        value = self.raw(canonical)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self._fail(canonical, f"must be a Jira user object, not {_json_type(value)}")
        account = value.get("accountId")
        name = value.get("name")  # Jira Server / Data Center
        email = value.get("emailAddress")
        user_name = account if isinstance(account, str) and account else name
        if not isinstance(user_name, str):
            user_name = ""
        if not isinstance(email, str) or not email.strip():
            email = None
        if not user_name and email is None:
            self._fail(canonical, "must name a user: accountId or emailAddress (both are empty)")
        return Person(user_name=user_name, email=email)

    def person(self, canonical: CanonicalField) -> Person:
        person = self.optional_person(canonical)
        if person is None:
            self._fail(canonical, "missing: the issue names no user here")
        return person


def _option_text(value: object) -> str | None:
    """Text of a Jira field value: a string, a number, an option/object with ``value`` or ``name``, or an
    Atlassian Document Format document (its text). None for anything else (a list, a bare object)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Mapping):
        for key in ("value", "name"):
            inner = value.get(key)
            if isinstance(inner, str):
                return inner
        if value.get("type") == "doc":
            return _adf_text(value)
    return None


def _adf_text(node: object) -> str:
    if isinstance(node, Mapping):
        if node.get("type") == "text" and isinstance(node.get("text"), str):
            return cast(str, node["text"])
        parts = [_adf_text(child) for child in node.get("content") or () if isinstance(child, Mapping)]
        separator = "\n" if node.get("type") == "doc" else ""
        return separator.join(parts)
    return ""


# --- shared parsing --------------------------------------------------------------------------------------


def parse(
    system: str, body: bytes, policy: Policy, headers: Mapping[str, str] | None = None
) -> AccessRequest:
    """Dispatch to the parser of ``system`` (servicenow, jira); other systems are not supported yet."""
    if system == "servicenow":
        return parse_servicenow(body, policy)
    if system == "jira":
        return parse_jira(body, policy, headers)
    if system in ITSM_SYSTEMS:
        raise UnsupportedSystemError(f"{system} intake is not supported yet: keep itsm.{system} disabled")
    raise UnsupportedSystemError(f"unknown ITSM system {system!r} (known: {', '.join(ITSM_SYSTEMS)})")


def _itsm_config(policy: Policy, system: ItsmSystem) -> ItsmPolicy:
    config = policy.itsm.get(system)
    if config is None:
        raise UnsupportedSystemError(f"{system} is not configured in the policy ([itsm.{system}])")
    return config


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    raise PayloadError("body", f"not valid JSON: {name} is not a JSON number")


def _load(body: bytes) -> Mapping[str, Any]:
    if not isinstance(body, bytes | bytearray):
        raise TypeError(f"body must be bytes, not {type(body).__name__}")
    if not body.strip():
        raise PayloadError("body", "empty: expected a JSON object")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("body", f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            "body", f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except _DuplicateKeyError as exc:
        raise PayloadError(
            "body", f"duplicate key {exc.key!r} in one JSON object (ambiguous: send each key once)"
        ) from None
    except RecursionError:
        raise PayloadError("body", "nested too deeply to be a ticket payload") from None
    if not isinstance(data, dict):
        raise PayloadError("body", f"must be a JSON object, not {_json_type(data)}")
    return data


class _Object:
    """A JSON object at ``path``, with typed accessors whose errors name the field's full path."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = data
        self.path = path or "body"
        self._prefix = f"{path}." if path else ""

    def where(self, key: str) -> str:
        return self._prefix + key

    def get(self, key: str) -> object:
        return self.data.get(key)

    def _present(self, key: str) -> object:
        if key not in self.data:
            raise PayloadError(self.where(key), "missing required field")
        value = self.data[key]
        if value is None:
            raise PayloadError(self.where(key), "must not be null")
        return value

    def text(self, key: str, *, allow_empty: bool = False) -> str:
        value = self._present(key)
        if not isinstance(value, str):
            raise PayloadError(self.where(key), f"must be a string, not {_json_type(value)}")
        value = value.strip()
        if not value and not allow_empty:
            raise PayloadError(self.where(key), "must not be empty")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise PayloadError(self.where(key), f"must be a string or null, not {_json_type(value)}")
        return value.strip()

    def scalar(self, key: str, *, allow_empty: bool = False) -> str:
        """A string or an integer (ServiceNow may send ``"1"`` or ``1``), as text."""
        value = self._present(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise PayloadError(self.where(key), f"must be a string or an integer, not {_json_type(value)}")
        value = value.strip()
        if not value and not allow_empty:
            raise PayloadError(self.where(key), "must not be empty")
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.text(key)
        if value not in allowed:
            raise PayloadError(self.where(key), f"{value!r} is not one of {', '.join(allowed)}")
        return value

    def object(self, key: str) -> _Object:
        value = self._present(key)
        if not isinstance(value, dict):
            raise PayloadError(self.where(key), f"must be an object, not {_json_type(value)}")
        return _Object(value, self.where(key))

    def optional_object(self, key: str) -> _Object | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise PayloadError(self.where(key), f"must be an object or null, not {_json_type(value)}")
        return _Object(value, self.where(key))

    def duration(self, key: str) -> timedelta:
        return _parse_duration_text(self.text(key), self.where(key), "")


def _parse_duration_text(text: str, where: str, about: str) -> timedelta:
    try:
        duration = parse_duration(text)
    except DurationError as exc:
        detail = "" if exc.reason.startswith("expected") else f" ({exc.reason.split(':')[0]})"
        raise PayloadError(
            where, f"{text!r} is not an ISO 8601 duration such as PT1H{detail}{about}"
        ) from None
    if duration <= timedelta(0):
        raise PayloadError(where, f"{text!r} must be longer than zero{about}")
    return duration


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted and value.strip():
            return value.strip()
    return None


def _is_major(value: str, major_values: tuple[str, ...]) -> bool:
    folded = value.strip().casefold()
    return any(folded == candidate.casefold() for candidate in major_values)


# --- trigger ---------------------------------------------------------------------------------------------


def trigger_decision(request: AccessRequest, policy: Policy) -> TriggerDecision:
    """Whether ``request`` starts an access request (design.md "Trigger").

    It starts only when the event is not a resolution, the canonical priority equals
    ``trigger.priority``, the access type equals ``trigger.access_type`` (ignoring case) and the duration
    is at most ``trigger.max_duration``. Otherwise ``reason`` names every condition that failed, e.g.
    ``"priority P2 is not P1"``.
    """
    trigger = policy.trigger
    failed: list[str] = []
    if request.event == "resolved":
        failed.append("the ticket is resolved (a resolution ends requests, it never starts one)")
    if request.priority is None:
        failed.append(
            f"priority {request.itsm_priority!r} is not in itsm.{request.system}.priority_map, "
            f"so it is not {trigger.priority}"
        )
    elif request.priority != trigger.priority:
        failed.append(f"priority {request.priority} is not {trigger.priority}")
    if request.access_type.strip().casefold() != trigger.access_type.casefold():
        failed.append(f"access type {request.access_type!r} is not {trigger.access_type!r}")
    if request.duration > trigger.max_duration:
        failed.append(
            f"duration {format_duration(request.duration)} is longer than the "
            f"{format_duration(trigger.max_duration)} allowed"
        )
    if failed:
        return TriggerDecision(starts=False, reason="; ".join(failed))
    return TriggerDecision(
        starts=True,
        reason=(
            f"priority {request.priority}, access type {trigger.access_type!r}, duration "
            f"{format_duration(request.duration)} (at most {format_duration(trigger.max_duration)})"
        ),
    )


# --- instance ids ----------------------------------------------------------------------------------------

_SAFE_TICKET_RE = re.compile(r"[A-Za-z0-9_-]{1,40}", re.ASCII)
_UNSAFE_RUN_RE = re.compile(r"[^A-Za-z0-9_-]+", re.ASCII)
_GUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)


def request_digest(request: AccessRequest) -> str:
    """What a delivery asks for: who, which role, how long, why, for which incident. Two deliveries with
    the same digest ask the same thing, whatever else changed on the ticket (notes, states)."""
    asked = {
        "role": request.role.strip().casefold(),
        "assignee": request.assignee.to_dict() if request.assignee else None,
        "accessType": request.access_type.strip().casefold(),
        "duration": format_duration(request.duration),
        "justification": request.justification,
        "incident": request.incident.number if request.incident else None,
        "priority": request.priority,
    }
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def ticket_key(system: str, ticket: str) -> str:
    """``<system>-<ticket>``: the (system, ticket) part of instance ids, safe as a Table Storage key.

    A ticket made of ``A-Z a-z 0-9 _ -`` (at most 40 characters) is kept as it is. Any other ticket is
    sanitised (each run of other characters becomes ``_``, cut to 40 characters) and gets ``~`` plus 10
    hex digits of its SHA-256, so two different tickets never share a key and a sanitised key never
    equals a kept one (kept keys have no ``~``).
    """
    if system not in ITSM_SYSTEMS:
        raise ValueError(f"unknown ITSM system {system!r} (known: {', '.join(ITSM_SYSTEMS)})")
    if not isinstance(ticket, str) or not ticket:
        raise ValueError("ticket must be a non-empty string")
    if _SAFE_TICKET_RE.fullmatch(ticket):
        return f"{system}-{ticket}"
    cleaned = _UNSAFE_RUN_RE.sub("_", ticket)[:40]
    digest = hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{system}-{cleaned}~{digest}"


def instance_id(system: str, ticket: str, role_template_id: str, generation: int) -> str:
    """The deterministic orchestration instance id of one request: one per (system, ticket, role) and
    generation (a re-request after a request ended gets the next generation), e.g.
    ``servicenow-INC0012345-29232cdf-g1``.

    Valid as a Durable Functions instance id and a Table Storage key: only ``A-Z a-z 0-9 _ - ~``, no
    ``/ \\ # ?``, no control characters; at most 80 characters for generations below 10,000,000.
    """
    template = role_template_id.lower() if isinstance(role_template_id, str) else ""
    if not _GUID_RE.fullmatch(template):
        raise ValueError(f"role_template_id must be a GUID, not {role_template_id!r}")
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
        raise ValueError(f"generation must be an integer >= 1, not {generation!r}")
    return f"{ticket_key(system, ticket)}-{template[:8]}-g{generation}"
