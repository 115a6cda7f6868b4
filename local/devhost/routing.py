"""Functions route templates (``requests/{requestId}``, ``{id:int}``, ``{name?}``, ``{*rest}``)."""

from __future__ import annotations

import re

_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "guid": r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?i:true|false)",
}
_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_PARAMETER = re.compile(
    r"^\{(?P<star>\*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<constraint>[a-z]+))?(?P<opt>\?)?\}$"
)


class RouteTemplateError(ValueError):
    pass


class RouteTemplate:
    def __init__(self, template: str) -> None:
        self.template = template.strip("/")
        parts: list[str] = []
        literals = 0
        for segment in self.template.split("/") if self.template else []:
            match = _PARAMETER.match(segment)
            if match is None:
                if "{" in segment or "}" in segment:
                    raise RouteTemplateError(f"unsupported route segment {segment!r} in {template!r}")
                parts.append("/" + re.escape(segment))
                literals += 1
                continue
            name = match["name"]
            if match["star"]:
                parts.append(f"(?:/(?P<{name}>.*))?")
                continue
            constraint = match["constraint"]
            if constraint and constraint not in _CONSTRAINTS:
                raise RouteTemplateError(f"unsupported route constraint {constraint!r} in {template!r}")
            pattern = _CONSTRAINTS.get(constraint or "", r"[^/]+")
            group = f"/(?P<{name}>{pattern})"
            parts.append(f"(?:{group})?" if match["opt"] else group)
        # Literals match in any case, as in ASP.NET Core routing; parameter values keep their case.
        self._regex = re.compile("^" + "".join(parts) + "/?$", re.IGNORECASE)
        self._ranges = {
            m["name"]: _RANGES[m["constraint"]]
            for m in map(_PARAMETER.match, self.template.split("/"))
            if m is not None and m["constraint"] in _RANGES
        }
        # Sort key: more literal segments first, catch-alls last.
        self.precedence = (-literals, "{*" in self.template, self.template)

    def match(self, path: str) -> dict[str, str] | None:
        """Match a path below the route prefix (leading slash, e.g. ``/requests/abc``)."""
        found = self._regex.match(path.rstrip("/") if path != "/" else "")
        if found is None:
            return None
        values = {k: v for k, v in found.groupdict().items() if v is not None}
        for name, (low, high) in self._ranges.items():
            if name in values and not low <= int(values[name]) <= high:
                return None  # {x:int} is an Int32 on the host: a larger number does not match
        return values
