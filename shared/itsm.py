"""ITSM adapters: write notes and our request states back to the ticket, and read a linked incident fresh.

One interface, :class:`TicketSystem`, with one implementation per ITSM:

- :class:`ServiceNowTickets`: the Table API. Notes are ``work_notes`` (``PATCH /api/now/table/incident/
  {sys_id}``); a state is a work note headed ``[<label>]`` (ServiceNow incident states are numbers that
  belong to the service desk, so the app never writes ``state``: docs/itsm.md says why); the incident is
  read with ``GET /api/now/table/incident?sysparm_query=number=<n>``.
- :class:`JiraTickets`: REST v3. Notes are comments in Atlassian Document Format (one paragraph per
  line); a state is the workflow transition the policy names for it (``[itsm.jira.transitions]``), found
  by name among the issue's available transitions; the incident is ``GET /rest/api/3/issue/{key}``.

Every write returns a :class:`TicketCall`, the evidence an audit row records (method, path, status and the
ITSM's own request id header). Failures raise :class:`TicketError` naming the call, the status and the
ITSM's own message; ``transient`` (429, 5xx, no answer) tells the workflow a retry may succeed. The
adapters never retry themselves and never log or echo credentials.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import httpx

from shared.intake import SERVICENOW_CLOSED_STATES, SERVICENOW_OPEN_STATES
from shared.models import LinkedIncident
from shared.policy import ItsmPolicy, ItsmSystem, Policy, StateKey
from shared.settings import Settings
from shared.webhooks import UnsupportedSystemError

__all__ = [
    "DEFAULT_TIMEOUT",
    "HttpApi",
    "JiraTickets",
    "ServiceNowTickets",
    "TicketCall",
    "TicketError",
    "TicketRef",
    "TicketSystem",
    "TransitionNotFoundError",
    "adf_document",
    "error_message",
    "response_request_id",
    "ticket_system",
]

DEFAULT_TIMEOUT = httpx.Timeout(20.0, connect=5.0)
"""Per call: 5 s to connect, 20 s for each read/write (a ticket write is small; a slow ITSM is retried
by the workflow, not waited for)."""

# Response headers that carry the ITSM's own id for a request, in order of preference, per system.
_REQUEST_ID_HEADERS: Mapping[str, tuple[str, ...]] = {
    "servicenow": ("X-Transaction-ID", "X-Request-Id"),
    "jira": ("X-AREQUESTID", "Atl-Traceid", "X-Request-Id"),
    "pagerduty": ("X-Request-Id",),
}
_MAX_ERROR_TEXT = 300
_SYS_ID_RE = re.compile(r"[0-9a-f]{32}", re.ASCII)
# Incident numbers go into a sysparm_query: nothing that could add a condition (^, =, commas...).
_SERVICENOW_NUMBER_RE = re.compile(r"[A-Za-z0-9_.-]{1,40}", re.ASCII)
_JIRA_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*-[0-9]+|[0-9]+", re.ASCII)
# Fields read for a fresh incident.
_SERVICENOW_INCIDENT_FIELDS = "sys_id,number,state,active,major_incident_state"
_JIRA_DEFAULT_MAJOR_FIELD = "labels"
# Jira Service Management shows a comment to the customer unless this entity property marks it internal
# (agents only); on a project without JSM it is stored on the comment and has no effect.
_INTERNAL_COMMENT: Mapping[str, Any] = {"key": "sd.public.comment", "value": {"internal": True}}


# --- values ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketRef:
    """The ticket to write to: ``system``, ``ticket`` (the number people read: ``INC0012345``,
    ``OPS-42``) and ``ticket_id`` (the ITSM's own id for API calls: ServiceNow ``sys_id``, Jira issue
    id). An :class:`~shared.models.AccessRequest` carries all three."""

    system: ItsmSystem
    ticket: str
    ticket_id: str

    def to_dict(self) -> dict[str, str]:
        return {"system": self.system, "ticket": self.ticket, "ticket_id": self.ticket_id}


@dataclass(frozen=True)
class TicketCall:
    """One ITSM call as evidence: what ran, the answer's status and the ITSM's request id header
    (ServiceNow ``X-Transaction-ID``, Jira ``X-AREQUESTID``; "" when the ITSM sent none), and what it did
    (``summary``, e.g. ``transition 'Work in progress' (id 41)``)."""

    system: str
    method: str
    path: str
    status: int
    request_id: str = ""
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TicketError(RuntimeError):
    """An ITSM call failed.

    ``status`` is the HTTP status, or None when no answer came (timeout, connection refused) or when the
    failure was found by us (see :class:`TransitionNotFoundError`); ``itsm_message`` is the ITSM's own
    error text; ``path`` the API path called. ``transient`` is True for 429, 5xx and no answer: the
    workflow may retry later (a timed-out write may still have been applied).
    """

    def __init__(
        self,
        message: str,
        *,
        system: str,
        method: str,
        path: str,
        status: int | None,
        itsm_message: str = "",
        request_id: str = "",
        transient: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.system = system
        self.method = method
        self.path = path
        self.status = status
        self.itsm_message = itsm_message
        self.request_id = request_id
        self.transient = (
            (status is None or status == 429 or status >= 500) if transient is None else transient
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly evidence of the failure (for the audit row)."""
        return {
            "system": self.system,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "itsmMessage": self.itsm_message,
            "requestId": self.request_id,
            "transient": self.transient,
            "message": str(self),
        }


