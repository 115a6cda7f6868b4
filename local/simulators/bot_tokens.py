"""The Bot Framework token issuer: the JWTs Teams (the Bot Connector) sends to a bot's ``/api/messages``.

Serves the OpenID metadata and JWKS the way ``login.botframework.com`` does, so the app validates simulated
tokens with exactly the code it runs against the real service (point ``BOT_OPENID_METADATA_URL`` at
:data:`METADATA_PATH` on this process). Both RSA keys are generated at start-up and live only in memory: a key
in the source tree or on disk would be a signing key anyone could use against a misconfigured deployment.

- ``endorsed`` key: carries ``endorsements: ["msteams"]``, as the real keys that sign Teams traffic do.
- ``unendorsed`` key: a valid key of the same issuer that is NOT endorsed for ``msteams`` (negative tests:
  a key of another channel must not be accepted for Teams activities).

Control routes (no auth, loopback only, like the rest of ``/_sim``):
``POST /_sim/teams/token`` mints a token; ``GET /_sim/teams/issuer`` shows the key ids and how often the
metadata and JWKS were fetched (the app is meant to cache them).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .common import SeedError, ServiceError, control_error, read_json_body, reject_unknown_keys

METADATA_PATH = "/botframework/v1/.well-known/openidconfiguration"
KEYS_PATH = "/botframework/v1/.well-known/keys"
TOKEN_PATH = "/_sim/teams/token"  # noqa: S105 - a URL path, not a password
ISSUER_STATE_PATH = "/_sim/teams/issuer"
BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"
TEAMS_CHANNEL = "msteams"
# RSA algorithms PyJWT can sign with; other values (none, HS256) are crafted by hand in negative tests.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
TOKEN_KEYS = ("audience", "serviceUrl", "issuer", "expiresIn", "notBefore", "kid", "alg")
DEFAULT_LIFETIME_S = 3600


class _SigningKey:
    def __init__(self, endorsements: list[str]) -> None:
        self.kid = uuid.uuid4().hex
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.endorsements = endorsements

    def jwk(self) -> dict[str, Any]:
        # Shaped like the real JWKS entries: no "alg" (RSA implies RS256), "use": "sig", endorsements.
        public = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**public, "use": "sig", "kid": self.kid, "endorsements": list(self.endorsements)}


class BotTokenIssuer:
    def __init__(self) -> None:
        self.keys = {"endorsed": _SigningKey([TEAMS_CHANNEL]), "unendorsed": _SigningKey(["webchat"])}
        self.metadata_fetches = 0
        self.keys_fetches = 0
        self.issued: list[dict[str, Any]] = []

    async def metadata(self, request: Request) -> Response:
        self.metadata_fetches += 1
        origin = f"{request.url.scheme}://{request.url.netloc}"
        return JSONResponse({
            "issuer": BOT_FRAMEWORK_ISSUER,
            "authorization_endpoint": "https://invalid.botframework.com",
            "jwks_uri": origin + KEYS_PATH,
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        })  # fmt: skip

    async def jwks(self, request: Request) -> Response:
        self.keys_fetches += 1
        return JSONResponse({"keys": [key.jwk() for key in self.keys.values()]})

    async def token(self, request: Request) -> Response:
        try:
            spec = await read_json_body(request)
            if not isinstance(spec, dict):
                raise SeedError("expected a JSON object")
            reject_unknown_keys(spec, TOKEN_KEYS, "teams token")
            token, claims, kid = self.mint(spec)
        except (SeedError, ServiceError) as exc:  # a bad spec or a body that is not JSON
            return control_error(400, str(exc))
        return JSONResponse({"token": token, "kid": kid, "claims": claims})

    async def state(self, request: Request) -> Response:
        return JSONResponse({
            "keys": {name: key.kid for name, key in self.keys.items()},
            "metadata_fetches": self.metadata_fetches,
            "keys_fetches": self.keys_fetches,
            "issued": len(self.issued),
        })  # fmt: skip

    def mint(self, spec: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
        """Sign a token for ``spec`` (the keys of :data:`TOKEN_KEYS`): ``(token, claims, kid)``; counted in
        ``issued``. Used by ``POST /_sim/teams/token`` and by the click helper (``/_sim/teams/click``)."""
        audience, service_url = spec.get("audience"), spec.get("serviceUrl")
        if not isinstance(audience, str) or not isinstance(service_url, str):
            raise SeedError("'audience' and 'serviceUrl' are required strings")
        issuer = spec.get("issuer", BOT_FRAMEWORK_ISSUER)
        key_name = spec.get("kid", "endorsed")
        alg = spec.get("alg", "RS256")
        if not isinstance(issuer, str):
            raise SeedError("'issuer' must be a string")
        if key_name not in self.keys:
            raise SeedError(f"'kid' must be one of {sorted(self.keys)}")
        if alg not in SIGNING_ALGORITHMS:
            raise SeedError(f"'alg' must be one of {list(SIGNING_ALGORITHMS)}")
        # Both offsets are seconds relative to now and may be negative (expired / not yet valid tokens).
        expires_in = _seconds(spec, "expiresIn", DEFAULT_LIFETIME_S)
        not_before = _seconds(spec, "notBefore", 0)
        now = int(time.time())
        claims = {
            "serviceurl": service_url,  # lower case, as the Bot Framework names it
            "nbf": now + not_before,
            "exp": now + expires_in,
            "iss": issuer,
            "aud": audience,
            "iat": now,
        }
        key = self.keys[key_name]
        token = jwt.encode(claims, key.private_key, algorithm=alg, headers={"kid": key.kid, "typ": "JWT"})
        self.issued.append(claims)
        return token, claims, key.kid

    def routes(self) -> list[Route]:
        return [
            Route(METADATA_PATH, self.metadata, methods=["GET"]),
            Route(KEYS_PATH, self.jwks, methods=["GET"]),
            Route(TOKEN_PATH, self.token, methods=["POST"]),
            Route(ISSUER_STATE_PATH, self.state, methods=["GET"]),
        ]


def _seconds(spec: dict[str, Any], name: str, default: int) -> int:
    value = spec.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SeedError(f"'{name}' must be an integer number of seconds")
    return value
