"""Bot Framework token validation for the bot endpoint (``POST /api/messages``).

An approval click is only as trustworthy as the proof that Teams, not an attacker, delivered it. Teams (the
Bot Connector) sends ``Authorization: Bearer <JWT>``; this module checks everything the Bot Framework
documents (facts.md, "Microsoft Teams approvals"): RS256 only, a signing key from the JWKS that the OpenID
metadata names, issuer ``https://api.botframework.com``, audience = our bot's app id, expiry and not-before
with a few minutes of clock skew, the ``serviceurl`` claim equal to the activity's ``serviceUrl``, and a key
endorsed for the channel (``msteams``).

Synchronous on purpose (PyJWT's JWKS client is): the HTTP function calls :meth:`BotTokenValidator.validate`
in a worker thread. One validator per process: it caches the metadata and the keys.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import httpx
import jwt
from jwt import PyJWKClient

__all__ = [
    "BOT_FRAMEWORK_ISSUER",
    "BotAuthError",
    "BotIdentityClaims",
    "BotKeysUnavailableError",
    "BotTokenValidator",
]

BOT_FRAMEWORK_ISSUER: Final = "https://api.botframework.com"
# Only RS256: the Bot Framework signs with RS256, and accepting anything else opens the classic confusions
# ("alg": "none", or HS256 keyed with the public key, which anyone can fetch from the JWKS).
_ALGORITHM: Final = "RS256"
_METADATA_TIMEOUT_S: Final = 10.0

BotAuthCode = Literal[
    "missing_token",
    "malformed_token",
    "bad_algorithm",
    "unknown_key",
    "bad_signature",
    "wrong_audience",
    "wrong_issuer",
    "expired",
    "not_yet_valid",
    "serviceurl_mismatch",
    "channel_not_endorsed",
]


class BotAuthError(Exception):
    """The request is not a genuine Bot Framework call for this bot: answer 401 and record ``code``."""

    def __init__(self, code: BotAuthCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: BotAuthCode = code
        self.message = message


class BotKeysUnavailableError(Exception):
    """The OpenID metadata or the JWKS could not be fetched. Not the caller's fault: answer 5xx (Teams
    retries) rather than 401, and never accept the token."""


@dataclass(frozen=True)
class BotIdentityClaims:
    """What a validated token proves: the Bot Framework sent this for our bot, from ``service_url``."""

    issuer: str
    audience: str
    service_url: str
    key_id: str
    expires_at: datetime
    not_before: datetime | None
    claims: Mapping[str, Any]


class _EndorsingJWKClient(PyJWKClient):
    """PyJWKClient that also remembers each key's ``endorsements``: PyJWK keeps only the key material, and
    the endorsement is what binds a key to a channel (a key endorsed for another channel must not sign
    Teams traffic)."""

    def __init__(self, uri: str, cooldown: timedelta) -> None:
        super().__init__(uri, cache_jwk_set=True, cooldown_duration=cooldown.total_seconds())
        self.endorsements: dict[str, frozenset[str]] = {}

    def fetch_data(self) -> Any:
        data = super().fetch_data()
        # Rebuilt on every fetch (initial, expiry, unknown-kid refresh) so it always matches the cached set.
        self.endorsements = {
            key["kid"]: frozenset(e for e in key.get("endorsements") or [] if isinstance(e, str))
            for key in data.get("keys", [])
            if isinstance(key, dict) and isinstance(key.get("kid"), str)
        }
        return data


class BotTokenValidator:
    def __init__(
        self,
        openid_metadata_url: str,
        app_id: str,
        channel: str = "msteams",
        leeway: timedelta = timedelta(minutes=5),
        *,
        refresh_cooldown: timedelta = timedelta(seconds=30),
    ) -> None:
        """``refresh_cooldown``: minimum time between JWKS refreshes forced by an unknown ``kid``, so random
        kids in forged tokens cannot make us hammer the key endpoint (PyJWKClient enforces it)."""
        self._metadata_url = openid_metadata_url
        self._app_id = app_id
        self._channel = channel
        self._leeway = leeway
        self._refresh_cooldown = refresh_cooldown
        self._lock = threading.Lock()
        self._jwks: _EndorsingJWKClient | None = None

    def validate(self, authorization_header: str | None, service_url: str) -> BotIdentityClaims:
        token = _bearer_token(authorization_header)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise BotAuthError("malformed_token", f"not a JWT: {exc}") from exc
        # Checked before any key lookup: a token with another algorithm is refused whatever its key says.
        if header.get("alg") != _ALGORITHM:
            raise BotAuthError("bad_algorithm", f"algorithm {header.get('alg')!r} is not {_ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise BotAuthError("unknown_key", "the token names no signing key (kid)")

        jwks = self._jwks_client()
        try:
            # Cached set first; an unknown kid makes PyJWKClient refresh once (outside the cooldown).
            signing_key = jwks.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise BotKeysUnavailableError(f"cannot fetch the Bot Framework keys: {exc}") from exc
        except jwt.PyJWKClientError as exc:
            raise BotAuthError("unknown_key", f"no signing key {kid!r} in the Bot Framework keys") from exc
        if self._channel not in jwks.endorsements.get(kid, frozenset()):
            raise BotAuthError("channel_not_endorsed", f"key {kid!r} is not endorsed for {self._channel!r}")

        claims = self._decode(token, signing_key.key)

        # The token is bound to the Bot Connector endpoint it came from: without this check a token issued
        # for one serviceUrl could be replayed with an activity that sends our replies somewhere else.
        claimed = claims.get("serviceurl")
        if not isinstance(claimed, str) or claimed.rstrip("/") != service_url.rstrip("/"):
            raise BotAuthError(
                "serviceurl_mismatch", f"token serviceurl {claimed!r} != activity serviceUrl {service_url!r}"
            )
        nbf = claims.get("nbf")
        return BotIdentityClaims(
            issuer=claims["iss"],
            audience=self._app_id,
            service_url=claimed,
            key_id=kid,
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            not_before=datetime.fromtimestamp(nbf, UTC) if isinstance(nbf, int | float) else None,
            claims=claims,
        )

    def _decode(self, token: str, key: Any) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[_ALGORITHM],  # never taken from the token
                audience=self._app_id,
                issuer=BOT_FRAMEWORK_ISSUER,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"], "strict_aud": True},
            )
        except jwt.InvalidSignatureError as exc:
            raise BotAuthError("bad_signature", "the signature does not verify") from exc
        except jwt.ExpiredSignatureError as exc:
            raise BotAuthError("expired", "the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise BotAuthError("not_yet_valid", "the token is not valid yet (nbf)") from exc
        except jwt.InvalidAudienceError as exc:
            raise BotAuthError("wrong_audience", f"the token is not for app {self._app_id}") from exc
        except jwt.InvalidIssuerError as exc:
            raise BotAuthError("wrong_issuer", f"the issuer is not {BOT_FRAMEWORK_ISSUER}") from exc
        except jwt.MissingRequiredClaimError as exc:
            # A missing aud/iss is a token for someone else; a missing exp is not a Bot Framework token.
            code: BotAuthCode = "malformed_token"
            if exc.claim == "aud":
                code = "wrong_audience"
            elif exc.claim == "iss":
                code = "wrong_issuer"
            raise BotAuthError(code, f"the token has no {exc.claim!r} claim") from exc
        except jwt.InvalidAlgorithmError as exc:  # unreachable after the header check; kept as a backstop
            raise BotAuthError("bad_algorithm", str(exc)) from exc
        except jwt.InvalidTokenError as exc:  # bad base64/JSON, non-numeric exp, ...
            raise BotAuthError("malformed_token", str(exc)) from exc
        return claims

    def _jwks_client(self) -> _EndorsingJWKClient:
        # The metadata only tells us where the keys are; it is fetched once per validator. Key rotation is
        # handled by the JWKS client (cache lifespan + refresh on unknown kid), not by re-reading metadata.
        with self._lock:
            if self._jwks is None:
                self._jwks = _EndorsingJWKClient(self._jwks_uri(), self._refresh_cooldown)
            return self._jwks

    def _jwks_uri(self) -> str:
        try:
            response = httpx.get(self._metadata_url, timeout=_METADATA_TIMEOUT_S)
            response.raise_for_status()
            metadata = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise BotKeysUnavailableError(f"cannot read the Bot Framework OpenID metadata: {exc}") from exc
        jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise BotKeysUnavailableError("the Bot Framework OpenID metadata has no usable jwks_uri")
        return jwks_uri


def _bearer_token(authorization_header: str | None) -> str:
    if not authorization_header or not authorization_header.strip():
        raise BotAuthError("missing_token", "no Authorization header")
    scheme, _, token = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise BotAuthError("missing_token", "the Authorization header is not 'Bearer <token>'")
    return token.strip()
