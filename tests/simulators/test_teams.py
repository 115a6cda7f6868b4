"""The Teams Bot Connector simulator over real HTTP (conversations, messages, replies, updates, errors,
faults), its control views, and the click helper (``/_sim/teams/click``): a signed ``adaptiveCard/action``
invoke sent to a receiver, checked against the simulated Bot Framework keys with PyJWT."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from local.simulators.bot_tokens import ISSUER_STATE_PATH, KEYS_PATH
from local.simulators.process import SimulatorProcess
from local.simulators.teams import ADAPTIVE_CARD

pytestmark = pytest.mark.stack

BOT = "66666666-7777-4888-9999-000000000000"
TENANT = "11111111-2222-3333-4444-55555555abcd"
ALEX = "0f7c2a1e-9d1b-4e55-8a3c-7b2e4d6f8a90"
SAM = "a3d9e0b2-41c6-4f3a-9b7e-2c5d8e1f0a47"
CHANNEL = "19:3f9e2c1b7d4a4e8f9a0b1c2d3e4f5a6b@thread.tacv2"
AUTH = {"Authorization": "Bearer sim-bot-token"}


def teams_url(sim: SimulatorProcess, path: str) -> str:
    return f"{sim.teams_base_url}{path}"


def activities_url(sim: SimulatorProcess, conversation_id: str, activity_id: str | None = None) -> str:
    path = f"/v3/conversations/{quote(conversation_id, safe='')}/activities"
    if activity_id is not None:
        path += f"/{quote(activity_id, safe='')}"
    return teams_url(sim, path)


def create_conversation(sim: SimulatorProcess, member: str, **overrides: Any) -> httpx.Response:
    body = {
        "bot": {"id": f"28:{BOT}"},
        "members": [{"id": member}],
        "channelData": {"tenant": {"id": TENANT}},
        "isGroup": False,
        **overrides,
    }
    return httpx.post(teams_url(sim, "/v3/conversations"), json=body, headers=AUTH)


def approval_card(request_id: str = "req-1", title: str = "Approval needed") -> dict[str, Any]:
    """Buttons in three places: top-level actions, an ActionSet in a Container, a Column's selectAction."""
    return {
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": [
            {"type": "TextBlock", "text": title},
            {
                "type": "Container",
                "items": [
                    {
                        "type": "ActionSet",
                        "actions": [
                            {
                                "type": "Action.Execute",
                                "id": "deny-button",
                                "title": "Deny",
                                "verb": "deny",
                                "data": {"requestId": request_id, "decision": "deny"},
                            }
                        ],
                    },
                    {
                        "type": "ColumnSet",
                        "columns": [
                            {
                                "type": "Column",
                                "items": [],
                                "selectAction": {"type": "Action.Execute", "verb": "details"},
                            }
                        ],
                    },
                ],
            },
        ],
        "actions": [
            {"type": "Action.OpenUrl", "title": "Ticket", "url": "https://contoso.test/INC1"},
            {
                "type": "Action.Execute",
                "id": "approve-button",
                "title": "Approve",
                "verb": "approve",
                "data": {"requestId": request_id, "decision": "approve"},
            },
        ],
    }


def card_message(card: dict[str, Any], text: str | None = "Approval needed for INC0010001") -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "message",
        "summary": text,
        "attachments": [{"contentType": ADAPTIVE_CARD, "content": card}],
    }
    if text is not None:
        message["text"] = text
    return message


def post_card(
    sim: SimulatorProcess, conversation_id: str = CHANNEL, card: dict[str, Any] | None = None
) -> str:
    response = httpx.post(
        activities_url(sim, conversation_id), json=card_message(card or approval_card()), headers=AUTH
    )
    assert response.status_code == 201, response.text
    activity_id: str = response.json()["id"]
    return activity_id


def error_of(response: httpx.Response) -> tuple[int, str]:
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    return response.status_code, error["code"]


# -- Bot Connector routes -----------------------------------------------------------------------------------


