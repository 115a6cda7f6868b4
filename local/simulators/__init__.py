"""Local simulators of the services the app calls: Microsoft Graph, ServiceNow, Jira, PagerDuty, the Teams
Bot Connector (with the Bot Framework token issuer) and Exchange Online's admin API.

One process (``python -m local.simulators``, default port 7081, loopback only) serves them all under path
prefixes, with their real wire formats, in-memory state and a control API under ``/_sim``. See README.md.
"""

from __future__ import annotations

from .app import build_app
from .process import DEFAULT_PORT, SimulatorProcess

__all__ = ["DEFAULT_PORT", "SimulatorProcess", "build_app"]
