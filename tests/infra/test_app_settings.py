"""The Function App's settings in Bicep against shared/settings.py, the one list of what the app reads.

A required variable missing in Azure stops the app at start-up (shared.configuration); an unknown name is a
typo the app never reads; a secret reference the policy does not need points at a secret nobody wrote, and
an unresolved reference stops the app too. These checks are the only place those mistakes show before a
deployment: the Bicep compiler knows nothing about the app.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest

from shared.policy import load_policy
from shared.settings import (
    DEFAULT_EXCHANGE_ADMIN_BASE_URL,
    DEFAULT_POLICY_PATH,
    DEFAULT_SWEEP_SCHEDULE,
    SETTINGS_VARIABLES,
    STORAGE_CONNECTION_STRING,
    STORAGE_TABLE_SERVICE_URI,
    Settings,
    SettingsError,
)
from tests.infra.bicep import (
    MAIN,
    REPO_ROOT,
    Branches,
    app_settings,
    deployed_setting_source,
    evaluate,
    parse,
    property_path,
)

REQUIRED = frozenset(name for name, required in SETTINGS_VARIABLES.items() if required)
# Optional for the settings object (it has defaults or fallbacks), but a deployment sets them explicitly:
# the app's own identity for its SDK clients (the quickstart's slip), the host's timer schedule (the host
# reads %SWEEP_SCHEDULE% itself, before any default of ours applies), and what an operator should see.
ALWAYS_DEPLOYED = frozenset({"AZURE_CLIENT_ID", "SWEEP_SCHEDULE", "POLICY_PATH", "EXCHANGE_ADMIN_BASE_URL"})
# Names the Functions platform and its extensions read, not shared/settings.py.
PLATFORM_SETTING = re.compile(
    r"AzureWebJobsStorage__(accountName|credential|clientId|blobServiceUri|queueServiceUri|tableServiceUri)"
    r"|APPLICATIONINSIGHTS_CONNECTION_STRING|APPLICATIONINSIGHTS_AUTHENTICATION_STRING|AzureWebJobsFeatureFlags"
    # The Durable Task Scheduler backend: its connection and hub, and the host.json overrides that name them.
    r"|DURABLE_TASK_SCHEDULER_CONNECTION_STRING|TASKHUB_NAME"
    r"|AzureFunctionsJobHost__extensions__durableTask__(hubName|storageProvider__type"
    r"|storageProvider__connectionStringName)"
)
# Flex Consumption takes the runtime from functionAppConfig and refuses these as app settings.
REFUSED_BY_FLEX_CONSUMPTION = frozenset(
    {
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_EXTENSION_VERSION",
        "FUNCTIONS_WORKER_RUNTIME_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE",
        "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
        "WEBSITE_CONTENTSHARE",
        "SCM_DO_BUILD_DURING_DEPLOYMENT",
        "ENABLE_ORYX_BUILD",
    }
)
ITSM_SYSTEMS = ("servicenow", "jira", "ivanti", "xurrent")
ROSTER_PROVIDERS = ("entra_group", "pagerduty", "servicenow_rota")
KEY_VAULT_REFERENCE = re.compile(r"@Microsoft\.KeyVault\(SecretUri=\$\{secretsUri\}/[a-z0-9-]+/\)")


def deployment(
    itsm: tuple[str, ...], roster: str, rotating: tuple[str, ...] = (), backend: str = "AzureStorage"
) -> dict[str, object]:
    return app_settings(
        {
            "itsmSystems": list(itsm),
            "rosterProvider": roster,
            "webhookSecretsInRotation": list(rotating),
            "durableBackend": backend,
        }
    )


def environment(settings: dict[str, object]) -> dict[str, str]:
    """What the app would find in its environment, with a plausible stand-in for each deployed value
    (Key Vault references resolved to a secret long enough for a webhook)."""
    env: dict[str, str] = {}
    for name, value in settings.items():
        if isinstance(value, str) and KEY_VAULT_REFERENCE.fullmatch(value):
            env[name] = "resolved-secret-" + "x" * 40
        elif name == "SWEEP_SCHEDULE":
            env[name] = DEFAULT_SWEEP_SCHEDULE
        elif name == "POLICY_PATH":
            env[name] = "policy/policy.toml"
        elif name.endswith(("_ID", "CLIENT_ID")):
            env[name] = "00000000-0000-4000-8000-000000000001"
        elif name.endswith(("_URL", "_URI", "Uri")):
            env[name] = f"https://{name.lower().replace('_', '-')}.example.test"
        elif name.endswith("_EMAIL"):
            env[name] = "pim-automation@contoso.test"
        else:
            env[name] = "value"
    return env


def test_the_site_deploys_exactly_all_settings() -> None:
    source, item = deployed_setting_source()
    assert source == {"function": {"type": "items", "parameters": {"arg_1": "allSettings"}}}
    assert property_path(item["name"]) == ["setting", "key"]
    assert property_path(item["value"]) == ["setting", "value"]


def test_every_required_variable_is_set_whatever_the_parameters() -> None:
    unconditional = set(app_settings(branches=Branches.NONE))
    # The "one of" pair of shared/settings.py: in Azure, the identity-based table endpoint.
    missing = sorted((REQUIRED | ALWAYS_DEPLOYED | {STORAGE_TABLE_SERVICE_URI}) - unconditional)
    assert not missing, f"set unconditionally in function-app.bicep: {missing}"


def test_no_setting_is_unknown_to_the_app_or_the_platform() -> None:
    every = app_settings(branches=Branches.ALL)
    unknown = sorted(
        name for name in every if name not in SETTINGS_VARIABLES and not PLATFORM_SETTING.fullmatch(name)
    )
    assert not unknown, f"neither shared/settings.py nor the Functions platform reads {unknown}"


def test_the_storage_connection_string_is_never_set() -> None:
    # shared/settings.py refuses it next to the table endpoint, and it would carry the account key.
    assert STORAGE_CONNECTION_STRING not in app_settings(branches=Branches.ALL)


def test_no_setting_flex_consumption_refuses() -> None:
    assert not REFUSED_BY_FLEX_CONSUMPTION & set(app_settings(branches=Branches.ALL))


def test_storage_is_reached_with_the_apps_managed_identity() -> None:
    settings = app_settings(branches=Branches.NONE)
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "appIdentityClientId"
    assert settings["AZURE_CLIENT_ID"] == "appIdentityClientId"
    assert property_path(settings[STORAGE_TABLE_SERVICE_URI]) == [
        "storage",
        "properties",
        "primaryEndpoints",
        "table",
    ]
    # The bot's Microsoft App ID is the bot's own identity, not the one that can assign roles.
    assert settings["BOT_APP_ID"] == "botIdentityClientId"


def test_telemetry_is_sent_with_the_apps_identity() -> None:
    settings = app_settings(branches=Branches.NONE)
    assert (
        settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
        == "ClientId=${appIdentityClientId};Authorization=AAD"
    )


@pytest.mark.parametrize(
    ("itsm", "roster"),
    [
        *(((system,), roster) for system, roster in itertools.product(ITSM_SYSTEMS, ROSTER_PROVIDERS)),
        (ITSM_SYSTEMS, "pagerduty"),
    ],
    ids=lambda value: "+".join(value) if isinstance(value, tuple) else value,
)
def test_the_app_starts_with_what_the_deployment_sets(itsm: tuple[str, ...], roster: str) -> None:
    env = environment(deployment(itsm, roster))
    Settings.from_env(env).check_for_policy(itsm, roster)  # raises naming what is missing


@pytest.mark.parametrize("roster", ROSTER_PROVIDERS)
@pytest.mark.parametrize("system", ITSM_SYSTEMS)
def test_every_secret_reference_is_one_the_app_needs(system: str, roster: str) -> None:
    settings = deployment((system,), roster)
    for name, value in settings.items():
        if not (isinstance(value, str) and KEY_VAULT_REFERENCE.fullmatch(value)):
            continue
        without = environment({key: item for key, item in settings.items() if key != name})
        with pytest.raises(SettingsError):
            Settings.from_env(without).check_for_policy((system,), roster)


@pytest.mark.parametrize("system", ["servicenow", "jira", "ivanti"])
def test_a_rotation_adds_the_previous_webhook_secret(system: str) -> None:
    previous = f"{system.upper()}_WEBHOOK_SECRET_PREVIOUS"
    assert previous not in deployment((system,), "entra_group")
    rotating = deployment((system,), "entra_group", rotating=(system,))
    assert KEY_VAULT_REFERENCE.fullmatch(str(rotating[previous]))
    assert str(rotating[previous]).endswith(f"/{system}-webhook-secret-previous/)")
    # A system the policy does not enable gets no reference, rotating or not.
    assert previous not in deployment(("xurrent",), "entra_group", rotating=(system,))


def test_the_durable_task_scheduler_backend_adds_its_identity_based_connection() -> None:
    assert "DURABLE_TASK_SCHEDULER_CONNECTION_STRING" not in deployment(("jira",), "entra_group")
    settings = deployment(("jira",), "entra_group", backend="DurableTaskScheduler")
    connection = str(settings["DURABLE_TASK_SCHEDULER_CONNECTION_STRING"])
    assert "Authentication=ManagedIdentity" in connection
    assert "ClientID=${appIdentityClientId}" in connection
    assert settings["TASKHUB_NAME"] == "taskHubName"
    # host.json keeps the Azure Storage provider (the local runtime's); these app settings override it.
    host = json.loads((REPO_ROOT / "host.json").read_text())["extensions"]["durableTask"]
    assert "storageProvider" not in host
    override = "AzureFunctionsJobHost__extensions__durableTask__"
    assert settings[override + "storageProvider__type"] == "azureManaged"
    connection_name = settings[override + "storageProvider__connectionStringName"]
    assert connection_name == "DURABLE_TASK_SCHEDULER_CONNECTION_STRING" and connection_name in settings
    assert settings[override + "hubName"] == "%TASKHUB_NAME%"
    assert not any(name.startswith(override) for name in deployment(("jira",), "entra_group"))


def test_main_defaults_match_the_apps_defaults_and_the_shipped_policy() -> None:
    main = parse(MAIN)

    def default(name: str) -> object:
        return evaluate(name, main)

    assert default("sweepSchedule") == DEFAULT_SWEEP_SCHEDULE
    assert default("exchangeAdminBaseUrl") == DEFAULT_EXCHANGE_ADMIN_BASE_URL
    assert default("policyPath") == DEFAULT_POLICY_PATH.relative_to(DEFAULT_POLICY_PATH.parents[1]).as_posix()
    # `azd up` with the defaults must start with the policy in the repository: same ITSMs, same roster.
    policy = load_policy(DEFAULT_POLICY_PATH)
    systems = default("itsmSystems")
    assert isinstance(systems, list)
    assert sorted(systems) == sorted(policy.enabled_itsm)
    assert default("rosterProvider") == policy.roster.provider
