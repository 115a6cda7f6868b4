"""Signature checks for inbound ITSM webhooks (design.md section 4, "Webhook authentication").

Two schemes, both HMAC-SHA256 with a shared secret, hex encoded:

- **timestamped** (ServiceNow through our outbound script, Ivanti, any ITSM without signing of its own)::

      X-Signature-Timestamp: <unix seconds>
      X-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

  accepted only within ``clock_skew`` (the policy's ``limits.webhook_clock_skew``, default 300 s) of now,
  both ways (a stale timestamp is a replay or a stuck queue; a future one a wrong clock).
- **Jira** admin webhooks (a secret set on the webhook)::

      X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>

  Jira signs no timestamp and re-delivers late, so replays are handled by delivery-id de-duplication.

Up to two secrets are valid at once (current and previous, for rotation without downtime). Every configured
secret is compared, always all of them, with :func:`hmac.compare_digest`, so neither the time taken nor an
early exit tells a caller which secret (if any) matched. :class:`SignatureError` carries a stable ``code``
for the audit row and a message a person can act on; no message contains a secret or an expected signature.

Xurrent signs its webhooks as a JWT: not supported yet (:class:`UnsupportedSystemError`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal, TypeAlias

from shared.settings import IVANTI_WEBHOOK_SECRET, JIRA_WEBHOOK_SECRET, SERVICENOW_WEBHOOK_SECRET

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "HUB_SIGNATURE_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Scheme",
    "SignatureError",
    "SignatureErrorCode",
    "UnsupportedSystemError",
    "hub_signature",
    "scheme_for",
    "sign",
    "sign_jira",
    "sign_timestamped",
    "timestamped_signature",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
HUB_SIGNATURE_HEADER = "X-Hub-Signature"
DEFAULT_CLOCK_SKEW = timedelta(seconds=300)

Scheme: TypeAlias = Literal["timestamped", "jira"]
SignatureErrorCode: TypeAlias = Literal[
    "missing_signature",
    "malformed_signature",
    "bad_signature",
    "missing_timestamp",
    "malformed_timestamp",
    "stale_timestamp",
    "future_timestamp",
    "no_secret_configured",
]

_SCHEMES: Mapping[str, Scheme] = {"servicenow": "timestamped", "ivanti": "timestamped", "jira": "jira"}
_SECRET_VARIABLES: Mapping[str, str] = {
    "servicenow": SERVICENOW_WEBHOOK_SECRET,
    "jira": JIRA_WEBHOOK_SECRET,
    "ivanti": IVANTI_WEBHOOK_SECRET,
}
_SENDERS: Mapping[str, str] = {
    "servicenow": "the ServiceNow business rule (itsm/servicenow/, docs/deploy.md)",
    "ivanti": "the Ivanti sender",
    "jira": "the Jira webhook (its 'Secret' field)",
}
_SIGNATURE_RE = re.compile(r"(?P<algorithm>[A-Za-z0-9-]+)=(?P<digest>.*)", re.ASCII | re.DOTALL)
_HEX_DIGEST_RE = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
_SECONDS_RE = re.compile(r"[0-9]{1,11}", re.ASCII)  # up to year 5138; more digits are not seconds
_MILLISECONDS_RE = re.compile(r"[0-9]{12,14}", re.ASCII)


class SignatureError(Exception):
    """A webhook whose signature is missing, malformed or wrong (answered 401, audited on the security
    chain). ``code`` is stable (for audit rows and tests); ``str()`` says what to fix."""

    def __init__(self, code: SignatureErrorCode, message: str) -> None:
        self.code: SignatureErrorCode = code
        self.message = message
        super().__init__(message)


class UnsupportedSystemError(ValueError):
    """The system has no signature scheme here (Xurrent: JWT-signed, not supported yet; or unknown)."""


def scheme_for(system: str) -> Scheme:
    """The signature scheme of ``system``: ``timestamped`` (servicenow, ivanti) or ``jira``."""
    scheme = _SCHEMES.get(system)
    if scheme is not None:
        return scheme
    if system == "xurrent":
        raise UnsupportedSystemError(
            "xurrent webhooks are signed as a JWT, which is not supported yet: keep itsm.xurrent disabled"
        )
    known = ", ".join(_SCHEMES)
    raise UnsupportedSystemError(f"no webhook signature scheme for {system!r} (supported: {known})")


# --- signing (the simulators, tests and itsm/servicenow/ do the same) -------------------


def timestamped_signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``: the X-Signature value."""
    message = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def hub_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, body)>``: the X-Hub-Signature value (Jira)."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def sign_timestamped(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers of the timestamped scheme for ``body`` signed at ``timestamp`` (unix seconds)."""
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: timestamped_signature(secret, timestamp, body),
    }


