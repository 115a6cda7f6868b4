"""ISO 8601 fixed-length durations (PnDTnHnMnS)."""

from datetime import timedelta

import pytest

from shared.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT2H", timedelta(hours=2)),
        ("PT10M", timedelta(minutes=10)),
        ("PT5S", timedelta(seconds=5)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("P2D", timedelta(days=2)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT1H30M", timedelta(minutes=90)),
        ("PT90M", timedelta(minutes=90)),
        ("PT1.000001S", timedelta(seconds=1, microseconds=1)),
        ("PT0S", timedelta(0)),
    ],
)
def test_parses_days_hours_minutes_and_seconds(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "P", "PT", "P1DT", "-PT1H", "P1Y", "P1M", "P1W", "pt1h", " PT1H", "PT1H ", "1H", "PT1.5H", "PT1,5S"],
)
def test_rejects_text_that_is_not_a_fixed_length_duration(text):
    with pytest.raises(ValueError, match="PnDTnHnMnS"):
        parse_duration(text)


def test_error_names_the_bad_text_and_the_expected_form():
    with pytest.raises(DurationError) as caught:
        parse_duration("PT2X")
    message = str(caught.value)
    assert "'PT2X'" in message
    assert "PnDTnHnMnS" in message
    assert "PT2X" not in caught.value.reason  # the reason alone, for callers that show the value themselves


def test_error_says_why_calendar_units_and_negatives_are_refused():
    with pytest.raises(ValueError, match="no fixed length"):
        parse_duration("P1M")
    with pytest.raises(ValueError, match="negative"):
        parse_duration("-PT5M")


def test_refuses_fractions_finer_than_microseconds():
    with pytest.raises(ValueError, match="6 decimal places"):
        parse_duration("PT0.0000001S")


def test_refuses_non_strings():
    with pytest.raises(ValueError, match="must be a string"):
        parse_duration(7200)  # type: ignore[arg-type]


def test_refuses_durations_too_long_for_a_timedelta():
    with pytest.raises(ValueError, match="too long"):
        parse_duration("PT99999999999999999999H")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "PT0S"),
        (timedelta(minutes=90), "PT1H30M"),
        (timedelta(days=1, hours=2), "P1DT2H"),
        (timedelta(hours=26), "P1DT2H"),
        (timedelta(milliseconds=500), "PT0.5S"),
        (timedelta(seconds=7, microseconds=250), "PT7.00025S"),
        (timedelta(minutes=7, seconds=30), "PT7M30S"),
    ],
)
def test_formats_the_canonical_text(value, text):
    assert format_duration(value) == text


@pytest.mark.parametrize("text", ["PT90M", "P0DT3600S", "PT0.500S", "P1DT24H"])
def test_format_of_a_parsed_duration_parses_back_to_the_same_value(text):
    value = parse_duration(text)
    assert parse_duration(format_duration(value)) == value


def test_format_refuses_negative_durations():
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))