def test_a_personal_conversation_is_created_once_per_member(sim: SimulatorProcess) -> None:
    first = create_conversation(sim, ALEX)
    assert first.status_code == 201
    conversation_id = first.json()["id"]
    assert conversation_id.startswith("a:") and len(conversation_id) > 20
    assert create_conversation(sim, ALEX).json()["id"] == conversation_id  # Teams returns the existing chat
    assert create_conversation(sim, ALEX.upper()).json()["id"] == conversation_id
    other = create_conversation(sim, SAM).json()["id"]
    assert other != conversation_id
    assert sim.teams_conversation(conversation_id) == {"members": [ALEX], "activities": []}
    listed = sim.control("GET", "teams/conversations")["conversations"]
    assert set(listed) == {conversation_id, other}
    assert create_conversation(sim, "29:1abcdef").status_code == 201  # a Teams user id works too


@pytest.mark.parametrize(
    "overrides",
    [
        {"members": []},
        {"members": [{"id": ALEX}, {"id": SAM}]},
        {"members": [{"id": ""}]},
        {"members": [{"name": "Alex"}]},
        {"members": [{"id": "alex@contoso.test"}]},
        {"channelData": {}},
        {"channelData": {"tenant": {"id": ""}}},
        {"isGroup": True},
    ],
)
def test_conversation_create_validates_its_shape(sim: SimulatorProcess, overrides: dict[str, Any]) -> None:
    assert error_of(create_conversation(sim, ALEX, **overrides)) == (400, "BadArgument")
    assert sim.control("GET", "teams/conversations") == {"conversations": {}}


def test_post_reply_and_update_a_card_in_a_channel(sim: SimulatorProcess) -> None:
    activity_id = post_card(sim)
    assert activity_id.isdigit()
    reply = httpx.post(
        activities_url(sim, CHANNEL, activity_id), json={"type": "message", "text": "Reminder"}, headers=AUTH
    )
    assert reply.status_code == 201
    reply_id = reply.json()["id"]
    assert reply_id != activity_id

    decided = approval_card(title="Approved by Sam")
    decided["actions"] = []
    updated = httpx.put(
        activities_url(sim, CHANNEL, activity_id), json=card_message(decided, "Approved"), headers=AUTH
    )
    assert updated.status_code == 200 and updated.json() == {"id": activity_id}

    view = sim.teams_conversation(CHANNEL)
    assert view["members"] == []
    card_view, reply_view = view["activities"]
    assert card_view["id"] == activity_id and card_view["replyToId"] is None
    assert card_view["type"] == "message" and card_view["text"] == "Approved"
    assert card_view["card"] == decided
    assert card_view["versions"] == [approval_card()]
    assert card_view["updatedBy"] == ["api"]
    assert card_view["postedAt"].endswith("Z")
    assert reply_view == {
        "id": reply_id,
        "replyToId": activity_id,
        "type": "message",
        "text": "Reminder",
        "card": None,
        "versions": [],
        "updatedBy": [],
        "postedAt": reply_view["postedAt"],
    }
    # Each call was recorded with its decoded path, relative to /teams.
    paths = [c["path"] for c in sim.calls("teams")]
    assert paths == [
        f"/v3/conversations/{CHANNEL}/activities",
        f"/v3/conversations/{CHANNEL}/activities/{activity_id}",
        f"/v3/conversations/{CHANNEL}/activities/{activity_id}",
    ]


def test_messages_in_a_created_personal_conversation(sim: SimulatorProcess) -> None:
    conversation_id = create_conversation(sim, ALEX).json()["id"]
    activity_id = post_card(sim, conversation_id)
    view = sim.teams_conversation(conversation_id)
    assert view["members"] == [ALEX] and [a["id"] for a in view["activities"]] == [activity_id]
    # A channel reply id (with ;messageid=) is just another conversation id.
    threaded = f"{CHANNEL};messageid={activity_id}"
    assert httpx.post(
        activities_url(sim, threaded), json={"type": "message", "text": "x"}, headers=AUTH
    ).is_success
    assert sim.teams_conversation(threaded)["activities"][0]["text"] == "x"


