"""The typed settings object read from the environment."""

import dataclasses
from pathlib import Path

import pytest

from shared import settings as settings_module
from shared.settings import (
    AZURITE_CONNECTION_STRING,
    SETTINGS_VARIABLES,
    ApiCredentials,
    Settings,
    SettingsError,
    TableStorageTarget,
    get_settings,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TENANT = "11111111-2222-3333-4444-55555555abcd"
BOT = "66666666-7777-8888-9999-aaaaaaaaaaaa"
SECRET_KEY = "c2VjcmV0LWFjY291bnQta2V5LXRoYXQtbXVzdC1uZXZlci1sZWFr"
SECRET_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=https;AccountName=prodaccount;"
    f"AccountKey={SECRET_KEY};EndpointSuffix=core.windows.net"
)

SERVICENOW_SECRET = "sn-webhook-secret-0123456789abcdef-0123"
SERVICENOW_PREVIOUS_SECRET = "sn-webhook-secret-previous-0123456789ab"
JIRA_SECRET = "jira-webhook-secret-0123456789abcdef-01"
IVANTI_SECRET = "ivanti-webhook-secret-0123456789abcdef0"
SERVICENOW_API_USER = "svc-pim-emergency-access"
SERVICENOW_API_PASSWORD = "sn-api-password-Do-Not-Leak-4711"
JIRA_API_EMAIL = "pim-bot@contoso.test"
JIRA_API_TOKEN = "ATATT3xFfGF0-jira-api-token-Do-Not-Leak"
PAGERDUTY_API_TOKEN = "u+pd-api-token-DoNotLeak"


def minimal_env(**overrides: str) -> dict[str, str]:
    env = {
        "ENTRA_TENANT_ID": TENANT,
        "GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0",
        "BOT_APP_ID": BOT,
        "BOT_OPENID_METADATA_URL": "https://login.botframework.com/v1/.well-known/openidconfiguration",
        "BOT_CONNECTOR_SERVICE_URL": "https://smba.trafficmanager.net/teams",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        # The repository policy enables ServiceNow and Jira, whose webhooks are signed with these.
        "SERVICENOW_WEBHOOK_SECRET": SERVICENOW_SECRET,
        "JIRA_WEBHOOK_SECRET": JIRA_SECRET,
        # ... and whose APIs (and PagerDuty's, for the pagerduty roster provider) are called with these.
        "SERVICENOW_API_USER": SERVICENOW_API_USER,
        "SERVICENOW_API_PASSWORD": SERVICENOW_API_PASSWORD,
        "JIRA_API_EMAIL": JIRA_API_EMAIL,
        "JIRA_API_TOKEN": JIRA_API_TOKEN,
        "PAGERDUTY_API_TOKEN": PAGERDUTY_API_TOKEN,
    }
    env.update(overrides)
    return {key: value for key, value in env.items() if value != "<unset>"}


