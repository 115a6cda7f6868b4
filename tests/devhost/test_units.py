"""Pure unit tests of devhost building blocks: route templates, timer schedules, action flattening.

No processes, no storage: these run in milliseconds and pin the behaviour the conformance suite
relies on (e.g. ``0 */5 * * * *`` means every five minutes, seconds first, never every second).
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.devhost.history import ActionType, flatten_actions
from local.devhost.routing import RouteTemplate, RouteTemplateError
from local.devhost.schedule import Schedule, ScheduleError

# ---------------------------------------------------------------------------------- RouteTemplate


def test_route_literal_matches_only_itself() -> None:
    route = RouteTemplate("admin-only")
    assert route.match("/admin-only") == {}
    assert route.match("/admin-only/") == {}
    assert route.match("/admin-onl") is None
    assert route.match("/admin-only/x") is None
    assert route.match("/other") is None


def test_route_leading_and_trailing_slashes_in_template_are_ignored() -> None:
    assert RouteTemplate("/instances/").match("/instances") == {}


def test_route_parameters_capture_one_segment_each() -> None:
    route = RouteTemplate("instances/{instanceId}/events/{eventName}")
    assert route.match("/instances/abc-1/events/Go") == {"instanceId": "abc-1", "eventName": "Go"}
    assert route.match("/instances/a/b/events/Go") is None  # a parameter never spans a slash
    assert route.match("/instances//events/Go") is None  # nor is it empty
    assert route.match("/instances/abc/events") is None


def test_route_int_constraint() -> None:
    route = RouteTemplate("items/{itemId:int}")
    assert route.match("/items/42") == {"itemId": "42"}
    assert route.match("/items/-7") == {"itemId": "-7"}
    for bad in ("/items/abc", "/items/4.2", "/items/42x", "/items/"):
        assert route.match(bad) is None, bad


def test_route_guid_constraint() -> None:
    route = RouteTemplate("things/{id:guid}")
    value = str(uuid.uuid4())
    assert route.match(f"/things/{value}") == {"id": value}
    assert route.match(f"/things/{value.upper()}") == {"id": value.upper()}
    assert route.match(f"/things/{uuid.uuid4().hex}") is not None  # 32 digits, no hyphens
    assert route.match("/things/not-a-guid") is None
    assert route.match(f"/things/{value}0") is None


def test_route_optional_last_segment() -> None:
    route = RouteTemplate("items/{itemId:int}/{label?}")
    assert route.match("/items/1") == {"itemId": "1"}
    assert route.match("/items/1/") == {"itemId": "1"}
    assert route.match("/items/1/blue") == {"itemId": "1", "label": "blue"}
    assert route.match("/items/1/blue/more") is None
    assert route.match("/items/x/blue") is None


def test_route_catch_all_takes_the_rest_of_the_path() -> None:
    route = RouteTemplate("files/{*path}")
    assert route.match("/files/a/b/c.txt") == {"path": "a/b/c.txt"}
    assert route.match("/files/one") == {"path": "one"}
    assert route.match("/files") == {}  # a catch-all may be empty
    assert route.match("/other/a") is None


def test_route_trailing_slash_in_path_is_accepted() -> None:
    route = RouteTemplate("instances/{instanceId}")
    assert route.match("/instances/abc/") == {"instanceId": "abc"}
    assert route.match("/instances/abc//") == {"instanceId": "abc"}


@pytest.mark.parametrize("template", ["items/{id:float2}", "items/x{id}", "items/{id", "items/{1id}"])
def test_route_unsupported_templates_are_refused(template: str) -> None:
    with pytest.raises(RouteTemplateError):
        RouteTemplate(template)


def test_route_precedence_literals_before_parameters_catch_all_last() -> None:
    templates = ["{*rest}", "items/{id}", "items/{id}/details", "items/special", "instances"]
    ordered = sorted((RouteTemplate(t) for t in templates), key=lambda r: r.precedence)

    def first_match(path: str) -> str | None:
        return next((r.template for r in ordered if r.match(path) is not None), None)

    assert first_match("/items/special") == "items/special"
    assert first_match("/items/5") == "items/{id}"
    assert first_match("/items/5/details") == "items/{id}/details"
    assert first_match("/instances") == "instances"
    assert first_match("/anything/else") == "{*rest}"
    assert ordered[-1].template == "{*rest}"
    # Registration order does not matter.
    assert [r.template for r in sorted(reversed(ordered), key=lambda r: r.precedence)] == [
        r.template for r in ordered
    ]


# ---------------------------------------------------------------------------------- Schedule

T0 = datetime(2024, 3, 5, 12, 3, 17, 250_000, tzinfo=UTC)


def test_schedule_every_five_minutes_is_seconds_first() -> None:
    runs = Schedule("0 */5 * * * *").upcoming(T0, 4)
    assert runs[0] == datetime(2024, 3, 5, 12, 5, 0, tzinfo=UTC)
    for earlier, later in itertools.pairwise(runs):
        assert later - earlier == timedelta(minutes=5)
    assert all(r.second == 0 and r.microsecond == 0 and r.minute % 5 == 0 for r in runs)


def test_schedule_next_run_is_strictly_after_the_moment() -> None:
    boundary = datetime(2024, 3, 5, 12, 5, 0, tzinfo=UTC)
    assert Schedule("0 */5 * * * *").next_after(boundary) == boundary + timedelta(minutes=5)


def test_schedule_seconds_field_comes_first() -> None:
    # Seconds-last parsing would read "30" as the minute and fire 60 times at 12:30.
    runs = Schedule("30 * * * * *").upcoming(T0, 3)
    assert [r.second for r in runs] == [30, 30, 30]
    assert runs[1] - runs[0] == timedelta(minutes=1)
    assert Schedule("*/10 * * * * *").upcoming(T0, 2) == [
        datetime(2024, 3, 5, 12, 3, 20, tzinfo=UTC),
        datetime(2024, 3, 5, 12, 3, 30, tzinfo=UTC),
    ]


def test_schedule_day_of_week_and_yearly() -> None:
    # 2024-03-05 is a Tuesday: the next Monday 09:00 is 2024-03-11.
    assert Schedule("0 0 9 * * 1").next_after(T0) == datetime(2024, 3, 11, 9, 0, 0, tzinfo=UTC)
    assert Schedule("0 0 0 1 1 *").next_after(T0) == datetime(2025, 1, 1, tzinfo=UTC)


def test_schedule_five_field_cron_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ScheduleError, match="six fields"):
        Schedule("*/5 * * * *")


@pytest.mark.parametrize("expression", ["0 */5 * * * * *", "every five minutes", ""])
def test_schedule_wrong_number_of_fields_is_refused(expression: str) -> None:
    with pytest.raises(ScheduleError):
        Schedule(expression)


@pytest.mark.parametrize("expression", ["61 * * * * *", "0 */5 25 * * *", "0 0 0 32 * *", "a b c d e f"])
def test_schedule_invalid_expression_is_refused(expression: str) -> None:
    with pytest.raises(ScheduleError, match="not a valid NCRONTAB"):
        Schedule(expression)


def test_schedule_timespan_interval() -> None:
    schedule = Schedule("00:00:30")
    assert schedule.next_after(T0) == T0 + timedelta(seconds=30)
    runs = schedule.upcoming(T0, 3)
    assert [r - T0 for r in runs] == [timedelta(seconds=30), timedelta(seconds=60), timedelta(seconds=90)]
    assert Schedule("1.02:00:00").next_after(T0) == T0 + timedelta(days=1, hours=2)


def test_schedule_zero_timespan_is_refused() -> None:
    with pytest.raises(ScheduleError, match="positive"):
        Schedule("00:00:00")


def test_schedule_errors_are_value_errors() -> None:
    # __main__ reports ScheduleError/ValueError as a configuration error (exit 2), not a traceback.
    assert issubclass(ScheduleError, ValueError)


# ---------------------------------------------------------------------------------- flatten_actions


def _activity(name: str) -> dict[str, object]:
    return {"actionType": int(ActionType.CALL_ACTIVITY), "functionName": name, "input": None}


def _timer(tag: str) -> dict[str, object]:
    return {"actionType": int(ActionType.CREATE_TIMER), "fireAt": tag, "isCanceled": False}


def _event(name: str) -> dict[str, object]:
    return {"actionType": int(ActionType.WAIT_FOR_EXTERNAL_EVENT), "functionName": name, "reason": "Event"}


def _names(actions: list[Any]) -> list[object]:
    return [a.get("functionName") or a.get("fireAt") for a in flatten_actions(actions)]


def test_flatten_v1_nested_lists_depth_first() -> None:
    actions = [[_activity("a")], [_activity("b"), _activity("c")], [], [[_timer("t1")], _activity("d")]]
    assert _names(actions) == ["a", "b", "c", "t1", "d"]


def test_flatten_v2_compound_actions_depth_first() -> None:
    actions = [
        _activity("a"),
        {
            "actionType": int(ActionType.WHEN_ALL),
            "compoundActions": [
                _activity("b"),
                {"actionType": int(ActionType.WHEN_ANY), "compoundActions": [_event("E"), _timer("t1")]},
                _activity("c"),
            ],
        },
        {"actionType": int(ActionType.WHEN_ANY), "compoundActions": []},
        _timer("t2"),
    ]
    assert _names(actions) == ["a", "b", "E", "t1", "c", "t2"]
    # Compound actions themselves are never yielded.
    kinds = {a["actionType"] for a in flatten_actions(actions)}
    assert not kinds & {ActionType.WHEN_ANY, ActionType.WHEN_ALL}


def test_flatten_mixed_lists_and_compounds() -> None:
    actions = [[{"actionType": int(ActionType.WHEN_ANY), "compoundActions": [_activity("a"), _timer("t")]}]]
    assert _names(actions) == ["a", "t"]


def test_flatten_keeps_action_objects_unchanged() -> None:
    action = _activity("a")
    assert next(iter(flatten_actions([[action]]))) is action


# ---------------------------------------------------------------------------------- route case


def test_int_constraint_is_an_int32_like_the_host() -> None:
    route = RouteTemplate("items/{id:int}")
    assert route.match("/items/2147483647") == {"id": "2147483647"}
    assert route.match("/items/2147483648") is None


def test_route_literals_match_case_insensitively() -> None:
    # ASP.NET Core route templates (used by the Functions host) compare literal segments ignoring case.
    route = RouteTemplate("items/{itemId:int}/details")
    assert route.match("/Items/5/DETAILS") == {"itemId": "5"}, "literal segments must ignore case"
    assert RouteTemplate("things/{id:guid}").match(f"/things/{str(uuid.uuid4()).upper()}") is not None
