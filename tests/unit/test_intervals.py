"""Prediction intervals: the conformal quantile, the interval scores by hand, calibration on a random walk
with known noise (and its failure on intervals too narrow or too wide), the saved state, serving, the promotion."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import parse_config, windows_needed
from pipeline.data import panel
from pipeline.data.contract import validate_prices
from pipeline.errors import ConfigError, ModelFormatError
from pipeline.evaluation import metrics
from pipeline.evaluation.intervals import (
    IntervalState,
    band_columns,
    conformal_quantile,
    fit_conformal,
    recent_scale,
)
from pipeline.evaluation.metrics import Forecasts
from pipeline.features.windows import min_rows_needed, prepare
from pipeline.model.training import fit, init_model
from pipeline.serving.forecast import ForecastModel
from pipeline.serving.model_format import INTERVALS_FILE, ForecastBundle
from pipeline.tracking import promotion
from pipeline.training import steps


# ---------------------------------------------------------------- the conformal quantile
def test_conformal_quantile_takes_the_corrected_rank() -> None:
    errors = np.arange(1.0, 10.0)  # n = 9
    assert conformal_quantile(errors, 80, "finite_sample") == (8.0, True)  # ceil(10 * 0.8) = 8th smallest
    assert conformal_quantile(-errors[::-1], 50, "finite_sample") == (5.0, True)  # absolute values, any order
    # n = 19: ceil(20 * 0.95) = 19, not 20
    assert conformal_quantile(np.arange(1.0, 20.0), 95, "finite_sample") == (19.0, True)


def test_the_expected_rule_interpolates_the_rank() -> None:
    errors = np.arange(1.0, 24.0)  # n = 23: rank 24 * 0.8 = 19.2, between the 19th and 20th smallest
    assert conformal_quantile(errors, 80) == (pytest.approx(19.2), True)
    assert conformal_quantile(errors, 80, "finite_sample") == (20.0, True)
    assert conformal_quantile(np.arange(1.0, 10.0), 80) == (8.0, True)  # an integer rank: both rules agree
    assert conformal_quantile(np.arange(1.0, 20.0), 95) == (19.0, True)
    with pytest.raises(ValueError, match="median"):
        conformal_quantile(errors, 80, "median")


def test_the_expected_rule_covers_nominal_on_average_and_the_finite_sample_rule_more() -> None:
    """Many small calibration sets of exchangeable errors: the mean coverage of a fresh error is L % under
    `expected` and (ceil(r))/(n+1) under `finite_sample` (0.833 at n = 23, 80 %): 3 points too wide."""
    rng = np.random.default_rng(3)
    n, trials = 23, 20_000
    calibration, fresh = np.abs(rng.standard_t(4, (trials, n))), np.abs(rng.standard_t(4, trials))
    for rule, expected in (("expected", 0.80), ("finite_sample", 20 / 24)):
        half = np.array([conformal_quantile(row, 80, rule)[0] for row in calibration])
        assert np.mean(fresh <= half) == pytest.approx(expected, abs=0.01), rule


def test_too_few_windows_give_the_widest_error_and_a_note() -> None:
    assert windows_needed(95) == 19 and windows_needed(80) == 4
    assert conformal_quantile(np.arange(1.0, 19.0), 95) == (18.0, False)
    state = fit_conformal(np.arange(1.0, 19.0).reshape(-1, 1), [80, 95], rule="finite_sample")
    assert state.quantiles[95] == (18.0,) and state.quantiles[80] == (16.0,)  # ceil(19 * 0.8) = 16th smallest
    assert len(state.notes) == 1 and "split.val" in state.notes[0] and "19" in state.notes[0]
    assert math.isnan(conformal_quantile(np.array([]), 80)[0])


def test_steps_with_few_validation_errors_pool_every_steps_so_80_is_narrower_than_95() -> None:
    """One series with `split: {val: H}`: step h has H - h + 1 validation origins. The late steps, with fewer
    errors than a finite quantile needs, take every step's errors carried by sqrt(h / k), so each level gets a
    quantile of its own instead of the widest error (the 80 % and 95 % intervals came out the same)."""
    rng = np.random.default_rng(3)
    horizon = 6
    errors = np.full((horizon, horizon), np.nan)
    for j in range(horizon):  # the origin j steps into the validation part knows steps 1 .. H - j
        errors[j, :horizon - j] = rng.normal(0, 1, horizon - j) * np.sqrt(np.arange(1, horizon - j + 1))
    state = fit_conformal(errors, [80, 95])
    assert all(lo < hi for lo, hi in zip(state.quantiles[80], state.quantiles[95]))
    assert not any("widest" in n for n in state.notes) and any("square root" in n for n in state.notes)
    pooled = np.abs(errors * np.sqrt(horizon / np.arange(1, horizon + 1)))
    assert state.quantiles[95][-1] == pytest.approx(np.quantile(pooled[np.isfinite(pooled)], 0.95, method="weibull"))


def test_a_level_pooled_for_want_of_errors_still_holds_the_narrower_level() -> None:
    """10 windows: enough for a finite 80 % quantile at each step, too few for 95 %, which pools every step's
    errors. The last of 8 steps has errors far larger than the others', so its pooled 95 % came out below its own
    80 % (7.41 against 7.43 in a logged ensemble, whose saved intervals then failed the nesting check)."""
    errors = np.column_stack([np.full((10, 7), 0.1), np.arange(1.0, 11.0)])
    state = fit_conformal(errors, [80, 95])
    own_80 = np.quantile(np.arange(1.0, 11.0), 0.8, method="weibull")
    pooled_95 = np.quantile(np.abs(errors * np.sqrt(8 / np.arange(1, 9))).ravel(), 0.95, method="weibull")
    assert state.quantiles[80][-1] == pytest.approx(own_80)
    assert pooled_95 < own_80  # pooled, the 95 % band would lie inside the 80 %
    assert state.quantiles[95][-1] == pytest.approx(own_80)  # so it is raised to hold it
    assert all(lo <= hi for lo, hi in zip(state.quantiles[80], state.quantiles[95]))
    assert state.quantiles[95][0] > state.quantiles[80][0]  # a step whose pooled 95 % lies above its 80 % keeps it


# ---------------------------------------------------------------- interval scores, by hand
def test_msis_by_hand() -> None:
    actual, lower, upper = np.array([10.0, 20.0, 30.0]), np.array([8.0, 21.0, 25.0]), np.array([12.0, 25.0, 28.0])
    # inside: width 4; below by 1: 4 + 2/0.05 * 1 = 44; above by 2: 3 + 40 * 2 = 83; mean 131/3, over scale 2
    np.testing.assert_allclose(metrics.interval_score(actual, lower, upper, 0.05), [4.0, 44.0, 83.0])
    assert metrics.msis(actual, lower, upper, scale=2.0) == pytest.approx(131 / 3 / 2)
    assert math.isnan(metrics.msis(actual, lower, upper, scale=0.0))
    assert metrics.coverage(actual, lower, upper) == pytest.approx(1 / 3)


def test_pinball_and_the_interval_metrics_by_hand() -> None:
    # tau 0.1: under-forecast by 2 costs 0.1 * 2, over-forecast by 1 costs 0.9 * 1
    assert metrics.pinball(np.array([5.0, 5.0]), np.array([3.0, 6.0]), 0.1) == pytest.approx((0.2 + 0.9) / 2)
    actual = np.array([0.0, 1.0, 2.0, 10.0])
    bands = {"lower_80": np.full(4, -1.0), "upper_80": np.full(4, 3.0)}
    out = metrics.interval_metrics(actual, bands, [80])
    assert out["coverage_80"] == 0.75 and out["width_80"] == 4.0 and out["acd_80"] == pytest.approx(0.05)
    expected = np.mean([metrics.pinball(actual, bands["lower_80"], 0.1), metrics.pinball(actual, bands["upper_80"], 0.9)])
    assert out["pinball"] == pytest.approx(expected) and "msis" not in out


# ---------------------------------------------------------------- calibration on a random walk
SIGMA, HORIZON = 2.0, 3


def random_walk_forecasts(n: int, seed: int) -> Forecasts:
    """Windows of a Gaussian random walk, forecast by persistence (the optimal point forecast):
    step h's error is N(0, h sigma^2), so correct intervals widen as sqrt(h)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, SIGMA, (n, HORIZON))
    anchor = 100 + np.cumsum(rng.normal(0.0, SIGMA, n))
    actual = anchor[:, None] + np.cumsum(steps, axis=1)
    dates = pd.date_range("2020-01-01", periods=n, freq="D")
    return Forecasts(dates=dates, actual=actual, predicted=np.repeat(anchor[:, None], HORIZON, axis=1), anchor=anchor,
                     scale=SIGMA * math.sqrt(2 / math.pi))


