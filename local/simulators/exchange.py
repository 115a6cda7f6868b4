"""Exchange Online's admin API (the REST endpoint behind the ExchangeOnlineManagement module), the part a
workload-side probe uses: ``Get-RoleGroupMember`` through ``InvokeCommand``.

    POST /adminapi/beta/{tenantId}/InvokeCommand
    {"CmdletInput": {"CmdletName": "Get-RoleGroupMember",
                     "Parameters": {"Identity": "Organization Management"}}}

answers ``{"@odata.context": ".../$metadata#Collection(Exchange.GenericHashTable)", "value": [{
"ExternalDirectoryObjectId": "<Entra object id>", "Name", "DisplayName", "PrimarySmtpAddress", ...}]}``.

The role groups live in the Graph simulator's state (they are the same tenant): holders of an Entra role that
maps to a role group (Exchange Administrator -> "Organization Management") appear there once the role's
``exchange`` propagation delay has passed, which is what makes this a separate store to prove.

Errors are OData errors the way the admin API wraps a cmdlet's exception: ``{"error": {"code", "message":
"|<exception type>|<text>", "details": [{"message"}], "innererror": {...}}}``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .common import JSON, Service, ServiceError, new_guid, read_json_body
from .graph import GraphService

PREFIX = "/exchange"
SUPPORTED_CMDLETS = ("Get-RoleGroupMember",)
# Get-RoleGroupMember's parameters the simulator takes (ResultSize is accepted and honoured).
ROLE_GROUP_MEMBER_PARAMETERS = ("Identity", "ResultSize")
_NOT_FOUND_EXCEPTION = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
_PARAMETER_EXCEPTION = "System.Management.Automation.ParameterBindingException"
# The server name Exchange names in "couldn't be found on '...'" messages.
_SERVER = "SIM01MB0001.PROD.OUTLOOK.COM"


class ExchangeJSON(JSONResponse):
    media_type = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ExchangeService(Service):
    name = "exchange"
    prefix = PREFIX

    def __init__(self, graph: GraphService) -> None:
        self.graph = graph

    def reset(self) -> None:
        # The role groups are the Graph simulator's (one tenant); it resets them.
        pass

    def snapshot(self, base_url: str) -> JSON:
        return {"roleGroups": self.graph.role_groups_view()}

    def begin(self, request: Request) -> str | None:
        request.state.request_id = new_guid()
        request.state.client_request_id = request.headers.get("client-request-id") or new_guid()
        return str(request.state.client_request_id)

    def response_headers(self, request: Request) -> dict[str, str]:
        return {"request-id": request.state.request_id, "client-request-id": request.state.client_request_id}

    def authenticate(self, request: Request) -> tuple[bool, str | None]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(token.strip()), None

    def unauthenticated(self) -> ServiceError:
        return ServiceError(
            401,
            "The access token is missing or invalid.",
            code="Unauthorized",
            headers={"WWW-Authenticate": 'Bearer client_id="00000002-0000-0ff1-ce00-000000000000"'},
        )

    def error_response(self, request: Request, error: ServiceError) -> Response:
        code = error.code or {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(
            error.status, "InternalError"
        )
        message = error.message
        body = {
            "error": {
                "code": code,
                "message": message,
                "details": [{"code": "Context", "target": "", "message": message}],
                "innererror": {
                    "message": message,
                    "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                    "request-id": request.state.request_id,
                    "client-request-id": request.state.client_request_id,
                },
            }
        }
        return ExchangeJSON(body, status_code=error.status, headers=error.headers)

    def routes(self) -> list[BaseRoute]:
        return [Route("/adminapi/beta/{tenant_id}/InvokeCommand", self.invoke_command, methods=["POST"])]

    async def invoke_command(self, request: Request) -> Response:
        body = await read_json_body(request)
        cmdlet_input = body.get("CmdletInput") if isinstance(body, dict) else None
        if not isinstance(cmdlet_input, dict) or not isinstance(cmdlet_input.get("CmdletName"), str):
            raise ServiceError(
                400, "The request body needs CmdletInput with a CmdletName.", code="BadRequest"
            )
        cmdlet = cmdlet_input["CmdletName"]
        if cmdlet not in SUPPORTED_CMDLETS:
            raise ServiceError(
                400,
                f"The term '{cmdlet}' is not recognized as a cmdlet the simulator serves "
                f"(it serves {', '.join(SUPPORTED_CMDLETS)}).",
                code="BadRequest",
            )
        parameters = cmdlet_input.get("Parameters") or {}
        if not isinstance(parameters, dict):
            raise ServiceError(400, "CmdletInput.Parameters must be an object.", code="BadRequest")
        for name in parameters:
            if name not in ROLE_GROUP_MEMBER_PARAMETERS:
                message = (
                    f"|{_PARAMETER_EXCEPTION}|A parameter cannot be found that matches parameter name "
                    f"'{name}'."
                )
                raise ServiceError(400, message, code="BadRequest")
        identity = parameters.get("Identity")
        if not isinstance(identity, str) or not identity:
            raise ServiceError(
                400,
                f"|{_PARAMETER_EXCEPTION}|Cannot bind argument to parameter 'Identity' because it is null.",
                code="BadRequest",
            )
        members = self.graph.role_group_members(identity)
        if members is None:
            raise ServiceError(
                404,
                f"|{_NOT_FOUND_EXCEPTION}|The operation couldn't be performed because object '{identity}' "
                f"couldn't be found on '{_SERVER}'.",
                code="NotFound",
            )
        size = parameters.get("ResultSize", "Unlimited")
        if size != "Unlimited":
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ServiceError(400, "ResultSize is a positive number or 'Unlimited'.", code="BadRequest")
            members = members[:size]
        root = str(request.scope.get("root_path", ""))
        tenant = request.path_params["tenant_id"]
        context = (
            f"{request.url.scheme}://{request.url.netloc}{root}/adminapi/beta/{tenant}"
            "/$metadata#Collection(Exchange.GenericHashTable)"
        )
        return ExchangeJSON({"@odata.context": context, "value": members})
