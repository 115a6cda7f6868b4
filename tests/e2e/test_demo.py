"""The demo's own pieces: its short-timing policy, its timeline lines, and one of its scenarios run on the
live stack exactly as ``make demo`` runs it (so a change in the product that breaks the demo fails here)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from local.azurite import Azurite
from local.demo import (
    PIM_MINIMUM_ACTIVE_SECONDS,
    QUIET_SWEEP_SCHEDULE,
    DemoRun,
    DemoSetupError,
    nothing_left,
    scenario_c,
    scenario_d,
    timeline_lines,
    write_demo_policy,
)
from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from shared.policy import load_policy
from shared.settings import DEFAULT_POLICY_PATH
from tests.e2e.conftest import app_host_in

SAMPLE = Path(__file__).resolve().parents[2] / "local.settings.sample.json"


def test_the_demo_policy_counts_in_seconds_what_the_policy_counts_in_minutes(tmp_path: Path) -> None:
    policy = load_policy(write_demo_policy(tmp_path))
    timings = policy.timings
    assert (timings.approval_due, timings.progress_interval, timings.store_mismatch_threshold) == (
        timedelta(minutes=2), timedelta(seconds=6), timedelta(seconds=6))  # fmt: skip
    assert (timings.probe_first_interval, timings.probe_max_interval, timings.slow_probe_interval) == (
        timedelta(seconds=1), timedelta(seconds=4), timedelta(seconds=5))  # fmt: skip
    assert timings.pim_minimum_active == timedelta(seconds=PIM_MINIMUM_ACTIVE_SECONDS)
    assert {role.name: role.proof_deadline for role in policy.roles} == {
        role.name: timedelta(seconds=30) for role in policy.roles
    }


def test_a_policy_line_the_demo_cannot_find_stops_the_demo_naming_it(tmp_path: Path) -> None:
    source = tmp_path / "changed.toml"
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    source.write_text(
        text.replace('progress_interval = "PT2M"', 'progress_interval = "PT3M"'), encoding="utf-8"
    )
    with pytest.raises(DemoSetupError, match='progress_interval = "PT2M"'):
        write_demo_policy(tmp_path, source)


def test_a_timeline_line_gives_the_seconds_since_the_webhook_the_step_and_what_it_means() -> None:
    detail = {"failing": ["exchange_role_group"], "nextUpdate": "2026-11-27T12:00:18+00:00"}
    step = {"seq": 7, "time": "2026-11-27T12:00:12.300000+00:00", "step": "proof.progress", "outcome": "sent",
            "actor": None, "role": None, "detail": detail}  # fmt: skip
    origin = 1795780800.0  # 2026-11-27T12:00:00Z
    [line] = timeline_lines([step], origin)
    assert line.split()[:3] == ["+12.3s", "proof.progress", "sent"]
    assert "exchange_role_group still failing, next update by 12:00:18" in line


@pytest.mark.stack
def test_the_two_person_and_the_break_glass_scenarios_pass_on_the_live_stack(
    tmp_path: Path, azurite: Azurite, sim: SimulatorProcess
) -> None:
    policy_path = write_demo_policy(tmp_path)
    host = app_host_in(tmp_path, azurite, **sim.settings, IDENTITY_ENDPOINT=sim.url + TOKEN_PATH,
                       IDENTITY_HEADER=IDENTITY_HEADER, POLICY_PATH=str(policy_path),
                       SWEEP_SCHEDULE=QUIET_SWEEP_SCHEDULE)  # fmt: skip
    secret = json.loads(SAMPLE.read_text())["Values"]["SERVICENOW_WEBHOOK_SECRET"]
    host.start()
    try:
        with httpx.Client(base_url=host.url, params={"code": host.function_key}, timeout=30) as client:
            run = DemoRun(host, sim, azurite.connection_string, load_policy(policy_path), secret, client)
            sim.pim_behaviour(minimumActiveSeconds=PIM_MINIMUM_ACTIVE_SECONDS)
            assert scenario_c(run), host.log_tail()
            # (d): never effective, escalated, break-glass started in Teams and approved by two people,
            # assigned through unified RBAC, and both grants removed at resolution.
            assert scenario_d(run), host.log_tail()
            assert nothing_left(run)
    finally:
        host.kill()
        sim.control("DELETE", "graph/pim-behaviour")  # the simulators are shared with later modules
