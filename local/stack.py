"""The local stack: Azurite + the devhost running ``function_app``, for ``make run`` and ``make demo``.

``python -m local.stack run``  starts the stack for manual use (state kept in .local/) and prints its URLs.
``python -m local.stack demo`` starts a throw-away stack, runs the demonstration, stops everything, and
exits non-zero if the demonstration did not end as expected.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from local.azurite import DEFAULT_PORT, Azurite, connection_string
from local.devhost.config import HUB_OVERRIDE
from local.processes import LOOPBACK, ManagedProcess, free_port
from local.simulators.identity import TOKEN_PATH
from local.simulators.process import SimulatorProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SETTINGS = REPO_ROOT / "local.settings.sample.json"
SIMULATOR_PORT = 7081
# The settings file is authoritative for these: never inherit them from the caller's environment.
_ISOLATED_ENV = ("AzureWebJobsStorage", HUB_OVERRIDE)


class DevhostProcess(ManagedProcess):
    """One ``python -m local.devhost`` process with its settings file and its log (stdout + stderr)."""

    def __init__(
        self,
        settings_path: Path,
        log_path: Path,
        port: int | None = None,
        app: str = "function_app:app",
        env: dict[str, str] | None = None,
    ) -> None:
        # SIGKILL at interpreter exit (Ctrl-C between a start and its stop): a graceful shutdown could
        # hold the exit up, and the devhost, like the Functions host, must survive a crash anyway.
        super().__init__("devhost", log_path=log_path, exit_signal=signal.SIGKILL)
        self.settings_path = settings_path
        self.port = port or free_port()
        self.app = app
        self.env = env or {}
        self.started_wall: float | None = None  # time.time() just before the last start

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        path = super().log_path
        assert path is not None  # given to the constructor
        return path

    @property
    def keys(self) -> dict[str, Any]:
        """The ``Keys`` object the devhost wrote back into the settings file on its first start."""
        return dict(json.loads(self.settings_path.read_text())["Keys"])

    @property
    def function_key(self) -> str:
        return str(self.keys["host"]["default"])

    def start(self, timeout: float = 30.0) -> None:
        command = [sys.executable, "-m", "local.devhost", "--root", str(REPO_ROOT), "--app", self.app,
                   "--settings", str(self.settings_path), "--port", str(self.port)]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in _ISOLATED_ENV}
        env.update(self.env, PYTHONUNBUFFERED="1")
        self.started_wall = time.time()
        self._launch(
            command,
            ready=lambda: httpx.get(f"{self.url}/admin/host/ping", timeout=1.0).status_code == 200,
            transient=(httpx.TransportError,),
            timeout=timeout,
            cwd=REPO_ROOT,
            env=env,
        )

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int | None:
        """Send ``sig`` and return the exit code; SIGKILL and RuntimeError if it does not exit in time."""
        return self._stop(sig, timeout, strict=True)

    def restart(self) -> None:
        if self.running:
            self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        return super().log_tail(lines)

    def _startup_failure(self, code: int | None, timeout: float) -> str:
        if code is not None:
            return f"devhost exited with {code}"
        return f"devhost did not answer within {timeout} s"


def write_settings(path: Path, storage: str, extra: dict[str, str] | None = None) -> None:
    """A local settings file from the committed sample, pointed at the given storage, with ``extra``
    values on top (an empty value removes that setting)."""
    settings = json.loads(SAMPLE_SETTINGS.read_text())
    settings["Values"]["AzureWebJobsStorage"] = storage
    for name, value in (extra or {}).items():
        if value:
            settings["Values"][name] = value
        else:
            settings["Values"].pop(name, None)
    path.write_text(json.dumps(settings, indent=2) + "\n")


# ------------------------------------------------------------------ make run


def run(port: int) -> int:
    state = REPO_ROOT / ".local"
    state.mkdir(exist_ok=True)
    settings = REPO_ROOT / "local.settings.json"
    if not settings.exists():
        shutil.copyfile(SAMPLE_SETTINGS, settings)
        print(f"created {settings.name} from {SAMPLE_SETTINGS.name}")
    azurite = Azurite(location=state / "azurite", port=DEFAULT_PORT)
    azurite.start()
    # On the port local.settings.sample.json names for every simulated service.
    simulators = SimulatorProcess(port=SIMULATOR_PORT, log_path=state / "simulators.log")
    devhost = DevhostProcess(
        settings, state / "devhost.log", port=port, env={"AzureWebJobsStorage": azurite.connection_string}
    )
    try:
        simulators.start()
        devhost.start()
        print(
            f"""
Local stack running (Ctrl-C stops it):
  Functions app     {devhost.url}/api/            (function key: Keys.host.default in {settings.name})
  Durable self-check curl -X POST '{devhost.url}/api/selfcheck?code=<key>'
  Host status       {devhost.url}/admin/host/status?code=<Keys.master>
  ITSM webhooks     POST {devhost.url}/api/itsm/servicenow | jira   (signed; see docs/intake.md)
  Simulators        {simulators.url}/  (Graph, ServiceNow, Jira, PagerDuty; control API at /_sim)
  Azurite (tables)  {azurite.table_endpoint}     (state in .local/azurite)
  logs              .local/devhost.log, .local/simulators.log
""",
            flush=True,
        )
        # Explicit handlers: a shell script's background job starts with SIGINT ignored.
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        devhost.stop()
        simulators.stop()
        azurite.stop()
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# ------------------------------------------------------------------ make demo


def demo() -> int:
    from local.demo import QUIET_SWEEP_SCHEDULE, run_demo, write_demo_policy

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pim-demo-") as temp, Azurite() as azurite:
        work = Path(temp)
        policy = write_demo_policy(work)  # the production policy with seconds for minutes
        simulators = SimulatorProcess(log_path=work / "simulators.log")
        simulators.start()
        settings = work / "local.settings.json"
        write_settings(settings, connection_string(azurite.port), {
            **simulators.settings, "IDENTITY_ENDPOINT": simulators.url + TOKEN_PATH,
            "POLICY_PATH": str(policy), "SWEEP_SCHEDULE": QUIET_SWEEP_SCHEDULE,
        })  # fmt: skip
        devhost = DevhostProcess(settings, work / "devhost.log")
        try:
            devhost.start()
            ok = run_demo(devhost, simulators, azurite.connection_string, policy)
        except Exception as exc:
            print(f"demo failed: {type(exc).__name__}: {exc}\n--- devhost log ---\n{devhost.log_tail()}")
            ok = False
        finally:
            code = devhost.stop()
            simulators.stop()
            print(f"devhost stopped (exit code {code}); simulators and Azurite stopping")
    print(f"make demo: {'PASSED' if ok else 'FAILED'} in {time.monotonic() - began:.0f} s (stack included)")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.stack")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="start Azurite + devhost for manual use")
    run_parser.add_argument("--port", type=int, default=7071)
    sub.add_parser("demo", help="run the demonstration on a throw-away stack")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.port)
    return demo()


if __name__ == "__main__":
    sys.exit(main())
