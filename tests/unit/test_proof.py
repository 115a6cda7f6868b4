"""When access counts as effective, when stores disagree, and how long to wait (shared/proof.py)."""

from __future__ import annotations

from datetime import timedelta

from shared.proof import asked_to_wait, effective, next_wait, stores_disagree


def probe(name: str, passed: bool, **more: object) -> dict[str, object]:
    return {"probe": name, "passed": passed, **more}


def test_effective_needs_every_required_probe_in_the_same_round() -> None:
    required = ["pim_instance", "unified_assignment"]
    assert effective([probe("pim_instance", True), probe("unified_assignment", True)], required)
    assert not effective([probe("pim_instance", True), probe("unified_assignment", False)], required)
    assert not effective([probe("pim_instance", True)], required)
    assert not effective([], [])


def test_a_directory_store_missing_what_pim_shows_is_a_disagreement_a_workload_or_an_outage_is_not() -> None:
    assert stores_disagree([probe("pim_instance", True), probe("directory_role_member", False)])
    assert not stores_disagree([probe("pim_instance", True), probe("exchange_role_group", False)])
    assert not stores_disagree(
        [probe("pim_instance", True), probe("unified_assignment", False, code="ServiceUnavailable")]
    )
    assert not stores_disagree([probe("pim_instance", False), probe("unified_assignment", False)])


def test_waits_double_to_the_cap_and_respect_retry_after() -> None:
    first, cap = timedelta(seconds=5), timedelta(minutes=1)
    assert [next_wait(n, first, cap).total_seconds() for n in range(6)] == [5, 10, 20, 40, 60, 60]
    assert asked_to_wait(
        [probe("unified_assignment", False, retryAfter=17), probe("pim_instance", True)]
    ) == (timedelta(seconds=17))
    assert asked_to_wait([probe("pim_instance", True)]) == timedelta(0)