def error_of(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    return str(caught.value)


def test_reads_a_minimal_environment():
    settings = Settings.from_env(minimal_env())
    assert settings.tenant_id == TENANT
    assert settings.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert settings.bot_app_id == BOT
    assert settings.servicenow_base_url is None
    assert settings.azure_client_id is None


def test_names_every_missing_required_variable_at_once():
    message = error_of({})
    assert "missing required setting(s)" in message
    for name, required in SETTINGS_VARIABLES.items():
        if required:
            assert name in message
    assert "AzureWebJobsStorage or AzureWebJobsStorage__tableServiceUri" in message


def test_names_exactly_the_missing_variables_in_order():
    message = error_of(minimal_env(GRAPH_BASE_URL="<unset>", BOT_APP_ID="<unset>"))
    assert message == "missing required setting(s): GRAPH_BASE_URL, BOT_APP_ID"


def test_blank_values_count_as_missing():
    message = error_of(minimal_env(ENTRA_TENANT_ID="   "))
    assert message == "missing required setting(s): ENTRA_TENANT_ID"


def test_reports_missing_and_malformed_values_together():
    message = error_of(minimal_env(GRAPH_BASE_URL="<unset>", BOT_APP_ID="nope"))
    lines = message.splitlines()
    assert lines[0] == "missing required setting(s): GRAPH_BASE_URL"
    assert "BOT_APP_ID='nope' is not a GUID" in lines[1]


@pytest.mark.parametrize("name", ["ENTRA_TENANT_ID", "BOT_APP_ID", "AZURE_CLIENT_ID"])
def test_bad_guid_names_the_variable_and_the_value(name):
    message = error_of(minimal_env(**{name: "11111111-2222-3333-4444-55555555555Z"}))
    assert f"{name}='11111111-2222-3333-4444-55555555555Z' is not a GUID" in message


def test_guids_are_normalised_to_lower_case():
    settings = Settings.from_env(minimal_env(ENTRA_TENANT_ID=TENANT.upper()))
    assert settings.tenant_id == TENANT


@pytest.mark.parametrize(
    "name",
    [
        "GRAPH_BASE_URL",
        "BOT_CONNECTOR_SERVICE_URL",
        "JIRA_BASE_URL",
        "EXCHANGE_ADMIN_BASE_URL",
        "AzureWebJobsStorage__tableServiceUri",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused(name):
    env = minimal_env(**{name: "http://graph.example.com/v1.0"})
    if name.startswith("AzureWebJobsStorage"):
        env.pop("AzureWebJobsStorage")
    message = error_of(env)
    assert name in message
    assert "'http://graph.example.com/v1.0'" in message
    assert "https" in message


@pytest.mark.parametrize("host", ["127.0.0.1:7071", "localhost:7071", "[::1]:7071"])
def test_plain_http_to_loopback_is_allowed_for_local_simulators(host):
    settings = Settings.from_env(minimal_env(GRAPH_BASE_URL=f"http://{host}/graph/v1.0/"))
    assert settings.graph_base_url == f"http://{host}/graph/v1.0"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("graph.microsoft.com/v1.0", "not an absolute http(s) URL"),
        ("ftp://graph.microsoft.com", "not an absolute http(s) URL"),
        ("https://graph.microsoft.com/v1.0?x=1", "must not have a query"),
        ("https://host:notaport/", "cannot be parsed"),
    ],
)
def test_malformed_urls_name_the_variable_and_why(value, reason):
    message = error_of(minimal_env(GRAPH_BASE_URL=value))
    assert message.startswith("GRAPH_BASE_URL")
    assert reason in message


def test_urls_with_credentials_are_refused_without_echoing_them():
    message = error_of(minimal_env(JIRA_BASE_URL="https://bot:hunter2@jira.example.com"))
    assert "JIRA_BASE_URL must not contain credentials" in message
    assert "hunter2" not in message


def test_base_urls_lose_their_trailing_slash():
    settings = Settings.from_env(
        minimal_env(
            GRAPH_BASE_URL="https://graph.microsoft.com/v1.0/", JIRA_BASE_URL="https://x.atlassian.net/"
        )
    )
    assert settings.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert settings.jira_base_url == "https://x.atlassian.net"


def test_use_development_storage_becomes_the_azurite_connection_string():
    settings = Settings.from_env(minimal_env(AzureWebJobsStorage="UseDevelopmentStorage=true"))
    target = settings.table_storage
    assert target.connection_string == AZURITE_CONNECTION_STRING
    assert "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1" in AZURITE_CONNECTION_STRING
    assert target.endpoint is None
    assert not target.uses_identity


def test_identity_based_table_endpoint_is_used_without_a_connection_string():
    env = minimal_env(
        AzureWebJobsStorage="<unset>",
        AzureWebJobsStorage__tableServiceUri="https://prodaccount.table.core.windows.net/",
    )
    target = Settings.from_env(env).table_storage
    assert target == TableStorageTarget(
        connection_string=None, endpoint="https://prodaccount.table.core.windows.net"
    )
    assert target.uses_identity


def test_both_storage_variables_set_is_refused():
    message = error_of(minimal_env(AzureWebJobsStorage__tableServiceUri="https://a.table.core.windows.net"))
    assert "AzureWebJobsStorage and AzureWebJobsStorage__tableServiceUri are both set" in message


def test_connection_string_never_appears_in_repr_or_str():
    settings = Settings.from_env(minimal_env(AzureWebJobsStorage=SECRET_CONNECTION_STRING))
    assert settings.table_storage.connection_string == SECRET_CONNECTION_STRING
    for text in (repr(settings), str(settings), repr(settings.table_storage), str(settings.table_storage)):
        assert SECRET_KEY not in text
        assert "prodaccount" not in text
    assert "<redacted>" in repr(settings.table_storage)


def test_malformed_connection_string_error_does_not_echo_it():
    message = error_of(minimal_env(AzureWebJobsStorage=f"AccountKey{SECRET_KEY}"))
    assert "AzureWebJobsStorage is not a storage connection string" in message
    assert SECRET_KEY not in message


def test_policy_path_defaults_to_the_repo_policy_file():
    settings = Settings.from_env(minimal_env())
    assert settings.policy_path == REPO_ROOT / "policy" / "policy.toml"
    assert settings.policy_path.is_file()


def test_relative_policy_path_is_resolved_against_the_app_root():
    settings = Settings.from_env(minimal_env(POLICY_PATH="tests/fixtures/policy.toml"))
    assert settings.policy_path == REPO_ROOT / "tests" / "fixtures" / "policy.toml"


def test_absolute_policy_path_is_kept(tmp_path):
    target = tmp_path / "p.toml"
    assert Settings.from_env(minimal_env(POLICY_PATH=str(target))).policy_path == target


def test_exchange_admin_base_url_defaults_to_exchange_online_and_can_point_elsewhere():
    assert SETTINGS_VARIABLES["EXCHANGE_ADMIN_BASE_URL"] is False
    assert Settings.from_env(minimal_env()).exchange_admin_base_url == "https://outlook.office365.com"
    national = Settings.from_env(minimal_env(EXCHANGE_ADMIN_BASE_URL="https://outlook.office365.us/"))
    assert national.exchange_admin_base_url == "https://outlook.office365.us"
    local = Settings.from_env(minimal_env(EXCHANGE_ADMIN_BASE_URL="http://127.0.0.1:7081/exchange"))
    assert local.exchange_admin_base_url == "http://127.0.0.1:7081/exchange"


def test_base_url_for_returns_the_configured_url():
    settings = Settings.from_env(minimal_env(SERVICENOW_BASE_URL="https://example.service-now.com/"))
    assert settings.base_url_for("servicenow") == "https://example.service-now.com"


@pytest.mark.parametrize(
    ("service", "variable"),
    [
        ("servicenow", "SERVICENOW_BASE_URL"),
        ("jira", "JIRA_BASE_URL"),
        ("ivanti", "IVANTI_BASE_URL"),
        ("xurrent", "XURRENT_BASE_URL"),
        ("pagerduty", "PAGERDUTY_BASE_URL"),
    ],
)
def test_base_url_for_an_unconfigured_service_names_the_variable_to_set(service, variable):
    settings = Settings.from_env(minimal_env())
    with pytest.raises(SettingsError, match=f"set {variable}"):
        settings.base_url_for(service)


def test_base_url_for_an_unknown_service_lists_the_known_ones():
    with pytest.raises(
        SettingsError,
        match=r"unknown service 'remedy' \(known: servicenow, jira, ivanti, xurrent, pagerduty\)",
    ):
        Settings.from_env(minimal_env()).base_url_for("remedy")


def test_check_for_policy_names_base_urls_required_by_enabled_itsm_and_roster():
    settings = Settings.from_env(minimal_env(SERVICENOW_BASE_URL="https://example.service-now.com"))
    with pytest.raises(SettingsError) as caught:
        settings.check_for_policy(["servicenow", "jira"], "pagerduty")
    message = str(caught.value)
    assert "JIRA_BASE_URL" in message
    assert "PAGERDUTY_BASE_URL" in message
    assert "SERVICENOW_BASE_URL" not in message


def test_check_for_policy_servicenow_rota_needs_servicenow():
    settings = Settings.from_env(minimal_env())
    with pytest.raises(
        SettingsError, match=r"SERVICENOW_BASE_URL \(required because roster provider is 'servicenow_rota'\)"
    ):
        settings.check_for_policy([], "servicenow_rota")


def test_check_for_policy_passes_when_every_needed_url_is_set():
    settings = Settings.from_env(
        minimal_env(SERVICENOW_BASE_URL="https://sn.example.com", JIRA_BASE_URL="https://jira.example.com")
    )
    settings.check_for_policy(["servicenow", "jira"], "entra_group")


def test_check_for_policy_refuses_unknown_names():
    settings = Settings.from_env(minimal_env())
    with pytest.raises(SettingsError, match="unknown ITSM system 'remedy'"):
        settings.check_for_policy(["remedy"], "entra_group")
    with pytest.raises(SettingsError, match="unknown roster provider 'opsgenie'"):
        settings.check_for_policy([], "opsgenie")


def test_settings_variables_are_exactly_the_variables_read():
    class Recording(dict[str, str]):
        def __init__(self, values: dict[str, str]) -> None:
            super().__init__(values)
            self.read: set[str] = set()

        def get(self, key, default=None):
            self.read.add(key)
            return super().get(key, default)

    env = Recording(minimal_env())
    Settings.from_env(env)
    assert env.read == set(SETTINGS_VARIABLES)
    assert [name for name, required in SETTINGS_VARIABLES.items() if required] == [
        "ENTRA_TENANT_ID",
        "GRAPH_BASE_URL",
        "BOT_APP_ID",
        "BOT_OPENID_METADATA_URL",
        "BOT_CONNECTOR_SERVICE_URL",
    ]


def test_settings_are_frozen():
    settings = Settings.from_env(minimal_env())
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.graph_base_url = "https://elsewhere.example.com"  # type: ignore[misc]


def test_get_settings_reads_os_environ_once_per_process(monkeypatch):
    for name, value in minimal_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        first = get_settings()
        monkeypatch.setenv("GRAPH_BASE_URL", "https://changed.example.com")
        assert get_settings() is first
        assert first.graph_base_url == "https://graph.microsoft.com/v1.0"
    finally:
        get_settings.cache_clear()


def test_app_root_is_the_parent_of_the_shared_package():
    assert settings_module.APP_ROOT == REPO_ROOT


# --- webhook secrets ---------------------------------------------------------------------------------------

WEBHOOK_SECRET_VARIABLES = [
    "SERVICENOW_WEBHOOK_SECRET",
    "SERVICENOW_WEBHOOK_SECRET_PREVIOUS",
    "JIRA_WEBHOOK_SECRET",
    "JIRA_WEBHOOK_SECRET_PREVIOUS",
    "IVANTI_WEBHOOK_SECRET",
    "IVANTI_WEBHOOK_SECRET_PREVIOUS",
]


def test_webhook_secret_variables_are_optional_settings():
    for name in WEBHOOK_SECRET_VARIABLES:
        assert SETTINGS_VARIABLES[name] is False


def test_webhook_secrets_are_current_first_then_previous():
    settings = Settings.from_env(minimal_env(SERVICENOW_WEBHOOK_SECRET_PREVIOUS=SERVICENOW_PREVIOUS_SECRET))
    assert settings.webhook_secrets("servicenow") == (SERVICENOW_SECRET, SERVICENOW_PREVIOUS_SECRET)
    assert settings.webhook_secrets("jira") == (JIRA_SECRET,)


def test_webhook_secrets_are_empty_when_none_is_configured():
    settings = Settings.from_env(
        minimal_env(SERVICENOW_WEBHOOK_SECRET="<unset>", JIRA_WEBHOOK_SECRET="<unset>")
    )
    for system in ("servicenow", "jira", "ivanti"):
        assert settings.webhook_secrets(system) == ()


def test_a_previous_secret_equal_to_the_current_one_is_listed_once():
    settings = Settings.from_env(minimal_env(JIRA_WEBHOOK_SECRET_PREVIOUS=JIRA_SECRET))
    assert settings.webhook_secrets("jira") == (JIRA_SECRET,)


def test_webhook_secrets_for_xurrent_and_unknown_systems_are_refused():
    settings = Settings.from_env(minimal_env())
    with pytest.raises(SettingsError, match=r"xurrent.*JWT.*not supported yet"):
        settings.webhook_secrets("xurrent")
    with pytest.raises(SettingsError, match="no webhook secrets for 'remedy'"):
        settings.webhook_secrets("remedy")


@pytest.mark.parametrize("name", WEBHOOK_SECRET_VARIABLES)
def test_a_short_webhook_secret_is_refused_naming_the_variable_not_the_value(name):
    short = "tooShortSecretValue-31-chars-xx"
    assert len(short) == 31
    message = error_of(minimal_env(**{name: short}))
    assert f"{name} is too short" in message
    assert "at least 32 characters" in message
    assert short not in message


def test_a_webhook_secret_of_exactly_32_characters_is_accepted():
    secret = "x" * 32
    assert Settings.from_env(minimal_env(IVANTI_WEBHOOK_SECRET=secret)).webhook_secrets("ivanti") == (secret,)


def test_an_unresolved_key_vault_reference_is_refused_naming_the_variable():
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-pim.vault.azure.net/secrets/servicenow-webhook/)"
    message = error_of(minimal_env(SERVICENOW_WEBHOOK_SECRET=reference))
    assert "SERVICENOW_WEBHOOK_SECRET is an unresolved Key Vault reference" in message


