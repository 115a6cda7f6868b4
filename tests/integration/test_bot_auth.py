"""Bot Framework token validation (shared/bot_auth.py) against the simulators' token issuer: one valid token,
then one test per rejection code, and the JWKS caching."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from local.simulators.bot_tokens import ISSUER_STATE_PATH, KEYS_PATH, METADATA_PATH
from local.simulators.process import SimulatorProcess
from shared.bot_auth import BotAuthError, BotIdentityClaims, BotTokenValidator

pytestmark = pytest.mark.stack

APP_ID = "3f0c1b7e-5a2d-4c8e-9f61-2b7d9e4a1c05"
SERVICE_URL = "https://smba.trafficmanager.net/emea/"


@pytest.fixture
def validator(simulators: SimulatorProcess) -> BotTokenValidator:
    return BotTokenValidator(simulators.url + METADATA_PATH, APP_ID)


def mint(sim: SimulatorProcess, **spec: Any) -> str:
    body = {"audience": APP_ID, "serviceUrl": SERVICE_URL, **spec}
    token: str = sim.control("POST", "teams/token", json=body)["token"]
    return token


def issuer_state(sim: SimulatorProcess) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(sim.url + ISSUER_STATE_PATH, timeout=10).json()
    return state


def claims_now(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "https://api.botframework.com",
        "aud": APP_ID,
        "serviceurl": SERVICE_URL,
        "nbf": now,
        "iat": now,
        "exp": now + 600,
        **overrides,
    }


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value).encode())


def rejected(validator: BotTokenValidator, header: str | None, service_url: str = SERVICE_URL) -> str:
    with pytest.raises(BotAuthError) as info:
        validator.validate(header, service_url)
    return info.value.code


def test_valid_token_passes(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    result = validator.validate(f"Bearer {mint(simulators)}", SERVICE_URL)
    assert isinstance(result, BotIdentityClaims)
    assert result.issuer == "https://api.botframework.com"
    assert result.audience == APP_ID
    assert result.service_url == SERVICE_URL
    assert result.key_id == issuer_state(simulators)["keys"]["endorsed"]
    assert result.claims["aud"] == APP_ID
    assert result.not_before is not None and result.not_before < result.expires_at


def test_serviceurl_compared_without_trailing_slash(
    simulators: SimulatorProcess, validator: BotTokenValidator
) -> None:
    validator.validate(f"Bearer {mint(simulators)}", SERVICE_URL.rstrip("/"))


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz"])
def test_missing_token(validator: BotTokenValidator, header: str | None) -> None:
    assert rejected(validator, header) == "missing_token"


def test_garbage_token(validator: BotTokenValidator) -> None:
    assert rejected(validator, "Bearer not-a-jwt") == "malformed_token"


def test_alg_none(validator: BotTokenValidator, simulators: SimulatorProcess) -> None:
    kid = issuer_state(simulators)["keys"]["endorsed"]
    token = f"{b64json({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{b64json(claims_now())}."
    assert rejected(validator, f"Bearer {token}") == "bad_algorithm"


def test_hs256_signed_with_the_public_key(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    # The classic confusion attack: the public key (anyone can fetch it) used as the HMAC secret.
    kid = issuer_state(simulators)["keys"]["endorsed"]
    jwk = next(k for k in httpx.get(simulators.url + KEYS_PATH, timeout=10).json()["keys"] if k["kid"] == kid)
    n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=="), "big")
    e = int.from_bytes(base64.urlsafe_b64decode(jwk["e"] + "=="), "big")
    pem = (
        rsa.RSAPublicNumbers(e, n)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64json(claims_now())}"
    signature = b64url(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
    assert rejected(validator, f"Bearer {signing_input}.{signature}") == "bad_algorithm"


def test_other_rsa_algorithm(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    assert rejected(validator, f"Bearer {mint(simulators, alg='RS512')}") == "bad_algorithm"


def test_key_the_jwks_does_not_know(validator: BotTokenValidator) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims_now(), other, algorithm="RS256", headers={"kid": "not-in-the-jwks"})
    assert rejected(validator, f"Bearer {token}") == "unknown_key"


def test_other_key_with_a_known_kid(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    kid = issuer_state(simulators)["keys"]["endorsed"]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims_now(), other, algorithm="RS256", headers={"kid": kid})
    assert rejected(validator, f"Bearer {token}") == "bad_signature"


def test_tampered_payload(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    header, _, signature = mint(simulators).split(".")
    forged = f"{header}.{b64json(claims_now(aud='someone-else'))}.{signature}"
    assert rejected(validator, f"Bearer {forged}") == "bad_signature"


def test_wrong_audience(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    token = mint(simulators, audience="9d1c6f2a-0000-4000-8000-000000000001")
    assert rejected(validator, f"Bearer {token}") == "wrong_audience"


def test_wrong_issuer(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    token = mint(simulators, issuer="https://sts.windows.net/f00/")
    assert rejected(validator, f"Bearer {token}") == "wrong_issuer"


def test_expired_beyond_leeway(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    token = mint(simulators, expiresIn=-6 * 60, notBefore=-3600)
    assert rejected(validator, f"Bearer {token}") == "expired"


def test_expired_within_leeway_passes(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    validator.validate(f"Bearer {mint(simulators, expiresIn=-60, notBefore=-3600)}", SERVICE_URL)


def test_not_yet_valid(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    token = mint(simulators, notBefore=6 * 60, expiresIn=3600)
    assert rejected(validator, f"Bearer {token}") == "not_yet_valid"


def test_serviceurl_mismatch(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    token = mint(simulators, serviceUrl="https://attacker.example/")
    assert rejected(validator, f"Bearer {token}") == "serviceurl_mismatch"


def test_key_not_endorsed_for_msteams(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    assert rejected(validator, f"Bearer {mint(simulators, kid='unendorsed')}") == "channel_not_endorsed"


def test_metadata_and_jwks_fetched_once(simulators: SimulatorProcess, validator: BotTokenValidator) -> None:
    before = issuer_state(simulators)
    tokens = [mint(simulators) for _ in range(3)]
    for token in tokens:
        validator.validate(f"Bearer {token}", SERVICE_URL)
    rejected(validator, f"Bearer {mint(simulators, kid='unendorsed')}")
    after = issuer_state(simulators)
    assert after["metadata_fetches"] - before["metadata_fetches"] == 1
    assert after["keys_fetches"] - before["keys_fetches"] == 1


def test_unknown_kid_refreshes_the_jwks_once(simulators: SimulatorProcess) -> None:
    # Without the cooldown (which throttles forged kids in production) an unknown kid forces one refresh.
    validator = BotTokenValidator(simulators.url + METADATA_PATH, APP_ID, refresh_cooldown=timedelta(0))
    validator.validate(f"Bearer {mint(simulators)}", SERVICE_URL)
    before = issuer_state(simulators)["keys_fetches"]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims_now(), other, algorithm="RS256", headers={"kid": "rotated-away"})
    assert rejected(validator, f"Bearer {token}") == "unknown_key"
    assert issuer_state(simulators)["keys_fetches"] - before == 1


def test_token_route_refuses_unknown_keys(simulators: SimulatorProcess) -> None:
    with pytest.raises(RuntimeError, match="unknown keys"):
        simulators.control(
            "POST", "teams/token", json={"audience": APP_ID, "serviceUrl": SERVICE_URL, "x": 1}
        )
