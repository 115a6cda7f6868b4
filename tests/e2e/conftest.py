"""The real function_app on the devhost, with the session's Azurite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.azurite import Azurite
from local.devhost.config import HUB_OVERRIDE
from local.stack import DevhostProcess, write_settings


def app_host_in(work: Path, azurite: Azurite, **values: str) -> DevhostProcess:
    """A devhost for function_app with the sample settings, its own task hub, and ``values`` on top
    (a value of "" removes the setting)."""
    settings = work / "local.settings.json"
    write_settings(
        settings, azurite.connection_string, {HUB_OVERRIDE: f"E2e{uuid.uuid4().hex[:12]}", **values}
    )
    return DevhostProcess(settings, work / "devhost.log")


@pytest.fixture(scope="module")
def app_host(tmp_path_factory: pytest.TempPathFactory, azurite: Azurite) -> Iterator[DevhostProcess]:
    host = app_host_in(tmp_path_factory.mktemp("app-host"), azurite)
    host.start()
    try:
        yield host
    finally:
        host.kill()
