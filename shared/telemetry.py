"""Structured telemetry: one log line per audit row, for the Azure Monitor workbook and alert rules.

Every step of the app is an audit row (a request's steps, the sweep's runs and removals, the security chain's
rejections and breaker openings), and every row goes through the audit ledger: the app's ledger
(shared.services) has :func:`observe` as its row observer, the one place that sees them all, once per row
written (a retried write that finds its row stored emits nothing). Coroutines write with
``AuditLedger.append_async``, which tells the observer on the invocation's task (see its docstring).

The line is ``pim.step {json}`` at INFO on the ``pim.telemetry`` logger. The Functions host forwards worker
logs to Application Insights (the workspace's ``AppTraces``, the text in ``Message``); a JSON text parses
the same way there and in the local devhost's logs, whatever the logging pipeline does with ``extra``
fields. The workbook and
alert queries (``infra/monitoring/``, loaded by ``infra/modules/workbook.bicep`` and ``alerts.bicep``) read
it from the workspace's ``AppTraces`` table with ``parse_json(substring(Message, 9))``.

Fields (camelCase, stable: the queries depend on them; tests/infra checks every field they read exists):

- ``chain`` (the request id for a request's steps, ``security-YYYY-MM-DD`` / ``sweep-YYYY-MM-DD`` otherwise),
  ``seq``, ``step`` (the row's kind), ``outcome``, ``time`` (the step's time, UTC);
- ``role``, ``tier``, ``ticket``, ``system`` when the step concerns a request (the tier from the policy);
- ``actor``: the UPN, or the object id when there is none;
- ``elapsedSeconds``: since the first row of the chain (a request's durations: time to approval, to
  effective access);
- ``state``: the request's state on a state row; ``code``: an error or refusal code from the detail;
- ``graphStatus``, ``graphRequestId``, ``graphClientRequestId`` when the step made a Graph call;
- ``signal``: set on the rows an alert rule watches (:data:`SIGNALS`);
- ``detail``: the detail's top-level scalar values (numbers, booleans, short strings), e.g.
  ``secondsAfterSubmission``; nested evidence stays in the ledger.
- ``workflowVersion``, ``policyVersion``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from shared.audit import STATE_KIND, VERIFICATION_FAILED_KIND, AuditRow

EVENT: Final = "pim.step"
log = logging.getLogger("pim.telemetry")

# What each alert rule watches (infra/modules/alerts.bicep; docs/operations.md has a runbook for each).
SIGNALS: Final[Mapping[str, str]] = {
    "escalation": "a request escalated to IAM (access not proven in time, or activation failed)",
    "expired_grant_assigned": "a grant past its expiry, or whose removal failed, was still assigned",
    "unknown_assignment": "a managed role is held through an assignment the grant ledger does not know",
    "breaker_open": "a circuit breaker opened: Microsoft Graph is failing",
    "chain_verification_failed": "an audit chain did not verify",
    "signature_rejected": "an ITSM webhook or a Teams callback was refused for its signature or token",
    "sweep_run": "the sweep ran (the alert fires when this signal is absent)",
}

# Bot Framework token refusals (shared.bot_auth.BotAuthCode) that say "not signed by the Bot Framework for
# this bot"; the rest (stale card, not in group...) are people clicking, not forgeries.
_TOKEN_REFUSALS: Final = frozenset(
    {"missing_token", "malformed_token", "bad_algorithm", "unknown_key", "bad_signature", "wrong_audience",
     "wrong_issuer", "expired", "not_yet_valid", "serviceurl_mismatch", "channel_not_endorsed"}
)  # fmt: skip
_MAX_TEXT: Final = 200


def signal_of(kind: str, outcome: str, detail: Mapping[str, Any]) -> str | None:
    """The alert signal a row raises, if any."""
    if kind == STATE_KIND and detail.get("state") == "escalated":
        return "escalation"
    if kind == "sweep.removed" and detail.get("verdict") == "done":
        return "expired_grant_assigned"  # it was still assigned: the sweep, not the request, removed it
    if kind in ("sweep.removal_failed", "sweep.removal_deferred"):
        return "expired_grant_assigned"
    if kind == "sweep.drift" and outcome in ("reported", "notify_failed"):
        return "unknown_assignment"  # notify_failed: IAM got no Teams message, so the alert matters more
    if kind == "breaker.opened":
        return "breaker_open"
    if kind == VERIFICATION_FAILED_KIND:
        return "chain_verification_failed"
    if kind == "intake.signature_rejected":
        return "signature_rejected"
    if kind.startswith("bot.") and kind.removeprefix("bot.") in _TOKEN_REFUSALS:
        return "signature_rejected"
    if kind == "sweep.run":
        return "sweep_run"
    return None


def step_fields(
    row: AuditRow, started_at: datetime | None, labels: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The telemetry event of one stored audit row."""
    fields = row.fields
    detail: dict[str, Any] = json.loads(str(fields["Detail"]))
    time = datetime.fromisoformat(str(fields["Time"]))
    kind, outcome = str(fields["Kind"]), str(fields["Outcome"])
    body: dict[str, Any] = {
        "chain": row.chain,
        "seq": row.seq,
        "step": kind,
        "outcome": outcome,
        "time": time.isoformat(),
        "role": fields.get("Role") or None,
        "actor": fields.get("ActorUpn") or fields.get("ActorId") or None,
        "workflowVersion": fields.get("WorkflowVersion") or None,
        "policyVersion": fields.get("PolicyVersion") or None,
    }
    for name in ("ticket", "system", "tier"):
        body[name] = (labels or {}).get(name) or None
    if started_at is not None:
        body["elapsedSeconds"] = round((time - started_at).total_seconds(), 3)
    if kind == STATE_KIND:
        body["state"] = detail.get("state")
    code = detail.get("code") or detail.get("errorCode")
    if isinstance(code, str) and code:
        body["code"] = code
    if fields.get("GraphStatus"):
        body["graphStatus"] = fields["GraphStatus"]
        body["graphRequestId"] = fields.get("GraphRequestId") or None
        body["graphClientRequestId"] = fields.get("GraphClientRequestId") or None
    body["signal"] = signal_of(kind, outcome, detail)
    body["detail"] = {
        key: value[:_MAX_TEXT] if isinstance(value, str) else value
        for key, value in detail.items()
        if isinstance(value, str | int | float | bool)
    }
    return {key: value for key, value in body.items() if value is not None}


def observe(row: AuditRow, started_at: datetime | None, labels: Mapping[str, Any]) -> None:
    """The app ledger's row observer (shared.audit.RowObserver)."""
    # Telemetry never fails a step: the row is stored already, and the row is the record.
    try:
        event = step_fields(row, started_at, labels)
    except Exception:
        log.exception("no telemetry for row %s of %s", row.seq, row.chain)
        return
    log.info("%s %s", EVENT, json.dumps(event, sort_keys=True, default=str))


def parse(message: str) -> dict[str, Any] | None:
    """The event in a log message (what the workbook's ``parse_json(substring(Message, 9))`` does)."""
    if not message.startswith(EVENT + " "):
        return None
    value = json.loads(message[len(EVENT) + 1 :])
    return value if isinstance(value, dict) else None
