"""The Microsoft Teams Bot Connector REST API (v3): what a bot calls to post and update messages.

The app's ``BOT_CONNECTOR_SERVICE_URL`` (the "serviceUrl") points at this prefix, ``{origin}/teams``.

- ``POST /v3/conversations``: create (or find) the 1:1 chat between the bot and one user, for proactive
  messages. Body ``{"bot": {"id": "28:<appId>"}, "members": [{"id": "<aadObjectId or 29:id>"}],
  "channelData": {"tenant": {"id": "<tenant>"}}, "isGroup": false}``; answers 201 ``{"id": "a:..."}``. As in
  Teams, a second request for the same user returns the same conversation.
- ``POST /v3/conversations/{conversationId}/activities``: send a message; 201 ``{"id": "<activityId>"}``.
- ``POST /v3/conversations/{conversationId}/activities/{activityId}``: reply to a message (threaded).
- ``PUT /v3/conversations/{conversationId}/activities/{activityId}``: update a message in place; 200
  ``{"id": activityId}``. The earlier versions are kept for inspection.

Messages must be ``type: "message"`` with ``text`` and/or ``attachments``; an Adaptive Card attachment
(``application/vnd.microsoft.card.adaptive``) must carry ``type: "AdaptiveCard"`` and a ``version``.
Channels and existing chats (``19:...@thread.tacv2``) need no set-up: any conversation id is accepted except
a personal-chat id (``a:...``) that was not created here (404 ``ConversationNotFound``).

Authentication: ``Authorization: Bearer <token>`` (shape only, like the other simulators); errors use the
Bot Connector's shape ``{"error": {"code": "...", "message": "..."}}``.

The control API (``control.py``) shows the conversations (``/_sim/teams/conversations``) and plays a user's
click on a card (``/_sim/teams/click``): a signed ``adaptiveCard/action`` invoke sent to the bot, with the
card the bot answers replacing the stored one, as Teams does. The invoke is built here
(:func:`build_invoke`, :func:`find_execute_action`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .common import JSON, SeedError, Service, ServiceError, b64url, is_guid, utc_now

PREFIX = "/teams"
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
BOT_NAME = "PIM Emergency Access"
TEAMS_CHANNEL_ID = "msteams"
PERSONAL_PREFIX = "a:"
INVOKE_NAME = "adaptiveCard/action"
UPDATED_BY_API = "api"
UPDATED_BY_INVOKE = "invokeResponse"

# The codes of the Teams "status codes from bot conversational APIs" table where it names one (429
# Throttled, 500/502 ServiceError, ...); the table gives none for 503/504, so these carry the status name.
_CODE_FOR_STATUS = {
    400: "BadArgument",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    412: "PreconditionFailed",
    413: "MessageSizeTooBig",
    429: "Throttled",
    500: "ServiceError",
    502: "ServiceError",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def bad_argument(message: str) -> ServiceError:
    return ServiceError(400, message, code="BadArgument")


def _iso_ms(moment: datetime) -> str:
    """``2024-05-01T10:00:00.123Z``: how Teams prints activity timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def validate_adaptive_card(card: object, what: str) -> JSON:
    """An Adaptive Card's content as Teams requires it to render: an object with ``type: "AdaptiveCard"``
    and a ``version``. Raises :class:`ValueError` with the reason otherwise."""
    if not isinstance(card, dict):
        raise ValueError(f"{what}: an Adaptive Card attachment needs its card as 'content' (an object)")
    if card.get("type") != "AdaptiveCard":
        raise ValueError(f"{what}: the card's 'type' must be 'AdaptiveCard', got {card.get('type')!r}")
    version = card.get("version")
    if not isinstance(version, str) or not version:
        raise ValueError(f"{what}: the card needs a 'version' (e.g. '1.5')")
    return card


def _walk(node: object) -> Iterator[JSON]:
    """Every object in a card, in document order (body, actions, ActionSets, containers, columns...)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def find_execute_action(card: JSON, verb: str) -> JSON | None:
    """The first ``Action.Execute`` with this ``verb`` anywhere in the card (None: there is none)."""
    for node in _walk(card):
        if node.get("type") == "Action.Execute" and node.get("verb") == verb:
            return node
    return None


def teams_user_id(aad_object_id: str) -> str:
    """A stable Teams user id (``29:1...``) for an Entra object id: Teams' ids are opaque, per-bot values."""
    return "29:1" + b64url(hashlib.sha256(aad_object_id.lower().encode()).digest())[:40]


