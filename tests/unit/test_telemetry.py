"""Which audit rows raise which alert signal, and what a telemetry event carries (shared.telemetry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from shared import telemetry
from shared.audit import STATE_KIND, VERIFICATION_FAILED_KIND, AuditRow, canonical_json
from shared.bot_auth import BotAuthCode

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "outcome", "detail", "signal"),
    [
        (STATE_KIND, "recorded", {"state": "escalated"}, "escalation"),
        (STATE_KIND, "recorded", {"state": "effective"}, None),
        ("sweep.removed", "removed", {"verdict": "done"}, "expired_grant_assigned"),
        ("sweep.removed", "removed", {"verdict": "absent"}, None),  # already gone: nothing was left behind
        ("sweep.removal_failed", "failed", {"verdict": "unavailable"}, "expired_grant_assigned"),
        ("sweep.removal_deferred", "deferred", {"verdict": "too_soon"}, "expired_grant_assigned"),
        ("sweep.drift", "reported", {}, "unknown_assignment"),
        ("sweep.drift", "notify_failed", {}, "unknown_assignment"),  # Teams failed: the alert is the channel
        ("breaker.opened", "recorded", {}, "breaker_open"),
        (VERIFICATION_FAILED_KIND, "failed", {}, "chain_verification_failed"),
        ("intake.signature_rejected", "rejected", {"code": "bad_signature"}, "signature_rejected"),
        ("intake.payload_rejected", "rejected", {}, None),
        ("bot.bad_signature", "rejected", {}, "signature_rejected"),
        ("bot.expired", "rejected", {}, "signature_rejected"),
        ("bot.not_in_group", "rejected", {}, None),  # a person clicking, not a forgery
        ("bot.stale_card", "rejected", {}, None),
        ("sweep.run", "completed", {}, "sweep_run"),
        ("sweep.skipped", "skipped", {}, None),
        ("proof.poll", "failed", {}, None),
    ],
)
def test_signal_of(kind: str, outcome: str, detail: dict[str, Any], signal: str | None) -> None:
    assert telemetry.signal_of(kind, outcome, detail) == signal


def test_every_signal_is_raised_by_some_row_and_every_bot_token_refusal_is_a_signature_signal() -> None:
    raised = {
        telemetry.signal_of(kind, outcome, detail)
        for kind, outcome, detail in [
            (STATE_KIND, "recorded", {"state": "escalated"}),
            ("sweep.removed", "removed", {"verdict": "done"}),
            ("sweep.drift", "reported", {}),
            ("breaker.opened", "recorded", {}),
            (VERIFICATION_FAILED_KIND, "failed", {}),
            ("intake.signature_rejected", "rejected", {}),
            ("sweep.run", "completed", {}),
        ]
    }
    assert raised == set(telemetry.SIGNALS)
    for code in get_args(BotAuthCode):
        assert telemetry.signal_of(f"bot.{code}", "rejected", {}) == "signature_rejected", code


def row(seq: int, kind: str, detail: dict[str, Any], **fields: Any) -> AuditRow:
    base = {
        "Chain": "servicenow-INC0012345-1", "Seq": seq, "Time": (T0 + timedelta(seconds=seq)).isoformat(),
        "Kind": kind, "Outcome": "passed", "ActorId": "u1", "ActorUpn": "", "Role": "Exchange Administrator",
        "Detail": canonical_json(detail), "GraphMethod": "", "GraphPath": "", "GraphStatus": 0,
        "GraphRequestId": "", "GraphClientRequestId": "", "WorkflowVersion": "access_request/3",
        "PolicyVersion": "sha256:x", **fields,
    }  # fmt: skip
    return AuditRow("servicenow-INC0012345-1", seq, base, "h")


def test_an_event_keeps_scalars_and_short_texts_and_drops_nested_evidence() -> None:
    detail = {"secondsAfterSubmission": 12.5, "late": False, "results": [{"store": "x"}],
              "message": "m" * 500, "errorCode": "RoleAssignmentExists"}  # fmt: skip
    graph = {"GraphStatus": 400, "GraphRequestId": "r-1", "GraphClientRequestId": "c-1"}
    event = telemetry.step_fields(row(5, "activation.request", detail, **graph), T0, {"tier": "standard"})
    assert event["detail"] == {"secondsAfterSubmission": 12.5, "late": False, "message": "m" * 200,
                               "errorCode": "RoleAssignmentExists"}  # fmt: skip
    graph_fields = (event["code"], event["graphStatus"], event["graphRequestId"])
    assert graph_fields == ("RoleAssignmentExists", 400, "r-1")
    assert (event["elapsedSeconds"], event["tier"], event["actor"]) == (5.0, "standard", "u1")
    assert "state" not in event and "signal" not in event and "ticket" not in event


def test_a_telemetry_failure_never_reaches_the_ledger(caplog: pytest.LogCaptureFixture) -> None:
    broken = AuditRow("c", 0, {"Kind": "x"}, "h")  # no Time, no Detail
    telemetry.observe(broken, None, {})
    assert "no telemetry for row 0 of c" in caplog.text


def test_parse_reads_back_what_observe_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="pim.telemetry")
    telemetry.observe(row(0, STATE_KIND, {"state": "escalated"}), T0, {"ticket": "INC0012345"})
    [event] = [telemetry.parse(r.getMessage()) for r in caplog.records if r.name == "pim.telemetry"]
    assert event is not None
    assert (event["state"], event["signal"], event["ticket"]) == ("escalated", "escalation", "INC0012345")
    assert telemetry.parse("something else") is None
