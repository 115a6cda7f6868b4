"""checkov's Bicep checks, offline: no parsing error, no failed check, every skip justified and documented.

checkov runs from its own virtualenv (`make checkov-setup`, pinned in requirements-checkov.txt): its pins
clash with the app's. It parses Bicep with its own, older pycep-parser, so the templates must satisfy both
parsers. `make test` sets REQUIRE_CHECKOV, so a missing checkov fails there instead of skipping.
Each skip is an inline `checkov:skip=<id>: <reason>` comment on the one resource it concerns.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep import INFRA, REPO_ROOT

CONFIG = INFRA / ".checkov.yaml"
DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"
DEFAULT_CHECKOV = REPO_ROOT / ".local" / "checkov-venv" / "bin" / "checkov"
CHECK_ID = re.compile(r"\bCKV2?_AZURE_\d+\b")


def _checkov() -> Path:
    executable = Path(os.environ.get("CHECKOV") or DEFAULT_CHECKOV)
    if not executable.is_absolute():
        executable = REPO_ROOT / executable
    if not executable.exists():
        message = f"checkov not found at {executable}: run `make checkov-setup`"
        if os.environ.get("REQUIRE_CHECKOV"):
            pytest.fail(message)
        pytest.skip(message)
    return executable


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    # No platform key: checkov stays offline (--skip-download in the config; nothing else is fetched).
    env = {key: value for key, value in os.environ.items() if key not in ("BC_API_KEY", "PRISMA_API_URL")}
    result = subprocess.run(
        [str(_checkov()), "--config-file", str(CONFIG), "--output", "json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        parsed = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON report (exit {result.returncode}):\n{result.stderr[-3000:]}")
    # One framework gives one report; a report without "results" means checkov found nothing to scan.
    assert isinstance(parsed, dict) and "results" in parsed, f"checkov scanned nothing: {parsed}"
    return parsed


def _describe(check: dict[str, Any]) -> str:
    return f"{check['check_id']} {check['check_name']}: {check['resource']} ({check['file_path']})"


def test_checkov_scans_the_templates(report: dict[str, Any]) -> None:
    scanned = {
        Path(check["file_path"]).name
        for kind in ("passed_checks", "skipped_checks")
        for check in report["results"][kind]
    }
    assert {"function-app.bicep", "storage.bicep", "keyvault.bicep"} <= scanned
    assert report["summary"]["passed"] > 0


def test_checkov_parses_every_template(report: dict[str, Any]) -> None:
    assert report["summary"]["parsing_errors"] == 0, report["results"]["parsing_errors"]


def test_checkov_finds_no_failed_check(report: dict[str, Any]) -> None:
    failed = [_describe(check) for check in report["results"]["failed_checks"]]
    assert not failed, "fix, or skip inline with a reason and list in docs/deploy.md:\n" + "\n".join(failed)


def test_every_skip_is_justified_and_documented(report: dict[str, Any]) -> None:
    doc_lines = DEPLOY_DOC.read_text().splitlines()
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "").strip()
        assert reason and reason != "No comment provided", f"{_describe(check)}: skipped without a reason"
        file_name = Path(check["file_path"]).name
        assert any(check["check_id"] in line and file_name in line for line in doc_lines), (
            f"docs/deploy.md lists no skip of {check['check_id']} in {file_name}"
        )


def test_docs_list_no_skip_that_is_not_in_the_templates(report: dict[str, Any]) -> None:
    skipped = {check["check_id"] for check in report["results"]["skipped_checks"]}
    documented = set(CHECK_ID.findall(DEPLOY_DOC.read_text()))
    assert documented <= skipped, (
        f"docs/deploy.md lists skips the templates no longer have: {documented - skipped}"
    )