def test_webhook_secrets_never_appear_in_repr_or_str():
    env = minimal_env(
        SERVICENOW_WEBHOOK_SECRET_PREVIOUS=SERVICENOW_PREVIOUS_SECRET, IVANTI_WEBHOOK_SECRET=IVANTI_SECRET
    )
    settings = Settings.from_env(env)
    texts = (repr(settings), str(settings), repr(settings.itsm_webhook_secrets), f"{settings}")
    for text in texts:
        for secret in (SERVICENOW_SECRET, SERVICENOW_PREVIOUS_SECRET, JIRA_SECRET, IVANTI_SECRET):
            assert secret not in text
            assert secret[:12] not in text
    assert "servicenow='<redacted>'" in repr(settings)
    assert "jira_previous=None" in repr(settings)


def test_check_for_policy_requires_the_webhook_secret_of_every_enabled_itsm_except_xurrent():
    settings = Settings.from_env(
        minimal_env(
            SERVICENOW_WEBHOOK_SECRET="<unset>",
            JIRA_WEBHOOK_SECRET="<unset>",
            SERVICENOW_BASE_URL="https://sn.example.com",
            JIRA_BASE_URL="https://jira.example.com",
            IVANTI_BASE_URL="https://ivanti.example.com",
            XURRENT_BASE_URL="https://xurrent.example.com",
        )
    )
    with pytest.raises(SettingsError) as caught:
        settings.check_for_policy(["servicenow", "jira", "ivanti", "xurrent"], "entra_group")
    message = str(caught.value)
    for name in ("SERVICENOW_WEBHOOK_SECRET", "JIRA_WEBHOOK_SECRET", "IVANTI_WEBHOOK_SECRET"):
        assert f"{name} (required because ITSM" in message
    assert "XURRENT" not in message
    assert "_BASE_URL" not in message


