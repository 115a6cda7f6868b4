"""Who is on call now: the roster providers behind one interface (design.md "Validation chain", step 1).

The policy's ``[roster]`` picks one provider:

- ``entra_group`` (:class:`EntraGroupRoster`): the responder is on call when they are a member (transitively)
  of the on-call responders' Entra group (Graph ``checkMemberGroups``); needs the responder's Entra id.
- ``pagerduty`` (:class:`PagerDutyRoster`): on call when one of the current on-calls of the policy's
  schedules is a PagerDuty user whose email equals the responder's (ignoring case).
- ``servicenow_rota`` (:class:`ServiceNowRotaRoster`): on call when the ServiceNow on-call rota of the
  policy's group lists, now, a user whose ``user_name`` or ``email`` equals the responder's.

Each answer carries ``on_call``, a ``reason`` a person can act on (phrased to follow "<upn> is on call" /
"<upn> is not on call: ...") and the ``evidence`` an audit row records (what was asked, who matched, the
calls with their request ids). A provider that cannot answer raises :class:`RosterError`; never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from shared.directory import DirectoryError, EntraDirectory
from shared.itsm import DEFAULT_TIMEOUT, HttpApi, TicketCall, TicketError
from shared.models import Person
from shared.policy import Policy
from shared.settings import Settings

__all__ = [
    "EntraGroupRoster",
    "OnCallAnswer",
    "OnCallRoster",
    "PagerDutyRoster",
    "RosterError",
    "ServiceNowRotaRoster",
    "on_call_roster",
]

_SYS_ID_RE = re.compile(r"[0-9a-f]{32}", re.ASCII)
_PAGERDUTY_PAGE = 100
_PAGERDUTY_MAX_PAGES = 20  # 2,000 on-call entries: far beyond any real schedule set; more is an error


@dataclass(frozen=True)
class OnCallAnswer:
    """Whether the person is on call now; ``reason`` says why (or why not), ``evidence`` what was read."""

    on_call: bool
    evidence: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"on_call": self.on_call, "evidence": dict(self.evidence), "reason": self.reason}


class RosterError(RuntimeError):
    """The roster provider could not answer (the service failed, or the policy's roster names something
    that does not exist). ``transient`` (429, 5xx, no answer) means a retry may succeed."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        method: str = "",
        path: str = "",
        status: int | None = None,
        service_message: str = "",
        request_id: str = "",
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.method = method
        self.path = path
        self.status = status
        self.service_message = service_message
        self.request_id = request_id
        self.transient = transient

    @classmethod
    def from_ticket_error(cls, provider: str, error: TicketError) -> RosterError:
        return cls(
            f"roster provider {provider!r}: {error}",
            provider=provider,
            method=error.method,
            path=error.path,
            status=error.status,
            service_message=error.itsm_message,
            request_id=error.request_id,
            transient=error.transient,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "serviceMessage": self.service_message,
            "requestId": self.request_id,
            "transient": self.transient,
            "message": str(self),
        }


class OnCallRoster(Protocol):
    """Whether a person is on call now, per the policy's roster provider."""

    async def is_on_call(self, person: Person, directory_user_id: str | None) -> OnCallAnswer:
        """``person`` as the ticket names them; ``directory_user_id`` their Entra object id, if known."""
        ...

    async def aclose(self) -> None:
        """Release the provider's HTTP client (if it has one of its own)."""
        ...


def _call_evidence(call: TicketCall) -> dict[str, Any]:
    return {"method": call.method, "path": call.path, "status": call.status, "requestId": call.request_id}


# --- Entra group -----------------------------------------------------------------------------------------


