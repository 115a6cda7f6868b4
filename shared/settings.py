"""One typed, frozen settings object, read from the environment once at start-up.

Every external base URL is a setting, so the same code runs against Azure and a real tenant or against the
local simulators. A missing required value fails fast, naming the variable; all missing variables are named
in one error so a deployer fixes them in one pass. No value that could be a secret (the storage connection
string, the ITSM webhook secrets, the ITSM and PagerDuty API passwords and tokens) ever appears in an error
message or a repr.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

__all__ = [
    "APP_ROOT",
    "AZURITE_CONNECTION_STRING",
    "DEFAULT_EXCHANGE_ADMIN_BASE_URL",
    "DEFAULT_POLICY_PATH",
    "DEFAULT_SWEEP_SCHEDULE",
    "SETTINGS_VARIABLES",
    "ApiCredentials",
    "Settings",
    "SettingsError",
    "TableStorageTarget",
    "WebhookSecrets",
    "get_settings",
]

# The app root: the directory that holds function_app.py and the `shared` package (the repo root).
APP_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICY_PATH = APP_ROOT / "policy" / "policy.toml"

ENTRA_TENANT_ID = "ENTRA_TENANT_ID"
GRAPH_BASE_URL = "GRAPH_BASE_URL"
BOT_APP_ID = "BOT_APP_ID"
BOT_OPENID_METADATA_URL = "BOT_OPENID_METADATA_URL"
BOT_CONNECTOR_SERVICE_URL = "BOT_CONNECTOR_SERVICE_URL"
SERVICENOW_BASE_URL = "SERVICENOW_BASE_URL"
JIRA_BASE_URL = "JIRA_BASE_URL"
IVANTI_BASE_URL = "IVANTI_BASE_URL"
XURRENT_BASE_URL = "XURRENT_BASE_URL"
PAGERDUTY_BASE_URL = "PAGERDUTY_BASE_URL"
# Exchange Online's admin API (the workload-side probe, shared.exchange); optional: Exchange Online's own
# address unless a national cloud or the local simulators say otherwise.
EXCHANGE_ADMIN_BASE_URL = "EXCHANGE_ADMIN_BASE_URL"
DEFAULT_EXCHANGE_ADMIN_BASE_URL = "https://outlook.office365.com"
STORAGE_CONNECTION_STRING = "AzureWebJobsStorage"
STORAGE_TABLE_SERVICE_URI = "AzureWebJobsStorage__tableServiceUri"
AZURE_CLIENT_ID = "AZURE_CLIENT_ID"
POLICY_PATH = "POLICY_PATH"
# The sweep's timer schedule (NCRONTAB, six fields, seconds first, or a TimeSpan). The Functions host reads
# the app setting itself (schedule="%SWEEP_SCHEDULE%"), so it must be set wherever the app runs; this only
# checks its form at start-up, where the host's own error would be obscure.
SWEEP_SCHEDULE = "SWEEP_SCHEDULE"
DEFAULT_SWEEP_SCHEDULE = "0 */5 * * * *"
# Shared secrets that sign ITSM webhooks (shared.webhooks); in Azure they are Key Vault references.
# *_PREVIOUS holds the secret being rotated out, so that both are accepted during a rotation.
SERVICENOW_WEBHOOK_SECRET = "SERVICENOW_WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a secret
SERVICENOW_WEBHOOK_SECRET_PREVIOUS = "SERVICENOW_WEBHOOK_SECRET_PREVIOUS"  # noqa: S105
JIRA_WEBHOOK_SECRET = "JIRA_WEBHOOK_SECRET"  # noqa: S105
JIRA_WEBHOOK_SECRET_PREVIOUS = "JIRA_WEBHOOK_SECRET_PREVIOUS"  # noqa: S105
IVANTI_WEBHOOK_SECRET = "IVANTI_WEBHOOK_SECRET"  # noqa: S105
IVANTI_WEBHOOK_SECRET_PREVIOUS = "IVANTI_WEBHOOK_SECRET_PREVIOUS"  # noqa: S105
# Credentials the app uses to call the ITSMs and PagerDuty (shared.itsm, shared.roster); in Azure the
# password and tokens are Key Vault references. ServiceNow and Jira take Basic auth (a ServiceNow
# integration user + password; an Atlassian account email + API token); PagerDuty a REST API key.
SERVICENOW_API_USER = "SERVICENOW_API_USER"
SERVICENOW_API_PASSWORD = "SERVICENOW_API_PASSWORD"  # noqa: S105 - a variable name, not a secret
JIRA_API_EMAIL = "JIRA_API_EMAIL"
JIRA_API_TOKEN = "JIRA_API_TOKEN"  # noqa: S105
PAGERDUTY_API_TOKEN = "PAGERDUTY_API_TOKEN"  # noqa: S105

MIN_WEBHOOK_SECRET_LENGTH = 32

SETTINGS_VARIABLES: Mapping[str, bool] = MappingProxyType(
    {
        ENTRA_TENANT_ID: True,
        GRAPH_BASE_URL: True,
        BOT_APP_ID: True,
        BOT_OPENID_METADATA_URL: True,
        BOT_CONNECTOR_SERVICE_URL: True,
        SERVICENOW_BASE_URL: False,
        JIRA_BASE_URL: False,
        IVANTI_BASE_URL: False,
        XURRENT_BASE_URL: False,
        PAGERDUTY_BASE_URL: False,
        EXCHANGE_ADMIN_BASE_URL: False,
        # "One of" pair: exactly one of these two must be set (connection string locally, e.g. Azurite;
        # identity-based table endpoint in Azure). Neither is required on its own, so both are False here;
        # Settings.from_env enforces the pair.
        STORAGE_CONNECTION_STRING: False,
        STORAGE_TABLE_SERVICE_URI: False,
        AZURE_CLIENT_ID: False,
        POLICY_PATH: False,
        SWEEP_SCHEDULE: False,
        # Webhook secrets: optional here; Settings.check_for_policy requires the current one of every
        # ITSM the policy enables (Xurrent signs with a JWT, verified with a key, not a shared secret).
        SERVICENOW_WEBHOOK_SECRET: False,
        SERVICENOW_WEBHOOK_SECRET_PREVIOUS: False,
        JIRA_WEBHOOK_SECRET: False,
        JIRA_WEBHOOK_SECRET_PREVIOUS: False,
        IVANTI_WEBHOOK_SECRET: False,
        IVANTI_WEBHOOK_SECRET_PREVIOUS: False,
        # API credentials: optional here; Settings.check_for_policy requires those of every ITSM the
        # policy enables (servicenow, jira) and of the roster provider it uses (pagerduty, servicenow_rota).
        SERVICENOW_API_USER: False,
        SERVICENOW_API_PASSWORD: False,
        JIRA_API_EMAIL: False,
        JIRA_API_TOKEN: False,
        PAGERDUTY_API_TOKEN: False,
    }
)
"""Every environment variable the settings object reads -> whether it is required on its own."""

# The well-known Azurite development account (public, documented by Microsoft; not a secret).
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
_DEVELOPMENT_STORAGE = "usedevelopmentstorage=true"

_SERVICE_VARIABLES: Mapping[str, str] = MappingProxyType(
    {
        "servicenow": SERVICENOW_BASE_URL,
        "jira": JIRA_BASE_URL,
        "ivanti": IVANTI_BASE_URL,
        "xurrent": XURRENT_BASE_URL,
        "pagerduty": PAGERDUTY_BASE_URL,
    }
)
# Roster providers that read from an external service, and the service they read from.
_ROSTER_PROVIDER_SERVICES: Mapping[str, str | None] = MappingProxyType(
    {"entra_group": None, "pagerduty": "pagerduty", "servicenow_rota": "servicenow"}
)
_ITSM_SYSTEMS = ("servicenow", "jira", "ivanti", "xurrent")
# ITSM systems whose webhooks are signed with a shared secret -> (current, previous) variable names.
_WEBHOOK_SECRET_VARIABLES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "servicenow": (SERVICENOW_WEBHOOK_SECRET, SERVICENOW_WEBHOOK_SECRET_PREVIOUS),
        "jira": (JIRA_WEBHOOK_SECRET, JIRA_WEBHOOK_SECRET_PREVIOUS),
        "ivanti": (IVANTI_WEBHOOK_SECRET, IVANTI_WEBHOOK_SECRET_PREVIOUS),
    }
)
# Services the app calls with credentials of its own -> the variables that hold them (all needed).
_API_CREDENTIAL_VARIABLES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "servicenow": (SERVICENOW_API_USER, SERVICENOW_API_PASSWORD),
        "jira": (JIRA_API_EMAIL, JIRA_API_TOKEN),
        "pagerduty": (PAGERDUTY_API_TOKEN,),
    }
)
# Why each service is called with those credentials (for check_for_policy's messages).
_API_PURPOSE: Mapping[str, str] = MappingProxyType(
    {
        "servicenow": "its Table API and on-call rota API are called with them",
        "jira": "its REST API is called with them",
        "pagerduty": "its REST API is called with it",
    }
)
# An App Service Key Vault reference that the platform could not resolve is passed to the app verbatim.
_KEY_VAULT_REFERENCE_PREFIX = "@microsoft.keyvault("

_GUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII
)
_CONNECTION_STRING_PAIR_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*=.+", re.ASCII)
_CRON_FIELD_RE = re.compile(r"[0-9A-Za-z*/,?-]+", re.ASCII)
_TIMESPAN_RE = re.compile(r"(?:\d+\.)?\d{1,2}:\d{2}:\d{2}", re.ASCII)
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class SettingsError(ValueError):
    """The environment does not hold a usable configuration; the message names the variable(s)."""


@dataclass(frozen=True, repr=False)
class TableStorageTarget:
    """Where the audit ledger's tables live: a connection string or an identity-based table endpoint.

    Exactly one of the two is set. The connection string may hold an account key, so ``repr``/``str``
    never show it.
    """

    connection_string: str | None
    endpoint: str | None

    def __post_init__(self) -> None:
        if (self.connection_string is None) == (self.endpoint is None):
            raise SettingsError(
                "TableStorageTarget needs exactly one of connection_string and endpoint"
                f" ({STORAGE_CONNECTION_STRING} or {STORAGE_TABLE_SERVICE_URI})"
            )

    @property
    def uses_identity(self) -> bool:
        """True when the tables are reached with a token credential (managed identity) at ``endpoint``."""
        return self.endpoint is not None

    def __repr__(self) -> str:
        shown = None if self.connection_string is None else "<redacted>"
        return f"TableStorageTarget(connection_string={shown!r}, endpoint={self.endpoint!r})"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class WebhookSecrets:
    """The shared secrets that sign each ITSM's webhooks: the current one and, during a rotation, the
    previous one. ``repr``/``str`` show only which are configured, never a value."""

    servicenow: str | None = None
    servicenow_previous: str | None = None
    jira: str | None = None
    jira_previous: str | None = None
    ivanti: str | None = None
    ivanti_previous: str | None = None

    def for_system(self, system: str) -> tuple[str, ...]:
        """The secrets accepted for ``system``: current first, then previous; empty when none is set.

        A previous secret equal to the current one is listed once. Raises :class:`SettingsError` for
        Xurrent (signed with a JWT, not a shared secret) and for unknown systems.
        """
        if system not in _WEBHOOK_SECRET_VARIABLES:
            if system == "xurrent":
                raise SettingsError(
                    "xurrent webhooks are signed with a JWT verified with a key, not with a shared secret "
                    "(not supported yet)"
                )
            known = ", ".join(_WEBHOOK_SECRET_VARIABLES)
            raise SettingsError(f"no webhook secrets for {system!r} (systems with secrets: {known})")
        current: str | None = getattr(self, system)
        previous: str | None = getattr(self, f"{system}_previous")
        secrets: list[str] = []
        for secret in (current, previous):
            if secret is not None and secret not in secrets:
                secrets.append(secret)
        return tuple(secrets)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={None if getattr(self, name) is None else '<redacted>'!r}"
            for name in (
                "servicenow",
                "servicenow_previous",
                "jira",
                "jira_previous",
                "ivanti",
                "ivanti_previous",
            )
        )
        return f"WebhookSecrets({shown})"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class ApiCredentials:
    """The credentials the app calls the ITSMs and PagerDuty with.

    ServiceNow: an integration user and its password (Basic auth, Table API and on-call rota API).
    Jira: an Atlassian account email and API token (Basic auth, REST v3). PagerDuty: a REST API key
    (``Authorization: Token token=<key>``). ``repr``/``str`` show the user names (identifiers, not
    secrets) and only whether a password or token is configured, never its value.
    """

    servicenow_user: str | None = None
    servicenow_password: str | None = None
    jira_email: str | None = None
    jira_token: str | None = None
    pagerduty_token: str | None = None

    def servicenow(self) -> tuple[str, str]:
        """(user, password) for ServiceNow; :class:`SettingsError` names the variables that are unset."""
        user, password = self._required("servicenow", self.servicenow_user, self.servicenow_password)
        return user, password

    def jira(self) -> tuple[str, str]:
        """(email, API token) for Jira; :class:`SettingsError` names the variables that are unset."""
        email, token = self._required("jira", self.jira_email, self.jira_token)
        return email, token

    def pagerduty(self) -> str:
        """The PagerDuty REST API key; :class:`SettingsError` names the variable when it is unset."""
        (token,) = self._required("pagerduty", self.pagerduty_token)
        return token

    def missing(self, service: str) -> tuple[str, ...]:
        """The variables of ``service``'s credentials that are not set (empty when all are)."""
        variables = _API_CREDENTIAL_VARIABLES[service]
        return tuple(
            variable
            for variable, value in zip(variables, self._values(service), strict=True)
            if value is None
        )

    def _values(self, service: str) -> tuple[str | None, ...]:
        if service == "servicenow":
            return (self.servicenow_user, self.servicenow_password)
        if service == "jira":
            return (self.jira_email, self.jira_token)
        return (self.pagerduty_token,)

    def _required(self, service: str, *values: str | None) -> tuple[str, ...]:
        missing = self.missing(service)
        if missing:
            raise SettingsError(f"{service} API credentials are not configured: set {' and '.join(missing)}")
        return tuple(value for value in values if value is not None)

    def __repr__(self) -> str:
        def secret(value: str | None) -> str:
            return repr(None if value is None else "<redacted>")

        return (
            f"ApiCredentials(servicenow_user={self.servicenow_user!r}, "
            f"servicenow_password={secret(self.servicenow_password)}, jira_email={self.jira_email!r}, "
            f"jira_token={secret(self.jira_token)}, pagerduty_token={secret(self.pagerduty_token)})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class Settings:
    """The app's configuration. Build it with :meth:`from_env` (or :func:`get_settings`)."""

    tenant_id: str
    graph_base_url: str
    bot_app_id: str
    bot_openid_metadata_url: str
    bot_connector_service_url: str
    table_storage: TableStorageTarget
    servicenow_base_url: str | None = None
    jira_base_url: str | None = None
    ivanti_base_url: str | None = None
    xurrent_base_url: str | None = None
    pagerduty_base_url: str | None = None
    exchange_admin_base_url: str = DEFAULT_EXCHANGE_ADMIN_BASE_URL
    azure_client_id: str | None = None
    policy_path: Path = field(default=DEFAULT_POLICY_PATH)
    sweep_schedule: str = DEFAULT_SWEEP_SCHEDULE
    itsm_webhook_secrets: WebhookSecrets = field(default_factory=WebhookSecrets)
    api_credentials: ApiCredentials = field(default_factory=ApiCredentials)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings from ``env`` (default: ``os.environ``).

        Empty or blank values count as unset. All problems are reported together in one
        :class:`SettingsError`, one per line: first the missing required variables, then malformed values.
        """
        source: Mapping[str, str] = os.environ if env is None else env
        reader = _Reader(source)

        tenant_id = reader.guid(ENTRA_TENANT_ID, required=True)
        graph_base_url = reader.url(GRAPH_BASE_URL, required=True)
        bot_app_id = reader.guid(BOT_APP_ID, required=True)
        bot_openid_metadata_url = reader.url(BOT_OPENID_METADATA_URL, required=True)
        bot_connector_service_url = reader.url(BOT_CONNECTOR_SERVICE_URL, required=True)
        servicenow_base_url = reader.url(SERVICENOW_BASE_URL)
        jira_base_url = reader.url(JIRA_BASE_URL)
        ivanti_base_url = reader.url(IVANTI_BASE_URL)
        xurrent_base_url = reader.url(XURRENT_BASE_URL)
        pagerduty_base_url = reader.url(PAGERDUTY_BASE_URL)
        exchange_admin_base_url = reader.url(EXCHANGE_ADMIN_BASE_URL) or DEFAULT_EXCHANGE_ADMIN_BASE_URL
        table_storage = reader.table_storage()
        azure_client_id = reader.guid(AZURE_CLIENT_ID)
        policy_path = reader.policy_path()
        sweep_schedule = reader.schedule(SWEEP_SCHEDULE) or DEFAULT_SWEEP_SCHEDULE
        itsm_webhook_secrets = WebhookSecrets(
            **{
                key: reader.secret(variable)
                for system, (current, previous) in _WEBHOOK_SECRET_VARIABLES.items()
                for key, variable in ((system, current), (f"{system}_previous", previous))
            }
        )
        api_credentials = ApiCredentials(
            servicenow_user=reader.basic_auth_user(SERVICENOW_API_USER),
            servicenow_password=reader.api_secret(SERVICENOW_API_PASSWORD),
            jira_email=reader.basic_auth_user(JIRA_API_EMAIL),
            jira_token=reader.api_secret(JIRA_API_TOKEN),
            pagerduty_token=reader.api_secret(PAGERDUTY_API_TOKEN),
        )
        reader.credential_pairs()

        reader.raise_if_problems()
        assert tenant_id is not None and graph_base_url is not None and bot_app_id is not None
        assert bot_openid_metadata_url is not None and bot_connector_service_url is not None
        assert table_storage is not None
        return cls(
            tenant_id=tenant_id,
            graph_base_url=graph_base_url,
            bot_app_id=bot_app_id,
            bot_openid_metadata_url=bot_openid_metadata_url,
            bot_connector_service_url=bot_connector_service_url,
            table_storage=table_storage,
            servicenow_base_url=servicenow_base_url,
            jira_base_url=jira_base_url,
            ivanti_base_url=ivanti_base_url,
            xurrent_base_url=xurrent_base_url,
            pagerduty_base_url=pagerduty_base_url,
            exchange_admin_base_url=exchange_admin_base_url,
            azure_client_id=azure_client_id,
            policy_path=policy_path,
            sweep_schedule=sweep_schedule,
            itsm_webhook_secrets=itsm_webhook_secrets,
            api_credentials=api_credentials,
        )

    def base_url_for(self, service: str) -> str:
        """The base URL of ``service`` (servicenow, jira, ivanti, xurrent, pagerduty), without trailing slash.

        Raises :class:`SettingsError` naming the variable to set when it is not configured.
        """
        variable = _SERVICE_VARIABLES.get(service)
        if variable is None:
            known = ", ".join(_SERVICE_VARIABLES)
            raise SettingsError(f"unknown service {service!r} (known: {known})")
        url: str | None = getattr(self, f"{service}_base_url")
        if url is None:
            raise SettingsError(f"{service} is used but not configured: set {variable} to its base URL")
        return url

    def webhook_secrets(self, system: str) -> tuple[str, ...]:
        """The shared secrets that may sign ``system``'s webhooks: current first, then previous (during a
        rotation); empty when none is configured. See :meth:`WebhookSecrets.for_system`."""
        return self.itsm_webhook_secrets.for_system(system)

    def check_for_policy(self, enabled_itsm: Iterable[str], roster_provider: str) -> None:
        """Fail fast when the policy needs a setting that is not configured.

        Every enabled ITSM needs its base URL (ticket notes and state changes go back to it) and, except
        Xurrent (JWT-signed), its current webhook secret (``<SYSTEM>_WEBHOOK_SECRET``); the ``pagerduty``
        roster provider needs PAGERDUTY_BASE_URL and ``servicenow_rota`` needs SERVICENOW_BASE_URL.
        ServiceNow (enabled or the rota provider) also needs SERVICENOW_API_USER + SERVICENOW_API_PASSWORD,
        Jira JIRA_API_EMAIL + JIRA_API_TOKEN, and the ``pagerduty`` provider PAGERDUTY_API_TOKEN. All
        missing variables are named in one :class:`SettingsError`.
        """
        needed: dict[str, list[str]] = {}
        enabled = tuple(enabled_itsm)
        for system in enabled:
            if system not in _ITSM_SYSTEMS:
                raise SettingsError(f"unknown ITSM system {system!r} (known: {', '.join(_ITSM_SYSTEMS)})")
            needed.setdefault(system, []).append(f"ITSM {system!r} is enabled in the policy")
        if roster_provider not in _ROSTER_PROVIDER_SERVICES:
            known = ", ".join(_ROSTER_PROVIDER_SERVICES)
            raise SettingsError(f"unknown roster provider {roster_provider!r} (known: {known})")
        roster_service = _ROSTER_PROVIDER_SERVICES[roster_provider]
        if roster_service is not None:
            needed.setdefault(roster_service, []).append(f"roster provider is {roster_provider!r}")
        missing = [
            f"{_SERVICE_VARIABLES[service]} (required because {' and '.join(reasons)})"
            for service, reasons in needed.items()
            if getattr(self, f"{service}_base_url") is None
        ]
        for system in dict.fromkeys(enabled):
            variables = _WEBHOOK_SECRET_VARIABLES.get(system)
            if variables is not None and getattr(self.itsm_webhook_secrets, system) is None:
                current, previous = variables
                also = (
                    f"; {previous} alone is not enough, it only keeps the old secret valid during a rotation"
                    if getattr(self.itsm_webhook_secrets, f"{system}_previous") is not None
                    else ""
                )
                missing.append(
                    f"{current} (required because ITSM {system!r} is enabled in the policy: its webhooks are "
                    f"signed with it{also})"
                )
        for service, reasons in needed.items():
            if service not in _API_CREDENTIAL_VARIABLES:
                continue  # ivanti, xurrent: no adapter calls them yet
            because = " and ".join(reasons)
            missing.extend(
                f"{variable} (required because {because}: {_API_PURPOSE[service]})"
                for variable in self.api_credentials.missing(service)
            )
        if missing:
            raise SettingsError("missing setting(s) required by the policy: " + "; ".join(missing))


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from ``os.environ`` on first use (for the composition root)."""
    return Settings.from_env()


