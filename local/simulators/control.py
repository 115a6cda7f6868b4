"""The control API under ``/_sim``: reset, inspect and seed the simulators' state, read recorded calls, inject
faults, send signed ITSM webhooks to the app as ServiceNow and Jira would, and click a button on a Teams card
(a signed ``adaptiveCard/action`` invoke, as Teams sends it to the bot).

It has no authentication: the simulators listen on loopback only and hold nothing but test data.

Seeding endpoints take one JSON object or a list of them, apply them in order (stopping at the first bad one:
400 with the reason, 409 for a clash with existing state) and answer 201 with what was stored, ids included.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .bot_tokens import TOKEN_KEYS, BotTokenIssuer
from .common import (
    JSON,
    CallLog,
    ConflictError,
    Faults,
    SeedError,
    Service,
    control_error,
    new_guid,
    optional_str,
    query_dict,
    reject_unknown_keys,
    require_str,
)
from .exchange import ExchangeService
from .graph import GraphService
from .jira import JiraService
from .pagerduty import PagerDutyService
from .pim import Behaviours
from .servicenow import ServiceNowService
from .teams import ADAPTIVE_CARD, TeamsService, build_invoke, find_execute_action

# Where senders may post: the app under test runs on this machine. Refusing other hosts keeps the simulator
# from becoming a signing relay for anything else.
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
SEND_TIMEOUT_S = 30.0

Endpoint = Callable[[Request], Awaitable[Response]]


class Simulators:
    """All simulated services and what they share (the call log and the faults); one per process."""

    def __init__(self) -> None:
        self.graph = GraphService()
        self.servicenow = ServiceNowService()
        self.jira = JiraService()
        self.pagerduty = PagerDutyService()
        self.teams = TeamsService()
        # Exchange Online's admin API: its role groups are part of the Graph tenant's state.
        self.exchange = ExchangeService(self.graph)
        self.services: list[Service] = [
            self.graph,
            self.servicenow,
            self.jira,
            self.pagerduty,
            self.teams,
            self.exchange,
        ]
        self.calls = CallLog()
        self.faults = Faults(s.name for s in self.services)
        # Not a service (its routes are full paths, see app.py): its keys live as long as the process and
        # survive a reset; the click helper signs its invokes with them.
        self.bot_tokens = BotTokenIssuer()

    def reset(self) -> None:
        for service in self.services:
            service.reset()
        self.calls.clear()
        self.faults.clear()

    def base_urls(self, origin: str) -> dict[str, str]:
        return {s.name: f"{origin}{s.prefix}" for s in self.services}

    def state(self, origin: str) -> JSON:
        return {
            "base_urls": self.base_urls(origin),
            **{s.name: s.snapshot(f"{origin}{s.prefix}") for s in self.services},
            "faults": self.faults.as_json(),
            "calls": self.calls.as_json(),
        }


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise SeedError("a JSON body is required")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise SeedError(f"the body is not valid JSON: {exc}") from exc


def _guarded(endpoint: Endpoint) -> Endpoint:
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ConflictError as exc:
            return control_error(409, str(exc))
        except SeedError as exc:
            return control_error(400, str(exc))

    return run


def _seeder(apply: Callable[[object], JSON]) -> Endpoint:
    async def seed(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, list):
            return JSONResponse([apply(item) for item in body], status_code=201)
        return JSONResponse(apply(body), status_code=201)

    return _guarded(seed)


def control_routes(sims: Simulators) -> list[BaseRoute]:
    async def reset(request: Request) -> Response:
        sims.reset()
        return JSONResponse({"reset": True})

    async def state(request: Request) -> Response:
        return JSONResponse(sims.state(_origin(request)))

    async def calls(request: Request) -> Response:
        if request.method == "DELETE":
            sims.calls.clear()
            return JSONResponse({"cleared": True})
        selected = sims.calls.select(
            service=request.query_params.get("service"),
            method=request.query_params.get("method"),
            path_contains=request.query_params.get("path_contains"),
        )
        return JSONResponse({"count": len(selected), "calls": sims.calls.as_json(selected)})

    async def calls_summary(request: Request) -> Response:
        return JSONResponse(
            sims.calls.summary(
                service=request.query_params.get("service"), method=request.query_params.get("method")
            )
        )

    async def pim_behaviour(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(sims.graph.behaviours.as_json())
        if request.method == "DELETE":
            sims.graph.behaviours = Behaviours()
            return JSONResponse(sims.graph.behaviours.as_json())
        body = await _body(request)
        if isinstance(body, list):
            return JSONResponse([sims.graph.set_behaviour(spec) for spec in body], status_code=201)
        return JSONResponse(sims.graph.set_behaviour(body), status_code=201)

    async def graph_stores(request: Request) -> Response:
        return JSONResponse(sims.graph.stores_view())

    async def session_revocations(request: Request) -> Response:
        return JSONResponse({"sessionRevocations": sims.graph.revocations_view()})

    async def role_groups(request: Request) -> Response:
        return JSONResponse({"roleGroups": sims.graph.role_groups_view()})

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"faults": sims.faults.as_json()})
        if request.method == "DELETE":
            sims.faults.clear()
            return JSONResponse({"cleared": True})
        body = await _body(request)
        added = [sims.faults.add(spec) for spec in (body if isinstance(body, list) else [body])]
        return JSONResponse({"faults": [f.id for f in added]}, status_code=201)

    async def incident(request: Request) -> Response:
        return JSONResponse(sims.servicenow.incident_view(request.path_params["key"]))

    async def issue(request: Request) -> Response:
        return JSONResponse(sims.jira.issue_view(request.path_params["key"]))

    async def not_found_view(request: Request, endpoint: Endpoint) -> Response:
        try:
            return await endpoint(request)
        except SeedError as exc:
            return control_error(404, str(exc))

    async def incident_view(request: Request) -> Response:
        return await not_found_view(request, incident)

    async def issue_view(request: Request) -> Response:
        return await not_found_view(request, issue)

    async def teams_conversations(request: Request) -> Response:
        return JSONResponse(sims.teams.conversations_view())

    async def teams_conversation(request: Request) -> Response:
        try:
            return JSONResponse(sims.teams.conversation_view(request.path_params["conversation_id"]))
        except SeedError as exc:
            return control_error(404, str(exc))

    async def teams_click(request: Request) -> Response:
        return await send_click(request, sims)

    return [
        Route("/reset", reset, methods=["POST"]),
        Route("/state", state, methods=["GET"]),
        Route("/calls", calls, methods=["GET", "DELETE"]),
        Route("/calls/summary", calls_summary, methods=["GET"]),
        Route("/faults", _guarded(faults), methods=["GET", "POST", "DELETE"]),
        Route("/graph/users", _seeder(sims.graph.seed_user), methods=["POST"]),
        Route("/graph/groups", _seeder(sims.graph.seed_group), methods=["POST"]),
        Route("/graph/eligibility", _seeder(sims.graph.seed_eligibility), methods=["POST"]),
        Route("/graph/assignments", _seeder(sims.graph.seed_assignment), methods=["POST"]),
        Route("/graph/requests", _seeder(sims.graph.seed_request), methods=["POST"]),
        Route("/graph/pim-behaviour", _guarded(pim_behaviour), methods=["GET", "POST", "DELETE"]),
        Route("/graph/stores", graph_stores, methods=["GET"]),
        Route("/graph/session-revocations", session_revocations, methods=["GET"]),
        Route("/exchange/role-groups", _seeder(sims.graph.seed_role_group), methods=["POST"]),
        Route("/exchange/role-groups", role_groups, methods=["GET"]),
        Route("/servicenow/users", _seeder(sims.servicenow.seed_user), methods=["POST"]),
        Route("/servicenow/incidents", _seeder(sims.servicenow.seed_incident), methods=["POST"]),
        Route("/servicenow/incidents/{key}", incident_view, methods=["GET"]),
        Route("/servicenow/oncall", _seeder(sims.servicenow.seed_oncall), methods=["POST"]),
        Route("/servicenow/send", _guarded(send_servicenow), methods=["POST"]),
        Route("/jira/issues", _seeder(sims.jira.seed_issue), methods=["POST"]),
        Route("/jira/issues/{key}", issue_view, methods=["GET"]),
        Route("/jira/send", _guarded(send_jira), methods=["POST"]),
        Route("/pagerduty/oncalls", _seeder(sims.pagerduty.seed_oncall), methods=["POST"]),
        Route("/teams/conversations", teams_conversations, methods=["GET"]),
        Route("/teams/conversations/{conversation_id}", teams_conversation, methods=["GET"]),
        Route("/teams/click", _guarded(teams_click), methods=["POST"]),
        Route("/echo", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]


# -- senders ------------------------------------------------------------------------------------------------

# Options shared by both senders. Besides the signed happy path they let a test build each negative case the
# app must refuse: a raw "body" (malformed JSON, oversized), a "signed_body" that differs from what is sent,
# an explicit "signature", headers to leave out ("omit_headers") or to add ("headers").
_SEND_KEYS = (
    "url",
    "payload",
    "body",
    "secret",
    "signed_body",
    "signature",
    "omit_headers",
    "headers",
    "timeout",
)


def _send_inputs(spec: object, extra_keys: tuple[str, ...]) -> tuple[JSON, str, bytes, bytes]:
    if not isinstance(spec, dict):
        raise SeedError("a send request is a JSON object")
    reject_unknown_keys(spec, (*_SEND_KEYS, *extra_keys), "send")
    url = _loopback_url(spec.get("url"), "send.url")
    if ("payload" in spec) == ("body" in spec):
        raise SeedError(
            "send needs exactly one of 'payload' (JSON, serialised compactly) or 'body' (a raw string)"
        )
    if "body" in spec:
        if not isinstance(spec["body"], str):
            raise SeedError("send.body is the raw body as a string")
        body = spec["body"].encode()
    else:
        # What JSON.stringify (ServiceNow scripts) and Jira produce: compact, non-ASCII kept as UTF-8.
        body = json.dumps(spec["payload"], ensure_ascii=False, separators=(",", ":")).encode()
    signed = spec.get("signed_body")
    if signed is not None and not isinstance(signed, str):
        raise SeedError("send.signed_body is a string")
    secret = spec.get("secret")
    if "signature" not in spec and not isinstance(secret, str):
        raise SeedError("send.secret is required (or give an explicit 'signature')")
    return spec, url, body, (signed.encode() if signed is not None else body)


def _loopback_url(url: object, what: str) -> str:
    if not isinstance(url, str):
        raise SeedError(f"{what} is required")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK_HOSTS:
        raise SeedError(f"{what} must be an http(s) URL on loopback ({sorted(LOOPBACK_HOSTS)}), got {url!r}")
    return url


def _hmac_hex(secret: str, message: bytes) -> str:
    # Deliberately not shared.webhooks: the senders stand in for ServiceNow and Jira, which sign on
    # their own; a second implementation of the schemes is what catches a mistake in the app's.
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


async def _post(spec: JSON, url: str, body: bytes, headers: dict[str, str]) -> Response:
    extra = spec.get("headers") or {}
    omit = spec.get("omit_headers") or []
    if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
        raise SeedError("send.headers is an object of string values")
    if not isinstance(omit, list):
        raise SeedError("send.omit_headers is a list of header names")
    headers.update(extra)
    omitted = {str(name).lower() for name in omit}
    headers = {k: v for k, v in headers.items() if k.lower() not in omitted}
    timeout = spec.get("timeout", SEND_TIMEOUT_S)
    try:
        async with httpx.AsyncClient(timeout=float(timeout)) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return control_error(502, f"sending to {url} failed: {type(exc).__name__}: {exc}")
    try:
        answer: Any = response.json()
    except ValueError:
        answer = response.text
    return JSONResponse(
        {
            "status": response.status_code,
            "headers": dict(response.headers),
            "body": answer,
            "sent": {"url": url, "headers": headers, "body": body.decode("utf-8", errors="replace")},
        }
    )


async def send_servicenow(request: Request) -> Response:
    """Post as our ServiceNow outbound script does (design.md section 4): the raw JSON body, with
    ``X-Signature-Timestamp: <unix seconds>`` and ``X-Signature: sha256=<hex HMAC-SHA256(secret,
    timestamp + "." + body)>``."""
    spec, url, body, signed = _send_inputs(await _body(request), ("timestamp",))
    timestamp = spec.get("timestamp", int(time.time()))
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | str):
        raise SeedError("send.timestamp is unix seconds (an integer, or a string for malformed-value tests)")
    timestamp_text = str(timestamp)
    signature = spec.get("signature")
    if signature is None:
        signature = "sha256=" + _hmac_hex(spec["secret"], timestamp_text.encode() + b"." + signed)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "ServiceNow/1.0 (simulated outbound REST)",
        "X-Signature-Timestamp": timestamp_text,
        "X-Signature": str(signature),
    }
    return await _post(spec, url, body, headers)


async def send_jira(request: Request) -> Response:
    """Post as a Jira admin webhook with a secret does: ``X-Hub-Signature: sha256=<hex HMAC-SHA256(secret,
    body)>`` and ``X-Atlassian-Webhook-Identifier`` (the same id on every retry of one delivery; pass
    ``webhookIdentifier`` to repeat a delivery, ``retry`` to add ``X-Atlassian-Webhook-Retry``)."""
    spec, url, body, signed = _send_inputs(await _body(request), ("webhookIdentifier", "retry"))
    identifier = spec.get("webhookIdentifier") or new_guid()
    signature = spec.get("signature")
    if signature is None:
        signature = "sha256=" + _hmac_hex(spec["secret"], signed)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Atlassian Webhook HTTP Client",
        "X-Hub-Signature": str(signature),
        "X-Atlassian-Webhook-Identifier": str(identifier),
    }
    retry = spec.get("retry")
    if retry is not None:
        headers["X-Atlassian-Webhook-Retry"] = str(retry)
    return await _post(spec, url, body, headers)


# -- Teams: a user clicks a button on a card -----------------------------------------------------------------

_CLICK_KEYS = (
    "botUrl",
    "conversationId",
    "activityId",
    "verb",
    "user",
    "tenantId",
    "botAppId",
    "data",
    "token",
    "authorization",
    "serviceUrl",
)
_CLICK_USER_KEYS = ("aadObjectId", "name", "id")
# What the Bot Connector sends as its User-Agent when it calls a bot.
_BOT_CONNECTOR_USER_AGENT = "Microsoft-SkypeBotApi (Microsoft-BotFramework/3.0)"


async def send_click(request: Request, sims: Simulators) -> Response:
    """A user presses an ``Action.Execute`` button (``verb``) on a card the bot posted: send the bot the
    ``adaptiveCard/action`` invoke Teams would send, signed by the simulated Bot Framework issuer (audience
    ``botAppId``, ``serviceurl`` = the activity's ``serviceUrl``), and answer with what the bot answered.

    As in Teams, a 200 answer ``{"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive",
    "value": <card>}`` replaces the card the message shows. Negative-test knobs: ``data`` (merged over the
    button's data), ``token`` (mint overrides: wrong audience, issuer, expired, unendorsed key, ...),
    ``authorization`` (the header verbatim; null sends none), ``serviceUrl``.
    """
    spec = await _body(request)
    if not isinstance(spec, dict):
        raise SeedError("a click is a JSON object")
    reject_unknown_keys(spec, _CLICK_KEYS, "click")
    bot_url = _loopback_url(spec.get("botUrl"), "click.botUrl")
    conversation_id = require_str(spec, "conversationId", "click")
    activity_id = require_str(spec, "activityId", "click")
    verb = require_str(spec, "verb", "click")
    tenant_id = require_str(spec, "tenantId", "click")
    bot_app_id = require_str(spec, "botAppId", "click")
    user = spec.get("user")
    if not isinstance(user, dict):
        raise SeedError("click.user is required: {aadObjectId, name?, id? (29:...)}")
    reject_unknown_keys(user, _CLICK_USER_KEYS, "click.user")
    require_str(user, "aadObjectId", "click.user")
    optional_str(user, "name", "click.user")
    optional_str(user, "id", "click.user")
    extra_data = spec.get("data")
    if extra_data is not None and not isinstance(extra_data, dict):
        raise SeedError("click.data is an object (merged over the button's data)")
    overrides = spec.get("token")
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise SeedError("click.token is an object of mint overrides")
        reject_unknown_keys(overrides, TOKEN_KEYS, "click.token")
    authorization_override = spec.get("authorization")
    if authorization_override is not None and not isinstance(authorization_override, str):
        raise SeedError("click.authorization is the header value (a string), or null to send none")
    service_url = optional_str(spec, "serviceUrl", "click") or f"{_origin(request)}{sims.teams.prefix}"

    try:
        card = sims.teams.card_of(conversation_id, activity_id)
    except SeedError as exc:
        return control_error(404, str(exc))
    if card is None:
        raise SeedError(f"activity {activity_id!r} in {conversation_id!r} carries no Adaptive Card")
    action = find_execute_action(card, verb)
    if action is None:
        raise SeedError(f"the card of activity {activity_id!r} has no Action.Execute with verb {verb!r}")
    action_data = action.get("data")
    data = {**(action_data if isinstance(action_data, dict) else {}), **(extra_data or {})}
    invoke = build_invoke(
        conversation_id=conversation_id,
        activity_id=activity_id,
        action=action,
        data=data,
        user=user,
        tenant_id=tenant_id,
        bot_app_id=bot_app_id,
        service_url=service_url,
    )
    if "authorization" in spec:
        authorization: str | None = authorization_override
    else:
        mint_spec = {"audience": bot_app_id, "serviceUrl": service_url, **(overrides or {})}
        token, _, _ = sims.bot_tokens.mint(mint_spec)
        authorization = f"Bearer {token}"
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": _BOT_CONNECTOR_USER_AGENT}
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        async with httpx.AsyncClient(timeout=SEND_TIMEOUT_S) as client:
            response = await client.post(bot_url, content=json.dumps(invoke).encode(), headers=headers)
    except httpx.HTTPError as exc:
        return control_error(502, f"sending the invoke to {bot_url} failed: {type(exc).__name__}: {exc}")
    try:
        answer: Any = response.json()
    except ValueError:
        answer = response.text
    card_updated = False
    if (
        response.status_code == 200
        and isinstance(answer, dict)
        and answer.get("statusCode") == 200
        and answer.get("type") == ADAPTIVE_CARD
    ):
        # The bot's state changed while we awaited its answer, possibly through the Bot Connector routes
        # (an update of this very card): look the activity up again rather than reuse what was read above.
        card_updated = sims.teams.replace_card_from_invoke(conversation_id, activity_id, answer.get("value"))
    sims.teams.record_click({
        "conversationId": conversation_id,
        "activityId": activity_id,
        "verb": verb,
        "invokeId": invoke["id"],
        "status": response.status_code,
        "cardUpdated": card_updated,
    })  # fmt: skip
    return JSONResponse({
        "status": response.status_code,
        "body": answer,
        "invoke": invoke,
        "headers": {"Authorization": authorization},
        "cardUpdated": card_updated,
    })  # fmt: skip


async def echo(request: Request) -> Response:
    """Answers with what it received (method, path, query, headers, raw body): a receiver for the senders'
    own tests. ``?status=NNN`` picks the status code, so a test can check that the sender reports it."""
    body = await request.body()
    status_param = request.query_params.get("status", "200")
    status = int(status_param) if status_param.isdigit() and 200 <= int(status_param) <= 599 else 200
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": query_dict(request),
            "headers": dict(request.headers),
            "body": body.decode("utf-8", errors="replace"),
        },
        status_code=status,
    )