def build_invoke(
    *,
    conversation_id: str,
    activity_id: str,
    action: JSON,
    data: JSON,
    user: JSON,
    tenant_id: str,
    bot_app_id: str,
    service_url: str,
) -> JSON:
    """The ``invoke`` activity Teams sends to the bot when a user presses an ``Action.Execute`` button."""
    now = utc_now()
    personal = conversation_id.startswith(PERSONAL_PREFIX)
    aad_object_id = str(user["aadObjectId"])
    conversation: JSON = {
        "id": conversation_id,
        "conversationType": "personal" if personal else "channel",
        "tenantId": tenant_id,
    }
    if not personal:
        conversation["isGroup"] = True
    value_action: JSON = {"type": "Action.Execute"}
    if action.get("id") is not None:
        value_action["id"] = action["id"]
    value_action.update({"verb": action["verb"], "data": data})
    return {
        "type": "invoke",
        "name": INVOKE_NAME,
        "id": f"f:{secrets.randbits(63)}",
        "timestamp": _iso_ms(now),
        "localTimestamp": now.astimezone(UTC).isoformat(timespec="milliseconds"),
        "serviceUrl": service_url,
        "channelId": TEAMS_CHANNEL_ID,
        "from": {
            "id": str(user.get("id") or teams_user_id(aad_object_id)),
            "name": str(user.get("name") or ""),
            "aadObjectId": aad_object_id,
        },
        "recipient": {"id": f"28:{bot_app_id}", "name": BOT_NAME},
        "conversation": conversation,
        "replyToId": activity_id,
        "entities": [{"type": "clientInfo", "locale": "en-US", "country": "US", "platform": "Web"}],
        "channelData": {"tenant": {"id": tenant_id}, "source": {"name": "message"}},
        "value": {"action": value_action, "trigger": "manual"},
        "locale": "en-US",
    }


