"""A small Functions app that exercises every primitive the devhost must run (conformance suite).

It is loaded with ``python -m local.devhost --app tests.devhost.sample_app:app``. Side effects that
tests observe (activity attempts, timer-trigger runs) go to files under ``SAMPLE_APP_STATE_DIR`` so
that they survive a devhost killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


def _state_dir() -> Path:
    path = Path(os.environ["SAMPLE_APP_STATE_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def _count(name: str) -> int:
    """Increment and return a counter kept in a file (survives a killed devhost)."""
    path = _state_dir() / f"{name}.count"
    value = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(value))
    return value


# ------------------------------------------------------------------ HTTP


@app.route(route="start/{orchestrator}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    instance_id = await client.start_new(
        req.route_params["orchestrator"], req.params.get("instanceId"), json.loads(body) if body else None
    )
    return func.HttpResponse(json.dumps({"id": instance_id}), status_code=202, mimetype="application/json")


@app.route(route="instances/{instanceId}/events/{eventName}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def raise_event(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    await client.raise_event(
        req.route_params["instanceId"], req.route_params["eventName"], json.loads(body) if body else None
    )
    return func.HttpResponse(status_code=202)


@app.route(route="instances/{instanceId}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    found = await client.get_status(req.route_params["instanceId"])
    if found.runtime_status is None:
        return func.HttpResponse(status_code=404)
    return func.HttpResponse(
        json.dumps(
            {
                "runtimeStatus": found.runtime_status.value,
                "output": found.output,
                "customStatus": found.custom_status,
            }
        ),
        mimetype="application/json",
    )


@app.route(route="instances/{instanceId}/terminate", methods=["POST"])
@app.durable_client_input(client_name="client")
async def terminate(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.terminate(req.route_params["instanceId"], "stopped by test")
    return func.HttpResponse(status_code=202)


@app.route(route="instances", methods=["GET"])
@app.durable_client_input(client_name="client")
async def list_instances(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    found = await client.get_status_by(runtime_status=[df.OrchestrationRuntimeStatus.Completed])
    return func.HttpResponse(json.dumps(sorted(s.instance_id for s in found)), mimetype="application/json")


@app.route(route="instances/{instanceId}", methods=["DELETE"])
@app.durable_client_input(client_name="client")
async def purge(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    result = await client.purge_instance_history(req.route_params["instanceId"])
    return func.HttpResponse(json.dumps({"deleted": result.instances_deleted}), mimetype="application/json")


@app.route(route="instances", methods=["DELETE"])
@app.durable_client_input(client_name="client")
async def purge_ended(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    result = await client.purge_instance_history_by(
        created_time_from=datetime(2000, 1, 1, tzinfo=UTC),
        runtime_status=[df.OrchestrationRuntimeStatus.Completed, df.OrchestrationRuntimeStatus.Failed],
    )
    return func.HttpResponse(json.dumps({"deleted": result.instances_deleted}), mimetype="application/json")


@app.route(route="items/{itemId:int}/{label?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps({"route": dict(req.route_params), "query": dict(req.params)}), mimetype="application/json"
    )


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> str:
    return "admin ok"


@app.route(route="explode", methods=["GET"])
def explode(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the function itself failed")


# ------------------------------------------------------------------ timers


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer")
def every_five_minutes(timer: func.TimerRequest) -> None:
    _count("every_five_minutes")


@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=True)
def on_startup(timer: func.TimerRequest) -> None:
    _count("on_startup")


@app.timer_trigger(schedule="%SAMPLE_TIMER_SCHEDULE%", arg_name="timer")
def from_setting(timer: func.TimerRequest) -> None:
    """Its schedule is an app setting (yearly: it only runs when asked through the admin endpoint)."""
    _count("from_setting")


@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=True)
@app.durable_client_input(client_name="client")
async def start_from_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """A timer trigger with the Durable client binding (the design's sweep is one)."""
    await client.start_new("sequence", f"from-timer-{uuid.uuid4().hex}", 3)


# ------------------------------------------------------------------ activities


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@app.activity_trigger(input_name="value")
async def async_echo(value: Any) -> Any:
    await asyncio.sleep(0.01)
    return {"echo": value}


@app.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    """Fails on its first attempt for a key, succeeds on the second."""
    attempt = _count(f"flaky-{key}")
    if attempt == 1:
        raise RuntimeError(f"transient failure on attempt {attempt}")
    return f"succeeded on attempt {attempt}"


@app.activity_trigger(input_name="key")
def always_fails(key: str) -> str:
    attempt = _count(f"always-{key}")
    raise ValueError(f"permanent failure on attempt {attempt}")


@app.activity_trigger(input_name="key")
def slow_step(key: str) -> str:
    _count(f"slow-{key}")
    time.sleep(1.5)
    return f"slow step for {key}"


# ------------------------------------------------------------------ orchestrators


@app.orchestration_trigger(context_name="context")
def sequence(context: df.DurableOrchestrationContext):
    doubled = yield context.call_activity("double", context.get_input())
    echoed = yield context.call_activity("async_echo", doubled)
    return echoed


@app.orchestration_trigger(context_name="context")
def timer_then_event(context: df.DurableOrchestrationContext):
    seconds = context.get_input()
    value = yield context.call_activity("double", 21)
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))
    context.set_custom_status("waiting for Go")
    go = yield context.wait_for_external_event("Go")
    return {"activity": value, "event": go}


