"""Devhost conformance suite: drives tests/devhost/sample_app.py through a real devhost over HTTP.

Each test checks one primitive from the outside (HTTP answers, instance status) and, for Durable
behaviour, from the persisted history rows in Azurite (``{hub}History``, first HistoryLength rows).
Most tests share one module-scoped devhost; kill/restart and shutdown tests start their own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from local.azurite import Azurite

if TYPE_CHECKING:  # conftest modules are loaded by pytest, never imported at run time
    from tests.devhost.conftest import Devhost, DevhostFactory

pytestmark = pytest.mark.stack

# Durable HistoryEventType values as stored in the EventType column, spelled out rather than imported
# from local.devhost.history so that a wrong value in the engine fails these tests.
EXECUTION_STARTED = 0
EXECUTION_COMPLETED = 1
EXECUTION_TERMINATED = 3
TASK_SCHEDULED = 4
TASK_COMPLETED = 5
TASK_FAILED = 6
SUB_ORCHESTRATION_CREATED = 7
SUB_ORCHESTRATION_COMPLETED = 8
SUB_ORCHESTRATION_FAILED = 9
TIMER_CREATED = 10
TIMER_FIRED = 11
EVENT_RAISED = 15


def _key() -> str:
    return uuid.uuid4().hex[:12]


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _index(types: list[int], event_type: int) -> int:
    assert event_type in types, f"no event of type {event_type} in history {types}"
    return types.index(event_type)


# ====================================================================================== HTTP and auth


def test_unknown_route_is_404(devhost: Devhost) -> None:
    for path in ("/api/no-such-function", "/api/items", "/api", "/nothing/here"):
        assert devhost.get(path).status_code == 404, path
        assert devhost.get(path, key=None).status_code == 404, f"{path} without a key"


def test_missing_function_key_is_401(devhost: Devhost) -> None:
    response = devhost.get("/api/instances", key=None)
    assert response.status_code == 401
    assert "error" in response.json()
    invoked = len(devhost.events("function.invoked", function="start"))
    started = devhost.post("/api/start/sequence", key=None, json=1)
    assert started.status_code == 401
    assert len(devhost.events("function.invoked", function="start")) == invoked, "the function ran"
    assert devhost.events("http.unauthorized", function="start")


def test_wrong_function_key_is_401(devhost: Devhost) -> None:
    for key_in in ("header", "query"):
        assert (
            devhost.get("/api/instances", key="not-a-valid-key-0123456789", key_in=key_in).status_code == 401
        )
        assert devhost.get("/api/instances", key="", key_in=key_in).status_code == 401
        # A prefix of the real key is not the key.
        assert devhost.get("/api/instances", key=devhost.host_key[:-1], key_in=key_in).status_code == 401


def test_function_key_in_header_is_accepted(devhost: Devhost) -> None:
    response = devhost.get("/api/instances", key="host", key_in="header")
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)


def test_function_key_in_code_query_is_accepted(devhost: Devhost) -> None:
    response = devhost.get("/api/instances", key="host", key_in="query")
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)


def test_master_key_is_accepted_at_function_level(devhost: Devhost) -> None:
    assert devhost.get("/api/instances", key="master").status_code == 200


def test_admin_route_refuses_host_key_and_accepts_master_key(devhost: Devhost) -> None:
    for key_in in ("header", "query"):
        assert devhost.get("/api/admin-only", key="host", key_in=key_in).status_code == 401
        response = devhost.get("/api/admin-only", key="master", key_in=key_in)
        assert response.status_code == 200, response.text
        assert response.text == "admin ok"
    assert devhost.get("/api/admin-only", key=None).status_code == 401


def test_admin_host_status_needs_master_key(devhost: Devhost) -> None:
    assert devhost.get("/admin/host/status", key=None).status_code == 401
    assert devhost.get("/admin/host/status", key="host").status_code == 401
    assert devhost.get("/admin/host/status", key="master").status_code == 200
    assert devhost.get("/admin/host/ping", key=None).status_code == 200  # the ping is anonymous


def test_durable_webhook_needs_the_system_key(devhost: Devhost) -> None:
    path = f"/runtime/webhooks/durabletask/instances/{_key()}"
    assert devhost.get(path, key=None).status_code == 401
    assert devhost.get(path, key="host").status_code == 401
    system_key = devhost.keys["system"]["durabletask_extension"]
    assert devhost.get(path, key=system_key, key_in="query").status_code == 404  # authorised, unknown id


def test_route_params_with_int_constraint_and_optional_segment(devhost: Devhost) -> None:
    # items/{itemId:int}/{label?} is anonymous: no key at all.
    full = devhost.get("/api/items/42/blue", key=None, params={"color": "red"})
    assert full.status_code == 200, full.text
    assert full.json() == {"route": {"itemId": "42", "label": "blue"}, "query": {"color": "red"}}
    short = devhost.get("/api/items/42", key=None)
    assert short.status_code == 200, short.text
    assert short.json() == {"route": {"itemId": "42"}, "query": {}}
    assert devhost.get("/api/items/42/", key=None).json()["route"] == {"itemId": "42"}
    for bad in ("/api/items/abc", "/api/items/abc/blue", "/api/items/4.5", "/api/items/42/blue/extra"):
        assert devhost.get(bad, key=None).status_code == 404, bad


def test_function_that_raises_gives_500_json_and_host_keeps_serving(devhost: Devhost) -> None:
    response = devhost.get("/api/explode")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    assert "explode" in response.json()["error"]
    assert devhost.running
    assert devhost.ping() == 200
    assert devhost.get("/api/items/7", key=None).status_code == 200
    failed = devhost.wait_event("function.failed", function="explode")
    assert failed["level"] == "error"
    assert "the function itself failed" in failed.get("exception", "")


def test_method_not_accepted_is_404(devhost: Devhost) -> None:
    assert devhost.post("/api/items/42", key=None).status_code == 404
    assert devhost.request("PUT", f"/api/instances/{_key()}").status_code == 404
    assert devhost.get("/api/start/sequence").status_code == 404  # start is POST only
    assert devhost.request("PATCH", "/api/admin-only", key="master").status_code == 404


# ====================================================================================== Durable


def test_sequence_of_sync_and_async_activities(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("sequence", 21)
    status = devhost.wait_status(instance_id, "Completed")
    assert status["output"] == {"echo": 42}

    row = devhost.instance_row(instance_id)
    assert row is not None
    assert row["RuntimeStatus"] == "Completed"
    assert row["Name"] == "sequence"
    assert row["Input"] == "21"
    assert row["Output"] == '{"echo": 42}' or row["Output"].replace(" ", "") == '{"echo":42}'
    history = devhost.history(instance_id)
    assert int(row["HistoryLength"]) == len(history)
    types = [r["EventType"] for r in history]
    scheduled = [r["Name"] for r in history if r["EventType"] == TASK_SCHEDULED]
    assert scheduled == ["double", "async_echo"]
    assert types.count(TASK_COMPLETED) == 2
    assert _index(types, EXECUTION_STARTED) < _index(types, TASK_SCHEDULED)
    assert types[-1] == EXECUTION_COMPLETED
    assert history[-1]["Event"]["OrchestrationStatus"] == "Completed"


def test_task_all_fan_out(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("fan_out")
    assert devhost.wait_status(instance_id, "Completed")["output"] == 20  # 0+2+4+6+8
    history = devhost.history(instance_id)
    assert [r["Name"] for r in history if r["EventType"] == TASK_SCHEDULED] == ["double"] * 5
    assert sum(r["EventType"] == TASK_COMPLETED for r in history) == 5
    # The five activities were scheduled together, in one episode, before any completed.
    types = [r["EventType"] for r in history]
    assert types.index(TASK_COMPLETED) > max(i for i, t in enumerate(types) if t == TASK_SCHEDULED)


def test_race_cancelled_timer_lets_the_instance_complete_at_once(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("race_cancelled")
    devhost.wait_history(instance_id, TIMER_CREATED)  # waiting on task_any(event, 1 h timer)
    started = time.monotonic()
    assert devhost.raise_event(instance_id, "Approve", {"by": "test"}).status_code == 202
    status = devhost.wait_status(instance_id, "Completed", timeout=5)
    assert time.monotonic() - started < 2.5, "a cancelled timer must not keep the instance running"
    assert status["output"] == {"winner": "event", "value": {"by": "test"}}
    types = devhost.event_types(instance_id)
    assert TIMER_CREATED in types
    assert EVENT_RAISED in types
    assert TIMER_FIRED not in types
    assert types[-1] == EXECUTION_COMPLETED


def test_race_uncancelled_timer_keeps_the_instance_running_until_it_fires(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("race_uncancelled", 3)
    history = devhost.wait_history(instance_id, TIMER_CREATED)
    fire_at = _parse_time(next(r for r in history if r["EventType"] == TIMER_CREATED)["Event"]["FireAt"])
    assert devhost.raise_event(instance_id, "Approve", "yes").status_code == 202
    # The orchestrator has returned, but Durable does not complete it while its timer is pending.
    while datetime.now(UTC) < fire_at - timedelta(seconds=1):
        assert devhost.status(instance_id)["runtimeStatus"] == "Running"  # type: ignore[index]
        time.sleep(0.2)
    status = devhost.wait_status(instance_id, "Completed", timeout=10)
    assert datetime.now(UTC) >= fire_at
    assert status["output"] == {"winner": "event"}
    types = devhost.event_types(instance_id)
    assert _index(types, EVENT_RAISED) < _index(types, TIMER_FIRED) < _index(types, EXECUTION_COMPLETED)
    row = devhost.instance_row(instance_id)
    assert row is not None and _parse_time(row["LastUpdatedTime"]) >= fire_at


def test_race_timeout_timer_wins(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("race_timeout", 1)
    status = devhost.wait_status(instance_id, "Completed", timeout=10)
    assert status["output"] == {"winner": "timer"}
    types = devhost.event_types(instance_id)
    assert TIMER_FIRED in types
    assert EVENT_RAISED not in types


def test_event_raised_before_the_wait_is_delivered(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("early_event")
    # Raise "Early" while slow_step (1.5 s) runs: the orchestrator has not reached its wait yet.
    devhost.wait_event("activity.started", instanceId=instance_id, function="slow_step")
    assert devhost.raise_event(instance_id, "Early", {"v": 7}).status_code == 202
    assert TASK_COMPLETED not in devhost.event_types(instance_id), "slow_step finished before the event"
    status = devhost.wait_status(instance_id, "Completed", timeout=10)
    assert status["output"] == {"received": {"v": 7}}
    history = devhost.history(instance_id)
    types = [r["EventType"] for r in history]
    raised = _index(types, EVENT_RAISED)
    assert history[raised]["Name"] == "Early"
    assert raised < _index(types, TASK_COMPLETED), "the event must be in the history before the wait"


def test_retry_succeeds_on_second_attempt(devhost: Devhost) -> None:
    key = _key()
    instance_id = devhost.start_orchestration("retrying", key)
    status = devhost.wait_status(instance_id, "Completed", timeout=10)
    assert status["output"] == "succeeded on attempt 2"
    assert devhost.counter(f"flaky-{key}") == 2
    history = devhost.history(instance_id)
    relevant = [r for r in history if r["EventType"] in (4, 5, 6, 10, 11)]
    assert [r["EventType"] for r in relevant] == [
        TASK_SCHEDULED, TASK_FAILED, TIMER_CREATED, TIMER_FIRED, TASK_SCHEDULED, TASK_COMPLETED,
    ]  # fmt: skip
    assert [r["Name"] for r in relevant if r["EventType"] == TASK_SCHEDULED] == ["flaky", "flaky"]
    assert "transient failure on attempt 1" in relevant[1]["Event"]["Reason"]
    # The retry timer honours first_retry_interval_in_milliseconds=200.
    failed_at = _parse_time(relevant[1]["Event"]["Timestamp"])
    retry_at = _parse_time(relevant[2]["Event"]["FireAt"])
    assert timedelta(milliseconds=150) <= retry_at - failed_at <= timedelta(seconds=2)


def test_retries_in_parallel_with_task_all(devhost: Devhost) -> None:
    key = _key()
    instance_id = devhost.start_orchestration("retrying_in_parallel", key)
    status = devhost.wait_status(instance_id, "Completed", timeout=10)
    assert status["output"] == ["succeeded on attempt 2", 10, "succeeded on attempt 2"]
    assert devhost.counter(f"flaky-{key}-a") == 2
    assert devhost.counter(f"flaky-{key}-b") == 2
    types = devhost.event_types(instance_id)
    assert types.count(TASK_FAILED) == 2
    assert types.count(TIMER_FIRED) == 2


def test_retry_exhausted_is_caught_after_exactly_max_attempts(devhost: Devhost) -> None:
    key = _key()
    instance_id = devhost.start_orchestration("retry_exhausted", key)
    status = devhost.wait_status(instance_id, "Completed", timeout=10)
    caught = status["output"]["caught"]
    assert caught is not None
    assert "permanent failure on attempt 2" in caught
    assert devhost.counter(f"always-{key}") == 2
    history = devhost.history(instance_id)
    assert [r["Name"] for r in history if r["EventType"] == TASK_SCHEDULED] == ["always_fails"] * 2
    assert sum(r["EventType"] == TASK_FAILED for r in history) == 2


def test_sub_orchestration_result_and_failure_propagate(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("parent", 4)
    status = devhost.wait_status(instance_id, "Completed", timeout=10)
    output = status["output"]
    assert output["child"] == {"echo": 8}
    assert output["childFailure"] is not None
    assert "the orchestrator raised on purpose" in output["childFailure"]
    history = devhost.history(instance_id)
    types = [r["EventType"] for r in history]
    assert SUB_ORCHESTRATION_CREATED in types
    assert SUB_ORCHESTRATION_COMPLETED in types
    assert SUB_ORCHESTRATION_FAILED in types
    children = {
        r["Name"]: r["Event"]["InstanceId"] for r in history if r["EventType"] == SUB_ORCHESTRATION_CREATED
    }
    assert set(children) == {"sequence", "failing"}
    assert devhost.wait_status(children["sequence"], "Completed")["output"] == {"echo": 8}
    assert devhost.wait_status(children["failing"], "Failed")["runtimeStatus"] == "Failed"
    child_row = devhost.instance_row(children["sequence"])
    assert child_row is not None and child_row["ParentInstanceId"] == instance_id


def test_continue_as_new_restarts_with_a_fresh_history(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("count_to_three", 1)
    status = devhost.wait_status(instance_id, "Completed")
    assert status["output"] == 3
    history = devhost.history(instance_id)
    assert [r["EventType"] for r in history].count(EXECUTION_STARTED) == 1
    assert history[1]["Event"]["Input"] == "3"  # the last execution's input
    assert [r["Name"] for r in history if r["EventType"] == TASK_SCHEDULED] == ["double"]


def test_failing_orchestrator_is_a_failed_instance_not_a_host_crash(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("failing")
    status = devhost.wait_status(instance_id, "Failed", timeout=10)
    assert "the orchestrator raised on purpose" in str(status["output"])
    row = devhost.instance_row(instance_id)
    assert row is not None and row["RuntimeStatus"] == "Failed"
    history = devhost.history(instance_id)
    assert history[-1]["EventType"] == EXECUTION_COMPLETED
    assert history[-1]["Event"]["OrchestrationStatus"] == "Failed"
    failed = devhost.wait_event("orchestration.failed", instanceId=instance_id)
    assert failed["function"] == "failing"
    assert "the orchestrator raised on purpose" in failed["error"]
    # The devhost is still alive and runs other orchestrations.
    assert devhost.running
    assert devhost.ping() == 200
    other = devhost.start_orchestration("sequence", 1)
    assert devhost.wait_status(other, "Completed")["output"] == {"echo": 2}


def test_failing_activity_fails_the_orchestration_with_its_error(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("failing_activity")
    status = devhost.wait_status(instance_id, "Failed", timeout=10)
    assert "permanent failure on attempt 1" in str(status["output"])
    history = devhost.history(instance_id)
    failures = [r for r in history if r["EventType"] == TASK_FAILED]
    assert len(failures) == 1
    assert "always_fails" in failures[0]["Event"]["Reason"]
    assert "permanent failure on attempt 1" in failures[0]["Event"]["Reason"]
    assert "ValueError" in failures[0]["Event"].get("Details", "")


def test_custom_status_is_visible_while_waiting(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("timer_then_event", 0)
    status = devhost.poll(
        lambda: s if (s := devhost.status(instance_id)) and s["customStatus"] == "waiting for Go" else None,
        10,
        what="custom status 'waiting for Go'",
    )
    assert status["runtimeStatus"] == "Running"
    row = devhost.poll(
        lambda: r if (r := devhost.instance_row(instance_id)) and "CustomStatus" in r else None,
        5,
        what="persisted custom status",
    )
    assert row["CustomStatus"] == '"waiting for Go"'
    assert devhost.raise_event(instance_id, "Go", "now").status_code == 202
    done = devhost.wait_status(instance_id, "Completed")
    assert done["output"] == {"activity": 42, "event": "now"}
    assert done["customStatus"] == "waiting for Go"


def test_terminate_ends_the_instance_and_later_events_are_refused(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("race_cancelled")
    devhost.wait_history(instance_id, TIMER_CREATED)
    response = devhost.post(f"/api/instances/{instance_id}/terminate")
    assert response.status_code == 202, response.text
    status = devhost.wait_status(instance_id, "Terminated")
    assert status["output"] == "stopped by test"
    history = devhost.history(instance_id)
    assert history[-1]["EventType"] == EXECUTION_TERMINATED
    # The devhost answers 410 to the SDK, which raises: the sample route then fails with 500.
    assert devhost.raise_event(instance_id, "Approve", "too late").status_code == 500
    assert devhost.wait_status(instance_id, "Terminated")["output"] == "stopped by test"
    assert devhost.event_types(instance_id) == [r["EventType"] for r in history]
    # Terminating it again is a no-op (the devhost answers 410, which the SDK accepts).
    assert devhost.post(f"/api/instances/{instance_id}/terminate").status_code == 202
    assert devhost.event_types(instance_id) == [r["EventType"] for r in history]


def test_purge_removes_the_instance_and_its_history(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("sequence", 3)
    devhost.wait_status(instance_id, "Completed")
    assert devhost.all_history_rows(instance_id)
    response = devhost.delete(f"/api/instances/{instance_id}")
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 1}
    assert devhost.get(f"/api/instances/{instance_id}").status_code == 404
    assert devhost.instance_row(instance_id) is None
    assert devhost.all_history_rows(instance_id) == []
    assert instance_id not in devhost.get("/api/instances").json()
    assert devhost.delete(f"/api/instances/{instance_id}").json() == {"deleted": 0}


def test_list_returns_completed_instance_ids(devhost: Devhost) -> None:
    completed = devhost.start_orchestration("sequence", 5)
    devhost.wait_status(completed, "Completed")
    running = devhost.start_orchestration("race_cancelled")
    devhost.wait_status(running, "Running")
    try:
        listed = devhost.get("/api/instances").json()
        assert completed in listed
        assert running not in listed
        assert listed == sorted(listed)
    finally:
        devhost.post(f"/api/instances/{running}/terminate")


def test_start_with_the_id_of_a_running_instance_fails_but_a_completed_one_restarts(devhost: Devhost) -> None:
    instance_id = f"fixed-{_key()}"
    assert devhost.start_orchestration("race_cancelled", instance_id=instance_id) == instance_id
    devhost.wait_history(instance_id, TIMER_CREATED)
    # The devhost answers 409; the SDK raises and the sample route fails.
    again = devhost.post("/api/start/race_cancelled", params={"instanceId": instance_id})
    assert again.status_code == 500, again.text
    assert devhost.event_types(instance_id).count(EXECUTION_STARTED) == 1
    devhost.raise_event(instance_id, "Approve", "first")
    assert devhost.wait_status(instance_id, "Completed")["output"]["value"] == "first"

    assert devhost.start_orchestration("race_cancelled", instance_id=instance_id) == instance_id
    devhost.wait_history(instance_id, TIMER_CREATED)
    assert devhost.wait_status(instance_id, "Running")["output"] is None
    devhost.raise_event(instance_id, "Approve", "second")
    assert devhost.wait_status(instance_id, "Completed")["output"]["value"] == "second"
    types = devhost.event_types(instance_id)
    assert types.count(EXECUTION_STARTED) == 1, "a restarted instance gets a fresh history"
    assert types.count(EVENT_RAISED) == 1


def test_json_logs_carry_instance_id_and_function(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("sequence", 2)
    devhost.wait_status(instance_id, "Completed")
    devhost.wait_event("orchestration.completed", instanceId=instance_id)
    assert devhost.events("orchestration.started", instanceId=instance_id, function="sequence")
    assert devhost.events("activity.completed", instanceId=instance_id, function="double")
    assert devhost.events("activity.completed", instanceId=instance_id, function="async_echo")
    assert devhost.events("orchestration.completed", instanceId=instance_id, function="sequence")
    for line in devhost.events(instanceId=instance_id):
        assert {"ts", "level", "logger", "msg", "event"} <= set(line), line
        assert line["msg"] == line["event"]
        _parse_time(line["ts"])


# ====================================================================================== timer triggers


def _five_minute_boundaries(since: float, until: float) -> int:
    """How many times ``0 */5 * * * *`` is due in [since, until] (wall clock seconds)."""
    if until < since:
        return 0
    first = -(-since // 300) * 300  # the first multiple of 300 s at or after ``since``
    return 0 if first > until else int((until - first) // 300) + 1


def _timer(host: Devhost, name: str) -> dict[str, Any]:
    return next(t for t in host.host_status()["timers"] if t["name"] == name)


def test_timer_every_five_minutes_is_scheduled_every_five_minutes(devhost: Devhost) -> None:
    before = datetime.now(UTC)
    timer = _timer(devhost, "every_five_minutes")
    assert timer["schedule"] == "0 */5 * * * *"
    assert timer["runOnStartup"] is False
    runs = [_parse_time(t) for t in timer["nextRuns"]]
    assert len(runs) == 3
    assert before < runs[0] <= before + timedelta(minutes=5, seconds=1)
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(runs)] == [300.0, 300.0]
    assert all(r.second == 0 and r.microsecond == 0 and r.minute % 5 == 0 for r in runs)


def test_timer_every_five_minutes_does_not_fire_every_second(devhost: Devhost) -> None:
    assert devhost.started_wall is not None
    ready = _parse_time(devhost.events("host.started")[-1]["ts"]).timestamp()
    deadline = time.monotonic() + 3.0
    while True:
        invocations = _timer(devhost, "every_five_minutes")["invocations"]
        now = time.time()
        # Only a real five-minute boundary since the devhost started may have fired it (almost always 0).
        due_at_most = _five_minute_boundaries(devhost.started_wall, now)
        due_at_least = _five_minute_boundaries(ready + 1, now - 1)
        assert due_at_least <= invocations <= due_at_most, (
            f"every_five_minutes ran {invocations} times since the devhost started "
            f"(due {due_at_least}..{due_at_most} times)"
        )
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    assert (devhost.counter("every_five_minutes") or 0) == invocations
    assert len(devhost.events("timer_trigger.invoked", function="every_five_minutes")) == invocations


def test_timer_run_on_startup_is_invoked_once_at_start(devhost: Devhost) -> None:
    assert devhost.poll(lambda: devhost.counter("on_startup"), 10, what="on_startup.count") == 1
    timer = _timer(devhost, "on_startup")
    assert timer["runOnStartup"] is True
    assert timer["invocations"] == 1
    assert len(devhost.events("timer_trigger.invoked", function="on_startup")) == 1
    assert devhost.counter("on_startup") == 1


# ====================================================================================== restarts


def _expected_crash_resume(instance_id: str, approval: Any) -> dict[str, Any]:
    return {
        "first": f"slow step for {instance_id}-1",
        "second": f"slow step for {instance_id}-2",
        "approval": approval,
    }


@pytest.mark.timeout(90)
def test_sigkill_mid_flight_then_restart_completes_with_the_same_result(
    devhost: Devhost, devhost_factory: DevhostFactory
) -> None:
    approval = {"approved": True, "by": "test"}
    reference = devhost.start_orchestration("crash_resume")  # uninterrupted, on the shared devhost

    host = devhost_factory()
    instance_id = host.start_orchestration("crash_resume")
    host.wait_event("activity.started", instanceId=instance_id, function="slow_step")
    host.poll(lambda: host.counter(f"slow-{instance_id}-1"), 5, what="first slow_step to start")
    host.kill()  # SIGKILL while the first slow_step runs
    assert TASK_COMPLETED not in host.event_types(instance_id), "the first step finished before the kill"
    assert host.instance_row(instance_id)["RuntimeStatus"] == "Running"  # type: ignore[index]

    host.start()
    for driver, iid in ((host, instance_id), (devhost, reference)):
        driver.wait_history(iid, TASK_COMPLETED, count=2, timeout=20)  # both slow steps done
        assert driver.raise_event(iid, "Resume", approval).status_code == 202
    resumed = host.wait_status(instance_id, "Completed", timeout=10)["output"]
    uninterrupted = devhost.wait_status(reference, "Completed", timeout=10)["output"]

    assert resumed == _expected_crash_resume(instance_id, approval)
    assert uninterrupted == _expected_crash_resume(reference, approval)
    assert resumed == {k: v.replace(reference, instance_id) if isinstance(v, str) else v
                       for k, v in uninterrupted.items()}  # fmt: skip
    assert host.counter(f"slow-{instance_id}-1") == 2, "the interrupted step must run again"
    assert host.counter(f"slow-{instance_id}-2") == 1
    assert devhost.counter(f"slow-{reference}-1") == 1
    assert host.events("activity.resumed", instanceId=instance_id, function="slow_step")
    history = host.history(instance_id)
    assert sum(r["EventType"] == TASK_SCHEDULED for r in history) == 2
    assert sum(r["EventType"] == TASK_COMPLETED for r in history) == 2
    assert [r["EventType"] for r in history].count(EXECUTION_STARTED) == 1


@pytest.mark.timeout(60)
def test_pending_timer_survives_sigkill(devhost_factory: DevhostFactory) -> None:
    host = devhost_factory()
    instance_id = host.start_orchestration("race_timeout", 3)
    history = host.wait_history(instance_id, TIMER_CREATED)
    fire_at = _parse_time(next(r for r in history if r["EventType"] == TIMER_CREATED)["Event"]["FireAt"])
    host.kill()  # while the 3 s timer is pending
    assert datetime.now(UTC) < fire_at, "killed too late: the timer was already due"
    assert TIMER_FIRED not in host.event_types(instance_id)

    host.start()
    status = host.wait_status(instance_id, "Completed", timeout=15)
    assert status["output"] == {"winner": "timer"}
    assert datetime.now(UTC) >= fire_at
    types = host.event_types(instance_id)
    assert types.count(TIMER_FIRED) == 1
    assert types.count(TIMER_CREATED) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_shutdown_signal_stops_cleanly(devhost_factory: DevhostFactory, sig: signal.Signals) -> None:
    host = devhost_factory()
    # In-flight work (a 1 h timer) must neither block the shutdown nor be lost by it.
    instance_id = host.start_orchestration("race_cancelled")
    host.wait_history(instance_id, TIMER_CREATED)
    started = time.monotonic()
    assert host.stop(sig) == 0
    assert time.monotonic() - started < 10
    assert host.events("host.stopped")
    assert host.instance_row(instance_id)["RuntimeStatus"] == "Running"  # type: ignore[index]

    host.start()
    assert host.raise_event(instance_id, "Approve", sig.name).status_code == 202
    assert host.wait_status(instance_id, "Completed")["output"] == {"winner": "event", "value": sig.name}


@pytest.mark.timeout(90)
def test_sub_orchestration_resumes_after_sigkill(devhost_factory: DevhostFactory) -> None:
    host = devhost_factory()
    instance_id = host.start_orchestration("parent_of_slow")
    child_id = f"{instance_id}-child"
    host.wait_event("activity.started", instanceId=child_id, function="slow_step")
    host.kill()  # while the child's activity runs
    assert host.instance_row(instance_id)["RuntimeStatus"] == "Running"  # type: ignore[index]

    host.start()
    status = host.wait_status(instance_id, "Completed", timeout=20)
    assert status["output"] == {"child": f"slow step for {child_id}"}
    assert host.counter(f"slow-{child_id}") == 2, "the child's interrupted activity must run again"
    types = host.event_types(instance_id)
    assert types.count(SUB_ORCHESTRATION_CREATED) == 1
    assert types.count(SUB_ORCHESTRATION_COMPLETED) == 1


@pytest.mark.timeout(90)
def test_pending_retry_timer_survives_sigkill(devhost_factory: DevhostFactory) -> None:
    host = devhost_factory()
    key = _key()
    instance_id = host.start_orchestration("retrying_slowly", key)
    host.wait_history(instance_id, TIMER_CREATED)  # the first attempt failed; a 2.5 s retry timer waits
    host.kill()
    assert TIMER_FIRED not in host.event_types(instance_id)

    host.start()
    status = host.wait_status(instance_id, "Completed", timeout=20)
    assert status["output"] == "succeeded on attempt 2"
    assert host.counter(f"flaky-{key}") == 2
    types = host.event_types(instance_id)
    tasks_and_timers = (TASK_SCHEDULED, TASK_FAILED, TIMER_CREATED, TIMER_FIRED, TASK_COMPLETED)
    assert [t for t in types if t in tasks_and_timers] == [
        TASK_SCHEDULED, TASK_FAILED, TIMER_CREATED, TIMER_FIRED, TASK_SCHEDULED, TASK_COMPLETED,
    ]  # fmt: skip


def test_state_too_large_to_store_fails_the_instance_with_the_reason(devhost: Devhost) -> None:
    instance_id = devhost.start_orchestration("too_large", 600_000)
    status = devhost.wait_status(instance_id, "Failed", timeout=15)
    assert "cannot be stored" in status["output"]
    assert devhost.ping() == 200


def test_timer_trigger_can_use_the_durable_client(devhost: Devhost) -> None:
    def started_from_timer() -> list[str]:
        return [i for i in devhost.get("/api/instances").json() if i.startswith("from-timer-")]

    found = devhost.poll(started_from_timer, 15, what="an orchestration started by a timer trigger")
    assert devhost.wait_status(found[0], "Completed")["output"] == {"echo": 6}


def test_list_filters_by_prefix_and_purge_by_filter_deletes_ended_instances(
    devhost_factory: DevhostFactory,
) -> None:
    host = devhost_factory()
    done = [host.start_orchestration("sequence", n, instance_id=f"filter-{n}-{_key()}") for n in (1, 2)]
    running = host.start_orchestration("race_cancelled", instance_id=f"other-{_key()}")
    for instance_id in done:
        host.wait_status(instance_id, "Completed")
    rpc = f"{host.url}/durabletask/instances/"
    listed = httpx.get(rpc, params={"instanceIdPrefix": "filter-"}).json()
    assert sorted(i["instanceId"] for i in listed) == sorted(done)

    ended = httpx.get(rpc, params={"runtimeStatus": "Completed,Failed"}).json()
    assert set(done) <= {i["instanceId"] for i in ended}  # with the one the startup timer ran
    purged = host.delete("/api/instances")  # the SDK's purge_instance_history_by
    assert purged.status_code == 200
    assert purged.json() == {"deleted": len(ended)}
    assert all(host.status(i) is None for i in done)
    assert host.status(running)["runtimeStatus"] == "Running"  # type: ignore[index]


@pytest.mark.timeout(120)
def test_a_timer_that_fires_while_storage_is_down_is_applied_once_storage_is_back(
    devhost_factory: DevhostFactory, tmp_path: Path
) -> None:
    with Azurite(location=tmp_path / "azurite") as storage:
        host = devhost_factory(azurite=storage)
        instance_id = host.start_orchestration("timer_then_event", 2)
        host.wait_history(instance_id, TIMER_CREATED)
        storage.stop()  # SIGINT: Azurite flushes what it acknowledged
        host.wait_event("episode.retry", timeout=15, instanceId=instance_id)  # the fired timer cannot commit
        storage.start()
        host.wait_history(instance_id, TIMER_FIRED, timeout=20)
        assert host.raise_event(instance_id, "Go", "after the outage").status_code == 202
        status = host.wait_status(instance_id, "Completed", timeout=15)
        assert host.event_types(instance_id).count(TIMER_FIRED) == 1
    assert status["output"] == {"activity": 42, "event": "after the outage"}


@pytest.mark.timeout(60)
def test_restart_keeps_the_generated_keys(devhost_factory: DevhostFactory) -> None:
    host = devhost_factory()
    keys = host.keys
    host.restart()
    assert host.keys == keys
    assert len(host.events("host.keys_generated")) == 1


# ====================================================================================== found by review
# Behaviours the first version of the devhost got wrong; kept last so that `pytest -x` runs the
# primitives first.


def test_routes_match_case_insensitively_like_the_functions_host(devhost: Devhost) -> None:
    # The Functions host routes with ASP.NET Core templates: the route prefix and literal segments
    # match whatever their case; route parameter values keep the case they were sent in.
    for path in ("/api/Items/42/Blue", "/API/items/42/Blue", "/Api/ITEMS/42/Blue"):
        response = devhost.get(path, key=None)
        assert response.status_code == 200, (
            f"GET {path} gave {response.status_code}: the devhost matches routes case-sensitively"
        )
        assert response.json()["route"] == {"itemId": "42", "label": "Blue"}


@pytest.mark.timeout(60)
def test_clean_shutdown_logs_no_errors(devhost_factory: DevhostFactory) -> None:
    host = devhost_factory()
    instance_id = host.start_orchestration("sequence", 1)  # the Durable client binding is used
    host.wait_status(instance_id, "Completed")
    assert host.stop(signal.SIGTERM) == 0
    errors = [line for line in host.log_lines() if line.get("level") in ("error", "critical")]
    assert not errors, (
        "a happy-path run followed by a clean SIGTERM shutdown logged errors "
        "(the Durable SDK's shared aiohttp ClientSession is never closed at shutdown): "
        f"{[e['msg'][:120] for e in errors]}"
    )


def test_every_stderr_line_is_a_json_log_object(devhost: Devhost) -> None:
    # An event raised before its wait makes the SDK emit a Python UserWarning ("Potential duplicate
    # Task completion"): it must reach stderr as a JSON log line too.
    instance_id = devhost.start_orchestration("timer_then_event", 0)
    assert devhost.raise_event(instance_id, "Go", 1).status_code == 202
    devhost.wait_status(instance_id, "Completed")
    raw = devhost.raw_log_lines()
    parsed = devhost.log_lines()
    not_json = [line for line in raw if not line.lstrip().startswith("{")]
    assert not not_json, (
        f"non-JSON lines on stderr (Python warnings bypass the JSON log handler): {not_json[:4]}"
    )
    assert len(parsed) == len(raw)
    for line in parsed:
        assert {"ts", "level", "logger", "msg"} <= set(line), line
        if line["logger"] == "devhost":
            assert line.get("event") == line["msg"], line


@pytest.mark.timeout(90)
def test_status_api_reports_only_committed_state(devhost_factory: DevhostFactory) -> None:
    """A status the API reports must be persisted: a crash must not take it back.

    Freezes a dedicated Azurite (SIGSTOP) so that the commit of the episode that completes the
    instance cannot finish, and asks for the status meanwhile.
    """
    emulator = Azurite()
    emulator.start()
    try:
        host = devhost_factory(azurite=emulator)
        instance_id = host.start_orchestration("race_cancelled")
        host.wait_history(instance_id, TIMER_CREATED)
        assert emulator.pid is not None
        os.kill(emulator.pid, signal.SIGSTOP)
        try:
            # The event completes the instance; its commit blocks on the frozen storage.
            raising = threading.Thread(
                target=_post_quietly,
                args=(f"{host.url}/api/instances/{instance_id}/events/Approve", host.host_key),
                daemon=True,
            )
            raising.start()
            host.wait_event("event.raised", instanceId=instance_id)
            time.sleep(0.5)  # let the episode run up to its (blocked) commit
            try:
                response = host.get(f"/api/instances/{instance_id}", timeout=3.0)
                observed = response.json()["runtimeStatus"] if response.status_code == 200 else None
            except httpx.TimeoutException:
                observed = None  # waiting for the commit is a correct answer too
            host.kill()
        finally:
            os.kill(emulator.pid, signal.SIGCONT)
        host.start()
        after_crash = host.wait_status(instance_id, ("Running", "Completed"))["runtimeStatus"]
        assert observed != "Completed" or after_crash == "Completed", (
            f"the status API reported {observed!r} before the episode was committed to Table Storage; "
            f"after a crash the instance is {after_crash!r} again (dirty read of the engine's cache)"
        )
    finally:
        emulator.stop()


def _post_quietly(url: str, key: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, headers={"x-functions-key": key}, json="approved", timeout=30.0)
