"""Activity of the Durable self-check: reports what this deployment runs (versions, policy hash)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df

from shared.configuration import load_configuration
from shared.version import APP_VERSION

ENVIRONMENT_ACTIVITY = "self_check_environment"

bp = df.Blueprint()


def describe_environment() -> dict[str, Any]:
    """What an operator needs to know that the app and its policy loaded in this deployment."""
    policy = load_configuration().policy
    return {
        "appVersion": APP_VERSION,
        "policyVersion": policy.version,
        "policyHash": policy.version_hash,
        "policyFileHash": policy.file_hash,
        "hostTime": datetime.now(UTC).isoformat(timespec="seconds"),
    }


@bp.activity_trigger(input_name="request", activity=ENVIRONMENT_ACTIVITY)
def self_check_environment(request: dict[str, Any] | None) -> dict[str, Any]:
    return describe_environment()
