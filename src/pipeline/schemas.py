"""The data contract: pandera models checked lazily, so one run reports every broken rule."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from pandera.typing import Series

from pipeline.config import DataConfig
from pipeline.errors import DataError

log = logging.getLogger(__name__)

DATE = "date"  # the date column's name inside validation; reports use the file's own name
OHLC = ("Open", "High", "Low", "Close")
YAHOO_PRICES = ("Open", "High", "Low", "Close", "Adj Close")
ROWS_SHOWN = 5  # failing rows listed per rule before "and N more"
GAP_FACTOR = 10  # a gap this many times the usual spacing is worth a warning


class PriceFrame(pa.DataFrameModel):
    """Any numeric series keyed by unique, increasing dates."""

    date: Series[pd.Timestamp] = pa.Field(unique=True, nullable=False)
    value: Series[float] = pa.Field(alias=r"^(?!date$).+", regex=True, nullable=False)

    @pa.check(r"^(?!date$).+", regex=True, name="finite (no inf)")
    def finite(cls, column: Series[float]) -> Series[bool]:
        return pd.Series(np.isfinite(column.to_numpy(dtype=float)) | column.isna(), index=column.index)

    @pa.check("date", name="dates increasing")
    def increasing(cls, dates: Series[pd.Timestamp]) -> Series[bool]:
        return (dates.diff() > pd.Timedelta(0)) | (dates.index == dates.index[0])

    class Config:
        strict = False


class OHLCFrame(PriceFrame):
    """Daily bars: High is the top of the day's range and Low its bottom."""

    @pa.dataframe_check(name="High >= max(Open, Close)")
    def high_on_top(cls, df: pd.DataFrame) -> Series[bool]:
        return df["High"] >= df[["Open", "Close"]].max(axis=1)

    @pa.dataframe_check(name="Low <= min(Open, Close)")
    def low_at_bottom(cls, df: pd.DataFrame) -> Series[bool]:
        return df["Low"] <= df[["Open", "Close"]].min(axis=1)


@dataclass(frozen=True)
class Failure:
    column: str
    line: int | None  # line in the file (the header is line 1); None for whole-table rules
    value: object
    rule: str


@dataclass
class ValidatedData:
    """A clean frame indexed by date (float columns), with what validation changed or noticed."""

    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    rows_dropped: int = 0
    rows_filled: int = 0


def price_columns(cfg: DataConfig) -> tuple[str, ...]:
    if cfg.price_columns is not None:
        return cfg.price_columns
    return tuple(c for c in cfg.columns if c in YAHOO_PRICES)


def build_schema(cfg: DataConfig) -> pa.DataFrameSchema:
    """The pandera schema for this config: the base model plus per-column bounds."""
    model = OHLCFrame if set(OHLC) <= set(cfg.columns) else PriceFrame
    schema = model.to_schema()
    extra: dict[str, pa.Column] = {}
    for col in price_columns(cfg):
        extra[col] = pa.Column(float, pa.Check.gt(0, error="price > 0"), nullable=False)
    if cfg.volume_column and cfg.volume_column in cfg.columns:
        extra[cfg.volume_column] = pa.Column(float, pa.Check.ge(0, error="volume >= 0"), nullable=False)
    return schema.add_columns(extra) if extra else schema


def _parse_dates(raw: pd.Series, name: str, source: str, failures: list[Failure]) -> pd.Series:
    try:
        parsed = pd.to_datetime(raw, errors="coerce", format="mixed")
    except (ValueError, TypeError) as exc:
        if "time zone" in str(exc).lower() or "timezone" in str(exc).lower():
            raise DataError(
                f"{source}: column {name!r} mixes time zones (e.g. {raw.iloc[0]!r} and "
                f"{raw.iloc[-1]!r}); rule: one time zone for the whole series"
            ) from exc
        raise DataError(f"{source}: column {name!r} does not hold dates ({exc})") from exc
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_localize(None)
    elif parsed.dtype == object:
        raise DataError(f"{source}: column {name!r} mixes time zones; rule: one time zone per series")
    for idx in parsed.index[parsed.isna()]:
        failures.append(Failure(name, int(idx) + 2, raw.loc[idx], "date parses"))
    return parsed.astype("datetime64[ns]")


def _parse_numbers(raw: pd.Series, name: str, failures: list[Failure]) -> pd.Series:
    if pd.api.types.is_numeric_dtype(raw):
        return raw.astype(float)
    numbers = pd.to_numeric(raw, errors="coerce").astype(float)
    text = numbers.isna() & raw.notna() & ~raw.astype(str).str.lower().isin(["nan", ""])
    for idx in raw.index[text]:
        failures.append(Failure(name, int(idx) + 2, raw.loc[idx], "is a number"))
    return numbers


