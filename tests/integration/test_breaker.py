"""The circuit breaker against Azurite (its state is a Table Storage row, ETag-guarded), racing callers as
threads with their own clients (as separate app instances would be), and the PIM adapter behind it against
the Graph simulator: after the outage opens it, nothing more reaches Graph and IAM hears of it once."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from azure.data.tables import TableServiceClient
from azure.identity import ManagedIdentityCredential

from local.azurite import Azurite
from local.simulators.identity import IDENTITY_HEADER, TOKEN_PATH
from local.simulators.process import SimulatorProcess
from shared.audit import AuditLedger, security_chain
from shared.breaker import CircuitBreaker, Decision, Transition
from shared.directory import DirectoryError, EntraDirectory, graph_client
from shared.pim import CIRCUIT_OPEN, GRAPH, PIM_SERVICE, Pim, PimAnswer
from shared.policy import BreakerPolicy
from shared.services import outage_notice
from shared.teams import PostedActivity

pytestmark = pytest.mark.stack

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
OPEN_FOR = timedelta(minutes=1)
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
REQUESTS_PATH = "/roleManagement/directory/roleAssignmentScheduleRequests"
T = TypeVar("T")


class Clock:
    """A clock the test moves: nobody waits for a minute to pass."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@pytest.fixture
def service(azurite: Azurite) -> Iterator[TableServiceClient]:
    with TableServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dependency() -> str:
    return f"graph-{uuid.uuid4().hex[:8]}"  # the session's Azurite is shared: a row of our own


def settings(failures: int) -> BreakerPolicy:
    return BreakerPolicy.model_validate({"failures": failures, "open_for": "PT1M"})  # as the policy file


def breaker_for(service: TableServiceClient, clock: Clock, failures: int = 3) -> CircuitBreaker:
    return CircuitBreaker(service, settings(failures), clock)


def opened(breaker: CircuitBreaker, dependency: str, failures: int = 3) -> Transition:
    results = [breaker.record(dependency, ok=False) for _ in range(failures)]
    assert results[:-1] == [None] * (failures - 1)
    assert results[-1] is not None and results[-1].kind == "opened"
    return results[-1]


def race(azurite: Azurite, clock: Clock, callers: int, work: Callable[[CircuitBreaker], T]) -> list[T]:
    """``work`` in ``callers`` threads at once, each with its own Table client (as separate instances)."""
    start = threading.Barrier(callers)

    def one(_: int) -> T:
        with TableServiceClient.from_connection_string(azurite.connection_string) as client:
            breaker = breaker_for(client, clock)
            start.wait()
            return work(breaker)

    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(one, range(callers)))


# -- the breaker on its own ---------------------------------------------------------------------------------


def test_opens_after_the_configured_consecutive_failures(service, clock, dependency) -> None:
    breaker = breaker_for(service, clock)
    assert breaker.allow(dependency) == Decision(True, "closed")
    breaker.record(dependency, ok=False)
    breaker.record(dependency, ok=False)
    assert breaker.allow(dependency).allowed
    transition = breaker.record(dependency, ok=False)
    assert transition == Transition("opened", dependency, T0, 3, 1, T0 + OPEN_FOR)
    assert breaker.state(dependency) == ("open", 3, T0 + OPEN_FOR)


def test_a_success_resets_the_count(service, clock, dependency) -> None:
    breaker = breaker_for(service, clock)
    outcomes = [False, False, True, False, False]
    assert [breaker.record(dependency, ok) for ok in outcomes] == [None] * 5
    assert breaker.state(dependency) == ("closed", 2, None)
    assert breaker.record(dependency, ok=False) is not None


def test_refuses_while_open_until_it_cools_down(service, clock, dependency) -> None:
    breaker = breaker_for(service, clock)
    opened(breaker, dependency)
    clock.advance(timedelta(seconds=45))
    refused = breaker.allow(dependency)
    assert refused == Decision(False, "open", T0 + OPEN_FOR, 15.0)
    clock.advance(timedelta(seconds=15))
    trial = breaker.allow(dependency)
    assert (trial.allowed, trial.state, trial.trial) == (True, "half_open", True)
    # Everyone else waits for the trial's outcome.
    assert breaker.allow(dependency) == Decision(False, "half_open", clock.now + OPEN_FOR, 60.0)


