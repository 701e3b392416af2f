"""Many series in one run: reading a long table, validating each series, per-series splits, stacked windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import panel
from pipeline.config import parse_config
from pipeline.errors import DataError
from pipeline.features import split_by_time
from pipeline.ingest import load_prices
from tests.conftest import long_config_dict, make_long


def test_a_bad_series_fails_the_run_naming_its_id_file_lines_and_rules(long_csv: Path) -> None:
    cfg = parse_config(long_config_dict(str(long_csv)))
    with pytest.raises(DataError) as caught:
        panel.validate_panel(load_prices(str(long_csv)), cfg, min_rows=6)
    text = str(caught.value)
    # C is the third series: rows 80.. of the table; its 6th and 10th rows are file lines 87 and 91
    assert "1 of 5 series" in text and "'C'" in text
    assert "column 'y', rule 'a number': line 87 ('abc')" in text
    assert "column 'y', rule 'price > 0': line 91 (-1)" in text
    assert "'A'" not in text.split("\n", 1)[1]  # only the bad series is reported


def test_every_bad_series_is_listed(long_csv: Path) -> None:
    frame = pd.read_csv(long_csv, dtype=str)
    frame.loc[frame.index[frame["id"] == "A"][3], "ts"] = "not a date"
    frame.to_csv(long_csv, index=False)
    cfg = parse_config(long_config_dict(str(long_csv)))
    with pytest.raises(DataError) as caught:
        panel.validate_panel(load_prices(str(long_csv)), cfg, min_rows=6)
    text = str(caught.value)
    assert "2 of 5 series" in text and "series 'A'" in text and "series 'C'" in text
    assert "column 'ts', rule 'a date (such as 2024-01-31)': line 5 ('not a date')" in text


def test_skip_leaves_the_bad_series_out_and_says_why(long_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config(long_config_dict(str(long_csv), data={"on_bad_series": "skip"}))
    with caplog.at_level("WARNING"):
        result = panel.validate_panel(load_prices(str(long_csv)), cfg, min_rows=6)
    assert list(result.series) == ["A", "B", "D", "E"]
    assert list(result.skipped) == ["C"] and "line 87" in result.skipped["C"]
    assert any("skipping series 'C'" in r.message and "price > 0" in r.message for r in caplog.records)
    assert any("series 'C' skipped" in note and "line 91" in note for note in result.notes)


def test_series_spread_over_files_keep_each_files_lines(tmp_path: Path) -> None:
    frame = make_long("AB", n=20)
    frame.loc[25, "y"] = "x"  # B's 6th row: line 7 of the second file
    frame.iloc[:20].to_csv(tmp_path / "a.csv", index=False)
    frame.iloc[20:].to_csv(tmp_path / "b.csv", index=False)
    raw = panel.load_sources(str(tmp_path))  # a folder of CSVs
    assert len(raw.frame) == 40
    cfg = parse_config(long_config_dict(str(tmp_path)))
    with pytest.raises(DataError, match=r"b.csv series 'B'.*\n.*rule 'a number': line 7 \('x'\)"):
        panel.validate_panel(raw, cfg, min_rows=6)
    listed = panel.load_sources((str(tmp_path / "a.csv"), str(tmp_path / "b.csv")))
    assert listed.digest == raw.digest


def test_files_with_different_headers_are_refused(tmp_path: Path) -> None:
    make_long("A").to_csv(tmp_path / "a.csv", index=False)
    make_long("B").rename(columns={"y": "z"}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(DataError, match="b.csv: header .* differs"):
        panel.load_sources(str(tmp_path))


def test_a_missing_series_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    make_long("A").drop(columns="id").to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path)))
    with pytest.raises(DataError, match="column 'id' \\(named by data.series_column\\) is missing"):
        panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)


def test_split_counted_from_each_series_end() -> None:
    cfg = parse_config({"split": {"val": 48, "test": 48}})
    assert cfg.split.from_end and cfg.split.train is None
    for n in (200, 97):
        bounds = split_by_time(pd.date_range("2024-01-01", periods=n, freq="h"), cfg.split)
        assert (bounds.val_start, bounds.test_start, bounds.n_rows) == (n - 96, n - 48, n)
    assert parse_config({}).split.from_end is False  # the fractions stay the default
    with pytest.raises(Exception, match="whole row counts"):
        parse_config({"split": {"train": None, "val": 0.2, "test": 0.2}})


def test_per_series_bounds_and_forecast_only_series(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    make_long("ABC", n=40, short={"B": 30, "C": 10}).to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path)))
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    preps = panel.prepare_panel(data, cfg)
    a, b, c = preps["A"], preps["B"], preps["C"]
    assert (a.bounds.val_start, a.bounds.test_start) == (32, 36)
    assert (b.bounds.val_start, b.bounds.test_start) == (22, 26)
    # each window's targets lie in one split, counted from that series' end
    assert a.windows["test"].target_positions.tolist() == [[36, 37, 38, 39]]
    assert b.windows["val"].target_positions.tolist() == [[22, 23, 24, 25]]
    assert a.trainable and b.trainable and not c.trainable  # C: 10 rows, no training and test window
    assert c.pre.fitted and c.pre.input_rows <= 10  # still forecast: its preprocessor fit on all its rows
    # each series scaled by its own training rows
    train_a = data.series["A"]["y"].to_numpy()[:32]
    assert np.allclose(a.pre.target_scaler.mean_, train_a.mean())


def test_stacked_windows_gather_the_same_windows() -> None:
    from numpy.lib.stride_tricks import sliding_window_view

    rng = np.random.default_rng(1)
    series = [rng.normal(size=(n + 2, 2)).astype(np.float32) for n in (4, 5, 3)]  # rows of each series
    parts = [sliding_window_view(rows, 3, axis=0).transpose(0, 2, 1) for rows in series]
    parts = [p[1:] if len(p) > 3 else p for p in parts]  # a split's windows need not start at the first row
    parts.insert(1, np.empty((0, 3, 2), dtype=np.float32))  # a series without windows in this split
    stacked = panel.StackedX(parts)
    whole = np.concatenate(parts)
    assert stacked.shape == (10, 3, 2) and len(stacked) == 10
    idx = np.array([9, 0, 4, 5, 3, 8])
    assert np.array_equal(stacked[idx], whole[idx])
    assert np.array_equal(stacked[2:9], whole[2:9])
    assert np.array_equal(np.array(stacked, dtype=np.float32), whole)


def test_the_quick_path_gives_what_validate_prices_gives(tmp_path: Path) -> None:
    """Clean series are parsed once for the whole table; each must equal the exact path's frame."""
    from pipeline.schemas import validate_prices

    path = tmp_path / "long.csv"
    frame = make_long("ABC", n=30)
    frame.loc[frame["id"] == "B", "ts"] = pd.date_range("2024-01-01", periods=30, freq="D").strftime("%Y-%m-%d")
    frame.to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path)))
    raw = load_prices(str(path))
    ids = raw.frame["id"]
    groups = {sid: np.asarray(p) for sid, p in ids.groupby(ids).indices.items()}
    quick = panel.clean_series(raw, cfg, groups, min_rows=6)
    assert sorted(quick) == ["A", "B", "C"]
    for sid, positions in groups.items():
        exact = validate_prices(raw.frame.iloc[positions][["ts", "y"]].reset_index(drop=True), cfg.data, "x", 6).frame
        pd.testing.assert_frame_equal(quick[sid], exact)
    # anything unusual goes the exact way: a time zone offset, a day-first date, a blank, too few rows
    for column, row, value in (("ts", 3, "2024-01-01 03:00:00+01:00"), ("ts", 35, "02/01/2024"), ("y", 70, "")):
        odd = raw.frame.copy()
        odd.loc[row, column] = value
        kept = panel.clean_series(panel.RawData(odd, "x", ""), cfg, groups, min_rows=6)
        assert sorted(kept) == sorted(set("ABC") - {ids[row]}), value
    assert panel.clean_series(raw, cfg, groups, min_rows=31) == {}