class _Reader:
    """Reads variables from one mapping and collects every problem before failing."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._missing: list[str] = []
        self._problems: list[str] = []

    def _get(self, name: str, *, required: bool = False) -> str | None:
        value = self._env.get(name)
        if value is None or not value.strip():
            if required:
                self._missing.append(name)
            return None
        return value.strip()

    def guid(self, name: str, *, required: bool = False) -> str | None:
        value = self._get(name, required=required)
        if value is None:
            return None
        if not _GUID_RE.fullmatch(value):
            self._problems.append(
                f"{name}={value!r} is not a GUID (expected 8-4-4-4-12 hexadecimal digits, "
                "e.g. 00000000-0000-0000-0000-000000000000)"
            )
            return None
        return value.lower()

    def url(self, name: str, *, required: bool = False) -> str | None:
        value = self._get(name, required=required)
        if value is None:
            return None
        problem = _url_problem(value)
        if problem is not None:
            self._problems.append(f"{name} {problem}")
            return None
        return value.rstrip("/")

    def schedule(self, name: str) -> str | None:
        """A timer schedule: NCRONTAB with six fields (seconds first), or a TimeSpan such as 00:05:00."""
        value = self._get(name)
        if value is None:
            return None
        fields = value.split()
        if not (
            _TIMESPAN_RE.fullmatch(value) or (len(fields) == 6 and all(map(_CRON_FIELD_RE.fullmatch, fields)))
        ):
            self._problems.append(
                f"{name}={value!r} is not a timer schedule: expected NCRONTAB with six fields, seconds first "
                "(e.g. '0 */5 * * * *' for every 5 minutes), or a TimeSpan such as 00:05:00"
            )
            return None
        return value

    def table_storage(self) -> TableStorageTarget | None:
        connection_string = self._get(STORAGE_CONNECTION_STRING)
        endpoint = self._get(STORAGE_TABLE_SERVICE_URI)
        if connection_string is None and endpoint is None:
            self._missing.append(f"{STORAGE_CONNECTION_STRING} or {STORAGE_TABLE_SERVICE_URI}")
            return None
        if connection_string is not None and endpoint is not None:
            self._problems.append(
                f"{STORAGE_CONNECTION_STRING} and {STORAGE_TABLE_SERVICE_URI} are both set: set only one "
                "(a connection string locally, the identity-based table endpoint in Azure)"
            )
            return None
        if connection_string is not None:
            if connection_string.lower() == _DEVELOPMENT_STORAGE:
                return TableStorageTarget(connection_string=AZURITE_CONNECTION_STRING, endpoint=None)
            pairs = [pair for pair in connection_string.split(";") if pair.strip()]
            if not pairs or not all(_CONNECTION_STRING_PAIR_RE.fullmatch(pair.strip()) for pair in pairs):
                # Never echo the value: it may hold an account key.
                self._problems.append(
                    f"{STORAGE_CONNECTION_STRING} is not a storage connection string (expected "
                    "Key=Value pairs separated by ';', or UseDevelopmentStorage=true); the value is not shown"
                )
                return None
            return TableStorageTarget(connection_string=connection_string, endpoint=None)
        assert endpoint is not None
        problem = _url_problem(endpoint)
        if problem is not None:
            self._problems.append(f"{STORAGE_TABLE_SERVICE_URI} {problem}")
            return None
        return TableStorageTarget(connection_string=None, endpoint=endpoint.rstrip("/"))

    def secret(self, name: str) -> str | None:
        """A shared secret: at least MIN_WEBHOOK_SECRET_LENGTH characters; never echoed in a problem."""
        value = self.api_secret(name)
        if value is None:
            return None
        if len(value) < MIN_WEBHOOK_SECRET_LENGTH:
            self._problems.append(
                f"{name} is too short: a webhook secret needs at least {MIN_WEBHOOK_SECRET_LENGTH} "
                "characters (generate one with e.g. `openssl rand -hex 32`); the value is not shown"
            )
            return None
        return value

    def basic_auth_user(self, name: str) -> str | None:
        """A Basic-auth user name (ServiceNow user, Jira account email): no ':' (RFC 7617)."""
        value = self._get(name)
        if value is not None and ":" in value:
            self._problems.append(
                f"{name}={value!r} contains ':', which Basic authentication cannot carry in a user name"
            )
            return None
        return value

    def api_secret(self, name: str) -> str | None:
        """An API password or token: any length (each service has its own format); never echoed."""
        value = self._get(name)
        if value is None:
            return None
        if value.lower().startswith(_KEY_VAULT_REFERENCE_PREFIX):
            self._problems.append(
                f"{name} is an unresolved Key Vault reference: the Function App could not read the secret "
                "(check the reference's SecretUri and that the app's identity may read secrets in the vault)"
            )
            return None
        return value

    def credential_pairs(self) -> None:
        """A user without its password (or the reverse) is a half-done configuration: say which half."""
        for service, variables in _API_CREDENTIAL_VARIABLES.items():
            if len(variables) != 2:
                continue
            first, second = variables
            has_first = self._get(first) is not None
            has_second = self._get(second) is not None
            if has_first != has_second:
                present, absent = (first, second) if has_first else (second, first)
                self._problems.append(
                    f"{present} is set but {absent} is not: {service} Basic authentication needs both"
                )

    def policy_path(self) -> Path:
        value = self._get(POLICY_PATH)
        if value is None:
            return DEFAULT_POLICY_PATH
        path = Path(value)
        return path if path.is_absolute() else APP_ROOT / path

    def raise_if_problems(self) -> None:
        lines: list[str] = []
        if self._missing:
            lines.append("missing required setting(s): " + ", ".join(self._missing))
        lines.extend(self._problems)
        if lines:
            raise SettingsError("\n".join(lines))


def _url_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable base URL, or None. Never echoes embedded credentials."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return f"={value!r} is not an absolute http(s) URL (it cannot be parsed)"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials (user:password@); the value is not shown"
    if parts.scheme not in ("http", "https") or not host:
        return f"={value!r} is not an absolute http(s) URL (expected e.g. https://host/path)"
    if parts.query or parts.fragment:
        return f"={value!r} is a base URL and must not have a query or fragment"
    if parts.scheme == "http" and host.lower() not in _LOOPBACK_HOSTS:
        return (
            f"={value!r} uses plain http to a non-loopback host {host!r}: use https "
            "(http is only allowed for 127.0.0.1, localhost and ::1, i.e. local simulators)"
        )
    return None
