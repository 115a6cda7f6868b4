"""Scenario worlds for the demo and the end-to-end tests: who the responder is, what PIM and the ITSM
hold, and the webhook deliveries that start requests (one place, so the demo shows what the tests prove)."""

from __future__ import annotations

import uuid
from typing import Any

from local.simulators.process import SimulatorProcess
from shared.policy import Policy

EXCHANGE_ADMINISTRATOR = "29232cdf-9323-42fd-ade2-1d097af3e4de"
GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
# The sample settings' tenant and bot app id (local.settings.sample.json): what a simulated Teams click
# claims, and what the app checks it against.
SAMPLE_TENANT_ID = "11111111-2222-4333-8444-555555555555"
SAMPLE_BOT_APP_ID = "66666666-7777-4888-9999-000000000000"


def seed_responder_world(sims: SimulatorProcess, policy: Policy, *, on_call: bool = True, eligible: bool = True,  # noqa: E501
                         active: bool = False, incident_state: str = "2",
                         major_incident: bool = False) -> dict[str, Any]:  # fmt: skip
    """A responder (Alex) and an opener (Sam), the on-call responder group, Alex's PIM state for Exchange
    Administrator, and a P1 ServiceNow incident with a number of its own."""
    tag = uuid.uuid4().hex[:6]
    alex = sims.seed("graph/users", {"userPrincipalName": f"alex.{tag}@contoso.test", "displayName": "Alex"})
    sam = sims.seed("graph/users", {"userPrincipalName": f"sam.{tag}@contoso.test", "displayName": "Sam"})
    if policy.roster.provider == "entra_group" and policy.roster.group_id:
        sims.seed("graph/groups", {"id": policy.roster.group_id, "displayName": "On-call responders",
                                   "members": [alex["id"]] if on_call else []})  # fmt: skip
    if eligible:
        sims.seed(
            "graph/eligibility", {"principalId": alex["id"], "roleDefinitionId": EXCHANGE_ADMINISTRATOR}
        )
    if active:
        sims.seed("graph/assignments", {"principalId": alex["id"], "roleDefinitionId": EXCHANGE_ADMINISTRATOR,
                                        "assignmentType": "Activated"})  # fmt: skip
    # A number of its own: the app's request index (in Table Storage) outlives a simulator reset.
    number = f"INC{uuid.uuid4().int % 10**7:07d}"
    record = {
        "number": number,
        "short_description": "Mail flow down",
        "priority": "1",
        "state": incident_state,
    }
    if major_incident:  # a declared major incident (ServiceNow Major Incident Management)
        record["major_incident_state"] = "accepted"
    incident = sims.seed("servicenow/incidents", record)
    return {"alex": alex, "sam": sam, "tag": tag, "incident": incident}