def test_unknown_conversations_and_activities_are_404(sim: SimulatorProcess) -> None:
    text = {"type": "message", "text": "hello"}
    assert error_of(httpx.post(activities_url(sim, "a:never-created"), json=text, headers=AUTH)) == (
        404,
        "ConversationNotFound",
    )
    post_card(sim)
    for method in ("POST", "PUT"):
        response = httpx.request(method, activities_url(sim, CHANNEL, "12345"), json=text, headers=AUTH)
        assert error_of(response) == (404, "ActivityNotFoundInConversation"), method
    other_channel = "19:other@thread.tacv2"
    activity_id = post_card(sim)
    response = httpx.put(activities_url(sim, other_channel, activity_id), json=text, headers=AUTH)
    # An activity belongs to its conversation.
    assert error_of(response) == (404, "ActivityNotFoundInConversation")
    assert httpx.get(sim.control_url + "/teams/conversations/a%3Anope").status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer", "Basic dXNlcjpwdw==", "sim-bot-token"])
def test_the_bot_connector_requires_a_bearer_token(sim: SimulatorProcess, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = httpx.post(
        activities_url(sim, CHANNEL), json={"type": "message", "text": "x"}, headers=headers
    )
    assert error_of(response) == (401, "Unauthorized")
    assert sim.control("GET", "teams/conversations") == {"conversations": {}}


@pytest.mark.parametrize(
    "body",
    [
        {"type": "typing"},
        {"text": "no type"},
        {"type": "message"},
        {"type": "message", "text": 5},
        {"type": "message", "attachments": {"contentType": ADAPTIVE_CARD}},
        {"type": "message", "attachments": [{"content": {}}]},
        {"type": "message", "attachments": [{"contentType": ADAPTIVE_CARD, "content": {"version": "1.5"}}]},
        {
            "type": "message",
            "attachments": [{"contentType": ADAPTIVE_CARD, "content": {"type": "AdaptiveCard"}}],
        },
        {"type": "message", "attachments": [{"contentType": ADAPTIVE_CARD, "content": "a card"}]},
        [{"type": "message", "text": "a list"}],
    ],
)
def test_activities_are_validated(sim: SimulatorProcess, body: Any) -> None:
    for method, url in (("POST", activities_url(sim, CHANNEL)), ("PUT", activities_url(sim, CHANNEL, "1"))):
        response = httpx.request(method, url, json=body, headers=AUTH)
        assert error_of(response) in {(400, "BadArgument"), (404, "ActivityNotFoundInConversation")}, method
    assert error_of(httpx.post(activities_url(sim, CHANNEL), json=body, headers=AUTH)) == (400, "BadArgument")


def test_an_invalid_update_leaves_the_card_alone(sim: SimulatorProcess) -> None:
    activity_id = post_card(sim)
    broken = {"type": "message", "attachments": [{"contentType": ADAPTIVE_CARD, "content": {"type": "x"}}]}
    response = httpx.put(activities_url(sim, CHANNEL, activity_id), json=broken, headers=AUTH)
    assert error_of(response) == (400, "BadArgument")
    view = sim.teams_conversation(CHANNEL)["activities"][0]
    assert view["card"] == approval_card() and view["versions"] == [] and view["updatedBy"] == []


def test_faults_apply_to_the_bot_connector(sim: SimulatorProcess) -> None:
    sim.control("POST", "faults", json={"service": "teams", "status": 503, "retry_after": 3})
    sim.control(
        "POST",
        "faults",
        json={"service": "teams", "path_contains": "/activities", "method": "PUT", "status": 429},
    )
    failed = httpx.post(activities_url(sim, CHANNEL), json={"type": "message", "text": "x"}, headers=AUTH)
    assert error_of(failed) == (503, "ServiceUnavailable") and failed.headers["retry-after"] == "3"
    activity_id = post_card(sim)  # the 503 was for one call only
    throttled = httpx.put(
        activities_url(sim, CHANNEL, activity_id), json=card_message(approval_card()), headers=AUTH
    )
    assert error_of(throttled) == (429, "Throttled")
    sim.control(
        "POST", "faults", json={"service": "teams", "status": 404, "code": "BotNotInConversationRoster"}
    )
    assert error_of(create_conversation(sim, ALEX)) == (404, "BotNotInConversationRoster")
    assert [c["status"] for c in sim.calls("teams")] == [503, 201, 429, 404]


def test_state_and_reset(sim: SimulatorProcess) -> None:
    conversation_id = create_conversation(sim, ALEX).json()["id"]
    post_card(sim, conversation_id)
    state = sim.state()
    assert state["base_urls"]["teams"] == sim.teams_base_url
    assert list(state["teams"]["conversations"]) == [conversation_id]
    assert state["teams"]["clicks"] == []
    index = httpx.get(sim.url + "/").json()
    assert index["base_urls"]["teams"] == sim.teams_base_url
    assert index["bot_openid_metadata_url"] == sim.bot_openid_metadata_url
    sim.reset()
    assert sim.state()["teams"] == {"conversations": {}, "clicks": []}
    # The conversation is gone: its id is unknown now, and a new create makes a new one.
    response = httpx.post(
        activities_url(sim, conversation_id), json={"type": "message", "text": "x"}, headers=AUTH
    )
    assert response.status_code == 404
    assert create_conversation(sim, ALEX).json()["id"] != conversation_id


def test_settings_point_the_app_at_the_bot_simulators() -> None:
    process = SimulatorProcess(port=7081)
    assert process.settings["BOT_CONNECTOR_SERVICE_URL"] == "http://127.0.0.1:7081/teams"
    assert process.settings["BOT_OPENID_METADATA_URL"] == (
        "http://127.0.0.1:7081/botframework/v1/.well-known/openidconfiguration"
    )


# -- the click helper ---------------------------------------------------------------------------------------


def click_spec(sim: SimulatorProcess, activity_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "botUrl": f"{sim.control_url}/echo/api/messages",
        "conversationId": CHANNEL,
        "activityId": activity_id,
        "verb": "approve",
        "user": {"aadObjectId": SAM, "name": "Sam Approver"},
        "tenantId": TENANT,
        "botAppId": BOT,
        **overrides,
    }


def verified_claims(sim: SimulatorProcess, authorization: str, audience: str = BOT) -> dict[str, Any]:
    scheme, _, token = authorization.partition(" ")
    assert scheme == "Bearer"
    key = jwt.PyJWKClient(sim.url + KEYS_PATH).get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=audience, issuer="https://api.botframework.com"
    )
    return claims


