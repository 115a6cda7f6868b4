"""The real adapters, built once per process from the checked configuration (the composition root's
half that functions reach at run time: clients are created once and reused)."""

from __future__ import annotations

import functools

from azure.data.tables import TableServiceClient

from shared.audit import AuditLedger
from shared.configuration import load_configuration
from shared.grants import GrantLedger
from shared.tables import table_service


@functools.cache
def tables() -> TableServiceClient:
    settings = load_configuration().settings
    return table_service(settings.table_storage, settings.azure_client_id)


@functools.cache
def audit_ledger() -> AuditLedger:
    policy = load_configuration().policy
    return AuditLedger(tables(), policy_version=policy.version_hash, policy_file_hash=policy.file_hash)


@functools.cache
def grant_ledger() -> GrantLedger:
    return GrantLedger(tables())
