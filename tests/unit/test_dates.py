"""The series' calendar: inferred frequencies and the dates that continue it."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.dates import date_format, format_dates, infer_frequency, next_dates, parse_frequency


def days(*dates: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(list(dates))


def test_month_starts_stay_month_starts() -> None:
    """The median gap (31 days) used to drift: 2020-01-01, 2020-02-01, then 2020-03-03."""
    index = days("2019-11-01", "2019-12-01", "2020-01-01", "2020-02-01")
    assert infer_frequency(index) == "MS"
    assert list(format_dates(next_dates(index, 3))) == ["2020-03-01", "2020-04-01", "2020-05-01"]


def test_month_ends_stay_month_ends_through_february() -> None:
    index = days("2023-10-31", "2023-11-30", "2023-12-31", "2024-01-31")
    assert infer_frequency(index) == "ME"
    assert list(format_dates(next_dates(index, 3))) == ["2024-02-29", "2024-03-31", "2024-04-30"]


def test_monthly_on_another_day_keeps_that_day() -> None:
    index = days("2023-11-15", "2023-12-15", "2024-01-15", "2024-02-15")
    assert infer_frequency(index) == "1months"
    assert list(format_dates(next_dates(index, 2))) == ["2024-03-15", "2024-04-15"]


def test_business_days_skip_the_weekend_even_with_holidays_in_the_data() -> None:
    index = pd.bdate_range("2024-11-18", "2024-11-29").drop(pd.Timestamp("2024-11-28"))  # Thanksgiving
    assert infer_frequency(index) == "B"
    assert list(format_dates(next_dates(index, 3))) == ["2024-12-02", "2024-12-03", "2024-12-04"]


def test_weekly_on_sundays() -> None:
    index = pd.date_range("2024-01-07", periods=5, freq="W-SUN")
    assert infer_frequency(index) == "W-SUN"
    assert list(format_dates(next_dates(index, 2))) == ["2024-02-11", "2024-02-18"]
    # a missing week leaves pandas without an answer; the rule still anchors on Sunday
    gappy = index.delete(2)
    assert infer_frequency(gappy) == "W-SUN"
    assert next_dates(gappy, 1)[0].day_name() == "Sunday"


def test_hourly_across_a_clock_change_counts_plain_hours() -> None:
    """Naive timestamps around the 2024-03-31 European change: every hour exists once."""
    index = pd.date_range("2024-03-30 22:00", "2024-03-31 01:00", freq="h")
    assert infer_frequency(index) == "h"
    out = list(format_dates(next_dates(index, 3)))
    assert out == ["2024-03-31 02:00:00", "2024-03-31 03:00:00", "2024-03-31 04:00:00"]


def test_minutes_keep_their_times() -> None:
    index = pd.date_range("2024-05-01 23:45", periods=4, freq="5min")
    assert infer_frequency(index) == "5min"
    assert list(format_dates(next_dates(index, 2))) == ["2024-05-02 00:05:00", "2024-05-02 00:10:00"]


def test_minutes_with_a_gap_fall_back_to_the_typical_step() -> None:
    index = pd.DatetimeIndex(["2024-05-01 10:00", "2024-05-01 10:01", "2024-05-01 10:02", "2024-05-01 10:05",
                              "2024-05-01 10:06"])
    assert infer_frequency(index) == "min"
    assert next_dates(index, 1)[0] == pd.Timestamp("2024-05-01 10:07")


def test_a_given_frequency_wins_over_the_rows() -> None:
    """Five weekdays alone look like business days; a daily model's calendar continues on Saturday."""
    index = pd.bdate_range("2024-06-03", periods=5)
    assert next_dates(index, 1)[0] == pd.Timestamp("2024-06-10")
    assert next_dates(index, 1, frequency="D")[0] == pd.Timestamp("2024-06-08")


