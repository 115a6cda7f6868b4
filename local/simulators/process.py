"""Run the simulators as a child process, for tests and the demo.

Usage::

    with SimulatorProcess() as sim:  # free port, log in a temporary directory
        env = sim.settings            # {"GRAPH_BASE_URL": "http://127.0.0.1:PORT/graph/v1.0", ...}
        sim.seed("graph/users", {"userPrincipalName": "alex@contoso.test"})
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

__all__ = ["DEFAULT_PORT", "SimulatorProcess"]

DEFAULT_PORT = 7081
LOG_FILE_NAME = "simulators.log"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_LOOPBACK = "127.0.0.1"
_READY_TIMEOUT_S = 20.0

# Path prefixes of the services (local/simulators/app.py mounts them) and the settings that point at them.
PREFIXES = {"graph": "/graph/v1.0", "servicenow": "/servicenow", "jira": "/jira", "pagerduty": "/pagerduty"}
SETTINGS = {
    "graph": "GRAPH_BASE_URL",
    "servicenow": "SERVICENOW_BASE_URL",
    "jira": "JIRA_BASE_URL",
    "pagerduty": "PAGERDUTY_BASE_URL",
}


def _free_port() -> int:
    # Imported lazily: local.azurite pulls in azure-data-tables, which a simulator-only user does not need.
    from local.azurite import free_port

    return free_port()


class SimulatorProcess:
    """One ``python -m local.simulators`` process on loopback, in its own session (a terminal Ctrl-C does
    not reach it; :meth:`stop` sends exactly one SIGINT)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self._port = port if port is not None else _free_port()
        self._log_path = log_path
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._reaper: weakref.finalize[[subprocess.Popen[bytes]], SimulatorProcess] | None = None
        self._client: httpx.Client | None = None

    # -- addresses ----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{_LOOPBACK}:{self._port}"

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
    def settings(self) -> dict[str, str]:
        """The app settings that point the app at these simulators."""
        return {SETTINGS[name]: self.url + prefix for name, prefix in PREFIXES.items()}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        if self._log_path is not None:
            return self._log_path
        return self._workdir / LOG_FILE_NAME if self._workdir is not None else None

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self, timeout: float = _READY_TIMEOUT_S) -> SimulatorProcess:
        if self.running:
            raise RuntimeError(f"simulators already running (pid {self.pid}, port {self._port})")
        log_path = self._ensure_log_path()
        self._close_log()
        self._log = log_path.open("ab")
        argv = [sys.executable, "-m", "local.simulators", "--port", str(self._port)]
        try:
            self._proc = subprocess.Popen(
                argv,
                cwd=_REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
            # Safety net for callers that never call stop(): no orphan simulator after interpreter exit.
            self._reaper = weakref.finalize(self, _stop_process, self._proc)
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 10.0) -> int | None:
        """Send ``sig`` (SIGINT by default) and return the exit code; SIGKILL if it does not exit in time."""
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                _signal_group(proc, sig)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.kill()
            return proc.returncode
        finally:
            self._close_log()

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._close_log()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SimulatorProcess(port={self._port}, pid={self.pid}, running={self.running})"

    # -- control API --------------------------------------------------------------------------------------

    def control(self, method: str, path: str, json: Any = None, **params: str) -> Any:
        """Call the control API (``path`` relative to ``/_sim``) and return its JSON; raises on an error."""
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

    # -- internals ----------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=40.0)
        return self._client

    def _ensure_log_path(self) -> Path:
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            return self._log_path
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="simulators-"))
            # Kept while this object lives so that a failing test can still read the log.
            weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
        return self._workdir / LOG_FILE_NAME

    def _wait_ready(self, timeout: float) -> None:
        # A real control-API call rather than a port probe: it proves the app, not just the socket, is up.
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(f"simulators exited with code {code} during startup:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.control_url}/state", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError as err:
                last_error = err
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"simulators did not answer on {self.url} within {timeout:.0f}s "
                    f"(last error: {last_error!r}):\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _close_log(self) -> None:
        # Called after every stop/kill, so it also disarms the exit safety net and closes the HTTP client.
        if self._reaper is not None:
            self._reaper.detach()
            self._reaper = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._client is not None:
            self._client.close()
            self._client = None


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.returncode is not None:
        return  # already reaped: the pid may belong to an unrelated process by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the child leads its own session: its pid is its process group id


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Finalizer: must not reference the SimulatorProcess, or it would keep it alive forever."""
    if proc.poll() is not None:
        return
    _signal_group(proc, signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
