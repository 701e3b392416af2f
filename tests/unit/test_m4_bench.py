"""bench/m4.py: the wide -> long conversion round trip and M4 scoring checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.m4 import (
    comparison_table,
    forecasts_to_wide,
    long_to_wide,
    rank_among,
    read_wide,
    score_m4,
    seasonal_naive,
    wide_to_long,
)


@pytest.fixture
def wide_csv(tmp_path):
    """Three series of unequal length, padded with empty cells as M4's files are."""
    path = tmp_path / "Hourly-train.csv"
    path.write_text('"V1","V2","V3","V4","V5"\n"H1",1,2,3,4\n"H2",10.5,11,,\n"H3",7,8,9,\n')
    return path


def test_read_wide_drops_padding(wide_csv):
    series = read_wide(wide_csv)
    assert list(series) == ["H1", "H2", "H3"]
    np.testing.assert_array_equal(series["H2"], [10.5, 11.0])
    np.testing.assert_array_equal(series["H3"], [7.0, 8.0, 9.0])


def test_wide_long_round_trip(wide_csv):
    series = read_wide(wide_csv)
    long = wide_to_long(series)
    assert list(long.columns) == ["series", "timestamp", "value"]
    assert len(long) == 4 + 2 + 3
    h1 = long[long["series"] == "H1"]
    assert list(h1["timestamp"]) == list(pd.date_range("2000-01-01", periods=4, freq="h"))  # hourly, times kept
    back = long_to_wide(long.sample(frac=1.0, random_state=0))  # row order must not matter
    assert list(back) == ["H1", "H2", "H3"]
    for sid, values in series.items():
        np.testing.assert_array_equal(back[sid], values)


def test_round_trip_through_csv(wide_csv, tmp_path):
    long = wide_to_long(read_wide(wide_csv))
    long.to_csv(tmp_path / "long.csv", index=False)
    read = pd.read_csv(tmp_path / "long.csv", parse_dates=["timestamp"])
    back = long_to_wide(read)
    np.testing.assert_array_equal(back["H1"], [1, 2, 3, 4])


def test_forecasts_to_wide_orders_by_step():
    frame = pd.DataFrame({"series": ["A", "B", "A", "B"], "origin": 0, "step": [2, 1, 1, 2],
                          "date": "x", "forecast": [20.0, 1.0, 10.0, 2.0]})
    out = forecasts_to_wide(frame)
    np.testing.assert_array_equal(out["A"], [10.0, 20.0])
    np.testing.assert_array_equal(out["B"], [1.0, 2.0])


def test_score_by_hand():
    # season 2, horizon 2.
    # A: train [1, 3, 2, 4] -> seasonal-naive errors |2-1|, |4-3| -> scale 1.
    #    test [4, 6], forecast [5, 5]: MAE 1 -> MASE 1; sMAPE mean(200*1/9, 200*1/11) = 20.20202...
    # B: train [10, 10, 14, 10] -> errors 4, 0 -> scale 2.
    #    test [10, 10], forecast [10, 14]: MAE (0 + 4) / 2 = 2 -> MASE 1;
    #    sMAPE mean(0, 200*4/24) = 16.666...
    train = {"A": np.array([1.0, 3, 2, 4]), "B": np.array([10.0, 10, 14, 10])}
    test = {"A": np.array([4.0, 6]), "B": np.array([10.0, 10])}
    fc = {"A": np.array([5.0, 5]), "B": np.array([10.0, 14])}
    score = score_m4(fc, train, test, season=2)
    assert score.per_series.loc["A", "mase"] == pytest.approx(1.0)
    assert score.per_series.loc["B", "mase"] == pytest.approx(1.0)
    assert score.per_series.loc["A", "smape"] == pytest.approx((200 / 9 + 200 / 11) / 2)
    assert score.per_series.loc["B", "smape"] == pytest.approx(100 / 6)
    # M4 averages over series, not over points
    assert score.smape == pytest.approx(((200 / 9 + 200 / 11) / 2 + 100 / 6) / 2)
    assert score.mase == pytest.approx(1.0)


def test_score_mase_is_mean_of_series_ratios_not_pooled():
    # A: scale 1, MAE 1 -> 1.  B: scale 10, MAE 1 -> 0.1.  Mean 0.55 (a pooled MAE/scale would give 2/11).
    train = {"A": np.array([0.0, 1, 2, 3]), "B": np.array([0.0, 10, 20, 30])}
    test = {"A": np.array([5.0]), "B": np.array([5.0])}
    fc = {"A": np.array([6.0]), "B": np.array([6.0])}
    assert score_m4(fc, train, test, season=1).mase == pytest.approx(0.55)


def test_score_rejects_missing_or_short_forecasts():
    train = {"A": np.arange(10.0)}
    test = {"A": np.array([1.0, 2.0])}
    with pytest.raises(ValueError, match="series A"):
        score_m4({}, train, test)
    with pytest.raises(ValueError, match="series A: expected 2"):
        score_m4({"A": np.array([1.0])}, train, test)


def test_seasonal_naive_repeats_last_season():
    out = seasonal_naive({"A": np.arange(6.0)}, horizon=5, season=2)
    np.testing.assert_array_equal(out["A"], [4, 5, 4, 5, 4])


def test_rank_and_table():
    published = pd.DataFrame({
        "method": ["238 Doornik", "118 Smyl", "sNaive", "RNN benchmark", "x ML"],
        "type": ["Combination (S)", "Hybrid", "benchmark", "benchmark", "Machine Learning"],
        "smape": [8.9, 9.3, 13.9, 14.7, 14.0],
        "mase": [0.80, 0.89, 1.19, 3.05, 1.21],
    })
    assert rank_among(published, 9.0, 0.85) == (2, 2)
    assert rank_among(published, 8.0, 0.5) == (1, 1)
    table = comparison_table(published, {"ours": (10.0, 0.9)})
    assert list(table["method"]) == ["238 Doornik", "118 Smyl", "ours", "sNaive", "x ML (best pure ML)", "RNN benchmark"]
    assert table.loc[table["method"] == "ours", ["rank_smape", "rank_mase"]].iloc[0].tolist() == [3, 3]