class EntraGroupRoster:
    """On call = a (transitive) member of the on-call responders' Entra group."""

    provider = "entra_group"

    def __init__(self, directory: EntraDirectory, group_id: str) -> None:
        self._directory = directory
        self._group_id = group_id.lower()

    async def aclose(self) -> None:
        return None  # the Graph client belongs to the caller

    async def is_on_call(self, person: Person, directory_user_id: str | None) -> OnCallAnswer:
        evidence: dict[str, Any] = {"provider": self.provider, "groupId": self._group_id}
        if not directory_user_id:
            return OnCallAnswer(
                False,
                evidence,
                "the responder's Entra user id is not known, so membership of the on-call group "
                f"{self._group_id} cannot be checked",
            )
        evidence["userId"] = directory_user_id
        try:
            traced = await self._directory.member_groups(directory_user_id, [self._group_id])
        except DirectoryError as error:
            raise RosterError(
                f"roster provider 'entra_group': {error}",
                provider=self.provider,
                method=error.call.method,
                path=error.call.path,
                status=error.call.status,
                service_message=error.code,
                request_id=error.call.request_id,
                transient=error.transient,
            ) from None
        call = traced.call
        evidence["calls"] = [
            {
                "method": call.method,
                "path": call.path,
                "status": call.status,
                "requestId": call.request_id,
                "clientRequestId": call.client_request_id,
            }
        ]
        member = self._group_id in traced.value
        evidence["member"] = member
        if member:
            return OnCallAnswer(True, evidence, f"member of the on-call Entra group {self._group_id}")
        return OnCallAnswer(False, evidence, f"not a member of the on-call Entra group {self._group_id}")


# --- PagerDuty -------------------------------------------------------------------------------------------