def test_rule_names_survive_building_both_schemas() -> None:
    """Validating a plain series and then a Yahoo one in one process (many series do) keeps the rules' names."""
    from pipeline.schemas import build_schema

    plain = parse_config({"data": {"features": ["y"], "target": "y", "price_columns": [], "volume_column": None}})
    yahoo = parse_config({})
    for cfg in (plain, yahoo, plain):
        names = {c.name for c in build_schema(cfg.data).columns["date"].checks}
        assert names == {"dates in increasing order"}, cfg.data.features


def test_backtest_folds_of_many_series_count_from_each_series_end(tmp_path: Path) -> None:
    from pipeline.backtest import panel_fold_config, plan_panel_folds
    from pipeline.ingest import load_prices

    frame = make_long(short={"E": 12})
    frame = frame[frame["id"] != "C"]
    path = tmp_path / "long.csv"
    frame.to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path), backtest={"test_size": 4}))
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=2)
    folds, notes = plan_panel_folds(data, cfg, folds=3)
    assert [f.index for f in folds] == [0, 1, 2] and all(f.step == 4 for f in folds)
    assert any("'E'" in n for n in notes) and all("E" not in f.folds for f in folds)  # 12 rows: too short, a note
    for sid, f in folds[-1].folds.items():  # the last fold ends at each series' own end
        assert f.end == len(data.series[sid]) and f.cutoff == f.end - 4
    for earlier, later in zip(folds, folds[1:]):
        assert all(later.folds[s].cutoff - earlier.folds[s].cutoff == 4 for s in later.folds)
    fcfg = panel_fold_config(cfg, folds[0])
    assert fcfg.split.from_end and fcfg.split.test == 4 and fcfg.split.val == folds[0].val_rows


