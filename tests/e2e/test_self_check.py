"""End to end: the Durable self-check of the real function_app through HTTP on the devhost."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from local.stack import DevhostProcess

pytestmark = pytest.mark.stack


def _client(host: DevhostProcess, key: str | None = None) -> httpx.Client:
    params = {"code": key if key is not None else host.function_key}
    return httpx.Client(base_url=host.url, params=params, timeout=10.0)


def _wait_for(client: httpx.Client, url: str, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(url).json()
        if predicate(body):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{url} did not reach the expected state: last {body}")


def test_self_check_passes_through_activity_timer_and_acknowledgement(app_host: DevhostProcess) -> None:
    with _client(app_host) as client:
        started = client.post("/api/selfcheck", json={"timerSeconds": 1, "acknowledgeWithinSeconds": 30})
        assert started.status_code == 202
        body = started.json()
        assert body["statusUrl"].endswith(f"/api/selfcheck/{body['instanceId']}")
        assert "code=" not in started.text, "Durable management URLs (with the system key) must not leak"
        status_url = f"/api/selfcheck/{body['instanceId']}"
        _wait_for(
            client,
            status_url,
            lambda b: (b.get("customStatus") or {}).get("stage") == "awaiting_acknowledgement",
        )
        assert client.post(f"{status_url}/acknowledge").status_code == 202
        final = _wait_for(client, status_url, lambda b: b["runtimeStatus"] == "Completed")
    steps = [step["step"] for step in final["output"]["steps"]]
    assert final["output"]["outcome"] == "passed"
    assert steps == ["activity", "timer", "awaiting_acknowledgement", "acknowledged"]
    environment = final["output"]["steps"][0]["environment"]
    assert environment["policyHash"].startswith("sha256:")
    assert environment["appVersion"]


def test_self_check_without_acknowledgement_ends_at_its_deadline(app_host: DevhostProcess) -> None:
    with _client(app_host) as client:
        started = client.post("/api/selfcheck", json={"timerSeconds": 1, "acknowledgeWithinSeconds": 1})
        status_url = f"/api/selfcheck/{started.json()['instanceId']}"
        final = _wait_for(client, status_url, lambda b: b["runtimeStatus"] == "Completed")
        assert final["output"]["outcome"] == "no acknowledgement before the deadline"
        late = client.post(f"{status_url}/acknowledge")
    assert late.status_code == 409


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"timerSeconds": 0}', "timerSeconds must be an integer from 1 to 300"),
        (b'{"acknowledgeWithinSeconds": 4000}', "acknowledgeWithinSeconds must be an integer from 1 to 3600"),
        (b'{"timerSeconds": true}', "timerSeconds must be an integer"),
        (b'{"delay": 1}', "unknown field(s): delay"),
        (b"[1]", "must be a JSON object"),
    ],
)
def test_self_check_rejects_bad_input_with_a_clear_message(
    app_host: DevhostProcess, body: bytes, message: str
) -> None:
    with _client(app_host) as client:
        response = client.post("/api/selfcheck", content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_self_check_routes_need_a_function_key(app_host: DevhostProcess) -> None:
    with _client(app_host, key="not-a-key") as client:
        assert client.post("/api/selfcheck").status_code == 401
    with httpx.Client(base_url=app_host.url) as anonymous:
        assert anonymous.post("/api/selfcheck").status_code == 401


def test_unknown_self_check_is_404(app_host: DevhostProcess) -> None:
    with _client(app_host) as client:
        assert client.get("/api/selfcheck/selfcheck-doesnotexist").status_code == 404
        assert client.get("/api/selfcheck/other-instance").status_code == 404
        assert client.post("/api/selfcheck/selfcheck-doesnotexist/acknowledge").status_code == 404
