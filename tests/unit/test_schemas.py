"""The data contract: every broken rule reported with file, column, line and rule; tolerated quirks pass."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import DataConfig, parse_config
from pipeline.data.contract import validate_prices
from pipeline.data.reading import parse_csv
from pipeline.errors import DataError
from tests.conftest import OHLCV, make_prices

CFG = DataConfig(features=OHLCV)  # Date + Open, High, Low, Close, Volume; target Close
MIN_ROWS = 10
SOURCE = "prices.csv"


def validate(frame: pd.DataFrame, cfg: DataConfig = CFG, min_rows: int = MIN_ROWS):
    """Write the frame as CSV text and validate it the way the flow does."""
    raw = parse_csv(frame.to_csv(index=False).encode(), SOURCE)
    return validate_prices(raw, cfg, SOURCE, min_rows=min_rows)


def failure(frame: pd.DataFrame, cfg: DataConfig = CFG, min_rows: int = MIN_ROWS) -> str:
    with pytest.raises(DataError) as info:
        validate(frame, cfg, min_rows)
    assert info.value.report == str(info.value)
    return str(info.value)


def with_cells(**cells: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A change setting `column__row=value` cells of a copy (row is the frame's 0-based row)."""
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({c: object for c in df.columns})
        for key, value in cells.items():
            column, row = key.rsplit("__", 1)
            df.loc[int(row), column.replace("_", " ")] = value
        return df
    return change


# (change to the valid frame, words the message must hold) -- file lines are row + 2
BAD = {
    "text in a number column": (with_cells(Open__3="abc"), ["column 'Open'", "line 5", "'abc'", "a number"]),
    "NaN in the target": (with_cells(Close__3=np.nan), ["column 'Close'", "line 5", "not empty"]),
    "NaN in a feature": (with_cells(Volume__7=np.nan), ["column 'Volume'", "line 9", "data.nan_policy"]),
    "infinite value": (with_cells(Open__5=np.inf), ["column 'Open'", "line 7", "finite"]),
    "text inf": (with_cells(High__5="-inf"), ["column 'High'", "line 7", "finite"]),
    "duplicate dates": (with_cells(Date__4="2021-01-07"), ["column 'Date'", "line 5", "line 6", "unique dates"]),
    "unparseable date": (with_cells(Date__4="31/31/2021"), ["column 'Date'", "line 6", "'31/31/2021'", "a date"]),
    "empty date": (with_cells(Date__4=""), ["column 'Date'", "line 6", "not empty"]),
    "mixed time zones": (lambda df: df.assign(Date=[d + (" 09:30:00+00:00" if i < 20 else " 09:30:00-05:00")
                                                for i, d in enumerate(df["Date"])][:len(df)]),
                         ["column 'Date'", "line 2", "one time zone"]),
    "offset on some dates only": (with_cells(Date__2="2021-01-06 00:00:00Z"), ["column 'Date'", "line 4", "one time zone"]),
    "zero price": (with_cells(Close__3=0.0), ["column 'Close'", "line 5", "price > 0"]),
    "negative price": (with_cells(Adj_Close__3=-1.0), ["column 'Adj Close'", "line 5", "price > 0"]),
    "High below Low": (lambda df: with_cells(High__8=df.loc[8, "Low"] - 1)(df), ["'High', 'Low'", "line 10", "High >= Low"]),
    "negative volume": (with_cells(Volume__8=-5.0), ["column 'Volume'", "line 10", "volume >= 0"]),
    "shuffled dates": (lambda df: df.iloc[[0, 2, 1, *range(3, len(df))]].reset_index(drop=True),
                       ["column 'Date'", "line 4", "increasing order"]),
    "too few rows": (lambda df: df.head(6), ["whole table", "6 rows", "at least 10 rows"]),
}


@pytest.mark.parametrize("case", BAD)
def test_each_broken_rule_is_reported_with_column_line_and_rule(case: str) -> None:
    change, words = BAD[case]
    cfg = DataConfig(features=("Open", "High", "Low", "Close", "Volume", "Adj Close"))
    message = failure(change(make_prices(40)), cfg)
    assert message.startswith(SOURCE)
    for word in words:
        assert word in message, f"{case}: {word!r} not in\n{message}"