def auto_config(path: Path, **data: object):
    raw = long_config_dict(str(path), data=data)
    del raw["window"]["lookback"], raw["preprocess"], raw["evaluate"]  # the code's defaults: auto
    raw["data"]["price_columns"] = []
    return parse_config(raw)


def test_auto_settings_over_many_series_follow_most_series(tmp_path: Path) -> None:
    """Hourly series: season 24 from the calendar, a lookback from it, one transform for all; a series with
    a zero rules out the log-based transforms; the resolved config is what the preprocessors get."""
    from pipeline.defaults import is_resolved

    frame = make_long("ABC", n=200)
    trend = frame["id"] == "A"
    frame.loc[trend, "y"] = [f"{10 + 0.5 * i:.4f}" for i in range(int(trend.sum()))]  # A drifts; B and C do not
    path = tmp_path / "long.csv"
    frame.to_csv(path, index=False)
    cfg = auto_config(path)
    raw = load_prices(str(path))
    data = panel.validate_panel(raw, cfg, min_rows=2)
    resolved, kept = panel.resolve_panel(raw, cfg, data)
    assert is_resolved(resolved) and sorted(kept.series) == ["A", "B", "C"]
    assert resolved.evaluate.season_length == 24 and resolved.window.lookback == 48
    assert resolved.preprocess.target_transform == "level"  # two of three series call for it
    panel.prepare_panel(kept, resolved)  # the preprocessors take it as it is

    for sid in "ABC":  # every series drifts now, one of them through zero
        rows = frame["id"] == sid
        frame.loc[rows, "y"] = [f"{(-5 if sid == 'C' else 10) + 0.5 * i:.4f}" for i in range(int(rows.sum()))]
    frame.to_csv(path, index=False)
    raw = load_prices(str(path))
    resolved, _ = panel.resolve_panel(raw, cfg, panel.validate_panel(raw, cfg, min_rows=2))
    assert resolved.preprocess.target_transform == "difference"  # log_return is undefined for C's values <= 0


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_series_too_short_for_the_resolved_lookback_are_bad_series(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "long.csv"
    make_long("ABC", n=200, short={"C": 30}).to_csv(path, index=False)
    cfg = auto_config(path, on_bad_series=policy)
    raw = load_prices(str(path))
    data = panel.validate_panel(raw, cfg, min_rows=2)
    if policy == "error":
        with pytest.raises(DataError, match=r"series 'C': 30 rows; rule: a series needs at least 48 rows"):
            panel.resolve_panel(raw, cfg, data)
        return
    resolved, kept = panel.resolve_panel(raw, cfg, data)
    assert sorted(kept.series) == ["A", "B"] and "C" in kept.skipped and resolved.window.lookback == 48


def test_a_log_transform_on_a_series_with_zeros_is_a_bad_series_at_validation(tmp_path: Path) -> None:
    frame = make_long("AB", n=40)
    frame.loc[(frame["id"] == "B").to_numpy().nonzero()[0][5], "y"] = "0"
    path = tmp_path / "long.csv"
    frame.to_csv(path, index=False)
    raw_cfg = long_config_dict(str(path), preprocess={"target_transform": "log", "default_feature_transform": "log"})
    raw_cfg["data"]["price_columns"] = []
    with pytest.raises(DataError, match=r"(?s)series 'B'.*rule '> 0 for the log transform.*line 47 \(0\)"):
        panel.validate_panel(load_prices(str(path)), parse_config(raw_cfg), min_rows=6)


def test_a_series_task_is_tried_again_only_when_its_work_was_lost() -> None:
    """A Dask worker gone (or any error from the machinery) retries the series; a PipelineError of its own does not."""
    from prefect.states import Completed, Failed

    from flows.tasks import retry_lost_work
    from pipeline.errors import TrainingError

    def failed_with(exc: BaseException):
        return Failed(data=exc)

    assert retry_lost_work(None, None, failed_with(OSError("worker tcp://127.0.0.1:4001 lost"))) is True
    assert retry_lost_work(None, None, failed_with(TrainingError("training diverged at epoch 1"))) is False
    assert retry_lost_work(None, None, Completed(data=1)) is False