def test_a_click_sends_a_signed_teams_invoke(sim: SimulatorProcess) -> None:
    activity_id = post_card(sim)
    answer = sim.click(**click_spec(sim, activity_id))
    assert answer["status"] == 200
    received = answer["body"]  # the echo route's view of the request
    assert received["method"] == "POST" and received["path"] == "/_sim/echo/api/messages"
    assert received["headers"]["content-type"].startswith("application/json")
    assert received["headers"]["authorization"] == answer["headers"]["Authorization"]
    invoke = json.loads(received["body"])
    assert invoke == answer["invoke"]

    assert invoke["type"] == "invoke" and invoke["name"] == "adaptiveCard/action"
    assert invoke["id"] and invoke["timestamp"].endswith("Z") and invoke["localTimestamp"]
    assert invoke["channelId"] == "msteams" and invoke["locale"] == "en-US"
    assert invoke["serviceUrl"] == sim.teams_base_url
    assert invoke["from"]["id"].startswith("29:")
    assert invoke["from"]["aadObjectId"] == SAM and invoke["from"]["name"] == "Sam Approver"
    assert invoke["recipient"] == {"id": f"28:{BOT}", "name": "PIM Emergency Access"}
    assert invoke["conversation"]["id"] == CHANNEL
    assert invoke["conversation"]["conversationType"] == "channel"
    assert invoke["conversation"]["tenantId"] == TENANT
    assert invoke["replyToId"] == activity_id
    assert invoke["channelData"] == {"tenant": {"id": TENANT}, "source": {"name": "message"}}
    assert invoke["value"] == {
        "action": {
            "type": "Action.Execute",
            "id": "approve-button",
            "verb": "approve",
            "data": {"requestId": "req-1", "decision": "approve"},
        },
        "trigger": "manual",
    }

    claims = verified_claims(sim, answer["headers"]["Authorization"])
    assert claims["serviceurl"] == invoke["serviceUrl"]
    kid = jwt.get_unverified_header(answer["headers"]["Authorization"].split()[1])["kid"]
    assert kid == httpx.get(sim.url + ISSUER_STATE_PATH).json()["keys"]["endorsed"]

    # The echo's answer is not an invoke response with a card: the card stays as posted.
    assert answer["cardUpdated"] is False
    assert sim.teams_conversation(CHANNEL)["activities"][0]["versions"] == []
    assert sim.state()["teams"]["clicks"] == [
        {
            "conversationId": CHANNEL,
            "activityId": activity_id,
            "verb": "approve",
            "invokeId": invoke["id"],
            "status": 200,
            "cardUpdated": False,
        }
    ]