class PagerDutyRoster:
    """On call = a current on-call of one of the schedules is a PagerDuty user with the person's email.

    ``GET /oncalls?schedule_ids[]=...&include[]=users`` (only with ``include[]=users`` do the entries carry
    the users' emails), all pages. Emails are compared ignoring case; a person without an email is never
    on call here (PagerDuty users are matched by email only).
    """

    provider = "pagerduty"

    def __init__(
        self,
        base_url: str,
        token: str,
        schedule_ids: Sequence[str],
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not schedule_ids:
            raise ValueError("PagerDutyRoster needs at least one schedule id")
        self._schedule_ids = tuple(schedule_ids)
        headers = {
            "Accept": "application/vnd.pagerduty+json;version=2",
            "Authorization": f"Token token={token}",
        }
        self._api = HttpApi("pagerduty", base_url, headers, None, timeout, transport)

    async def aclose(self) -> None:
        await self._api.aclose()

    async def _oncalls(self) -> tuple[list[Mapping[str, Any]], list[TicketCall]]:
        entries: list[Mapping[str, Any]] = []
        calls: list[TicketCall] = []
        offset = 0
        for _ in range(_PAGERDUTY_MAX_PAGES):
            params: dict[str, str | list[str]] = {
                "schedule_ids[]": list(self._schedule_ids),
                "include[]": ["users"],
                "limit": str(_PAGERDUTY_PAGE),
                "offset": str(offset),
            }
            try:
                response, call = await self._api.call("GET", "/oncalls", params=params)
                body = self._api.json_object(response, call)
            except TicketError as error:
                raise RosterError.from_ticket_error(self.provider, error) from None
            calls.append(call)
            page = body.get("oncalls")
            if not isinstance(page, list):
                raise RosterError(
                    "roster provider 'pagerduty': GET /oncalls answered without an 'oncalls' list",
                    provider=self.provider,
                    method="GET",
                    path="/oncalls",
                    status=call.status,
                    request_id=call.request_id,
                )
            entries.extend(entry for entry in page if isinstance(entry, Mapping))
            if body.get("more") is not True:
                return entries, calls
            offset += _PAGERDUTY_PAGE
        raise RosterError(
            f"roster provider 'pagerduty': more than {_PAGERDUTY_PAGE * _PAGERDUTY_MAX_PAGES} on-call "
            f"entries for schedule(s) {', '.join(self._schedule_ids)}; check roster.schedule_ids",
            provider=self.provider,
            method="GET",
            path="/oncalls",
        )

    async def is_on_call(self, person: Person, directory_user_id: str | None) -> OnCallAnswer:
        schedules = ", ".join(self._schedule_ids)
        evidence: dict[str, Any] = {"provider": self.provider, "scheduleIds": list(self._schedule_ids)}
        email = (person.email or "").strip()
        if not email:
            return OnCallAnswer(
                False,
                evidence,
                "the ticket gives no email address for the assignee, and PagerDuty on-call users are "
                "matched by email",
            )
        evidence["email"] = email
        entries, calls = await self._oncalls()
        evidence["calls"] = [_call_evidence(call) for call in calls]
        users = [entry.get("user") for entry in entries]
        user_ids = sorted({str(user.get("id")) for user in users if isinstance(user, Mapping)})
        evidence["onCallUserIds"] = user_ids
        wanted = email.casefold()
        for entry, user in zip(entries, users, strict=True):
            if not isinstance(user, Mapping) or str(user.get("email") or "").casefold() != wanted:
                continue
            schedule = entry.get("schedule")
            schedule_id = schedule.get("id") if isinstance(schedule, Mapping) else None
            matched = {
                "userId": user.get("id"),
                "scheduleId": schedule_id,
                "escalationLevel": entry.get("escalation_level"),
                "start": entry.get("start"),
                "end": entry.get("end"),
            }
            evidence["matched"] = matched
            until = f", until {entry['end']}" if entry.get("end") else ""
            where = f"schedule {schedule_id}" if schedule_id else f"schedule(s) {schedules}"
            return OnCallAnswer(True, evidence, f"on call in PagerDuty {where}{until}")
        if not entries:
            return OnCallAnswer(
                False, evidence, f"nobody is on call now in PagerDuty schedule(s) {schedules}"
            )
        return OnCallAnswer(
            False,
            evidence,
            f"none of the {len(user_ids)} people on call now in PagerDuty schedule(s) {schedules} has the "
            f"email {email}",
        )


# --- ServiceNow on-call rota -----------------------------------------------------------------------------


class ServiceNowRotaRoster:
    """On call = the ServiceNow on-call rota of ``rota_group`` lists a user now (primary or backup) whose
    ``user_name`` or ``email`` equals the person's (ignoring case).

    ``rota_group`` is the group's sys_id, or its exact name (looked up in ``sys_user_group``). Calls:
    ``GET /api/now/on_call_rota/whoisoncall?group_ids=<sys_id>`` (user sys_ids only), then
    ``GET /api/now/table/sys_user?sysparm_query=sys_idIN<ids>`` for their user names and emails.
    """

    provider = "servicenow_rota"

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        rota_group: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        group = rota_group.strip()
        if not group or "^" in group or "," in group:
            raise ValueError(f"rota_group {rota_group!r} must be a group sys_id or name (no '^' or ',')")
        self._rota_group = group
        self._api = HttpApi("servicenow", base_url, {}, httpx.BasicAuth(user, password), timeout, transport)

    async def aclose(self) -> None:
        await self._api.aclose()

    async def _get(self, path: str, params: Mapping[str, str], calls: list[TicketCall]) -> Mapping[str, Any]:
        try:
            response, call = await self._api.call("GET", path, params=params)
            body = self._api.json_object(response, call)
        except TicketError as error:
            raise RosterError.from_ticket_error(self.provider, error) from None
        calls.append(call)
        return body

    async def _group_sys_id(self, calls: list[TicketCall]) -> str:
        if _SYS_ID_RE.fullmatch(self._rota_group.lower()):
            return self._rota_group.lower()
        body = await self._get(
            "/api/now/table/sys_user_group",
            {
                "sysparm_query": f"name={self._rota_group}",
                "sysparm_fields": "sys_id,name",
                "sysparm_limit": "2",
            },
            calls,
        )
        rows = [row for row in _result_rows(body) if str(row.get("name", "")) == self._rota_group]
        if len(rows) != 1:
            found = "no" if not rows else "more than one"
            raise RosterError(
                f"roster provider 'servicenow_rota': {found} ServiceNow group is named {self._rota_group!r} "
                "(roster.rota_group): use the group's exact name or its sys_id",
                provider=self.provider,
                method="GET",
                path="/api/now/table/sys_user_group",
                status=calls[-1].status,
                request_id=calls[-1].request_id,
            )
        return str(rows[0].get("sys_id", ""))

    async def is_on_call(self, person: Person, directory_user_id: str | None) -> OnCallAnswer:
        calls: list[TicketCall] = []
        evidence: dict[str, Any] = {"provider": self.provider, "rotaGroup": self._rota_group}
        user_name = person.user_name.strip()
        email = (person.email or "").strip()
        if not user_name and not email:
            return OnCallAnswer(
                False, evidence, "the ticket names the assignee by neither user name nor email"
            )
        group_id = await self._group_sys_id(calls)
        evidence["groupSysId"] = group_id
        body = await self._get("/api/now/on_call_rota/whoisoncall", {"group_ids": group_id}, calls)
        members = [row for row in _result_rows(body) if _SYS_ID_RE.fullmatch(str(row.get("userId", "")))]
        evidence["onCall"] = [
            {"userId": row.get("userId"), "order": row.get("order"), "isOverride": row.get("isOverride")}
            for row in members
        ]
        if not members:
            evidence["calls"] = [_call_evidence(call) for call in calls]
            return OnCallAnswer(
                False, evidence, f"nobody is on call now in the ServiceNow rota of group {self._rota_group}"
            )
        ids = list(dict.fromkeys(str(row["userId"]) for row in members))
        users_body = await self._get(
            "/api/now/table/sys_user",
            {
                "sysparm_query": "sys_idIN" + ",".join(ids),
                "sysparm_fields": "sys_id,user_name,email",
                "sysparm_limit": str(len(ids)),
            },
            calls,
        )
        evidence["calls"] = [_call_evidence(call) for call in calls]
        users = {str(row.get("sys_id", "")): row for row in _result_rows(users_body)}
        for row in members:
            user = users.get(str(row["userId"]))
            if user is None:
                continue
            by_name = bool(user_name) and str(user.get("user_name", "")).casefold() == user_name.casefold()
            by_email = bool(email) and str(user.get("email", "")).casefold() == email.casefold()
            if by_name or by_email:
                evidence["matched"] = {
                    "userId": row["userId"],
                    "userName": user.get("user_name"),
                    "by": "user_name" if by_name else "email",
                    "order": row.get("order"),
                    "isOverride": row.get("isOverride"),
                }
                role = "primary" if row.get("order") == 1 else f"on-call member {row.get('order')}"
                return OnCallAnswer(
                    True, evidence, f"on call ({role}) in the ServiceNow rota of group {self._rota_group}"
                )
        who = " or ".join(repr(value) for value in (user_name, email) if value)
        return OnCallAnswer(
            False,
            evidence,
            f"none of the {len(ids)} people on call now in the ServiceNow rota of group {self._rota_group} "
            f"is {who}",
        )


def _result_rows(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    result = body.get("result")
    return [row for row in result if isinstance(row, Mapping)] if isinstance(result, list) else []


# --- factory ---------------------------------------------------------------------------------------------


def on_call_roster(
    settings: Settings,
    policy: Policy,
    directory: EntraDirectory | None = None,
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
) -> OnCallRoster:
    """The provider the policy's ``[roster]`` names, configured from ``settings`` (base URL, credentials;
    :class:`~shared.settings.SettingsError` names a missing variable). ``directory`` is needed for
    ``entra_group`` only."""
    roster = policy.roster
    if roster.provider == "entra_group":
        if directory is None:
            raise ValueError("the entra_group roster provider needs the Entra directory (Graph client)")
        assert roster.group_id is not None  # the policy requires it for this provider
        return EntraGroupRoster(directory, roster.group_id)
    if roster.provider == "pagerduty":
        assert roster.schedule_ids is not None
        token = settings.api_credentials.pagerduty()
        return PagerDutyRoster(
            settings.base_url_for("pagerduty"), token, roster.schedule_ids, timeout=timeout
        )
    assert roster.rota_group is not None
    user, password = settings.api_credentials.servicenow()
    return ServiceNowRotaRoster(
        settings.base_url_for("servicenow"), user, password, roster.rota_group, timeout=timeout
    )
