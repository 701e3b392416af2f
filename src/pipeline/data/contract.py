"""The data contract: pandera models checked lazily, so one run reports every broken rule.

`validate_prices` takes the file's text columns as read (or typed columns), parses dates and
numbers itself so that each unreadable cell is reported with its file line, then checks the
pandera models. Every failure lands in one `DataError` whose report names the file, the column,
the first lines concerned and the rule.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from pandera.typing import Series

from pipeline.config.settings import DataConfig
from pipeline.errors import DataError

log = logging.getLogger(__name__)

DATE = "date"  # the date column's name inside validation; reports use the file's own name
YAHOO_PRICES = ("open", "high", "low", "close", "adj close")  # recognised in any case when no roles are configured
BAR_ENDS = ("open", "close")  # a bar's high and low bound these, when present
ROWS_SHOWN = 5  # failing rows listed per rule before "and N more"
GAP_FACTOR = 10  # a gap this many times the usual spacing is worth a warning
DST_SPREAD_MIN = 60  # UTC offsets one hour apart are one zone's daylight-saving time, not two zones

# A date-time ending in a UTC offset: "2021-01-04 00:00:00-05:00", "2021-01-04T09:30Z".
_WITH_OFFSET = re.compile(r"^(?P<local>.*\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?P<offset>Z|[+-]\d{2}:?\d{2})$")

# A screen over all cells joined by newlines: every cell that ends in an offset matches (a cell's
# end is a line's end); a rare false alarm only sends the column through the exact path.
_ANY_OFFSET_LINE = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})\s*$", re.MULTILINE)

# pandera's built-in check names, as rules a user can read
_RULES = {
    "not_nullable": "not empty (no blank cell or NaN)",
    "field_uniqueness": "unique dates (each date once)",
}
# Day and month as one or two digits each, then the year: "01/02/2022", "1.2.22", "01-02-2022 10:00".
_NUMERIC_DMY = re.compile(r"^(?P<a>\d{1,2})[/.\-](?P<b>\d{1,2})[/.\-]\d{2,4}\b")
_ANY_NUMERIC_DMY = re.compile(r"^\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}\b", re.MULTILINE)
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}"
ROW_COLUMN = "(row)"
TABLE_COLUMN = "(table)"


def _rule(name: str):  # noqa: ANN202 - a decorator
    """Give a check function its rule's name: pandera 0.35's `to_check` pops `name=` from the check's
    arguments when a model first builds its schema, so any schema built from the model again (a
    subclass, a cleared cache) would fall back to the function's `__name__`."""
    def named(fn):  # noqa: ANN001, ANN202
        fn.__name__ = name
        return fn
    return named


class PriceFrame(pa.DataFrameModel):
    """Any numeric series keyed by unique, increasing dates."""

    date: Series[pd.Timestamp] = pa.Field(unique=True, nullable=False)
    value: Series[float] = pa.Field(alias=r"^(?!date$).+", regex=True, nullable=False)

    @pa.check(r"^(?!date$).+", regex=True, name="finite (no inf)")
    @_rule("finite (no inf)")
    def finite(cls, column: Series[float]) -> Series[bool]:
        return pd.Series(np.isfinite(column.to_numpy(dtype=float)) | column.isna(), index=column.index)

    @pa.check("date", name="dates in increasing order")
    @_rule("dates in increasing order")
    def increasing(cls, dates: Series[pd.Timestamp]) -> Series[bool]:
        return ~(dates.diff() < pd.Timedelta(0))  # equal dates are the uniqueness rule's business

    class Config:
        strict = False


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
    gaps_filled: int = 0  # rows added for missing periods (data.fill_gaps)


@dataclass(frozen=True)
class Roles:
    """Which columns the value rules apply to: configured in `data`, else recognised by Yahoo's names in any case."""

    prices: tuple[str, ...] = ()  # > 0
    volume: str | None = None  # >= 0
    high: str | None = None  # >= low and >= the bar ends
    low: str | None = None  # <= high and <= the bar ends
    bar_ends: tuple[str, ...] = ()  # open and close, when present
    positive: dict[str, str] = field(default_factory=dict)  # column -> rule: > 0 for a log transform

    def row_checks(self) -> list[tuple[str, bool, tuple[str, ...]]]:
        """(rule, is_upper, columns) of each rule across a row: the first column bounds the others from above or below."""
        out: list[tuple[str, bool, tuple[str, ...]]] = []
        ends = tuple(c for c in self.bar_ends if c not in (self.high, self.low))
        if self.high and self.low:
            out.append((f"{self.high} >= {self.low}", True, (self.high, self.low)))
        if self.high and ends:
            out.append((f"{self.high} >= max({', '.join(ends)})", True, (self.high, *ends)))
        if self.low and ends:
            out.append((f"{self.low} <= min({', '.join(ends)})", False, (self.low, *ends)))
        return out