def assert_calibrated(fc: Forecasts, calibration_windows: int) -> None:
    """Achieved coverage per step and level within a binomial tolerance of nominal: 4 standard deviations of
    the test windows' coverage plus the spread of the conformal quantile itself (about q(1-q)/(n+2))."""
    for level in fc.levels:
        q = level / 100
        tolerance = 4 * math.sqrt(q * (1 - q) / len(fc.actual) + q * (1 - q) / (calibration_windows + 2))
        for h in range(HORIZON):
            achieved = metrics.coverage(fc.actual[:, h], fc.bands[f"lower_{level}"][:, h], fc.bands[f"upper_{level}"][:, h])
            assert abs(achieved - q) <= tolerance, f"step {h + 1}, {level} %: coverage {achieved:.4f}, tolerance {tolerance:.4f}"


@pytest.fixture(scope="module")
def walk():
    cfg = parse_config({"intervals": {"levels": [80, 95]}})
    val, test = random_walk_forecasts(5000, seed=1), random_walk_forecasts(20000, seed=2)
    calibration = metrics.calibrate([(val, 1.0)], cfg.intervals)
    return calibration, metrics.with_intervals(test, calibration)


def test_intervals_cover_a_random_walk_as_nominal_and_widen_with_the_step(walk) -> None:
    calibration, test = walk
    assert_calibrated(test, calibration_windows=5000)
    for level, z in ((80, 1.2816), (95, 1.9600)):  # the true half-widths: z sigma sqrt(h)
        np.testing.assert_allclose(calibration.model.quantiles[level], z * SIGMA * np.sqrt([1, 2, 3]), rtol=0.04)
    assert calibration.baseline_name == "naive"  # no seasonal naive among the baselines here


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_the_calibration_check_fails_on_intervals_too_narrow_or_too_wide(walk, factor) -> None:
    _, test = walk
    half = {c: (test.bands[c] - test.predicted) * factor for c in test.bands}
    perturbed = Forecasts(test.dates, test.actual, test.predicted, test.anchor,
                          bands={c: test.predicted + h for c, h in half.items()})
    with pytest.raises(AssertionError, match="coverage"):
        assert_calibrated(perturbed, calibration_windows=5000)


