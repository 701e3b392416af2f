"""Many series in one run: reading a long table, validating each series, per-series splits, stacked windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import parse_config
from pipeline.data import panel
from pipeline.data.reading import RawData, load_prices
from pipeline.errors import DataError
from pipeline.features.windows import split_by_time
from pipeline.model import theta
from pipeline.training import steps
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
    assert any("skipping 1 of 5 series" in r.message and "series 'C'" in r.message and "price > 0" in r.message
               for r in caplog.records)
    assert any("series 'C'" in note and "line 91" in note for note in result.notes)


def many_short_series(tmp_path: Path, count: int = 2_000) -> Path:
    """`count` series of 3 rows each (too few for any window), and one broken in more ways."""
    ids = np.repeat([f"s{k:05d}" for k in range(count)], 3)
    dates = np.tile(["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 02:00"], count)
    frame = pd.DataFrame({"id": ids, "ts": dates, "y": np.tile(["10.5", "11", "12"], count)})
    frame.loc[4, "y"] = "-1"  # s00001, its second row: line 6
    path = tmp_path / "short.csv"
    frame.to_csv(path, index=False)
    return path


def refusal(path: Path, **sections: dict) -> str:
    """The whole message with which the long table at `path` is refused."""
    cfg = parse_config(long_config_dict(str(path), **sections))
    with pytest.raises(DataError) as caught:
        panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    return str(caught.value)


def test_thousands_of_bad_series_name_the_first_twenty_then_a_count(tmp_path: Path) -> None:
    path = many_short_series(tmp_path)
    text = refusal(path)
    first = text.splitlines()[0]
    assert "2,000 of 2,000 series" in first and "'s00019' and 1,980 more" in first and "'s00020'" not in first
    assert len(first) < 500 and len(text) < 6_000
    assert text.rstrip().endswith("... and 1,980 more bad series")
    assert f"{path} series 's00001'" in text and "rule 'price > 0': line 6 (-1)" in text  # still precise
    assert "rule 'at least 6 rows for the lookback window, the horizon and every split': '3 rows'" in text


def test_skipping_thousands_of_bad_series_logs_one_summary(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = many_short_series(tmp_path)
    frame = pd.read_csv(path, dtype=str)
    good = make_long("G", n=20).assign(id="good")
    pd.concat([frame, good], ignore_index=True).to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path), data={"on_bad_series": "skip"}))
    with caplog.at_level("WARNING"):
        result = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    assert list(result.series) == ["good"] and len(result.skipped) == 2_000
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and len(warnings[0]) < 1_500
    assert "skipping 2,000 of 2,001 series" in warnings[0] and warnings[0].endswith("and 1,980 more")
    assert "series 's00001' (column 'y', rule 'price > 0': line 6 (-1)" in warnings[0]
    assert len([n for n in result.notes if "skipping" in n]) == 1


def test_the_whole_table_check_is_used_for_bad_series(tmp_path: Path) -> None:
    """20,000 series of 3 rows were refused in 209 s (one pandera run each); the table-wide check takes seconds."""
    import time

    path = many_short_series(tmp_path, count=20_000)
    cfg = parse_config(long_config_dict(str(path)))
    started = time.perf_counter()
    with pytest.raises(DataError):
        panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    assert time.perf_counter() - started < 30  # 1.6 s measured; one pandera run per series: minutes


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
    preps = steps.prepare_panel(data, cfg)
    a, b, c = preps["A"], preps["B"], preps["C"]
    assert (a.bounds.val_start, a.bounds.test_start) == (32, 36)
    assert (b.bounds.val_start, b.bounds.test_start) == (22, 26)
    # each window's targets lie in one split, counted from that series' end
    assert a.windows["test"].target_positions.tolist() == [[36, 37, 38, 39]]
    assert b.windows["val"].target_positions.tolist() == [[22, 23, 24, 25]]
    # C: 10 rows, too few for a training window but one test window: the shared network scores it
    assert a.trainable and b.trainable and c.trainable
    assert not len(c.windows["train"]) and c.windows["test"].target_positions.tolist() == [[6, 7, 8, 9]]
    # one network per series needs the series' own training windows: C is forecast only
    local = steps.prepare_panel(data, parse_config(long_config_dict(str(path), model={"strategy": "local"})))
    assert local["A"].trainable and not local["C"].trainable
    assert local["C"].pre.fitted and local["C"].pre.input_rows <= 10  # its preprocessor fit on all its rows
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
    stacked = steps.StackedX(parts)
    whole = np.concatenate(parts)
    assert stacked.shape == (10, 3, 2) and len(stacked) == 10
    idx = np.array([9, 0, 4, 5, 3, 8])
    assert np.array_equal(stacked[idx], whole[idx])
    assert np.array_equal(stacked[2:9], whole[2:9])
    assert np.array_equal(np.array(stacked, dtype=np.float32), whole)


def test_the_quick_path_gives_what_validate_prices_gives(tmp_path: Path) -> None:
    """Clean series are parsed once for the whole table; each must equal the exact path's frame."""
    from pipeline.data.contract import validate_prices

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
        kept = panel.clean_series(RawData(odd, "x", ""), cfg, groups, min_rows=6)
        assert sorted(kept) == sorted(set("ABC") - {ids[row]}), value
    assert panel.clean_series(raw, cfg, groups, min_rows=31) == {}