def _role(given: str | None, usual: str, by_name: dict[str, str]) -> str | None:
    if given == "auto":
        return by_name.get(usual)
    return given if given in by_name.values() else None


def column_roles(cfg: DataConfig, positive: dict[str, str] | None = None) -> Roles:
    """The roles of the columns read: price (> 0), volume (>= 0), high and low, and `positive` (column -> rule)."""
    by_name = {c.lower(): c for c in reversed(cfg.columns)}  # the first column of a name, in any case
    prices = cfg.price_columns if cfg.price_columns is not None else tuple(
        c for c in cfg.columns if c.lower() in YAHOO_PRICES)
    return Roles(prices=tuple(prices), volume=_role(cfg.volume_column, "volume", by_name),
                 high=_role(cfg.high_column, "high", by_name), low=_role(cfg.low_column, "low", by_name),
                 bar_ends=tuple(by_name[k] for k in BAR_ENDS if k in by_name),
                 positive={c: rule for c, rule in (positive or {}).items() if c in cfg.columns})


def price_columns(cfg: DataConfig) -> tuple[str, ...]:
    return column_roles(cfg).prices


def _row_check(rule: str, upper: bool, columns: tuple[str, ...]) -> pa.Check:
    first, *rest = columns

    def holds(df: pd.DataFrame) -> pd.Series:
        if upper:
            return ~(df[first] < df[list(rest)].max(axis=1))
        return ~(df[first] > df[list(rest)].min(axis=1))

    return pa.Check(holds, name=rule)


def build_schema(cfg: DataConfig, positive: dict[str, str] | None = None) -> pa.DataFrameSchema:
    """The pandera schema for this config: the base model plus per-column bounds and the row rules of its roles."""
    roles = column_roles(cfg, positive)
    extra: dict[str, pa.Column] = {}
    for col in cfg.columns:
        checks = []
        if col in roles.prices:
            checks.append(pa.Check.gt(0, error="price > 0"))
        if col == roles.volume:
            checks.append(pa.Check.ge(0, error="volume >= 0"))
        if col in roles.positive:
            checks.append(pa.Check.gt(0, error=roles.positive[col]))
        if checks:
            extra[col] = pa.Column(float, checks, nullable=False)
    schema = PriceFrame.to_schema().add_columns(extra)  # a copy: the model's cached schema stays as it is
    schema.checks = [*schema.checks, *(_row_check(*check) for check in roles.row_checks())]
    return schema


def passes_fast(frame: pd.DataFrame, cfg: DataConfig, positive: dict[str, str] | None = None) -> bool:
    """The contract's rules as plain vectorised checks: True only when the pandera schema would pass.

    A clean frame (the common case, and every serving request) skips pandera's per-check
    overhead (about 13 ms for 31 rows); anything this finds wrong goes through the pandera
    schema, which stays the source of truth and writes the report. A property test holds the
    two to agreeing.
    """
    dates = frame[DATE].to_numpy(dtype="datetime64[ns]")
    if np.isnat(dates).any() or (np.diff(dates) <= np.timedelta64(0, "ns")).any():
        return False  # a missing, repeated or out-of-order date
    col = {name: frame[name].to_numpy(dtype=float) for name in cfg.columns}  # no sub-frame: cheaper
    if not all(np.isfinite(values).all() for values in col.values()):
        return False
    roles = column_roles(cfg, positive)
    if any((col[p] <= 0).any() for p in (*roles.prices, *roles.positive) if p in col):
        return False
    if roles.volume in col and (col[roles.volume] < 0).any():
        return False
    for _, upper, (first, *rest) in roles.row_checks():
        bound = np.column_stack([col[c] for c in rest])
        if upper and (col[first] < bound.max(axis=1)).any():
            return False
        if not upper and (col[first] > bound.min(axis=1)).any():
            return False
    return True


def required_columns(cfg: DataConfig) -> dict[str, list[str]]:
    """Each column the config needs from the file -> the config fields that name it."""
    named: dict[str, list[str]] = {}
    fields = [("data.date_column", (cfg.date_column,)), ("data.target", (cfg.target,)),
              ("data.features", cfg.features), ("data.price_columns", cfg.price_columns or ())]
    for key, columns in fields:
        for column in columns:
            named.setdefault(column, []).append(key)
    return named


