"""The Bot Connector client (shared.teams) against the Teams simulator, with the managed-identity credential
the app uses in Azure pointed at the simulator's App Service token endpoint: cards posted, replied to and
updated, personal conversations, and every failure translated into BotConnectorError."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential

from local.processes import free_port
from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from shared.teams import (
    ADAPTIVE_CARD_CONTENT_TYPE,
    BOT_FRAMEWORK_SCOPE,
    BotConnector,
    BotConnectorError,
    PostedActivity,
)

pytestmark = pytest.mark.stack

BOT = "66666666-7777-4888-9999-000000000000"
TENANT = "11111111-2222-3333-4444-55555555abcd"
ALEX = "0f7c2a1e-9d1b-4e55-8a3c-7b2e4d6f8a90"
# A channel thread: ':' '@' and ';' must survive as one path segment.
THREAD = "19:3f9e2c1b7d4a4e8f9a0b1c2d3e4f5a6b@thread.tacv2;messageid=1715600000000"
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _managed_identity(sim: SimulatorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.url + TOKEN_PATH)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)


class RecordingTransport(httpx.AsyncHTTPTransport):
    """The real transport, remembering each request as it went on the wire (raw path, headers)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await super().handle_async_request(request)


def run(
    sim: SimulatorProcess,
    work: Callable[[BotConnector], Awaitable[T]],
    *,
    service_url: str | None = None,
    credential: TokenCredential | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> T:
    """Build the client inside the event loop (its httpx client belongs to one loop) and close it."""

    async def main() -> T:
        async with BotConnector(
            service_url or sim.teams_base_url,
            credential or ManagedIdentityCredential(),
            BOT,
            TENANT,
            transport=transport,
        ) as connector:
            return await work(connector)

    return asyncio.run(main())


def card(title: str) -> dict[str, Any]:
    return {
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": [{"type": "TextBlock", "text": title}],
        "actions": [{"type": "Action.Execute", "title": "Approve", "verb": "approve", "data": {"r": 1}}],
    }


def failure(sim: SimulatorProcess, work: Callable[[BotConnector], Awaitable[Any]], **options: Any) -> Any:
    with pytest.raises(BotConnectorError) as caught:
        run(sim, work, **options)
    return caught.value


def test_posts_replies_to_and_updates_a_card_in_a_channel_thread(sim: SimulatorProcess) -> None:
    transport = RecordingTransport()

    async def work(connector: BotConnector) -> tuple[PostedActivity, PostedActivity]:
        posted = await connector.post_card(THREAD, card("Approval needed"), "Approval needed for INC0010001")
        reminder = await connector.reply_text(THREAD, posted.activity_id, "Reminder: still waiting")
        await connector.update_card(THREAD, posted.activity_id, card("Approved by Sam"), "Approved")
        return posted, reminder

    posted, reminder = run(sim, work, transport=transport)
    assert posted.conversation_id == THREAD and reminder.conversation_id == THREAD
    assert posted.activity_id != reminder.activity_id

    view = sim.teams_conversation(THREAD)
    first, reply = view["activities"]
    assert first["id"] == posted.activity_id
    assert first["card"] == card("Approved by Sam") and first["versions"] == [card("Approval needed")]
    assert first["updatedBy"] == ["api"] and first["text"] == "Approved"
    assert reply["id"] == reminder.activity_id and reply["replyToId"] == posted.activity_id
    assert reply["text"] == "Reminder: still waiting" and reply["card"] is None

    sent = sim.calls("teams")
    assert [(c["method"], c["status"]) for c in sent] == [("POST", 201), ("POST", 201), ("PUT", 200)]
    assert sent[0]["body"] == {
        "type": "message",
        "summary": "Approval needed for INC0010001",
        "text": "Approval needed for INC0010001",
        "attachments": [{"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "content": card("Approval needed")}],
    }
    # On the wire: the conversation id quoted as one segment, a managed-identity token as the bearer.
    quoted = "19%3A3f9e2c1b7d4a4e8f9a0b1c2d3e4f5a6b%40thread.tacv2%3Bmessageid%3D1715600000000"
    raw_paths = [r.url.raw_path.decode() for r in transport.requests]
    assert raw_paths == [
        f"/teams/v3/conversations/{quoted}/activities",
        f"/teams/v3/conversations/{quoted}/activities/{posted.activity_id}",
        f"/teams/v3/conversations/{quoted}/activities/{posted.activity_id}",
    ]
    assert all(r.headers["Authorization"].startswith("Bearer sim-") for r in transport.requests)


def test_personal_conversation_then_a_card_in_it(sim: SimulatorProcess) -> None:
    async def work(connector: BotConnector) -> tuple[str, str, PostedActivity]:
        first = await connector.personal_conversation(ALEX)
        second = await connector.personal_conversation(ALEX)
        posted = await connector.post_card(first, card("Please approve"), "Approval needed")
        return first, second, posted

    first, second, posted = run(sim, work)
    assert first.startswith("a:") and first == second
    created = sim.calls("teams", path_contains="/v3/conversations")[0]
    assert created["path"] == "/v3/conversations"
    assert created["body"] == {
        "bot": {"id": f"28:{BOT}"},
        "members": [{"id": ALEX}],
        "channelData": {"tenant": {"id": TENANT}},
        "isGroup": False,
    }
    view = sim.teams_conversation(first)
    assert view["members"] == [ALEX]
    assert [a["id"] for a in view["activities"]] == [posted.activity_id]


def test_unknown_conversation_and_activity_are_not_transient(sim: SimulatorProcess) -> None:
    missing = failure(sim, lambda c: c.post_card("a:never-created", card("x"), "x"))
    assert (missing.status, missing.code, missing.transient) == (404, "ConversationNotFound", False)
    assert "Conversation a:never-created not found" in missing.message

    gone = failure(sim, lambda c: c.update_card(THREAD, "1234", card("x"), "x"))
    assert (gone.status, gone.code, gone.transient) == (404, "ActivityNotFoundInConversation", False)
    assert "update card" in str(gone)

    bad = failure(sim, lambda c: c.post_card(THREAD, {"type": "AdaptiveCard"}, "no version"))
    assert (bad.status, bad.code, bad.transient) == (400, "BadArgument", False)


def test_injected_failures_are_translated(sim: SimulatorProcess) -> None:
    sim.control("POST", "faults", json={"service": "teams", "status": 503, "retry_after": 2})
    unavailable = failure(sim, lambda c: c.post_card(THREAD, card("x"), "x"))
    assert (unavailable.status, unavailable.code) == (503, "ServiceUnavailable")
    assert unavailable.transient is True and unavailable.retry_after_s == 2.0

    sim.control("POST", "faults", json={"service": "teams", "status": 429})
    throttled = failure(sim, lambda c: c.personal_conversation(ALEX))
    assert (throttled.status, throttled.code, throttled.transient) == (429, "Throttled", True)

    sim.control("POST", "faults", json={"service": "teams", "status": 412})
    busy = failure(sim, lambda c: c.update_card(THREAD, "1", card("x"), "x"))
    assert (busy.status, busy.code, busy.transient) == (412, "PreconditionFailed", True)

    sim.control("POST", "faults", json={"service": "teams", "status": 401})
    denied = failure(sim, lambda c: c.reply_text(THREAD, "1", "x"))
    assert (denied.status, denied.code, denied.transient) == (401, "Unauthorized", False)

    # No fault left: the same call goes through now (the client itself never retries).
    assert run(sim, lambda c: c.post_card(THREAD, card("x"), "x")).activity_id
    assert [c["status"] for c in sim.calls("teams")] == [503, 429, 412, 401, 201]


def test_no_answer_is_transient_with_status_zero(sim: SimulatorProcess) -> None:
    closed = f"http://127.0.0.1:{free_port()}/teams"
    unreachable = failure(sim, lambda c: c.post_card(THREAD, card("x"), "x"), service_url=closed)
    assert (unreachable.status, unreachable.code, unreachable.transient) == (0, "TransportError", True)

    sim.control("POST", "faults", json={"service": "teams", "latency_ms": 1500})

    async def slow(connector: BotConnector) -> Any:
        return await connector.post_card(THREAD, card("x"), "x")

    async def main() -> None:
        async with BotConnector(
            sim.teams_base_url, ManagedIdentityCredential(), BOT, TENANT, timeout_s=0.5
        ) as connector:
            await slow(connector)

    with pytest.raises(BotConnectorError) as caught:
        asyncio.run(main())
    assert (caught.value.status, caught.value.code, caught.value.transient) == (0, "Timeout", True)


class RecordingCredential(TokenCredential):
    def __init__(self, fail: bool = False) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.fail = fail

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.scopes.append(scopes)
        if self.fail:
            raise ClientAuthenticationError("managed identity unavailable")
        return AccessToken("bot-token-never-logged", int(time.time()) + 3600)


def test_the_token_is_for_the_bot_framework_and_never_shown(
    sim: SimulatorProcess, caplog: pytest.LogCaptureFixture
) -> None:
    credential = RecordingCredential()
    caplog.set_level("DEBUG")
    run(sim, lambda c: c.post_card(THREAD, card("x"), "x"), credential=credential)
    sim.control("POST", "faults", json={"service": "teams", "status": 500})
    error = failure(sim, lambda c: c.post_card(THREAD, card("x"), "x"), credential=credential)
    assert credential.scopes == [(BOT_FRAMEWORK_SCOPE,), (BOT_FRAMEWORK_SCOPE,)]
    assert "bot-token-never-logged" not in caplog.text and "bot-token-never-logged" not in str(error)

    broken = RecordingCredential(fail=True)
    unavailable = failure(sim, lambda c: c.post_card(THREAD, card("x"), "x"), credential=broken)
    assert (unavailable.status, unavailable.code, unavailable.transient) == (0, "TokenUnavailable", True)
    assert len(sim.calls("teams")) == 2  # nothing was sent without a token


def test_arguments_are_checked_before_any_call(sim: SimulatorProcess) -> None:
    for work in (
        lambda c: c.post_card("", card("x"), "x"),
        lambda c: c.post_card(THREAD, {"type": "TextBlock"}, "x"),
        lambda c: c.post_card(THREAD, card("x"), " "),
        lambda c: c.reply_text(THREAD, "", "x"),
        lambda c: c.reply_text(THREAD, "1", ""),
        lambda c: c.personal_conversation(""),
    ):
        with pytest.raises(ValueError):
            run(sim, work)
    with pytest.raises(ValueError):
        BotConnector("ftp://x", RecordingCredential(), BOT, TENANT)
    assert sim.calls("teams") == []
