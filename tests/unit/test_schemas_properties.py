"""Property: valid frames corrupted at random either pass the contract or fail with a DataError report.

Nothing else may escape (no KeyError, TypeError, OutOfBoundsDatetime...), and whatever passes
really is clean: finite numbers, strictly increasing dates, positive prices, consistent bars.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from pandera.errors import SchemaErrors  # noqa: E402

from pipeline.config.settings import DataConfig  # noqa: E402
from pipeline.data.contract import DATE, build_schema, passes_fast, validate_prices  # noqa: E402
from pipeline.data.reading import parse_csv  # noqa: E402
from pipeline.errors import DataError  # noqa: E402
from tests.conftest import make_prices  # noqa: E402

COLUMNS = ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
ROWS = 30

cell_values = st.one_of(
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "abc", "1e400", "-0", "0", "-1", "N/A", "2021-02-30",
                     "2021-01-04T10:00:00+02:00", "2021-01-04 00:00:00Z", "9999-12-31", "0001-01-01",
                     "1,5", '"', "'", ";", "\ufeff", " 5 ", "True"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**20, 10**20).map(str),
    st.text(max_size=8),
    st.dates().map(str),
)


@st.composite
def corruption(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["cell", "cell", "cell", "drop_column", "duplicate_row", "swap_rows",
                                 "reverse", "truncate", "rename", "tz_suffix", "bytes"]))
    return (kind, draw(st.integers(0, ROWS - 1)), draw(st.integers(0, ROWS - 1)),
            draw(st.sampled_from(COLUMNS)), draw(cell_values))


def corrupt(frame: pd.DataFrame, changes: list[tuple]) -> bytes:
    df = frame.astype(object)
    edits: list[tuple[int, str]] = []
    for kind, i, j, column, value in changes:
        i, j = i % max(len(df), 1), j % max(len(df), 1)
        if kind == "cell" and len(df) and column in df.columns:
            df.iloc[i, df.columns.get_loc(column)] = value
        elif kind == "drop_column" and column in df.columns:
            df = df.drop(columns=[column])
        elif kind == "duplicate_row" and len(df):
            df = pd.concat([df.iloc[: i + 1], df.iloc[i : i + 1], df.iloc[i + 1 :]], ignore_index=True)
        elif kind == "swap_rows" and len(df):
            order = list(range(len(df)))
            order[i], order[j] = order[j], order[i]
            df = df.iloc[order].reset_index(drop=True)
        elif kind == "reverse":
            df = df.iloc[::-1].reset_index(drop=True)
        elif kind == "truncate":
            df = df.head(i)
        elif kind == "rename" and column in df.columns:
            df = df.rename(columns={column: value or column})
        elif kind == "tz_suffix" and "Date" in df.columns and len(df):
            df.iloc[i:, df.columns.get_loc("Date")] = df["Date"].iloc[i:].astype(str) + " 00:00:00" + value[:6]
        elif kind == "bytes":
            edits.append((i * 37 + j, value[:3]))
    text = df.to_csv(index=False)
    for position, insert in edits:
        position %= max(len(text), 1)
        text = text[:position] + insert + text[position:]
    return text.encode("utf-8", errors="surrogatepass")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(corruption(), min_size=1, max_size=4), seed=st.integers(0, 3),
       policy=st.sampled_from(["error", "drop", "ffill"]))
def test_corrupted_frames_pass_clean_or_fail_with_a_report(changes: list[tuple], seed: int, policy: str) -> None:
    cfg = DataConfig(features=("Open", "High", "Low", "Close", "Adj Close", "Volume"), nan_policy=policy)
    content = corrupt(make_prices(ROWS, seed=seed), changes)
    try:
        raw = parse_csv(content, "corrupt.csv")
        data = validate_prices(raw, cfg, "corrupt.csv", min_rows=10)
    except DataError as exc:
        assert exc.report and exc.report.startswith("corrupt.csv")
        return
    frame = data.frame
    assert len(frame) >= 10
    assert np.isfinite(frame.to_numpy(dtype=float)).all()
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert (frame[["Open", "High", "Low", "Close", "Adj Close"]] > 0).all().all()
    assert (frame["Volume"] >= 0).all()
    assert (frame["High"] >= frame["Low"]).all()
    assert (frame["High"] >= frame[["Open", "Close"]].max(axis=1)).all()
    assert (frame["Low"] <= frame[["Open", "Close"]].min(axis=1)).all()


YAHOO = DataConfig(features=("Open", "High", "Low", "Close", "Adj Close", "Volume"))
YAHOO_SCHEMA = build_schema(YAHOO)

numeric_values = st.one_of(
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1e-300, 1e300]),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells=st.lists(st.tuples(st.integers(0, ROWS - 1), st.sampled_from(COLUMNS[1:]), numeric_values), max_size=3),
       date_swaps=st.lists(st.tuples(st.integers(0, ROWS - 1), st.integers(0, ROWS - 1)), max_size=2),
       bar_swaps=st.lists(st.tuples(st.integers(0, ROWS - 1), st.sampled_from(["Open", "High", "Low", "Close"]),
                                    st.sampled_from(["Open", "High", "Low", "Close"])), max_size=2),
       blank_date=st.one_of(st.none(), st.integers(0, ROWS - 1)), seed=st.integers(0, 3))
def test_the_fast_path_agrees_with_the_pandera_schema(cells, date_swaps, bar_swaps, blank_date, seed) -> None:
    """`passes_fast` may skip pandera only where pandera would pass: both verdicts always agree."""
    cfg = YAHOO
    raw = make_prices(ROWS, seed=seed)
    frame = raw.drop(columns=["Date"]).astype(float)
    frame.insert(0, DATE, pd.to_datetime(raw["Date"]).astype("datetime64[ns]"))
    for row, column, value in cells:
        frame.loc[row, column] = value
    for i, j in date_swaps:
        frame.loc[i, DATE] = frame.loc[j, DATE]
    for row, a, b in bar_swaps:  # one bar's prices swapped: breaks one or two of the row rules
        frame.loc[row, a], frame.loc[row, b] = frame.loc[row, b], frame.loc[row, a]
    if blank_date is not None:
        frame.loc[blank_date, DATE] = pd.NaT
    try:
        YAHOO_SCHEMA.validate(frame, lazy=True)  # built once: the config is the same in every example
        pandera_passes = True
    except SchemaErrors:
        pandera_passes = False
    assert passes_fast(frame, cfg) == pandera_passes


def typed_prices(seed: int = 0) -> pd.DataFrame:
    raw = make_prices(ROWS, seed=seed)
    frame = raw.drop(columns=["Date"]).astype(float)
    frame.insert(0, DATE, pd.to_datetime(raw["Date"]).astype("datetime64[ns]"))
    return frame


def _set(column: str, value: float):
    def edit(frame: pd.DataFrame) -> None:
        frame.loc[5, column] = value
    return edit


def _high_below_open(frame: pd.DataFrame) -> None:
    frame.loc[5, "Open"] = frame.loc[5, "High"] + 0.5
    frame.loc[5, "Low"] = min(frame.loc[5, "Low"], frame.loc[5, "Close"])


def _low_above_close(frame: pd.DataFrame) -> None:
    frame.loc[5, "Close"] = frame.loc[5, "Low"] - 0.5


def _high_below_low(frame: pd.DataFrame) -> None:
    frame.loc[5, ["High", "Low"]] = [frame.loc[5, "Low"], frame.loc[5, "High"]]


def _duplicate_date(frame: pd.DataFrame) -> None:
    frame.loc[5, DATE] = frame.loc[4, DATE]


def _unsorted(frame: pd.DataFrame) -> None:
    frame.loc[5, DATE] = frame.loc[9, DATE] + pd.Timedelta(hours=1)


def _no_date(frame: pd.DataFrame) -> None:
    frame.loc[5, DATE] = pd.NaT


@pytest.mark.parametrize("edit", [
    _set("Close", np.nan), _set("Open", np.inf), _set("Adj Close", -np.inf), _set("Close", 0.0),
    _set("Adj Close", -1.0), _set("Volume", -5.0), _set("Volume", np.nan), _high_below_open, _low_above_close,
    _high_below_low, _duplicate_date, _unsorted, _no_date,
], ids=["nan", "inf", "-inf", "zero price", "negative price", "negative volume", "nan volume",
        "High < Open", "Low > Close", "High < Low", "duplicate date", "unsorted", "no date"])
def test_each_rule_alone_fails_the_fast_path_and_the_schema(edit) -> None:
    cfg = DataConfig(features=("Open", "High", "Low", "Close", "Adj Close", "Volume"))
    frame = typed_prices()
    assert passes_fast(frame, cfg)
    edit(frame)
    assert not passes_fast(frame, cfg)
    with pytest.raises(SchemaErrors):
        build_schema(cfg).validate(frame, lazy=True)


long_cells = st.sampled_from(["", "nan", "inf", "-inf", "abc", "0", "-1", "-0", " 7 ", "1e400", "2.5"])


@st.composite
def long_table(draw: st.DrawFn) -> pd.DataFrame:
    """A long table of a few Yahoo-style series (text cells, as read), each broken at random in a few ways."""
    parts = []
    for k in range(draw(st.integers(1, 4))):
        rows = make_prices(draw(st.integers(1, 14)), seed=k).astype(object)
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["cell", "cell", "date", "swap", "bar", "reverse", "blank date", "other date"]))
            i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(rows) - 1))
            if kind == "cell":
                rows.iloc[i, 1 + draw(st.integers(0, 5))] = draw(long_cells)
            elif kind == "date":  # a repeated or out-of-order date
                rows.iloc[i, 0] = rows.iloc[j, 0]
            elif kind == "swap":
                rows.iloc[[i, j]] = rows.iloc[[j, i]].to_numpy()
            elif kind == "bar":  # a bar's prices swapped: one or two of the row rules
                a, b = draw(st.sampled_from([("High", "Low"), ("Open", "High"), ("Low", "Close")]))
                rows.loc[i, [a, b]] = rows.loc[i, [b, a]].to_numpy()
            elif kind == "reverse":
                rows = rows.iloc[::-1].reset_index(drop=True)
            else:  # dates the exact path must judge: left to it
                rows.iloc[i, 0] = "" if kind == "blank date" else "04/01/2021"
        parts.append(rows.assign(id=f"s{k}").astype(str).replace({"nan": "nan"}))
    return pd.concat(parts, ignore_index=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=long_table(), policy=st.sampled_from(["error", "drop", "ffill"]),
       log_close=st.booleans(), min_rows=st.integers(1, 10))
def test_the_whole_table_check_finds_what_validate_prices_finds(table, policy, log_close, min_rows) -> None:
    """`series_failures` (every series at once) reports each series it judges exactly as `validate_prices` does."""
    from pipeline.data.contract import format_report, parse_table, series_failures

    table = table.mask(table == "")  # read_csv reads an empty cell as missing
    cfg = DataConfig(features=("Open", "High", "Low", "Close", "Adj Close", "Volume"), nan_policy=policy)
    positive = {"Close": "Close > 0 (the log transform's domain)"} if log_close else None
    groups = {sid: np.asarray(p) for sid, p in table.groupby("id", sort=False).indices.items()}
    found = series_failures(table, parse_table(table, cfg), cfg, groups, min_rows, positive)
    for sid, positions in groups.items():
        rows = table.iloc[positions][COLUMNS].reset_index(drop=True)
        try:
            validate_prices(rows, cfg, sid, min_rows=min_rows, positive=positive)
            exact = ""
        except DataError as exc:
            exact = str(exc)
        if sid not in found:  # left to the exact path: only for dates it cannot read or sort, or a nan_policy
            assert rows["Date"].isna().any() or not rows["Date"].str.match(r"^\d{4}-").all() \
                or policy != "error" or pd.to_datetime(rows["Date"]).is_monotonic_decreasing
            continue
        assert (format_report(sid, found[sid]) if found[sid] else "") == exact