def check_columns(raw: pd.DataFrame, cfg: DataConfig, source: str) -> None:
    """DataError naming every configured column the file lacks, and the config field naming it."""
    have = [str(c) for c in raw.columns]
    missing = {c: keys for c, keys in required_columns(cfg).items() if c not in have}
    if missing:
        which = "; ".join(f"{c!r} (named by {', '.join(keys)})" for c, keys in missing.items())
        raise DataError(
            f"{source}: column(s) missing: {which}; rule: every column the config names must be in the "
            f"file's header, which has {have}. Fix the header or point data.date_column, data.target "
            "and data.features at columns the file has."
        )
    doubled = sorted({c for c in have if have.count(c) > 1})
    if doubled:
        raise DataError(f"{source}: column(s) {doubled} appear more than once in the header; "
                        "rule: each column name once")


def _zones(text: pd.Series, name: str, failures: list[Failure]) -> pd.Series:
    """Drop UTC offsets so dates keep their local wall-clock time, unless the series mixes zones."""
    if not _ANY_OFFSET_LINE.search("\n".join(text.dropna().tolist())):  # the usual case: one search, not one per cell
        return text
    parts = text.str.extract(_WITH_OFFSET)
    aware = parts["offset"].notna()
    if not aware.any():
        return text
    if not aware.all():
        rule = "one time zone for the whole series (some dates carry a UTC offset, others none)"
        minority = aware if aware.sum() <= (~aware & text.notna()).sum() else (~aware & text.notna())
        failures.extend(Failure(name, int(i) + 2, text.loc[i], rule) for i in text.index[minority])
    else:
        minutes = parts["offset"].map(_offset_minutes)
        if minutes.max() - minutes.min() > DST_SPREAD_MIN:
            usual = minutes.mode().iloc[0]
            rule = (f"one time zone for the whole series (most dates are at UTC{parts['offset'][minutes == usual].iloc[0]}; "
                    "offsets may differ only by a daylight-saving hour)")
            odd = (minutes - usual).abs() > DST_SPREAD_MIN
            failures.extend(Failure(name, int(i) + 2, text.loc[i], rule) for i in text.index[odd])
    return parts["local"].where(aware, text)


def _offset_minutes(offset: str) -> int:
    if offset == "Z":
        return 0
    digits = offset[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:])
    return -minutes if offset[0] == "-" else minutes


def _parse_one(value: object) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return pd.NaT
    return stamp.tz_localize(None) if stamp is not pd.NaT and stamp.tzinfo is not None else stamp


def check_unambiguous(text: pd.Series, source: str, name: str) -> None:
    """DataError naming the lines whose dates read both ways (01/02/2022: 1 February or 2 January).

    Without `data.dayfirst` or `data.date_format`, guessing would silently swap days and months
    (pandas reads month-first, and a day-first file then looks unsorted): the user says which.
    """
    if not _ANY_NUMERIC_DMY.search("\n".join(text.dropna().tolist())):
        return  # the usual case (ISO dates): one search
    parts = text.str.extract(_NUMERIC_DMY).astype(float)
    first, second = parts["a"], parts["b"]
    ambiguous = (first <= 12) & (second <= 12) & (first != second)
    if not ambiguous.any():
        return
    lines = text.index[ambiguous.to_numpy(dtype=bool)]
    example = str(text.loc[lines[0]])
    shown = ", ".join(f"line {int(i) + 2} ({text.loc[i]!r})" for i in lines[:ROWS_SHOWN])
    more = f" and {len(lines) - ROWS_SHOWN} more" if len(lines) > ROWS_SHOWN else ""
    hint = ""
    for order, only in (("day-first", first > 12), ("month-first", second > 12)):
        if only.any():
            at = text.index[only.to_numpy(dtype=bool)][0]
            hint = f" (line {int(at) + 2}, {text.loc[at]!r}, can only be {order})"
            break
    raise DataError(
        f"{source}: column {name!r} holds dates that read as day/month or as month/day: {shown}{more}{hint}; "
        f"rule: dates like {example!r} need data.dayfirst (true: 01/02/2022 is 1 February; false: 2 January) "
        "or data.date_format (such as '%d/%m/%Y')")


def _parse_text_dates(local: pd.Series, cfg: DataConfig) -> pd.Series:
    """pandas' parse of the date text, in the format or day order the config gives.

    ISO dates (2022-01-02...) read as ISO whatever the setting: they are unambiguous, and the
    model's own input (`serving.model_input`, the logged example) writes dates that way; pandas'
    `dayfirst` would read 2022-01-02 as 1 February.
    """
    if cfg.date_format is None and cfg.dayfirst is None:
        return pd.to_datetime(local, errors="coerce", format="mixed")
    iso = local.str.match(_ISO_DATE).fillna(False).to_numpy(dtype=bool)
    other = local.mask(iso)
    if cfg.date_format is not None:
        parsed = pd.to_datetime(other, errors="coerce", format=cfg.date_format)
    else:
        parsed = pd.to_datetime(other, errors="coerce", format="mixed", dayfirst=bool(cfg.dayfirst))
    if iso.any():
        parsed = parsed.astype("datetime64[ns]").mask(iso, pd.to_datetime(local.where(iso), errors="coerce",
                                                                          format="ISO8601"))
    return parsed


