"""Baselines by hand, metric names, per-step metrics, exact inversion of every target transform,
and the level-target range check."""

import numpy as np
import pytest

from pipeline.config.settings import EvaluateConfig, parse_config
from pipeline.data.contract import validate_prices
from pipeline.evaluation.baselines import baseline_forecasts
from pipeline.evaluation.metrics import (
    Forecasts,
    SplitScores,
    findings,
    forecast_split,
    per_step,
    rmse,
    score,
    target_range_check,
    training_stalled,
)
from pipeline.features.windows import prepare
from pipeline.model import network
from tests.conftest import make_prices

ALL = EvaluateConfig(moving_average_window=3, season_length=4)


def test_baselines_match_hand_computed_values() -> None:
    levels = 10.0 + 2.0 * np.arange(12)  # a straight line: drift is exact on it
    last_known = np.array([5, 8])
    fc = baseline_forecasts(levels, last_known, horizon=3, cfg=ALL)
    np.testing.assert_array_equal(fc["naive"], [[20, 20, 20], [26, 26, 26]])
    np.testing.assert_allclose(fc["drift"], [[22, 24, 26], [28, 30, 32]])
    np.testing.assert_allclose(fc["moving_average"], [[18, 18, 18], [24, 24, 24]])  # mean of the last 3 known
    # season 4: step h repeats position p + h - 4 (h <= 4)
    np.testing.assert_array_equal(fc["seasonal_naive"], [levels[[2, 3, 4]], levels[[5, 6, 7]]])


def test_seasonal_naive_repeats_a_periodic_series_exactly() -> None:
    period = np.array([3.0, 7.0, 5.0, 1.0])
    levels = np.tile(period, 6)
    last_known = np.arange(7, 17)
    fc = baseline_forecasts(levels, last_known, horizon=6, cfg=ALL)["seasonal_naive"]
    targets = levels[last_known[:, None] + np.arange(1, 7)[None, :]]
    np.testing.assert_array_equal(fc, targets)


def test_baselines_read_only_values_known_at_the_origin() -> None:
    rng = np.random.default_rng(0)
    levels = 100 + rng.normal(size=40).cumsum()
    last_known = np.array([10, 20, 30])
    before = baseline_forecasts(levels, last_known, horizon=4, cfg=ALL)
    for i, p in enumerate(last_known):
        changed = levels.copy()
        changed[p + 1:] = 1e9  # the future, planted
        after = baseline_forecasts(changed, last_known[i:i + 1], horizon=4, cfg=ALL)
        for name, values in after.items():
            np.testing.assert_array_equal(values[0], before[name][i], err_msg=name)


def test_short_history_gives_nan_not_a_guess() -> None:
    fc = baseline_forecasts(np.arange(10.0), np.array([-1, 1]), horizon=2, cfg=ALL)
    assert np.isnan(fc["naive"][0]).all()
    assert np.isnan(fc["seasonal_naive"][1]).all()  # position 1 + h - 4 < 0
    assert np.isfinite(fc["drift"][1]).all()


def test_seasonal_naive_only_with_a_season_length() -> None:
    fc = baseline_forecasts(np.arange(10.0), np.array([5]), horizon=1, cfg=EvaluateConfig())
    assert set(fc) == {"naive", "drift", "moving_average"}
    with pytest.raises(Exception, match="naive"):
        EvaluateConfig(baselines=("drift",))


