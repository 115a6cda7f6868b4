"""Timer schedules from app settings (``%NAME%``) and the admin endpoint that runs a timer function on
demand (``POST /admin/functions/{name}``, as Core Tools and the Functions host serve it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import pytest

from local.devhost.catalog import FunctionSpec
from local.devhost.config import HostConfig
from local.devhost.schedule import TimerTriggers, UnresolvedSettingError, resolve_app_settings
from tests.devhost.conftest import Devhost

pytestmark = pytest.mark.stack


def _timer(host: Devhost, name: str) -> dict[str, Any]:
    return next(t for t in host.host_status()["timers"] if t["name"] == name)


def test_a_schedule_naming_an_app_setting_uses_the_setting(devhost: Devhost) -> None:
    timer = _timer(devhost, "from_setting")
    assert timer["schedule"] == "0 0 0 1 1 *"
    runs = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in timer["nextRuns"]]
    assert all((r.month, r.day, r.hour, r.minute, r.second) == (1, 1, 0, 0, 0) for r in runs)


def test_admin_run_invokes_the_timer_function_once_and_answers_202(devhost: Devhost) -> None:
    before = devhost.counter("from_setting") or 0
    response = devhost.post("/admin/functions/from_setting", key="master", json={"input": ""})
    assert response.status_code == 202, response.text

    def ran_once() -> bool:
        try:
            return (devhost.counter("from_setting") or 0) == before + 1
        except ValueError:  # read while the function rewrites its counter file
            return False

    devhost.poll(ran_once, 10, what="the on-demand run")
    invoked = devhost.wait_event("timer_trigger.invoked", function="from_setting", onDemand=True)
    assert invoked["pastDue"] is False


def test_admin_run_needs_the_master_key(devhost: Devhost) -> None:
    assert devhost.post("/admin/functions/from_setting", key="host", json={"input": ""}).status_code == 401
    assert devhost.post("/admin/functions/from_setting", key=None, json={"input": ""}).status_code == 401


def test_admin_run_of_an_unknown_or_http_function_is_refused(devhost: Devhost) -> None:
    assert devhost.post("/admin/functions/nothing_here", key="master", json={"input": ""}).status_code == 404
    refused = devhost.post("/admin/functions/explode", key="master", json={"input": ""})
    assert refused.status_code == 400
    assert "timer" in refused.json()["error"]


def test_a_setting_is_substituted_wherever_it_appears() -> None:
    env = {"MINUTES": "*/5", "FULL": "0 0 * * * *"}
    assert resolve_app_settings("0 %MINUTES% * * * *", env) == "0 */5 * * * *"
    assert resolve_app_settings("%FULL%", env) == "0 0 * * * *"
    assert resolve_app_settings("0 */5 * * * *", {}) == "0 */5 * * * *"


def test_an_unset_or_blank_setting_does_not_resolve() -> None:
    with pytest.raises(UnresolvedSettingError, match="'%SWEEP_SCHEDULE%' does not resolve to a value"):
        resolve_app_settings("%SWEEP_SCHEDULE%", {})
    with pytest.raises(UnresolvedSettingError):
        resolve_app_settings("%SWEEP_SCHEDULE%", {"SWEEP_SCHEDULE": "  "})


def _spec(name: str, schedule: str) -> FunctionSpec:
    trigger = {"type": "timerTrigger", "name": "timer", "schedule": schedule}
    return FunctionSpec(name, trigger, (trigger,), lambda timer: None)


def test_an_unresolved_setting_puts_only_that_function_in_error() -> None:
    # As on the Functions host: the function is in error and never scheduled; the others run.
    config = cast(HostConfig, None)  # not used until a function is invoked
    timers = TimerTriggers(
        [_spec("sweep", "%SWEEP_SCHEDULE%"), _spec("hourly", "0 0 * * * *")], config, env={}
    )
    described = {t["name"]: t for t in timers.describe()}
    assert described["sweep"] == {"name": "sweep", "error": "'%SWEEP_SCHEDULE%' does not resolve to a value"}
    assert described["hourly"]["schedule"] == "0 0 * * * *"
    assert timers.errors == {"sweep": "'%SWEEP_SCHEDULE%' does not resolve to a value"}
    assert not timers.run_now("sweep")