def servicenow_payload(world: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The canonical payload our ServiceNow outbound script sends (design.md §4) for the world's incident.

    ``changes``: ``priority="2"`` replaces a field, ``access__role="..."`` a nested one, ``incident=None``
    removes one."""
    incident, tag = world["incident"], world["tag"]
    payload: dict[str, Any] = {
        "event": "created", "sys_id": incident["sys_id"], "number": incident["number"], "priority": "1",
        "state": "2", "short_description": "Mail flow down",
        "opened_by": {"user_name": f"sam.{tag}", "email": f"sam.{tag}@contoso.test"},
        "assigned_to": {"user_name": f"alex.{tag}", "email": f"alex.{tag}@contoso.test"},
        "assignment_group": "Messaging",
        "incident": {"number": incident["number"], "state": "2", "major_incident_state": "accepted"},
        "access": {"type": "privileged", "role": "Exchange Administrator", "duration": "PT1H",
                   "justification": "restore mail flow"},
        "delivery_id": f"{incident['sys_id']}:{uuid.uuid4().hex}",
    }  # fmt: skip
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            payload[section][field] = value
        elif value is None:
            payload.pop(section)
        else:
            payload[section] = value
    return payload


def send_servicenow(sims: SimulatorProcess, app_url: str, secret: str, payload: dict[str, Any] | None = None,
                    **options: Any) -> dict[str, Any]:  # fmt: skip
    """Deliver through the simulator's sender, signed as the outbound script signs; the app's answer."""
    spec: dict[str, Any] = {"url": f"{app_url}/api/itsm/servicenow", "secret": secret, **options}
    if payload is not None:
        spec["payload"] = payload
    answer: dict[str, Any] = sims.control("POST", "servicenow/send", json=spec)
    return answer


def seed_approver_world(sims: SimulatorProcess, policy: Policy, world: dict[str, Any]) -> dict[str, Any]:
    """Approvers for ``world`` (after :func:`seed_responder_world`): Lee (on-call lead), Ivy (IAM duty
    manager), Bo (in both groups), Sec (security lead). Alex (the responder) and Sam (the opener) are on-call
    leads too, so that the rules, not group membership, must stop them from approving. Alex is also
    eligible for Global Administrator."""
    tag = world["tag"]
    people = {}
    for key, name in (("lee", "Lee"), ("ivy", "Ivy"), ("bo", "Bo"), ("sec", "Sec")):
        upn = f"{key}.{tag}@contoso.test"
        people[key] = sims.seed("graph/users", {"userPrincipalName": upn, "displayName": name})
    sam_id, alex_id = world["sam"]["id"], world["alex"]["id"]
    members = {
        "on_call_lead": [people["lee"]["id"], people["bo"]["id"], alex_id, sam_id],
        "iam_duty_manager": [people["ivy"]["id"], people["bo"]["id"]],
        "security_lead": [people["sec"]["id"]],
    }
    for key, ids in members.items():
        group = policy.approver_groups[key]
        sims.seed("graph/groups", {"id": group.group_id, "displayName": group.display_name, "members": ids})
    sims.seed("graph/eligibility", {"principalId": alex_id, "roleDefinitionId": GLOBAL_ADMINISTRATOR})
    return {**people, "alex": world["alex"], "sam": world["sam"]}


def click_card(sims: SimulatorProcess, app_url: str, card: dict[str, Any], user: dict[str, Any], verb: str,
               **options: Any) -> dict[str, Any]:  # fmt: skip
    """``user`` clicks ``verb`` on ``card`` ({conversationId, activityId}) in Teams: a signed invoke to the
    app's bot endpoint through the Teams simulator; the app's answer."""
    spec = {"botUrl": f"{app_url}/api/messages", "conversationId": card["conversationId"],
            "activityId": card["activityId"], "verb": verb,
            "user": {"aadObjectId": user["id"], "name": user.get("displayName", "")},
            "tenantId": SAMPLE_TENANT_ID, "botAppId": SAMPLE_BOT_APP_ID, **options}  # fmt: skip
    answer: dict[str, Any] = sims.click(**spec)
    return answer


def resolve_incident(
    sims: SimulatorProcess, app_url: str, secret: str, world: dict[str, Any]
) -> dict[str, Any]:
    """The service desk resolves the world's incident: ServiceNow sends the ``resolved`` event (design.md §4),
    which ends every running request of the ticket; the app's answer."""
    payload = servicenow_payload(world, event="resolved", state="6", incident__state="6")
    return send_servicenow(sims, app_url, secret, payload)


def ticket_notes(sims: SimulatorProcess, world: dict[str, Any]) -> list[str]:
    """The work notes on the world's ServiceNow incident, oldest first."""
    view = sims.control("GET", f"servicenow/incidents/{world['incident']['sys_id']}")
    return [
        str(note.get("value", note)) if isinstance(note, dict) else str(note) for note in view["work_notes"]
    ]


def conversation_texts(sims: SimulatorProcess, conversation_id: str) -> list[str]:
    """The texts of the messages the bot posted in one Teams conversation, oldest first (none yet: [])."""
    conversations = sims.control("GET", "teams/conversations")["conversations"]
    if conversation_id not in conversations:
        return []
    return [str(a.get("text") or "") for a in conversations[conversation_id]["activities"]]


def personal_chat_texts(sims: SimulatorProcess, user_id: str) -> list[str]:
    """The texts the bot posted in its 1:1 chat with ``user_id`` (an Entra object id), oldest first."""
    conversations = sims.control("GET", "teams/conversations")["conversations"]
    return [str(a.get("text") or "") for c in conversations.values() if c["members"] == [user_id]
            for a in c["activities"]]  # fmt: skip


def assignments_in_effect(sims: SimulatorProcess, principal_ids: list[str]) -> list[dict[str, Any]]:
    """Every role assignment still in effect (any path: seeded, PIM or direct) for one of ``principal_ids``,
    as the Graph simulator's stores hold it (``GET /_sim/graph/stores``)."""
    wanted = set(principal_ids)
    return [g for g in sims.pim_stores()["grants"] if g["principalId"] in wanted]


def unfinished_pim_requests(sims: SimulatorProcess, principal_ids: list[str]) -> list[dict[str, Any]]:
    """PIM schedule requests for ``principal_ids`` not final yet (PIM may still act on them)."""
    final = {"Provisioned", "Denied", "Failed", "Canceled", "Revoked"}
    wanted = set(principal_ids)
    return [r for r in sims.state()["graph"]["requests"]
            if r.get("principalId") in wanted and r.get("status") not in final]  # fmt: skip