def test_rule_names_survive_building_both_schemas() -> None:
    """Validating a plain series and then a Yahoo one in one process (many series do) keeps the rules' names."""
    from pipeline.data.contract import build_schema

    plain = parse_config({"data": {"features": ["y"], "target": "y", "price_columns": [], "volume_column": None}})
    yahoo = parse_config({})
    for cfg in (plain, yahoo, plain):
        names = {c.name for c in build_schema(cfg.data).columns["date"].checks}
        assert names == {"dates in increasing order"}, cfg.data.features


def test_backtest_folds_of_many_series_count_from_each_series_end(tmp_path: Path) -> None:
    from pipeline.data.reading import load_prices
    from pipeline.training.backtest import panel_fold_config, plan_panel_folds

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
    from pipeline.data.auto import is_resolved

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
    steps.prepare_panel(kept, resolved)  # the preprocessors take it as it is

    for sid in "ABC":  # every series drifts now, one of them through zero
        rows = frame["id"] == sid
        frame.loc[rows, "y"] = [f"{(-5 if sid == 'C' else 10) + 0.5 * i:.4f}" for i in range(int(rows.sum()))]
    frame.to_csv(path, index=False)
    raw = load_prices(str(path))
    resolved, _ = panel.resolve_panel(raw, cfg, panel.validate_panel(raw, cfg, min_rows=2))
    assert resolved.model.window_norm == "standard" and resolved.preprocess.target_transform == "level"
    plain = cfg.with_overrides(model={"window_norm": "none"})  # the transform rule: a network on scaled values
    resolved, _ = panel.resolve_panel(raw, plain, panel.validate_panel(raw, plain, min_rows=2))
    assert resolved.preprocess.target_transform == "difference"  # log_return is undefined for C's values <= 0


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_short_series_get_a_lookback_they_can_feed_and_only_the_too_short_are_bad(tmp_path: Path, policy: str) -> None:
    """Hourly series want two days (48 rows); C's 30 rows (26 before its test part) cannot feed them, so C is padded
    (its first value held before it), served and scored, not refused; D's 3 rows, all held out, leave no row
    before its test part: a bad series."""
    path = tmp_path / "long.csv"
    make_long("ABCD", n=200, short={"C": 30, "D": 3}).to_csv(path, index=False)
    cfg = auto_config(path, on_bad_series=policy)
    raw = load_prices(str(path))
    data = panel.validate_panel(raw, cfg, min_rows=2)
    if policy == "error":
        with pytest.raises(DataError, match=r"series 'D': 3 rows, 0 before its held-out part; rule: a series needs "
                                            r"at least 1 rows before its held-out part") as caught:
            panel.resolve_panel(raw, cfg, data)
        assert "'C'" not in str(caught.value)
        return
    resolved, kept = panel.resolve_panel(raw, cfg, data)
    assert sorted(kept.series) == ["A", "B", "C"] and "D" in kept.skipped
    assert (resolved.window.lookback, resolved.window.pad) == (48, True)
    preps = steps.prepare_panel(kept, resolved)
    assert preps["C"].trainable and len(preps["C"].windows["test"]) == 1