def test_scores_carry_the_interval_metrics_per_step_and_for_the_baseline(walk) -> None:
    _, test = walk
    flat = metrics.score(test, prefix="test").flat()
    assert flat["test_coverage_95"] == pytest.approx(0.95, abs=0.01) and flat["test_acd_95"] < 0.01
    assert flat["test_width_95_h1"] < flat["test_width_95_h2"] < flat["test_width_95_h3"]
    assert {"test_naive_coverage_95", "test_naive_msis", "test_pinball", "test_msis", "test_coverage_80_h3"} <= set(flat)
    # the theoretical MSIS of exact Gaussian 95 % intervals is 2 * 1.96 * sigma * sqrt(h) / scale + tails, finite
    assert 0 < flat["test_msis"] < 20


def test_levels_off_means_no_intervals(walk) -> None:
    cfg = parse_config({"intervals": {"levels": []}})
    assert metrics.calibrate([(random_walk_forecasts(50, 3), 1.0)], cfg.intervals) is None
    fc = metrics.with_intervals(random_walk_forecasts(10, 4), None)
    assert fc.bands == {} and "coverage_80" not in metrics.score(fc).model
    assert list(fc.table().columns) == ["date", "step", "forecast"]


def test_many_series_share_one_table_scaled_per_series() -> None:
    val = {"a": random_walk_forecasts(300, 5), "b": random_walk_forecasts(300, 6)}
    val["b"] = Forecasts(val["b"].dates, val["b"].actual * 10, val["b"].predicted * 10, val["b"].anchor * 10)
    cfg = parse_config({"data": {"series_column": "id"}})
    scales = {"a": 1.0, "b": 10.0}
    calibration = steps.calibrate_panel(val, scales, cfg)
    banded = steps.with_panel_intervals(val, calibration, scales)
    width = {sid: fc.bands["upper_95"] - fc.bands["lower_95"] for sid, fc in banded.items()}
    np.testing.assert_allclose(width["b"][0], 10 * width["a"][0])
    assert calibration.model.scales == scales and calibration.model.scale_of("b") == 10.0


# ---------------------------------------------------------------- config
def test_interval_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="intervals.levels"):
        parse_config({"intervals": {"levels": [95, 95]}})
    with pytest.raises(ConfigError, match="max_coverage_error"):
        parse_config({"intervals": {"levels": [80]}, "registry": {"max_coverage_error": 0.03}})
    with pytest.raises(ConfigError, match="intervals.levels"):
        parse_config({"intervals": {"levels": [100]}})
    assert band_columns(parse_config({}).intervals.levels) == ["lower_80", "upper_80", "lower_95", "upper_95"]