def test_check_for_policy_does_not_require_secrets_of_disabled_itsm():
    settings = Settings.from_env(
        minimal_env(JIRA_WEBHOOK_SECRET="<unset>", SERVICENOW_BASE_URL="https://sn.example.com")
    )
    settings.check_for_policy(["servicenow"], "entra_group")


def test_check_for_policy_names_base_url_and_secret_together():
    settings = Settings.from_env(minimal_env(IVANTI_WEBHOOK_SECRET="<unset>"))
    with pytest.raises(SettingsError) as caught:
        settings.check_for_policy(["ivanti"], "entra_group")
    message = str(caught.value)
    assert "IVANTI_BASE_URL (required because" in message
    assert "IVANTI_WEBHOOK_SECRET (required because" in message


def test_check_for_policy_a_previous_secret_alone_is_not_enough():
    settings = Settings.from_env(
        minimal_env(
            JIRA_WEBHOOK_SECRET="<unset>",
            JIRA_WEBHOOK_SECRET_PREVIOUS=JIRA_SECRET,
            JIRA_BASE_URL="https://jira.example.com",
        )
    )
    with pytest.raises(
        SettingsError, match=r"JIRA_WEBHOOK_SECRET \(required .*JIRA_WEBHOOK_SECRET_PREVIOUS alone"
    ):
        settings.check_for_policy(["jira"], "entra_group")