def test_exactly_one_half_open_trial_among_concurrent_callers(azurite, service, clock, dependency) -> None:
    opened(breaker_for(service, clock), dependency)
    clock.advance(OPEN_FOR)
    decisions = race(azurite, clock, 8, lambda breaker: breaker.allow(dependency))
    assert sorted(d.allowed for d in decisions) == [False] * 7 + [True]
    assert [d.trial for d in decisions if d.allowed] == [True]
    assert {d.state for d in decisions if not d.allowed} == {"half_open"}


def test_exactly_one_opened_among_concurrent_failing_callers(azurite, service, clock, dependency) -> None:
    transitions = race(azurite, clock, 10, lambda breaker: breaker.record(dependency, ok=False))
    assert [t.kind for t in transitions if t is not None] == ["opened"]
    assert breaker_for(service, clock).state(dependency)[0] == "open"


def test_a_successful_trial_closes_it(service, clock, dependency) -> None:
    breaker = breaker_for(service, clock)
    opened(breaker, dependency)
    clock.advance(OPEN_FOR)
    assert breaker.allow(dependency).trial
    closed = breaker.record(dependency, ok=True)
    assert closed is not None and (closed.kind, closed.outage) == ("closed", 1)
    assert breaker.allow(dependency) == Decision(True, "closed")
    assert breaker.state(dependency) == ("closed", 0, None)


def test_a_failed_trial_opens_it_again_as_the_same_outage(service, clock, dependency) -> None:
    breaker = breaker_for(service, clock)
    opened(breaker, dependency)
    clock.advance(OPEN_FOR)
    assert breaker.allow(dependency).trial
    assert breaker.record(dependency, ok=False) is None  # no second notice for the same outage
    assert breaker.allow(dependency) == Decision(False, "open", clock.now + OPEN_FOR, 60.0)


def test_a_trial_that_never_reports_expires(service, clock, dependency) -> None:
    breaker = breaker_for(service, clock)
    opened(breaker, dependency)
    clock.advance(OPEN_FOR)
    assert breaker.allow(dependency).trial  # ... and that caller dies
    clock.advance(OPEN_FOR)
    assert breaker.allow(dependency).trial


def test_a_second_outage_gives_a_second_opened(service, clock, dependency) -> None:
    breaker = breaker_for(service, clock)
    assert opened(breaker, dependency).outage == 1
    clock.advance(OPEN_FOR)
    assert breaker.allow(dependency).trial
    breaker.record(dependency, ok=True)
    assert opened(breaker, dependency).outage == 2


def test_successes_alone_write_nothing(service, clock, dependency) -> None:
    breaker = breaker_for(service, clock)
    assert breaker.record(dependency, ok=True) is None
    table = service.get_table_client("CircuitBreaker")
    assert list(table.query_entities("RowKey eq @d", parameters={"d": dependency})) == []


# -- the PIM adapter behind it, against the Graph simulator ---------------------------------------------


class FakeConnector:
    def __init__(self) -> None:
        self.posts: list[tuple[str, str]] = []

    async def post_text(self, conversation_id: str, text: str) -> PostedActivity:
        self.posts.append((conversation_id, text))
        return PostedActivity(conversation_id, str(len(self.posts)))


@pytest.fixture
def graph(sim: SimulatorProcess, monkeypatch: pytest.MonkeyPatch) -> SimulatorProcess:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.url + TOKEN_PATH)
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    return sim


