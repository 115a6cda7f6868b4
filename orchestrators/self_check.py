"""Durable self-check: proves that this deployment's task hub runs activities, timers and events.

An operator runs it after a deployment (or ``make demo`` runs it locally): ``POST /api/selfcheck``
starts an orchestration that calls an activity (app and policy versions), waits on a durable timer,
then waits for an acknowledgement (``POST /api/selfcheck/{id}/acknowledge``) raced against a
deadline, the same human-interaction pattern the approval flow uses. It touches no external system.
The responses carry our own URLs, never Durable's management URLs (they embed the system key).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from activities.self_check import ENVIRONMENT_ACTIVITY

SELF_CHECK_ORCHESTRATOR = "durable_self_check"
ACKNOWLEDGED_EVENT = "SelfCheckAcknowledged"
INSTANCE_PREFIX = "selfcheck-"
MAX_TIMER_SECONDS = 300
MAX_ACKNOWLEDGE_SECONDS = 3600

bp = df.Blueprint()


class SelfCheckRequestError(ValueError):
    pass


def parse_request(body: bytes) -> dict[str, int]:
    """Validate the optional JSON body: {"timerSeconds": 1..300, "acknowledgeWithinSeconds": 1..3600}."""
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError as exc:
        raise SelfCheckRequestError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SelfCheckRequestError("body must be a JSON object")
    unknown = set(data) - {"timerSeconds", "acknowledgeWithinSeconds"}
    if unknown:
        raise SelfCheckRequestError(f"unknown field(s): {', '.join(sorted(unknown))}")
    timer = data.get("timerSeconds", 5)
    acknowledge = data.get("acknowledgeWithinSeconds", 300)
    for name, value, limit in (
        ("timerSeconds", timer, MAX_TIMER_SECONDS),
        ("acknowledgeWithinSeconds", acknowledge, MAX_ACKNOWLEDGE_SECONDS),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
            raise SelfCheckRequestError(f"{name} must be an integer from 1 to {limit}, got {value!r}")
    return {"timerSeconds": timer, "acknowledgeWithinSeconds": acknowledge}


def _json(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _urls(req: func.HttpRequest, instance_id: str) -> dict[str, str]:
    base = req.url.split("/api/", 1)[0]
    return {
        "statusUrl": f"{base}/api/selfcheck/{instance_id}",
        "acknowledgeUrl": f"{base}/api/selfcheck/{instance_id}/acknowledge",
    }


@bp.route(route="selfcheck", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def start_self_check(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        options = parse_request(req.get_body())
    except SelfCheckRequestError as exc:
        return _json(400, {"error": str(exc)})
    instance_id = await client.start_new(
        SELF_CHECK_ORCHESTRATOR, f"{INSTANCE_PREFIX}{uuid.uuid4().hex}", options
    )
    return _json(202, {"instanceId": instance_id, **_urls(req, instance_id)})


@bp.route(route="selfcheck/{instanceId}", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def get_self_check(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = req.route_params["instanceId"]
    if not instance_id.startswith(INSTANCE_PREFIX):
        return _json(404, {"error": f"no self-check {instance_id}"})
    status = await client.get_status(instance_id)
    if status.runtime_status is None:
        return _json(404, {"error": f"no self-check {instance_id}"})
    return _json(
        200,
        {
            "instanceId": instance_id,
            "runtimeStatus": status.runtime_status.value,
            "customStatus": status.custom_status,
            "output": status.output,
            "createdTime": status.created_time.isoformat() if status.created_time else None,
            "lastUpdatedTime": status.last_updated_time.isoformat() if status.last_updated_time else None,
        },
    )


@bp.route(route="selfcheck/{instanceId}/acknowledge", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def acknowledge_self_check(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    instance_id = req.route_params["instanceId"]
    status = await client.get_status(instance_id) if instance_id.startswith(INSTANCE_PREFIX) else None
    if status is None or status.runtime_status is None:
        return _json(404, {"error": f"no self-check {instance_id}"})
    if status.runtime_status not in (
        df.OrchestrationRuntimeStatus.Running,
        df.OrchestrationRuntimeStatus.Pending,
    ):
        return _json(409, {"error": f"self-check {instance_id} is {status.runtime_status.value}"})
    await client.raise_event(instance_id, ACKNOWLEDGED_EVENT, {"by": "operator"})
    return _json(202, {"instanceId": instance_id, **_urls(req, instance_id)})


@bp.orchestration_trigger(context_name="context", orchestration=SELF_CHECK_ORCHESTRATOR)
def durable_self_check(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    options = context.get_input() or {}
    steps: list[dict[str, Any]] = []

    def record(step: str, **detail: Any) -> None:
        steps.append({"step": step, "at": context.current_utc_datetime.isoformat(), **detail})
        context.set_custom_status({"stage": step, "steps": len(steps)})

    environment = yield context.call_activity(ENVIRONMENT_ACTIVITY, {"instanceId": context.instance_id})
    record("activity", environment=environment)

    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=options["timerSeconds"]))
    record("timer", waitedSeconds=options["timerSeconds"])

    record("awaiting_acknowledgement")
    deadline = context.create_timer(
        context.current_utc_datetime + timedelta(seconds=options["acknowledgeWithinSeconds"])
    )
    acknowledged = context.wait_for_external_event(ACKNOWLEDGED_EVENT)
    winner = yield context.task_any([acknowledged, deadline])
    if winner == acknowledged:
        deadline.cancel()  # an uncancelled timer keeps the instance Running until it fires
        record("acknowledged", by=acknowledged.result)
        outcome = "passed"
    else:
        record("acknowledgement_deadline_passed")
        outcome = "no acknowledgement before the deadline"
    return {"outcome": outcome, "steps": steps}