def test_score_names_every_baseline_metric_and_step_consistently() -> None:
    rng = np.random.default_rng(1)
    levels = 50 + rng.normal(size=60).cumsum()
    last_known = np.arange(20, 50)
    horizon = 3
    targets = last_known[:, None] + np.arange(1, horizon + 1)[None, :]
    baselines = baseline_forecasts(levels, last_known, horizon, ALL)
    fc = Forecasts(dates=np.arange(len(last_known)).astype("datetime64[D]"), actual=levels[targets],
                   predicted=levels[targets] + 0.5, anchor=levels[last_known], baselines=baselines)
    typed = score(fc, prefix="test")
    s = typed.flat()
    for b in ("naive", "drift", "moving_average", "seasonal_naive"):
        for m in ("rmse", "mae", "mape", "direction_acc"):
            assert f"test_{b}_{m}" in s, (b, m)
        assert s[f"test_{b}_rmse"] == pytest.approx(rmse(fc.actual, baselines[b]))
        for k in range(1, horizon + 1):
            assert s[f"test_{b}_rmse_h{k}"] == pytest.approx(rmse(fc.actual[:, k - 1], baselines[b][:, k - 1]))
    assert s["test_rmse"] == pytest.approx(0.5)
    assert s["test_rmse_ratio"] == pytest.approx(0.5 / s["test_naive_rmse"])
    assert s["test_rmse_ratio_drift"] == pytest.approx(0.5 / s["test_drift_rmse"])
    best = min(s[f"test_{b}_rmse"] for b in baselines)
    assert s["test_rmse_ratio_best_baseline"] == pytest.approx(0.5 / best)
    assert s["test_mae_h2"] == pytest.approx(0.5)
    steps = per_step(typed)
    assert steps["model"] == pytest.approx([0.5, 0.5, 0.5])
    assert set(steps) == {"model", "naive", "drift", "moving_average", "seasonal_naive"}
    assert steps["drift"] == [s[f"test_drift_rmse_h{k}"] for k in (1, 2, 3)]


class PointOnly:
    """Stands in for a network without a quantile head (its outputs are monkeypatched)."""

    quantiles: tuple[float, ...] = ()


@pytest.mark.parametrize("transform", ["level", "difference", "log_return", "log"])
@pytest.mark.parametrize("horizon,lead", [(1, 1), (3, 1), (2, 0)])
def test_every_target_transform_is_inverted_exactly(monkeypatch, tiny_config_dict, transform, horizon, lead) -> None:
    """A model that outputs the true scaled targets gets back the true levels, on every split."""
    raw = dict(tiny_config_dict)
    raw["window"] = {"lookback": 5, "horizon": horizon, "lead": lead}
    raw["preprocess"] = {"target_transform": transform}
    if lead == 0:
        raw["data"] = {**raw["data"], "features": ["Open", "High", "Low"]}
    cfg = parse_config(raw)
    frame = validate_prices(make_prices(90), cfg.data, "synthetic", min_rows=1).frame
    pre, _, windows = prepare(frame, cfg)
    for split, w in windows.items():
        monkeypatch.setattr(network, "predict_outputs", lambda model, X, _y=w.y: _y[:, None, :])
        fc = forecast_split(PointOnly(), pre, frame, w, cfg.evaluate)  # type: ignore[arg-type]
        assert fc.predicted.shape == (len(w), horizon)
        np.testing.assert_allclose(fc.predicted, fc.actual, rtol=1e-5, err_msg=f"{transform} {split}")
        assert score(fc, prefix=split).model["rmse"] < 1e-3 * float(np.abs(fc.actual).mean())


def test_level_target_out_of_training_range_is_reported(tiny_config_dict) -> None:
    cfg = parse_config({**tiny_config_dict, "preprocess": {"target_transform": "level"}})
    prices = make_prices(100)
    prices.loc[85:, ["Open", "High", "Low", "Close", "Adj Close"]] *= 1.5  # the test part rises above training
    frame = validate_prices(prices, cfg.data, "synthetic", min_rows=1).frame
    pre, bounds, _ = prepare(frame, cfg)
    check = target_range_check(pre, frame, bounds)
    assert check is not None
    test_close = frame["Close"].to_numpy()[bounds.test_start:]
    assert check.total == len(test_close) and check.outside == int((test_close > check.high).sum()) > 0
    assert check.high == pytest.approx(frame["Close"].to_numpy()[:bounds.val_start].max())
    assert "outside the training range" in check.message()
    # an in-range series reports nothing outside; a differenced target has no such check
    frame_ok = validate_prices(make_prices(100), cfg.data, "synthetic", min_rows=1).frame
    pre_ok, bounds_ok, _ = prepare(frame_ok, cfg)
    assert target_range_check(pre_ok, frame_ok, bounds_ok).outside == 0
    cfg_lr = parse_config(tiny_config_dict)
    pre_lr, bounds_lr, _ = prepare(frame, cfg_lr)
    assert target_range_check(pre_lr, frame, bounds_lr) is None


