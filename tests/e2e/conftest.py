"""The real function_app on the devhost, with the session's Azurite."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.azurite import Azurite
from local.devhost.config import HUB_OVERRIDE
from local.stack import DevhostProcess, write_settings
from shared import telemetry


def app_host_in(work: Path, azurite: Azurite, **values: str) -> DevhostProcess:
    """A devhost for function_app with the sample settings, its own task hub, and ``values`` on top
    (a value of "" removes the setting)."""
    settings = work / "local.settings.json"
    # The sweep runs on demand in its own tests (POST /admin/functions/sweep), not every 5 minutes in the
    # others' hosts, which share Azurite and the simulators (its drift reports would post to IAM).
    values = {"SWEEP_SCHEDULE": "0 0 0 1 1 *", **values}
    write_settings(
        settings, azurite.connection_string, {HUB_OVERRIDE: f"E2e{uuid.uuid4().hex[:12]}", **values}
    )
    return DevhostProcess(settings, work / "devhost.log")


@pytest.fixture(scope="module")
def app_host(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite) -> Iterator[DevhostProcess]:
    host = app_host_in(tmp_path_factory.mktemp("app-host"), azurite)
    host.start()
    try:
        yield host
    finally:
        host.kill()


def request_status(host: DevhostProcess, request_id: str) -> dict[str, Any]:
    """``GET /api/requests/{id}``; a request whose first audit row is not written yet has no state."""
    response = httpx.get(f"{host.url}/api/requests/{request_id}", params={"code": host.function_key})
    if response.status_code == 404:
        return {"state": None, "timeline": []}
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# The states a request can be in once approved (it goes on to activation at once).
AFTER_APPROVAL = ("approved", "activated", "effective", "escalated", "revoked", "removal_failed", "cancelled")


def states_recorded(body: dict[str, Any]) -> list[str]:
    """Every state the request's audit rows record, in order (the current one is the last)."""
    return [step["detail"]["state"] for step in body["timeline"] if step["step"] == "request.state"]


def wait_for_state(
    host: DevhostProcess, request_id: str, states: tuple[str, ...], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = request_status(host, request_id)
        if body["state"] in states:
            return body
        time.sleep(0.2)
    raise AssertionError(f"request {request_id} did not reach {states}: {body}\n{host.log_tail()}")


def telemetry_events(host: DevhostProcess, chain: str) -> list[dict[str, Any]]:
    """The ``pim.step`` telemetry events of ``chain`` in the host's log (one JSON log record per line)."""
    events = []
    for line in host.log_path.read_text(errors="replace").splitlines():
        if '"pim.step ' not in line:
            continue
        event = telemetry.parse(json.loads(line)["msg"])
        if event is not None and event["chain"] == chain:
            events.append(event)
    return events
