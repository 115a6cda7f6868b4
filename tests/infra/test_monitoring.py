"""The workbook and the alert rules (infra/modules/workbook.bicep, alerts.bicep) against the app's telemetry.

Their queries (infra/monitoring/) are parsed and bound by Microsoft's Kusto language service (npm
@kusto/language-service-next, run with node) against the workspace's AppTraces schema: a syntax error, an
unknown column or function, or a type error fails here rather than at `azd up`. What they look for is checked
against the app: every signal is one shared/telemetry.py raises, every step, state and detail field one the
app records, and every field of the PimSteps definition one the telemetry event carries.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared import telemetry
from shared.audit import STATE_KIND, AuditRow, canonical_json
from tests.infra.bicep import INFRA, MODULES, REPO_ROOT, call, parse

MONITORING = INFRA / "monitoring"
STEPS = MONITORING / "steps.kql"
CHECKER = Path(__file__).with_name("kql_check.js")
# The workspace-based Application Insights table the host writes worker logs to (Azure Monitor reference).
APP_TRACES = (
    "(TenantId: string, TimeGenerated: datetime, Message: string, SeverityLevel: int, Properties: dynamic,"
    " Measurements: dynamic, OperationName: string, OperationId: string, ParentId: string,"
    " AppVersion: string, AppRoleName: string, AppRoleInstance: string, ClientType: string, ItemCount: int,"
    " SDKVersion: string, ResourceGUID: string, IKey: string, SourceSystem: string, Type: string,"
    " _ResourceId: string)"
)
SOURCES = [*(REPO_ROOT / "orchestrators").glob("*.py"), *(REPO_ROOT / "shared").glob("*.py"),
           *(REPO_ROOT / "activities").glob("*.py")]  # fmt: skip


def loaded(template: str, variable: str) -> dict[str, dict[str, Any]]:
    """name -> entry of a template's list variable whose ``query`` is ``loadTextContent(file)``, with the
    file's text under ``text``."""
    entries = {}
    for entry in parse(MODULES / template)["variables"][variable]["value"]:
        function = call(entry["query"])
        assert function is not None and function[0] == "load_text_content", entry["name"]
        path = (MODULES / function[1]["file_path"]).resolve()
        entries[entry["name"]] = {**entry, "path": path, "text": path.read_text()}
    return entries


RULES = loaded("alerts.bicep", "rules")
TILES = loaded("workbook.bicep", "tiles")
QUERIES = {f"alert {name}": rule["text"] for name, rule in RULES.items()} | {
    f"tile {name}": tile["text"] for name, tile in TILES.items()
}