def test_a_click_finds_nested_buttons_and_merges_data(sim: SimulatorProcess) -> None:
    conversation_id = create_conversation(sim, SAM).json()["id"]
    activity_id = post_card(sim, conversation_id)
    spec = click_spec(sim, activity_id, conversationId=conversation_id, verb="deny")
    deny = sim.click(**spec, data={"requestId": "req-tampered", "extra": 1})
    invoke = deny["invoke"]
    assert invoke["conversation"]["conversationType"] == "personal"
    assert invoke["value"]["action"]["id"] == "deny-button"
    assert invoke["value"]["action"]["data"] == {"requestId": "req-tampered", "decision": "deny", "extra": 1}
    details = sim.click(**{**spec, "verb": "details"})["invoke"]["value"]["action"]
    assert details == {"type": "Action.Execute", "verb": "details", "data": {}}  # no id, no data on the card


def test_a_click_can_carry_a_bad_token_or_none(sim: SimulatorProcess) -> None:
    activity_id = post_card(sim)
    spec = click_spec(sim, activity_id)

    other = sim.click(**spec, token={"audience": "another-bot", "kid": "unendorsed", "expiresIn": 60})
    claims = verified_claims(sim, other["headers"]["Authorization"], audience="another-bot")
    assert claims["exp"] - claims["iat"] == 60
    kid = jwt.get_unverified_header(other["headers"]["Authorization"].split()[1])["kid"]
    assert kid == httpx.get(sim.url + ISSUER_STATE_PATH).json()["keys"]["unendorsed"]

    moved = sim.click(**spec, serviceUrl="https://smba.trafficmanager.net/emea/")
    assert moved["invoke"]["serviceUrl"] == "https://smba.trafficmanager.net/emea/"
    assert (
        verified_claims(sim, moved["headers"]["Authorization"])["serviceurl"] == moved["invoke"]["serviceUrl"]
    )
    forged = sim.click(**spec, token={"serviceUrl": "https://attacker.test/"})
    assert verified_claims(sim, forged["headers"]["Authorization"])["serviceurl"] == "https://attacker.test/"

    bare = sim.click(**spec, authorization=None)
    assert bare["headers"] == {"Authorization": None}
    assert "authorization" not in bare["body"]["headers"]
    crafted = sim.click(**spec, authorization="Bearer e30.e30.")
    assert crafted["body"]["headers"]["authorization"] == "Bearer e30.e30."


def test_click_reports_the_apps_status(sim: SimulatorProcess) -> None:
    activity_id = post_card(sim)
    answer = sim.click(**click_spec(sim, activity_id, botUrl=f"{sim.control_url}/echo?status=401"))
    assert answer["status"] == 401 and answer["cardUpdated"] is False


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"verb": "escalate"}, 400),
        ({"botUrl": "https://bot.contoso.test/api/messages"}, 400),
        ({"botUrl": None}, 400),
        ({"surprise": 1}, 400),
        ({"user": {"name": "No Id"}}, 400),
        ({"user": {"aadObjectId": SAM, "upn": "sam@contoso.test"}}, 400),
        ({"tenantId": ""}, 400),
        ({"botAppId": None}, 400),
        ({"data": ["not", "an", "object"]}, 400),
        ({"token": {"audiense": "typo"}}, 400),
        ({"token": {"kid": "no-such-key"}}, 400),
        ({"authorization": 5}, 400),
        ({"activityId": "999"}, 404),
        ({"conversationId": "a:unknown"}, 404),
    ],
)
def test_click_spec_is_strict(sim: SimulatorProcess, overrides: dict[str, Any], status: int) -> None:
    activity_id = post_card(sim)
    response = httpx.post(f"{sim.control_url}/teams/click", json=click_spec(sim, activity_id, **overrides))
    assert response.status_code == status, response.text
    assert "error" in response.json()


