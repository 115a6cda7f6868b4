"""Exchange Online's own RBAC, read app-only: the workload-side probe of the proof stage (design.md "Proof of
effective access", facts.md "Exchange Online keeps its own RBAC").

Entra's Exchange Administrator role reaches Exchange as membership of the "Organization Management" role
group, minutes after PIM shows it. The probe reads that role group with ``Get-RoleGroupMember`` through the
Exchange Online admin API (the REST endpoint behind the ExchangeOnlineManagement module)::

    POST {EXCHANGE_ADMIN_BASE_URL}/adminapi/beta/{tenantId}/InvokeCommand
    {"CmdletInput": {"CmdletName": "Get-RoleGroupMember",
                     "Parameters": {"Identity": "Organization Management", "ResultSize": "Unlimited"}}}

with a token for :data:`EXCHANGE_SCOPE` (app-only: the ``Exchange.ManageAsApp`` permission and an Exchange
role for the app's service principal). It proves a store, not the responder's session (facts.md).

Each call sends its own ``client-request-id`` and returns a :class:`~shared.audit.GraphCall` with the
service's ``request-id``, like the Graph adapter, so the audit row records it the same way; failures raise
:class:`~shared.directory.DirectoryError` with the service's error code (``Retry-After`` on 429/503).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

import httpx
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError

from shared.audit import GraphCall
from shared.bearer import BearerClient
from shared.directory import DirectoryError, Traced, _retry_after

__all__ = [
    "EXCHANGE_ADMINISTRATOR",
    "EXCHANGE_SCOPE",
    "GET_ROLE_GROUP_MEMBER",
    "PROBE",
    "ROLE_GROUPS",
    "ExchangeRoleGroups",
    "UnknownRoleGroupError",
    "exchange_role_group_probe",
    "role_group_for",
]

EXCHANGE_SCOPE: Final = "https://outlook.office365.com/.default"
PROBE: Final = "exchange_role_group"
GET_ROLE_GROUP_MEMBER: Final = "Get-RoleGroupMember"
EXCHANGE_ADMINISTRATOR: Final = "29232cdf-9323-42fd-ade2-1d097af3e4de"
# Entra role template id -> the Exchange role group its holders land in. Only roles whose role group is known
# are probed; anything else is a policy mistake, said as such (role_group_for).
ROLE_GROUPS: Final[Mapping[str, str]] = MappingProxyType({EXCHANGE_ADMINISTRATOR: "Organization Management"})
_MAX_ERROR_TEXT: Final = 300

log = logging.getLogger(__name__)


class UnknownRoleGroupError(LookupError):
    """No Exchange role group is known for a role template id (the policy asks an Exchange probe of a role
    that Exchange does not map)."""


def role_group_for(role_template_id: str) -> str:
    """The Exchange role group that holders of the Entra role ``role_template_id`` appear in."""
    group = ROLE_GROUPS.get(role_template_id.strip().lower())
    if group is None:
        known = ", ".join(f"{template} -> {name!r}" for template, name in ROLE_GROUPS.items())
        raise UnknownRoleGroupError(
            f"no Exchange role group is known for role template {role_template_id!r}: the "
            f"{PROBE!r} probe can only prove roles that map to one ({known}); remove the probe from this "
            "role in the policy"
        )
    return group


class ExchangeRoleGroups(BearerClient):
    """Reads Exchange Online role groups through the admin API at ``base_url`` for ``tenant_id``.

    ``credential`` gets tokens for :data:`EXCHANGE_SCOPE` (the app's managed identity). ``transport``: for
    tests. The client never retries by itself: the proof stage polls again, and a failure is evidence.
    """

    def __init__(
        self,
        base_url: str,
        tenant_id: str,
        credential: TokenCredential,
        *,
        timeout_s: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__("Exchange admin API base URL", base_url, credential, EXCHANGE_SCOPE,
                         timeout_s=timeout_s, transport=transport)  # fmt: skip
        if not tenant_id.strip():
            raise ValueError("the tenant id is required")
        self._path = f"/adminapi/beta/{quote(tenant_id.strip(), safe='')}/InvokeCommand"

    async def members(self, role_group: str) -> Traced[frozenset[str]]:
        """The Entra object ids (lower case) of ``role_group``'s members, as Exchange lists them now.

        Members are listed as Exchange sees them: a nested group is one member (its own object id), not
        expanded. An unknown role group raises :class:`DirectoryError` with code ``NotFound``."""
        if not isinstance(role_group, str) or not role_group.strip():
            raise ValueError("a role group name is required")
        parameters = {"Identity": role_group, "ResultSize": "Unlimited"}
        value, call = await self._invoke(GET_ROLE_GROUP_MEMBER, parameters)
        items = value.get("value") if isinstance(value, Mapping) else None
        if not isinstance(items, list):
            raise DirectoryError(
                f"Exchange {GET_ROLE_GROUP_MEMBER} {role_group!r}: the answer has no 'value' list",
                "InvalidResponse",
                call,
            )
        ids = frozenset(
            str(item["ExternalDirectoryObjectId"]).lower()
            for item in items
            if isinstance(item, Mapping) and item.get("ExternalDirectoryObjectId")
        )
        return Traced(ids, call)

    async def _invoke(self, cmdlet: str, parameters: Mapping[str, Any]) -> tuple[Any, GraphCall]:
        client_request_id = str(uuid.uuid4())
        label = f"Exchange {cmdlet} (POST {self._path})"
        token = await self._token(client_request_id)
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": dict(parameters)}}
        headers = {"Authorization": f"Bearer {token}", "client-request-id": client_request_id}
        try:
            response = await self._client.post(self._path, json=body, headers=headers)
        except httpx.TimeoutException as error:
            raise self._no_answer(
                client_request_id, "Timeout", f"no answer in time ({type(error).__name__})"
            ) from None
        except httpx.TransportError as error:
            raise self._no_answer(
                client_request_id, "TransportError", f"cannot reach the service ({type(error).__name__})"
            ) from None
        payload = _json_or_none(response)
        call = GraphCall(
            "POST",
            self._path,
            response.status_code,
            response.headers.get("request-id") or _inner(payload, "request-id"),
            client_request_id,
        )
        if response.status_code >= 400:
            code, message = _error_of(response, payload)
            log.warning("%s: %s %s (request-id %s)", label, response.status_code, code, call.request_id)
            raise DirectoryError(
                f"{label} failed ({response.status_code} {code}): {message}",
                code,
                call,
                _retry_after(response.headers.get("retry-after", "")),
            )
        log.info("%s: %s (request-id %s)", label, response.status_code, call.request_id)
        return payload, call

    async def _token(self, client_request_id: str) -> str:
        try:
            return await self._access_token()
        except AzureError as error:
            raise self._no_answer(
                client_request_id, "TokenUnavailable", f"no token for {EXCHANGE_SCOPE}: {error}"
            ) from None

    def _no_answer(self, client_request_id: str, code: str, message: str) -> DirectoryError:
        """No HTTP answer: status 0, our own code (the call still names the client-request-id we sent)."""
        log.warning("Exchange POST %s: %s", self._path, message)
        call = GraphCall("POST", self._path, 0, "", client_request_id)
        return DirectoryError(f"Exchange POST {self._path} failed (no answer, {code}): {message}", code, call)


async def exchange_role_group_probe(
    adapter: ExchangeRoleGroups, responder_id: str, role_template_id: str
) -> dict[str, Any]:
    """The ``exchange_role_group`` probe as ``run_probes`` records it: passed when the responder is a member
    of the role group that ``role_template_id`` maps to. A failed read is a failed probe with the error's
    code and call, never a pass; a role without a known role group fails without calling Exchange."""
    try:
        role_group = role_group_for(role_template_id)
    except UnknownRoleGroupError as error:
        reason = str(error)
        return {"probe": PROBE, "passed": False, "reason": reason, "graph": None, "code": "UnknownRoleGroup"}
    # The duration is the probe's (token included) and lives in the evidence: the "graph" dict must stay
    # exactly a GraphCall, since the audit row is built from it (GraphCall(**graph)).
    started = time.monotonic()
    try:
        members = await adapter.members(role_group)
    except DirectoryError as error:
        return {"probe": PROBE, "passed": False, "reason": str(error)[:_MAX_ERROR_TEXT],
                "graph": error.call.__dict__, "code": error.code, "retryAfter": error.retry_after,
                "evidence": {"roleGroup": role_group, "durationMs": _elapsed_ms(started)}}  # fmt: skip
    passed = responder_id.strip().lower() in members.value
    evidence = {
        "roleGroup": role_group,
        "cmdlet": GET_ROLE_GROUP_MEMBER,
        "memberCount": len(members.value),
        "durationMs": _elapsed_ms(started),
    }
    reason = "" if passed else f"not a member of the Exchange role group {role_group!r} yet"
    return {"probe": PROBE, "passed": passed, "evidence": evidence, "graph": members.call.__dict__,
            "reason": reason}  # fmt: skip


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _inner(payload: Any, key: str) -> str:
    """A value from an error body's ``innererror`` (the request-id when the header is missing)."""
    error = payload.get("error") if isinstance(payload, Mapping) else None
    inner = error.get("innererror") if isinstance(error, Mapping) else None
    value = inner.get(key) if isinstance(inner, Mapping) else None
    return value if isinstance(value, str) else ""


def _error_of(response: httpx.Response, payload: Any) -> tuple[str, str]:
    """The admin API's ``{"error": {"code", "message"}}``; a cmdlet's exception comes as
    ``"|<exception type>|<text>"``, shown as ``<text> (<exception type>)``. Else ``HttpError`` and the start
    of the body."""
    error = payload.get("error") if isinstance(payload, Mapping) else None
    if isinstance(error, Mapping):
        code = error.get("code") or "unknown"
        message = str(error.get("message") or "")
        if message.startswith("|"):
            _, exception, text = [*message.split("|", 2), "", ""][:3]
            message = f"{text} ({exception.rsplit('.', 1)[-1]})" if exception else text
        return str(code), message[:_MAX_ERROR_TEXT]
    return "HttpError", response.text[:_MAX_ERROR_TEXT]