def _parse_dates(raw: pd.Series, cfg: DataConfig, source: str, failures: list[Failure]) -> pd.Series:
    """Naive datetime64[ns] dates; unparseable, empty, out-of-range and mixed-zone cells become failures."""
    name = cfg.date_column
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw.dt.tz_localize(None) if isinstance(raw.dtype, pd.DatetimeTZDtype) else raw
        for idx in parsed.index[parsed.isna()]:
            failures.append(Failure(name, int(idx) + 2, None, "not empty (every row needs a date)"))
    else:
        text = raw.astype("string").str.strip()
        if cfg.date_format is None and cfg.dayfirst is None:
            check_unambiguous(text, source, name)
        local = _zones(text, name, failures)
        try:
            parsed = _parse_text_dates(local, cfg)
        except (ValueError, TypeError, OverflowError):  # pandas refused the column as a whole
            parsed = pd.Series([_parse_one(v) for v in local], index=local.index)
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            parsed = parsed.dt.tz_localize(None)
        elif not pd.api.types.is_datetime64_any_dtype(parsed):
            parsed = pd.Series([_parse_one(v) for v in parsed], index=parsed.index, dtype="datetime64[us]")
        for idx in parsed.index[(parsed.isna() & text.notna()).to_numpy(dtype=bool)]:
            failures.append(Failure(name, int(idx) + 2, raw.loc[idx], "a date (such as 2024-01-31)"))
        for idx in parsed.index[text.isna().to_numpy(dtype=bool)]:
            failures.append(Failure(name, int(idx) + 2, None, "not empty (every row needs a date)"))
    if parsed.dtype == "datetime64[ns]":
        return parsed  # nanosecond dates are inside the range by construction
    out_of_range = parsed.notna() & ((parsed < pd.Timestamp.min) | (parsed > pd.Timestamp.max))
    for idx in parsed.index[out_of_range]:
        failures.append(Failure(name, int(idx) + 2, raw.loc[idx], "a date between 1678 and 2261"))
    return parsed.mask(out_of_range).astype("datetime64[ns]")


