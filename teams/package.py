"""Build the Teams app package (the zip a Teams admin uploads) from manifest.template.json and the icons.

    python -m teams.package --bot-app-id <BOT_APP_ID> --domain <function app host> [--out dist/teams-app.zip]

The Teams app id is the bot's id (`BOT_APP_ID`, the client id of the bot's user-assigned identity): one app
per bot, and the same id on every rebuild, so uploading a new build updates the app instead of adding another.
Only the standard library is used, so this runs without the project's virtualenv.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "manifest.template.json"
ICON_SIZES = {"color.png": (192, 192), "outline.png": (32, 32)}
DEFAULT_OUT = Path("dist/teams-app.zip")
DEFAULT_DEVELOPER_NAME = "IT Identity and Access"

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")
_SEMVER = re.compile(r"^\d{1,5}\.\d{1,5}\.\d{1,5}$")
_PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The schema's length limits (v1.17) for the fields this template fills.
_MAX_LENGTHS = {
    ("developer", "name"): 32,
    ("name", "short"): 30,
    ("name", "full"): 100,
    ("description", "short"): 80,
    ("description", "full"): 4000,
}
_REQUIRED = {
    "manifestVersion": (),
    "version": (),
    "id": (),
    "developer": ("name", "websiteUrl", "privacyUrl", "termsOfUseUrl"),
    "name": ("short", "full"),
    "description": ("short", "full"),
    "icons": ("color", "outline"),
    "accentColor": (),
    "bots": (),
    "validDomains": (),
}


class PackageError(ValueError):
    """Bad input or a manifest Teams would refuse; the message names every problem found."""


def check_bot_app_id(value: str) -> str:
    candidate = value.strip().lower()
    if not _GUID.match(candidate):
        raise PackageError(f"--bot-app-id must be a GUID (the BOT_APP_ID azd output), got {value!r}")
    return candidate


def check_domain(value: str) -> str:
    candidate = value.strip().lower()
    if "://" in candidate:
        raise PackageError(f"--domain must be a host name without a scheme (drop 'https://'), got {value!r}")
    if "/" in candidate or "?" in candidate or "#" in candidate:
        raise PackageError(f"--domain must be a host name without a path, got {value!r}")
    if ":" in candidate:
        raise PackageError(f"--domain must be a host name without a port, got {value!r}")
    if not _HOST.match(candidate):
        raise PackageError(f"--domain is not a valid host name, got {value!r}")
    return candidate


def check_developer_url(value: str) -> str:
    if not re.match(r"^https://[^\s\"'<>\\]+$", value):
        raise PackageError(f"--developer-url must be an https:// URL, got {value!r}")
    return value


def png_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, colour type) from a PNG's IHDR chunk."""
    if len(data) < 26 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise PackageError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return width, height, data[25]


def render(values: Mapping[str, str], template: str | None = None) -> dict[str, Any]:
    """The template with every ${NAME} replaced (JSON-escaped); a placeholder without a value is an error."""
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise PackageError(f"no value for placeholder(s): {', '.join(missing)}")
    filled = _PLACEHOLDER.sub(lambda m: json.dumps(values[m.group(1)])[1:-1], text)
    manifest: dict[str, Any] = json.loads(filled)
    return manifest