class TransitionNotFoundError(TicketError):
    """The issue's workflow offers no transition with the name the policy gives for a state.

    Not transient: the issue's workflow (or ``[itsm.jira.transitions]``) has to change. ``available``
    lists the transition names the issue offered.
    """

    def __init__(
        self,
        *,
        ticket: str,
        state_key: str,
        wanted: str,
        available: Sequence[str],
        path: str,
        request_id: str,
    ) -> None:
        self.state_key = state_key
        self.wanted = wanted
        self.available = tuple(available)
        offered = ", ".join(repr(name) for name in self.available) or "none"
        super().__init__(
            f"Jira issue {ticket} offers no transition named {wanted!r} for state {state_key!r} "
            f"(itsm.jira.transitions.{state_key}); available transitions: {offered}",
            system="jira",
            method="GET",
            path=path,
            status=None,
            request_id=request_id,
            transient=False,
        )


# --- the interface ---------------------------------------------------------------------------------------


class TicketSystem(Protocol):
    """What the workflow writes to and reads from an ITSM."""

    async def add_note(self, ticket: TicketRef, text: str) -> TicketCall:
        """Add ``text`` to the ticket as an internal note (ServiceNow work note, Jira comment)."""
        ...

    async def set_state(self, ticket: TicketRef, state_key: StateKey) -> TicketCall:
        """Show our state ``state_key`` on the ticket, as the policy labels it for this ITSM."""
        ...

    async def get_incident(self, number: str) -> LinkedIncident | None:
        """The incident ``number`` as the ITSM holds it now (None: no such incident)."""
        ...

    async def aclose(self) -> None:
        """Close the HTTP client."""
        ...


# --- shared HTTP plumbing --------------------------------------------------------------------------------


class HttpApi:
    """One httpx.AsyncClient for one service (an ITSM, or PagerDuty for shared.roster), with the
    call -> :class:`TicketCall` evidence / :class:`TicketError` translation. Never retries."""

    def __init__(
        self,
        system: str,
        base_url: str,
        headers: Mapping[str, str],
        auth: httpx.Auth | None,
        timeout: httpx.Timeout,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.system = system
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Accept": "application/json", **headers},
            auth=auth,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,  # a redirect would send the credentials elsewhere
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | Sequence[str]] | None = None,
        json: Any = None,
        allow: tuple[int, ...] = (),
    ) -> tuple[httpx.Response, TicketCall]:
        """Send one request; a status >= 400 not in ``allow`` raises :class:`TicketError`."""
        try:
            response = await self._client.request(method, path, params=params, json=json)
        except httpx.TimeoutException as error:
            raise TicketError(
                f"{self.system} {method} {path}: no answer in time ({type(error).__name__})",
                system=self.system,
                method=method,
                path=path,
                status=None,
            ) from None
        except httpx.TransportError as error:
            raise TicketError(
                f"{self.system} {method} {path}: cannot reach the service ({type(error).__name__})",
                system=self.system,
                method=method,
                path=path,
                status=None,
            ) from None
        request_id = response_request_id(self.system, response)
        call = TicketCall(self.system, method, path, response.status_code, request_id)
        if response.status_code >= 400 and response.status_code not in allow:
            detail = error_message(response)
            raise TicketError(
                f"{self.system} {method} {path} failed ({response.status_code}): {detail}",
                system=self.system,
                method=method,
                path=path,
                status=response.status_code,
                itsm_message=detail,
                request_id=request_id,
            )
        return response, call

    def json_object(self, response: httpx.Response, call: TicketCall) -> Mapping[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, Mapping):
            raise TicketError(
                f"{self.system} {call.method} {call.path} answered {call.status} without a JSON object",
                system=self.system,
                method=call.method,
                path=call.path,
                status=call.status,
                itsm_message=response.text[:_MAX_ERROR_TEXT],
                request_id=call.request_id,
                transient=False,
            )
        return body


