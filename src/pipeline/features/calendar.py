"""Calendar inputs known ahead: each date's position in its day, week and year, and a country's public holidays.

A date's calendar is known for the forecast horizon too, so these inputs reach the network for the
steps it predicts (pipeline.features.windows, pipeline.model.network). Positions are encoded as a
sine and a cosine over their cycle, so the end of a cycle sits next to its start (23:00 beside
00:00, December beside January):

- `day`: the time of day (hours, minutes, seconds), for sub-daily data;
- `week`: the day of the week, for daily and sub-daily data;
- `year`: the position in the year (day of the year over the year's days), for daily to quarterly data;
- `holiday` (with a country code, `data.holidays`): 1 on the country's public holidays (the whole day of
  sub-daily data), else 0, from the `holidays` package.

Training computes them from the rows' dates; serving from the input's dates and the future dates that
follow the training calendar (pipeline.dates.next_dates), with the same function.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from pipeline.config.settings import CALENDAR_PARTS, CalendarPart, PipelineConfig, settled

HOLIDAY = "holiday"


def calendar_parts(cfg: PipelineConfig) -> list[str]:
    """The calendar parts a config uses (`data.calendar`; one not resolved against data reads `auto` as none)."""
    chosen = settled(cfg.data.calendar, "none")
    return [] if chosen == "none" else list(chosen)


def calendar_width(cfg: PipelineConfig) -> int:
    """How many calendar inputs a config's model reads per row (holidays included)."""
    return len(calendar_columns(calendar_parts(cfg), cfg.data.holidays))


def calendar_columns(parts: tuple[CalendarPart, ...] | list[str], country: str | None) -> list[str]:
    """The names of the inputs `parts` and `country` make: a sine and a cosine per part, then `holiday`."""
    unknown = [p for p in parts if p not in CALENDAR_PARTS]
    if unknown:
        raise ValueError(f"unknown calendar parts {unknown} (known: {', '.join(CALENDAR_PARTS)})")
    return [f"{p}_{f}" for p in parts for f in ("sin", "cos")] + ([HOLIDAY] if country else [])


def positions(index: pd.DatetimeIndex, part: str) -> np.ndarray:
    """Each date's position in its cycle as a fraction in [0, 1): of its day, its week or its year."""
    seconds = (index.hour * 3600 + index.minute * 60 + index.second).to_numpy(dtype=float)
    if part == "day":
        return seconds / 86400.0
    if part == "week":
        return index.day_of_week.to_numpy(dtype=float) / 7.0
    days = np.where(index.is_leap_year, 366.0, 365.0)
    return (index.day_of_year.to_numpy(dtype=float) - 1.0 + seconds / 86400.0) / days


def calendar_features(index: pd.DatetimeIndex, parts: tuple[CalendarPart, ...] | list[str],
                      country: str | None) -> np.ndarray:
    """The calendar inputs of each date, (rows, len(calendar_columns(parts, country))) float32, in that order."""
    columns = []
    for part in parts:
        angle = 2.0 * np.pi * positions(index, part)
        columns += [np.sin(angle), np.cos(angle)]
    if country:
        columns.append(holiday_flags(index, country))
    if not columns:
        return np.empty((len(index), 0), dtype=np.float32)
    return np.column_stack(columns).astype(np.float32)


def holiday_flags(index: pd.DatetimeIndex, country: str) -> np.ndarray:
    """1.0 where the date (its day, for sub-daily data) is a public holiday of `country`, else 0.0."""
    if len(index) == 0:
        return np.empty(0)
    days = (index.tz_localize(None) if index.tz is not None else index).normalize()
    return days.isin(holiday_dates(country, int(days.year.min()), int(days.year.max()))).astype(float)


@functools.lru_cache(maxsize=64)  # a panel's series share their years: one lookup per country and span
def holiday_dates(country: str, first_year: int, last_year: int) -> pd.DatetimeIndex:
    """The public holidays of `country` from `first_year` to `last_year`, as midnights."""
    import holidays  # imported only when a model uses holidays

    found = holidays.country_holidays(country, years=range(first_year, last_year + 1))
    return pd.DatetimeIndex(sorted(pd.Timestamp(day) for day in found))