def test_every_rule_is_reported_at_once() -> None:
    bad = with_cells(Open__3="abc", Close__10=-2.0, Volume__12=-1.0, Date__20="nope")(make_prices(40))
    message = failure(bad)
    assert "5 value(s) break 5 rule(s)" in message  # Close -2 also falls below Low
    for word in ("line 5", "line 12", "line 14", "line 22"):
        assert word in message


def test_many_failures_show_the_first_rows_and_a_count() -> None:
    bad = make_prices(40)
    bad.loc[5:30, "Volume"] = -1.0
    message = failure(bad)
    assert "line 7 (-1), line 8 (-1)" in message and "and 21 more" in message
    assert "line 12" not in message


def test_missing_column_names_the_config_field_and_the_header() -> None:
    message = failure(make_prices(40).drop(columns=["Volume"]))
    assert "'Volume' (named by data.features)" in message
    assert "['Date', 'Open', 'High', 'Low', 'Close', 'Adj Close']" in message


def test_config_naming_absent_columns() -> None:
    cfg = parse_config({"data": {"date_column": "Timestamp", "target": "Price", "features": ["Price", "Open"]}}).data
    message = failure(make_prices(40), cfg)
    assert "'Timestamp' (named by data.date_column)" in message
    assert "'Price' (named by data.target, data.features)" in message


def test_a_valid_frame_comes_back_typed_and_indexed_by_date() -> None:
    data = validate(make_prices(40))
    assert data.frame.index.name == "Date" and data.frame.index.is_monotonic_increasing
    assert list(data.frame.columns) == ["Open", "High", "Low", "Close", "Volume"]
    assert all(dtype == np.float64 for dtype in data.frame.dtypes)
    assert data.notes == [] and data.rows_dropped == data.rows_filled == 0


def test_typed_frames_validate_too() -> None:
    frame = make_prices(40)
    frame["Date"] = pd.to_datetime(frame["Date"])
    assert len(validate_prices(frame, CFG, "rows", min_rows=MIN_ROWS).frame) == 40


def test_reversed_order_is_sorted_with_a_note() -> None:
    prices = make_prices(40)
    data = validate(prices.iloc[::-1])
    assert data.frame.index.is_monotonic_increasing
    assert data.frame["Close"].iloc[0] == pytest.approx(prices["Close"].iloc[0])
    assert any("descending date order; sorted ascending" in n for n in data.notes)


def test_reversed_order_still_reports_file_lines() -> None:
    bad = make_prices(40)
    bad.loc[0, "Volume"] = -1.0  # first row by date, last line of the reversed file
    assert "line 41" in failure(bad.iloc[::-1])


def test_a_long_gap_is_a_warning_not_an_error() -> None:
    prices = make_prices(40)
    dates = pd.to_datetime(prices["Date"])
    dates.iloc[20:] += pd.Timedelta(days=120)
    data = validate(prices.assign(Date=dates.dt.strftime("%Y-%m-%d")))
    warnings = [n for n in data.notes if n.startswith("warning")]
    assert len(warnings) == 1 and "gap of 123 day(s)" in warnings[0] and "usual spacing 1 day(s)" in warnings[0]


def test_weekends_are_not_gaps() -> None:
    assert validate(make_prices(60)).notes == []


def test_daylight_saving_offsets_are_one_zone() -> None:
    prices = make_prices(40)
    offsets = ["-05:00" if i < 20 else "-04:00" for i in range(40)]
    data = validate(prices.assign(Date=[f"{d} 00:00:00{o}" for d, o in zip(prices["Date"], offsets)]))
    assert list(data.frame.index.strftime("%Y-%m-%d")) == list(prices["Date"])  # local dates kept


@pytest.mark.parametrize("policy", ["drop", "ffill"])
def test_nan_policy_keeps_going_and_counts_the_rows(policy: str) -> None:
    prices = with_cells(Volume__7=np.nan, Open__12="")(make_prices(40))
    cfg = CFG.model_copy(update={"nan_policy": policy})
    data = validate(prices, cfg)
    assert not data.frame.isna().any().any()
    if policy == "drop":
        assert data.rows_dropped == 2 and len(data.frame) == 38
    else:
        assert data.rows_filled == 2 and len(data.frame) == 40
        assert data.frame["Volume"].iloc[7] == data.frame["Volume"].iloc[6]
    assert any(f"nan_policy={policy}" in n and "2 row(s)" in n and "lines 9, 14" in n for n in data.notes)