def test_click_on_a_message_without_a_card_is_refused(sim: SimulatorProcess) -> None:
    text = httpx.post(activities_url(sim, CHANNEL), json={"type": "message", "text": "hi"}, headers=AUTH)
    response = httpx.post(f"{sim.control_url}/teams/click", json=click_spec(sim, text.json()["id"]))
    assert response.status_code == 400 and "no Adaptive Card" in response.json()["error"]


def test_click_to_an_unreachable_bot_is_a_502(sim: SimulatorProcess) -> None:
    activity_id = post_card(sim)
    with BotReceiver(status=200, body={}) as receiver:
        url = receiver.url
    response = httpx.post(f"{sim.control_url}/teams/click", json=click_spec(sim, activity_id, botUrl=url))
    assert response.status_code == 502


# -- the bot's card answer replaces the card ----------------------------------------------------------------


class BotReceiver:
    """A stand-in bot endpoint on loopback (its own thread) that answers every POST with a fixed answer."""

    def __init__(self, status: int, body: Any) -> None:
        self.received: list[tuple[dict[str, str], Any]] = []
        answer = json.dumps(body).encode()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append((dict(self.headers), json.loads(self.rfile.read(length))))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/messages"

    def __enter__(self) -> BotReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def decided_card() -> dict[str, Any]:
    card = approval_card(title="Approved by Sam Approver at 10:02 UTC")
    card["actions"] = []
    return card


@pytest.fixture
def card_answering_bot(decided_card: dict[str, Any]) -> Iterator[BotReceiver]:
    body = {"statusCode": 200, "type": ADAPTIVE_CARD, "value": decided_card}
    with BotReceiver(status=200, body=body) as receiver:
        yield receiver


def test_a_card_in_the_invoke_response_replaces_the_posted_card(
    sim: SimulatorProcess, card_answering_bot: BotReceiver, decided_card: dict[str, Any]
) -> None:
    activity_id = post_card(sim)
    answer = sim.click(**click_spec(sim, activity_id, botUrl=card_answering_bot.url))
    assert answer["status"] == 200 and answer["cardUpdated"] is True
    assert answer["body"]["value"] == decided_card
    headers, invoke = card_answering_bot.received[0]
    assert invoke == answer["invoke"] and headers["Authorization"].startswith("Bearer ")
    assert "Microsoft-BotFramework" in headers["User-Agent"]
    view = sim.teams_conversation(CHANNEL)["activities"][0]
    assert view["card"] == decided_card
    assert view["versions"] == [approval_card()]
    assert view["updatedBy"] == ["invokeResponse"]
    # The buttons are gone now: another click on "approve" finds none.
    again = httpx.post(
        f"{sim.control_url}/teams/click", json=click_spec(sim, activity_id, botUrl=card_answering_bot.url)
    )
    assert again.status_code == 400 and "approve" in again.json()["error"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, {"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": "Thanks"}),
        (200, {"statusCode": 200, "type": ADAPTIVE_CARD, "value": {"type": "AdaptiveCard"}}),  # no version
        (
            500,
            {"statusCode": 200, "type": ADAPTIVE_CARD, "value": {"type": "AdaptiveCard", "version": "1.5"}},
        ),
        (
            200,
            {"statusCode": 400, "type": "application/vnd.microsoft.error", "value": {"code": "BadRequest"}},
        ),
    ],
)
def test_other_invoke_answers_leave_the_card(sim: SimulatorProcess, status: int, body: Any) -> None:
    activity_id = post_card(sim)
    with BotReceiver(status=status, body=body) as receiver:
        answer = sim.click(**click_spec(sim, activity_id, botUrl=receiver.url))
    assert answer["status"] == status and answer["body"] == body and answer["cardUpdated"] is False
    view = sim.teams_conversation(CHANNEL)["activities"][0]
    assert view["card"] == approval_card() and view["versions"] == []