# --- API credentials (ITSM and PagerDuty) ------------------------------------------------------------------

API_CREDENTIAL_VARIABLES = [
    "SERVICENOW_API_USER",
    "SERVICENOW_API_PASSWORD",
    "JIRA_API_EMAIL",
    "JIRA_API_TOKEN",
    "PAGERDUTY_API_TOKEN",
]
API_SECRETS = (SERVICENOW_API_PASSWORD, JIRA_API_TOKEN, PAGERDUTY_API_TOKEN)
NO_API_CREDENTIALS = dict.fromkeys(API_CREDENTIAL_VARIABLES, "<unset>")
ALL_BASE_URLS = {
    "SERVICENOW_BASE_URL": "https://sn.example.com",
    "JIRA_BASE_URL": "https://jira.example.com",
    "PAGERDUTY_BASE_URL": "https://api.pagerduty.com",
}


def test_api_credential_variables_are_optional_settings():
    for name in API_CREDENTIAL_VARIABLES:
        assert SETTINGS_VARIABLES[name] is False
    settings = Settings.from_env(minimal_env(**NO_API_CREDENTIALS))
    assert settings.api_credentials == ApiCredentials()


def test_api_credentials_are_read():
    credentials = Settings.from_env(minimal_env()).api_credentials
    assert credentials.servicenow() == (SERVICENOW_API_USER, SERVICENOW_API_PASSWORD)
    assert credentials.jira() == (JIRA_API_EMAIL, JIRA_API_TOKEN)
    assert credentials.pagerduty() == PAGERDUTY_API_TOKEN


