"""The expiry sweep's timer trigger (design.md "Revocation"): every ``SWEEP_SCHEDULE`` (default every 5
minutes) reconcile the grant ledger against Graph with the real adapters (shared.sweep).

The schedule is an app setting the Functions host resolves itself (``%SWEEP_SCHEDULE%``), so it can change
without a deployment. ``use_monitor`` keeps the host's schedule status in storage, so a run missed while the
app was down is made up when it starts (``past_due``). Run it on demand like any timer function:
``POST /admin/functions/sweep`` with the master key and ``{"input": ""}`` (docs/sweep.md).
"""

from __future__ import annotations

import functools
import json
import logging
from datetime import UTC, datetime

import azure.durable_functions as df
import azure.functions as func

from shared.configuration import load_configuration
from shared.services import audit_ledger, bot_connector, grant_ledger, pim, tables
from shared.sweep import Sweep, SweepState, SweepSummary

SWEEP_FUNCTION = "sweep"

bp = df.Blueprint()
log = logging.getLogger(__name__)


@functools.cache
def _state() -> SweepState:
    return SweepState(tables())


def build_sweep() -> Sweep:
    """The sweep with the process's adapters: the grant ledger, PIM behind the circuit breaker, the bot's
    Bot Connector client, the audit ledger and the sweep's own table."""
    policy = load_configuration().policy
    return Sweep(
        ledger=grant_ledger(),
        graph=pim(),
        notifier=bot_connector(),
        audit=audit_ledger(),
        state=_state(),
        roles={role.template_id: role.name for role in policy.roles},
        iam_conversation_id=policy.escalation.iam_conversation_id,
        clock=lambda: datetime.now(UTC),
    )


async def run_sweep() -> SweepSummary:
    return await build_sweep().run()


@bp.function_name(SWEEP_FUNCTION)
@bp.timer_trigger(schedule="%SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def sweep(timer: func.TimerRequest) -> None:
    summary = await run_sweep()
    log.info(
        "sweep %s",
        summary.outcome,
        extra={"runId": summary.run_id, "pastDue": timer.past_due, "counts": json.dumps(summary.counts())},
    )
