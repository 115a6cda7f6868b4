"""What the deployment must be, beyond what checkov knows: the issue's hardening, identities and role model.

The app's identity is Tier-0 (it can make anyone Global Administrator), so these pin the properties a later
edit must not lose without a failing test: no basic-auth publishing, no shared keys, RBAC-only Key Vault
with purge protection, role assignments scoped to single resources under deterministic names, and a bot that
runs under its own identity.
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

from tests.infra.bicep import (
    FUNCTION_APP,
    INFRA,
    MAIN,
    MODULES,
    REPO_ROOT,
    call,
    evaluate,
    parse,
    property_path,
    unwrap,
)

# Built-in role definition ids (the same in every tenant) -> role name.
BUILT_IN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "0ad04412-c4d5-4796-b79c-f76d14c8d402": "Durable Task Data Contributor",
    "73c42c96-874c-492b-b04d-ab87d138a893": "Log Analytics Reader",
}


def _resource(path_name: str, name: str) -> tuple[Any, dict[str, Any]]:
    return unwrap(parse(MODULES / path_name)["resources"][name])


def _role_assignments() -> dict[str, tuple[Any, dict[str, Any]]]:
    resources = parse(MODULES / "rbac.bicep")["resources"]
    return {
        name: unwrap(resource)
        for name, resource in resources.items()
        if resource["type"] == "Microsoft.Authorization/roleAssignments"
    }


def test_role_assignment_names_are_guid_of_scope_principal_and_role() -> None:
    rbac = parse(MODULES / "rbac.bicep")
    assignments = _role_assignments()
    assert assignments
    for name, (_, config) in assignments.items():
        function = call(config["name"])
        assert function is not None and function[0] == "guid", f"{name}: name is not guid(...)"
        scope, principal, role = function[1].values()
        # Scoped to one resource (never the subscription or the group), named after that same scope.
        assert property_path(scope) == [config["scope"], "id"], name
        assert principal == config["properties"]["principalId"], name
        role_id = call(config["properties"]["roleDefinitionId"])
        assert role_id is not None and role_id[1]["resource_name_1"] == role, name
        assert evaluate(role, rbac) in BUILT_IN_ROLES, f"{name}: unknown role id"


def test_the_apps_identity_holds_exactly_the_roles_it_needs() -> None:
    rbac = parse(MODULES / "rbac.bicep")
    roles: dict[str, object] = {}
    for condition, config in _role_assignments().values():
        if config["properties"]["principalId"] != "appIdentityPrincipalId":
            continue
        role_id = call(config["properties"]["roleDefinitionId"])
        assert role_id is not None
        roles[BUILT_IN_ROLES[str(evaluate(role_id[1]["resource_name_1"], rbac))]] = condition
    assert roles == {
        "Storage Blob Data Owner": None,
        "Storage Queue Data Contributor": None,
        "Storage Table Data Contributor": None,
        "Key Vault Secrets User": None,
        "Monitoring Metrics Publisher": None,
        "Durable Task Data Contributor": "useDurableTaskScheduler",
    }


def test_the_bots_identity_gets_no_azure_role() -> None:
    _, config = unwrap(parse(MAIN)["modules"]["rbac"])
    assert not any("botIdentity" in str(value) for value in config["params"].values())


def test_function_app_is_flex_consumption_python_311_with_an_always_ready_durable_instance() -> None:
    _, plan = _resource("function-app.bicep", "plan")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    _, site = _resource("function-app.bicep", "functionApp")
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    ready = {entry["name"]: entry["instanceCount"] for entry in config["scaleAndConcurrency"]["alwaysReady"]}
    assert ready == {"durable": "durableAlwaysReadyInstances"}
    assert parse(FUNCTION_APP)["parameters"]["durableAlwaysReadyInstances"]["default"] >= 1
    storage = config["deployment"]["storage"]["authentication"]
    assert storage == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "appIdentityId"}


def test_function_app_disables_basic_publishing_and_plain_http() -> None:
    policies = {
        config["name"]: config["properties"]["allow"]
        for resource in parse(FUNCTION_APP)["resources"].values()
        if resource["type"] == "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
        for _, config in [unwrap(resource)]
    }
    assert policies == {"ftp": False, "scm": False}
    _, site = _resource("function-app.bicep", "functionApp")
    assert site["properties"]["httpsOnly"] is True
    assert site["properties"]["siteConfig"]["ftpsState"] == "Disabled"
    assert site["properties"]["siteConfig"]["minTlsVersion"] == "1.2"


def test_function_app_runs_under_both_identities_and_reads_key_vault_as_the_app() -> None:
    _, site = _resource("function-app.bicep", "functionApp")
    assert site["identity"]["type"] == "UserAssigned"
    identities = {key.strip("'") for key in site["identity"]["userAssignedIdentities"]}
    assert identities == {"${appIdentityId}", "${botIdentityId}"}
    assert site["properties"]["keyVaultReferenceIdentity"] == "appIdentityId"


def test_storage_refuses_shared_keys_public_blobs_and_old_tls() -> None:
    _, account = _resource("storage.bicep", "storage")
    properties = account["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True


def test_storage_redundancy_is_always_geo_redundant() -> None:
    # The audit ledger lives here; the checkov skip of CKV_AZURE_206 relies on this.
    decorators = parse(MODULES / "storage.bicep")["parameters"]["skuName"]["decorators"]
    allowed = next(decorator["argument"] for decorator in decorators if decorator["type"] == "allowed")
    assert allowed and all(re.fullmatch(r"Standard_(RA)?G(Z)?RS", sku) for sku in allowed)


def test_storage_creates_the_tables_the_app_writes() -> None:
    app_tables: set[str] = set()
    for path in sorted((REPO_ROOT / "shared").glob("*.py")):
        module = importlib.import_module(f"shared.{path.stem}")
        app_tables |= {
            value
            for name, value in vars(module).items()
            if name.endswith("_TABLE") and isinstance(value, str)
        }
    declared = evaluate("ledgerTableNames", parse(MODULES / "storage.bicep"))
    assert isinstance(declared, list)
    assert sorted(declared) == sorted(app_tables)


def test_key_vault_is_rbac_only_with_soft_delete_and_purge_protection() -> None:
    _, vault = _resource("keyvault.bicep", "vault")
    properties = vault["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True
    assert "accessPolicies" not in properties


def test_monitoring_refuses_local_authentication() -> None:
    _, workspace = _resource("monitoring.bicep", "logAnalytics")
    assert workspace["properties"]["features"]["disableLocalAuth"] is True
    _, component = _resource("monitoring.bicep", "applicationInsights")
    assert component["properties"]["DisableLocalAuth"] is True


def test_bot_runs_under_its_own_identity_with_the_teams_channel() -> None:
    _, bot = _resource("bot.bicep", "bot")
    properties = bot["properties"]
    assert properties["msaAppType"] == "UserAssignedMSI"
    assert properties["msaAppId"] == "botIdentityClientId"
    assert properties["msaAppMSIResourceId"] == "botIdentityId"
    _, channel = _resource("bot.bicep", "teamsChannel")
    assert channel["properties"]["channelName"] == "MsTeamsChannel"
    _, module = unwrap(parse(MAIN)["modules"]["bot"])
    assert property_path(module["params"]["botIdentityClientId"]) == ["botIdentity", "outputs", "clientId"]
    # The route the app serves (orchestrators/teams_bot.py) under host.json's prefix.
    host = json.loads((REPO_ROOT / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == "api"
    assert 'route="messages"' in (REPO_ROOT / "orchestrators" / "teams_bot.py").read_text()
    assert (
        module["params"]["messagingEndpoint"] == "https://${functionApp.outputs.defaultHostName}/api/messages"
    )


def test_durable_task_scheduler_is_deployed_only_when_chosen() -> None:
    main = parse(MAIN)
    condition, _ = unwrap(main["modules"]["durableTaskScheduler"])
    assert condition == "useDurableTaskScheduler"
    assert evaluate("useDurableTaskScheduler", main) is False  # Azure Storage by default
    assert evaluate("useDurableTaskScheduler", main, {"durableBackend": "DurableTaskScheduler"}) is True
    # The Azure Storage backend uses host.json's hub; the scheduler's task hub takes the same name.
    host = json.loads((REPO_ROOT / "host.json").read_text())
    assert evaluate("taskHubName", main) == host["extensions"]["durableTask"]["hubName"]


def test_azd_deploys_the_repository_root_as_the_tagged_function_app() -> None:
    text = (REPO_ROOT / "azure.yaml").read_text()
    service = re.search(r"^services:\n  api:\n((?:    .*\n)+)", text, re.MULTILINE)
    assert service, "azure.yaml declares no service `api`"
    fields = dict(line.strip().split(": ", 1) for line in service.group(1).splitlines())
    assert fields == {"project": ".", "language": "python", "host": "function"}
    _, site = _resource("function-app.bicep", "functionApp")
    tags = call(site["tags"])
    assert tags is not None
    assert {key.strip("'"): value for key, value in tags[1]["arg_2"].items()} == {"azd-service-name": "api"}
    assert (INFRA / "main.parameters.json").is_file()