def test_unset_api_credentials_name_the_variables_to_set():
    credentials = Settings.from_env(minimal_env(**NO_API_CREDENTIALS)).api_credentials
    with pytest.raises(SettingsError, match="set SERVICENOW_API_USER and SERVICENOW_API_PASSWORD"):
        credentials.servicenow()
    with pytest.raises(SettingsError, match="set JIRA_API_EMAIL and JIRA_API_TOKEN"):
        credentials.jira()
    with pytest.raises(SettingsError, match="set PAGERDUTY_API_TOKEN"):
        credentials.pagerduty()


def test_api_secrets_never_appear_in_repr_or_str():
    settings = Settings.from_env(minimal_env())
    texts = (repr(settings), str(settings), repr(settings.api_credentials), f"{settings.api_credentials}")
    for text in texts:
        for secret in API_SECRETS:
            assert secret not in text
            assert secret[:10] not in text
    # The user names are identifiers, shown so that an operator can tell which account is used.
    assert f"servicenow_user={SERVICENOW_API_USER!r}" in repr(settings)
    assert "servicenow_password='<redacted>'" in repr(settings)
    assert "pagerduty_token='<redacted>'" in repr(settings)
    unset = repr(Settings.from_env(minimal_env(**NO_API_CREDENTIALS)).api_credentials)
    assert "jira_token=None" in unset


@pytest.mark.parametrize(
    ("present", "absent"),
    [
        ("SERVICENOW_API_USER", "SERVICENOW_API_PASSWORD"),
        ("SERVICENOW_API_PASSWORD", "SERVICENOW_API_USER"),
        ("JIRA_API_EMAIL", "JIRA_API_TOKEN"),
        ("JIRA_API_TOKEN", "JIRA_API_EMAIL"),
    ],
)
def test_half_a_basic_auth_pair_is_refused_naming_both_halves(present, absent):
    message = error_of(minimal_env(**{absent: "<unset>"}))
    assert f"{present} is set but {absent} is not" in message
    for secret in API_SECRETS:
        assert secret not in message


