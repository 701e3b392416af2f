"""Ensembles (`model.ensemble`): members from their own seeds, combined by the median into one module that saves,
loads and serves as one network does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config.settings import parse_config
from pipeline.data import panel
from pipeline.data.reading import load_prices
from pipeline.errors import ConfigError, ModelFormatError
from pipeline.model.network import LSTMEnsemble, LSTMForecaster, from_checkpoint, predict_outputs
from pipeline.model.training import init_model, member_config
from pipeline.serving.forecast import ForecastModel, forecast_frame
from pipeline.serving.model_format import ForecastBundle
from pipeline.training import steps
from tests.conftest import long_config_dict, make_long


def members(count: int, **options) -> list[LSTMForecaster]:
    out = []
    for seed in range(count):
        torch.manual_seed(seed)
        out.append(LSTMForecaster(n_features=2, horizon=3, hidden_size=4, **options).eval())
    return out


@pytest.mark.parametrize("count", [3, 4])
def test_the_ensemble_answers_the_elementwise_median_of_its_members_quantile_heads_included(count: int) -> None:
    nets = members(count, quantiles=(0.1, 0.9))
    ensemble = LSTMEnsemble(nets).eval()
    x = torch.rand(5, 6, 2) + 0.5
    with torch.no_grad():
        each = torch.stack([m(x, with_quantiles=True) for m in nets])  # (members, batch, 1 + Q, horizon)
        got = ensemble(x, with_quantiles=True)
        point = ensemble(x)
    expected = np.median(each.numpy(), axis=0)  # numpy: the mean of the middle two for an even count
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(point.numpy(), expected[:, 0], rtol=1e-6)
    assert not np.allclose(expected, each[0].numpy())  # the members differ: the median is no one member
    assert ensemble.quantiles == (0.1, 0.9) and ensemble.init_args["members"] == count
    np.testing.assert_allclose(predict_outputs(ensemble, x.numpy()), expected, rtol=1e-6)


def test_members_must_share_their_shape() -> None:
    with pytest.raises(ValueError, match="share their constructor arguments"):
        LSTMEnsemble([LSTMForecaster(n_features=2, hidden_size=4), LSTMForecaster(n_features=2, hidden_size=5)])
    with pytest.raises(ValueError, match="2 members or more"):
        LSTMEnsemble(members(1))


def test_an_ensemble_checkpoint_rebuilds_the_same_numbers() -> None:
    ensemble = LSTMEnsemble(members(3, window_norm="log_mean", input_chunk=2)).eval()
    clone = from_checkpoint(ensemble.checkpoint())
    x = torch.rand(4, 6, 2) + 0.5
    assert isinstance(clone, LSTMEnsemble) and torch.equal(clone(x), ensemble(x))
    assert isinstance(from_checkpoint(members(1)[0].checkpoint()), LSTMForecaster)  # one network stays one


def test_members_train_from_their_own_seeds(tiny_config) -> None:
    cfg = tiny_config.with_overrides(model={"ensemble": 3})
    seeds = [member_config(cfg, i).train.seed for i in range(3)]
    assert seeds == [7, 8, 9]
    refit = member_config(cfg, 2, epochs=4).train
    assert (refit.seed, refit.epochs, refit.patience) == (9, 4, None)
    first, second = (init_model(member_config(cfg, i), n_features=2) for i in range(2))
    assert not torch.equal(first.head[-1].weight, second.head[-1].weight)


def test_members_take_their_loss_weight_power_in_turn(tiny_config) -> None:
    cfg = tiny_config.with_overrides(model={"ensemble": 3}, train={"loss_weight_power": [0.5, 1.0]})
    assert [member_config(cfg, i).train.loss_weight_power for i in range(3)] == [0.5, 1.0, 0.5]
    assert member_config(cfg, 1, epochs=4).train.loss_weight_power == 1.0  # a refit keeps each member's loss
    assert member_config(tiny_config.with_overrides(train={"loss_weight_power": 0.5}), 1).train.loss_weight_power == 0.5


@pytest.mark.parametrize("power", [[], [0.0], [1.5]])
def test_a_loss_weight_power_list_is_refused_when_empty_or_out_of_range(tiny_config, power) -> None:
    with pytest.raises(ConfigError, match="loss_weight_power"):
        parse_config({**tiny_config.model_dump(mode="json"), "train": {"loss_weight_power": power}})


@pytest.fixture
def prepared(tmp_path: Path):
    path = tmp_path / "long.csv"
    make_long("AB", n=40).to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path), model={"ensemble": 3}, train={"epochs": 2, "num_threads": 1}))
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    return cfg, data, steps.prepare_panel(data, cfg), path


def test_an_ensemble_trained_saved_and_loaded_predicts_the_same_numbers(prepared, tmp_path) -> None:
    cfg, data, preps, path = prepared
    fit = steps.fit_panel(preps, cfg)
    result = fit.shared
    assert isinstance(result.model, LSTMEnsemble) and len(result.members) == 3
    assert fit.best_epochs() == {"*": [r.best_epoch + 1 for r in result.members]}
    assert set(result.member_metrics()) == {f"member_{i}_{m}" for i in range(3) for m in ("best_epoch", "val_loss")}
    # each member is the network its seed alone trains
    alone = steps.fit_panel(preps, member_config(cfg.with_overrides(model={"ensemble": 1}), 2))
    assert torch.equal(alone.shared.model.head[-1].weight, result.members[2].model.head[-1].weight)

    forecasts, calibration = steps.forecast_splits(fit.model_for, data, preps, cfg, ("test",))
    saved = steps.bundle(fit, preps, cfg, calibration).save(tmp_path / "forecaster")
    assert json.loads((saved / "format.json").read_text())["format_version"] == 7
    assert json.loads((saved / "model.json").read_text())["init_args"]["members"] == 3
    served = ForecastModel()
    served.load(saved)
    assert isinstance(served.model, LSTMEnsemble)
    a = pd.read_csv(path, dtype=str)
    a = a[a["id"] == "A"].iloc[:36]  # up to A's last row before its test part
    out = served.forecast(a)
    np.testing.assert_allclose(out["forecast"], forecasts["test"]["A"].predicted[0], rtol=1e-6)
    assert {"lower_95", "upper_95"} <= set(out.columns)

    # a format-6 directory that names members is refused: only format 7 holds ensembles
    (saved / "format.json").write_text(json.dumps({"format": "lstm-forecaster", "format_version": 6}))
    with pytest.raises(ModelFormatError, match="need format 7"):
        ForecastBundle.load(saved)


def test_members_correct_the_seasons_of_a_residual_season_list(prepared, tmp_path) -> None:
    """`model.residual_season: [2, 6]`: the members correct the window's last 2 and last 6 rows repeated in turn,
    saved as format 10 (their seasons in model.json) and served with the same numbers; older formats refuse it."""
    cfg, data, preps, path = prepared
    cfg = cfg.with_overrides(model={"residual_to": "seasonal_naive", "residual_season": [2, 6]})
    assert [member_config(cfg, i).model.residual_season for i in range(3)] == [2, 6, 2]
    assert member_config(cfg, 1, epochs=3).model.residual_season == 6  # a refit keeps each member's season
    fit = steps.fit_panel(preps, cfg)
    ensemble = fit.shared.model
    assert [m.residual_season for m in ensemble.members] == [2, 6, 2]
    x = torch.rand(4, 6, 1) + 0.5
    assert torch.equal(from_checkpoint(ensemble.checkpoint())(x), ensemble(x))
    forecasts, calibration = steps.forecast_splits(fit.model_for, data, preps, cfg, ("test",))
    saved = steps.bundle(fit, preps, cfg, calibration).save(tmp_path / "forecaster")
    assert json.loads((saved / "format.json").read_text())["format_version"] == 10
    assert json.loads((saved / "model.json").read_text())["init_args"]["residual_seasons"] == [2, 6, 2]
    served = ForecastModel()
    served.load(saved)
    a = pd.read_csv(path, dtype=str)
    out = served.forecast(a[a["id"] == "A"].iloc[:36])
    np.testing.assert_allclose(out["forecast"], forecasts["test"]["A"].predicted[0], rtol=1e-6)
    (saved / "format.json").write_text(json.dumps({"format": "lstm-forecaster", "format_version": 7}))
    with pytest.raises(ModelFormatError, match="need format 10"):
        ForecastBundle.load(saved)
    with pytest.raises(ValueError, match="all correct a season or none"):
        LSTMEnsemble([LSTMForecaster(n_features=1, hidden_size=4, residual_season=2), LSTMForecaster(n_features=1, hidden_size=4)])
    with pytest.raises(ConfigError, match="window.lookback 6 must be >= model.residual_season 8"):
        parse_config({**cfg.model_dump(mode="json"), "model": {"residual_to": "seasonal_naive", "residual_season": [2, 8]}})


def test_a_local_ensemble_saves_every_series_members(prepared, tmp_path) -> None:
    cfg, data, preps, path = prepared
    cfg = cfg.with_overrides(model={"strategy": "local", "ensemble": 2})
    fit = steps.fit_panel(preps, cfg)
    assert fit.best_epochs().keys() == {"A", "B"} and all(len(v) == 2 for v in fit.best_epochs().values())
    saved = steps.bundle(fit, preps, cfg).save(tmp_path / "local")
    served = ForecastModel()
    served.load(saved)
    b = pd.read_csv(path, dtype=str)
    b = b[b["id"] == "B"]
    expected = forecast_frame(fit.local["B"].model, preps["B"].pre, data.series["B"])  # in-process, B's own members
    assert isinstance(served.networks["B"], LSTMEnsemble)
    np.testing.assert_allclose(served.forecast(b)["forecast"], expected["forecast"], rtol=1e-6)
