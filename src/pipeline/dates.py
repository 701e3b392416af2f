"""The series' calendar: its frequency inferred from the dates, future dates that follow it, date text.

A forecast's dates must continue the data's own calendar: month starts stay month starts,
business days skip weekends, hourly data keeps its hours. Adding the median gap drifts
(2020-01-01, 2020-02-01, 2020-03-03) and dropping the time makes minute forecasts all land on
one day. The frequency is a pandas offset alias ("B", "MS", "ME", "W-SUN", "h", "15min",
"QS-JAN", ...) or "<n>months" for monthly data on another day of the month; a trained model
stores the one of its training data, so serving continues the training calendar.
"""

from __future__ import annotations

import re
import warnings

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
