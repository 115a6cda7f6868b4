"""When access counts as effective, and how often to look (design.md "Proof of effective access").

Pure functions: the orchestration calls them with what the probes returned and its own clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

PIM_PROBE = "pim_instance"
# The directory's own stores, which follow PIM within minutes. Workload-side checks (the Exchange role
# group, the responder's answer) lag by design and prove access; they are not a store disagreement.
DIRECTORY_STORES = ("unified_assignment", "directory_role_member")


def next_wait(polls_done: int, first: timedelta, cap: timedelta) -> timedelta:
    """The wait before the next probe round: ``first``, doubling, at most ``cap``. The number of Graph calls
    grows with the propagation delay by ``log2(cap/first)`` rounds and then one round per ``cap``, not at a
    fixed short pace."""
    wait: timedelta = first * (2 ** min(polls_done, 20))
    return min(cap, wait)


def asked_to_wait(results: Sequence[dict[str, Any]]) -> timedelta:
    """The longest Retry-After a store answered this round with (429/503), or zero: the next round waits at
    least that long, so a throttled Graph is not asked again sooner than it said."""
    seconds = [float(r["retryAfter"]) for r in results if r.get("retryAfter")]
    return timedelta(seconds=max(seconds, default=0.0))


def effective(results: Sequence[dict[str, Any]], required: Sequence[str]) -> bool:
    """Every probe the role requires passed in this round."""
    passed = {r["probe"] for r in results if r.get("passed")}
    return bool(required) and all(probe in passed for probe in required)


def failing(results: Sequence[dict[str, Any]]) -> list[str]:
    return [r["probe"] for r in results if not r.get("passed")]


def stores_disagree(results: Sequence[dict[str, Any]]) -> bool:
    """PIM says the role is active, but another directory store does not show it (yet). A store that could
    not be read (an error code: an outage, the breaker open) is not a disagreement."""
    by_probe = {r["probe"]: bool(r.get("passed")) for r in results if not r.get("code")}
    stores = [by_probe[p] for p in DIRECTORY_STORES if p in by_probe]
    return by_probe.get(PIM_PROBE, False) and not all(stores)
