"""The long table of series the one road takes (one CSV, a folder of CSVs or a list of them, a series id column;
one series is a panel of one, `of_one`): read the files with each row's file and line, group the rows by series,
hold every series to the data contract at once (errors name the series id, the file line and the rule; the
first 20 bad series in full, then a count), settle bad series and calendars, resolve `auto` settings over every
series. `steps` holds what is done with the series once read.

No MLflow, no Prefect: flows/tasks.py wires these steps.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config.settings import PipelineConfig
from pipeline.data.contract import (
    DATE,
    ParsedTable,
    ValidatedData,
    check_columns,
    format_report,
    parse_table,
    passes_fast,
    series_failures,
    settle_gaps,
    validate_prices,
)
from pipeline.data.reading import RawData, is_remote, load_prices
from pipeline.errors import DataError
from pipeline.features.transforms import transform_domain
from pipeline.features.windows import Preprocessor, split_by_time

log = logging.getLogger(__name__)

ERRORS_SHOWN = 20  # bad series listed in full before "and N more"

ONE_SERIES = "series"  # the implicit id of the one series of a model without a series column


# ---------------------------------------------------------------- reading
@dataclass(frozen=True)
class PanelRaw(RawData):
    """Several files read as one long table: each row's file and line kept for error reports."""

    files: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))  # (rows,) the file of each row
    lines: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # (rows,) its line in that file


def source_paths(source: str | tuple[str, ...]) -> list[str]:
    """The files a source names: one path or URL, each CSV of a folder (sorted), or each entry of a list."""
    out: list[str] = []
    for item in ([source] if isinstance(source, str) else list(source)):
        path = Path(item)
        if not is_remote(item) and path.is_dir():
            found = sorted(str(p) for p in path.glob("*.csv"))
            if not found:
                raise DataError(f"{item}: a folder without CSV files; rule: data.source names CSV files")
            out.extend(found)
        else:
            out.append(item)
    return out


def load_sources(source: str | tuple[str, ...]) -> RawData:
    """Read every file of `source` as one long table of text columns; one file reads as `ingest.load_prices`.

    All files must share one header. The digest covers every file's bytes, in order.
    """
    paths = source_paths(source)
    if len(paths) == 1:
        return load_prices(paths[0])
    parts = [load_prices(p) for p in paths]
    header = list(parts[0].frame.columns)
    for part in parts[1:]:
        if list(part.frame.columns) != header:
            raise DataError(f"{part.source}: header {list(part.frame.columns)} differs from {paths[0]}'s {header}; "
                            "rule: every file of a many-series source has the same columns")
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    files = np.concatenate([np.full(len(p.frame), p.source, dtype=object) for p in parts])
    lines = np.concatenate([np.arange(len(p.frame), dtype=np.int64) + 2 for p in parts])
    digest = hashlib.sha256("".join(p.digest for p in parts).encode()).hexdigest()[:16]
    label = source if isinstance(source, str) else ", ".join(source)
    log.info("read %d rows from %d files (%s)", len(frame), len(parts), label)
    return PanelRaw(frame=frame, source=label, digest=digest, files=files, lines=lines)


def provenance(raw: RawData) -> tuple[np.ndarray, np.ndarray]:
    """Each row's file and file line (the header is line 1)."""
    if isinstance(raw, PanelRaw) and len(raw.lines) == len(raw.frame):
        return raw.files, raw.lines
    return np.full(len(raw.frame), raw.source, dtype=object), np.arange(len(raw.frame), dtype=np.int64) + 2


# ---------------------------------------------------------------- validation


@dataclass
class Panel:
    """Validated series, each a date-indexed frame of float columns, and what validation noticed.

    One series is a panel of one: its id is implicit (`ONE_SERIES`, `column` None) and `one` keeps
    what validating it reported (rows dropped and filled).
    """

    column: str | None  # the series id column; None: one series, its id implicit
    series: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # series id -> why it was left out
    gaps_filled: dict[str, int] = field(default_factory=dict)  # series id -> rows added for missing periods
    one: ValidatedData | None = None  # one series: its validation report

    @property
    def rows(self) -> int:
        return sum(len(f) for f in self.series.values())


