"""bench/suite.py's pure parts: reading and subsampling the sets, the minimal config, scoring with the 80 %
coverage, the peers' output, the combination, the results file and the tables it writes into the docs.
None of them needs statsforecast (which lives in .venv-bench)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.m4 import stderr_tail
from bench.suite import (
    BEGIN,
    END,
    SETS,
    Row,
    _span,
    combine,
    load_set,
    mean_row,
    merge_rows,
    minimal_config,
    peer_output,
    render_set,
    replace_section,
    score_forecasts,
)
from pipeline.config.settings import parse_config


@pytest.fixture
def m3_dir(tmp_path):
    """A quarterly M3-like pair: three series on real quarter starts, each holding out its last 8 values."""
    folder = tmp_path / "m3"
    folder.mkdir()
    train, test = [], []
    for k, (sid, start) in enumerate([("N1", "1980-01-01"), ("N2", "1991-04-01"), ("N3", "1975-07-01")]):
        dates = pd.date_range(start, periods=20 + 8 + k, freq="QS")
        values = 100.0 + 10 * k + np.arange(len(dates))
        frame = pd.DataFrame({"series": sid, "date": dates.strftime("%Y-%m-%d"), "value": values})
        train.append(frame.iloc[:-8])
        test.append(frame.iloc[-8:])
    pd.concat(train).to_csv(folder / "quarterly-train.csv", index=False)
    pd.concat(test).to_csv(folder / "quarterly-test.csv", index=False)
    return tmp_path


def test_load_m3_set_reads_long_files_in_time_order(m3_dir):
    data = load_set(SETS["m3-quarterly"], m3_dir)
    assert list(data.train) == ["N1", "N2", "N3"]
    assert [len(v) for v in data.train.values()] == [20, 21, 22]
    assert all(len(v) == 8 for v in data.test.values())
    np.testing.assert_array_equal(data.test["N2"], 110.0 + np.arange(21, 29))
    assert data.source == m3_dir / "m3" / "quarterly-train.csv"  # the whole set: the product reads the file as it is
    assert list(data.long.columns) == ["series", "timestamp", "value"]
    assert data.long["timestamp"].dtype.kind == "M"


def test_load_m3_subsample_spreads_over_the_file_and_keeps_held_out_values(m3_dir):
    data = load_set(SETS["m3-quarterly"], m3_dir, series=2)
    assert list(data.train) == list(data.test) == ["N1", "N3"]  # the first and the last, not the first two
    assert set(data.long["series"]) == {"N1", "N3"} and len(data.long) == 42
    assert data.source is None  # a subsample is written to the work folder, not read from the shared file


def test_load_m3_refuses_a_series_without_held_out_values(m3_dir):
    held = pd.read_csv(m3_dir / "m3" / "quarterly-test.csv")
    held[held["series"] != "N3"].to_csv(m3_dir / "m3" / "quarterly-test.csv", index=False)
    with pytest.raises(ValueError, match="N3"):
        load_set(SETS["m3-quarterly"], m3_dir)


def test_load_m4_set_converts_wide_files(tmp_path):
    folder = tmp_path / "m4"
    folder.mkdir()
    (folder / "Hourly-train.csv").write_text('"V1","V2","V3","V4"\n"H1",1,2,3\n"H2",5,6,\n"H3",7,8,9\n')
    (folder / "Hourly-test.csv").write_text('"V1","V2"\n"H1",4\n"H2",7\n"H3",10\n')
    data = load_set(SETS["m4-hourly"], tmp_path, series=3)
    assert list(data.train) == ["H1", "H2", "H3"]
    np.testing.assert_array_equal(data.train["H2"], [5, 6])
    assert len(data.long) == 8 and data.long["timestamp"].diff().dropna().eq(pd.Timedelta(hours=1)).any()


@pytest.mark.parametrize("name", list(SETS))
def test_minimal_config_names_only_columns_horizon_and_tail(name):
    spec = SETS[name]
    cfg = minimal_config(spec, f"{name}-auto")
    assert set(cfg) == {"name", "data", "window", "split"}
    assert cfg["window"] == {"horizon": spec.horizon} and cfg["split"] == {"val": spec.horizon, "test": spec.horizon}
    assert set(cfg["data"]) == {"series_column", "date_column", "target", "features"}
    parsed = parse_config({**cfg, "data": {**cfg["data"], "source": "x.csv"}})  # the product accepts it
    assert parsed.window.lookback == "auto" and parsed.window.horizon == spec.horizon
    assert parsed.data.date_column == ("timestamp" if spec.wide else "date")


def test_score_forecasts_adds_the_80_percent_coverage():
    train = {"a": np.array([1.0, 2.0, 3.0, 4.0]), "b": np.array([10.0, 10.0, 12.0, 12.0])}
    test = {"a": np.array([5.0, 6.0]), "b": np.array([12.0, 12.0])}
    point = {"a": np.array([5.0, 6.0]), "b": np.array([11.0, 13.0])}
    bands = {80: {"a": (np.array([4.5, 6.5]), np.array([5.5, 7.0])), "b": (np.array([11.0, 11.0]), np.array([13.0, 13.0]))},
             95: {"a": (np.array([4.0, 5.0]), np.array([6.0, 7.0])), "b": (np.array([10.0, 10.0]), np.array([14.0, 14.0]))}}
    s = score_forecasts(point, bands, train, test, season=1)
    assert s.cov80 == pytest.approx((0.5 + 1.0) / 2)
    assert s.cov95 == pytest.approx(1.0)
    # MASE: a perfect, b errs 1 per step over an in-sample naive error of 2/3
    assert s.mase == pytest.approx((0.0 + 1.0 / (2 / 3)) / 2)
    assert s.smape == pytest.approx((0 + (200 / 23 + 200 / 25) / 2) / 2)  # per point 200 |e| / (|a| + |f|)
    # MSIS: width / scale, no misses: a (2/1), b (4 / (2/3))
    assert s.msis == pytest.approx((2.0 + 6.0) / 2)
    no_bands = score_forecasts(point, {}, train, test, season=1)
    assert math.isnan(no_bands.cov80) and math.isnan(no_bands.msis)


def test_score_forecasts_refuses_short_intervals():
    train, test = {"a": np.arange(1.0, 5.0)}, {"a": np.array([5.0, 6.0])}
    bands = {80: {"a": (np.array([4.0]), np.array([6.0]))}}
    with pytest.raises(ValueError, match="series a"):
        score_forecasts({"a": np.array([5.0, 6.0])}, bands, train, test, season=1)


def test_peer_output_orders_by_date_and_maps_the_bands():
    frame = pd.DataFrame({"unique_id": ["b", "a", "a", "b"], "ds": ["2000-02-01", "2000-02-01", "2000-01-01", "2000-01-01"],
                          "AutoETS": [4.0, 2.0, 1.0, 3.0],
                          "AutoETS-lo-80": [3.5, 1.5, 0.5, 2.5], "AutoETS-hi-80": [4.5, 2.5, 1.5, 3.5],
                          "AutoETS-lo-95": [3.0, 1.0, 0.0, 2.0], "AutoETS-hi-95": [5.0, 3.0, 2.0, 4.0]})
    point, bands = peer_output(frame, "AutoETS")
    np.testing.assert_array_equal(point["a"], [1.0, 2.0])
    np.testing.assert_array_equal(point["b"], [3.0, 4.0])
    np.testing.assert_array_equal(bands[80]["b"][0], [2.5, 3.5])
    np.testing.assert_array_equal(bands[95]["a"][1], [2.0, 3.0])


def test_combine_averages_points_and_bounds():
    one = ({"a": np.array([1.0, 2.0])}, {80: {"a": (np.array([0.0, 1.0]), np.array([2.0, 3.0]))}})
    two = ({"a": np.array([3.0, 4.0])}, {80: {"a": (np.array([2.0, 3.0]), np.array([4.0, 5.0]))}})
    point, bands = combine([one, two])
    np.testing.assert_array_equal(point["a"], [2.0, 3.0])
    np.testing.assert_array_equal(bands[80]["a"][0], [1.0, 2.0])
    assert 95 not in bands


def test_mean_row_averages_the_seeds():
    rows = [Row("m3-yearly", "product", "1", 10, 10.0, 1.0, 5.0, 0.8, 0.9, 100.0, 150.0),
            Row("m3-yearly", "product", "2", 10, 12.0, 3.0, 7.0, 0.7, 1.0, 120.0, 170.0)]
    mean = mean_row(rows)
    assert (mean.seed, mean.smape, mean.mase, mean.cov95, mean.cpu_s) == ("mean", 11.0, 2.0, 0.95, 160.0)
    assert mean.note == "2 seeds"


def test_merge_rows_replaces_only_the_methods_run_on_their_sets():
    old = pd.DataFrame([vars(r) for r in [Row("m3-yearly", "product", "1", smape=1.0), Row("m3-yearly", "product", "2"),
                                          Row("m3-yearly", "Naive", smape=2.0), Row("m3-monthly", "product", "1")]])
    merged = merge_rows(old, [Row("m3-yearly", "product", "1", smape=3.0)])
    assert sorted(zip(merged["set"], merged["method"], merged["smape"].fillna(0))) == [
        ("m3-monthly", "product", 0), ("m3-yearly", "Naive", 2.0), ("m3-yearly", "product", 3.0)]
    assert len(merge_rows(old, [])) == 4


def test_render_set_tables_seeds_means_and_refusals():
    results = pd.DataFrame([vars(r) for r in [
        Row("m3-yearly", "statsforecast AutoETS", "", 645, 16.19, 2.695, 30.1, 0.7, 0.836, 12.0, 11.5),
        Row("m3-yearly", "product, auto config", "1", 645, note="refused (exit 2): series N1 break the data contract"),
        Row("m3-monthly", "statsforecast Naive", "", 1428, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    ]])
    text = render_set(results, SETS["m3-yearly"], "README figures")
    assert "| statsforecast AutoETS |  | 16.190 | 2.695 | 30.10 | 0.700 | 0.836 | 12 s | 12 s |" in text
    assert "| product, auto config | 1 (refused) |" in text
    assert "- product, auto config (seed 1): refused (exit 2): series N1 break the data contract" in text
    assert "Naive" not in text and "645 series, horizon 6, season 1" in text and "README figures" in text
    assert "Not run yet" in render_set(results, SETS["m3-quarterly"], "README figures")
    mean = pd.DataFrame([vars(Row("m3-yearly", "product", "mean", 645, 1, 1, 1, 1, 1, 1, 1, note="3 seeds"))])
    assert "| product | **mean of 3** |" in render_set(mean, SETS["m3-yearly"], "")


def test_span_shortens_one_day():
    assert _span("2026-12-06 09:34", "2026-12-06 10:12") == "2026-12-06 09:34-10:12"
    assert _span("2026-12-06 23:50", "2026-12-07 00:10") == "2026-12-06 23:50 to 2026-12-07 00:10"


def test_replace_section_rewrites_only_between_the_markers():
    text = f"# Title\nbefore\n{BEGIN}\nold table\n{END}\nafter\n"
    out = replace_section(text, "new table\n")
    assert out == f"# Title\nbefore\n{BEGIN}\nnew table\n{END}\nafter\n"
    assert replace_section(out, "new table") == out
    with pytest.raises(ValueError, match="markers"):
        replace_section("no markers here", "x")


def test_stderr_tail_keeps_the_refusal():
    err = "INFO starting\n\nerror: data/x.csv: 3 series break the data contract\n  N1 needs at least 20 rows\n"
    assert stderr_tail(err, lines=2) == "error: data/x.csv: 3 series break the data contract | N1 needs at least 20 rows"
