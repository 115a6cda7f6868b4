"""End to end: approvals in Teams. Signed ServiceNow P1s into the real function_app on the devhost; cards
posted through the Bot Connector simulator; clicks sent as signed Teams invokes by the Teams simulator
(``/_sim/teams/click``) as given Entra users. Outcomes are read from the request's audit rows, the ticket's
journal, the cards as Teams holds them, and the day's security chain for every refused click."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from azure.data.tables import TableServiceClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from local.azurite import Azurite
from local.scenarios import (
    SAMPLE_BOT_APP_ID,
    click_card,
    seed_approver_world,
    seed_responder_world,
    send_servicenow,
    servicenow_payload,
)
from local.simulators.bot_tokens import KEYS_PATH
from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from local.stack import DevhostProcess
from shared.approvals import ApprovalBook, Vote
from shared.audit import AuditLedger, security_chain
from shared.policy import load_policy
from shared.settings import DEFAULT_POLICY_PATH
from tests.e2e.conftest import AFTER_APPROVAL, app_host_in, states_recorded, wait_for_state
from tests.e2e.conftest import request_status as status

pytestmark = pytest.mark.stack

POLICY = load_policy(DEFAULT_POLICY_PATH)
SECRET = "local-servicenow-webhook-secret-0123456789abcdef"  # the sample settings' dev value
STARTED: set[str] = set()


def _host(work: Path, azurite: Azurite, sims: SimulatorProcess, **values: str) -> DevhostProcess:
    return app_host_in(work, azurite, **sims.settings, IDENTITY_ENDPOINT=sims.url + TOKEN_PATH,
                       IDENTITY_HEADER=IDENTITY_HEADER, **values)  # fmt: skip


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite,
         simulators: SimulatorProcess) -> Iterator[DevhostProcess]:  # fmt: skip
    process = _host(tmp_path_factory.mktemp("approvals"), azurite, simulators)
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture(scope="module")
def fast_host(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite,
              simulators: SimulatorProcess) -> Iterator[DevhostProcess]:  # fmt: skip
    """The same app with a policy whose approvals are due after 6 seconds (a reminder after 3)."""
    work = tmp_path_factory.mktemp("approvals-fast")
    text = Path(DEFAULT_POLICY_PATH).read_text(encoding="utf-8")
    text = text.replace('approval_due = "PT15M"', 'approval_due = "PT6S"')
    text = text.replace('approval_reminder = "PT7M30S"', 'approval_reminder = "PT3S"')
    assert 'approval_due = "PT6S"' in text and 'approval_reminder = "PT3S"' in text
    (work / "policy.toml").write_text(text, encoding="utf-8")
    process = _host(work, azurite, simulators, POLICY_PATH=str(work / "policy.toml"))
    process.start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture(scope="module", autouse=True)
def _every_chain_verifies(azurite: Azurite) -> Iterator[None]:
    yield
    chains = {*STARTED, security_chain(datetime.now(UTC))}
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        ledger = AuditLedger(service, POLICY.version_hash, POLICY.file_hash)
        broken = [result for result in (ledger.verify(chain) for chain in sorted(chains)) if not result.ok]
    assert broken == []


@pytest.fixture
def world(sim: SimulatorProcess) -> dict[str, Any]:
    responders = seed_responder_world(sim, POLICY)
    return {**responders, "people": seed_approver_world(sim, POLICY, responders)}


def start(sims: SimulatorProcess, host: DevhostProcess, world: dict[str, Any], **changes: Any) -> str:
    answer = send_servicenow(sims, host.url, SECRET, servicenow_payload(world, **changes))
    assert answer["status"] == 202, answer
    request_id: str = answer["body"]["requestId"]
    STARTED.add(request_id)
    return request_id


def card(
    host: DevhostProcess, request_id: str, stage: str, purpose: str, timeout: float = 30
) -> dict[str, Any]:
    """Where the card of ``stage`` was posted, from the request's audit rows (the latest for the stage)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        posted = [step["detail"] for step in status(host, request_id)["timeline"]
                  if step["step"] in ("approval.card_posted", "approval.card_updated")
                  and step["detail"]["stage"] == stage and step["detail"]["purpose"] == purpose]  # fmt: skip
        if posted:
            latest: dict[str, Any] = posted[-1]
            return latest
        time.sleep(0.2)
    raise AssertionError(f"no {purpose} card for {stage} on {request_id}\n{host.log_tail()}")