def response_request_id(system: str, response: httpx.Response) -> str:
    """The service's own id for this request, from its response headers ("" when none)."""
    for name in _REQUEST_ID_HEADERS.get(system, ("X-Request-Id",)):
        value = response.headers.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def error_message(response: httpx.Response) -> str:
    """The service's own error text: ServiceNow ``error.message (detail)``, Jira ``errorMessages`` and
    ``errors``, PagerDuty ``error.message (errors)``; otherwise the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    parts: list[str] = []
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            for key in ("message", "detail"):
                if isinstance(error.get(key), str) and error[key]:
                    parts.append(error[key])
            errors = error.get("errors")
            if isinstance(errors, list):
                parts.extend(str(item) for item in errors if item)
        elif isinstance(error, str) and error:
            parts.append(error)
        messages = body.get("errorMessages")
        if isinstance(messages, list):
            parts.extend(str(item) for item in messages if item)
        field_errors = body.get("errors")
        if isinstance(field_errors, Mapping):
            parts.extend(f"{field}: {text}" for field, text in field_errors.items())
    if not parts:
        text = response.text.strip()
        return text[:_MAX_ERROR_TEXT] if text else response.reason_phrase or "no error message"
    joined = "; ".join(parts)
    return joined if len(joined) <= _MAX_ERROR_TEXT else joined[: _MAX_ERROR_TEXT - 3] + "..."


def _check_system(ticket: TicketRef, system: str) -> None:
    if ticket.system != system:
        raise ValueError(f"ticket {ticket.ticket} belongs to {ticket.system}, not {system}")


def _note_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a ticket note needs text")
    return text.strip("\n")


def _is_major(value: str, major_values: Sequence[str]) -> bool:
    folded = value.strip().casefold()
    return bool(folded) and any(folded == candidate.casefold() for candidate in major_values)


# --- ServiceNow ------------------------------------------------------------------------------------------


class _BasicAuthTickets:
    """The connection both ITSM adapters share: one HTTP client with Basic auth, closed with the adapter."""

    system: str

    def __init__(
        self,
        base_url: str,
        user: str,
        secret: str,
        config: ItsmPolicy,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        self._api = HttpApi(self.system, base_url, {}, httpx.BasicAuth(user, secret), timeout, transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._api.aclose()


class ServiceNowTickets(_BasicAuthTickets):
    """ServiceNow incidents through the Table API, with Basic auth (an integration user).

    - :meth:`add_note`: ``PATCH /api/now/table/incident/{sys_id}`` with ``{"work_notes": text}``.
    - :meth:`set_state`: a work note ``[<label>] ...`` with the policy's ``state_labels`` label; the
      incident's own ``state`` is never written (it is the service desk's; resolving the incident is what
      ends access).
    - :meth:`get_incident`: ``GET /api/now/table/incident?sysparm_query=number=<n>&sysparm_limit=1``;
      open for states 1-3, not for 6-8 (else by ``active``); major when ``major_incident_state`` is one of
      the policy's ``major_incident_values``.
    """

    system = "servicenow"

    def _incident_path(self, ticket: TicketRef) -> str:
        _check_system(ticket, self.system)
        sys_id = ticket.ticket_id.strip().lower()
        if not _SYS_ID_RE.fullmatch(sys_id):
            raise ValueError(f"ticket {ticket.ticket}: ticket_id {ticket.ticket_id!r} is not a sys_id")
        return f"/api/now/table/incident/{sys_id}"

    async def _work_note(self, ticket: TicketRef, text: str, summary: str) -> TicketCall:
        path = self._incident_path(ticket)
        _, call = await self._api.call(
            "PATCH",
            path,
            params={"sysparm_fields": "sys_id,number", "sysparm_exclude_reference_link": "true"},
            json={"work_notes": text},
        )
        return TicketCall(call.system, call.method, call.path, call.status, call.request_id, summary)

    async def add_note(self, ticket: TicketRef, text: str) -> TicketCall:
        return await self._work_note(ticket, _note_text(text), "work note")

    async def set_state(self, ticket: TicketRef, state_key: StateKey) -> TicketCall:
        label: str = getattr(self._config.state_labels, state_key)
        text = f"[{label}] Emergency access state: {label}."
        return await self._work_note(ticket, text, f"work note [{label}] (state {state_key})")

    async def get_incident(self, number: str) -> LinkedIncident | None:
        wanted = number.strip()
        if not _SERVICENOW_NUMBER_RE.fullmatch(wanted):
            raise ValueError(f"{number!r} is not a ServiceNow incident number")
        path = "/api/now/table/incident"
        response, call = await self._api.call(
            "GET",
            path,
            params={
                "sysparm_query": f"number={wanted}",
                "sysparm_limit": "1",
                "sysparm_fields": _SERVICENOW_INCIDENT_FIELDS,
                "sysparm_exclude_reference_link": "true",
            },
        )
        result = self._api.json_object(response, call).get("result")
        if not isinstance(result, list) or not result or not isinstance(result[0], Mapping):
            return None
        record = result[0]
        state = str(record.get("state") or "")
        return LinkedIncident(
            number=str(record.get("number") or wanted),
            state=state,
            is_open=_servicenow_is_open(state, record.get("active")),
            major_incident=_is_major(
                str(record.get("major_incident_state") or ""), self._config.major_incident_values
            ),
        )


def _servicenow_is_open(state: str, active: object) -> bool | None:
    folded = state.strip().casefold()
    if folded in SERVICENOW_OPEN_STATES or folded in SERVICENOW_OPEN_STATES.values():
        return True
    if folded in SERVICENOW_CLOSED_STATES or folded in SERVICENOW_CLOSED_STATES.values():
        return False
    # A state of the instance's own (custom choice): only "active" tells, and only that it is closed.
    if str(active).strip().lower() == "false":
        return False
    return None


# --- Jira ------------------------------------------------------------------------------------------------


def adf_document(text: str) -> dict[str, Any]:
    """``text`` as an Atlassian Document Format document: one paragraph per line (an empty line is an
    empty paragraph), plain text without marks."""
    lines = text.split("\n")
    return {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": line}] if line else []}
            for line in (line.rstrip("\r") for line in lines)
        ],
    }


class JiraTickets(_BasicAuthTickets):
    """Jira (Service Management) issues through REST v3, with Basic auth (account email + API token).

    - :meth:`add_note`: ``POST /rest/api/3/issue/{id}/comment`` with an ADF body, marked internal for
      Jira Service Management (``sd.public.comment``), like a ServiceNow work note.
    - :meth:`set_state`: ``GET .../transitions``, the one whose name equals the policy's
      ``[itsm.jira.transitions]`` name for the state (ignoring case), ``POST .../transitions`` with its id.
      When none matches but the issue's status already has that name, nothing is done (a retry).
    - :meth:`get_incident`: ``GET /rest/api/3/issue/{key}``; closed when its status category is ``done``;
      major when the policy's ``field_map.major_incident`` field (default ``labels``) holds one of
      ``major_incident_values``.
    """

    system = "jira"

    def _issue_path(self, ticket: TicketRef) -> str:
        _check_system(ticket, self.system)
        # The issue id is stable; the key changes when an issue moves to another project.
        key = (ticket.ticket_id or ticket.ticket).strip()
        if not _JIRA_KEY_RE.fullmatch(key):
            raise ValueError(f"ticket {ticket.ticket}: {key!r} is not a Jira issue id or key")
        return f"/rest/api/3/issue/{key}"

    async def add_note(self, ticket: TicketRef, text: str) -> TicketCall:
        path = self._issue_path(ticket) + "/comment"
        body = {"body": adf_document(_note_text(text)), "properties": [_INTERNAL_COMMENT]}
        _, call = await self._api.call("POST", path, json=body)
        return TicketCall(call.system, call.method, call.path, call.status, call.request_id, "comment")

    async def set_state(self, ticket: TicketRef, state_key: StateKey) -> TicketCall:
        wanted = self._config.transitions.get(state_key)
        if wanted is None:
            raise ValueError(
                f"the policy names no Jira transition for state {state_key!r}: "
                f"set itsm.jira.transitions.{state_key}"
            )
        path = self._issue_path(ticket) + "/transitions"
        response, listed = await self._api.call("GET", path)
        body = self._api.json_object(response, listed)
        transitions = [t for t in body.get("transitions") or [] if isinstance(t, Mapping)]
        folded = wanted.casefold()
        chosen = next((t for t in transitions if str(t.get("name", "")).casefold() == folded), None)
        if chosen is None or not chosen.get("id"):
            current = await self._current_status(ticket)
            if current is not None and current[0].casefold() == folded:
                # Already there (e.g. a retry after a transition that was applied but not answered): the
                # policy names transitions after their target status, and a workflow may not offer a
                # transition into the status an issue is in.
                _, call = current
                summary = f"already in status {wanted!r} for state {state_key}: no transition needed"
                return TicketCall(call.system, call.method, call.path, call.status, call.request_id, summary)
            raise TransitionNotFoundError(
                ticket=ticket.ticket,
                state_key=state_key,
                wanted=wanted,
                available=[str(t.get("name", "")) for t in transitions],
                path=path,
                request_id=listed.request_id,
            )
        transition_id = str(chosen["id"])
        _, call = await self._api.call("POST", path, json={"transition": {"id": transition_id}})
        summary = f"transition {str(chosen.get('name'))!r} (id {transition_id}) for state {state_key}"
        return TicketCall(call.system, call.method, call.path, call.status, call.request_id, summary)

    async def _current_status(self, ticket: TicketRef) -> tuple[str, TicketCall] | None:
        response, call = await self._api.call("GET", self._issue_path(ticket), params={"fields": "status"})
        fields = self._api.json_object(response, call).get("fields")
        status = fields.get("status") if isinstance(fields, Mapping) else None
        name = status.get("name") if isinstance(status, Mapping) else None
        return (name, call) if isinstance(name, str) else None

    async def get_incident(self, number: str) -> LinkedIncident | None:
        key = number.strip()
        if not _JIRA_KEY_RE.fullmatch(key):
            raise ValueError(f"{number!r} is not a Jira issue key")
        major_path = self._config.field_map.get("major_incident") or _JIRA_DEFAULT_MAJOR_FIELD
        major_field = major_path.split(".", 1)[0]
        path = f"/rest/api/3/issue/{key}"
        response, call = await self._api.call(
            "GET", path, params={"fields": f"status,{major_field}"}, allow=(404,)
        )
        if call.status == 404:
            return None  # no such issue (or the account may not see it: docs/itsm.md)
        body = self._api.json_object(response, call)
        fields = body.get("fields")
        fields = fields if isinstance(fields, Mapping) else {}
        status = fields.get("status")
        status = status if isinstance(status, Mapping) else {}
        category = status.get("statusCategory")
        category_key = category.get("key") if isinstance(category, Mapping) else None
        return LinkedIncident(
            number=str(body.get("key") or key),
            state=str(status.get("name") or ""),
            is_open=None if not isinstance(category_key, str) else category_key != "done",
            major_incident=_jira_major(_walk(fields, major_path), self._config.major_incident_values),
        )


def _walk(fields: Mapping[str, Any], path: str) -> object:
    value: object = fields
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _jira_major(value: object, major_values: Sequence[str]) -> bool:
    """A label list, an option (``{"value": ...}``), a select list, a boolean or plain text."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool):
            text = str(item).lower()
        elif isinstance(item, str | int):
            text = str(item)
        elif isinstance(item, Mapping):
            inner = item.get("value", item.get("name"))
            text = inner if isinstance(inner, str) else ""
        else:
            text = ""
        if _is_major(text, major_values):
            return True
    return False