def test_a_basic_auth_user_with_a_colon_is_refused():
    message = error_of(minimal_env(SERVICENOW_API_USER="svc:pim"))
    assert "SERVICENOW_API_USER='svc:pim' contains ':'" in message


@pytest.mark.parametrize("name", ["SERVICENOW_API_PASSWORD", "JIRA_API_TOKEN", "PAGERDUTY_API_TOKEN"])
def test_an_unresolved_key_vault_reference_for_an_api_secret_is_refused(name):
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-pim.vault.azure.net/secrets/api/)"
    message = error_of(minimal_env(**{name: reference}))
    assert f"{name} is an unresolved Key Vault reference" in message


def test_check_for_policy_requires_the_api_credentials_of_enabled_itsm_and_the_roster():
    settings = Settings.from_env(minimal_env(**NO_API_CREDENTIALS, **ALL_BASE_URLS))
    with pytest.raises(SettingsError) as caught:
        settings.check_for_policy(["servicenow", "jira"], "pagerduty")
    message = str(caught.value)
    for name in API_CREDENTIAL_VARIABLES:
        assert f"{name} (required because" in message
    assert "SERVICENOW_API_USER (required because ITSM 'servicenow' is enabled in the policy: " in message
    assert "JIRA_API_TOKEN (required because ITSM 'jira' is enabled in the policy: " in message
    assert "PAGERDUTY_API_TOKEN (required because roster provider is 'pagerduty': " in message
    assert "_BASE_URL" not in message


def test_check_for_policy_servicenow_rota_needs_the_servicenow_api_credentials():
    settings = Settings.from_env(minimal_env(**NO_API_CREDENTIALS, **ALL_BASE_URLS))
    with pytest.raises(SettingsError) as caught:
        settings.check_for_policy([], "servicenow_rota")
    message = str(caught.value)
    assert "SERVICENOW_API_USER (required because roster provider is 'servicenow_rota'" in message
    assert "SERVICENOW_API_PASSWORD (required because roster provider is 'servicenow_rota'" in message
    assert "JIRA_API" not in message
    assert "PAGERDUTY_API_TOKEN" not in message


def test_check_for_policy_names_both_reasons_for_servicenow_once():
    settings = Settings.from_env(minimal_env(**NO_API_CREDENTIALS, **ALL_BASE_URLS))
    with pytest.raises(SettingsError) as caught:
        settings.check_for_policy(["servicenow"], "servicenow_rota")
    message = str(caught.value)
    assert message.count("SERVICENOW_API_USER") == 1
    assert (
        "SERVICENOW_API_USER (required because ITSM 'servicenow' is enabled in the policy and roster "
        "provider is 'servicenow_rota'" in message
    )


def test_check_for_policy_needs_no_api_credentials_for_the_entra_roster_or_disabled_itsm():
    settings = Settings.from_env(
        minimal_env(
            **NO_API_CREDENTIALS,
            **ALL_BASE_URLS,
            IVANTI_BASE_URL="https://ivanti.example.com",
            XURRENT_BASE_URL="https://xurrent.example.com",
            IVANTI_WEBHOOK_SECRET=IVANTI_SECRET,
        )
    )
    settings.check_for_policy([], "entra_group")
    # Ivanti and Xurrent have no ITSM adapter yet, so nothing calls their APIs.
    settings.check_for_policy(["ivanti", "xurrent"], "entra_group")


def test_check_for_policy_passes_with_the_minimal_environment_and_the_repo_policy_services():
    settings = Settings.from_env(minimal_env(**ALL_BASE_URLS))
    settings.check_for_policy(["servicenow", "jira"], "pagerduty")
    settings.check_for_policy(["servicenow", "jira"], "servicenow_rota")
