"""Fixtures shared by every test package (keep them generic: no knowledge of a particular app)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local.azurite import Azurite
from local.simulators.process import SimulatorProcess

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (holds host.json, node_modules and the local/ package)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One in-memory Azurite Table emulator on a free port for the whole session.

    Tests that share it must isolate their data themselves (e.g. a unique table or task hub name).
    A test that needs to restart the emulator should start its own on-disk ``Azurite(location=...)``.
    """
    emulator = Azurite()
    emulator.start()  # raises with Azurite's log tail if Node.js or the npm package is missing
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def simulators() -> Iterator[SimulatorProcess]:
    """One simulators process (Graph, ServiceNow, Jira, PagerDuty, managed identity) for the session."""
    process = SimulatorProcess()
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def sim(simulators: SimulatorProcess) -> SimulatorProcess:
    """The session's simulators, reset for this test (seeded state, calls and faults cleared)."""
    simulators.reset()
    return simulators