def validate(manifest: Mapping[str, Any], icons: Mapping[str, bytes]) -> None:
    """Raise PackageError listing every reason Teams (or this app) would not accept the package."""
    problems: list[str] = []
    for key, subkeys in _REQUIRED.items():
        if key not in manifest:
            problems.append(f"missing key {key!r}")
            continue
        problems += [f"missing key {key}.{sub}" for sub in subkeys if not manifest[key].get(sub)]
    if "${" in json.dumps(manifest):
        problems.append("a ${...} placeholder is left in the manifest")
    if manifest.get("manifestVersion") != "1.17":
        problems.append("manifestVersion must be '1.17'")
    if not _GUID.match(str(manifest.get("id", ""))):
        problems.append(f"id {manifest.get('id')!r} is not a GUID")
    if not _SEMVER.match(str(manifest.get("version", ""))):
        problems.append(f"version {manifest.get('version')!r} is not MAJOR.MINOR.PATCH")
    for (section, field), limit in _MAX_LENGTHS.items():
        text = str(manifest.get(section, {}).get(field, ""))
        if len(text) > limit:
            problems.append(f"{section}.{field} is {len(text)} characters (at most {limit})")
    for field in ("websiteUrl", "privacyUrl", "termsOfUseUrl"):
        if not str(manifest.get("developer", {}).get(field, "")).startswith("https://"):
            problems.append(f"developer.{field} must be an https:// URL")
    bots = manifest.get("bots", [])
    if len(bots) != 1:
        problems.append(f"expected exactly one bot, found {len(bots)}")
    for bot in bots:
        if not _GUID.match(str(bot.get("botId", ""))):
            problems.append(f"botId {bot.get('botId')!r} is not a GUID")
        if sorted(bot.get("scopes", [])) != ["personal", "team"]:
            problems.append(f"bot scopes must be team and personal, found {bot.get('scopes')}")
        if bot.get("isNotificationOnly") is not False:
            problems.append("the bot must not be notification-only (approvers click Approve / Deny)")
    domains = manifest.get("validDomains", [])
    if not domains:
        problems.append("validDomains is empty")
    problems += [f"validDomains entry {d!r} is not a plain host name" for d in domains if not _HOST.match(d)]
    referenced = set(manifest.get("icons", {}).values())
    if referenced != set(ICON_SIZES):
        problems.append(f"icons must be {sorted(ICON_SIZES)}, the manifest names {sorted(referenced)}")
    for name, (width, height) in ICON_SIZES.items():
        if name not in icons:
            problems.append(f"icon {name} is missing")
            continue
        try:
            got_w, got_h, colour_type = png_size(icons[name])
        except PackageError as error:
            problems.append(f"icon {name}: {error}")
            continue
        if (got_w, got_h) != (width, height):
            problems.append(f"icon {name} is {got_w}x{got_h}, Teams requires {width}x{height}")
        if name == "outline.png" and colour_type not in (4, 6):
            problems.append("icon outline.png needs an alpha channel (white on transparent)")
    if problems:
        raise PackageError("invalid Teams app package:\n  - " + "\n  - ".join(problems))


def build(
    bot_app_id: str,
    domain: str,
    out: Path = DEFAULT_OUT,
    *,
    app_version: str = "1.0.0",
    developer_name: str = DEFAULT_DEVELOPER_NAME,
    developer_url: str | None = None,
) -> Path:
    """Fill, validate and zip the package: manifest.json, color.png and outline.png at the zip's root."""
    bot_app_id = check_bot_app_id(bot_app_id)
    domain = check_domain(domain)
    developer_url = check_developer_url(developer_url or f"https://{domain}")
    manifest = render(
        {
            "BOT_APP_ID": bot_app_id,
            "APP_DOMAIN": domain,
            "APP_VERSION": app_version,
            "DEVELOPER_NAME": developer_name,
            "DEVELOPER_URL": developer_url,
        }
    )
    icons = {name: (HERE / name).read_bytes() for name in ICON_SIZES}
    validate(manifest, icons)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = {"manifest.json": (json.dumps(manifest, indent=2) + "\n").encode(), **icons}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            # A fixed timestamp: the same inputs give the same bytes.
            archive.writestr(
                zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m teams.package",
        description="Build the Teams app package (the zip a Teams admin uploads).",
    )
    parser.add_argument("--bot-app-id", required=True, help="BOT_APP_ID (azd output): the bot's client id")
    parser.add_argument("--domain", required=True, help="the Function App host name, without https://")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"zip to write (default {DEFAULT_OUT})")
    parser.add_argument(
        "--app-version", default="1.0.0", help="manifest version; raise it for each re-upload"
    )
    parser.add_argument("--developer-name", default=DEFAULT_DEVELOPER_NAME)
    parser.add_argument(
        "--developer-url", help="https URL for website/privacy/terms (default https://<domain>)"
    )
    args = parser.parse_args(argv)
    try:
        out = build(
            args.bot_app_id,
            args.domain,
            args.out,
            app_version=args.app_version,
            developer_name=args.developer_name,
            developer_url=args.developer_url,
        )
    except PackageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
