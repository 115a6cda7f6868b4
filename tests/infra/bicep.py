"""Reading the templates under infra/ for the infrastructure checks, through pycep-parser.

Nothing here can run the Bicep compiler, az or azd, so the checks read the templates themselves. pycep turns a
template into plain dicts ("parameters", "variables", "resources", "modules", "outputs"); an expression is a
literal, a name, or a node: ``{"function": {"type": ..., "parameters": {...}}}`` for a call and
``{"operator": {"type": ..., "operands": {...}}}`` for an operator. pycep writes a string literal and a name
alike (both are Python strings), so a string counts as a name where the template declares that name.

:func:`evaluate` understands the few constructs the app settings are built from (variables, ``union``,
``contains``, ``empty``, ``==``, ``!=``, ``&&``, ``||``, ``!``, ``?:``). Anything else raises
:class:`UnreadableExpression`: extend the reader rather than let a check pass on an expression it cannot see.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from pycep import BicepParser

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
FUNCTION_APP = MODULES / "function-app.bicep"

Template = dict[str, Any]


class UnreadableExpression(ValueError):
    """An expression :func:`evaluate` does not understand."""


class Branches(enum.Enum):
    """How :func:`evaluate` treats ``condition ? a : b`` when it builds an object."""

    CHOSEN = "the branch the condition selects (its parameters must be given)"
    ALL = "both branches merged: everything the template could ever produce"
    NONE = "neither branch: only what the template produces whatever the parameters"


def bicep_files() -> list[Path]:
    """Every template under infra/, main.bicep and the modules."""
    return sorted(INFRA.rglob("*.bicep"))


@functools.cache
def _parser() -> BicepParser:
    return BicepParser()


@functools.cache
def parse(path: Path) -> Template:
    """pycep's JSON for one template; raises (lark names the line and column) when it does not parse."""
    return cast(Template, _parser().parse(file_path=path))


def unwrap(declaration: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(condition or None, config) of a resource or module declaration; pycep nests a conditional one's
    config one level deeper."""
    config: dict[str, Any] = declaration["config"]
    if set(config) == {"condition", "config"}:
        return config["condition"], config["config"]
    return None, config


def call(node: object) -> tuple[str, dict[str, Any]] | None:
    """(function name, arguments) when ``node`` is a function call."""
    if isinstance(node, dict) and set(node) == {"function"}:
        return node["function"]["type"], node["function"].get("parameters") or {}
    return None


def operator(node: object) -> tuple[str, dict[str, Any]] | None:
    """(operator name, operands) when ``node`` is an operator."""
    if isinstance(node, dict) and set(node) == {"operator"}:
        return node["operator"]["type"], node["operator"]["operands"]
    return None


def property_path(node: object) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"] when ``node`` is a plain property access on a name."""
    parts = operator(node)
    if parts is None or parts[0] != "property_accessor":
        return [node] if isinstance(node, str) else None
    head = property_path(parts[1]["operand_1"])
    tail = property_path(parts[1]["operand_2"])
    return None if head is None or tail is None else head + tail


def evaluate(
    node: object,
    template: Template,
    parameters: Mapping[str, object] | None = None,
    branches: Branches = Branches.CHOSEN,
) -> object:
    """The value of ``node`` in ``template``, with ``parameters`` as the values of its parameters.

    An object literal's own values are returned as written (their expressions are not evaluated): the checks
    read keys and the shape of values, not the deployed values.
    """
    given: Mapping[str, object] = parameters or {}
    if node is None or isinstance(node, bool | int | float):
        return node
    if isinstance(node, str):
        return _name_or_literal(node, template, given, branches)
    if isinstance(node, list):
        return [evaluate(item, template, given, branches) for item in node]
    function = call(node)
    if function is not None:
        return _call(function, template, given, branches)
    operation = operator(node)
    if operation is not None:
        return _operate(operation, template, given, branches)
    if isinstance(node, dict):
        return {_unquote(key): value for key, value in node.items()}
    raise UnreadableExpression(f"cannot read {node!r}")


def _name_or_literal(
    name: str, template: Template, given: Mapping[str, object], branches: Branches
) -> object:
    if name in given:
        return given[name]
    variables: dict[str, Any] = template.get("variables") or {}
    if name in variables:
        return evaluate(variables[name]["value"], template, given, branches)
    declared: dict[str, Any] = template.get("parameters") or {}
    if name in declared:
        default = declared[name].get("default")
        if default is None:
            raise UnreadableExpression(f"parameter {name!r} has no default: give it a value")
        return evaluate(default, template, given, branches)
    return name  # a string literal


def _call(
    function: tuple[str, dict[str, Any]], template: Template, given: Mapping[str, object], branches: Branches
) -> object:
    name, arguments = function
    values = [evaluate(argument, template, given, branches) for argument in arguments.values()]
    if name == "union" and all(isinstance(value, dict) for value in values):
        merged: dict[str, object] = {}
        for value in values:
            merged.update(cast(dict[str, object], value))
        return merged
    if name == "contains" and len(values) == 2 and isinstance(values[0], list | dict | str):
        return values[1] in values[0]
    if name == "empty" and len(values) == 1 and isinstance(values[0], list | dict | str):
        return len(values[0]) == 0
    raise UnreadableExpression(f"cannot evaluate {name}({', '.join(map(repr, values))})")


def _operate(
    operation: tuple[str, dict[str, Any]], template: Template, given: Mapping[str, object], branches: Branches
) -> object:
    name, operands = operation
    if name == "conditional":
        if branches is Branches.CHOSEN:
            condition = evaluate(operands["condition"], template, given, branches)
            if not isinstance(condition, bool):
                raise UnreadableExpression(
                    f"condition {operands['condition']!r} is not a boolean: {condition!r}"
                )
            return evaluate(operands["true_value" if condition else "false_value"], template, given, branches)
        either = [evaluate(operands[key], template, given, branches) for key in ("true_value", "false_value")]
        if not all(isinstance(value, dict) for value in either):
            raise UnreadableExpression(f"both branches of {operation!r} must be objects")
        if branches is Branches.NONE:
            return {}
        return {**cast(dict[str, object], either[1]), **cast(dict[str, object], either[0])}
    values = [evaluate(operand, template, given, branches) for operand in operands.values()]
    if name == "equals":
        return values[0] == values[1]
    if name == "not_equals":
        return values[0] != values[1]
    if name in ("and", "or", "not") and all(isinstance(value, bool) for value in values):
        if name == "and":
            return all(values)
        if name == "or":
            return any(values)
        return not values[0]
    raise UnreadableExpression(f"cannot evaluate operator {name} on {values!r}")


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


# --- The Function App's settings ------------------------------------------------------------------------


def app_settings(
    parameters: Mapping[str, object] | None = None, branches: Branches = Branches.CHOSEN
) -> dict[str, object]:
    """The app settings function-app.bicep deploys (name -> value as written in the template).

    With Branches.CHOSEN, ``parameters`` must give every module parameter the settings depend on.
    """
    template = parse(FUNCTION_APP)
    settings = evaluate("allSettings", template, parameters, branches)
    if not isinstance(settings, dict):
        raise UnreadableExpression(f"allSettings is not an object: {settings!r}")
    return settings


def deployed_setting_source() -> tuple[object, dict[str, Any]]:
    """(what the Function App's siteConfig.appSettings loops over, the name/value item it builds)."""
    _, site = unwrap(parse(FUNCTION_APP)["resources"]["functionApp"])
    loop = site["properties"]["siteConfig"]["appSettings"]
    return loop["loop_type"]["detail"]["array_name"], loop["config"]
