"""Run the simulators as a child process, for tests and the demo.

Usage::

    with SimulatorProcess() as sim:  # free port, log in a temporary directory
        env = sim.settings            # {"GRAPH_BASE_URL": "http://127.0.0.1:PORT/graph/v1.0", ...}
        sim.seed("graph/users", {"userPrincipalName": "alex@contoso.test"})
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from local.processes import LOOPBACK, ManagedProcess, free_port

from .bot_tokens import METADATA_PATH

__all__ = ["DEFAULT_PORT", "SimulatorProcess"]

DEFAULT_PORT = 7081
LOG_FILE_NAME = "simulators.log"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_READY_TIMEOUT_S = 20.0

# Path prefixes of the services (local/simulators/app.py mounts them) and the settings that point at them.
PREFIXES = {
    "graph": "/graph/v1.0",
    "servicenow": "/servicenow",
    "jira": "/jira",
    "pagerduty": "/pagerduty",
    "teams": "/teams",
    "exchange": "/exchange",
}
SETTINGS = {
    "graph": "GRAPH_BASE_URL",
    "servicenow": "SERVICENOW_BASE_URL",
    "jira": "JIRA_BASE_URL",
    "pagerduty": "PAGERDUTY_BASE_URL",
    "teams": "BOT_CONNECTOR_SERVICE_URL",
    "exchange": "EXCHANGE_ADMIN_BASE_URL",
}
BOT_OPENID_METADATA_SETTING = "BOT_OPENID_METADATA_URL"


class SimulatorProcess(ManagedProcess):
    """One ``python -m local.simulators`` process on loopback, in its own session (a terminal Ctrl-C does
    not reach it; :meth:`stop` sends exactly one SIGINT)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        super().__init__("simulators", log_path=log_path, log_name=LOG_FILE_NAME)
        self._port = port if port is not None else free_port()
        self._client: httpx.Client | None = None

    # -- addresses ----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def control_url(self) -> str:
        return f"{self.url}/_sim"

    @property
    def graph_base_url(self) -> str:
        return self.url + PREFIXES["graph"]

    @property
    def servicenow_base_url(self) -> str:
        return self.url + PREFIXES["servicenow"]

    @property
    def jira_base_url(self) -> str:
        return self.url + PREFIXES["jira"]

    @property
    def pagerduty_base_url(self) -> str:
        return self.url + PREFIXES["pagerduty"]

    @property
    def teams_base_url(self) -> str:
        """The Bot Connector "serviceUrl" (``BOT_CONNECTOR_SERVICE_URL``)."""
        return self.url + PREFIXES["teams"]

    @property
    def exchange_base_url(self) -> str:
        """Exchange Online's admin API (``EXCHANGE_ADMIN_BASE_URL``): ``{this}/adminapi/beta/{tenant}``."""
        return self.url + PREFIXES["exchange"]

    @property
    def bot_openid_metadata_url(self) -> str:
        return self.url + METADATA_PATH

    @property
    def settings(self) -> dict[str, str]:
        """The app settings that point the app at these simulators."""
        settings = {SETTINGS[name]: self.url + prefix for name, prefix in PREFIXES.items()}
        settings[BOT_OPENID_METADATA_SETTING] = self.bot_openid_metadata_url
        return settings

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self, timeout: float = _READY_TIMEOUT_S) -> SimulatorProcess:
        # A real control-API call rather than a port probe: it proves the app, not just the socket, is up.
        self._launch(
            [sys.executable, "-m", "local.simulators", "--port", str(self._port)],
            ready=lambda: httpx.get(f"{self.control_url}/state", timeout=1.0).status_code == 200,
            transient=(httpx.TransportError,),
            timeout=timeout,
            poll_interval=0.05,
            cwd=_REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __repr__(self) -> str:
        return f"SimulatorProcess(port={self._port}, pid={self.pid}, running={self.running})"

    # -- control API --------------------------------------------------------------------------------------

    def control(self, method: str, path: str, /, json: Any = None, **params: str) -> Any:
        """Call the control API (``path`` relative to ``/_sim``) and return its JSON; raises on an error.
        ``params`` are query parameters (``method`` and ``path`` among them: the first two are positional)."""
        client = self._http()
        response = client.request(
            method, f"{self.control_url}/{path.lstrip('/')}", json=json, params=params or None
        )
        if response.status_code >= 400:
            raise RuntimeError(
                f"{method} /_sim/{path.lstrip('/')} -> {response.status_code}: {response.text}"
            )
        return response.json()

    def reset(self) -> None:
        self.control("POST", "reset")

    def state(self) -> Any:
        return self.control("GET", "state")

    def seed(self, kind: str, items: Any) -> Any:
        """``seed("graph/users", {...})`` or a list: POST /_sim/<kind>; returns what was stored."""
        return self.control("POST", kind, json=items)

    def calls(self, service: str | None = None, **filters: str) -> list[Any]:
        params = {"service": service, **filters} if service else dict(filters)
        return list(self.control("GET", "calls", **params)["calls"])

    def calls_summary(self, service: str | None = None, **filters: str) -> dict[str, int]:
        """Calls per endpoint, ids normalised to ``{id}``: ``{"POST /roleManagement/...": 1, ...}``."""
        params = {"service": service, **filters} if service else dict(filters)
        return dict(self.control("GET", "calls/summary", **params)["counts"])

    def fault(self, **spec: Any) -> str:
        """Inject one fault (``service``, ``status``, ``path_contains``, ``after``, ...); returns its id."""
        return str(self.control("POST", "faults", json=spec)["faults"][0])

    def pim_behaviour(self, **spec: Any) -> Any:
        """``POST /_sim/graph/pim-behaviour``: how PIM treats requests for ``roleDefinitionId`` (or every
        role without one): ``statuses``, ``final``, ``propagation``, ``policyFailure``,
        ``minimumActiveSeconds``. Returns the role's behaviour in effect."""
        return self.control("POST", "graph/pim-behaviour", json=spec)

    def pim_stores(self) -> Any:
        """``GET /_sim/graph/stores``: each assignment, when each store shows it, and the ended ones."""
        return self.control("GET", "graph/stores")

    def click(self, **spec: Any) -> Any:
        """A user clicks a button on a Teams card: ``POST /_sim/teams/click`` with ``spec`` (``botUrl``,
        ``conversationId``, ``activityId``, ``verb``, ``user``, ``tenantId``, ``botAppId``, ...); returns
        ``{status, body, invoke, headers, cardUpdated}`` (the bot's answer). Raises on a control error."""
        return self.control("POST", "teams/click", json=spec)

    def teams_conversation(self, conversation_id: str) -> Any:
        """``{members, activities}`` of one Teams conversation (ids with ``:``/``@``/``;`` are quoted)."""
        return self.control("GET", f"teams/conversations/{quote(conversation_id, safe='')}")

    # -- internals ----------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=40.0)
        return self._client

    def _on_stopped(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