def _apply_nan_policy(frame: pd.DataFrame, cfg: DataConfig, out: ValidatedData) -> pd.DataFrame:
    """Drop or forward-fill rows whose non-target columns are empty, when the config says so."""
    others = [c for c in cfg.columns if c != cfg.target]
    gaps = frame[others].isna().any(axis=1)
    if cfg.nan_policy == "error" or not gaps.any():
        return frame
    count = int(gaps.sum())
    if cfg.nan_policy == "drop":
        out.rows_dropped = count
        out.notes.append(f"nan_policy=drop: dropped {count} rows with empty non-target values")
        return frame.loc[~gaps]
    filled = frame.copy()
    filled[others] = filled[others].ffill()
    out.rows_filled = count
    out.notes.append(f"nan_policy=ffill: forward-filled {count} rows with empty non-target values")
    return filled


def _failures_from_pandera(exc: SchemaErrors, date_name: str, frame: pd.DataFrame) -> list[Failure]:
    out: list[Failure] = []
    cases = exc.failure_cases
    for row in cases.itertuples(index=False):
        column = row.column if isinstance(row.column, str) else None
        if column is None and row.schema_context == "DataFrameSchema" and row.index is None:
            column = "(table)"
        if column == DATE:
            column = date_name
        rule = str(row.check)
        if rule.startswith("column_in_dataframe"):
            continue  # reported earlier, with the columns the file has
        index = row.index
        line = int(index) + 2 if index is not None and not pd.isna(index) else None
        value = row.failure_case
        if column is None and line is not None:  # a whole-row rule: show the row
            column = "(row)"
            value = frame.loc[index].drop(labels=[DATE]).to_dict()
        out.append(Failure(column or "(table)", line, value, rule))
    return out


def format_report(source: str, failures: list[Failure]) -> str:
    """One paragraph per broken rule: the file, column, first lines and values concerned."""
    groups: dict[tuple[str, str], list[Failure]] = {}
    for f in failures:
        groups.setdefault((f.column, f.rule), []).append(f)
    lines = [f"{source}: {len(failures)} value(s) break {len(groups)} rule(s) of the data contract"]
    for (column, rule), items in groups.items():
        items = sorted(items, key=lambda f: (f.line is None, f.line or 0))
        shown = ", ".join(
            f"line {f.line} ({f.value!r})" if f.line is not None else repr(f.value)
            for f in items[:ROWS_SHOWN]
        )
        more = f" and {len(items) - ROWS_SHOWN} more" if len(items) > ROWS_SHOWN else ""
        lines.append(f"  - column {column!r}, rule {rule!r}: {shown}{more}")
    return "\n".join(lines)


def _gap_notes(dates: pd.Series) -> list[str]:
    spacing = dates.diff().dropna()
    if spacing.empty:
        return []
    usual = spacing.median()
    long = spacing[spacing > usual * GAP_FACTOR]
    return [
        f"warning: gap of {gap.days} days before {dates.loc[idx].date()} "
        f"(usual spacing {usual.days} day(s))"
        for idx, gap in long.items()
    ]


def validate_prices(raw: pd.DataFrame, cfg: DataConfig, source: str, min_rows: int) -> ValidatedData:
    """Check `raw` (text columns as read) against the contract; return typed, date-indexed data.

    Every failing rule is collected before raising one DataError whose report names the file,
    the column, the first lines concerned (file line numbers) and the rule.
    """
    wanted = [cfg.date_column, *cfg.columns]
    missing = [c for c in wanted if c not in raw.columns]
    if missing:
        raise DataError(
            f"{source}: required column(s) {missing} missing; the file has {list(raw.columns)} "
            "(set data.date_column / data.target / data.features in the config)"
        )
    out = ValidatedData(frame=pd.DataFrame())
    failures: list[Failure] = []
    frame = pd.DataFrame(index=raw.index)
    frame[DATE] = _parse_dates(raw[cfg.date_column], cfg.date_column, source, failures)
    for col in cfg.columns:
        frame[col] = _parse_numbers(raw[col], col, failures)

    dates = frame[DATE].dropna()
    if len(dates) > 1 and dates.is_monotonic_decreasing and not dates.is_monotonic_increasing:
        frame = frame.iloc[::-1]
        out.notes.append(f"rows came in descending date order; sorted ascending ({len(frame)} rows)")
    frame = _apply_nan_policy(frame, cfg, out)

    bad_cells = {(f.column, f.line) for f in failures}
    try:
        build_schema(cfg).validate(frame, lazy=True)
    except SchemaErrors as exc:
        for f in _failures_from_pandera(exc, cfg.date_column, frame):
            if (f.column, f.line) not in bad_cells:  # a text cell is reported once, not again as NaN
                failures.append(f)
    if len(frame) < min_rows:
        failures.append(
            Failure("(table)", None, f"{len(frame)} rows",
                    f"at least {min_rows} rows for the lookback window and every split")
        )
    if failures:
        report = format_report(source, failures)
        raise DataError(report, report=report)

    clean = frame.set_index(DATE)
    clean.index.name = cfg.date_column
    out.frame = clean
    out.notes.extend(_gap_notes(frame[DATE]))
    for note in out.notes:
        log.warning("%s: %s", source, note) if note.startswith("warning") else log.info("%s: %s", source, note)
    return out
