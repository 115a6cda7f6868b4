"""Timer triggers on NCRONTAB schedules (six fields, seconds first), with ``runOnStartup`` honoured."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timedelta
from typing import Any

from azure.functions.timer import TimerRequest
from croniter import croniter

from . import history as h
from . import logs
from .catalog import FunctionSpec, invoke
from .config import HostConfig

_TIMESPAN = re.compile(r"^(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})$")


class ScheduleError(ValueError):
    pass


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
    def __init__(self, specs: list[FunctionSpec], config: HostConfig) -> None:
        self._config = config
        self._entries = [(spec, Schedule(spec.trigger["schedule"])) for spec in specs]
        self._tasks: list[asyncio.Task[Any]] = []
        self.invocations: dict[str, int] = {spec.name: 0 for spec in specs}

    def describe(self) -> list[dict[str, Any]]:
        now = h.utcnow()
        return [
            {
                "name": spec.name,
                "schedule": schedule.expression,
                "runOnStartup": bool(spec.trigger.get("runOnStartup")),
                "invocations": self.invocations[spec.name],
                "nextRuns": [h.format_time(t) for t in schedule.upcoming(now, 3)],
            }
            for spec, schedule in self._entries
        ]

    def start(self) -> None:
        for spec, schedule in self._entries:
            self._tasks.append(asyncio.ensure_future(self._run(spec, schedule)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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

    async def _invoke(self, spec: FunctionSpec, past_due: bool) -> None:
        self.invocations[spec.name] += 1
        logs.event("timer_trigger.invoked", function=spec.name, pastDue=past_due)
        try:
            await invoke(spec, {spec.trigger["name"]: TimerRequest(past_due=past_due)}, self._config)
        except Exception:
            logs.event("timer_trigger.failed", logging.ERROR, function=spec.name, exc_info=True)