def test_findings_say_loudly_when_the_model_loses(tiny_config_dict) -> None:
    from pipeline.model.network import LSTMForecaster
    from pipeline.model.training import TrainResult

    cfg = parse_config({**tiny_config_dict, "preprocess": {"target_transform": "level"}})
    prices = make_prices(100)
    prices.loc[85:, ["Open", "High", "Low", "Close", "Adj Close"]] *= 1.5
    data = validate_prices(prices, cfg.data, "synthetic", min_rows=1)
    pre, bounds, _ = prepare(data.frame, cfg)
    result = TrainResult(model=LSTMForecaster(n_features=5), train_loss=[0.5, 0.4], val_loss=[0.7, 0.6], best_epoch=1)
    losing = SplitScores("test", model={"rmse": 2.0}, baselines={"naive": {"rmse": 1.6}, "drift": {"rmse": 1.5},
                                                                  "moving_average": {"rmse": 3.0}})
    tags, metrics, warnings = findings(cfg, "abc123", data, pre, bounds, result, losing)
    assert tags["warning"] == "model is worse than persistence on test (RMSE ratio 1.250)"
    assert "drift" in tags["beaten_by_baselines"] and "moving_average" not in tags["beaten_by_baselines"]
    assert "outside the training range" in tags["target_out_of_range"]
    assert len(warnings) == 3 and warnings[0] == tags["warning"]
    assert (tags["data_digest"], tags["data_rows"], tags["best_epoch"]) == ("abc123", "100", "2")
    assert metrics["best_val_loss"] == 0.6 and metrics["epochs_run"] == 2 and metrics["test_out_of_range_share"] > 0
    winning = SplitScores("test", model={"rmse": 1.0}, baselines={"naive": {"rmse": 1.0 / 0.9}, "drift": {"rmse": 1.5}})
    cfg_lr = cfg.with_overrides(preprocess={"target_transform": "log_return"})
    tags, metrics, warnings = findings(cfg_lr, "abc123", data, *prepare(data.frame, cfg_lr)[:2], result, winning)
    assert warnings == [] and not {"warning", "beaten_by_baselines", "target_out_of_range", "training_warning",
                                   "mape_warning"} & set(tags)
    assert metrics["test_actual_near_zero"] == 0.0
    assert "test_out_of_range_share" not in metrics


@pytest.fixture
def findings_scene(tiny_config_dict):
    """What `findings` reads of a run: config, data, preprocessor, split bounds, test scores that beat
    persistence, and a network."""
    from pipeline.model.network import LSTMForecaster

    cfg = parse_config(tiny_config_dict)
    data = validate_prices(make_prices(100), cfg.data, "synthetic", min_rows=1)
    pre, bounds, _ = prepare(data.frame, cfg)
    winning = SplitScores("test", model={"rmse": 1.0, "mape": 1.0}, baselines={"naive": {"rmse": 2.0}})
    return cfg, data, pre, bounds, winning, LSTMForecaster(n_features=5)


def test_findings_warn_when_training_never_improved_after_epoch_1(findings_scene) -> None:
    from pipeline.model.training import TrainResult

    cfg, data, pre, bounds, winning, model = findings_scene
    stuck = TrainResult(model=model, train_loss=[0.5, 0.4, 0.3], val_loss=[0.6, 0.7, 0.8], best_epoch=0,
                        stopped_early=True)
    tags, _, warnings = findings(cfg, "abc", data, pre, bounds, stuck, winning)
    assert "never improved after epoch 1 of 3" in tags["training_warning"] and tags["training_warning"] in warnings
    barely = TrainResult(model=model, train_loss=[0.5] * 4, val_loss=[0.6, 0.5999, 0.6, 0.61], best_epoch=1,
                         stopped_early=True)
    tags, _, warnings = findings(cfg, "abc", data, pre, bounds, barely, winning)
    assert "before the model moved" in tags["training_warning"] and tags["training_warning"] in warnings
    moved = TrainResult(model=model, train_loss=[0.5, 0.4], val_loss=[0.6, 0.3], best_epoch=1, stopped_early=True)
    tags, _, warnings = findings(cfg, "abc", data, pre, bounds, moved, winning)
    assert "training_warning" not in tags and warnings == []