def test_a_panel_of_short_series_is_served_with_a_short_lookback(tmp_path: Path) -> None:
    """Every series as short as M3's yearly ones (14 to 20 rows, 6 held out twice): the lookback is half the median
    series' rows before its test part, within what the shortest feeds; every series keeps a test window, and the run
    is not refused: the one long series trains the network that scores them all."""
    frame = make_long("ABCDEF", n=27, short={"A": 14, "B": 15, "C": 20, "D": 20, "E": 20}, freq="YS")
    path = tmp_path / "long.csv"
    frame.to_csv(path, index=False)
    raw_cfg = long_config_dict(str(path), split={"val": 6, "test": 6}, window={"horizon": 6})
    del raw_cfg["window"]["lookback"], raw_cfg["preprocess"], raw_cfg["evaluate"]
    cfg = parse_config(raw_cfg)
    raw = load_prices(str(path))
    resolved, kept = panel.resolve_panel(raw, cfg, panel.validate_panel(raw, cfg, min_rows=2))
    assert len(kept.series) == 6 and resolved.evaluate.season_length is None
    # half the median series' 14 rows before its test part; the shortest (8 rows before it) feeds that: no padding
    assert (resolved.window.lookback, resolved.window.pad) == (7, False)
    preps = steps.prepare_panel(kept, resolved)
    assert all(p.trainable and len(p.windows["test"]) == 1 for p in preps.values())
    assert [sid for sid, p in preps.items() if len(p.windows["train"])] == ["F"]  # 15 training rows: 3 windows


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


def test_an_hourly_series_among_daily_ones_is_refused_naming_it(tmp_path: Path) -> None:
    """It trained with no word; one model reads every series on one rhythm."""
    path = tmp_path / "mixed.csv"
    frame = pd.concat([make_long("ABC", n=30, freq="D"), make_long("X", n=30, freq="h")], ignore_index=True)
    frame.to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path)))
    with pytest.raises(DataError) as caught:
        panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    text = str(caught.value)
    assert "1 of 4 series" in text and "('X')" in text
    assert f"{path} series 'X': its dates follow a h calendar, 3 of the 4 series follow D" in text
    assert "rule: one calendar for every series of a table" in text
    skip = parse_config(long_config_dict(str(path), data={"on_bad_series": "skip"}))
    assert list(panel.validate_panel(load_prices(str(path)), skip, min_rows=6).series) == ["A", "B", "C"]
    given = parse_config(long_config_dict(str(path), data={"freq": "h"}))  # data.freq decides which is odd
    with pytest.raises(DataError, match="3 of 4 series"):
        panel.validate_panel(load_prices(str(path)), given, min_rows=6)


def test_business_days_and_days_are_one_rhythm(tmp_path: Path) -> None:
    path = tmp_path / "days.csv"
    frame = pd.concat([make_long("AB", n=30, freq="D"), make_long("C", n=30, freq="B")], ignore_index=True)
    frame.to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path)))
    assert list(panel.validate_panel(load_prices(str(path)), cfg, min_rows=6).series) == ["A", "B", "C"]


def monthly_with_a_gap(tmp_path: Path) -> Path:
    """Three monthly series from 2024-01; B lacks 2025-05 and 2025-06 (its 17th and 18th months)."""
    frame = make_long("ABC", n=30, freq="MS")
    frame = frame.drop(frame.index[(frame["id"] == "B") & frame["ts"].str.startswith(("2025-05", "2025-06"))])
    path = tmp_path / "monthly.csv"
    frame.to_csv(path, index=False)
    return path