def of_one(data: ValidatedData) -> Panel:
    """One validated series as a panel of one (its id implicit)."""
    return Panel(column=None, series={ONE_SERIES: data.frame}, notes=list(data.notes), one=data)


_LINE_REFS = re.compile(r"\b(lines?) (\d+(?:, \d+)*)")


def file_lines(report: str, positions: np.ndarray, files: np.ndarray, lines: np.ndarray) -> str:
    """A report about one series' rows (lines counted in the group: row + 2) with the file's own lines.

    `positions` are the group's rows in the long table; a series spread over several files names
    the file beside each line.
    """
    spread = len(set(files[positions])) > 1

    def one(number: str) -> str:
        row = int(number) - 2
        if not 0 <= row < len(positions):
            return number
        where = positions[row]
        return f"{files[where]}:{lines[where]}" if spread else str(lines[where])

    return _LINE_REFS.sub(lambda m: f"{m.group(1)} " + ", ".join(one(n) for n in m.group(2).split(", ")), report)


def series_ids(raw: RawData, column: str) -> pd.Series:
    """The series id of each row, as text; DataError naming the lines whose id is empty."""
    if column not in raw.frame.columns:
        raise DataError(f"{raw.source}: column {column!r} (named by data.series_column) is missing; rule: the long "
                        f"table needs a series id column; the header has {[str(c) for c in raw.frame.columns]}")
    ids = raw.frame[column].astype("string").str.strip()
    empty = ids.isna() | (ids == "")
    if empty.any():
        files, lines = provenance(raw)
        where = ", ".join(f"{files[i]} line {lines[i]}" for i in np.flatnonzero(empty.to_numpy())[:5])
        raise DataError(f"{raw.source}: {int(empty.sum())} row(s) without a series id in column {column!r} "
                        f"({where}); rule: every row names its series")
    return ids.astype(str)


def clean_series(raw: RawData, cfg: PipelineConfig, groups: dict[str, np.ndarray],
                 min_rows: int, positive: dict[str, str] | None = None,
                 parsed: ParsedTable | None = None) -> dict[str, pd.DataFrame]:
    """The series that pass the contract as they are, parsed once for the whole table: the quick path.

    `validate_prices` costs about 70 ms a series in pandas overhead (30 s for M4 Hourly's 414
    series). Here the whole table's dates (plain ISO text only) and numbers are parsed at once
    (`schemas.parse_table`), and a series is accepted when every cell parsed, its dates strictly
    increase, it has `min_rows` rows and `schemas.passes_fast` (the contract's own quick check)
    passes. Every other series is judged by `schemas.series_failures` or `validate_prices`.
    """
    parsed = parsed or parse_table(raw.frame, cfg.data)
    values = parsed.values
    ok = parsed.plain & np.logical_and.reduce([np.isfinite(v) for v in values.values()])
    stamps = parsed.dates
    out: dict[str, pd.DataFrame] = {}
    for sid, positions in groups.items():
        if len(positions) < min_rows or not ok[positions].all():
            continue
        when = stamps[positions]
        if (np.diff(when) <= np.timedelta64(0, "ns")).any():
            continue
        frame = pd.DataFrame({DATE: when, **{c: v[positions] for c, v in values.items()}})
        if passes_fast(frame, cfg.data, positive):
            clean = frame.set_index(DATE)
            clean.index.name = cfg.data.date_column
            out[sid] = clean
    return out