def test_nan_policy_never_touches_the_target_or_text() -> None:
    cfg = CFG.model_copy(update={"nan_policy": "drop"})
    assert "column 'Close'" in failure(with_cells(Close__7=np.nan)(make_prices(40)), cfg)
    assert "'abc'" in failure(with_cells(Open__7="abc")(make_prices(40)), cfg)


def test_dropping_too_many_rows_fails_on_the_row_count() -> None:
    prices = make_prices(12)
    prices.loc[2:6, "Volume"] = np.nan
    message = failure(prices, CFG.model_copy(update={"nan_policy": "drop"}))
    assert "7 rows" in message and "at least 10 rows" in message


def monthly(n: int = 40, drop: tuple[int, ...] = ()) -> pd.DataFrame:
    dates = pd.date_range("2020-01-01", periods=n, freq="MS")
    values = 100 + np.arange(n, dtype=float)
    frame = pd.DataFrame({"month": dates.strftime("%Y-%m-%d"), "sales": values.astype(str)})
    return frame.drop(index=list(drop)).reset_index(drop=True)


def monthly_config(**data: object) -> DataConfig:
    return DataConfig(date_column="month", target="sales", features=("sales",), price_columns=(), volume_column=None,
                      **data)


def test_a_missing_month_is_refused_naming_the_dates_and_the_rule() -> None:
    """It trained with no word: windows spanned the gap and forecast dates were one period off."""
    with pytest.raises(DataError) as caught:
        validate_prices(monthly(drop=(10,)), monthly_config(), "sales.csv", min_rows=10)
    assert str(caught.value) == (
        "sales.csv: 1 missing date(s) in the MS calendar of column 'month': 2020-11-01; rule: every period between "
        "the first and the last date (windows would span the gap and forecast dates shift); add the rows, or set "
        "data.fill_gaps to forward, interpolate or zero")
    with pytest.raises(DataError, match=r": 2020-03-01, 2020-04-01, 2020-05-01, 2020-06-01, 2020-07-01 and 2 more;"):
        validate_prices(monthly(drop=tuple(range(2, 9))), monthly_config(), "sales.csv", min_rows=10)


@pytest.mark.parametrize(("method", "filled"), [("forward", 109.0), ("interpolate", 110.0), ("zero", 0.0)])
def test_each_fill_mode_fills_the_gap_and_notes_it(method: str, filled: float) -> None:
    data = validate_prices(monthly(drop=(10,)), monthly_config(fill_gaps=method), "sales.csv", min_rows=10)
    assert len(data.frame) == 40 and data.gaps_filled == 1
    assert data.frame.loc["2020-11-01", "sales"] == pytest.approx(filled, rel=1e-3)  # interpolate: 109 + 2 * 31 / 61
    assert data.notes == [f"data.fill_gaps={method}: filled 1 missing date(s) of the MS calendar: 2020-11-01"]
    assert data.frame.index.is_monotonic_increasing and data.frame.index.name == "month"
    assert data.frame.index.dtype == "datetime64[ns]"


def test_an_empty_target_is_refused_naming_fill_gaps_or_filled_as_a_missing_period() -> None:
    """A blank target cell (weekly CO2 readings with missing weeks) is a missing period: refused naming the line and
    data.fill_gaps, or filled by it as an absent row is."""
    frame = monthly()
    frame.loc[[10, 11], "sales"] = ""
    frame.loc[20, "sales"] = "n/a"
    with pytest.raises(DataError) as caught:
        validate_prices(frame, monthly_config(), "sales.csv", min_rows=10)
    assert "column 'sales', rule 'not empty (no blank cell or NaN); or set data.fill_gaps to forward, interpolate " \
           "or zero (an empty target is a missing period)': line 12 (nan), line 13 (nan)" in str(caught.value)
    with pytest.raises(DataError, match=r"'n/a'"):  # text is no missing period: still refused
        validate_prices(frame, monthly_config(fill_gaps="interpolate"), "sales.csv", min_rows=10)
    frame.loc[20, "sales"] = "120"
    data = validate_prices(frame, monthly_config(fill_gaps="interpolate"), "sales.csv", min_rows=10)
    assert len(data.frame) == 40 and data.gaps_filled == 2 and data.rows_dropped == 2
    assert data.frame["sales"].iloc[9:13].round(1).tolist() == [109.0, 110.0, 111.0, 112.0]
    assert data.notes == ["data.fill_gaps=interpolate: 2 row(s) with an empty 'sales' (lines 12, 13) read as missing "
                          "periods",
                          "data.fill_gaps=interpolate: filled 2 missing date(s) of the MS calendar: 2020-11-01, 2020-12-01"]


