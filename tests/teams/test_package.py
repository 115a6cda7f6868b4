"""The Teams app package (teams/package.py): what the zip holds, what its manifest says, what it refuses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from teams import make_icons
from teams.package import HERE, PackageError, build, main, png_size, render, validate

BOT_ID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
DOMAIN = "func-pim-abc123.azurewebsites.net"


def _manifest(zip_path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(zip_path) as archive:
        data: dict[str, Any] = json.loads(archive.read("manifest.json"))
    return data


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return build(BOT_ID.upper(), DOMAIN, tmp_path / "dist" / "teams-app.zip")


def _icons() -> dict[str, bytes]:
    return {name: (HERE / name).read_bytes() for name in ("color.png", "outline.png")}


def test_zip_holds_exactly_the_manifest_and_icons_at_its_root(package: Path) -> None:
    with zipfile.ZipFile(package) as archive:
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]
        assert archive.read("color.png") == (HERE / "color.png").read_bytes()
        assert archive.read("outline.png") == (HERE / "outline.png").read_bytes()


def test_manifest_ids_and_domain_are_substituted(package: Path) -> None:
    manifest = _manifest(package)
    assert "${" not in json.dumps(manifest)
    assert manifest["manifestVersion"] == "1.17"
    assert manifest["$schema"].endswith("/teams/v1.17/MicrosoftTeams.schema.json")
    assert manifest["id"] == BOT_ID  # normalised to lower case
    assert manifest["validDomains"] == [DOMAIN]
    assert manifest["developer"]["websiteUrl"] == f"https://{DOMAIN}"
    assert manifest["icons"] == {"color": "color.png", "outline": "outline.png"}


def test_manifest_has_one_interactive_bot_for_channels_and_personal_chat(package: Path) -> None:
    (bot,) = _manifest(package)["bots"]
    assert bot["botId"] == BOT_ID
    assert sorted(bot["scopes"]) == ["personal", "team"]
    assert bot["isNotificationOnly"] is False
    assert bot["supportsFiles"] is False


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    first = build(BOT_ID, DOMAIN, tmp_path / "a.zip").read_bytes()
    second = build(BOT_ID, DOMAIN, tmp_path / "b.zip").read_bytes()
    assert first == second
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:  # no build time inside the zip
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_options_reach_the_manifest(tmp_path: Path) -> None:
    out = build(
        BOT_ID,
        DOMAIN,
        tmp_path / "p.zip",
        app_version="1.2.3",
        developer_name='Contoso "IAM"',
        developer_url="https://contoso.example/pim",
    )
    manifest = _manifest(out)
    assert manifest["version"] == "1.2.3"
    assert manifest["developer"]["name"] == 'Contoso "IAM"'  # JSON-escaped, not broken
    assert manifest["developer"]["privacyUrl"] == "https://contoso.example/pim"


def test_icon_sizes_read_from_the_png_headers() -> None:
    icons = _icons()
    assert png_size(icons["color.png"])[:2] == (192, 192)
    width, height, colour_type = png_size(icons["outline.png"])
    assert (width, height) == (32, 32)
    assert colour_type == 6  # RGBA: white on transparent


def test_committed_icons_are_what_the_generator_draws() -> None:
    assert (HERE / "color.png").read_bytes() == make_icons.color_icon()
    assert (HERE / "outline.png").read_bytes() == make_icons.outline_icon()


def test_outline_icon_is_white_on_transparent() -> None:
    data = make_icons.outline_icon()
    # One IDAT chunk right after IHDR (8 signature + 25 IHDR bytes); a row is a filter byte + 32 RGBA pixels.
    length = int.from_bytes(data[33:37], "big")
    raw = zlib.decompress(data[41 : 41 + length])
    pixels = [raw[r * 129 + 1 + c * 4 : r * 129 + 5 + c * 4] for r in range(32) for c in range(32)]
    assert all(p[:3] == b"\xff\xff\xff" for p in pixels)
    alphas = {p[3] for p in pixels}
    assert 0 in alphas and 255 in alphas


@pytest.mark.parametrize(
    "bot_id",
    ["not-a-guid", "", "3f2504e0-4f89-41d3-9a0c-0305e82c330", "{3f2504e0-4f89-41d3-9a0c-0305e82c3301}"],
)
def test_refuses_a_bot_id_that_is_not_a_guid(tmp_path: Path, bot_id: str) -> None:
    with pytest.raises(PackageError, match="GUID"):
        build(bot_id, DOMAIN, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        (f"https://{DOMAIN}", "scheme"),
        (f"{DOMAIN}/api/messages", "path"),
        (f"{DOMAIN}:443", "port"),
        ("localhost", "not a valid host name"),
        ("bad_host.example.com", "not a valid host name"),
        ("", "not a valid host name"),
    ],
)
def test_refuses_a_domain_that_is_not_a_plain_host_name(tmp_path: Path, domain: str, reason: str) -> None:
    with pytest.raises(PackageError, match=reason):
        build(BOT_ID, domain, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_refuses_a_developer_url_that_is_not_https(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="https"):
        build(BOT_ID, DOMAIN, tmp_path / "x.zip", developer_url="http://contoso.example")


def test_render_refuses_an_unfilled_placeholder() -> None:
    with pytest.raises(PackageError, match="APP_DOMAIN"):
        render({"BOT_APP_ID": BOT_ID}, template='{"id": "${BOT_APP_ID}", "d": ["${APP_DOMAIN}"]}')


def _valid_manifest() -> dict[str, Any]:
    return render(
        {
            "BOT_APP_ID": BOT_ID,
            "APP_DOMAIN": DOMAIN,
            "APP_VERSION": "1.0.0",
            "DEVELOPER_NAME": "IAM",
            "DEVELOPER_URL": "https://contoso.example",
        }
    )


def test_validate_accepts_the_filled_template() -> None:
    validate(_valid_manifest(), _icons())


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m.pop("accentColor"), "missing key 'accentColor'"),
        (lambda m: m["developer"].pop("privacyUrl"), "missing key developer.privacyUrl"),
        (lambda m: m.update(id="teams-app"), "is not a GUID"),
        (lambda m: m["bots"][0].update(scopes=["team"]), "scopes must be team and personal"),
        (lambda m: m["bots"][0].update(isNotificationOnly=True), "notification-only"),
        (lambda m: m.update(validDomains=[]), "validDomains is empty"),
        (lambda m: m.update(validDomains=["https://x.example"]), "not a plain host name"),
        (lambda m: m["name"].update(short="x" * 31), "name.short is 31 characters"),
        (lambda m: m.update(version="${APP_VERSION}"), "placeholder is left"),
    ],
)
def test_validate_names_what_teams_would_refuse(mutate: Any, reason: str) -> None:
    manifest = _valid_manifest()
    mutate(manifest)
    with pytest.raises(PackageError, match=re.escape(reason)):
        validate(manifest, _icons())


def test_validate_refuses_icons_of_the_wrong_size() -> None:
    swapped = {"color.png": _icons()["outline.png"], "outline.png": _icons()["color.png"]}
    with pytest.raises(PackageError) as error:
        validate(_valid_manifest(), swapped)
    assert "color.png is 32x32, Teams requires 192x192" in str(error.value)
    assert "outline.png is 192x192, Teams requires 32x32" in str(error.value)


def test_validate_refuses_an_icon_that_is_not_a_png() -> None:
    with pytest.raises(PackageError, match=r"outline\.png: not a PNG"):
        validate(_valid_manifest(), {**_icons(), "outline.png": b"GIF89a" + bytes(40)})


def test_cli_writes_the_zip_and_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.zip"
    assert main(["--bot-app-id", BOT_ID, "--domain", DOMAIN, "--out", str(out)]) == 0
    assert _manifest(out)["id"] == BOT_ID
    assert (
        main(["--bot-app-id", BOT_ID, "--domain", f"https://{DOMAIN}", "--out", str(tmp_path / "bad.zip")])
        == 2
    )
    assert "without a scheme" in capsys.readouterr().err
    assert not (tmp_path / "bad.zip").exists()


def test_runs_as_a_module_from_the_repository_root(tmp_path: Path, repo_root: Path) -> None:
    out = tmp_path / "module.zip"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "teams.package",
            "--bot-app-id",
            BOT_ID,
            "--domain",
            DOMAIN,
            "--out",
            str(out),
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert zipfile.ZipFile(out).namelist() == ["manifest.json", "color.png", "outline.png"]
