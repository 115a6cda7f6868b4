"""The app refuses to start on a bad configuration, naming what is wrong (fail fast at start-up)."""

from __future__ import annotations

from pathlib import Path

import pytest

from local.azurite import Azurite
from tests.e2e.conftest import app_host_in

pytestmark = pytest.mark.stack


def test_a_missing_required_setting_stops_the_host_naming_the_variable(
    tmp_path: Path, azurite: Azurite
) -> None:
    host = app_host_in(tmp_path, azurite, GRAPH_BASE_URL="")
    with pytest.raises(RuntimeError, match="devhost exited with 2") as failure:
        host.start()
    assert "missing required setting(s): GRAPH_BASE_URL" in str(failure.value)


def test_a_policy_needing_an_unset_base_url_stops_the_host(tmp_path: Path, azurite: Azurite) -> None:
    host = app_host_in(tmp_path, azurite, JIRA_BASE_URL="")
    with pytest.raises(RuntimeError, match="devhost exited with 2") as failure:
        host.start()
    assert "JIRA_BASE_URL (required because ITSM 'jira' is enabled in the policy)" in str(failure.value)
