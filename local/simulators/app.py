"""Builds the simulators' ASGI app: each service mounted under its prefix, the control API under ``/_sim``.

The prefixes are what the app's base-URL settings point at (``GRAPH_BASE_URL`` =
``http://127.0.0.1:7081/graph/v1.0`` and so on), so the app reaches a simulator exactly as it would reach
the real service: through its setting, never through a simulator-specific path.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from .bot_tokens import METADATA_PATH
from .common import ServiceApp
from .control import Simulators, control_routes
from .identity import ManagedIdentity

CONTROL_PREFIX = "/_sim"


def build_app(sims: Simulators | None = None) -> Starlette:
    sims = sims or Simulators()

    async def index(request: Request) -> Response:
        origin = f"{request.url.scheme}://{request.url.netloc}"
        return JSONResponse({
            "base_urls": sims.base_urls(origin),
            "bot_openid_metadata_url": f"{origin}{METADATA_PATH}",
            "control": f"{origin}{CONTROL_PREFIX}",
        })  # fmt: skip

    identity = ManagedIdentity()
    # The token issuer's routes are full paths (its control route under /_sim too): they must come before the
    # control Mount, which would otherwise claim every /_sim path and answer 404 for /_sim/teams/...
    # The issuer belongs to the Simulators (the click helper under /_sim/teams/click signs with it).
    bot_tokens = sims.bot_tokens
    routes: list[BaseRoute] = [Route("/", index, methods=["GET"]), *identity.routes(), *bot_tokens.routes()]
    routes += [Mount(s.prefix, app=ServiceApp(s, sims.calls, sims.faults)) for s in sims.services]
    routes.append(Mount(CONTROL_PREFIX, routes=control_routes(sims)))

    async def no_service(request: Request, exc: Exception) -> Response:
        # Most often a base-URL setting without the service's prefix (e.g. ".../v1.0" for ".../graph/v1.0"):
        # say which prefixes exist instead of a bare "Not Found".
        origin = f"{request.url.scheme}://{request.url.netloc}"
        message = f"no simulated service at {request.url.path}; base URLs are listed in 'base_urls'"
        return JSONResponse({"error": message, "base_urls": sims.base_urls(origin)}, status_code=404)

    app = Starlette(routes=routes, exception_handlers={404: no_service})
    app.state.simulators = sims
    app.state.identity = identity
    app.state.bot_tokens = bot_tokens
    return app
