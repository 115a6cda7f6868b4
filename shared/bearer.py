"""An HTTP client for one Entra ID-protected API that the app calls with its own identity (the Exchange admin
API, the Bot Connector): what the adapters share, so that each keeps only its API's requests and errors."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Final, Self

import httpx
from azure.core.credentials import TokenCredential

_CONNECT_TIMEOUT_S: Final = 5.0


class BearerClient:
    """JSON over ``httpx`` to ``base_url`` (checked to be an http(s) URL; ``what`` names the API in the
    error), bounded timeouts, no redirects, and bearer tokens for ``scope`` from ``credential``.
    ``transport``: for tests."""

    def __init__(
        self,
        what: str,
        base_url: str,
        credential: TokenCredential,
        scope: str,
        *,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ValueError(f"the {what} must be an http(s) URL, got {base_url!r}")
        self._credential = credential
        self._scope = scope
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Accept": "application/json"},
            timeout=httpx.Timeout(timeout_s, connect=min(_CONNECT_TIMEOUT_S, timeout_s)),
            transport=transport,
            follow_redirects=False,  # a redirect would carry the bearer token elsewhere
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _access_token(self) -> str:
        """A token for the scope; raises azure-identity's AzureError (its text never holds a token), which
        each adapter turns into its own error."""
        # get_token is synchronous (it may do HTTP on a cache miss): keep it off the event loop.
        access = await asyncio.to_thread(self._credential.get_token, self._scope)
        return access.token
