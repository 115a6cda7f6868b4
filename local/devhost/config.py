"""Host configuration: the app root, host.json, local settings (Values and Keys), ports and the hub."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import logs

# Environment overrides of host.json use the Functions host's own convention.
HUB_OVERRIDE = "AzureFunctionsJobHost__extensions__durableTask__hubName"
# The SDK's client calls rpcBaseUrl (loopback only); the management URLs use the key-protected routes.
RPC_PREFIX = "/durabletask/"
WEBHOOK_PREFIX = "/runtime/webhooks/durabletask/"


class ConfigError(RuntimeError):
    pass


@dataclass
class HostKeys:
    """Function keys as the Functions host knows them: master, host keys, per-function keys, system keys.

    Read from the ``Keys`` object of the local settings file. Missing keys are generated and written
    back to that file (the real host generates its keys too), never logged.
    """

    master: str
    host: dict[str, str]
    functions: dict[str, dict[str, str]] = field(default_factory=dict)
    system: dict[str, str] = field(default_factory=dict)

    @property
    def durable_system_key(self) -> str:
        return self.system["durabletask_extension"]

    def admin_keys(self) -> list[str]:
        return [self.master]

    def function_keys(self, function_name: str) -> list[str]:
        return [self.master, *self.host.values(), *self.functions.get(function_name, {}).values()]

    def system_keys(self) -> list[str]:
        return [self.master, *self.system.values()]

    def to_json(self) -> dict[str, Any]:
        return {"master": self.master, "host": self.host, "functions": self.functions, "system": self.system}


@dataclass
class HostConfig:
    root: Path
    host: str
    port: int
    hub: str
    route_prefix: str
    keys: HostKeys
    storage_connection: str
    app_target: str

    @property
    def base_url(self) -> str:
        # Listening on every interface is not an address a client can call back.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    @property
    def rpc_origin(self) -> str:
        # The SDK's client calls back over loopback whatever interface the host listens on.
        return f"http://127.0.0.1:{self.port}"


def durable_client_binding(config: HostConfig) -> dict[str, Any]:
    """The Durable client binding JSON, shaped like the one the Functions host passes to functions."""
    base = config.base_url
    hub = config.hub
    query = f"taskHub={quote(hub)}&connection=Storage&code={quote(config.keys.durable_system_key)}"
    create = f"{base}{WEBHOOK_PREFIX}orchestrators/{{functionName}}[/{{instanceId}}]"
    instance = f"{base}{WEBHOOK_PREFIX}instances/INSTANCEID"
    return {
        "taskHubName": hub,
        "creationUrls": {
            "createNewInstancePostUri": f"{create}?{query}",
            "createAndWaitOnNewInstancePostUri": f"{create}?timeout={{timeoutInSeconds}}"
            f"&pollingInterval={{intervalInSeconds}}&{query}",
        },
        "managementUrls": {
            "id": "INSTANCEID",
            "statusQueryGetUri": f"{instance}?{query}",
            "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
            "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
            "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
            "purgeHistoryDeleteUri": f"{instance}?{query}",
            "restartPostUri": f"{instance}/restart?{query}",
            "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
            "resumePostUri": f"{instance}/resume?reason={{text}}&{query}",
        },
        "baseUrl": f"{base}{WEBHOOK_PREFIX}",
        "requiredQueryStringParameters": query,
        "rpcBaseUrl": f"{config.rpc_origin}{RPC_PREFIX}",
        "httpBaseUrl": "",
        "maxGrpcMessageSizeInBytes": 0,
        "grpcHttpClientTimeout": "00:01:40",
    }


def load_settings_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(
            f"{path} does not exist: copy local.settings.sample.json to local.settings.json "
            "(make run does this for you)"
        )
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data.get("Values", {}), dict):
        raise ConfigError(f"{path}: 'Values' must be an object of strings")
    return dict(data)


def apply_values(settings: dict[str, Any]) -> None:
    """Put local settings Values into the environment, as func start does; real env vars win."""
    for name, value in settings.get("Values", {}).items():
        os.environ.setdefault(name, str(value))


def ensure_keys(settings: dict[str, Any], path: Path) -> HostKeys:
    raw = settings.get("Keys") or {}
    changed = False

    def key(value: Any) -> str:
        nonlocal changed
        if isinstance(value, str) and len(value) >= 16:
            return value
        changed = True
        return secrets.token_urlsafe(32)

    keys = HostKeys(
        master=key(raw.get("master")),
        host={name: key(v) for name, v in (raw.get("host") or {"default": None}).items()},
        functions={f: {n: key(v) for n, v in ks.items()} for f, ks in (raw.get("functions") or {}).items()},
        system={n: key(v) for n, v in (raw.get("system") or {"durabletask_extension": None}).items()},
    )
    if "durabletask_extension" not in keys.system:
        keys.system["durabletask_extension"] = key(None)
    if changed:
        settings["Keys"] = keys.to_json()
        path.write_text(json.dumps(settings, indent=2) + "\n")
        path.chmod(0o600)  # it now holds keys
        logs.event("host.keys_generated", file=str(path))
    return keys


def read_host_json(root: Path) -> dict[str, Any]:
    path = root / "host.json"
    if not path.exists():
        raise ConfigError(f"{path} not found: the app root must hold host.json")
    try:
        return dict(json.loads(path.read_text()))
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc


def storage_connection() -> str:
    value = os.environ.get("AzureWebJobsStorage", "")  # noqa: SIM112 - the Functions host's own name
    if not value:
        raise ConfigError(
            "AzureWebJobsStorage is not set (local settings Values): the devhost keeps "
            "orchestration state in Table Storage (Azurite)"
        )
    if value.strip().lower().rstrip(";") == "usedevelopmentstorage=true":
        from local.azurite import connection_string

        return connection_string(10002)
    return value


def build_config(root: Path, settings_path: Path, host: str, port: int, app_target: str) -> HostConfig:
    settings = load_settings_file(settings_path)
    apply_values(settings)
    keys = ensure_keys(settings, settings_path)
    host_json = read_host_json(root)
    extensions = host_json.get("extensions", {})
    hub = os.environ.get(HUB_OVERRIDE) or extensions.get("durableTask", {}).get("hubName") or "DevHostHub"
    if not hub.isalnum() or not hub[0].isalpha() or not 3 <= len(hub) <= 45:
        raise ConfigError(f"task hub name {hub!r} must be 3-45 letters/digits starting with a letter")
    prefix = extensions.get("http", {}).get("routePrefix", "api").strip("/")
    return HostConfig(
        root=root,
        host=host,
        port=port,
        hub=hub,
        route_prefix=prefix,
        keys=keys,
        storage_connection=storage_connection(),
        app_target=app_target,
    )
