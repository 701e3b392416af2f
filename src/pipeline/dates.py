"""The series' calendar: its frequency inferred from the dates, future dates that follow it, date text.

A forecast's dates must continue the data's own calendar: month starts stay month starts,
business days skip weekends, hourly data keeps its hours. Adding the median gap drifts
(2020-01-01, 2020-02-01, 2020-03-03) and dropping the time makes minute forecasts all land on
one day. The frequency is a pandas offset alias ("B", "MS", "ME", "W-SUN", "h", "15min",
"QS-JAN", ...) or "<n>months" for monthly data on another day of the month; a trained model
stores the one of its training data, so serving continues the training calendar.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections import Counter
from collections.abc import Mapping

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

TAIL = 60  # dates looked at to infer the frequency: the recent rhythm, at a fixed cost
DATE_ONLY = "%Y-%m-%d"
DATE_TIME = "%Y-%m-%d %H:%M:%S"
_MONTHS = re.compile(r"^(\d+)\s*months?$")
_DAY = pd.Timedelta(days=1)


def infer_frequency(index: pd.DatetimeIndex) -> str | None:
    """The frequency of the latest dates, or None when there are too few or no rhythm shows.

    pandas' `infer_freq` on the tail first; when it finds none (a missing day, a holiday), a
    robust rule on the typical gap: business days when only weekdays come at daily spacing,
    month starts or ends, weeks anchored on the weekday seen, else the typical gap itself
    (hours, minutes, days).
    """
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
        return None
    tail = index[-TAIL:]
    if len(tail) >= 3:
        with warnings.catch_warnings():  # pandas 3 announces that it will return an offset
            warnings.filterwarnings("ignore", message=".*infer_freq.*")
            found = pd.infer_freq(tail)
        if found is not None:
            found = to_offset(found).freqstr
            # up to five consecutive weekdays read as "D" to pandas; without a weekend seen, take business days
            return "B" if found == "D" and (tail.day_of_week < 5).all() else found
    return _rule_frequency(tail)


def _rule_frequency(tail: pd.DatetimeIndex) -> str | None:
    gaps = np.diff(tail.to_numpy())
    if (gaps <= np.timedelta64(0)).any():
        return None
    gap = pd.Timedelta(np.median(gaps))
    midnight = bool((tail == tail.normalize()).all())
    if midnight and gap == _DAY and (tail.day_of_week < 5).all():
        return "B"
    if midnight and pd.Timedelta(days=28) <= gap <= pd.Timedelta(days=31):
        if (tail.day == 1).all():
            return "MS"
        if tail.is_month_end.all():
            return "ME"
        if (tail.day == tail.day[-1]).all():
            return "1months"
    if midnight and gap == pd.Timedelta(days=7) and (tail.day_of_week == tail.day_of_week[-1]).all():
        return to_offset(pd.offsets.Week(weekday=int(tail.day_of_week[-1]))).freqstr
    return to_offset(gap).freqstr


def parse_frequency(frequency: str) -> pd.DateOffset:
    """The offset a stored frequency names ("B", "MS", "W-SUN", "15min", "1months", ...)."""
    months = _MONTHS.match(frequency.strip())
    if months:
        return pd.DateOffset(months=int(months.group(1)))
    return to_offset(frequency)


def next_dates(index: pd.DatetimeIndex, count: int, frequency: str | None = None) -> pd.DatetimeIndex:
    """`count` dates after the last one of `index`, on the series' calendar.

    `frequency` (the training data's, when a model knows it) wins; otherwise the frequency of
    `index` itself; a series with no rhythm at all steps by its median gap (one day when it has
    a single date).
    """
    if count <= 0 or len(index) == 0:
        return pd.DatetimeIndex([], dtype=index.dtype)
    last = index[-1]
    frequency = frequency or infer_frequency(index)
    if frequency is None:
        gap = pd.Timedelta(np.median(np.diff(index.to_numpy()))) if len(index) > 1 else _DAY
        return pd.DatetimeIndex([last + gap * k for k in range(1, count + 1)])
    offset = parse_frequency(frequency)
    return pd.DatetimeIndex([last + offset * k for k in range(1, count + 1)])


def date_format(index: pd.DatetimeIndex) -> str:
    """"%Y-%m-%d" when every timestamp is a midnight, else with the time: sub-daily data keeps its times."""
    return DATE_ONLY if len(index) == 0 or (index == index.normalize()).all() else DATE_TIME


def format_dates(index: pd.DatetimeIndex) -> pd.Index:
    """Dates as text: plain dates for daily (and longer) data, date and time otherwise."""
    return index.strftime(date_format(index))


# ---------------------------------------------------------------- rhythm and gaps
RHYTHM_RATIO = 1.5  # calendars whose typical steps differ by less than this step alike (B and D, MS and ME)
_STEPS_SEEN = 25  # steps of a calendar looked at for its typical step


@functools.lru_cache(maxsize=256)  # a table of many series names few calendars
def typical_step(frequency: str) -> pd.Timedelta:
    """The usual step of a calendar: one day for `B` and `D`, 31 days for `MS`, `ME` and `1months`, 7 for `W-SUN`."""
    steps = pd.date_range("2001-01-01", periods=_STEPS_SEEN, freq=parse_frequency(frequency))
    return pd.Timedelta(np.median(np.diff(steps.to_numpy())))


def same_rhythm(first: str, second: str) -> bool:
    """Whether two calendars step alike: hourly and daily data do not; business days and days do."""
    a, b = typical_step(first), typical_step(second)
    return max(a, b) / min(a, b) < RHYTHM_RATIO


def is_business_calendar(frequency: str) -> bool:
    """Business days, hours, month or quarter ends: calendars with holidays, where a missing date is no gap."""
    return type(parse_frequency(frequency)).__name__.startswith(("B", "CustomBusiness"))


def missing_dates(index: pd.DatetimeIndex, frequency: str | None = None) -> pd.DatetimeIndex:
    """The periods a regular calendar lacks between the series' first and last date; empty for any other calendar.

    Regular: `frequency` (else the one inferred) is not a business calendar (holidays are not
    gaps: the sample's market days), every date lies on its grid from the first date, and for
    daily and shorter steps every moment of the week the grid repeats is used at least once (a
    market's trading hours or a six-day week leave the rest out by design: a session calendar,
    not a regular one).
    """
    empty = pd.DatetimeIndex([], dtype=index.dtype)
    if len(index) < 3:
        return empty
    frequency = frequency or infer_frequency(index)
    if frequency is None or is_business_calendar(frequency):
        return empty
    offset = parse_frequency(frequency)
    tick = isinstance(offset, pd.offsets.Tick)
    if tick and (np.diff(_nanoseconds(index)) == offset.nanos).all():
        return empty  # the usual case: every step one period
    grid = pd.date_range(index[0], index[-1], freq=offset)
    if not index.isin(grid).all():
        return empty  # dates off the calendar: not a regular one
    if tick and offset.nanos <= _DAY.value:
        slots = pd.Series(_week_slot(grid)).value_counts()
        unused = slots.index[(slots >= 2) & ~slots.index.isin(_week_slot(index))]
        if len(unused):
            return empty  # moments of the week never used: a session calendar
    return grid.difference(index)


def _week_slot(index: pd.DatetimeIndex) -> np.ndarray:
    """Each date's moment of the week: its weekday and time of day, in nanoseconds."""
    return index.day_of_week.to_numpy(dtype=np.int64) * _DAY.value + _nanoseconds(index) % _DAY.value


def _nanoseconds(index: pd.DatetimeIndex) -> np.ndarray:
    """The dates as int64 nanoseconds whatever their unit (pandas 3 makes microseconds too)."""
    return index.as_unit("ns").asi8


def fill_missing(frame: pd.DataFrame, missing: pd.DatetimeIndex, method: str) -> pd.DataFrame:
    """`frame` (date-indexed, no empty cell) with rows for the `missing` dates: `forward` repeats the last
    row, `interpolate` draws straight lines in time, `zero` writes 0."""
    full = frame.reindex(frame.index.union(missing.astype(frame.index.dtype)))
    full.index.name = frame.index.name  # the date column's name: the frame goes back to text rows by it
    if method == "forward":
        return full.ffill()
    if method == "interpolate":
        return full.interpolate(method="time")
    if method == "zero":
        return full.fillna(0.0)
    raise ValueError(f"unknown gap filling {method!r}")


def calendar_mismatch(index: pd.DatetimeIndex, expected: str | None) -> str | None:
    """The calendar `index` follows when it steps unlike `expected` (a model's training calendar); else None."""
    found = infer_frequency(index) if expected else None
    return None if found is None or expected is None or same_rhythm(found, expected) else found


def evenly_spaced(index: pd.DatetimeIndex) -> bool:
    """Whether every step between the dates is the same (a regular calendar with no gap; hours, days...)."""
    steps = np.diff(_nanoseconds(index))
    return len(steps) > 0 and bool((steps == steps[0]).all()) and steps[0] > 0


def rhythm(index: pd.DatetimeIndex) -> str | None:
    """The calendar a series steps on: its one step when evenly spaced (cheap), else `infer_frequency`."""
    if not evenly_spaced(index):
        return infer_frequency(index)
    stamps = _nanoseconds(index)
    step = pd.Timedelta(int(stamps[1] - stamps[0]), "ns")
    if step % _DAY == pd.Timedelta(0):  # "D", "7D": not pandas' "24h", "168h"
        return "D" if step == _DAY else f"{step.days}D"
    return to_offset(step).freqstr


def odd_calendars(indexes: Mapping[str, pd.DatetimeIndex], expected: str | None = None) -> tuple[str | None, dict[str, str]]:
    """The calendar of a table of series (`expected`, else the one most series follow) and the series whose
    own calendar steps unlike it (id -> its frequency). Series too short to show a rhythm are not judged."""
    own = {sid: rhythm(index) for sid, index in indexes.items()}
    known = [f for f in own.values() if f is not None]
    if not known:
        return expected, {}
    usual = expected or Counter(known).most_common(1)[0][0]
    return usual, {sid: f for sid, f in own.items() if f is not None and not same_rhythm(f, usual)}
