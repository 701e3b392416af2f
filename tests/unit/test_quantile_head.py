"""The quantile head (`model.quantiles`) and conformalized quantile regression (`intervals.method: quantile`):
the pinball loss by hand, the head's shapes and saved form, the config's refusals, calibration of the head's
bounds on heteroscedastic errors (widths that follow each window, coverage at nominal), and a trained model
served with the training run's intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config.settings import parse_config, tail_probabilities
from pipeline.data import panel
from pipeline.data.contract import validate_prices
from pipeline.errors import ConfigError, ModelFormatError
from pipeline.evaluation import metrics
from pipeline.evaluation.intervals import IntervalState
from pipeline.evaluation.metrics import Forecasts
from pipeline.features.windows import min_rows_needed, prepare
from pipeline.model.network import LSTMForecaster, from_checkpoint
from pipeline.model.training import fit, init_model, pinball_loss
from pipeline.serving.model_format import ForecastBundle
from pipeline.training import steps
from tests.unit.test_intervals import assert_served_as_trained

TAILS = [0.025, 0.1, 0.9, 0.975]  # what the 80 and 95 % intervals read


def test_pinball_loss_by_hand() -> None:
    target = torch.tensor([[10.0, 10.0]])
    pred = torch.tensor([[[8.0, 11.0], [12.0, 9.0]]])  # quantile 0.1: under by 2, over by 1; 0.9: over by 2, under by 1
    # 0.1: 0.1 * 2 + 0.9 * 1 = 1.1; 0.9: 0.1 * 2 + 0.9 * 1 = 1.1; mean over 4 values: 2.2 / 4
    assert pinball_loss(pred, target, (0.1, 0.9)).item() == pytest.approx(2.2 / 4)
    weighted = torch.cat([pred, pred]), torch.cat([target, target])
    assert pinball_loss(*weighted, (0.1, 0.9), torch.tensor([2.0, 0.0])).item() == pytest.approx(2.2 / 4)


def test_the_head_predicts_the_point_and_each_quantile() -> None:
    torch.manual_seed(0)
    net = LSTMForecaster(n_features=2, horizon=3, hidden_size=4, quantiles=(0.1, 0.9))
    x = torch.randn(5, 6, 2)
    everything = net(x, with_quantiles=True)
    assert net(x).shape == (5, 3) and everything.shape == (5, 3, 3)
    torch.testing.assert_close(everything[:, 0], net(x))
    assert net.init_args["quantiles"] == [0.1, 0.9] and net.head[-1].out_features == 9
    again = from_checkpoint(net.checkpoint())
    torch.testing.assert_close(again(x, with_quantiles=True), everything)
    plain = LSTMForecaster(n_features=2, horizon=3, hidden_size=4)
    assert "quantiles" not in plain.init_args and plain(x, with_quantiles=True).shape == (5, 1, 3)


def test_the_config_refuses_what_a_quantile_head_cannot_do(tiny_config_dict) -> None:
    with pytest.raises(ConfigError, match=r"add \[0.025, 0.975\] to model.quantiles"):
        parse_config({**tiny_config_dict, "model": {"quantiles": [0.1, 0.9]}, "intervals": {"method": "quantile"}})
    with pytest.raises(ConfigError, match="do not add up"):
        parse_config({**tiny_config_dict, "window": {"lookback": 5, "horizon": 3}, "model": {"quantiles": TAILS}})
    with pytest.raises(ConfigError, match="twice"):
        parse_config({**tiny_config_dict, "model": {"quantiles": [0.1, 0.1]}})
    with pytest.raises(ConfigError, match="model.quantiles"):
        parse_config({**tiny_config_dict, "model": {"quantiles": [1.5]}})
    ok = parse_config({**tiny_config_dict, "model": {"quantiles": TAILS}, "intervals": {"method": "quantile"}})
    assert ok.model.quantiles == tuple(TAILS) and tail_probabilities(95) == (0.025, 0.975)


# ---------------------------------------------------------------- calibration on heteroscedastic errors
def noisy_forecasts(n: int, seed: int, head_factor: float) -> tuple[Forecasts, np.ndarray]:
    """One-step forecasts whose error's spread sigma differs per window (0.5 to 4); a head that knows sigma but
    states its quantiles `head_factor` times too narrow. Returns the forecasts and each window's sigma."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.5, 4.0, n)
    point = 100 + rng.normal(0, 1, n)
    actual = point + sigma * rng.standard_normal(n)
    z = {0.025: -1.96, 0.1: -1.2816, 0.9: 1.2816, 0.975: 1.96}
    tails = {p: (point + head_factor * z[p] * sigma)[:, None] for p in TAILS}
    fc = Forecasts(dates=pd.date_range("2020-01-01", periods=n), actual=actual[:, None], predicted=point[:, None],
                   anchor=point, tails=tails)
    return fc, sigma