def validate_panel(raw: RawData, cfg: PipelineConfig, min_rows: int, one_calendar: bool = True) -> Panel:
    """Validate each series of a long table on its own (`schemas.validate_prices`).

    A series that breaks the contract (or has fewer than `min_rows` rows) fails the run with
    `data.on_bad_series: error`, listed with every other bad series, each message naming the
    series id, the file line and the rule; with `skip` it is logged and left out. The series
    are kept in the order of their ids. With `one_calendar`, a series whose calendar steps unlike the
    table's is a bad series too (`mixed_calendars`); a regular calendar's missing periods are refused
    or filled (`schemas.settle_gaps`).
    """
    column = str(cfg.data.series_column)
    ids = series_ids(raw, column)
    check_columns(raw.frame, cfg.data, raw.source)
    files, lines = provenance(raw)
    wanted = [cfg.data.date_column, *cfg.data.columns]
    panel = Panel(column=column, series={})
    bad: dict[str, str] = {}
    groups = {sid: np.asarray(p) for sid, p in sorted(ids.groupby(ids, sort=False).indices.items())}
    positive = transform_domain(cfg)  # a log transform's values > 0, checked with the contract
    parsed = parse_table(raw.frame, cfg.data)
    quick = clean_series(raw, cfg, groups, min_rows, positive, parsed)
    filled: list[str] = []  # notes of the series whose gaps data.fill_gaps filled
    found = series_failures(raw.frame, parsed, cfg.data, groups, min_rows, positive)  # the whole table at once
    for sid, positions in groups.items():
        where = ", ".join(dict.fromkeys(str(f) for f in files[positions]))
        label = f"{where} series {sid!r}"
        if sid in quick:
            try:
                panel.series[sid], note = settle_gaps(quick[sid], cfg.data, label, positive=positive)
            except DataError as exc:
                bad[sid] = str(exc)
                continue
            if note:
                panel.gaps_filled[sid] = len(panel.series[sid]) - len(quick[sid])
                filled.append(f"series {sid!r}: {note}")
            continue
        if found.get(sid):
            bad[sid] = file_lines(format_report(label, found[sid]), positions, files, lines)
            continue
        rows = raw.frame.iloc[positions][wanted].reset_index(drop=True)
        try:
            data = validate_prices(rows, cfg.data, label, min_rows=min_rows, positive=positive)
        except DataError as exc:
            bad[sid] = file_lines(str(exc), positions, files, lines)
            continue
        panel.series[sid] = data.frame
        if data.gaps_filled:
            panel.gaps_filled[sid] = data.gaps_filled
        panel.notes.extend(f"series {sid!r}: {file_lines(n, positions, files, lines)}" for n in data.notes)
    if one_calendar:  # serving checks each series against its own training calendar instead
        bad.update(mixed_calendars(panel, cfg, files, groups))
    panel.notes.extend(filled[:ERRORS_SHOWN])
    if len(filled) > ERRORS_SHOWN:
        panel.notes.append(f"data.fill_gaps={cfg.data.fill_gaps}: and {len(filled) - ERRORS_SHOWN:,} more series filled "
                           f"({sum(panel.gaps_filled.values()):,} rows in all)")
    return settle_bad_series(raw, cfg, panel, bad)


def mixed_calendars(panel: Panel, cfg: PipelineConfig, files: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, str]:
    """The series whose calendar steps unlike the table's (`data.freq`, else most series'): id -> why.

    One model reads every series' windows and continues each on one rhythm: an hourly series
    among daily ones would be read as daily. Such a series is a bad series (`data.on_bad_series`).
    """
    from pipeline.dates import odd_calendars

    usual, odd = odd_calendars({sid: f.index for sid, f in panel.series.items()}, cfg.data.freq)
    others = (f"data.freq is {usual}" if cfg.data.freq else
              f"{len(panel.series) - len(odd):,} of the {len(panel.series):,} series follow {usual}")
    return {sid: (f"{', '.join(dict.fromkeys(str(f) for f in files[groups[sid]]))} series {sid!r}: its dates follow a "
                  f"{own} calendar, {others}; rule: one calendar for every series of a table (the model's "
                  "windows and forecast dates assume one rhythm): train series of another frequency in a run of "
                  "their own")
            for sid, own in odd.items()}