@app.orchestration_trigger(context_name="context")
def race_cancelled(context: df.DurableOrchestrationContext):
    timer = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    event = context.wait_for_external_event("Approve")
    winner = yield context.task_any([event, timer])
    if winner == event:
        timer.cancel()
        return {"winner": "event", "value": event.result}
    return {"winner": "timer"}


@app.orchestration_trigger(context_name="context")
def race_uncancelled(context: df.DurableOrchestrationContext):
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=context.get_input()))
    event = context.wait_for_external_event("Approve")
    winner = yield context.task_any([event, timer])
    return {"winner": "event" if winner == event else "timer"}


@app.orchestration_trigger(context_name="context")
def race_timeout(context: df.DurableOrchestrationContext):
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=context.get_input()))
    event = context.wait_for_external_event("Approve")
    winner = yield context.task_any([event, timer])
    return {"winner": "event" if winner == event else "timer"}


@app.orchestration_trigger(context_name="context")
def early_event(context: df.DurableOrchestrationContext):
    yield context.call_activity("slow_step", context.instance_id)
    value = yield context.wait_for_external_event("Early")
    return {"received": value}


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):
    result = yield context.call_activity_with_retry(
        "flaky",
        df.RetryOptions(first_retry_interval_in_milliseconds=200, max_number_of_attempts=3),
        context.get_input(),
    )
    return result


@app.orchestration_trigger(context_name="context")
def retrying_in_parallel(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=200, max_number_of_attempts=3)
    key = context.get_input()
    results = yield context.task_all(
        [
            context.call_activity_with_retry("flaky", options, f"{key}-a"),
            context.call_activity("double", 5),
            context.call_activity_with_retry("flaky", options, f"{key}-b"),
        ]
    )
    return results


@app.orchestration_trigger(context_name="context")
def retry_exhausted(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity_with_retry(
            "always_fails",
            df.RetryOptions(first_retry_interval_in_milliseconds=100, max_number_of_attempts=2),
            context.get_input(),
        )
    except Exception as exc:
        return {"caught": str(exc)}
    return {"caught": None}


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    results = yield context.task_all([context.call_activity("double", n) for n in range(5)])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    child = yield context.call_sub_orchestrator("sequence", context.get_input())
    failed = None
    try:
        yield context.call_sub_orchestrator("failing", None)
    except Exception as exc:
        failed = str(exc)
    return {"child": child, "childFailure": failed}


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext):
    yield context.call_activity("double", 1)
    raise ValueError("the orchestrator raised on purpose")


@app.orchestration_trigger(context_name="context")
def failing_activity(context: df.DurableOrchestrationContext):
    yield context.call_activity("always_fails", context.instance_id)
    return "unreachable"


@app.activity_trigger(input_name="size")
def oversized(size: int) -> str:
    return "x" * size


@app.orchestration_trigger(context_name="context")
def too_large(context: df.DurableOrchestrationContext):
    yield context.call_activity("oversized", context.get_input())
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def slow_child(context: df.DurableOrchestrationContext):
    result = yield context.call_activity("slow_step", context.instance_id)
    return {"child": result}


@app.orchestration_trigger(context_name="context")
def parent_of_slow(context: df.DurableOrchestrationContext):
    child = yield context.call_sub_orchestrator("slow_child", None, f"{context.instance_id}-child")
    return child


@app.orchestration_trigger(context_name="context")
def retrying_slowly(context: df.DurableOrchestrationContext):
    result = yield context.call_activity_with_retry(
        "flaky",
        df.RetryOptions(first_retry_interval_in_milliseconds=2500, max_number_of_attempts=2),
        context.get_input(),
    )
    return result


@app.orchestration_trigger(context_name="context")
def count_to_three(context: df.DurableOrchestrationContext):
    """continue_as_new until the input reaches 3 (each execution starts a fresh history)."""
    value = yield context.call_activity("double", context.get_input())
    if value < 6:
        context.continue_as_new(value // 2 + 1)
        return None
    return value // 2


@app.orchestration_trigger(context_name="context")
def crash_resume(context: df.DurableOrchestrationContext):
    """Long enough to be killed in the middle: a slow activity, a timer, another slow activity."""
    first = yield context.call_activity("slow_step", f"{context.instance_id}-1")
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=3))
    second = yield context.call_activity("slow_step", f"{context.instance_id}-2")
    approval = yield context.wait_for_external_event("Resume")
    return {"first": first, "second": second, "approval": approval}
