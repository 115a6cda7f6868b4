"""Start and stop an Azurite Table Storage emulator for local runs and tests.

Only the Table service is started: it is the only storage the app needs locally, and
``azurite-table`` starts faster and opens one port instead of three.

Usage as a library::

    with Azurite() as azurite:  # in-memory, free port
        client = TableServiceClient.from_connection_string(azurite.connection_string)

Usage from a terminal (foreground until Ctrl-C)::

    python -m local.azurite [--port 10002] [--location .local/azurite] [--in-memory]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from azure.core.exceptions import AzureError
from azure.data.tables import TableServiceClient

from local.processes import LOOPBACK, ManagedProcess, free_port

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "DEFAULT_PORT",
    "Azurite",
    "connection_string",
    "free_port",
    "main",
]

AZURITE_ACCOUNT = "devstoreaccount1"
# The well-known development storage key, published by Microsoft for the emulator; not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEFAULT_PORT = 10002
LOG_FILE_NAME = "azurite-table.log"

_REPO_ROOT = Path(__file__).resolve().parents[1]
_READY_TIMEOUT_S = 20.0


def table_endpoint(port: int) -> str:
    # Path-style URL (account in the path) because Azurite cannot derive the account from 127.0.0.1.
    return f"http://{LOOPBACK}:{port}/{AZURITE_ACCOUNT}"


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"TableEndpoint={table_endpoint(port)};"
    )


class Azurite(ManagedProcess):
    """One ``azurite-table`` process on loopback.

    ``location=None`` keeps all data in memory (lost on stop); otherwise data lives on disk in
    ``location`` and survives :meth:`stop`/:meth:`restart` as long as the stop is a SIGINT: Azurite's
    on-disk store (LokiJS) only autosaves every few seconds and flushes on SIGINT, so after
    SIGTERM/SIGKILL the most recent writes can be lost. SIGINT is therefore the default of
    :meth:`stop` and what the safety net sends at interpreter exit.
    """

    def __init__(
        self,
        location: Path | None = None,
        port: int | None = None,
        repo_root: Path = _REPO_ROOT,
    ) -> None:
        self._location = Path(location).resolve() if location is not None else None
        self._port = port if port is not None else free_port()
        self._repo_root = Path(repo_root)
        log_path = self._location / LOG_FILE_NAME if self._location is not None else None
        super().__init__("Azurite", log_path=log_path, log_name=LOG_FILE_NAME)

    # -- properties ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def location(self) -> Path | None:
        return self._location

    @property
    def connection_string(self) -> str:
        return connection_string(self._port)

    @property
    def table_endpoint(self) -> str:
        return table_endpoint(self._port)

    # -- lifecycle ----------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The argv used to start Azurite (checks that Node.js and the npm package exist)."""
        script = self._repo_root / "node_modules" / ".bin" / "azurite-table"
        if not script.exists():
            raise RuntimeError(
                f"Azurite is not installed: {script} does not exist. "
                f"Run `npm ci` in {self._repo_root} to install it from package-lock.json."
            )
        node = shutil.which("node")
        if node is None:
            raise RuntimeError(
                "Node.js is required to run Azurite but `node` was not found on PATH. "
                "Install Node.js (LTS) and make sure `node` is on PATH."
            )
        # Run the script through node explicitly: does not depend on the exec bit or on which
        # `node` the shebang's `env` would find, and the child pid is the node process itself.
        argv = [
            node,
            str(script),
            "--tableHost",
            LOOPBACK,
            "--tablePort",
            str(self._port),
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ]
        if self._location is None:
            argv.append("--inMemoryPersistence")
        else:
            argv += ["--location", str(self._location)]
        return argv

    def start(self) -> Azurite:
        argv = self.command()
        # A real Table API call rather than a port probe: the socket accepts before the store is
        # loaded. No SDK retries (they back off for seconds): _launch polls.
        client = TableServiceClient.from_connection_string(
            self.connection_string, retry_total=0, connection_timeout=1, read_timeout=2
        )

        def answers() -> bool:
            list(client.list_tables())
            return True

        with client:
            # No cwd: the default, the log's directory, keeps the scratch files in-memory Azurite still
            # writes to its cwd out of the repo.
            # The header keeps the runs apart in a log that restart() appends to, so a failure shows both.
            self._launch(argv, ready=answers, transient=(AzureError,), timeout=_READY_TIMEOUT_S, header=True)
        return self

    def restart(self) -> Azurite:
        """Stop with SIGINT (flushing on-disk data) and start again on the same port and location."""
        self.stop(signal.SIGINT)
        return self.start()

    def __enter__(self) -> Azurite:
        return self.start()

    def __repr__(self) -> str:
        where = str(self._location) if self._location is not None else "in-memory"
        return f"Azurite(port={self._port}, location={where}, pid={self.pid}, running={self.running})"

    def _startup_failure(self, code: int | None, timeout: float) -> str:
        if code is not None:
            return f"Azurite exited with code {code} during startup (port {self._port})"
        return f"Azurite did not answer on {self.table_endpoint} within {timeout:.0f}s"


# -- CLI ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.azurite",
        description="Run the Azurite Table emulator in the foreground until Ctrl-C / SIGTERM.",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="Table port, 0 picks a free one (default %(default)s)"
    )
    parser.add_argument(
        "--location",
        type=Path,
        default=_REPO_ROOT / ".local" / "azurite",
        help="data directory for on-disk persistence (default: <repo>/.local/azurite)",
    )
    parser.add_argument(
        "--in-memory", action="store_true", help="keep data in memory only (ignores --location)"
    )
    args = parser.parse_args(argv)

    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only record it: stop() below forwards a single SIGINT so Azurite can flush to disk.
        stop_requested.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    azurite = Azurite(location=None if args.in_memory else args.location, port=args.port or None)
    try:
        try:
            azurite.start()
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        data = "in-memory" if azurite.location is None else str(azurite.location)
        print(
            f"Azurite Table endpoint {azurite.table_endpoint} (account {AZURITE_ACCOUNT}, data {data}, "
            f"log {azurite.log_path}, pid {azurite.pid}); Ctrl-C to stop",
            flush=True,
        )
        while azurite.running and not stop_requested.wait(0.5):
            pass
        if not stop_requested.is_set():
            # Azurite exited on its own (crash, or someone signalled it directly): follow it.
            code = azurite.stop() or 0
            if code != 0:
                print(
                    f"Azurite exited with code {code}. Log {azurite.log_path}:\n{azurite.log_tail()}",
                    file=sys.stderr,
                )
            # Popen reports death-by-signal as -N; shells expect 128+N.
            return 128 - code if code < 0 else code
        azurite.stop(signal.SIGINT)
        return 0
    finally:
        azurite.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