def test_pim_stops_calling_graph_once_the_breaker_opens(graph, service) -> None:
    alex = str(graph.seed("graph/users", {"userPrincipalName": "alex@contoso.test"})["id"])
    graph.fault(service="graph", path_contains=REQUESTS_PATH, method="POST", status=503, count=None)
    # A table of its own: Pim's dependency names are fixed, and the session's Azurite is shared.
    breaker = CircuitBreaker(service, settings(3),
                             table=f"Breaker{uuid.uuid4().hex[:8]}")  # fmt: skip
    notices: list[str] = []

    async def on_open(detail: str) -> None:
        notices.append(detail)

    def run(work: Callable[[Pim], Awaitable[T]]) -> T:
        async def main() -> T:  # the SDK's httpx client belongs to one event loop
            directory = EntraDirectory(graph_client(graph.graph_base_url, ManagedIdentityCredential()))
            return await work(Pim(directory, breaker, on_open))

        return asyncio.run(main())

    def assign(pim: Pim) -> Awaitable[PimAnswer]:
        return pim.assign(alex, GLOBAL_ADMIN, timedelta(hours=1), "INC1 outage", "INC1", "ServiceNow")

    async def work(pim: Pim) -> list[PimAnswer]:
        return [await assign(pim) for _ in range(3)]

    answers = run(work)
    assert [(a.verdict, a.call.status) for a in answers] == [("unavailable", 503)] * 3
    assert len(notices) == 1 and "PIM schedule service" in notices[0] and "503" in notices[0]
    calls = graph.calls_summary("graph")
    assert calls == {f"POST {REQUESTS_PATH}": 3}

    refused = run(assign)
    assert (refused.verdict, refused.code, refused.call.status) == ("unavailable", CIRCUIT_OPEN, 0)
    assert refused.retryable and refused.retry_after is not None and 0 < refused.retry_after <= 60
    with pytest.raises(DirectoryError) as read:
        run(lambda pim: pim.pim_instances(alex, GLOBAL_ADMIN))
    assert read.value.code == CIRCUIT_OPEN and read.value.call.status == 0
    assert graph.calls_summary("graph") == calls  # nothing more reached Graph
    assert len(notices) == 1

    # The break-glass path does not depend on PIM's schedule service, and neither does its breaker.
    direct = run(lambda pim: pim.assign_direct(alex, GLOBAL_ADMIN))
    assert direct.verdict == "done"
    assert breaker.state(PIM_SERVICE)[0] == "open" and breaker.state(GRAPH)[0] == "closed"


def test_business_answers_do_not_count_against_the_breaker(graph, service) -> None:
    alex = str(graph.seed("graph/users", {"userPrincipalName": "alex@contoso.test"})["id"])
    graph.fault(service="graph", path_contains=REQUESTS_PATH, method="POST", status=400,
                code="RoleAssignmentRequestPolicyValidationFailed", count=None)  # fmt: skip
    breaker = CircuitBreaker(service, settings(2),
                             table=f"Breaker{uuid.uuid4().hex[:8]}")  # fmt: skip

    async def work() -> list[str]:
        pim = Pim(EntraDirectory(graph_client(graph.graph_base_url, ManagedIdentityCredential())), breaker)
        return [(await pim.assign(alex, GLOBAL_ADMIN, timedelta(hours=1), "x", "INC1", "ServiceNow")).verdict
                for _ in range(3)]  # fmt: skip

    assert asyncio.run(work()) == ["policy"] * 3
    assert breaker.state(PIM_SERVICE) == ("closed", 0, None)


def test_the_outage_notice_goes_to_iam_and_the_security_chain(service) -> None:
    ledger = AuditLedger(service, policy_version="sha256:" + "a" * 64, policy_file_hash="sha256:" + "b" * 64)
    connector = FakeConnector()
    before = len(ledger.read(security_chain(datetime.now(UTC))))
    announce = outage_notice(connector, ledger, "19:iam@thread.tacv2")  # type: ignore[arg-type]

    async def main() -> None:
        await announce("Circuit breaker for Graph opened")

    asyncio.run(main())
    assert connector.posts == [("19:iam@thread.tacv2", "Circuit breaker for Graph opened")]
    rows = ledger.read(security_chain(datetime.now(UTC)))
    assert len(rows) == before + 1
    row = rows[-1]
    assert (row.kind, row.fields["Outcome"]) == ("breaker.opened", "recorded")
    assert row.fields["ActorId"] == "system"
    assert json.loads(row.fields["Detail"]) == {"notice": "Circuit breaker for Graph opened"}
    assert ledger.verify(security_chain(datetime.now(UTC))).ok
