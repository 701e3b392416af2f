"""The network's own window handling (model.input_chunk / window_norm / residual_to) and the training options
that go with it (train.loss, loss_weight, windows_per_epoch): what each promises, and model format 3."""

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
from pipeline.features.transforms import transform_domain
from pipeline.model.network import LSTMForecaster, from_checkpoint, predict, window_moments
from pipeline.model.training import fit, init_model, window_loss, window_weights
from pipeline.serving.model_format import ForecastBundle
from pipeline.training import steps
from tests.conftest import long_config_dict, make_long

WINDOWED = {"preprocess": {"feature_scaler": "none", "target_scaler": "none"},
            "model": {"window_norm": "log_mean", "residual_to": "seasonal_naive", "input_chunk": 2},
            "window": {"lookback": 8, "horizon": 4}, "evaluate": {"season_length": 4},
            "train": {"loss": "mae", "loss_weight": "mase", "loss_weight_power": 0.5}}


def windowed_config(source: str = "long.csv", **sections: dict):
    raw = long_config_dict(source, **WINDOWED)
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return parse_config(raw)


def test_log_mean_targets_and_units_are_inverse_and_the_network_ignores_the_level() -> None:
    torch.manual_seed(0)
    net = LSTMForecaster(n_features=2, horizon=3, hidden_size=4, window_norm="log_mean", target_index=1).eval()
    x = torch.rand(5, 6, 2) + 0.5
    y = torch.rand(5, 3) + 0.5
    torch.testing.assert_close(net.to_units(x, net.target_space(x, y)), y)
    with torch.no_grad():
        # a series ten times larger gets the same normalised output and ten times the forecast
        torch.testing.assert_close(net(x * 10), net(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net.to_units(x * 10, net(x * 10)), 10 * net.to_units(x, net(x)), rtol=1e-5, atol=1e-5)


def test_standard_targets_and_units_are_inverse_and_the_network_ignores_shift_and_scale() -> None:
    """`standard` feeds (value - window mean) / window sd: a series moved by any amount (through zero) or scaled
    by any factor > 0 gets the same normalised output, and its forecast moves and scales with it."""
    torch.manual_seed(0)
    net = LSTMForecaster(n_features=2, horizon=3, hidden_size=4, window_norm="standard", target_index=1).eval()
    x = torch.randn(5, 6, 2, dtype=torch.float64)
    y = torch.randn(5, 3, dtype=torch.float64)
    net = net.double()
    torch.testing.assert_close(net.to_units(x, net.target_space(x, y)), y)
    with torch.no_grad():
        moved = 7 * x - 40
        torch.testing.assert_close(net(moved), net(x))
        torch.testing.assert_close(net.to_units(moved, net(moved)), 7 * net.to_units(x, net(x)) - 40)
        quantiles = torch.randn(5, 2, 3, dtype=torch.float64)  # (batch, 1 + Q, horizon) maps the same way
        torch.testing.assert_close(net.to_units(x, quantiles)[:, 1], net.to_units(x, quantiles[:, 1]))


def test_a_flat_window_passes_on_changes_in_its_own_units() -> None:
    """A window whose sd is 0 (or within float noise of 0: a constant, a run of zeros) has scale 1, not a division
    by zero: its targets are the changes from its mean, in the target's units."""
    flat = torch.stack([torch.zeros(6), torch.full((6,), 1e6) + torch.tensor([0.0, 1e-4, 0, 0, 0, 0])])[..., None]
    mean, scale = window_moments(flat.double())
    torch.testing.assert_close(scale[:, 0, 0], torch.ones(2, dtype=torch.float64))
    net = LSTMForecaster(n_features=1, horizon=2, hidden_size=4, window_norm="standard").double()
    y = torch.tensor([[0.0, 3.0], [1e6 + 2, 1e6]], dtype=torch.float64)
    torch.testing.assert_close(net.target_space(flat.double(), y), y - mean[:, :, 0])
    assert torch.isfinite(net(flat.double())).all()


def test_the_seasonal_residual_starts_from_seasonal_naive() -> None:
    """With the head's last layer zeroed, the forecast is the window's last season repeated, in original units."""
    net = LSTMForecaster(n_features=1, horizon=5, hidden_size=4, window_norm="log_mean", residual_season=2).eval()
    with torch.no_grad():
        net.head[-1].weight.zero_()
        net.head[-1].bias.zero_()
        x = torch.tensor([[[3.0], [4.0], [5.0], [6.0], [7.0], [8.0]]])
        forecast = net.to_units(x, net(x))
    torch.testing.assert_close(forecast, torch.tensor([[7.0, 8.0, 7.0, 8.0, 7.0]]))


def test_input_chunks_feed_whole_steps_of_rows() -> None:
    net = LSTMForecaster(n_features=3, horizon=2, hidden_size=4, input_chunk=4)
    assert net.lstm.input_size == 12
    steps = []
    net.lstm.register_forward_hook(lambda module, args, out: steps.append(args[0].shape))
    net(torch.rand(2, 8, 3))
    assert steps == [torch.Size([2, 2, 12])]


def test_a_plain_network_keeps_its_saved_form_and_identity_maps() -> None:
    net = LSTMForecaster(n_features=1, horizon=2)
    assert set(net.init_args) == {"n_features", "horizon", "hidden_size", "num_layers", "dropout", "head_hidden",
                                  "head_activation"}
    x, y = torch.rand(3, 4, 1), torch.rand(3, 2)
    assert net.target_space(x, y) is y and net.to_units(x, y) is y


@pytest.mark.parametrize(("change", "message"), [
    ({"window": {"lookback": 7}}, "multiple of model.input_chunk 2"),
    ({"preprocess": {"feature_scaler": "standard"}}, "normalises each window itself"),
    ({"preprocess": {"target_transform": "log"}}, "normalises each window itself"),
    ({"evaluate": {"season_length": None}}, "needs a season"),
    ({"evaluate": {"season_length": 12}}, "window.lookback 8 must be >= evaluate.season_length 12"),
    ({"model": {"window_norm": "none"}}, "train.loss_weight mase .* needs model.window_norm"),
    ({"model": {"window_norm": "standard"}, "preprocess": {"target_scaler": "standard"}},
     "normalises each window itself"),
    ({"data": {"features": ["x"]}}, "add the target 'y' to data.features"),
])
def test_window_options_that_do_not_fit_the_rest_are_config_errors(change, message) -> None:
    with pytest.raises(ConfigError, match=message):
        windowed_config(**change)


def test_log_mean_needs_positive_values_like_a_log_transform() -> None:
    assert "model.window_norm log_mean" in transform_domain(windowed_config())["y"]


def test_mase_weights_follow_the_window_level_over_the_series_scale(tmp_path: Path) -> None:
    """Two series alike but for a factor 10: equal weights (each counts by its MASE), mean 1 after normalising."""
    base = make_long("A", n=40)
    big = base.assign(id="B", y=base["y"].astype(float) * 10)
    path = tmp_path / "long.csv"
    pd.concat([base, big]).to_csv(path, index=False)
    cfg = windowed_config(str(path), train={"loss_weight_power": 1.0})
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    preps = steps.prepare_panel(data, cfg)
    a, b = preps["A"].windows["train"], preps["B"].windows["train"]
    np.testing.assert_allclose(a.weight, b.weight, rtol=1e-9)
    frame = data.series["A"]
    values = frame["y"].to_numpy(dtype=float)
    fit_rows = values[: preps["A"].bounds.val_start]
    scale = np.mean(np.abs(fit_rows[4:] - fit_rows[:-4]))
    first = a.origins[0]
    assert a.weight[0] == pytest.approx(values[first - 7: first + 1].mean() / scale)
    half = steps.prepare_panel(data, cfg.with_overrides(train={"loss_weight_power": 0.5}))["A"].windows["train"]
    np.testing.assert_allclose(half.weight, a.weight)  # the windows carry power 1; training raises them
    np.testing.assert_allclose(window_weights(half, 0.5), np.sqrt(a.weight))
    assert steps.stacked(preps)["train"].weight.shape == (len(a) + len(b),)


def test_standard_mase_weights_follow_the_window_sd_over_the_series_scale(tmp_path: Path) -> None:
    """With `standard` an error is in units of its window's sd: the weight is that sd over the series' scale, so a
    series moved through zero and scaled by 10 gets the same weights; a flat window's unit is 1."""
    base = make_long("A", n=40)
    moved = base.assign(id="B", y=base["y"].astype(float) * 10 - 500)
    path = tmp_path / "long.csv"
    pd.concat([base, moved]).to_csv(path, index=False)
    cfg = windowed_config(str(path), model={"window_norm": "standard"}, train={"loss_weight_power": 1.0},
                          data={"price_columns": []})  # values of any sign
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    preps = steps.prepare_panel(data, cfg)
    a, b = preps["A"].windows["train"], preps["B"].windows["train"]
    np.testing.assert_allclose(a.weight, b.weight, rtol=1e-6)
    values = data.series["A"]["y"].to_numpy(dtype=float)
    fit_rows = values[: preps["A"].bounds.val_start]
    scale = np.mean(np.abs(fit_rows[4:] - fit_rows[:-4]))
    first = a.origins[0]
    assert a.weight[0] == pytest.approx(values[first - 7: first + 1].std() / scale)
    flat = make_long("C", n=40).assign(y=3.0)
    pd.concat([base, flat]).to_csv(path, index=False)
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    weights = steps.prepare_panel(data, cfg)["C"].windows["train"].weight
    np.testing.assert_allclose(weights, 1 / (1e-3 * 3.0))  # unit 1 over the flat series' floor of its scale


def test_the_loss_weight_power_changes_what_the_network_learns(tmp_path: Path) -> None:
    """Training raises the windows' weights to `train.loss_weight_power`: the same windows and seed, another power,
    other weights; the same power given as a one-entry list, the same weights."""
    path = tmp_path / "long.csv"
    base = make_long("A", n=40)
    pd.concat([base, base.assign(id="B", y=base["y"].astype(float) * 10 + 50)]).to_csv(path, index=False)
    cfg = windowed_config(str(path), train={"epochs": 3, "num_threads": 1, "loss_weight_power": 1.0})
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    windows = steps.stacked(steps.prepare_panel(data, cfg))

    def trained(power) -> torch.Tensor:
        own = cfg.with_overrides(train={"loss_weight_power": power})
        result = fit(init_model(own, n_features=windows["train"].X.shape[2]), windows["train"], windows["val"], own.train)
        return result.model.head[-1].weight.detach()

    assert torch.equal(trained(1.0), trained([1.0]))
    assert not torch.equal(trained(1.0), trained(0.5))


def test_weighted_losses_convert_units_and_unweighted_ones_stay_the_library_losses() -> None:
    pred, target = torch.tensor([[1.0, 3.0], [0.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    weight = torch.tensor([2.0, 0.5])
    assert window_loss("mae")(pred, target, weight).item() == pytest.approx((1.5 * 2 + 1.0 * 0.5) / 2)
    assert window_loss("mse")(pred, target, weight).item() == pytest.approx((2.5 * 4 + 1.0 * 0.25) / 2)
    assert window_loss("mse")(pred, target).item() == torch.nn.functional.mse_loss(pred, target).item()
    assert window_loss("mae")(pred, target).item() == torch.nn.functional.l1_loss(pred, target).item()


def test_windows_per_epoch_bounds_each_epoch(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    make_long("ABC", n=60).to_csv(path, index=False)
    cfg = windowed_config(str(path), train={"windows_per_epoch": 10, "batch_size": 5, "epochs": 2, "patience": None})
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    windows = steps.stacked(steps.prepare_panel(data, cfg))
    assert len(windows["train"]) > 30
    model = init_model(cfg, n_features=1)
    batches = []
    model.register_forward_hook(lambda module, args, out: batches.append(len(args[0])) if module.training else None)
    result = fit(model, windows["train"], None, cfg.train)
    assert batches == [5, 5, 5, 5] and result.epochs_run == 2


def test_a_windowed_global_model_trains_saves_as_format_3_and_serves_the_same(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    make_long("AB", n=60).to_csv(path, index=False)
    cfg = windowed_config(str(path), train={"epochs": 3})
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    preps = steps.prepare_panel(data, cfg)
    windows = steps.stacked(preps)
    result = fit(init_model(cfg, n_features=1), windows["train"], windows["val"], cfg.train)
    assert all(np.isfinite(result.train_loss)) and len(result.val_loss) == result.epochs_run
    bundle = steps.bundle(steps.PanelFit(shared=result), preps, cfg)
    saved = bundle.save(tmp_path / "forecaster")
    assert json.loads((saved / "format.json").read_text())["format_version"] == 6
    loaded = ForecastBundle.load(saved)
    assert loaded.checkpoint["init_args"]["window_norm"] == "log_mean"
    again = from_checkpoint(loaded.checkpoint)
    x = windows["test"].X[:]
    np.testing.assert_array_equal(predict(again, x), predict(result.model, x))
    # in the frame's units: the forecasts lie near the series' level, not near the normalised zero
    assert np.abs(predict(again, x).mean() / x.mean() - 1) < 0.5

    # a directory claiming an older format but holding window options is refused, not served without them
    (saved / "format.json").write_text(json.dumps({"format": "lstm-forecaster", "format_version": 2}))
    with pytest.raises(ModelFormatError, match="window options .* need format 3"):
        ForecastBundle.load(saved)