# --- factory ---------------------------------------------------------------------------------------------


def ticket_system(
    system: str,
    settings: Settings,
    policy: Policy,
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
) -> TicketSystem:
    """The adapter for ``system`` with its base URL and credentials from ``settings`` and its labels,
    transitions and major-incident values from ``policy``. :class:`~shared.settings.SettingsError` names
    a missing variable; :class:`~shared.webhooks.UnsupportedSystemError` an ITSM without an adapter."""
    config = next((value for key, value in policy.itsm.items() if key == system), None)
    if system == "servicenow":
        if config is None:
            raise UnsupportedSystemError("servicenow is not configured in the policy ([itsm.servicenow])")
        user, password = settings.api_credentials.servicenow()
        return ServiceNowTickets(settings.base_url_for("servicenow"), user, password, config, timeout=timeout)
    if system == "jira":
        if config is None:
            raise UnsupportedSystemError("jira is not configured in the policy ([itsm.jira])")
        email, token = settings.api_credentials.jira()
        return JiraTickets(settings.base_url_for("jira"), email, token, config, timeout=timeout)
    if system in ("ivanti", "xurrent"):
        raise UnsupportedSystemError(f"{system} has no ticket adapter yet: keep itsm.{system} disabled")
    raise UnsupportedSystemError(f"unknown ITSM system {system!r} (known: servicenow, jira, ivanti, xurrent)")
