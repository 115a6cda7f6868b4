"""Fixtures for the devhost conformance suite: a ``Devhost`` process driver and its fixtures.

``Devhost`` runs ``python -m local.devhost`` with ``tests.devhost.sample_app:app`` against the
session's Azurite, one task hub per devhost (tests never see each other's instances), and offers
HTTP helpers plus direct reads of the persisted Table Storage rows. Every process is started in its
own session and SIGKILLed by a finalizer whatever happens, so a failing test leaves no orphan.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient

from local.azurite import Azurite
from local.devhost.config import HUB_OVERRIDE
from local.devhost.store import TERMINAL_STATUSES, read_committed_history
from local.stack import DevhostProcess

SAMPLE_APP = "tests.devhost.sample_app:app"

T = TypeVar("T")


def unique_hub(label: str) -> str:
    """A task hub name (letters/digits, starts with a letter, <= 45 chars) unique to this run."""
    return "T" + re.sub(r"[^A-Za-z0-9]", "", label)[:24] + uuid.uuid4().hex[:12]


def poll(
    predicate: Callable[[], T | None], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Call ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


class Devhost(DevhostProcess):
    """``local.stack.DevhostProcess`` serving the sample app, with its own task hub and state dir."""

    def __init__(self, workdir: Path, connection_string: str, hub: str) -> None:
        self.workdir = workdir
        self.hub = hub
        self.connection_string = connection_string
        self.state_dir = workdir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        settings_path = workdir / "local.settings.json"
        settings_path.write_text(
            json.dumps(
                {
                    "IsEncrypted": False,
                    "Values": {
                        "FUNCTIONS_WORKER_RUNTIME": "python",
                        "AzureWebJobsStorage": connection_string,
                        "SAMPLE_APP_STATE_DIR": str(self.state_dir),
                        "SAMPLE_TIMER_SCHEDULE": "0 0 0 1 1 *",
                        HUB_OVERRIDE: hub,
                    },
                },
                indent=2,
            )
        )
        super().__init__(settings_path, workdir / "devhost.log", app=SAMPLE_APP)
        self._http = httpx.Client(base_url=self.url, timeout=10.0)
        self._tables: TableServiceClient | None = None

    def start(self, timeout: float = 30.0) -> Devhost:  # type: ignore[override]
        super().start(timeout)
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        code = super().stop(sig, timeout)
        assert code is not None, "devhost never started"
        return code

    def restart(self) -> Devhost:  # type: ignore[override]
        super().restart()
        return self

    def close(self) -> None:
        self.kill()
        self._http.close()
        if self._tables is not None:
            self._tables.close()

    # ------------------------------------------------------------------ keys and HTTP

    @property
    def master_key(self) -> str:
        return str(self.keys["master"])

    @property
    def host_key(self) -> str:
        return self.function_key

    def request(
        self, method: str, path: str, *, key: str | None = "host", key_in: str = "header", **kwargs: Any
    ) -> httpx.Response:
        """``key``: "host" or "master" (that key), None (no key) or a literal key value."""
        if key is not None:
            value = {"host": self.host_key, "master": self.master_key}.get(key, key)
            if key_in == "header":
                kwargs["headers"] = {**kwargs.get("headers", {}), "x-functions-key": value}
            else:
                kwargs["params"] = {**kwargs.get("params", {}), "code": value}
        return self._http.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def ping(self) -> int:
        return self._http.get("/admin/host/ping").status_code

    def host_status(self) -> dict[str, Any]:
        response = self.get("/admin/host/status", key="master")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    # ------------------------------------------------------------------ Durable helpers (sample app)

    def start_orchestration(self, name: str, payload: Any = None, instance_id: str | None = None) -> str:
        params = {"instanceId": instance_id} if instance_id else {}
        kwargs: dict[str, Any] = {"params": params}
        if payload is not None:
            kwargs["json"] = payload
        response = self.post(f"/api/start/{name}", **kwargs)
        assert response.status_code == 202, f"start {name}: {response.status_code} {response.text}"
        new_id: str = response.json()["id"]
        return new_id

    def raise_event(self, instance_id: str, name: str, payload: Any = None) -> httpx.Response:
        return self.post(f"/api/instances/{instance_id}/events/{name}", json=payload)

    def status(self, instance_id: str) -> dict[str, Any] | None:
        response = self.get(f"/api/instances/{instance_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, f"status {instance_id}: {response.status_code} {response.text}"
        body: dict[str, Any] = response.json()
        return body

    def wait_status(
        self, instance_id: str, statuses: str | tuple[str, ...] = "Completed", timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll GET /api/instances/{id} every 0.1 s until its runtimeStatus is one of ``statuses``.

        Fails at once if the instance ends in a status that is not wanted.
        """
        wanted = (statuses,) if isinstance(statuses, str) else tuple(statuses)
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            last = self.status(instance_id)
            current = last["runtimeStatus"] if last else None
            if current in wanted:
                assert last is not None
                self._wait_committed(instance_id, current, deadline)
                return last
            if current in TERMINAL_STATUSES:
                raise AssertionError(f"instance {instance_id} ended {current}, wanted {wanted}: {last}")
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"instance {instance_id} not {wanted} within {timeout:.0f}s; last status {last}"
                )
            time.sleep(0.1)

    def _wait_committed(self, instance_id: str, status: str, deadline: float) -> None:
        """Wait until the persisted instance row agrees with a status the API reported.

        Tests read the persisted history right after a status change; this keeps them independent
        of how fast the devhost commits (``test_status_api_reports_only_committed_state`` checks
        that the API never reports a state before it is committed).
        """
        deadline = max(deadline, time.monotonic() + 5.0)
        while True:
            row = self.instance_row(instance_id)
            persisted = row.get("RuntimeStatus") if row else None
            if persisted == status:
                return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the API reports instance {instance_id} {status} but its persisted row says {persisted}"
                )
            time.sleep(0.05)

    def counter(self, name: str) -> int | None:
        """A counter file the sample app keeps in SAMPLE_APP_STATE_DIR (None if never written)."""
        path = self.state_dir / f"{name}.count"
        return int(path.read_text()) if path.exists() else None

    # ------------------------------------------------------------------ logs

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON object logged on stderr (all runs of this devhost, oldest first)."""
        found = []
        for line in self.raw_log_lines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    found.append(parsed)
        return found

    def raw_log_lines(self) -> list[str]:
        if not self.log_path.exists():
            return []
        return [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]

    def events(self, event: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        return [
            line
            for line in self.log_lines()
            if (event is None or line.get("event") == event)
            and all(line.get(k) == v for k, v in fields.items())
        ]

    def wait_event(self, event: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        found = poll(lambda: self.events(event, **fields), timeout, what=f"log event {event} {fields}")
        return found[0]

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no devhost log)"
        with self.log_path.open(errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))

    # ------------------------------------------------------------------ persisted state (Azurite)

    def _table(self, suffix: str) -> Any:
        if self._tables is None:
            self._tables = TableServiceClient.from_connection_string(self.connection_string)
        return self._tables.get_table_client(f"{self.hub}{suffix}")

    def instance_row(self, instance_id: str) -> dict[str, Any] | None:
        """The ``{hub}Instances`` row of an instance (None if there is none)."""
        try:
            return dict(self._table("Instances").get_entity(instance_id, "state"))
        except ResourceNotFoundError:
            return None

    def all_history_rows(self, instance_id: str) -> list[dict[str, Any]]:
        """Every ``{hub}History`` row of the partition, committed or not, ordered by RowKey."""
        rows = [
            dict(row)
            for row in self._table("History").query_entities(
                "PartitionKey eq @pk", parameters={"pk": instance_id}
            )
        ]
        return sorted(rows, key=lambda row: row["RowKey"])

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        """The committed history as ``{"EventType", "EventId", "Name", "Event": the parsed event}`` rows."""
        events = read_committed_history(self.connection_string, self.hub, instance_id)
        return [
            {
                "EventType": int(e["EventType"]),
                "EventId": e.get("EventId"),
                "Name": e.get("Name") or "",
                "Event": e,
            }
            for e in events
        ]

    def event_types(self, instance_id: str) -> list[int]:
        return [int(row["EventType"]) for row in self.history(instance_id)]

    def wait_history(
        self, instance_id: str, event_type: int, count: int = 1, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Poll the committed history until it holds ``count`` events of ``event_type``; return it."""

        def enough() -> list[dict[str, Any]] | None:
            history = self.history(instance_id)
            return history if sum(r["EventType"] == event_type for r in history) >= count else None

        return poll(enough, timeout, what=f"{count} history event(s) of type {event_type} for {instance_id}")

    # Tests use the polling helper through the fixture (conftest modules are not imported directly).
    poll = staticmethod(poll)