def test_no_rhythm_steps_by_the_median_gap_and_one_date_by_a_day() -> None:
    index = days("2024-01-01", "2024-01-04", "2024-01-09", "2024-01-10")
    assert next_dates(index, 1)[0] > index[-1]
    assert list(next_dates(days("2024-01-01"), 2)) == [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03")]
    assert len(next_dates(index, 0)) == 0


@pytest.mark.parametrize(("text", "after"), [
    ("B", "2024-02-01"), ("MS", "2024-02-01"), ("ME", "2024-02-29"), ("W-SUN", "2024-02-04"),
    ("h", "2024-01-31 01:00"), ("15min", "2024-01-31 00:15"), ("D", "2024-02-01"), ("3months", "2024-04-30"),
    ("QS-JAN", "2024-04-01"),
])
def test_stored_frequencies_parse_to_the_step_they_name(text: str, after: str) -> None:
    assert pd.Timestamp("2024-01-31") + parse_frequency(text) == pd.Timestamp(after)


def test_date_format_keeps_times_only_when_some_are_not_midnight() -> None:
    assert date_format(days("2024-01-01", "2024-01-02")) == "%Y-%m-%d"
    assert date_format(pd.DatetimeIndex(["2024-01-01", "2024-01-01 00:01"])) == "%Y-%m-%d %H:%M:%S"


def test_a_missing_month_is_a_gap() -> None:
    from pipeline.dates import missing_dates

    months = pd.date_range("2020-01-01", periods=36, freq="MS")
    assert list(missing_dates(months.delete(10))) == [pd.Timestamp("2020-11-01")]
    assert list(missing_dates(months)) == []
    hours = pd.date_range("2024-01-01", periods=24 * 30, freq="h")
    assert list(missing_dates(hours.delete([100, 101]))) == list(hours[[100, 101]])


def test_business_days_with_holidays_and_session_calendars_have_no_gaps() -> None:
    """Market holidays, trading hours and six-day weeks leave dates out by design: no regular calendar."""
    from pipeline.dates import missing_dates

    days_ = pd.bdate_range("2024-11-01", "2025-01-31").drop(pd.to_datetime(["2024-11-28", "2024-12-25", "2025-01-01"]))
    assert infer_frequency(days_) == "B" and list(missing_dates(days_)) == []
    hours = pd.date_range("2024-01-01", periods=24 * 60, freq="h")
    trading = hours[(hours.hour >= 9) & (hours.hour < 17) & (hours.day_of_week < 5)]
    assert list(missing_dates(trading.delete(50))) == []  # a session calendar: not regular
    fx = hours[hours.day_of_week < 5]  # 24 hours, five days a week, inferred as hourly
    assert list(missing_dates(fx, "h")) == []
    six_days = pd.date_range("2024-01-01", periods=90, freq="D")
    assert list(missing_dates(six_days[six_days.day_of_week != 6])) == []
    assert list(missing_dates(six_days.delete(40))) == [six_days[40]]  # a day missing from a seven-day week


def test_the_sample_has_no_gap() -> None:
    from pipeline.data.reading import load_prices
    from pipeline.dates import missing_dates

    dates = pd.DatetimeIndex(pd.to_datetime(load_prices("data/SBUX.csv").frame["Date"]))
    assert infer_frequency(dates) == "B" and list(missing_dates(dates)) == []


def test_calendars_step_alike_or_not() -> None:
    from pipeline.dates import same_rhythm

    assert same_rhythm("B", "D") and same_rhythm("MS", "ME") and same_rhythm("1months", "MS")
    assert not same_rhythm("h", "D") and not same_rhythm("MS", "QS") and not same_rhythm("15min", "30min")


def test_an_evenly_spaced_series_names_its_step() -> None:
    from pipeline.dates import rhythm

    assert rhythm(pd.date_range("2024-01-01", periods=10, freq="D")) == "D"
    assert rhythm(pd.date_range("2024-01-01", periods=10, freq="7D")) == "7D"
    assert rhythm(pd.date_range("2024-01-01", periods=10, freq="h")) == "h"
    assert rhythm(pd.date_range("2024-01-01", periods=10, freq="MS")) == "MS"
