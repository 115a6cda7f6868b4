"""Adaptive Cards (1.5, Universal Actions) for the approval rounds: what an approver sees, and the same card
updated in place once decided, expired or answered (design.md "Approval", facts.md "Teams approvals").

Buttons are ``Action.Execute`` with the verbs ``approve``, ``deny`` and ``confirm``; their data names the
request, round, stage and the round's nonce. That data only says *which* card was clicked: who clicked
comes from the verified token, never from here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from shared.approvals import ApprovalRound, Stage, Vote

CARD_VERSION = "1.5"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"

CardStatus = Literal["open", "approved", "denied", "expired", "cancelled", "closed"]

_TITLES = {
    "confirm": "Confirm your emergency access request",
    "approve": "Emergency access: approval needed",
    "review": "Emergency access approved by rule: please review",
    "escalation": "Emergency access NOT effective: escalated to IAM",
    "break_glass": "Break-glass access: two-person approval needed",
}
_BUTTONS: dict[str, tuple[tuple[str, str, str], ...]] = {
    # (verb, title, style)
    "confirm": (("confirm", "Yes, this is my request", "positive"), ("deny", "No, not mine", "destructive")),
    "approve": (("approve", "Approve", "positive"), ("deny", "Deny", "destructive")),
    "review": (("approve", "Looks right", "positive"), ("deny", "Raise a concern", "destructive")),
    "escalation": (("approve", "Start break-glass", "destructive"), ("deny", "Not needed", "default")),
    "break_glass": (("approve", "Approve break-glass", "positive"), ("deny", "Deny", "destructive")),
}
_ESCALATION_HINT = (
    "PIM shows the activation, but the probes do not prove that it works (the diagnostics are in the IAM "
    "channel and the ticket). Break-glass assigns the role directly through unified RBAC, independent of "
    "PIM, after a two-person approval; it is removed like any other grant."
)
_VERB_PAST = {"approve": "Approved", "deny": "Denied", "confirm": "Confirmed"}


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def decision_line(vote: Vote, stage: Stage | None) -> str:
    label = _VERB_PAST[vote.verb]
    if vote.stage == "responder" and vote.verb == "deny":
        label = "Disowned"
    who = vote.approver_upn or vote.approver_name or vote.approver_id
    role = f" ({stage.display_name})" if stage is not None and not stage.is_responder else ""
    return f"{label} by {who}{role} at {_utc(vote.at)}"


def round_card(
    round_: ApprovalRound,
    stage: Stage,
    counted: list[Vote],
    status: CardStatus = "open",
    note: str = "",
) -> dict[str, Any]:
    """The card for ``stage`` of ``round_``: the request's facts, the decisions so far, and, while the round
    is open and this stage has not answered, the buttons."""
    summary = round_.summary
    checks = ", ".join(
        f"{c['check']} {'passed' if c['passed'] else 'FAILED'}" for c in summary.get("checks", [])
    )
    facts = [
        ("Ticket", f"{summary.get('ticket', '')} ({summary.get('system', '')})"),
        ("Incident", summary.get("incident", "") or "none"),
        ("Responder", summary.get("responder", "")),
        ("Opened by", summary.get("opener", "")),
        ("Role", f"{summary.get('role', '')} ({summary.get('tier', '')} tier)"),
        ("Duration", f"{summary.get('durationMinutes', 0)} minutes"),
        ("Justification", summary.get("justification", "")),
        ("Checks", checks or "none"),
        ("Due", _utc(round_.due_at)),
    ]
    body: list[dict[str, Any]] = [
        _text(_TITLES[round_.purpose], size="Medium", weight="Bolder"),
        _text(summary.get("summary", "")),
        {"type": "FactSet", "facts": [{"title": t, "value": str(v)} for t, v in facts]},
    ]
    if round_.purpose == "escalation":
        body.append(_text(_ESCALATION_HINT, isSubtle=True))
    if round_.purpose in ("approve", "break_glass") and len(round_.stages) > 1:
        groups = " and ".join(s.display_name for s in round_.stages)
        body.append(_text(f"Two-person rule: one approval from each of {groups}, by two different people."))
    for vote in counted:
        body.append(_text(decision_line(vote, round_.stage(vote.stage)), weight="Bolder",
                          color="Good" if vote.verb != "deny" else "Attention"))  # fmt: skip
    answered = {v.stage for v in counted}
    waiting = [s.display_name for s in round_.stages if s.name not in answered]
    if status == "open" and waiting:
        body.append(_text(f"Waiting for: {', '.join(waiting)}", isSubtle=True))
    elif status == "expired":
        body.append(_text(f"Expired at {_utc(round_.due_at)}: no decision by the due time. Access expired.",
                          color="Warning", weight="Bolder"))  # fmt: skip
    elif status == "approved" and round_.purpose == "approve":
        body.append(_text("Approved. Activation follows.", color="Good", weight="Bolder"))
    elif status == "approved" and round_.purpose == "escalation":
        body.append(_text("Break-glass requested: the two-person approval follows.", weight="Bolder"))
    elif status == "approved" and round_.purpose == "break_glass":
        body.append(_text("Approved. The break-glass assignment follows.", color="Good", weight="Bolder"))
    elif status == "closed" and round_.purpose == "escalation":
        body.append(_text("Closed: the access ended or was proven.", isSubtle=True))
    elif status == "denied":
        body.append(_text("Denied. No access will be granted.", color="Attention", weight="Bolder"))
    elif status == "cancelled":
        body.append(_text("Cancelled: the incident was resolved before a decision. No access is granted.",
                          color="Warning", weight="Bolder"))  # fmt: skip
    if note:
        body.append(_text(note, isSubtle=True))
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "body": body,
    }
    if status == "open" and stage.name not in answered:
        data = {
            "requestId": round_.request_id,
            "round": round_.round,
            "nonce": round_.nonce,
            "stage": stage.name,
        }
        card["actions"] = [
            {"type": "Action.Execute", "id": f"{verb}-{round_.round}-{stage.name}", "verb": verb,
             "title": title, "style": style, "data": data}
            for verb, title, style in _BUTTONS[round_.purpose]
        ]  # fmt: skip
    return card


def card_summary(round_: ApprovalRound) -> str:
    """The notification text that comes with a card (shown in the activity feed)."""
    summary = round_.summary
    what = f"{summary.get('role', '')} for {summary.get('responder', '')} ({summary.get('ticket', '')})"
    return f"{_TITLES[round_.purpose]}: {what}"


def reminder_text(round_: ApprovalRound, stage: Stage) -> str:
    summary = round_.summary
    what = f"{summary.get('role', '')} ({summary.get('ticket', '')})"
    return (f"Reminder: {stage.display_name} has not answered the emergency access request for {what}. "
            f"It expires at {_utc(round_.due_at)}.")  # fmt: skip
