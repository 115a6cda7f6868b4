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
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

from azure.core.exceptions import AzureError
from azure.data.tables import TableServiceClient

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
_LOOPBACK = "127.0.0.1"
_READY_TIMEOUT_S = 20.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    There is a small window in which another process can take it; acceptable for local runs.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def table_endpoint(port: int) -> str:
    # Path-style URL (account in the path) because Azurite cannot derive the account from 127.0.0.1.
    return f"http://{_LOOPBACK}:{port}/{AZURITE_ACCOUNT}"


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"TableEndpoint={table_endpoint(port)};"
    )


class Azurite:
    """One ``azurite-table`` process on loopback.

    ``location=None`` keeps all data in memory (lost on stop); otherwise data lives on disk in
    ``location`` and survives :meth:`stop`/:meth:`restart` as long as the stop is a SIGINT.
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
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._workdir: Path | None = None
        self._reaper: weakref.finalize[[subprocess.Popen[bytes]], Azurite] | None = None

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

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        """Where Azurite's stdout/stderr go; ``None`` until the first :meth:`start`."""
        return self._workdir / LOG_FILE_NAME if self._workdir is not None else None

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))

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
            _LOOPBACK,
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
        if self.running:
            raise RuntimeError(f"Azurite is already running (pid {self.pid}, port {self._port})")
        argv = self.command()
        workdir = self._ensure_workdir()
        self._close_log()
        log = (workdir / LOG_FILE_NAME).open("ab")
        # Appending keeps the previous run's output across restart() so a failure shows both.
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        self._log = log
        try:
            self._proc = subprocess.Popen(
                argv,
                # cwd=workdir: Azurite falls back to the cwd for scratch files when no --location
                # is given (in-memory mode), so keep them out of the repo.
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: a terminal Ctrl-C must reach only us, and we forward exactly
                # one SIGINT; a second SIGINT while closing could interrupt the flush to disk.
                start_new_session=True,
            )
            # Safety net for callers that drop the object or exit without stop(): stop it (with a
            # flush) at garbage collection or interpreter exit rather than leaving an orphan.
            self._reaper = weakref.finalize(self, _stop_process, self._proc)
            self._wait_ready()
        except BaseException:
            # Covers timeouts and KeyboardInterrupt alike: never leave an orphan emulator behind.
            self._kill()
            self._close_log()
            raise
        return self

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 10) -> int | None:
        """Stop Azurite and return its exit code (``None`` if it was not started).

        SIGINT is the default because Azurite's on-disk store (LokiJS) only autosaves every few
        seconds and flushes on SIGINT; after SIGTERM/SIGKILL the most recent writes can be lost.
        Escalates to SIGKILL if the process does not exit within ``timeout`` seconds.
        """
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                self._signal_group(sig)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._kill()
            return proc.returncode
        finally:
            self._close_log()

    def restart(self) -> Azurite:
        """Stop with SIGINT (flushing on-disk data) and start again on the same port and location."""
        self.stop(signal.SIGINT)
        return self.start()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = str(self._location) if self._location is not None else "in-memory"
        return f"Azurite(port={self._port}, location={where}, pid={self.pid}, running={self.running})"

    # -- internals ----------------------------------------------------------------------------

    def _ensure_workdir(self) -> Path:
        if self._workdir is None:
            if self._location is not None:
                self._location.mkdir(parents=True, exist_ok=True)
                self._workdir = self._location
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
                # Kept while this object lives so a failing test can still read the log.
                weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
        return self._workdir

    def _wait_ready(self) -> None:
        # A real Table API call rather than a port probe: the socket accepts before the store is
        # loaded. No SDK retries (they back off for seconds); we poll ourselves.
        client = TableServiceClient.from_connection_string(
            self.connection_string, retry_total=0, connection_timeout=1, read_timeout=2
        )
        deadline = time.monotonic() + _READY_TIMEOUT_S
        last_error: Exception | None = None
        with client:
            while True:
                assert self._proc is not None
                code = self._proc.poll()
                if code is not None:
                    raise RuntimeError(
                        f"Azurite exited with code {code} during startup (port {self._port}). "
                        f"Log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    list(client.list_tables())
                    return
                except AzureError as err:
                    last_error = err
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"Azurite did not answer on {self.table_endpoint} within {_READY_TIMEOUT_S:.0f}s "
                        f"(last error: {last_error!r}). Log {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.1)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        if self._proc.returncode is not None:
            # Already reaped: the pid may belong to an unrelated process by now.
            return
        # Already gone is fine (PermissionError: macOS reports it for a group of zombies).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # The child leads its own session, so its pid is also its process group id.
            os.killpg(self._proc.pid, sig)

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._signal_group(signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _close_log(self) -> None:
        # Called after every stop/kill, so it is also where the exit safety net is disarmed.
        if self._reaper is not None:
            self._reaper.detach()
            self._reaper = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Finalizer: must not reference the Azurite object, or it would keep it alive forever."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


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
