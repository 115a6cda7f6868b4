"""The app's configuration, checked once per process at start-up: the settings and the policy they name.

The composition root calls :func:`load_configuration` when the app is indexed, so a missing setting,
a bad policy or a policy that needs a base URL nobody configured stops the app at start-up with a
message naming the variable or the policy key, instead of failing the first request that needs it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from shared.policy import Policy, load_policy
from shared.settings import Settings, get_settings


@dataclass(frozen=True)
class Configuration:
    settings: Settings
    policy: Policy


@functools.cache
def load_configuration() -> Configuration:
    """Read and cross-check settings and policy; raises SettingsError or PolicyError naming the fault."""
    settings = get_settings()
    policy = load_policy(settings.policy_path)
    settings.check_for_policy(policy.enabled_itsm, policy.roster.provider)
    return Configuration(settings, policy)