class TeamsService(Service):
    name = "teams"
    prefix = PREFIX

    def __init__(self) -> None:
        # conversation id -> {"members": [...], "created": bool, "tenantId", "activities": {id: record}}
        self.conversations: dict[str, JSON] = {}
        # (tenant id, member id folded) -> the 1:1 conversation created for that user
        self.personal: dict[tuple[str, str], str] = {}
        self.clicks: list[JSON] = []
        self._last_activity_ms = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def snapshot(self, base_url: str) -> JSON:
        return {**self.conversations_view(), "clicks": list(self.clicks)}

    # ---------------------------------------------------------------- pipeline hooks

    def authenticate(self, request: Request) -> tuple[bool, str | None]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(token.strip()), None

    def unauthenticated(self) -> ServiceError:
        return ServiceError(401, "Authorization has been denied for this request.", code="Unauthorized")

    def error_response(self, request: Request, error: ServiceError) -> Response:
        code = error.code or _CODE_FOR_STATUS.get(error.status, "ServiceError")
        body = {"error": {"code": code, "message": error.message}}
        return JSONResponse(body, status_code=error.status, headers=error.headers)

    def routes(self) -> list[BaseRoute]:
        activity = "/v3/conversations/{conversation_id}/activities/{activity_id}"
        return [
            Route("/v3/conversations", self.create_conversation, methods=["POST"]),
            Route("/v3/conversations/{conversation_id}/activities", self.send_activity, methods=["POST"]),
            Route(activity, self.reply_to_activity, methods=["POST"]),
            Route(activity, self.update_activity, methods=["PUT"]),
        ]

    # ---------------------------------------------------------------- REST

    async def create_conversation(self, request: Request) -> Response:
        body = await _json_object(request)
        if body.get("isGroup"):
            raise bad_argument("A bot cannot create a group conversation in Teams; isGroup must be false.")
        if "activity" in body:
            raise bad_argument("The simulator does not support an initial 'activity' in conversation create.")
        members = body.get("members")
        if not isinstance(members, list) or len(members) != 1:
            raise bad_argument("Exactly one member is required to create a personal conversation.")
        member = members[0]
        member_id = member.get("id") if isinstance(member, dict) else None
        if not isinstance(member_id, str) or not member_id.strip():
            raise bad_argument("The member needs a non-empty 'id' (the user's aadObjectId or 29: id).")
        if not (is_guid(member_id) or member_id.startswith("29:")):
            raise bad_argument(f"Invalid member id {member_id!r}: expected an aadObjectId or a 29: user id.")
        bot = body.get("bot")
        if bot is not None and (not isinstance(bot, dict) or not isinstance(bot.get("id"), str)):
            raise bad_argument("'bot' must be an object with an 'id' (28:<appId>).")
        channel_data = body.get("channelData")
        tenant = channel_data.get("tenant") if isinstance(channel_data, dict) else None
        tenant_id = tenant.get("id") if isinstance(tenant, dict) else body.get("tenantId")
        if not isinstance(tenant_id, str) or not tenant_id.strip():
            raise bad_argument("The tenant id is required (channelData.tenant.id).")
        key = (tenant_id.lower(), member_id.lower())
        conversation_id = self.personal.get(key)
        if conversation_id is None:
            conversation_id = PERSONAL_PREFIX + b64url(secrets.token_bytes(36))
            self.personal[key] = conversation_id
            self.conversations[conversation_id] = {
                "members": [member_id],
                "created": True,
                "tenantId": tenant_id,
                "activities": {},
            }
        return JSONResponse({"id": conversation_id}, status_code=201)

    async def send_activity(self, request: Request) -> Response:
        fields = _message_fields(await _json_object(request))
        conversation = self._conversation_for_send(request.path_params["conversation_id"])
        record = self._store(conversation, fields, reply_to=None)
        return JSONResponse({"id": record["id"]}, status_code=201)

    async def reply_to_activity(self, request: Request) -> Response:
        conversation_id = request.path_params["conversation_id"]
        conversation = self._known_conversation(conversation_id)
        parent = self._activity(conversation_id, conversation, request.path_params["activity_id"])
        fields = _message_fields(await _json_object(request))
        record = self._store(conversation, fields, reply_to=parent["id"])
        return JSONResponse({"id": record["id"]}, status_code=201)

    async def update_activity(self, request: Request) -> Response:
        conversation_id = request.path_params["conversation_id"]
        conversation = self._known_conversation(conversation_id)
        record = self._activity(conversation_id, conversation, request.path_params["activity_id"])
        fields = _message_fields(await _json_object(request))
        self._apply_update(record, fields, UPDATED_BY_API)
        return JSONResponse({"id": record["id"]})

    # ---------------------------------------------------------------- state

    def _conversation_for_send(self, conversation_id: str) -> JSON:
        conversation = self.conversations.get(conversation_id)
        if conversation is not None:
            return conversation
        if conversation_id.startswith(PERSONAL_PREFIX):
            raise ServiceError(404, f"Conversation {conversation_id} not found.", code="ConversationNotFound")
        # Channels and chats that exist in Teams already: known from their first message on.
        conversation = {"members": [], "created": False, "tenantId": None, "activities": {}}
        self.conversations[conversation_id] = conversation
        return conversation

    def _known_conversation(self, conversation_id: str) -> JSON:
        """For a reply or an update: a conversation we have seen no message in has no activity to name."""
        conversation = self.conversations.get(conversation_id)
        if conversation is None and conversation_id.startswith(PERSONAL_PREFIX):
            raise ServiceError(404, f"Conversation {conversation_id} not found.", code="ConversationNotFound")
        return conversation if conversation is not None else {"activities": {}}

    def _activity(self, conversation_id: str, conversation: JSON, activity_id: str) -> JSON:
        record = conversation["activities"].get(activity_id)
        if record is None:
            raise ServiceError(
                404,
                f"Activity {activity_id} not found in conversation {conversation_id}.",
                code="ActivityNotFoundInConversation",
            )
        return record  # type: ignore[no-any-return]

    def _new_activity_id(self) -> str:
        # Teams message ids are the posting time in epoch milliseconds; kept unique within the process.
        self._last_activity_ms = max(self._last_activity_ms + 1, int(time.time() * 1000))
        return str(self._last_activity_ms)

    def _store(self, conversation: JSON, fields: JSON, reply_to: str | None) -> JSON:
        record: JSON = {
            "id": self._new_activity_id(),
            "replyToId": reply_to,
            **fields,
            "versions": [],
            "updatedBy": [],
            "postedAt": _iso_ms(utc_now()),
        }
        conversation["activities"][record["id"]] = record
        return record

    def _apply_update(self, record: JSON, fields: JSON, updated_by: str) -> None:
        record["versions"].append(record["card"])
        record["updatedBy"].append(updated_by)
        record.update(fields)

    def replace_card_from_invoke(self, conversation_id: str, activity_id: str, card: object) -> bool:
        """What Teams does with a bot's invoke answer that carries a card: the message shows that card.
        False (nothing changed) for an unknown activity or a card Teams could not render."""
        conversation = self.conversations.get(conversation_id)
        record = conversation["activities"].get(activity_id) if conversation else None
        if record is None:
            return False
        try:
            valid = validate_adaptive_card(card, "invoke response")
        except ValueError:
            return False
        attachment = {"contentType": ADAPTIVE_CARD, "content": valid}
        self._apply_update(record, {"attachments": [attachment], "card": valid}, UPDATED_BY_INVOKE)
        return True

    def card_of(self, conversation_id: str, activity_id: str) -> JSON | None:
        """The Adaptive Card an activity shows now (None: a message without one); SeedError (404 in the
        control API) for an unknown conversation or activity."""
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            raise SeedError(f"no Teams conversation {conversation_id!r}")
        record = conversation["activities"].get(activity_id)
        if record is None:
            raise SeedError(f"no activity {activity_id!r} in Teams conversation {conversation_id!r}")
        card: JSON | None = record["card"]
        return card

    # ---------------------------------------------------------------- control views

    def conversation_view(self, conversation_id: str) -> JSON:
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            raise SeedError(f"no Teams conversation {conversation_id!r}")
        return {
            "members": list(conversation["members"]),
            "activities": [_activity_view(a) for a in conversation["activities"].values()],
        }

    def conversations_view(self) -> JSON:
        return {"conversations": {cid: self.conversation_view(cid) for cid in self.conversations}}

    def record_click(self, entry: JSON) -> None:
        self.clicks.append(entry)