def test_missing_months_are_refused_naming_the_series_and_dates(tmp_path: Path) -> None:
    path = monthly_with_a_gap(tmp_path)
    text = refusal(path)
    assert "1 of 3 series" in text and "('B')" in text
    assert (f"{path} series 'B': 2 missing date(s) in the MS calendar of column 'ts': 2025-05-01, 2025-06-01; "
            "rule: every period between the first and the last date") in text
    assert "set data.fill_gaps to forward, interpolate or zero" in text


@pytest.mark.parametrize("method", ["forward", "interpolate", "zero"])
def test_fill_gaps_fills_each_series_and_says_what_it_filled(tmp_path: Path, method: str) -> None:
    path = monthly_with_a_gap(tmp_path)
    cfg = parse_config(long_config_dict(str(path), data={"fill_gaps": method, "price_columns": []}))
    result = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    b = result.series["B"]["y"]
    assert len(b) == 30 and result.gaps_filled == {"B": 2}
    before, after = b["2025-04-01"], b["2025-07-01"]
    expected = {"forward": [before, before], "zero": [0.0, 0.0],
                "interpolate": [before + (after - before) * 30 / 91, before + (after - before) * 61 / 91]}[method]
    assert b[["2025-05-01", "2025-06-01"]].tolist() == pytest.approx(expected)
    assert [n for n in result.notes if "fill_gaps" in n] == [
        f"series 'B': data.fill_gaps={method}: filled 2 missing date(s) of the MS calendar: 2025-05-01, 2025-06-01"]
    assert steps.panel_tags(result, {})["gaps_filled"] == "2"


def test_an_empty_target_in_a_long_table_is_a_missing_period_that_fill_gaps_fills(tmp_path: Path) -> None:
    """The whole-table check leaves a series with an empty target to `validate_prices` when fill_gaps is set; without
    it the series is refused naming its file line and data.fill_gaps."""
    frame = make_long("ABC", n=30, freq="MS")
    blank = frame.index[(frame["id"] == "B") & frame["ts"].str.startswith("2025-05")]
    frame.loc[blank, "y"] = np.nan
    path = tmp_path / "monthly.csv"
    frame.to_csv(path, index=False)
    text = refusal(path)
    assert "('B')" in text and "line 48 (nan)" in text and "set data.fill_gaps to forward" in text
    cfg = parse_config(long_config_dict(str(path), data={"fill_gaps": "forward", "price_columns": []}))
    result = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    b = result.series["B"]["y"]
    assert len(b) == 30 and result.gaps_filled == {"B": 1} and b["2025-05-01"] == b["2025-04-01"]


def test_the_intervals_are_calibrated_on_every_validation_origin(tmp_path: Path) -> None:
    """`split: {val: 4}` gives each series one full validation window; the calibration takes every origin whose
    first target is a validation row (4 per series), the targets past the validation part left out."""
    from pipeline.model.training import init_model

    path = tmp_path / "long.csv"
    make_long("AB", n=40).to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path)))
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    preps = steps.prepare_panel(data, cfg)
    assert all(len(p.windows["val"]) == 1 for p in preps.values())
    windows = preps["A"].pre.calibration_windows(data.series["A"], preps["A"].bounds)
    assert windows.origins.tolist() == [31, 32, 33, 34]
    assert windows.target_positions.tolist()[-1] == [35, -1, -1, -1]  # row 36 on is the test part's
    model = init_model(cfg, n_features=1)
    found = steps.calibration_forecasts(lambda _: model, data, preps, cfg)
    for sid, fc in found.items():
        assert np.isfinite(fc.actual).sum(axis=0).tolist() == [4, 3, 2, 1]
        values = data.series[sid]["y"].to_numpy()
        assert np.allclose(fc.actual[0], values[32:36]) and np.isclose(fc.actual[3, 0], values[35])
    _, calibration = steps.forecast_splits(lambda _: model, data, preps, cfg)
    assert calibration.model.windows == 8  # 2 series x 4 origins
    assert all(lo < hi for lo, hi in zip(calibration.model.quantiles[80], calibration.model.quantiles[95]))


