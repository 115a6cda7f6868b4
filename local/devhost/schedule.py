"""Timer triggers on NCRONTAB schedules (six fields, seconds first), with ``runOnStartup`` honoured.

A schedule may name app settings (``%SWEEP_SCHEDULE%``): they are resolved from the environment (local
settings Values included), as the host's name resolver does. A setting that does not exist puts that one
function in error, as on the host ("'%X%' does not resolve to a value"): it is logged and never scheduled,
and every other function runs. Any timer function can also be run on demand (:meth:`TimerTriggers.run_now`,
the admin endpoint ``POST /admin/functions/{name}``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from azure.functions.timer import TimerRequest
from croniter import croniter

from . import history as h
from . import logs
from .catalog import FunctionSpec, invoke
from .config import HostConfig

_TIMESPAN = re.compile(r"^(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})$")
_APP_SETTING = re.compile(r"%([^%]+)%")


class ScheduleError(ValueError):
    pass


class UnresolvedSettingError(ScheduleError):
    pass


def resolve_app_settings(value: str, env: Mapping[str, str]) -> str:
    """Replace each ``%NAME%`` with the app setting ``NAME`` (UnresolvedSettingError if it is not set)."""

    def setting(match: re.Match[str]) -> str:
        found = env.get(match[1])
        if found is None or not found.strip():
            raise UnresolvedSettingError(f"'{match[0]}' does not resolve to a value")
        return found

    return _APP_SETTING.sub(setting, value)


class Schedule:
    """An NCRONTAB expression (``0 */5 * * * *``) or a TimeSpan interval (``00:05:00``)."""

    def __init__(self, expression: str) -> None:
        self.expression = expression.strip()
        self._interval: timedelta | None = None
        span = _TIMESPAN.match(self.expression)
        if span:
            self._interval = timedelta(
                days=int(span["d"] or 0), hours=int(span["h"]), minutes=int(span["m"]), seconds=int(span["s"])
            )
            if self._interval <= timedelta(0):
                raise ScheduleError(f"timer interval {expression!r} must be positive")
            return
        if len(self.expression.split()) != 6:
            raise ScheduleError(
                f"timer schedule {expression!r} must be an NCRONTAB expression with six fields "
                "(second minute hour day month day-of-week) or a TimeSpan like 00:05:00"
            )
        # croniter reads six fields with the seconds LAST unless told otherwise (facts.md): without
        # second_at_beginning, '0 */5 * * * *' would fire every second.
        if not croniter.is_valid(self.expression, second_at_beginning=True):
            raise ScheduleError(f"timer schedule {expression!r} is not a valid NCRONTAB expression")

    def next_after(self, moment: datetime) -> datetime:
        if self._interval is not None:
            return moment + self._interval
        result: datetime = croniter(self.expression, moment, second_at_beginning=True).get_next(datetime)
        return result

    def upcoming(self, moment: datetime, count: int) -> list[datetime]:
        times = []
        for _ in range(count):
            moment = self.next_after(moment)
            times.append(moment)
        return times


class TimerTriggers:
    def __init__(
        self, specs: list[FunctionSpec], config: HostConfig, env: Mapping[str, str] | None = None
    ) -> None:
        self._config = config
        self._entries: list[tuple[FunctionSpec, Schedule]] = []
        # Functions whose schedule names an app setting that does not exist: in error, never run.
        self.errors: dict[str, str] = {}
        for spec in specs:
            try:
                expression = resolve_app_settings(
                    spec.trigger["schedule"], os.environ if env is None else env
                )
            except UnresolvedSettingError as exc:
                self.errors[spec.name] = str(exc)
                logs.event("function.in_error", logging.ERROR, function=spec.name, error=str(exc))
                continue
            self._entries.append((spec, Schedule(expression)))
        self._tasks: list[asyncio.Task[Any]] = []
        self._on_demand: set[asyncio.Task[Any]] = set()
        self.invocations: dict[str, int] = {spec.name: 0 for spec, _ in self._entries}

    def describe(self) -> list[dict[str, Any]]:
        now = h.utcnow()
        scheduled = [
            {
                "name": spec.name,
                "schedule": schedule.expression,
                "runOnStartup": bool(spec.trigger.get("runOnStartup")),
                "invocations": self.invocations[spec.name],
                "nextRuns": [h.format_time(t) for t in schedule.upcoming(now, 3)],
            }
            for spec, schedule in self._entries
        ]
        return scheduled + [{"name": name, "error": error} for name, error in self.errors.items()]

    def run_now(self, name: str) -> bool:
        """Invoke the timer function ``name`` once, now, in the background (as the admin endpoint does);
        False if no scheduled timer function has that name (the host matches it in any case)."""
        for spec, _ in self._entries:
            if spec.name.lower() == name.lower():
                task = asyncio.ensure_future(self._invoke(spec, past_due=False, on_demand=True))
                self._on_demand.add(task)
                task.add_done_callback(self._on_demand.discard)
                return True
        return False

    def start(self) -> None:
        for spec, schedule in self._entries:
            self._tasks.append(asyncio.ensure_future(self._run(spec, schedule)))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._on_demand]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, spec: FunctionSpec, schedule: Schedule) -> None:
        if spec.trigger.get("runOnStartup"):
            await self._invoke(spec, past_due=False)
        due = h.utcnow()
        while True:
            # From the later of the last slot and now: an early wake-up or a clock step back never
            # runs the same slot twice.
            due = schedule.next_after(max(due, h.utcnow()))
            await asyncio.sleep(max(0.0, (due - h.utcnow()).total_seconds()))
            # Late by more than a second means the loop was blocked: tell the function, like the host.
            await self._invoke(spec, past_due=(h.utcnow() - due) > timedelta(seconds=1))

    async def _invoke(self, spec: FunctionSpec, past_due: bool, on_demand: bool = False) -> None:
        self.invocations[spec.name] += 1
        logs.event("timer_trigger.invoked", function=spec.name, pastDue=past_due, onDemand=on_demand)
        try:
            await invoke(spec, {spec.trigger["name"]: TimerRequest(past_due=past_due)}, self._config)
        except Exception:
            logs.event("timer_trigger.failed", logging.ERROR, function=spec.name, exc_info=True)