# ---------------------------------------------------------------- saved with the model, served the same
@pytest.fixture(params=["series", "window"])
def trained(request, prices, tiny_config):
    cfg = tiny_config.with_overrides(window={"horizon": 3}, split={"train": 0.5, "val": 0.3, "test": 0.2},
                                     intervals={"scaling": request.param})
    frame = validate_prices(prices, cfg.data, "prices.csv", min_rows=min_rows_needed(cfg)).frame
    one = panel.Panel(None, {panel.ONE_SERIES: frame})  # one series: a panel of one
    pre, bounds, windows = prepare(frame, cfg)
    result = fit(init_model(cfg, n_features=windows["train"].X.shape[2]), windows["train"], windows["val"], cfg.train)
    preps = {panel.ONE_SERIES: steps.SeriesPrep(pre, bounds, windows, trainable=True)}
    by_split, calibration = steps.forecast_splits(lambda _: result.model, one, preps, cfg, ("train", "val", "test"))
    forecasts = {split: fc[panel.ONE_SERIES] for split, fc in by_split.items()}
    bundle = ForecastBundle(checkpoint=result.model.checkpoint(), preprocessor=pre, config=cfg,
                            intervals=calibration.model)
    return bundle, frame, windows, forecasts, calibration


def test_recent_scale_by_hand() -> None:
    levels = np.array([10.0, 12.0, 11.0, 11.0, 15.0])  # changes 2, 1, 0, 4
    np.testing.assert_allclose(recent_scale(levels, np.array([4, 3, 1, 0]), span=3), [5 / 3, 1.0, 2.0, np.nan])


def test_window_scaling_follows_the_volatility_of_the_moment() -> None:
    """A random walk whose noise triples halfway: one quantile table in the target's units covers the calm part
    too much and the wild part too little; scaled by each window's recent changes it covers both."""
    rng = np.random.default_rng(0)
    sigma = np.where(np.arange(6000) < 3000, 1.0, 3.0)
    levels = 1000 + np.cumsum(rng.normal(0, sigma))
    origins = np.arange(40, 5999)
    fc = Forecasts(dates=pd.date_range("2020-01-01", periods=len(origins)), actual=levels[origins + 1][:, None],
                   predicted=levels[origins][:, None], anchor=levels[origins],
                   recent=recent_scale(levels, origins, 30))
    calm, wild = slice(0, 2900), slice(3100, None)
    cal_idx = np.r_[0:1000, 3100:4100]
    val = Forecasts(fc.dates[cal_idx], fc.actual[cal_idx], fc.predicted[cal_idx], fc.anchor[cal_idx],
                    recent=fc.recent[cal_idx])
    for scaling, ok in (("series", False), ("window", True)):
        cfg = parse_config({"intervals": {"levels": [95], "scaling": scaling}})
        banded = metrics.with_intervals(fc, metrics.calibrate([(val, 1.0)], cfg.intervals, span=30))
        cover = [metrics.coverage(banded.actual[part], banded.bands["lower_95"][part], banded.bands["upper_95"][part])
                 for part in (calm, wild)]
        assert all(abs(c - 0.95) < 0.025 for c in cover) is ok, (scaling, cover)


def test_the_state_round_trips_as_json() -> None:
    state = IntervalState((80, 95), {80: (1.0, 2.0), 95: (2.0, 3.5)}, 40, scales={"x": 2.5}, notes=("n",))
    assert IntervalState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    with pytest.raises(ValueError, match="method"):
        IntervalState.from_dict({**state.to_dict(), "method": "quantile_head"})
    np.testing.assert_allclose(state.bands(np.zeros((1, 2)), 2.0)["upper_95"], [[4.0, 7.0]])


def test_a_served_model_gives_the_training_runs_intervals(trained, prices, tmp_path) -> None:
    bundle, frame, windows, forecasts, calibration = trained
    path = bundle.save(tmp_path / "forecaster")
    assert json.loads((path / "format.json").read_text())["format_version"] == 6
    assert IntervalState.from_dict(json.loads((path / INTERVALS_FILE).read_text())) == calibration.model
    assert_served_as_trained(path, prices, frame, windows["test"], forecasts["test"])