def read_numbers(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Floats (NaN where empty or text) and where the cells hold text that is not a number."""
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return raw.astype(float), np.zeros(len(raw), dtype=bool)
    text = raw.astype("string").str.strip()
    numbers = pd.to_numeric(text, errors="coerce").astype(float) + 0.0  # "-0" reads as 0 whether pandas infers
    # integers (a column of whole numbers) or floats for it: one table and its series alike
    is_text = (numbers.isna() & text.notna() & ~text.str.lower().isin(["nan", ""])).fillna(False)
    return numbers, is_text.to_numpy(dtype=bool)


def _parse_numbers(raw: pd.Series, name: str, failures: list[Failure]) -> pd.Series:
    """Floats; a cell holding text (not a number, not empty) becomes a failure."""
    numbers, is_text = read_numbers(raw)
    for idx in raw.index[is_text]:
        failures.append(Failure(name, int(idx) + 2, raw.loc[idx], "a number"))
    return numbers


def _lines(index: pd.Index) -> str:
    shown = ", ".join(str(int(i) + 2) for i in index[:ROWS_SHOWN])
    return shown + (f" and {len(index) - ROWS_SHOWN} more" if len(index) > ROWS_SHOWN else "")


def _apply_nan_policy(frame: pd.DataFrame, cfg: DataConfig, out: ValidatedData) -> pd.DataFrame:
    """Drop or forward-fill rows whose non-target columns are empty, when the config says so."""
    others = [c for c in cfg.columns if c != cfg.target]
    if cfg.nan_policy == "error" or not others:
        return frame
    gaps = frame[others].isna().any(axis=1)
    if not gaps.any():
        return frame
    count = int(gaps.sum())
    if cfg.nan_policy == "drop":
        out.rows_dropped = count
        out.notes.append(f"nan_policy=drop: dropped {count} row(s) with empty non-target values "
                         f"(lines {_lines(frame.index[gaps])})")
        return frame.loc[~gaps]
    filled = frame.copy()
    filled[others] = filled[others].ffill()
    out.rows_filled = count
    out.notes.append(f"nan_policy=ffill: forward-filled {count} row(s) with empty non-target values "
                     f"(lines {_lines(frame.index[gaps])})")
    return filled


def _empty_targets_as_gaps(frame: pd.DataFrame, cfg: DataConfig, out: ValidatedData,
                           text_lines: set[int]) -> pd.DataFrame:
    """With `data.fill_gaps` set, a row whose target is empty is a missing period: dropped here (with a note), so
    that `settle_gaps` fills it as it fills an absent row. A cell holding text stays, to be reported."""
    if cfg.fill_gaps == "none":
        return frame
    empty = frame[cfg.target].isna() & ~frame.index.to_series().add(2).isin(text_lines)
    if not empty.any():
        return frame
    out.rows_dropped += int(empty.sum())
    out.notes.append(f"data.fill_gaps={cfg.fill_gaps}: {int(empty.sum())} row(s) with an empty {cfg.target!r} "
                     f"(lines {_lines(frame.index[empty])}) read as missing periods")
    return frame.loc[~empty]


def _rule_name(check: str, column: str, cfg: DataConfig) -> str:
    rule = _RULES.get(check, check)
    if check == "not_nullable" and column != cfg.date_column:
        rule += ("; or set data.nan_policy to drop or ffill" if column != cfg.target else
                 "; or set data.fill_gaps to forward, interpolate or zero (an empty target is a missing period)")
    return rule


def _failures_from_pandera(exc: SchemaErrors, cfg: DataConfig, frame: pd.DataFrame,
                           row_checks: dict[str, tuple[str, ...]]) -> list[Failure]:
    """pandera's failure cases as file-line failures; a row-wide check gives one failure per row."""
    out: list[Failure] = []
    for row in exc.failure_cases.itertuples(index=False):
        rule = str(row.check)
        if rule.startswith(("column_in_dataframe", "column_in_schema")):
            continue  # check_columns reported these, with the columns the file has
        index = row.index
        has_line = index is not None and not pd.isna(index)
        line = int(index) + 2 if has_line else None
        column = row.column if isinstance(row.column, str) else TABLE_COLUMN
        if column == DATE:
            column = cfg.date_column
        if rule in row_checks and has_line:
            value = {c: frame.loc[index, c] for c in row_checks[rule]}
            out.append(Failure(ROW_COLUMN, line, value, rule))
            continue
        out.append(Failure(column, line, row.failure_case, _rule_name(rule, column, cfg)))
    return out


def format_report(source: str, failures: list[Failure]) -> str:
    """One paragraph: the file, then per broken rule its column, first lines and values."""
    unique = list({(f.column, f.line, f.rule): f for f in reversed(failures)}.values())[::-1]
    groups: dict[tuple[str, str], list[Failure]] = {}
    for f in unique:
        groups.setdefault((f.column, f.rule), []).append(f)
    lines = [f"{source}: {len(unique)} value(s) break {len(groups)} rule(s) of the data contract"]
    for (column, rule), items in groups.items():
        items = sorted(items, key=lambda f: (f.line is None, f.line or 0))
        shown = ", ".join(
            f"line {f.line} ({_show(f.value)})" if f.line is not None else _show(f.value)
            for f in items[:ROWS_SHOWN]
        )
        more = f" and {len(items) - ROWS_SHOWN} more" if len(items) > ROWS_SHOWN else ""
        if column == ROW_COLUMN:
            named = items[0].value if isinstance(items[0].value, dict) else {}
            where = "columns " + ", ".join(repr(c) for c in named)
        elif column == TABLE_COLUMN:
            where = "the whole table"
        else:
            where = f"column {column!r}"
        lines.append(f"  - {where}, rule {rule!r}: {shown}{more}")
    return "\n".join(lines)


def _show(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items())
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    if isinstance(value, pd.Timestamp):
        return str(value.date()) if value == value.normalize() else str(value)
    return repr(value)


def _gap_notes(dates: pd.Series) -> list[str]:
    stamps = dates.to_numpy(dtype="datetime64[ns]")
    if len(stamps) < 2:
        return []
    spacing = np.diff(stamps)
    usual = np.median(spacing)
    if usual <= np.timedelta64(0, "ns"):
        return []
    long = np.flatnonzero(spacing > usual * GAP_FACTOR)
    return [
        f"warning: gap of {_span(pd.Timedelta(spacing[i]))} before {pd.Timestamp(stamps[i + 1]).date()} "
        f"(usual spacing {_span(pd.Timedelta(usual))}; more than {GAP_FACTOR}x is unusual)"
        for i in long
    ]


def _span(delta: pd.Timedelta) -> str:
    return f"{delta.days} day(s)" if delta >= pd.Timedelta(days=1) else str(delta)


def too_few_rows(min_rows: int) -> str:
    return f"at least {min_rows} rows for the lookback window, the horizon and every split"


def settle_gaps(frame: pd.DataFrame, cfg: DataConfig, source: str, instants: pd.DatetimeIndex | None = None,
                positive: dict[str, str] | None = None) -> tuple[pd.DataFrame, str | None]:
    """`data.fill_gaps` applied to a validated, date-indexed series: the frame (filled) and a note of what was filled.

    A regular calendar's missing periods (`dates.missing_dates`: none for business days and other
    calendars with holidays or sessions) make windows that span the gap and forecast dates one
    period off: with `fill_gaps: none` they are a DataError naming the first dates and the count.
    `instants`: the rows' UTC instants when the dates carried UTC offsets; sub-daily data is judged
    on them, so the local hour a daylight-saving change skips is no gap. `positive`: the columns a
    log transform needs > 0, which `zero` may not fill.
    """
    from pipeline.dates import evenly_spaced, fill_missing, infer_frequency, missing_dates

    if cfg.freq is None and instants is None and evenly_spaced(frame.index):
        return frame, None  # one step throughout: no period missing (the usual case, at no inference's cost)
    frequency = cfg.freq or infer_frequency(frame.index)
    if instants is not None and frequency is not None and is_sub_daily(frequency):
        missing = missing_dates(instants, cfg.freq or infer_frequency(instants))
        local = frame.index - instants  # each row's UTC offset
        missing = missing + local[np.maximum(instants.searchsorted(missing) - 1, 0)]  # at the offset before the gap
    else:
        missing = missing_dates(frame.index, frequency)
    if not len(missing):
        return frame, None
    shown = ", ".join(_show(d) for d in missing[:ROWS_SHOWN])
    dates = f"{shown} and {len(missing) - ROWS_SHOWN:,} more" if len(missing) > ROWS_SHOWN else shown
    if cfg.fill_gaps == "none":
        report = (f"{source}: {len(missing):,} missing date(s) in the {frequency} calendar of column "
                  f"{cfg.date_column!r}: {dates}; rule: every period between the first and the last date (windows "
                  "would span the gap and forecast dates shift); add the rows, or set data.fill_gaps to forward, "
                  f"interpolate or zero{clock_change_hint(frame.index, missing, frequency, instants)}")
        raise DataError(report, report=report)
    logs = [c for c in column_roles(cfg, positive).positive if cfg.fill_gaps == "zero"]
    if logs:
        raise DataError(f"{source}: data.fill_gaps=zero would write 0 on {dates} in column(s) {logs}, whose rule is "
                        f"{positive[logs[0]]!r}; fill with forward or interpolate, or choose another transform")
    return (fill_missing(frame, missing, cfg.fill_gaps),
            f"data.fill_gaps={cfg.fill_gaps}: filled {len(missing):,} missing date(s) of the {frequency} calendar: {dates}")


def clock_change_hint(index: pd.DatetimeIndex, missing: pd.DatetimeIndex, frequency: str | None,
                      instants: pd.DatetimeIndex | None) -> str:
    """A hint for sub-daily dates without UTC offsets that miss about one hour a year, one at a time: the hour a
    spring clock change skips in local time. Empty otherwise."""
    if instants is not None or frequency is None or not is_sub_daily(frequency) or not len(missing):
        return ""
    years = (index[-1] - index[0]).days / 365.25
    hours = missing.floor("h").unique()
    if len(hours) > years + 1 or ((hours[1:] - hours[:-1]) < pd.Timedelta(days=2)).any():
        return ""
    return ("; if the dates are local clock times, a daylight-saving change skips an hour each spring: write them "
            "with their UTC offset (2024-03-31T03:00+02:00), and the skipped hour is no gap")


def is_sub_daily(frequency: str) -> bool:
    from pipeline.dates import typical_step

    return typical_step(frequency) < pd.Timedelta(days=1)


def _utc_instants(raw: pd.Series) -> pd.Series | None:
    """Each date's UTC instant when the dates carry UTC offsets (else None): NaT where there is none."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        return None
    text = raw.astype("string").str.strip()
    if not _ANY_OFFSET_LINE.search("\n".join(text.dropna().tolist())):
        return None
    aware = text.str.match(_WITH_OFFSET).fillna(False).to_numpy(dtype=bool)
    out = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    if aware.all():
        out[:] = pd.to_datetime(text, utc=True, errors="coerce", format="mixed").dt.tz_localize(None)
    return out


def validate_prices(raw: pd.DataFrame, cfg: DataConfig, source: str, min_rows: int,
                    positive: dict[str, str] | None = None) -> ValidatedData:
    """Check `raw` (text columns as read) against the contract; return typed, date-indexed data.

    `positive` maps columns that must be > 0 (the log transforms' domain) to the rule a failure
    names (`features.transform_domain`). Every failing rule is collected before raising one DataError whose report names the file,
    the column, the first lines concerned (file line numbers) and the rule. A file in
    descending date order is sorted (with a note); a gap far longer than the usual spacing is
    a warning note.
    """
    check_columns(raw, cfg, source)
    raw = raw.reset_index(drop=True)
    out = ValidatedData(frame=pd.DataFrame())
    failures: list[Failure] = []
    columns = {DATE: _parse_dates(raw[cfg.date_column], cfg, source, failures)}
    columns.update((col, _parse_numbers(raw[col], col, failures)) for col in cfg.columns)
    frame = pd.DataFrame(columns, index=raw.index)  # built at once: column by column cost 1 ms more

    dates = frame[DATE].dropna()
    if len(dates) > 1 and dates.is_monotonic_decreasing and not dates.is_monotonic_increasing:
        frame = frame.iloc[::-1]
        out.notes.append(f"rows came in descending date order; sorted ascending ({len(frame)} rows)")
    bad_cells = {(f.column, f.line) for f in failures}
    frame = _apply_nan_policy(frame, cfg, out)
    frame = _empty_targets_as_gaps(frame, cfg, out, {line for column, line in bad_cells if column == cfg.target})

    if len(frame) and not passes_fast(frame, cfg, positive):
        schema = build_schema(cfg, positive)
        row_checks = {rule: columns for rule, _, columns in column_roles(cfg).row_checks()}
        try:
            schema.validate(frame, lazy=True)
        except SchemaErrors as exc:
            for f in _failures_from_pandera(exc, cfg, frame, row_checks):
                if (f.column, f.line) not in bad_cells:  # a text cell is reported once, not again as NaN
                    failures.append(f)
    if len(frame) < min_rows:
        failures.append(Failure(TABLE_COLUMN, None, f"{len(frame)} rows", too_few_rows(min_rows)))
    if failures:
        report = format_report(source, failures)
        raise DataError(report, report=report)

    clean = frame.set_index(DATE)
    clean.index.name = cfg.date_column
    utc = _utc_instants(raw[cfg.date_column])
    instants = None if utc is None or utc.loc[frame.index].isna().any() else pd.DatetimeIndex(utc.loc[frame.index])
    out.frame, note = settle_gaps(clean, cfg, source, instants, positive)
    if note:
        out.gaps_filled = len(out.frame) - len(clean)
        out.notes.append(note)
    out.notes.extend(_gap_notes(frame[DATE]))
    for note in out.notes:
        (log.warning if note.startswith("warning") else log.info)("%s: %s", source, note)
    return out


# ---------------------------------------------------------------- a long table of many series at once
# Plain ISO dates (no UTC offset, no ambiguity): what the whole-table parse reads itself.
PLAIN_ISO = r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"


@dataclass(frozen=True)
class ParsedTable:
    """A long table's dates and numbers, parsed once for all its series."""

    dates: np.ndarray  # (rows,) datetime64[ns]; NaT where the cell is not a plain ISO date that parses
    plain: np.ndarray  # (rows,) bool: the date cell is a plain ISO date that parsed
    values: dict[str, np.ndarray]  # column -> (rows,) float; NaN where empty or text
    text: dict[str, np.ndarray]  # column -> (rows,) bool: the cell holds text that is not a number


def parse_table(frame: pd.DataFrame, cfg: DataConfig) -> ParsedTable:
    """Every row's date (plain ISO text only) and numbers, read as `validate_prices` reads them."""
    text = frame[cfg.date_column].astype("string").str.strip()
    iso = text.str.fullmatch(PLAIN_ISO).fillna(False).to_numpy(dtype=bool)
    dates = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    if iso.any():
        dates[iso] = pd.to_datetime(text[iso], format="ISO8601", errors="coerce").astype("datetime64[ns]")
    stamps = dates.to_numpy()
    values: dict[str, np.ndarray] = {}
    texts: dict[str, np.ndarray] = {}
    for column in cfg.columns:
        numbers, texts[column] = read_numbers(frame[column])
        values[column] = numbers.to_numpy(dtype=float)
    return ParsedTable(stamps, iso & ~np.isnat(stamps), values, texts)


def series_failures(frame: pd.DataFrame, parsed: ParsedTable, cfg: DataConfig, groups: Mapping[str, np.ndarray],
                    min_rows: int, positive: dict[str, str] | None = None) -> dict[str, list[Failure]]:
    """Each series' broken rules, found over the whole long table at once: what `validate_prices` finds.

    `groups` maps each series id to its rows' positions in `frame`; lines are counted within the
    series as `validate_prices` counts them (its first row is line 2). Row counts, empty and
    text cells, non-finite values, the value domains, the row rules, repeated and out-of-order
    dates are numpy operations on the whole table, not one pandera run per series (which took
    about 10 ms a series: 20,000 series of 3 rows, 209 s). A series this cannot decide (a date that is
    not plain ISO text, dates in descending order that `validate_prices` sorts, empty cells that
    `data.nan_policy` drops or fills) is left out: it goes through `validate_prices`. A property
    test holds the two to writing the same report.
    """
    if not groups:
        return {}
    ids = list(groups)
    sizes = np.fromiter((len(p) for p in groups.values()), dtype=np.int64, count=len(ids))
    order = np.concatenate([np.asarray(p, dtype=np.int64) for p in groups.values()])  # rows, series after series
    code = np.repeat(np.arange(len(ids)), sizes)  # (rows,) each row's series
    line = np.arange(len(order)) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 2  # (rows,) its line in the series
    dates = parsed.dates[order]
    values = {c: v[order] for c, v in parsed.values.items()}
    text = {c: t[order] for c, t in parsed.text.items()}

    def any_row(mask: np.ndarray) -> np.ndarray:  # (series,) whether any row of the series is in `mask`
        return np.bincount(code[mask], minlength=len(ids)) > 0

    same = code[1:] == code[:-1]  # consecutive rows of one series
    falls = np.r_[False, same & (dates[1:] < dates[:-1])]  # NaT compares False
    rises = np.r_[False, same & (dates[1:] > dates[:-1])]
    undecided = any_row(~parsed.plain[order]) | (any_row(falls) & ~any_row(rises))
    others = [c for c in cfg.columns if c != cfg.target]
    if cfg.nan_policy != "error" and others:
        undecided |= any_row(np.logical_or.reduce([np.isnan(values[c]) for c in others]))
    empty = {c: np.isnan(values[c]) & ~text[c] for c in cfg.columns}  # a text cell is reported once, as text
    if cfg.fill_gaps != "none":  # an empty target is a missing period that validate_prices drops and fills
        undecided |= any_row(empty[cfg.target])
    decided = ~undecided[code]
    found: list[list[Failure]] = [[] for _ in ids]

    def add(mask: np.ndarray, column: str, rule: str, value: Callable[[int], object]) -> None:
        for i in np.flatnonzero(mask & decided):
            found[code[i]].append(Failure(column, int(line[i]), value(i), rule))

    for column in cfg.columns:  # in validate_prices' order: cells that do not parse, then pandera's order
        if text[column].any():
            cells = frame[column].to_numpy()
            add(text[column], column, "a number", lambda i, cells=cells: cells[order[i]])
    roles = column_roles(cfg, positive)
    for rule, upper, (first, *rest) in roles.row_checks():
        bound = (np.fmax if upper else np.fmin).reduce([values[c] for c in rest])  # NaN-skipping, as pandas' max
        breaks = values[first] < bound if upper else values[first] > bound
        add(breaks, ROW_COLUMN, rule, lambda i, cols=(first, *rest): {c: values[c][i] for c in cols})
    stamp = lambda i: pd.Timestamp(dates[i])  # noqa: E731
    add(_repeated(code, dates), cfg.date_column, _RULES["field_uniqueness"], stamp)
    add(falls, cfg.date_column, "dates in increasing order", stamp)
    for column in cfg.columns:
        add(empty[column], column, _rule_name("not_nullable", column, cfg), lambda i: np.nan)
        add(np.isinf(values[column]), column, "finite (no inf)", lambda i, v=values[column]: v[i])
    for column in cfg.columns:
        bounds = [(values[column] <= 0, "price > 0")] if column in roles.prices else []
        bounds += [(values[column] < 0, "volume >= 0")] if column == roles.volume else []
        bounds += [(values[column] <= 0, roles.positive[column])] if column in roles.positive else []
        if bounds:
            add(empty[column], column, _rule_name("not_nullable", column, cfg), lambda i: np.nan)
        for breaks, rule in bounds:
            add(breaks, column, rule, lambda i, v=values[column]: v[i])
    short = too_few_rows(min_rows)
    for k in np.flatnonzero((sizes < min_rows) & ~undecided):
        found[k].append(Failure(TABLE_COLUMN, None, f"{sizes[k]} rows", short))
    return {sid: found[k] for k, sid in enumerate(ids) if not undecided[k]}


def _repeated(code: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """(rows,) whether the row's date appears more than once in its series (every occurrence, as pandera)."""
    order = np.lexsort((dates, code))
    twin = (code[order][1:] == code[order][:-1]) & (dates[order][1:] == dates[order][:-1])
    out = np.zeros(len(code), dtype=bool)
    out[order[1:][twin]] = True
    out[order[:-1][twin]] = True
    return out
