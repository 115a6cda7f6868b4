"""The Bot Connector REST API client: how the app posts and updates approval cards in Microsoft Teams.

A click on an approval card reaches the bot endpoint as an invoke (``shared.bot_auth`` checks it); everything
the app sends *to* Teams on its own initiative (the approval card, reminders, the card updated after a
decision) is a proactive message through the Bot Connector REST API at the ``serviceUrl``
(``BOT_CONNECTOR_SERVICE_URL``): ``{serviceUrl}/v3/conversations/{id}/activities``.

Those calls need a token for ``https://api.botframework.com/.default`` (facts.md, "Microsoft Teams
approvals"), issued to the *bot's* identity, not the Graph one: the Bot Connector accepts only the app id
registered as the bot. The caller passes the credential for that identity; ``azure-identity`` caches its
tokens, so asking for one per call is cheap.

Conversation ids contain ``:``, ``@`` and ``;`` (``19:...@thread.tacv2;messageid=...``) and are quoted as
one path segment. Failures raise :class:`BotConnectorError` with the Bot Connector's own error code and
message; ``transient`` (429, 412, 5xx, no answer) tells the workflow a retry may succeed. The client never
retries by itself, and never logs the token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError

from shared.bearer import BearerClient

__all__ = [
    "ADAPTIVE_CARD_CONTENT_TYPE",
    "BOT_FRAMEWORK_SCOPE",
    "BotConnector",
    "BotConnectorError",
    "PostedActivity",
]

BOT_FRAMEWORK_SCOPE: Final = "https://api.botframework.com/.default"
ADAPTIVE_CARD_CONTENT_TYPE: Final = "application/vnd.microsoft.card.adaptive"
_MAX_ERROR_TEXT: Final = 300

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostedActivity:
    """A message in Teams: the conversation it is in and its activity id (to reply to it or update it)."""

    conversation_id: str
    activity_id: str


class BotConnectorError(RuntimeError):
    """A Bot Connector call failed.

    ``status`` is the HTTP status, or 0 when no answer came (timeout, connection refused) or no token could
    be had; ``code`` and ``message`` are the Bot Connector's (``ConversationNotFound``, ``BadArgument``...;
    ours for failures without an answer). ``retry_after_s``: the ``Retry-After`` the service asked for.
    """

    def __init__(
        self, status: int, code: str, message: str, *, operation: str = "", retry_after_s: float | None = None
    ) -> None:
        where = f"Bot Connector {operation}" if operation else "Bot Connector call"
        super().__init__(f"{where} failed ({status or 'no answer'} {code}): {message}")
        self.status = status
        self.code = code
        self.message = message
        self.operation = operation
        self.retry_after_s = retry_after_s

    @property
    def transient(self) -> bool:
        """True for 429 (``Throttled``), 412 (``PreconditionFailed``: concurrent operations on the same
        conversation; Teams says to retry with backoff), 5xx and no answer: the call may succeed later."""
        return self.status in (0, 412, 429) or self.status >= 500


class BotConnector(BearerClient):
    """One HTTP client for the Bot Connector at ``service_url``, as the bot ``bot_app_id`` of ``tenant_id``.

    ``credential`` must get tokens for the bot's own app registration (:data:`BOT_FRAMEWORK_SCOPE`).
    ``transport``: for tests (an ``httpx.MockTransport``).
    """

    def __init__(
        self,
        service_url: str,
        credential: TokenCredential,
        bot_app_id: str,
        tenant_id: str,
        *,
        timeout_s: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__("Bot Connector service URL", service_url, credential, BOT_FRAMEWORK_SCOPE,
                         timeout_s=timeout_s, transport=transport)  # fmt: skip
        if not bot_app_id or not tenant_id:
            raise ValueError("the bot app id and the tenant id are required")
        self._bot_app_id = bot_app_id
        self._tenant_id = tenant_id

    # -- operations ---------------------------------------------------------------------------------------

    async def post_card(self, conversation_id: str, card: dict[str, Any], summary: str) -> PostedActivity:
        """Post an Adaptive Card as a new message; ``summary`` is the message's ``summary`` and its text
        (what notifications and clients that cannot render the card show)."""
        path = f"/v3/conversations/{_segment(conversation_id, 'conversation id')}/activities"
        answer = await self._call("POST", path, _card_activity(card, summary), "post card")
        return PostedActivity(conversation_id, _resource_id(answer, "post card"))

    async def post_text(self, conversation_id: str, text: str) -> PostedActivity:
        """Post a plain-text message (progress, escalation and "your access works" notices)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a message needs text")
        path = f"/v3/conversations/{_segment(conversation_id, 'conversation id')}/activities"
        answer = await self._call("POST", path, {"type": "message", "text": text}, "post text")
        return PostedActivity(conversation_id, _resource_id(answer, "post text"))

    async def reply_text(self, conversation_id: str, activity_id: str, text: str) -> PostedActivity:
        """Reply to a message with plain text (a threaded reply in a channel; used for reminders)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a reply needs text")
        path = _activity_path(conversation_id, activity_id)
        answer = await self._call("POST", path, {"type": "message", "text": text}, "reply")
        return PostedActivity(conversation_id, _resource_id(answer, "reply"))

    async def update_card(
        self, conversation_id: str, activity_id: str, card: dict[str, Any], summary: str
    ) -> None:
        """Replace the card of an earlier message in place (e.g. to show who decided, and that the buttons
        are gone)."""
        path = _activity_path(conversation_id, activity_id)
        activity = {**_card_activity(card, summary), "id": activity_id}
        await self._call("PUT", path, activity, "update card")

    async def personal_conversation(self, user_aad_object_id: str) -> str:
        """The id of the 1:1 chat between the bot and a user (Teams returns the existing chat if there is
        one). The user must have the bot installed (or be in a team that has it) for Teams to allow it."""
        if not isinstance(user_aad_object_id, str) or not user_aad_object_id.strip():
            raise ValueError("the user's aadObjectId is required")
        parameters = {
            "bot": {"id": f"28:{self._bot_app_id}"},
            "members": [{"id": user_aad_object_id}],
            "channelData": {"tenant": {"id": self._tenant_id}},
            "isGroup": False,
        }
        answer = await self._call("POST", "/v3/conversations", parameters, "create conversation")
        return _resource_id(answer, "create conversation")

    # -- plumbing -----------------------------------------------------------------------------------------

    async def _token(self, operation: str) -> str:
        try:
            return await self._access_token()
        except AzureError as error:
            raise BotConnectorError(
                0, "TokenUnavailable", f"no token for {BOT_FRAMEWORK_SCOPE}: {error}", operation=operation
            ) from None

    async def _call(self, method: str, path: str, body: Mapping[str, Any], operation: str) -> tuple[int, Any]:
        """Send one request; (status, JSON body or None). A status >= 400 raises BotConnectorError."""
        label = f"{operation} ({method} {path})"
        token = await self._token(label)
        try:
            response = await self._client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.TimeoutException as error:
            log.warning("Bot Connector %s: no answer in time (%s)", label, type(error).__name__)
            raise BotConnectorError(
                0, "Timeout", f"no answer in time ({type(error).__name__})", operation=label
            ) from None
        except httpx.TransportError as error:
            log.warning("Bot Connector %s: cannot reach the service (%s)", label, type(error).__name__)
            raise BotConnectorError(
                0, "TransportError", f"cannot reach the service ({type(error).__name__})", operation=label
            ) from None
        if response.status_code >= 400:
            code, message = _error_of(response)
            log.warning("Bot Connector %s: %s %s", label, response.status_code, code)
            raise BotConnectorError(
                response.status_code,
                code,
                message,
                operation=label,
                retry_after_s=_retry_after(response),
            )
        log.info("Bot Connector %s: %s", label, response.status_code)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"a {what} is required")
    return quote(value, safe="")


def _activity_path(conversation_id: str, activity_id: str) -> str:
    conversation = _segment(conversation_id, "conversation id")
    return f"/v3/conversations/{conversation}/activities/{_segment(activity_id, 'activity id')}"


def _card_activity(card: Mapping[str, Any], summary: str) -> dict[str, Any]:
    if not isinstance(card, Mapping) or card.get("type") != "AdaptiveCard":
        raise ValueError("the card must be an Adaptive Card object (type 'AdaptiveCard')")
    if not isinstance(summary, str) or not summary.strip():
        raise ValueError("a card message needs a summary")
    return {
        "type": "message",
        "summary": summary,
        "text": summary,
        "attachments": [{"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "content": dict(card)}],
    }


def _resource_id(answer: tuple[int, Any], operation: str) -> str:
    """The ``id`` of a ResourceResponse / ConversationResourceResponse."""
    status, body = answer
    value = body.get("id") if isinstance(body, Mapping) else None
    if not isinstance(value, str) or not value:
        raise BotConnectorError(status, "InvalidResponse", "the answer carries no 'id'", operation=operation)
    return value


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """The Bot Connector's ``{"error": {"code", "message"}}`` (or a bare ``{"message"}``, as its 401s are);
    otherwise ``HttpError`` and the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            code = error.get("code")
            message = error.get("message")
            return (
                code if isinstance(code, str) and code else "HttpError",
                _clip(message if isinstance(message, str) else ""),
            )
        message = body.get("message") or body.get("Message")
        if isinstance(message, str):
            return "HttpError", _clip(message)
    return "HttpError", _clip(response.text.strip() or response.reason_phrase)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare here; the workflow's own backoff applies
    return seconds if seconds >= 0 else None
