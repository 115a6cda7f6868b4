"""Integration tests for local/azurite.py: they spawn a real Azurite (Node.js) process."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from local.azurite import AZURITE_ACCOUNT, Azurite, connection_string

pytestmark = pytest.mark.stack

REPO_ROOT = Path(__file__).resolve().parents[2]


def _assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # Azurite runs in its own process group; nothing of that group may survive either.
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


@pytest.fixture
def in_memory() -> Iterator[Azurite]:
    with Azurite() as azurite:
        yield azurite


def test_connection_string_shape() -> None:
    cs = connection_string(12345)
    assert cs.startswith(f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey=")
    assert cs.endswith(f";TableEndpoint=http://127.0.0.1:12345/{AZURITE_ACCOUNT};")


def test_starts_on_free_port_and_serves_tables(in_memory: Azurite) -> None:
    assert in_memory.running
    assert in_memory.table_endpoint == f"http://127.0.0.1:{in_memory.port}/{AZURITE_ACCOUNT}"
    with TableServiceClient.from_connection_string(in_memory.connection_string) as service:
        table = service.create_table("smoke")
        table.create_entity({"PartitionKey": "p", "RowKey": "r", "value": 42})
        assert table.get_entity("p", "r")["value"] == 42


def test_on_disk_data_survives_restart(tmp_path: Path) -> None:
    location = tmp_path / "azurite"
    with Azurite(location=location) as azurite:
        port = azurite.port
        with TableServiceClient.from_connection_string(azurite.connection_string) as service:
            service.create_table("persisted").create_entity({"PartitionKey": "p", "RowKey": "r", "v": "kept"})

        # Well within Loki's 5 s autosave interval, so only the SIGINT flush can have saved it.
        azurite.restart()

        assert azurite.running
        assert azurite.port == port
        with TableServiceClient.from_connection_string(azurite.connection_string) as service:
            assert service.get_table_client("persisted").get_entity("p", "r")["v"] == "kept"
    assert (location / "azurite-table.log").exists()


def test_stop_leaves_no_process(in_memory: Azurite) -> None:
    pid = in_memory.pid
    assert pid is not None
    assert in_memory.stop() == 0  # SIGINT => clean shutdown
    assert not in_memory.running
    _assert_gone(pid)
    assert in_memory.stop() == 0  # idempotent


def test_stop_escalates_to_sigkill(in_memory: Azurite) -> None:
    pid = in_memory.pid
    assert pid is not None
    # SIGSTOP makes the process ignore the SIGINT until continued, forcing the escalation path.
    os.kill(pid, signal.SIGSTOP)
    assert in_memory.stop(timeout=0.5) == -signal.SIGKILL
    _assert_gone(pid)


def test_dropped_instance_is_stopped() -> None:
    azurite = Azurite().start()
    pid = azurite.pid
    assert pid is not None
    del azurite
    gc.collect()  # the finalizer is the safety net for callers that never call stop()
    _assert_gone(pid)


def test_missing_binary_gives_clear_error(tmp_path: Path) -> None:
    azurite = Azurite(repo_root=tmp_path)
    with pytest.raises(RuntimeError, match=r"npm ci"):
        azurite.start()
    assert not azurite.running
    assert azurite.pid is None


def test_failed_start_leaves_no_orphan() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        azurite = Azurite(port=busy.getsockname()[1])
        with pytest.raises(RuntimeError, match=r"exited with code") as excinfo:
            azurite.start()
    assert "EADDRINUSE" in str(excinfo.value)  # the log tail is part of the error
    assert azurite.pid is not None
    assert not azurite.running
    _assert_gone(azurite.pid)


def test_cli_forwards_sigint(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.azurite", "--port", "0", "--location", str(tmp_path / "cli")],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "Azurite Table endpoint http://127.0.0.1:" in line, line
        azurite_pid = int(line.rsplit("pid ", 1)[1].split(")", 1)[0])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        _assert_gone(azurite_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