def settle_bad_series(raw: RawData, cfg: PipelineConfig, panel: Panel, bad: dict[str, str]) -> Panel:
    """`data.on_bad_series` applied to the series that broke the contract (id -> report): fail, or leave them
    out with one warning; DataError when no series is left. Either way the first `ERRORS_SHOWN` series are
    named with their reports, then a count: 20,000 bad series make a message of a few kB, not megabytes."""
    for sid in bad:
        panel.series.pop(sid, None)
    total = len(bad) + len(panel.series)
    if bad and cfg.data.on_bad_series == "error":
        shown = list(bad.values())[:ERRORS_SHOWN]
        more = f"\n... and {len(bad) - ERRORS_SHOWN:,} more bad series" if len(bad) > ERRORS_SHOWN else ""
        report = (f"{raw.source}: {len(bad):,} of {total:,} series break the data contract ({named_few(list(bad))}); "
                  "data.on_bad_series: skip leaves such series out\n" + "\n".join(shown) + more)
        raise DataError(report, report=report)
    summary = ""
    if bad:
        panel.skipped.update(bad)
        summary = skipped_summary(bad, total)
        log.warning("%s", summary)
        panel.notes.append(f"warning: {summary}")
    if not panel.series:
        raise DataError(f"{raw.source}: no series left to train on: every series breaks the data contract"
                        + (f"; {summary}" if summary else ""))
    return panel


def named_few(ids: list[str]) -> str:
    """The first `ERRORS_SHOWN` ids, then how many more."""
    more = f" and {len(ids) - ERRORS_SHOWN:,} more" if len(ids) > ERRORS_SHOWN else ""
    return ", ".join(repr(s) for s in ids[:ERRORS_SHOWN]) + more


def skipped_summary(bad: dict[str, str], total: int) -> str:
    """One line for the series `data.on_bad_series: skip` leaves out: the first `ERRORS_SHOWN` with their broken
    rules, then a count."""
    def why(report: str) -> str:
        details = report.splitlines()[1:] or report.splitlines()[:1]  # a report's rules, or a one-line reason
        return "; ".join(d.strip().removeprefix("- ") for d in details)

    alike: dict[str, list[str]] = {}  # the shown series grouped by what they break
    for sid, report in list(bad.items())[:ERRORS_SHOWN]:
        alike.setdefault(why(report), []).append(repr(sid))
    shown = "; ".join(f"series {', '.join(ids)} ({reason})" for reason, ids in alike.items())
    more = f"; and {len(bad) - ERRORS_SHOWN:,} more" if len(bad) > ERRORS_SHOWN else ""
    return (f"skipping {len(bad):,} of {total:,} series that break the data contract (data.on_bad_series: skip): "
            f"{shown}{more}")


# ---------------------------------------------------------------- `auto` settings for many series
def resolve_panel(raw: RawData, cfg: PipelineConfig, data: Panel) -> tuple[PipelineConfig, Panel]:
    """One config for every series, its `auto` settings resolved from the data (`auto.resolve_frames`: the
    season and transforms most series call for, a log transform only when every series' values are > 0, and a
    lookback the shortest series can feed). A series too short for even that (fewer rows than the lookback and
    the warm-up) is a bad series, settled by `data.on_bad_series` with a report of the rows it needs.
    """
    from pipeline.data.auto import is_resolved, resolve_frames

    if is_resolved(cfg):
        return cfg, data
    resolved = resolve_frames(cfg, list(data.series.values()))
    needed = Preprocessor(resolved).min_input_rows
    if resolved.window.pad:  # a padded window reads one row: the series needs one before its held-out part
        before = {sid: split_by_time(frame.index, resolved.split).test_start for sid, frame in data.series.items()}
        short = {sid: f"series {sid!r}: {len(frame)} rows, {max(0, before[sid])} before its held-out part; rule: a "
                      f"series needs at least {needed} rows before its held-out part for one forecast (window.pad "
                      "holds its first value before it); give it more rows or leave it out"
                 for sid, frame in data.series.items() if before[sid] < needed}
    else:
        short = {sid: f"series {sid!r}: {len(frame)} rows; rule: a series needs at least {needed} rows for one "
                      f"forecast (window.lookback {resolved.window.lookback}, the shortest `auto` chooses for this "
                      "data, and the warm-up); give it more rows or leave it out"
                 for sid, frame in data.series.items() if len(frame) < needed}
    return resolved, settle_bad_series(raw, resolved, data, short) if short else data