def test_business_days_with_market_holidays_are_not_gaps() -> None:
    prices = make_prices(60)
    holidays = prices["Date"].isin(["2021-01-18", "2021-02-15"])  # Martin Luther King Day, Presidents' Day
    data = validate(prices[~holidays].reset_index(drop=True))
    assert data.gaps_filled == 0 and data.notes == []


def test_the_hour_daylight_saving_skips_is_no_gap_but_a_missing_hour_is() -> None:
    """Dates with UTC offsets are read at local time: spring's skipped local hour is judged on UTC instants."""
    instants = pd.date_range("2024-03-09 20:00", periods=36, freq="h", tz="America/New_York")  # over 10 March
    text = [t.isoformat(sep=" ") for t in instants]
    frame = pd.DataFrame({"month": text, "sales": [str(100.0 + i) for i in range(36)]})
    cfg = DataConfig(date_column="month", target="sales", features=("sales",), price_columns=(), volume_column=None)
    data = validate_prices(frame, cfg, "hourly.csv", min_rows=10)
    assert len(data.frame) == 36 and data.gaps_filled == 0 and data.notes == []
    assert "2024-03-10 02:00:00" not in set(data.frame.index.astype(str))  # the local hour that does not exist
    with pytest.raises(DataError, match=r"1 missing date\(s\) in the h calendar of column 'month': 2024-03-10 05:00:00;"):
        validate_prices(frame.drop(index=8).reset_index(drop=True), cfg, "hourly.csv", min_rows=10)
    filled = validate_prices(frame.drop(index=8).reset_index(drop=True), cfg.model_copy(update={"fill_gaps": "zero"}),
                             "hourly.csv", min_rows=10)
    assert filled.gaps_filled == 1 and filled.frame.loc["2024-03-10 05:00:00", "sales"] == 0.0


def test_local_clock_times_missing_the_spring_hour_are_refused_with_a_hint() -> None:
    """Dates written in local time without offsets miss the hour a spring clock change skips: the refusal says why."""
    local = pd.date_range("2024-03-09 20:00", periods=36, freq="h", tz="America/New_York").tz_localize(None)
    frame = pd.DataFrame({"month": local.strftime("%Y-%m-%d %H:%M"), "sales": [str(100.0 + i) for i in range(36)]})
    cfg = DataConfig(date_column="month", target="sales", features=("sales",), price_columns=(), volume_column=None)
    with pytest.raises(DataError, match=r"1 missing date\(s\) .*: 2024-03-10 02:00:00; .*a daylight-saving change "
                                        r"skips an hour each spring: write them with their UTC offset"):
        validate_prices(frame, cfg, "hourly.csv", min_rows=10)
    with pytest.raises(DataError) as many:  # hours missing here and there: no such hint
        validate_prices(frame.drop(index=[3, 20]).reset_index(drop=True), cfg, "hourly.csv", min_rows=10)
    assert "3 missing date(s)" in str(many.value) and "daylight" not in str(many.value)


def test_zero_filling_under_a_log_transform_is_refused() -> None:
    """A 0 written into a column whose log is taken would surface as -inf inside training."""
    positive = {"sales": "> 0 for the log transform"}
    with pytest.raises(DataError, match=r"data.fill_gaps=zero would write 0 on 2020-11-01 in column\(s\) \['sales'\]"):
        validate_prices(monthly(drop=(10,)), monthly_config(fill_gaps="zero"), "sales.csv", 10, positive=positive)
    assert validate_prices(monthly(drop=(10,)), monthly_config(fill_gaps="forward"), "sales.csv", 10,
                           positive=positive).gaps_filled == 1