def _activity_view(record: JSON) -> JSON:
    return {
        "id": record["id"],
        "replyToId": record["replyToId"],
        "type": record["type"],
        "text": record["text"],
        "card": record["card"],
        "versions": list(record["versions"]),
        "updatedBy": list(record["updatedBy"]),
        "postedAt": record["postedAt"],
    }


async def _json_object(request: Request) -> JSON:
    raw = await request.body()
    if not raw:
        raise bad_argument("The request body is empty; a JSON object is required.")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise bad_argument(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise bad_argument("The request body must be a JSON object.")
    return body


def _message_fields(body: JSON) -> JSON:
    """The parts of a message activity the simulator keeps, validated as the Bot Connector would."""
    if body.get("type") != "message":
        raise bad_argument(f"Activity type must be 'message', got {body.get('type')!r}.")
    text = body.get("text")
    if text is not None and not isinstance(text, str):
        raise bad_argument("'text' must be a string.")
    summary = body.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise bad_argument("'summary' must be a string.")
    attachments = body.get("attachments")
    if attachments is None:
        attachments = []
    if not isinstance(attachments, list):
        raise bad_argument("'attachments' must be a list.")
    card: JSON | None = None
    for index, attachment in enumerate(attachments):
        what = f"attachments[{index}]"
        if not isinstance(attachment, dict) or not isinstance(attachment.get("contentType"), str):
            raise bad_argument(f"{what} must be an object with a 'contentType'.")
        if attachment["contentType"] == ADAPTIVE_CARD:
            try:
                content = validate_adaptive_card(attachment.get("content"), what)
            except ValueError as exc:
                raise bad_argument(str(exc)) from exc
            card = content if card is None else card
    if not text and not attachments:
        raise bad_argument("A message needs 'text' or 'attachments'.")
    return {"type": "message", "text": text, "summary": summary, "attachments": attachments, "card": card}