@pytest.mark.parametrize("head_factor", [0.6, 1.0, 1.5])
def test_quantile_intervals_cover_as_nominal_with_widths_that_follow_each_window(head_factor) -> None:
    cfg = parse_config({"model": {"quantiles": TAILS}, "intervals": {"method": "quantile"}})
    val, _ = noisy_forecasts(4000, seed=1, head_factor=head_factor)
    test, sigma = noisy_forecasts(20000, seed=2, head_factor=head_factor)
    calibration = metrics.calibrate([(val, 1.0)], cfg.intervals)
    assert calibration.model.method == "quantile" and calibration.baseline.method == "conformal"
    banded = metrics.with_intervals(test, calibration)
    wild = sigma > 2.25
    for level in (80, 95):
        q = level / 100
        lower, upper = banded.bands[f"lower_{level}"][:, 0], banded.bands[f"upper_{level}"][:, 0]
        tolerance = 4 * math.sqrt(q * (1 - q) / len(sigma) + q * (1 - q) / 4002)
        assert abs(metrics.coverage(test.actual[:, 0], lower, upper) - q) <= tolerance
        # an honest head's widths carry each window's spread: calm and wild windows alike are covered as nominal
        # (a mis-scaled head is corrected by one additive amount: nominal over all windows, not in each part)
        for part in (wild, ~wild) if head_factor == 1.0 else ():
            assert abs(metrics.coverage(test.actual[part, 0], lower[part], upper[part]) - q) < 0.03
        assert np.corrcoef(upper - lower, sigma)[0, 1] > 0.99
    # residual conformal on the same forecasts: one width for all, so calm windows over-covered, wild ones under
    residual = metrics.with_intervals(test, metrics.calibrate([(val, 1.0)], parse_config({}).intervals))
    lower, upper = residual.bands["lower_95"][:, 0], residual.bands["upper_95"][:, 0]
    assert metrics.coverage(test.actual[wild, 0], lower[wild], upper[wild]) < 0.92
    assert metrics.coverage(test.actual[~wild, 0], lower[~wild], upper[~wild]) > 0.98


def test_quantile_bands_need_the_heads_quantiles() -> None:
    state = IntervalState((80,), {80: (0.5,)}, 10, method="quantile")
    with pytest.raises(ValueError, match=r"\[0.1, 0.9\]"):
        state.bands(np.zeros((2, 1)), 1.0, {0.1: np.zeros((2, 1))})
    bands = state.bands(np.zeros((2, 1)), 2.0, {0.1: np.full((2, 1), -1.0), 0.9: np.full((2, 1), 3.0)})
    np.testing.assert_allclose(bands["lower_80"], -2.0)
    np.testing.assert_allclose(bands["upper_80"], 4.0)
    crossing = state.bands(np.zeros((1, 1)), -4.0, {0.1: np.full((1, 1), -1.0), 0.9: np.full((1, 1), 1.0)})
    assert crossing["lower_80"][0, 0] <= crossing["upper_80"][0, 0]  # a narrowing past the middle stays an interval


# ---------------------------------------------------------------- trained, saved, served
@pytest.fixture(scope="module")
def trained_head(tmp_path_factory):
    from tests.conftest import OHLCV, make_prices

    prices = make_prices()
    path = tmp_path_factory.mktemp("head") / "prices.csv"
    prices.to_csv(path, index=False)
    cfg = parse_config({
        "name": "head", "data": {"source": str(path), "features": list(OHLCV)}, "split": {"train": 0.5, "val": 0.3, "test": 0.2},
        "window": {"lookback": 5, "horizon": 3}, "preprocess": {"target_transform": "log"},
        "model": {"hidden_size": 8, "quantiles": TAILS}, "train": {"epochs": 30, "batch_size": 16, "seed": 7},
        "intervals": {"method": "quantile", "scaling": "window"},
    })
    frame = validate_prices(prices, cfg.data, "prices.csv", min_rows=min_rows_needed(cfg)).frame
    one = panel.Panel(None, {panel.ONE_SERIES: frame})  # one series: a panel of one
    pre, bounds, windows = prepare(frame, cfg)
    result = fit(init_model(cfg, n_features=windows["train"].X.shape[2]), windows["train"], windows["val"], cfg.train)
    preps = {panel.ONE_SERIES: steps.SeriesPrep(pre, bounds, windows, trainable=True)}
    by_split, calibration = steps.forecast_splits(lambda _: result.model, one, preps, cfg, ("train", "val", "test"))
    forecasts = {split: fc[panel.ONE_SERIES] for split, fc in by_split.items()}
    bundle = ForecastBundle(checkpoint=result.model.checkpoint(), preprocessor=pre, config=cfg, intervals=calibration.model)
    return bundle, prices, frame, windows, forecasts


def test_the_trained_head_orders_its_quantiles(trained_head) -> None:
    *_, forecasts = trained_head
    test = forecasts["test"]
    assert sorted(test.tails) == TAILS
    # the head learnt which side each quantile lies on: the 97.5 % above the 2.5 % nearly everywhere
    assert np.mean(test.tails[0.975] > test.tails[0.025]) > 0.9 and np.mean(test.tails[0.9] > test.tails[0.1]) > 0.9
    for level in (80, 95):
        assert np.all(test.bands[f"lower_{level}"] <= test.bands[f"upper_{level}"])


def test_a_served_quantile_model_gives_the_training_runs_intervals(trained_head, tmp_path) -> None:
    bundle, prices, frame, windows, forecasts = trained_head
    path = bundle.save(tmp_path / "forecaster")
    assert json.loads((path / "format.json").read_text())["format_version"] == 6
    assert_served_as_trained(path, prices, frame, windows["test"], forecasts["test"])


def test_code_of_format_4_would_not_read_a_quantile_model(trained_head, tmp_path) -> None:
    bundle, *_ = trained_head
    path = bundle.save(tmp_path / "forecaster")
    (path / "format.json").write_text(json.dumps({"format": "lstm-forecaster", "format_version": 4}))
    with pytest.raises(ModelFormatError, match="format 5"):
        ForecastBundle.load(path)