def votes(host: DevhostProcess, request_id: str) -> list[tuple[str, str]]:
    return [(step["outcome"], step["actor"]["id"]) for step in status(host, request_id)["timeline"]
            if step["step"] == "approval.vote"]  # fmt: skip


def counted(
    host: DevhostProcess, request_id: str, user_id: str, timeout: float = 30
) -> list[tuple[str, str]]:
    """The request's votes once ``user_id``'s has been counted (the orchestration reads it from the store)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = votes(host, request_id)
        if ("counted", user_id) in found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no counted vote by {user_id} on {request_id}\n{host.log_tail()}")


def stored_votes(azurite: Azurite, request_id: str, round_no: int) -> list[Vote]:
    """The vote rows the bot wrote (it writes them before answering, so none means none was accepted)."""
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        return [vote for vote, _ in ApprovalBook(service).votes(request_id, round_no)]


def security_kinds(azurite: Azurite, since: int) -> list[str]:
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        ledger = AuditLedger(service, POLICY.version_hash, POLICY.file_hash)
        return [row.kind for row in ledger.read(security_chain(datetime.now(UTC)))[since:]]


def security_count(azurite: Azurite) -> int:
    return len(security_kinds(azurite, 0))


def journal(sims: SimulatorProcess, world: dict[str, Any]) -> str:
    view = sims.control("GET", f"servicenow/incidents/{world['incident']['sys_id']}")
    return "\n".join(str(entry) for entry in view.get("work_notes", []))


def activity(sims: SimulatorProcess, where: dict[str, Any]) -> dict[str, Any]:
    conversation = sims.teams_conversation(where["conversationId"])
    found: dict[str, Any] = next(a for a in conversation["activities"] if a["id"] == where["activityId"])
    return found


def card_texts(sims: SimulatorProcess, where: dict[str, Any]) -> list[str]:
    return [block.get("text", "") for block in activity(sims, where)["card"]["body"]]


def confirmed_global_admin_request(
    sims: SimulatorProcess, host: DevhostProcess, world: dict[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A Global Administrator request the responder has confirmed, and its two approval cards."""
    request_id = start(sims, host, world, access__role="Global Administrator")
    confirm = card(host, request_id, "responder", "confirm")
    assert click_card(sims, host.url, confirm, world["alex"], "confirm")["status"] == 200
    lead = card(host, request_id, "on_call_lead", "approve")
    return request_id, lead, card(host, request_id, "iam_duty_manager", "approve")


