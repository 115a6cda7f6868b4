"""The real adapters, built once per process from the checked configuration (the composition root's
half that functions reach at run time: clients are created once and reused)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from azure.data.tables import TableServiceClient
from azure.identity import ManagedIdentityCredential

from shared import telemetry
from shared.approvals import ApprovalBook
from shared.audit import AuditEntry, AuditLedger, security_chain
from shared.bot_auth import BotTokenValidator
from shared.breaker import CircuitBreaker
from shared.configuration import load_configuration
from shared.directory import EntraDirectory, graph_client
from shared.exchange import ExchangeRoleGroups
from shared.grants import GrantLedger
from shared.itsm import TicketSystem
from shared.itsm import ticket_system as build_ticket_system
from shared.pim import Pim
from shared.request_index import Deliveries, RequestIndex
from shared.roster import OnCallRoster, on_call_roster
from shared.tables import table_service
from shared.teams import BotConnector


@functools.cache
def tables() -> TableServiceClient:
    settings = load_configuration().settings
    return table_service(settings.table_storage, settings.azure_client_id)


@functools.cache
def audit_ledger() -> AuditLedger:
    policy = load_configuration().policy
    return AuditLedger(
        tables(),
        policy_version=policy.version_hash,
        policy_file_hash=policy.file_hash,
        observer=telemetry.observe,
    )


@functools.cache
def grant_ledger() -> GrantLedger:
    return GrantLedger(tables())


@functools.cache
def request_index() -> RequestIndex:
    return RequestIndex(tables())


@functools.cache
def deliveries() -> Deliveries:
    return Deliveries(tables())


@functools.cache
def directory() -> EntraDirectory:
    # The app's managed identity, in Azure and locally alike (locally IDENTITY_ENDPOINT points at the
    # simulators' token endpoint): no secrets, no second credential code path.
    settings = load_configuration().settings
    credential = ManagedIdentityCredential(client_id=settings.azure_client_id)
    return EntraDirectory(graph_client(settings.graph_base_url, credential))


@functools.cache
def exchange() -> ExchangeRoleGroups:
    # The same managed identity as Graph: it holds Exchange.ManageAsApp and an Exchange role that may read
    # role groups (docs/architecture.md, "The Exchange role-group probe").
    settings = load_configuration().settings
    credential = ManagedIdentityCredential(client_id=settings.azure_client_id)
    return ExchangeRoleGroups(settings.exchange_admin_base_url, settings.tenant_id, credential)


@functools.cache
def roster() -> OnCallRoster:
    configuration = load_configuration()
    return on_call_roster(configuration.settings, configuration.policy, directory())


@functools.cache
def ticket_system(system: str) -> TicketSystem:
    configuration = load_configuration()
    return build_ticket_system(system, configuration.settings, configuration.policy)


@functools.cache
def approval_book() -> ApprovalBook:
    return ApprovalBook(tables())


@functools.cache
def bot_token_validator() -> BotTokenValidator:
    # One per process: it caches the Bot Framework's OpenID metadata and signing keys.
    settings = load_configuration().settings
    return BotTokenValidator(settings.bot_openid_metadata_url, settings.bot_app_id)


@functools.cache
def bot_connector() -> BotConnector:
    # The bot's own identity (its app id is a user-assigned managed identity's client id), not the one
    # that can assign roles: a leaked bot token can post cards, never grant access (design.md §7).
    settings = load_configuration().settings
    credential = ManagedIdentityCredential(client_id=settings.bot_app_id)
    return BotConnector(
        settings.bot_connector_service_url, credential, settings.bot_app_id, settings.tenant_id
    )


@functools.cache
def breaker() -> CircuitBreaker:
    return CircuitBreaker(tables(), load_configuration().policy.circuit_breaker)


@functools.cache
def pim() -> Pim:
    """PIM and unified RBAC behind the shared circuit breaker; an opening is announced to IAM once."""
    conversation_id = load_configuration().policy.escalation.iam_conversation_id
    notice = outage_notice(bot_connector(), audit_ledger(), conversation_id)
    return Pim(directory(), breaker(), on_open=notice)


def outage_notice(
    connector: BotConnector, ledger: AuditLedger, conversation_id: str
) -> Callable[[str], Awaitable[None]]:
    """What happens once per outage when a circuit breaker opens: a row on the day's security chain (an event
    of no single request) and one text to IAM on call. The row is written first, and the text is sent even
    if the row failed (that failure is raised afterwards, for the caller's log)."""

    async def announce(detail: str) -> None:
        now = datetime.now(UTC)
        entry = AuditEntry(kind="breaker.opened", outcome="recorded", time=now, actor_id="system",
                           detail={"notice": detail}, workflow_version="breaker/1")  # fmt: skip
        try:
            await ledger.append_async(security_chain(now), entry)
        finally:
            await connector.post_text(conversation_id, detail)

    return announce