@pytest.mark.parametrize("method", theta.METHODS)
def test_theta_alone_at_the_validation_origins_is_the_combination_at_weight_one(tmp_path: Path, method: str) -> None:
    """Choosing Theta's share reads Theta's forecasts alone from the validation origins without running the
    network again: they are the combined forecasts at weight 1, origin for origin, series for series."""
    from pipeline.model.training import init_model

    path = tmp_path / "long.csv"
    make_long("AB", n=40).to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path), model={"theta_method": method}))
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    preps = steps.prepare_panel(data, cfg)
    model = init_model(cfg, n_features=1)
    combined = steps.calibration_forecasts(lambda _: model, data, preps, cfg.with_overrides(model={"theta_weight": 1.0}))
    alone = steps.calibration_theta(data, preps, cfg)
    assert alone.keys() == combined.keys() == {"A", "B"}
    for sid, fc in combined.items():
        assert alone[sid].shape == fc.predicted.shape == (4, 4) and np.isfinite(alone[sid]).all()
        assert np.allclose(alone[sid], fc.predicted)


def test_a_series_scored_on_two_training_rows_keeps_its_calendar(tmp_path: Path) -> None:
    """Two training dates of a yearly series read as 8760 hours; its calendar comes from its dates up to the
    test part, so its forecasts fall on year starts."""
    frame = make_long("AB", n=20, short={"A": 14}, freq="YS")
    path = tmp_path / "long.csv"
    frame.to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path), split={"val": 6, "test": 6}, window={"lookback": 2, "horizon": 6}))
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=2)
    preps = steps.prepare_panel(data, cfg)
    assert preps["A"].bounds.val_start == 2 and preps["A"].trainable
    assert preps["A"].pre.frequency == preps["B"].pre.frequency == "YS-JAN"


def test_every_series_gets_a_positive_interval_scale_however_short_or_flat() -> None:
    """A saved model refuses a scale that is NaN or not positive (intervals.json): a series with one training row,
    or a flat one, falls back to what its known rows can give, never to NaN or 0."""
    from pipeline.features.windows import SplitBounds

    index = pd.date_range("2000-01-01", periods=8, freq="QS")
    short = pd.DataFrame({"y": [5.0, 7.0, 6.0, 9.0, 8.0, 10.0, 9.0, 12.0]}, index=index)
    one_row = SplitBounds(n_rows=8, val_start=1, test_start=4)  # seasonal naive (season 4) undefined on 1 row
    assert steps.interval_scale(short, "y", one_row, 4) == pytest.approx(np.mean([2.0, 1.0, 3.0]))
    flat = pd.DataFrame({"y": [3.0] * 8}, index=index)
    assert steps.interval_scale(flat, "y", SplitBounds(n_rows=8, val_start=5, test_start=6), 4) == 3.0
    zeros = pd.DataFrame({"y": [0.0] * 8}, index=index)
    assert steps.interval_scale(zeros, "y", SplitBounds(n_rows=8, val_start=5, test_start=6), 4) == 1.0
    roomy = SplitBounds(n_rows=8, val_start=6, test_start=7)
    assert steps.interval_scale(short, "y", roomy, 4) == 3.0  # |8 - 5| and |10 - 7|: its training rows suffice


def test_a_panel_with_no_training_window_is_refused_naming_the_rows_it_needs(tmp_path: Path) -> None:
    """Every series has a test window but none a training window: a clear data error, not a failed training."""
    path = tmp_path / "long.csv"
    make_long("ABC", n=12).to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path), split={"val": 4, "test": 4},
                                        window={"lookback": 4, "horizon": 4}))
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    with pytest.raises(DataError, match=r"no series is long enough to train on: at least one needs a training "
                                        r"window \(lookback 4 rows and horizon 4 .*the longest, 'A', has 12 rows"):
        steps.prepare_panel(data, cfg)
