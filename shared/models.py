"""The canonical access request: what every ITSM webhook is normalised into (see shared.intake).

Small, frozen and JSON-friendly: it crosses activity boundaries as a dict (:meth:`AccessRequest.to_dict`)
or as JSON text (:meth:`AccessRequest.to_json`); durations travel as canonical ISO 8601 text (``PT1H``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeAlias, cast, get_args

from shared.durations import DurationError, format_duration, parse_duration
from shared.policy import ItsmSystem, Priority

__all__ = [
    "EVENTS",
    "ITSM_SYSTEMS",
    "PRIORITIES",
    "AccessRequest",
    "Event",
    "LinkedIncident",
    "Person",
]

Event: TypeAlias = Literal["created", "updated", "resolved"]

ITSM_SYSTEMS: tuple[str, ...] = get_args(ItsmSystem)
EVENTS: tuple[str, ...] = get_args(Event)
PRIORITIES: tuple[str, ...] = get_args(Priority)


@dataclass(frozen=True)
class Person:
    """An ITSM user as the ticket names them.

    ``user_name`` is the ITSM's login (ServiceNow ``user_name``, Jira ``accountId``); ``email`` is the
    address the ITSM holds, or None when the ITSM does not disclose it (Jira hides it by profile
    visibility). The responder's Entra identity is found by an exact match of these, never fuzzily.
    """

    user_name: str
    email: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"user_name": self.user_name, "email": self.email}

    @classmethod
    def from_dict(cls, data: object, where: str = "person") -> Person:
        mapping = _mapping(data, where)
        return cls(
            user_name=_str(mapping, "user_name", where),
            email=_optional_str(mapping, "email", where),
        )


@dataclass(frozen=True)
class LinkedIncident:
    """The incident a request is linked to.

    ``is_open`` is True/False when the ITSM's state says so (ServiceNow: 1-3 open, 6-8 not), None when the
    state is unknown to us (the validation chain then reads the incident from the ITSM).
    ``major_incident`` is True when the incident is a declared major incident per the policy's
    ``major_incident_values``.
    """

    number: str
    state: str
    is_open: bool | None
    major_incident: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "is_open": self.is_open,
            "major_incident": self.major_incident,
        }

    @classmethod
    def from_dict(cls, data: object, where: str = "incident") -> LinkedIncident:
        mapping = _mapping(data, where)
        is_open = mapping.get("is_open")
        if is_open is not None and not isinstance(is_open, bool):
            raise ValueError(f"{where}.is_open must be true, false or null, not {is_open!r}")
        major = mapping.get("major_incident")
        if not isinstance(major, bool):
            raise ValueError(f"{where}.major_incident must be true or false, not {major!r}")
        return cls(
            number=_str(mapping, "number", where),
            state=_str(mapping, "state", where),
            is_open=is_open,
            major_incident=major,
        )


@dataclass(frozen=True)
class AccessRequest:
    """One ITSM delivery, normalised.

    - ``system``: the ITSM (servicenow, jira, ivanti, xurrent); ``event``: created, updated or resolved.
    - ``ticket``: the number people read (``INC0012345``, ``OPS-42``); ``ticket_id``: the ITSM's own id
      for API calls (ServiceNow ``sys_id``, Jira issue id).
    - ``priority``: the canonical priority through the policy's ``priority_map``, or None when the ITSM's
      value (kept in ``itsm_priority``) is not in the map (such a ticket is never a trigger).
    - ``state``: the ticket's state as the ITSM writes it.
    - ``opener``: who opened the ticket (may not approve); ``assignee``: the responder, or None when the
      ticket is unassigned (the validation chain rejects that); ``assignment_group``: "" when none.
    - ``incident``: the linked incident, or None when the ticket names none.
    - ``access_type``, ``role`` (as the ticket spells it), ``duration``, ``justification``: what is asked.
    - ``delivery_id``: identifies this delivery (duplicates carry the same id).
    """

    system: ItsmSystem
    event: Event
    ticket: str
    ticket_id: str
    priority: Priority | None
    itsm_priority: str
    state: str
    short_description: str
    opener: Person
    assignee: Person | None
    assignment_group: str
    incident: LinkedIncident | None
    access_type: str
    role: str
    duration: timedelta
    justification: str
    delivery_id: str

    def __post_init__(self) -> None:
        if self.system not in ITSM_SYSTEMS:
            raise ValueError(f"system must be one of {', '.join(ITSM_SYSTEMS)}, not {self.system!r}")
        if self.event not in EVENTS:
            raise ValueError(f"event must be one of {', '.join(EVENTS)}, not {self.event!r}")
        if self.priority is not None and self.priority not in PRIORITIES:
            raise ValueError(
                f"priority must be one of {', '.join(PRIORITIES)} or None, not {self.priority!r}"
            )
        if self.duration < timedelta(0):
            raise ValueError("duration must not be negative")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (the duration as canonical ISO 8601 text); :meth:`from_dict` reverses it."""
        return {
            "system": self.system,
            "event": self.event,
            "ticket": self.ticket,
            "ticket_id": self.ticket_id,
            "priority": self.priority,
            "itsm_priority": self.itsm_priority,
            "state": self.state,
            "short_description": self.short_description,
            "opener": self.opener.to_dict(),
            "assignee": None if self.assignee is None else self.assignee.to_dict(),
            "assignment_group": self.assignment_group,
            "incident": None if self.incident is None else self.incident.to_dict(),
            "access_type": self.access_type,
            "role": self.role,
            "duration": format_duration(self.duration),
            "justification": self.justification,
            "delivery_id": self.delivery_id,
        }

    @classmethod
    def from_dict(cls, data: object) -> AccessRequest:
        """Rebuild a request from :meth:`to_dict` output; ValueError names the first bad key."""
        mapping = _mapping(data, "request")
        duration_text = _str(mapping, "duration", "request")
        try:
            duration = parse_duration(duration_text)
        except DurationError as exc:
            raise ValueError(f"request.duration: {exc}") from None
        system = _str(mapping, "system", "request")
        event = _str(mapping, "event", "request")
        priority = _optional_str(mapping, "priority", "request")
        if system not in ITSM_SYSTEMS:
            raise ValueError(f"request.system must be one of {', '.join(ITSM_SYSTEMS)}, not {system!r}")
        if event not in EVENTS:
            raise ValueError(f"request.event must be one of {', '.join(EVENTS)}, not {event!r}")
        if priority is not None and priority not in PRIORITIES:
            raise ValueError(f"request.priority must be one of {', '.join(PRIORITIES)} or null")
        assignee = mapping.get("assignee")
        incident = mapping.get("incident")
        return cls(
            system=cast(ItsmSystem, system),  # checked against ITSM_SYSTEMS above
            event=cast(Event, event),  # checked against EVENTS above
            ticket=_str(mapping, "ticket", "request"),
            ticket_id=_str(mapping, "ticket_id", "request"),
            priority=cast(Priority | None, priority),  # checked against PRIORITIES above
            itsm_priority=_str(mapping, "itsm_priority", "request"),
            state=_str(mapping, "state", "request"),
            short_description=_str(mapping, "short_description", "request"),
            opener=Person.from_dict(mapping.get("opener"), "request.opener"),
            assignee=None if assignee is None else Person.from_dict(assignee, "request.assignee"),
            assignment_group=_str(mapping, "assignment_group", "request"),
            incident=None if incident is None else LinkedIncident.from_dict(incident, "request.incident"),
            access_type=_str(mapping, "access_type", "request"),
            role=_str(mapping, "role", "request"),
            duration=duration,
            justification=_str(mapping, "justification", "request"),
            delivery_id=_str(mapping, "delivery_id", "request"),
        )

    def to_json(self) -> str:
        """Compact JSON text with sorted keys (stable, so equal requests give equal text)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> AccessRequest:
        """Rebuild a request from :meth:`to_json` text (or a dict's JSON); ValueError on anything else."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"request: not valid JSON ({exc})") from None
        return cls.from_dict(data)


def _mapping(data: object, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be an object, not {type(data).__name__}")
    return data


def _str(mapping: Mapping[str, Any], key: str, where: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key} must be a string, not {value!r}")
    return value


def _optional_str(mapping: Mapping[str, Any], key: str, where: str) -> str | None:
    value = mapping.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}.{key} must be a string or null, not {value!r}")
    return value
