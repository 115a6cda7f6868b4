"""Start-up configuration: settings and the policy they name, cross-checked once per process."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.configuration import load_configuration
from shared.policy import PolicyError
from shared.settings import SettingsError, get_settings
from tests.unit.test_settings import minimal_env

REPO_POLICY = Path(__file__).resolve().parents[2] / "policy" / "policy.toml"


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    get_settings.cache_clear()
    load_configuration.cache_clear()
    yield
    get_settings.cache_clear()
    load_configuration.cache_clear()


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("SERVICENOW_BASE_URL", "JIRA_BASE_URL", "PAGERDUTY_BASE_URL", "POLICY_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_loads_settings_and_the_repo_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    use_env(monkeypatch, minimal_env(SERVICENOW_BASE_URL="https://example.service-now.com",
                                     JIRA_BASE_URL="https://example.atlassian.net"))  # fmt: skip
    configuration = load_configuration()
    assert configuration.policy.version_hash.startswith("sha256:")
    assert configuration.settings.policy_path == REPO_POLICY
    assert load_configuration() is configuration  # read once per process


def test_an_enabled_itsm_without_its_base_url_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_env(monkeypatch, minimal_env(SERVICENOW_BASE_URL="https://example.service-now.com"))
    with pytest.raises(SettingsError, match="JIRA_BASE_URL"):
        load_configuration()


def test_a_bad_policy_file_fails_naming_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text(REPO_POLICY.read_text().replace('tier = "standard"', 'tier = "critical"', 1))
    use_env(monkeypatch, minimal_env(POLICY_PATH=str(bad)))
    with pytest.raises(PolicyError, match=r"tier = 'critical'"):
        load_configuration()