def assert_served_as_trained(path, prices: pd.DataFrame, frame: pd.DataFrame, windows, test: Forecasts) -> None:
    """The model saved at `path`, served on `prices`, gives the training run's test forecasts and bands to 1e-6."""
    served = ForecastModel()
    served.load(path)
    out = served.forecast(prices, all_windows=True)
    assert list(out.columns) == ["origin", "step", "date", "forecast", *band_columns([80, 95])]
    origins = set(frame.index[windows.origins].strftime("%Y-%m-%d"))
    rows = out[out["origin"].isin(origins)].sort_values(["origin", "step"])
    for column in ("forecast", *band_columns([80, 95])):
        expected = test.predicted if column == "forecast" else test.bands[column]
        np.testing.assert_allclose(rows[column].to_numpy(), expected.ravel(), rtol=0, atol=1e-6)


def test_a_model_without_intervals_keeps_its_old_format_and_forecasts_without_them(trained, prices, tmp_path) -> None:
    bundle, *_ = trained
    plain = ForecastBundle(bundle.checkpoint, bundle.preprocessor, bundle.config)
    path = plain.save(tmp_path / "plain")
    assert json.loads((path / "format.json").read_text())["format_version"] == 6 and not (path / INTERVALS_FILE).exists()
    served = ForecastModel()
    served.load(path)
    assert list(served.forecast(prices).columns) == ["origin", "step", "date", "forecast"]


def test_format_4_without_its_intervals_file_is_refused(trained, tmp_path) -> None:
    bundle, *_ = trained
    path = bundle.save(tmp_path / "forecaster")
    (path / INTERVALS_FILE).unlink()
    with pytest.raises(ModelFormatError, match="intervals.json"):
        ForecastBundle.load(path)


# ---------------------------------------------------------------- the gate
def test_the_gate_refuses_a_model_whose_intervals_lie() -> None:
    assert promotion.coverage_requirement({"test_acd_95": 0.01}, None) is None
    honest = promotion.decide("2", 1.0, 2.0, None, None, (0.0, 0.0), coverage=promotion.coverage_requirement({"test_acd_95": 0.01}, 0.03))
    assert honest.promoted and "calibration PASS" in honest.reason
    liar = promotion.decide("2", 1.0, 2.0, None, None, (0.0, 0.0), coverage=promotion.coverage_requirement({"test_acd_95": 0.2}, 0.03))
    assert not liar.promoted and "calibration FAIL" in liar.reason and "0.2000" in liar.reason
    assert liar.tags()["gate.check.calibration"].startswith("FAIL")
    unknown = promotion.decide("2", 1.0, 2.0, None, None, (0.0, 0.0), coverage=promotion.coverage_requirement({}, 0.03))
    assert not unknown.promoted and "no intervals" in unknown.reason


def test_the_reports_name_coverage_and_msis_beside_the_baseline() -> None:
    from pipeline.tracking.run_report import interval_summary, metrics_table

    m = {"test_coverage_80": 0.81, "test_coverage_95": 0.94, "test_msis": 4.2, "test_seasonal_naive_msis": 9.0,
         "test_rmse": 1.0, "test_naive_rmse": 1.1, "test_rmse_ratio": 0.9}
    assert interval_summary(m) == "test intervals, achieved coverage 80 %: 0.81, 95 %: 0.94; MSIS 4.2 (seasonal naive 9)"
    assert metrics_table(m)[-1].startswith("Test intervals, achieved coverage 80 %")
    assert interval_summary({"test_rmse": 1.0}) is None and interval_summary(m, "backtest") is None


def test_the_plots_show_the_bands_and_the_calibration(walk) -> None:
    from matplotlib.collections import PolyCollection

    from pipeline.evaluation import plots

    _, test = walk
    part = Forecasts(test.dates[:40], test.actual[:40], test.predicted[:40], test.anchor[:40],
                     bands={c: b[:40] for c, b in test.bands.items()})
    series = pd.Series(part.actual[:, 0], index=part.dates, name="y")
    fig = plots.plot_forecasts(series, {"test": part}, {"test": part.dates[0]}, "t")
    shaded = [c for c in fig.axes[1].collections if isinstance(c, PolyCollection)]
    assert len(shaded) == 2 and "95 % interval" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    fig = plots.plot_calibration(part, "t")
    achieved = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("achieved")]
    assert [line.get_label() for line in achieved] == ["achieved, 80 % interval", "achieved, 95 % interval"]
    assert len(achieved[1].get_ydata()) == HORIZON and 80 <= min(achieved[1].get_ydata()) <= 100
