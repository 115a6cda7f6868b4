"""ISO 8601 durations of fixed length: ``PnDTnHnMnS``.

Only days, hours, minutes and seconds are accepted: years and months have no fixed length (a policy
timing must mean the same thing on every day of the year), and weeks are refused too so that every
duration has exactly one canonical text.
Seconds may carry a fraction down to microseconds, the resolution of :class:`datetime.timedelta`.

>>> parse_duration("PT1H30M")
datetime.timedelta(seconds=5400)
>>> format_duration(parse_duration("P0DT90M"))
'PT1H30M'
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal

__all__ = ["DurationError", "format_duration", "parse_duration"]

EXPECTED_FORM = (
    "an ISO 8601 duration of the form PnDTnHnMnS, e.g. 'PT2H', 'PT10M', 'PT5S', 'P1DT2H', 'PT0.5S'"
)

_DURATION_RE = re.compile(
    r"""
    P
    (?:(?P<days>\d+)D)?
    (?:T
        (?:(?P<hours>\d+)H)?
        (?:(?P<minutes>\d+)M)?
        (?:(?P<seconds>\d+(?:\.\d{1,6})?)S)?
    )?
    """,
    re.VERBOSE | re.ASCII,
)
# Calendar units that some ISO 8601 parsers accept; named separately so the message says why they fail.
_CALENDAR_UNIT_RE = re.compile(r"^P(?:[^T]*[YMW])")


class DurationError(ValueError):
    """A duration text that is not a fixed-length ISO 8601 duration.

    ``str(error)`` names the text and the expected form; ``reason`` is the same without the text, for
    callers (such as the policy loader) that already show the value next to the message.
    """

    def __init__(self, text: object, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"invalid duration {text!r}: {reason}")


def parse_duration(text: str) -> datetime.timedelta:
    """Parse ``PnDTnHnMnS`` (each part optional, at least one present) into a timedelta.

    Raises :class:`DurationError` (a :class:`ValueError`) for anything else, including the empty
    string, ``"P"``, ``"PT"``, negative durations and calendar units (years, months, weeks).
    """
    if not isinstance(text, str):
        raise DurationError(text, f"must be a string: expected {EXPECTED_FORM}")
    match = _DURATION_RE.fullmatch(text)
    if match is None or not any(match.groupdict().values()) or text.endswith("T"):
        if text.startswith("-"):
            reason = f"negative durations are not allowed: expected {EXPECTED_FORM}"
        elif _CALENDAR_UNIT_RE.match(text):
            reason = (
                "years, months and weeks are not accepted (years and months have no fixed length; "
                f"use days): expected {EXPECTED_FORM}"
            )
        elif re.fullmatch(r".*\d\.\d{7,}S", text, re.ASCII):
            reason = f"seconds have at most 6 decimal places (microseconds): expected {EXPECTED_FORM}"
        else:
            reason = f"expected {EXPECTED_FORM}"
        raise DurationError(text, reason)
    parts = match.groupdict()
    seconds = Decimal(parts["seconds"] or "0")
    whole_seconds = int(seconds)
    microseconds = int((seconds - whole_seconds) * 1_000_000)
    try:
        return datetime.timedelta(
            days=int(parts["days"] or 0),
            hours=int(parts["hours"] or 0),
            minutes=int(parts["minutes"] or 0),
            seconds=whole_seconds,
            microseconds=microseconds,
        )
    except OverflowError:
        raise DurationError(text, "too long to represent (at most 999999999 days)") from None


def format_duration(value: datetime.timedelta) -> str:
    """The canonical text of a non-negative timedelta: ``PT1H30M``, ``P1DT2H``, ``PT0.5S``, ``PT0S``.

    ``parse_duration(format_duration(td)) == td`` for every non-negative ``td``.
    """
    if value < datetime.timedelta(0):
        raise ValueError(f"cannot format a negative duration ({value!r}) as an ISO 8601 duration")
    days = value.days
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "P"
    if days:
        text += f"{days}D"
    time_part = ""
    if hours:
        time_part += f"{hours}H"
    if minutes:
        time_part += f"{minutes}M"
    if seconds or value.microseconds:
        if value.microseconds:
            fraction = f"{value.microseconds:06d}".rstrip("0")
            time_part += f"{seconds}.{fraction}S"
        else:
            time_part += f"{seconds}S"
    if time_part:
        text += "T" + time_part
    if text == "P":
        return "PT0S"
    return text