def analyse(queries: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Every diagnostic of each query (prefixed with the PimSteps definition, as the templates do)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required (make setup installs the Kusto language service with npm)")
    prelude = STEPS.read_text()
    payload = {"tables": {"AppTraces": APP_TRACES},
               "queries": {name: f"{prelude}\n{text}" for name, text in queries.items()}}  # fmt: skip
    done = subprocess.run([node, str(CHECKER)], input=json.dumps(payload), capture_output=True, text=True,
                          cwd=REPO_ROOT, check=False, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    return result


def test_every_query_file_is_used_and_every_rule_and_tile_loads_one() -> None:
    used = {entry["path"] for entry in [*RULES.values(), *TILES.values()]}
    assert used == set(MONITORING.glob("alerts/*.kql")) | set(MONITORING.glob("workbook/*.kql"))
    for template in ("alerts.bicep", "workbook.bicep"):
        assert "loadTextContent('../monitoring/steps.kql')" in (MODULES / template).read_text()


def test_every_query_parses_and_binds_against_the_workspace_schema() -> None:
    diagnostics = analyse(QUERIES)
    assert set(diagnostics) == set(QUERIES)
    errors = {name: found for name, found in diagnostics.items() if found}
    assert errors == {}


def test_the_checker_reports_an_unknown_column_and_a_syntax_error() -> None:
    found = analyse({"typo": "PimSteps | where signall == 'x'", "syntax": "PimSteps | where (step =="})
    assert [d["code"] for d in found["typo"]] == ["KS142"] and "signall" in found["typo"][0]["message"]
    assert found["syntax"] and all(d["severity"] == "Error" for d in found["syntax"])


def literals(pattern: str, text: str) -> set[str]:
    """The string literals a column is compared with: ``col == "x"``, ``col in ("x", "y")``."""
    found: set[str] = set()
    for match in re.finditer(rf"\b{pattern}\s*(?:==|!?in\s*\(|startswith)\s*([^|\n]*)", text):
        found.update(re.findall(r'"([^"]*)"', match.group(1).split(" and ")[0]))
    return found


def test_the_alert_rules_cover_every_signal_once() -> None:
    watched = {name: literals("signal", rule["text"]) for name, rule in RULES.items()}
    assert all(len(signals) == 1 for signals in watched.values()), watched
    assert sorted(s for signals in watched.values() for s in signals) == sorted(telemetry.SIGNALS)


def test_what_the_queries_look_for_is_what_the_app_records() -> None:
    source = "\n".join(path.read_text() for path in SOURCES)
    states = set(re.findall(r'set_state\(\s*"(\w+)"', source))
    for name, text in QUERIES.items():
        for step in literals("step", text):
            assert f'"{step}' in source, f"{name}: no step {step!r} is recorded"
        for state in literals("state", text):
            assert state in states, f"{name}: no request state {state!r}"
        for signal in literals("signal", text):
            assert signal in telemetry.SIGNALS, f"{name}: unknown signal {signal!r}"
        for field in re.findall(r"\bdetail(?:\.(\w+)|\[\"(\w+)\"\])", text):
            field = "".join(field)
            # A key the app writes into a detail: `"field": value` in a dict literal.
            assert re.search(rf'"{field}"\s*:', source), f"{name}: no detail field {field!r} is recorded"


def test_the_steps_definition_reads_only_fields_the_telemetry_event_carries() -> None:
    detail = {"state": "escalated", "code": "X", "n": 1}
    time = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    fields = {"Chain": "c", "Seq": 1, "Time": time, "Kind": STATE_KIND, "Outcome": "recorded",
              "ActorId": "a", "ActorUpn": "u", "Role": "r", "Detail": canonical_json(detail),
              "GraphStatus": 429, "GraphRequestId": "g", "GraphClientRequestId": "c",
              "WorkflowVersion": "w", "PolicyVersion": "p"}  # fmt: skip
    labels = {"ticket": "INC1", "system": "servicenow", "tier": "high"}
    event = telemetry.step_fields(AuditRow("c", 1, fields, "h"), datetime(2025, 12, 31, tzinfo=UTC), labels)
    prelude = STEPS.read_text()
    assert f'startswith "{telemetry.EVENT} "' in prelude
    assert f"substring(Message, {len(telemetry.EVENT) + 1})" in prelude
    read = {"".join(name) for name in re.findall(r"\be(?:\.(\w+)|\[\"(\w+)\"\])", prelude)}
    assert read <= set(event), read - set(event)
    assert set(event) <= read, f"not in PimSteps: {set(event) - read}"


def test_rules_query_the_workspace_under_their_own_identity_and_notify_the_action_group() -> None:
    config = parse(MODULES / "alerts.bicep")["resources"]["alertRules"]["config"]["config"]
    assert config["properties"]["scopes"] == ["logAnalyticsId"]
    assert config["identity"]["type"] == "UserAssigned"
    # The language service checked the queries here; Azure's check at creation would race the role.
    assert config["properties"]["skipQueryValidation"] is True
    [group] = config["properties"]["actions"]["actionGroups"]
    assert group["operator"]["operands"] == {"operand_1": "actionGroup", "operand_2": "id"}
    assert "AppTraces" in STEPS.read_text()  # the workspace's table, not Application Insights' "traces"


def test_the_sweep_alert_fires_after_15_minutes_without_a_run_and_the_spike_counts_a_window() -> None:
    sweep, spike = RULES["sweep-not-running"], RULES["signature-rejected-spike"]
    assert (sweep["window"], sweep["operator"], sweep["threshold"], sweep["measure"]) == (
        "PT15M",
        "LessThan",
        1,
        "runs",
    )
    assert "summarize runs = count()" in sweep["text"]  # a row with 0 when nothing ran, so the rule can fire
    assert (spike["window"], spike["operator"], spike["measure"]) == (
        "PT15M",
        "GreaterThanOrEqual",
        "rejected",
    )
    assert spike["threshold"] == "signatureRejectionThreshold"
    for name, rule in RULES.items():
        assert rule["autoMitigate"] == bool(rule["measure"]), (
            name
        )  # events stay fired until someone closes them


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_a_runbook_in_docs_operations() -> None:
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    anchors = {slug(heading) for heading in re.findall(r"^#{2,3} (.+)$", text, re.MULTILINE)}
    for name, rule in RULES.items():
        assert name in anchors, f"docs/operations.md has no section for {name}"
        assert f"docs/operations.md#{name}" in rule["description"], name


def test_host_json_keeps_every_trace() -> None:
    """Sampling would drop telemetry lines, and an alert rule would miss the row it watches."""
    host = json.loads((REPO_ROOT / "host.json").read_text())["logging"]
    assert "Trace" in host["applicationInsights"]["samplingSettings"]["excludedTypes"].split(";")
    assert host["logLevel"]["Function"] in ("Information", "Debug", "Trace")