def waiting_exchange_request(
    sims: SimulatorProcess, host: DevhostProcess, world: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """An Exchange Administrator request outside a major incident: waiting for one on-call lead."""
    request_id = start(sims, host, world)
    wait_for_state(host, request_id, ("awaiting_approval",))
    return request_id, card(host, request_id, "on_call_lead", "approve")


# --- the approval paths ------------------------------------------------------------------------------------


def test_global_administrator_is_approved_only_after_two_clicks_by_two_people_from_the_two_groups(
    sim: SimulatorProcess, host: DevhostProcess, world: dict[str, Any]
) -> None:
    people = world["people"]
    request_id = start(sim, host, world, access__role="Global Administrator")
    confirm = card(host, request_id, "responder", "confirm")
    assert confirm["conversationId"].startswith("a:")  # the responder's 1:1 chat with the bot
    confirmed = click_card(sim, host.url, confirm, people["alex"], "confirm")
    assert confirmed["status"] == 200, (confirmed, host.log_tail())

    lead = card(host, request_id, "on_call_lead", "approve")
    iam = card(host, request_id, "iam_duty_manager", "approve")
    assert lead["conversationId"] == POLICY.approver_groups["on_call_lead"].teams_conversation_id
    first = click_card(sim, host.url, lead, people["lee"], "approve")
    assert first["status"] == 200 and first["body"]["type"] == "application/vnd.microsoft.card.adaptive"
    counted(host, request_id, people["lee"]["id"])
    assert status(host, request_id)["state"] == "awaiting_approval"  # one approval is not enough
    assert click_card(sim, host.url, iam, people["ivy"], "approve")["status"] == 200

    body = wait_for_state(host, request_id, (*AFTER_APPROVAL, "denied", "expired"))
    assert "approved" in states_recorded(body) and body["auditVerified"] is True
    assert sorted(votes(host, request_id)) == sorted(
        [("counted", world["alex"]["id"]), ("counted", people["lee"]["id"]), ("counted", people["ivy"]["id"])]
    )
    assert {(a["stage"], a["by"]["id"], a["outcome"]) for a in body["approvals"]} == {
        ("responder", world["alex"]["id"], "counted"), ("on_call_lead", people["lee"]["id"], "counted"),
        ("iam_duty_manager", people["ivy"]["id"], "counted")}  # fmt: skip
    notes = journal(sim, world)
    assert f"Approved by lee.{world['tag']}@contoso.test (On-call lead)" in notes
    assert f"Approved by ivy.{world['tag']}@contoso.test (IAM duty manager)" in notes
    final = activity(sim, lead)
    assert "actions" not in final["card"]  # decided: the buttons are gone, on both cards
    assert any("Approved by ivy" in text for text in card_texts(sim, lead))


def test_exchange_on_a_declared_major_incident_is_approved_by_rule_and_reviewed_by_iam(
    sim: SimulatorProcess, host: DevhostProcess, azurite: Azurite
) -> None:
    responders = seed_responder_world(sim, POLICY, major_incident=True)
    people = seed_approver_world(sim, POLICY, responders)
    request_id = start(sim, host, responders)
    body = wait_for_state(host, request_id, (*AFTER_APPROVAL, "awaiting_approval"))
    assert "approved" in states_recorded(body)
    assert "approval.rule" in [step["step"] for step in body["timeline"]]
    review = card(host, request_id, "iam_duty_manager", "review")
    assert review["conversationId"] == POLICY.approver_groups["iam_duty_manager"].teams_conversation_id
    assert any("please review" in text for text in card_texts(sim, review))
    answer = click_card(sim, host.url, review, people["ivy"], "approve")
    assert answer["status"] == 200
    deadline = time.monotonic() + 30
    while "approval.review" not in [s["step"] for s in status(host, request_id)["timeline"]]:
        assert time.monotonic() < deadline, host.log_tail()
        time.sleep(0.2)
    step = next(s for s in status(host, request_id)["timeline"] if s["step"] == "approval.review")
    assert step["outcome"] == "confirmed" and step["actor"]["id"] == people["ivy"]["id"]


def test_outside_a_major_incident_exchange_needs_one_on_call_lead(
    sim: SimulatorProcess, host: DevhostProcess, world: dict[str, Any]
) -> None:
    request_id, lead = waiting_exchange_request(sim, host, world)
    assert click_card(sim, host.url, lead, world["people"]["bo"], "approve")["status"] == 200
    body = wait_for_state(host, request_id, (*AFTER_APPROVAL, "denied", "expired"))
    assert "approved" in states_recorded(body)
    assert votes(host, request_id) == [("counted", world["people"]["bo"]["id"])]


def test_a_deny_ends_the_request_access_denied(
    sim: SimulatorProcess, host: DevhostProcess, world: dict[str, Any]
) -> None:
    request_id, lead = waiting_exchange_request(sim, host, world)
    assert click_card(sim, host.url, lead, world["people"]["lee"], "deny")["status"] == 200
    body = wait_for_state(host, request_id, (*AFTER_APPROVAL, "denied", "expired"))
    assert body["state"] == "denied"
    assert "Access denied" in journal(sim, world)


def test_no_answer_by_the_due_time_ends_access_expired_after_exactly_one_reminder(
    sim: SimulatorProcess, fast_host: DevhostProcess, world: dict[str, Any]
) -> None:
    request_id = start(sim, fast_host, world)
    lead = card(fast_host, request_id, "on_call_lead", "approve")
    body = wait_for_state(fast_host, request_id, (*AFTER_APPROVAL, "denied", "expired"))
    assert body["state"] == "expired"
    reminders = [a for a in sim.teams_conversation(lead["conversationId"])["activities"]
                 if a["replyToId"] == lead["activityId"]]  # fmt: skip
    assert len(reminders) == 1 and "Reminder" in reminders[0]["text"]
    assert [s["outcome"] for s in body["timeline"] if s["step"] == "approval.reminder"] == ["sent"]
    assert "Access expired" in journal(sim, world)
    assert any("Expired at" in text for text in card_texts(sim, lead))


# --- refused clicks: each answered, not counted, and recorded on the security chain -------------------------


def _forged(sims: SimulatorProcess, kind: str, service_url: str) -> str:
    now = int(time.time())
    claims = {"iss": "https://api.botframework.com", "aud": SAMPLE_BOT_APP_ID, "serviceurl": service_url,
              "nbf": now, "iat": now, "exp": now + 600}  # fmt: skip
    jwks = httpx.get(sims.url + KEYS_PATH).json()["keys"]
    endorsed = next(k for k in jwks if "msteams" in k["endorsements"])

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    if kind == "other_key":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return "Bearer " + jwt.encode(claims, key, algorithm="RS256", headers={"kid": endorsed["kid"]})
    if kind == "alg_none":
        head = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": endorsed["kid"]}).encode())
        return f"Bearer {head}.{b64(json.dumps(claims).encode())}."
    # HS256 keyed with the public key (which anyone can fetch): the classic algorithm confusion.
    public = RSAAlgorithm.from_jwk(json.dumps(endorsed))
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[union-attr]
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': endorsed['kid']}).encode())}." \
                    f"{b64(json.dumps(claims).encode())}"  # fmt: skip
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"Bearer {signing_input}.{b64(signature)}"


@pytest.mark.parametrize(
    ("options", "status_code", "kind"),
    [
        ({"authorization": None}, 401, "bot.missing_token"),
        ({"forge": "other_key"}, 401, "bot.bad_signature"),
        ({"forge": "alg_none"}, 401, "bot.bad_algorithm"),
        ({"forge": "hs256"}, 401, "bot.bad_algorithm"),
        ({"token": {"audience": "00000000-0000-4000-8000-00000000dead"}}, 401, "bot.wrong_audience"),
        ({"token": {"issuer": "https://login.example.com"}}, 401, "bot.wrong_issuer"),
        ({"token": {"expiresIn": -900}}, 401, "bot.expired"),
        ({"token": {"notBefore": 900}}, 401, "bot.not_yet_valid"),
        ({"token": {"serviceUrl": "https://smba.example.net/teams"}}, 401, "bot.serviceurl_mismatch"),
        ({"token": {"kid": "unendorsed"}}, 401, "bot.channel_not_endorsed"),
        ({"tenantId": "99999999-2222-4333-8444-555555555555"}, 403, "bot.wrong_tenant"),
        ({"as": "sec"}, 403, "bot.not_in_group"),
        ({"as": "alex"}, 403, "bot.not_allowed"),
        ({"as": "sam"}, 403, "bot.not_allowed"),
        ({"data": {"nonce": "00000000-0000-4000-8000-000000000000"}}, 403, "bot.stale_card"),
        ({"another_request": True}, 403, "bot.stale_card"),
    ],
    ids=["no token", "another key", "alg none", "HS256 with the public key", "wrong audience", "wrong issuer",
         "expired", "not yet valid", "serviceurl mismatch", "key not endorsed", "wrong tenant",
         "outside the group", "the responder", "the opener", "stale nonce", "another request"],
)  # fmt: skip
def test_a_refused_click_counts_no_vote_and_is_recorded(
    sim: SimulatorProcess, host: DevhostProcess, azurite: Azurite, world: dict[str, Any],
    options: dict[str, Any], status_code: int, kind: str,
) -> None:  # fmt: skip
    request_id, lead = waiting_exchange_request(sim, host, world)
    before = security_count(azurite)
    options = dict(options)
    who = world["people"][options.pop("as", "lee")]
    forge = options.pop("forge", None)
    if forge is not None:
        options["authorization"] = _forged(sim, forge, sim.url + "/teams")
    if options.pop("another_request", False):
        # A real, open request of the same ticket (another role): its round 1 exists, with its own nonce.
        other = start(sim, host, world, access__role="Global Administrator")
        card(host, other, "responder", "confirm")
        options["data"] = {"requestId": other}
    answer = click_card(sim, host.url, lead, who, "approve", **options)
    assert answer["status"] == status_code, answer
    assert kind in security_kinds(azurite, before)
    assert stored_votes(azurite, request_id, 1) == []
    assert votes(host, request_id) == []
    assert status(host, request_id)["state"] == "awaiting_approval"
    assert "actions" in activity(sim, lead)["card"]  # the card still waits


def test_the_same_person_cannot_approve_both_stages(
    sim: SimulatorProcess, host: DevhostProcess, azurite: Azurite, world: dict[str, Any]
) -> None:
    bo = world["people"]["bo"]
    request_id, lead, iam = confirmed_global_admin_request(sim, host, world)
    assert click_card(sim, host.url, lead, bo, "approve")["status"] == 200
    before = security_count(azurite)
    second = click_card(sim, host.url, iam, bo, "approve")
    assert second["status"] == 403 and "different people" in second["body"]["value"]["message"]
    assert "bot.already_voted" in security_kinds(azurite, before)
    assert [v.approver_id for v in stored_votes(azurite, request_id, 2)] == [bo["id"]]
    assert [v for v in counted(host, request_id, bo["id"]) if v[1] == bo["id"]] == [("counted", bo["id"])]
    assert status(host, request_id)["state"] == "awaiting_approval"


def test_a_replayed_invoke_gets_the_same_answer_and_counts_once(
    sim: SimulatorProcess, host: DevhostProcess, azurite: Azurite, world: dict[str, Any]
) -> None:
    bo = world["people"]["bo"]
    request_id, lead, _iam = confirmed_global_admin_request(sim, host, world)
    first = click_card(sim, host.url, lead, bo, "approve")
    assert first["status"] == 200
    before = security_count(azurite)
    # Teams retries an invoke it got no timely answer for: the same activity and token, sent again.
    again = httpx.post(f"{host.url}/api/messages", json=first["invoke"], headers=first["headers"], timeout=30)
    assert again.status_code == 200
    assert again.json()["value"]["body"] == first["body"]["value"]["body"]
    assert "bot.invoke_replayed" in security_kinds(azurite, before)
    assert [v.approver_id for v in stored_votes(azurite, request_id, 2)] == [bo["id"]]
    assert [v for v in counted(host, request_id, bo["id"]) if v[1] == bo["id"]] == [("counted", bo["id"])]


def test_a_click_after_the_due_time_is_refused(
    sim: SimulatorProcess, fast_host: DevhostProcess, azurite: Azurite, world: dict[str, Any]
) -> None:
    expired_id = start(sim, fast_host, world)
    expired_card = card(fast_host, expired_id, "on_call_lead", "approve")
    original = activity(sim, expired_card)["card"]["actions"][0]["data"]  # what the stale client still shows
    wait_for_state(fast_host, expired_id, ("expired",))
    open_id = start(sim, fast_host, world, access__role="Global Administrator")
    open_card = card(fast_host, open_id, "responder", "confirm")  # any card still open in Teams
    before = security_count(azurite)
    answer = click_card(sim, fast_host.url, open_card, world["people"]["lee"], "deny", data=original)
    assert answer["status"] == 403, answer
    assert "bot.round_closed" in security_kinds(azurite, before)
    assert votes(fast_host, expired_id) == [] and votes(fast_host, open_id) == []
