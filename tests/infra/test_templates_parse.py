"""Every Bicep template parses (pycep-parser): the first thing the Bicep compiler would refuse at `azd up`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.bicep import INFRA, MAIN, MODULES, bicep_files, parse, unwrap


def test_infra_holds_main_and_its_modules() -> None:
    names = {path.relative_to(INFRA).as_posix() for path in bicep_files()}
    assert "main.bicep" in names
    assert {"modules/function-app.bicep", "modules/rbac.bicep"} <= names


@pytest.mark.parametrize("path", bicep_files(), ids=lambda path: path.relative_to(INFRA).as_posix())
def test_template_parses_without_errors(path: Path) -> None:
    template = parse(path)  # raises with the line and column of the first error
    assert template.get("resources") or template.get("modules"), f"{path.name} declares nothing"


def test_main_deploys_at_subscription_scope() -> None:
    assert parse(MAIN)["globals"]["scope"]["value"] == "subscription"


def test_every_module_main_uses_exists_and_is_local() -> None:
    for name, module in parse(MAIN)["modules"].items():
        # Registry modules (br:, ts:) can be neither fetched nor scanned here: only local files.
        assert module["type"] == "local", f"module {name} is not a local file"
        assert (INFRA / module["detail"]["path"]).is_file(), (
            f"module {name}: {module['detail']['path']} missing"
        )


def test_every_module_call_passes_known_parameters_and_all_required_ones() -> None:
    # What the Bicep compiler would report first (BCP035/BCP037) at `azd up`; nothing here can run it.
    problems: list[str] = []
    for name, module in parse(MAIN)["modules"].items():
        _, config = unwrap(module)
        passed = set(config.get("params") or {})
        declared = parse(INFRA / module["detail"]["path"])["parameters"]
        required = {param for param, spec in declared.items() if spec.get("default") is None}
        problems += [f"{name}: unknown parameter {param}" for param in sorted(passed - set(declared))]
        problems += [f"{name}: missing parameter {param}" for param in sorted(required - passed)]
    assert not problems, "\n".join(problems)


def test_every_module_is_used_by_main() -> None:
    used = {module["detail"]["path"] for module in parse(MAIN)["modules"].values()}
    modules = sorted(path.relative_to(INFRA).as_posix() for path in MODULES.glob("*.bicep"))
    assert [path for path in modules if path not in used] == []