def test_findings_warn_when_the_epoch_limit_ends_a_training_still_improving(findings_scene) -> None:
    from pipeline.model.training import TrainResult

    cfg, data, pre, bounds, winning, model = findings_scene
    falling = list(np.linspace(1.0, 0.5, 200))
    limited = TrainResult(model=model, train_loss=falling, val_loss=falling, best_epoch=199)
    tags, _, warnings = findings(cfg, "abc", data, pre, bounds, limited, winning)
    assert tags["training_warning"] in warnings
    assert "epoch limit while still improving" in tags["training_warning"]
    assert "epoch 200 of 200" in tags["training_warning"] and "raise train.epochs" in tags["training_warning"]
    assert "train.learning_rate" in tags["training_warning"]
    # training only: the training loss it went by is named
    no_val = TrainResult(model=model, train_loss=falling, best_epoch=199)
    assert "best training loss" in training_stalled(no_val)
    # settled well before the end, stopped early, or too few epochs to judge: no word
    settled = list(np.linspace(1.0, 0.5, 100)) + [0.5 + 0.001 * i for i in range(1, 101)]
    for quiet in (TrainResult(model=model, train_loss=falling, val_loss=settled, best_epoch=99),
                  TrainResult(model=model, train_loss=falling[:150], val_loss=falling[:150], best_epoch=149,
                              stopped_early=True),
                  TrainResult(model=model, train_loss=falling[:5], val_loss=falling[:5], best_epoch=4)):
        assert training_stalled(quiet) is None


def test_a_stall_that_ends_at_persistence_says_why_that_is_expected(tiny_config_dict) -> None:
    from pipeline.model.network import LSTMForecaster
    from pipeline.model.training import TrainResult

    cfg = parse_config(tiny_config_dict)
    data = validate_prices(make_prices(100), cfg.data, "synthetic", min_rows=1)
    pre, bounds, _ = prepare(data.frame, cfg)
    stuck = TrainResult(model=LSTMForecaster(n_features=5), train_loss=[0.5, 0.4, 0.3], val_loss=[0.6, 0.7, 0.8])
    at_persistence = SplitScores("val", model={"rmse": 1.0}, baselines={"naive": {"rmse": 1.004}})
    far = SplitScores("test", model={"rmse": 1.0, "mape": 1.0}, baselines={"naive": {"rmse": 2.0}})
    tags, _, _ = findings(cfg, "abc", data, pre, bounds, stuck, far, at_persistence)
    warning = tags["training_warning"]
    assert warning.startswith("the model never improved after epoch 1 of 3")
    assert "ends at persistence (RMSE ratio 0.996 on validation)" in warning and "random walk" in warning
    for val in (far, None):  # validation far from persistence, or none (then test, also far): no excuse offered
        tags, _, _ = findings(cfg, "abc", data, pre, bounds, stuck, far, val)
        assert "random walk" not in tags["training_warning"]


def test_findings_flag_mape_on_a_series_that_crosses_zero(tiny_config_dict) -> None:
    from pipeline.model.network import LSTMForecaster
    from pipeline.model.training import TrainResult

    cfg = parse_config({**tiny_config_dict, "data": {**tiny_config_dict["data"], "price_columns": []},
                        "preprocess": {"target_transform": "level"}})
    prices = make_prices(100)
    cols = ["Open", "High", "Low", "Close", "Adj Close"]
    prices[cols] = prices[cols] - prices["Close"].iloc[90]  # the test part crosses zero
    data = validate_prices(prices, cfg.data, "synthetic", min_rows=1)
    pre, bounds, _ = prepare(data.frame, cfg)
    result = TrainResult(model=LSTMForecaster(n_features=5), train_loss=[0.5, 0.4], val_loss=[0.6, 0.3], best_epoch=1)
    scores = SplitScores("test", model={"rmse": 1.0, "mape": 144.0}, baselines={"naive": {"rmse": 2.0}})
    tags, metrics, warnings = findings(cfg, "abc", data, pre, bounds, result, scores)
    assert metrics["test_actual_near_zero"] == 1.0
    assert tags["mape_warning"].startswith("test MAPE (144 %) is unreliable") and tags["mape_warning"] in warnings
