"""The Table Storage client for the app's own tables (audit ledger, grant ledger), built once per process."""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.identity import DefaultAzureCredential

from shared.settings import TableStorageTarget


def table_service(
    target: TableStorageTarget, managed_identity_client_id: str | None = None
) -> TableServiceClient:
    """Azurite or a connection string locally; the app's managed identity in Azure (no keys)."""
    if target.connection_string is not None:
        return TableServiceClient.from_connection_string(target.connection_string)
    assert target.endpoint is not None
    credential = DefaultAzureCredential(managed_identity_client_id=managed_identity_client_id)
    return TableServiceClient(endpoint=target.endpoint, credential=credential)


def ensure_table(service: TableServiceClient, name: str) -> TableClient:
    with contextlib.suppress(ResourceExistsError):
        service.create_table(name)
    return service.get_table_client(name)
