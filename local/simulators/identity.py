"""The App Service managed-identity token endpoint (``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``).

azure-identity's ``ManagedIdentityCredential`` reads those two variables on App Service and Azure
Functions and asks this endpoint for tokens. Pointing them at the simulator lets the app use the exact
credential code it uses in Azure, against the local Graph simulator (which accepts any bearer token).
"""

from __future__ import annotations

import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN_PATH = "/msi/token"  # noqa: S105 - a URL path, not a password
# The value the simulator expects in X-IDENTITY-HEADER; set IDENTITY_HEADER to it (it is no secret here).
IDENTITY_HEADER = "local-simulator-identity-header"


class ManagedIdentity:
    def __init__(self) -> None:
        self.issued: list[dict[str, str]] = []

    async def token(self, request: Request) -> Response:
        if request.headers.get("x-identity-header") != IDENTITY_HEADER:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "bad X-IDENTITY-HEADER"}, 400
            )
        resource = request.query_params.get("resource", "")
        if not resource or request.query_params.get("api-version") != "2019-08-01":
            return JSONResponse({"error": "invalid_request", "error_description": "resource and "
                                 "api-version=2019-08-01 are required"}, 400)  # fmt: skip
        client_id = request.query_params.get("client_id", "")
        self.issued.append({"resource": resource, "client_id": client_id})
        return JSONResponse({
            "access_token": f"sim-{uuid.uuid4().hex}",
            "expires_on": str(int(time.time()) + 3600),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        })  # fmt: skip

    def routes(self) -> list[Route]:
        return [Route(TOKEN_PATH, self.token, methods=["GET"])]
