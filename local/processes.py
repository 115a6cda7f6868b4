"""Child processes for local runs and tests: Azurite, the devhost and the simulators.

They share one way of being run, so that none of them can outlive the run that started it or be
confused with an unrelated process:

- each child leads its own session, so a terminal Ctrl-C reaches only the parent, which then sends
  exactly one signal (a second SIGINT while a child shuts down could interrupt its flush to disk);
- its stdout and stderr are appended to a log file, whose tail goes into every startup error;
- a start returns only once a real request succeeds (a listening socket is not a working server);
- a process that was already reaped is never signalled: its pid may belong to someone else by now;
- a safety net stops the child when its owner is garbage collected or the interpreter exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeAlias

__all__ = ["LOOPBACK", "ManagedProcess", "free_port"]

LOOPBACK = "127.0.0.1"

# A string: weakref.finalize is generic only to type checkers.
_Reaper: TypeAlias = "weakref.finalize[[subprocess.Popen[bytes], signal.Signals], ManagedProcess]"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    There is a small window in which another process can take it; acceptable for local runs.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class ManagedProcess:
    """Base of the classes that run one local child process (see the module docstring).

    Subclasses build the command line and the readiness check, and call :meth:`_launch` from their
    own ``start`` (whose signature and return value are theirs to choose).
    """

    def __init__(
        self,
        name: str,
        *,
        log_path: Path | None = None,
        log_name: str | None = None,
        exit_signal: signal.Signals = signal.SIGINT,
    ) -> None:
        """``log_path=None`` puts the log, named ``log_name`` (default ``<name>.log``), in a temporary
        directory.

        ``exit_signal`` is what the safety net sends first (SIGKILL follows after 10 s).
        """
        self._name = name
        self._log_file = log_path
        self._log_name = log_name or f"{name}.log"
        self._exit_signal = exit_signal
        self._scratch: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaper: _Reaper | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        """Where the child's stdout/stderr go; ``None`` until the first start if no path was given."""
        if self._log_file is not None:
            return self._log_file
        return self._scratch / self._log_name if self._scratch is not None else None

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int | None:
        """Send ``sig`` to the process group and return the exit code (``None`` if never started).

        Escalates to SIGKILL if the process does not exit within ``timeout`` seconds.
        """
        return self._stop(sig, timeout, strict=False)

    def kill(self) -> None:
        """SIGKILL the process group: no shutdown code runs, as in a crash."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._release()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- for subclasses -----------------------------------------------------------------------------------

    def _launch(
        self,
        argv: Sequence[str],
        *,
        ready: Callable[[], bool],
        timeout: float,
        transient: tuple[type[Exception], ...] = (),
        poll_interval: float = 0.1,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        header: bool = False,
    ) -> None:
        """Start ``argv`` and return once ``ready()`` is true; raise RuntimeError (with the log's tail)
        if the process exits first or ``timeout`` seconds pass.

        ``transient``: exceptions of ``ready()`` that mean "not yet" (the last one goes into the error).
        ``cwd=None`` runs the child in the log's directory, so that its scratch files stay out of the repo.
        ``header``: first append a dated line with the command, to tell apart the runs that share a log
        (not for logs that must hold only the child's own output).
        """
        if self.running:
            raise RuntimeError(f"{self._name} is already running (pid {self.pid})")
        log_path = self._prepare_log()
        self._release()
        self._proc = None
        try:
            with log_path.open("ab") as log:
                if header:
                    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                    log.write(f"--- {stamp} starting: {' '.join(argv)}\n".encode())
                    log.flush()  # before the child's first write to the same file
                self._proc = subprocess.Popen(
                    argv,
                    cwd=cwd if cwd is not None else log_path.parent,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            # The finalizer gets the Popen, not self: one that referenced its owner would keep it alive.
            self._reaper = weakref.finalize(self, _stop_at_exit, self._proc, self._exit_signal)
            self._wait_ready(ready, timeout, transient, poll_interval)
        except BaseException:
            # Timeouts and KeyboardInterrupt alike: never leave an orphan behind.
            self.kill()
            raise

    def _stop(self, sig: int, timeout: float, *, strict: bool) -> int | None:
        """:meth:`stop`; ``strict`` also raises RuntimeError (after the SIGKILL) if it took too long."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                if strict:
                    raise RuntimeError(
                        f"{self._name} did not exit within {timeout:g} s of signal {sig}"
                    ) from None
        self._release()
        return proc.returncode

    def _startup_failure(self, code: int | None, timeout: float) -> str:
        """The first line of a startup error: the child exited with ``code``, or (``None``) timed out."""
        if code is not None:
            return f"{self._name} exited with code {code} during startup"
        return f"{self._name} was not ready within {timeout:g} s"

    def _on_stopped(self) -> None:
        """Called after every stop or kill, for resources that are only useful while the child runs."""

    def _prepare_log(self) -> Path:
        if self._log_file is not None:
            self._log_file.parent.mkdir(parents=True, exist_ok=True)
            return self._log_file
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"{Path(self._log_name).stem}-"))
            # Kept while the owner lives so that a failing test can still read the log.
            weakref.finalize(self, shutil.rmtree, self._scratch, ignore_errors=True)
        return self._scratch / self._log_name

    # -- internals ----------------------------------------------------------------------------------------

    def _wait_ready(
        self,
        ready: Callable[[], bool],
        timeout: float,
        transient: tuple[type[Exception], ...],
        poll_interval: float,
    ) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(self._failure_text(self._startup_failure(code, timeout)))
            try:
                if ready():
                    return
            except transient as err:
                last_error = err
            if time.monotonic() >= deadline:
                headline = self._startup_failure(None, timeout)
                if last_error is not None:
                    headline += f" (last error: {last_error!r})"
                raise RuntimeError(self._failure_text(headline))
            time.sleep(poll_interval)

    def _failure_text(self, headline: str) -> str:
        return f"{headline}. Log {self.log_path}:\n{self.log_tail()}"

    def _signal(self, sig: int) -> None:
        if self._proc is not None:
            _signal_group(self._proc, sig)

    def _release(self) -> None:
        # The safety net stays armed while the child might still be alive (a SIGKILL it has not obeyed).
        if self._reaper is not None and self._proc is not None and self._proc.returncode is not None:
            self._reaper.detach()
            self._reaper = None
        self._on_stopped()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.returncode is not None:
        return  # already reaped: the pid may belong to an unrelated process by now
    # Already gone is fine (PermissionError: macOS reports it for a group of zombies).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the child leads its own session: its pid is its process group id


def _stop_at_exit(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is not None:
        return
    _signal_group(proc, sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
