"""The real function_app on the devhost, with Azurite (the same launcher `make demo` uses)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.azurite import Azurite
from local.stack import DevhostProcess, write_settings


@pytest.fixture(scope="module")
def app_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevhostProcess]:
    work: Path = tmp_path_factory.mktemp("app-host")
    with Azurite() as azurite:
        settings = work / "local.settings.json"
        # A hub of its own, so that nothing of another module's instances is visible here.
        hub = f"E2e{uuid.uuid4().hex[:12]}"
        write_settings(
            settings,
            azurite.connection_string,
            {"AzureFunctionsJobHost__extensions__durableTask__hubName": hub},
        )
        host = DevhostProcess(settings, work / "devhost.log")
        host.start()
        try:
            yield host
        finally:
            host.kill()