def sign_jira(secret: str, body: bytes) -> dict[str, str]:
    """The header Jira sends for ``body`` with a webhook secret."""
    return {HUB_SIGNATURE_HEADER: hub_signature(secret, body)}


def sign(system: str, secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The signature headers ``system`` sends for ``body`` (``timestamp`` is ignored for Jira)."""
    if scheme_for(system) == "jira":
        return sign_jira(secret, body)
    return sign_timestamped(secret, body, timestamp)


# --- verification ----------------------------------------------------------------------------------------


def verify_signature(
    system: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    now: datetime | float,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> None:
    """Check the signature of one delivery; return None when it is authentic and fresh.

    ``headers`` are looked up ignoring case; ``body`` is the raw request body, exactly as received;
    ``secrets`` are the valid secrets (current first; at most a few), each compared in constant time, all
    of them every time; ``now`` is an aware datetime or unix seconds; ``clock_skew`` is the accepted
    distance of the signed timestamp from ``now`` either way (inclusive).

    Raises :class:`SignatureError` (with ``code``) or, for Xurrent and unknown systems,
    :class:`UnsupportedSystemError`. Header format is checked first, then the signature, then the
    timestamp's age, so that "stale" and "future" are only ever said of authentic deliveries.
    """
    scheme = scheme_for(system)
    usable = [secret for secret in secrets if secret]
    if not usable:
        raise SignatureError(
            "no_secret_configured",
            f"no webhook secret is configured for {system}: set {_SECRET_VARIABLES[system]} "
            f"(and the same secret in {_SENDERS[system]})",
        )
    if scheme == "jira":
        provided = _signature(system, headers, HUB_SIGNATURE_HEADER)
        if not _matches_any(usable, provided, lambda secret: hub_signature(secret, body)):
            raise SignatureError(
                "bad_signature",
                f"{HUB_SIGNATURE_HEADER} does not match the body with any configured {system} webhook "
                f"secret: the secret on the Jira webhook must equal {_SECRET_VARIABLES[system]} (or its "
                "_PREVIOUS during a rotation), and the body must arrive unchanged",
            )
        return

    provided = _signature(system, headers, SIGNATURE_HEADER)
    timestamp_text = _timestamp(system, headers)
    if not _matches_any(usable, provided, lambda secret: timestamped_signature(secret, timestamp_text, body)):
        raise SignatureError(
            "bad_signature",
            f"{SIGNATURE_HEADER} does not match with any configured {system} webhook secret: it must be "
            f'sha256=<hex HMAC-SHA256(secret, {TIMESTAMP_HEADER} + "." + the raw body)>, signed with the '
            f"secret in {_SECRET_VARIABLES[system]} (or its _PREVIOUS during a rotation) over the exact "
            "bytes sent",
        )
    _check_age(int(timestamp_text), now, clock_skew)


def _matches_any(secrets: Sequence[str], provided: str, expected_for: Callable[[str], str]) -> bool:
    # Every secret is compared, always, in constant time; the results are combined without
    # short-circuiting, so the work done does not depend on which secret matched.
    provided_bytes = provided.encode("ascii")
    matched = False
    for secret in secrets:
        expected = expected_for(secret).encode("ascii")
        matched |= hmac.compare_digest(expected, provided_bytes)
    return matched


def _header(headers: Mapping[str, str], name: str) -> tuple[str, ...]:
    wanted = name.lower()
    return tuple(value for key, value in headers.items() if key.lower() == wanted)


def _signature(system: str, headers: Mapping[str, str], name: str) -> str:
    """The lower-case ``sha256=<64 hex>`` text of header ``name``, or SignatureError."""
    values = _header(headers, name)
    if not values or not any(value.strip() for value in values):
        raise SignatureError(
            "missing_signature",
            f"missing {name} header: {system} deliveries must be signed by {_SENDERS[system]}",
        )
    if len(values) > 1:
        raise SignatureError(
            "malformed_signature", f"{name} header was sent {len(values)} times; send it once"
        )
    value = values[0].strip()
    match = _SIGNATURE_RE.fullmatch(value)
    if match is None:
        raise SignatureError(
            "malformed_signature",
            f"{name} must have the form sha256=<64 hexadecimal digits> (no algorithm prefix found)",
        )
    algorithm = match.group("algorithm").lower()
    if algorithm != "sha256":
        raise SignatureError(
            "malformed_signature",
            f"{name} uses {algorithm[:20]!r}; only sha256 is accepted (sha256=<64 hexadecimal digits>)",
        )
    digest = match.group("digest")
    if not _HEX_DIGEST_RE.fullmatch(digest):
        raise SignatureError(
            "malformed_signature",
            f"{name} must be sha256= followed by 64 hexadecimal digits (got {len(digest)} characters; "
            "hex only, base64 is not accepted)",
        )
    return "sha256=" + digest.lower()


def _timestamp(system: str, headers: Mapping[str, str]) -> str:
    """The digits of X-Signature-Timestamp (as signed), or SignatureError."""
    values = _header(headers, TIMESTAMP_HEADER)
    if not values or not any(value.strip() for value in values):
        raise SignatureError(
            "missing_timestamp",
            f"missing {TIMESTAMP_HEADER} header: {system} deliveries must carry the unix time (seconds) at "
            f"which they were signed, and the signature covers it",
        )
    if len(values) > 1:
        raise SignatureError(
            "malformed_timestamp", f"{TIMESTAMP_HEADER} header was sent {len(values)} times; send it once"
        )
    value = values[0].strip()
    if _SECONDS_RE.fullmatch(value):
        return value
    hint = " (it looks like milliseconds: divide by 1000)" if _MILLISECONDS_RE.fullmatch(value) else ""
    raise SignatureError(
        "malformed_timestamp",
        f"{TIMESTAMP_HEADER} must be whole unix seconds, digits only, e.g. 1767225600{hint}",
    )


def _check_age(timestamp: int, now: datetime | float, clock_skew: timedelta) -> None:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime (e.g. datetime.now(UTC))")
        now_seconds = now.timestamp()
    else:
        now_seconds = float(now)
    allowed = clock_skew.total_seconds()
    age = now_seconds - timestamp
    if age > allowed:
        raise SignatureError(
            "stale_timestamp",
            f"{TIMESTAMP_HEADER} is {_seconds(age)} old, more than the {_seconds(allowed)} allowed: "
            "a delayed or replayed delivery is refused; sign each delivery when it is sent, and check the "
            "sender's clock (NTP) if deliveries are fresh",
        )
    if -age > allowed:
        raise SignatureError(
            "future_timestamp",
            f"{TIMESTAMP_HEADER} is {_seconds(-age)} in the future, more than the {_seconds(allowed)} "
            "allowed: check the sender's clock (NTP) and that the timestamp is unix seconds in UTC",
        )


def _seconds(value: float) -> str:
    return f"{value:g} s" if value != int(value) else f"{int(value)} s"
