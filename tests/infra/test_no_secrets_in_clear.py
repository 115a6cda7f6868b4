"""No secret, key or connection string in clear text: not in outputs, parameters or app settings.

Outputs and parameters land in the deployment history (readable by anyone with read access to the resource
group) and in azd's .azure/<env>/ files; app settings are readable by anyone who may read the app's
configuration. Secrets therefore reach the app only as Key Vault references, and no secret value ever passes
through a deployment: an operator writes them into the vault (docs/deploy.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.settings import SETTINGS_VARIABLES
from tests.infra.bicep import (
    INFRA,
    MAIN,
    MODULES,
    REPO_ROOT,
    Branches,
    app_settings,
    bicep_files,
    parse,
    property_path,
    unwrap,
)

# ARM's list*() functions (listKeys, listSecrets, listConnectionStrings, ...) return credentials.
LIST_FUNCTION = re.compile(r"\blist[A-Z]\w*\s*\(")
CREDENTIAL_IN_TEXT = re.compile(
    r"AccountKey=|SharedAccessKey=|SharedAccessSignature=|DefaultEndpointsProtocol=|InstrumentationKey=|Password=",
    re.IGNORECASE,
)
# Names of credentials: a name ends with what it holds ("jiraApiToken", "SERVICENOW_WEBHOOK_SECRET_PREVIOUS");
# "KEY_VAULT_NAME" holds a name and "secretsOfficerPrincipalId" a principal id.
SECRET_NAME = re.compile(
    r"(secret|password|token|connection_?string|credential|key)s?(_?previous)?$", re.IGNORECASE
)
# Properties whose value is a credential or carries one.
SECRET_PROPERTY = re.compile(
    r"connectionstring|instrumentationkey|primarykey|secondarykey|keys?$", re.IGNORECASE
)
KEY_VAULT_REFERENCE = re.compile(r"@Microsoft\.KeyVault\(SecretUri=\$\{secretsUri\}/[a-z0-9-]+/\)")
# The settings shared/settings.py reads as secrets (webhook secrets, API passwords and tokens).
SECRET_SETTINGS = frozenset(name for name in SETTINGS_VARIABLES if re.search(r"SECRET|PASSWORD|TOKEN", name))
AZD_REFERENCE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(=[^}]*)?\}")


def _text_files() -> list[Path]:
    files = (path for path in INFRA.rglob("*") if path.is_file() and "__pycache__" not in path.parts)
    return [*sorted(files), REPO_ROOT / "azure.yaml"]


def _names_in(node: object) -> set[str]:
    """Every name or string that appears anywhere in an expression."""
    if isinstance(node, str):
        return {node}
    if isinstance(node, dict):
        return set().union(*(_names_in(value) | {str(key)} for key, value in node.items()))
    if isinstance(node, list):
        return set().union(*(_names_in(item) for item in node))
    return set()


def _secure_parameters(template: dict[str, object]) -> set[str]:
    parameters = template.get("parameters") or {}
    assert isinstance(parameters, dict)
    return {
        name
        for name, spec in parameters.items()
        if any(decorator.get("type") == "secure" for decorator in spec.get("decorators", []))
    }


def test_the_secret_settings_are_recognised() -> None:
    # If settings.py renames its secrets, the checks below must still know which they are.
    assert {"SERVICENOW_WEBHOOK_SECRET", "JIRA_API_TOKEN", "SERVICENOW_API_PASSWORD"} <= SECRET_SETTINGS


@pytest.mark.parametrize("path", _text_files(), ids=lambda path: path.relative_to(REPO_ROOT).as_posix())
def test_no_file_reads_keys_or_holds_a_credential(path: Path) -> None:
    text = path.read_text()
    assert not LIST_FUNCTION.search(text), f"{path.name} calls a list*() function, which returns credentials"
    assert not CREDENTIAL_IN_TEXT.search(text), f"{path.name} holds a credential-bearing connection string"


def test_no_secret_value_passes_through_a_deployment() -> None:
    # Key Vault secrets are written by an operator, never declared with a value in Bicep.
    for path in bicep_files():
        template = parse(path)
        for name, resource in (template.get("resources") or {}).items():
            assert resource["type"] != "Microsoft.KeyVault/vaults/secrets", (
                f"{path.name}: {name} holds a secret"
            )
        for name in _secure_parameters(template):
            spec = template["parameters"][name]
            assert not spec.get("default"), f"{path.name}: @secure() parameter {name} has a default value"


@pytest.mark.parametrize("path", bicep_files(), ids=lambda path: path.relative_to(INFRA).as_posix())
def test_no_output_is_a_secret(path: Path) -> None:
    template = parse(path)
    secure = _secure_parameters(template)
    for name, output in (template.get("outputs") or {}).items():
        assert not SECRET_NAME.search(name), f"{path.name}: output {name} is named like a secret"
        assert output.get("type") != "securestring", f"{path.name}: output {name}"
        names = _names_in(output["value"])
        assert not names & secure, (
            f"{path.name}: output {name} echoes @secure() parameter(s) {names & secure}"
        )
        leaked = sorted(part for part in names if SECRET_PROPERTY.search(part) or LIST_FUNCTION.search(part))
        assert not leaked, f"{path.name}: output {name} reads {leaked}"


def test_main_outputs_are_upper_snake_case() -> None:
    outputs = parse(MAIN)["outputs"]
    assert outputs
    assert [name for name in outputs if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name)] == []


def test_no_parameter_is_a_secret_in_clear() -> None:
    for path in bicep_files():
        template = parse(path)
        for name in template.get("parameters") or {}:
            if SECRET_NAME.search(name):
                assert name in _secure_parameters(template), f"{path.name}: {name} must be @secure()"


def test_parameters_file_takes_values_from_azd_and_no_secret() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = parse(MAIN)["parameters"]
    for name, entry in parameters.items():
        assert name in declared, f"main.parameters.json sets {name}, which main.bicep does not declare"
        assert not SECRET_NAME.search(name), name
        value = entry["value"]
        if isinstance(value, str):
            reference = AZD_REFERENCE.fullmatch(value)
            assert reference, f"{name}: {value!r} is not an azd ${{VARIABLE}} reference"
            assert not SECRET_NAME.search(reference["name"]), f"{name} takes a secret from azd's environment"
    required = {name for name, spec in declared.items() if spec.get("default") is None}
    assert required <= set(parameters), f"azd must supply {sorted(required - set(parameters))}"


def test_every_secret_setting_is_a_key_vault_reference() -> None:
    settings = app_settings(branches=Branches.ALL)
    deployed = SECRET_SETTINGS & set(settings)
    assert deployed, "no secret setting found: is the reader still seeing the ITSM settings?"
    for name in deployed:
        value = settings[name]
        assert isinstance(value, str) and KEY_VAULT_REFERENCE.fullmatch(value), name


def test_connection_strings_in_settings_carry_no_key() -> None:
    settings = app_settings(branches=Branches.ALL)
    for name, value in settings.items():
        names = _names_in(value)
        assert not any(LIST_FUNCTION.search(part) or CREDENTIAL_IN_TEXT.search(part) for part in names), name
        if "CONNECTION_STRING" not in name:
            continue
        if name == "APPLICATIONINSIGHTS_CONNECTION_STRING":
            # Its instrumentation key is an identifier; the component refuses key-based ingestion.
            assert property_path(value) == ["applicationInsights", "properties", "ConnectionString"]
            _, component = unwrap(parse(MODULES / "monitoring.bicep")["resources"]["applicationInsights"])
            assert component["properties"]["DisableLocalAuth"] is True
        elif name == "DURABLE_TASK_SCHEDULER_CONNECTION_STRING":
            assert isinstance(value, str) and "Authentication=ManagedIdentity" in value
        else:
            pytest.fail(f"{name}: a connection string the checks do not know")