def _make_devhost(workdir: Path, azurite: Azurite, label: str) -> Devhost:
    return Devhost(workdir, azurite.connection_string, unique_hub(label))


class DevhostFactory:
    """Creates devhosts for one test (each with its own task hub and state dir) and kills them all."""

    def __init__(self, tmp_path: Path, azurite: Azurite, label: str) -> None:
        self._tmp_path = tmp_path
        self._azurite = azurite
        self._label = label
        self.created: list[Devhost] = []

    def __call__(self, start: bool = True, azurite: Azurite | None = None) -> Devhost:
        """A new devhost (started unless ``start=False``), on the session Azurite unless one is given."""
        workdir = self._tmp_path / f"devhost{len(self.created)}"
        workdir.mkdir()
        host = _make_devhost(workdir, azurite or self._azurite, self._label)
        self.created.append(host)
        return host.start() if start else host

    def close(self) -> None:
        for host in self.created:
            host.close()


@pytest.fixture(scope="module")
def devhost(
    tmp_path_factory: pytest.TempPathFactory, azurite: Azurite, request: pytest.FixtureRequest
) -> Iterator[Devhost]:
    """A devhost shared by the tests of one module (its own task hub)."""
    label = request.module.__name__.rsplit(".", 1)[-1]
    host = _make_devhost(tmp_path_factory.mktemp("devhost"), azurite, label)
    try:
        host.start()
        yield host
    finally:
        host.close()


@pytest.fixture
def devhost_factory(
    tmp_path: Path, azurite: Azurite, request: pytest.FixtureRequest
) -> Iterator[DevhostFactory]:
    """Function-scoped devhosts (for kill/restart and shutdown tests): ``host = devhost_factory()``."""
    factory = DevhostFactory(tmp_path, azurite, request.node.name)
    try:
        yield factory
    finally:
        factory.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the stderr tail of every devhost a failing test used to its report."""
    report = yield
    if report.failed:
        hosts: list[Devhost] = []
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Devhost):
                hosts.append(value)
            elif isinstance(value, DevhostFactory):
                hosts.extend(value.created)
        for host in hosts:
            report.sections.append((f"devhost {host.hub} stderr (tail)", host.log_tail(40)))
    return report
