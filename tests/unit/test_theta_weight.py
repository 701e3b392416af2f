"""`model.theta_weight`: Theta's share of the forecasts, chosen on the validation origins, used alike in
evaluation, intervals and the saved model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import parse_config, served_config, theta_weight
from pipeline.data import panel
from pipeline.data.reading import load_prices
from pipeline.errors import ModelFormatError
from pipeline.model import theta
from pipeline.model.training import TrainResult, init_model
from pipeline.serving.forecast import ForecastModel, model_input
from pipeline.serving.model_format import load_bundle
from pipeline.training import steps
from tests.conftest import long_config_dict, make_long


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    path = tmp_path_factory.mktemp("theta") / "long.csv"
    make_long("ABCD", n=60).to_csv(path, index=False)
    # no floor: the models saved here are read as formats 7 and 8, which predate it (format 11)
    cfg = parse_config(long_config_dict(str(path), split={"val": 8, "test": 8})).with_overrides(data={"floor": None})
    source = load_prices(str(path))
    cfg, data = panel.resolve_panel(source, cfg, panel.validate_panel(source, cfg, min_rows=6))
    preps = steps.prepare_panel(data, cfg)
    model = init_model(cfg, n_features=1).eval()  # untrained: Theta's forecasts are far better than its own
    return path, cfg, data, preps, model


def without_setting(saved: Path, key: str, format_version: int | None = None) -> None:
    """Rewrite a saved model as one logged before `model.<key>` existed (and, given, of an older format version)."""
    contract = json.loads((saved / "contract.json").read_text())
    del contract["config"]["model"][key]
    (saved / "contract.json").write_text(json.dumps(contract))
    if format_version is not None:
        (saved / "format.json").write_text(json.dumps({"format": "lstm-forecaster", "format_version": format_version}))


def served_from_first_test_origin(model: ForecastModel, path: Path, preps: dict) -> pd.DataFrame:
    """The served model's forecasts from each series' rows up to its first test origin (the rows Theta reads)."""
    raw = pd.read_csv(path, dtype=str)
    first = {sid: int(p.windows["test"].origins[0]) for sid, p in preps.items()}
    return model.forecast(model_input(raw[raw.groupby("id").cumcount() <= raw["id"].map(first)], model.bundle, "long.csv"))


def test_auto_chooses_the_weight_that_scores_best_on_validation(case) -> None:
    _, cfg, data, preps, model = case
    assert cfg.model.theta_weight == "auto" and theta_weight(cfg) == 0.0  # not yet chosen: the network alone
    chosen = steps.with_theta_weight(lambda sid: model, data, preps, cfg)
    assert chosen.model.theta_weight == max(theta.CHOICES)  # an untrained network: Theta's share as large as allowed
    given = cfg.with_overrides(model={"theta_weight": 0.3})
    assert steps.with_theta_weight(lambda sid: model, data, preps, given) is given


def test_the_forecasts_and_their_intervals_are_the_weighted_mean(case) -> None:
    _, cfg, data, preps, model = case
    by_weight = {w: steps.forecast_splits(lambda sid: model, data, preps, cfg.with_overrides(model={"theta_weight": w}),
                                          ("test",)) for w in (0.0, 0.3, 1.0)}
    for sid in preps:
        net, mixed, alone = (by_weight[w][0]["test"][sid].predicted for w in (0.0, 0.3, 1.0))
        np.testing.assert_allclose(mixed, 0.7 * net + 0.3 * alone, rtol=1e-6)
        assert not np.allclose(net, alone)
    # the intervals are calibrated on the combined forecasts' errors: narrower than the untrained network's alone
    assert by_weight[0.3][1].model.quantiles[95][0] < by_weight[0.0][1].model.quantiles[95][0]


def test_the_saved_model_serves_what_was_evaluated_from_the_whole_history(case, tmp_path: Path) -> None:
    path, cfg, data, preps, model = case
    settled = cfg.with_overrides(model={"theta_weight": 0.4})
    tests, calibration = steps.forecast_splits(lambda sid: model, data, preps, settled, ("test",))
    saved = steps.bundle(steps.PanelFit(shared=TrainResult(model=model)), preps, settled, calibration).save(
        tmp_path / "forecaster")
    served = ForecastModel()
    served.load(saved)
    raw = pd.read_csv(path, dtype=str)
    last_origin = {sid: int(p.windows["test"].origins[0]) for sid, p in preps.items()}
    upto = raw[raw.groupby("id").cumcount() <= raw["id"].map(last_origin)]  # each series up to its first test origin
    rows = model_input(upto, served.bundle, "long.csv")
    assert (rows.groupby("id").size() == upto.groupby("id").size()).all()  # Theta reads every row: none dropped
    out = served.forecast(rows)
    for sid in preps:
        np.testing.assert_allclose(out[out["id"] == sid]["forecast"], tests["test"][sid].predicted[0], rtol=1e-5)
        bands = tests["test"][sid].bands
        np.testing.assert_allclose(out[out["id"] == sid]["upper_95"], bands["upper_95"][0], rtol=1e-5)


def test_a_model_older_than_the_dynamic_theta_serves_the_standard_one(case, tmp_path: Path) -> None:
    path, cfg, data, preps, model = case
    settled = cfg.with_overrides(model={"theta_weight": 0.4})
    by_method = {m: steps.forecast_splits(lambda sid: model, data, preps,
                                          settled.with_overrides(model={"theta_method": m}), ("test",))
                 for m in theta.METHODS}
    saved = steps.bundle(steps.PanelFit(shared=TrainResult(model=model)), preps, settled,
                         by_method["dynamic"][1]).save(tmp_path / "forecaster")
    assert json.loads((saved / "format.json").read_text())["format_version"] == 8
    # as a model logged before the setting: format 7 or older, its config naming no theta_method
    without_setting(saved, "theta_method", format_version=7)
    old = ForecastModel()
    old.load(saved)
    assert old.bundle.config.model.theta_method == "standard"
    out = served_from_first_test_origin(old, path, preps)
    apart = 0.0
    for sid in preps:
        served = out[out["id"] == sid]["forecast"].to_numpy()
        np.testing.assert_allclose(served, by_method["standard"][0]["test"][sid].predicted[0], rtol=1e-5)
        dynamic = by_method["dynamic"][0]["test"][sid].predicted[0]
        apart = max(apart, float(np.max(np.abs(served - dynamic) / np.abs(dynamic))))
    assert apart > 1e-4  # the two methods do differ here
    # a format-7 model that names the dynamic model is refused: code of that format never combined with it
    contract = json.loads((saved / "contract.json").read_text())
    contract["config"]["model"]["theta_method"] = "dynamic"
    (saved / "contract.json").write_text(json.dumps(contract))
    with pytest.raises(ModelFormatError, match="combines with the dynamic Theta model, which needs format 8"):
        load_bundle(saved)


def test_a_model_older_than_additive_indices_serves_series_through_zero_as_evaluated(tmp_path: Path) -> None:
    """Series through zero get Theta's additive seasonal indices; a saved config that names no
    `model.theta_seasonality` (logged before it) reads as `positive` and serves what it was evaluated on."""
    path = tmp_path / "long.csv"
    frame = make_long("ABC", n=60)
    values = frame["y"].astype(float)
    frame["y"] = (values - values.groupby(frame["id"]).transform("mean")).map("{:.4f}".format)  # each through zero
    frame.to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path), split={"val": 8, "test": 8}, data={"price_columns": []},
                                        model={"theta_weight": 0.5}))
    source = load_prices(str(path))
    cfg, data = panel.resolve_panel(source, cfg, panel.validate_panel(source, cfg, min_rows=6))
    preps = steps.prepare_panel(data, cfg)
    model = init_model(cfg, n_features=1).eval()
    assert cfg.model.theta_seasonality == "any" and cfg.model.window_norm == "standard"  # saved and served below
    by_kind = {k: steps.forecast_splits(lambda sid: model, data, preps,
                                        cfg.with_overrides(model={"theta_seasonality": k}), ("test",))
               for k in theta.SEASONALITIES}
    saved = steps.bundle(steps.PanelFit(shared=TrainResult(model=model)), preps, cfg,
                         by_kind["any"][1]).save(tmp_path / "forecaster")
    without_setting(saved, "theta_seasonality")
    old = ForecastModel()
    old.load(saved)
    assert old.bundle.config.model.theta_seasonality == "positive"
    out = served_from_first_test_origin(old, path, preps)
    for sid in preps:
        served = out[out["id"] == sid]["forecast"].to_numpy()
        np.testing.assert_allclose(served, by_kind["positive"][0]["test"][sid].predicted[0], rtol=1e-5)
        assert not np.allclose(served, by_kind["any"][0]["test"][sid].predicted[0], rtol=1e-3)


def test_the_served_share_is_chosen_again_on_the_test_origins(tmp_path: Path) -> None:
    """`model.theta_weight_served: auto` (`test`): Theta's share in the logged model is chosen again on the test
    origins, which early stopping never saw; the scores keep the validation share, and a refit model's evaluated
    model serves that one."""
    path = tmp_path / "long.csv"
    frame = make_long("ABCD", n=60)
    level = frame["id"].map({sid: 10 + 2 * k for k, sid in enumerate("ABCD")})
    flat = frame.groupby("id").cumcount() >= 52  # the test part: each series' level, its season gone
    frame["y"] = np.where(flat, level, frame["y"].astype(float))
    frame["y"] = frame["y"].map("{:.4f}".format)
    frame.to_csv(path, index=False)
    asked = parse_config(long_config_dict(str(path), split={"val": 8, "test": 8}))
    source = load_prices(str(path))
    asked, data = panel.resolve_panel(source, asked, panel.validate_panel(source, asked, min_rows=6))
    preps = steps.prepare_panel(data, asked)
    model = init_model(asked, n_features=1).eval()  # near each window's mean: Theta's season wins until it is gone
    evaluated = steps.with_theta_weight(lambda sid: model, data, preps, asked)
    assert evaluated.model.theta_weight == 1.0
    served = {given: steps.served_theta_weight(lambda sid: model, data, preps,
                                               asked.with_overrides(model={"theta_weight_served": given}), evaluated)
              for given in ("auto", "test", "validation", 0.3)}
    assert served["auto"].model.theta_weight_served == served["test"].model.theta_weight_served < 1.0
    assert served["validation"].model.theta_weight_served == 1.0 and served[0.3].model.theta_weight_served == 0.3
    fixed = asked.with_overrides(model={"theta_weight": 0.5})  # a share given: served as given
    assert steps.served_theta_weight(lambda sid: model, data, preps, fixed, fixed).model.theta_weight_served == 0.5
    recorded = served["auto"]
    assert recorded.model.theta_weight == 1.0  # the evaluated share, what the test scores were measured with
    share = recorded.model.theta_weight_served
    assert served_config(recorded).model.theta_weight == share
    # as a refit model logs it: the served share outside, the evaluated one in evaluated/
    inner = steps.bundle(steps.PanelFit(shared=TrainResult(model=model)), preps, recorded)
    saved = steps.bundle(steps.PanelFit(shared=TrainResult(model=model)), preps, served_config(recorded), None,
                         inner).save(tmp_path / "forecaster")
    loaded = ForecastModel()
    loaded.load(saved)
    assert theta_weight(loaded.bundle.config) == share and theta_weight(loaded.bundle.evaluated.config) == 1.0
    rows = model_input(pd.read_csv(path, dtype=str), loaded.bundle, "long.csv")
    out, kept = loaded.forecast(rows), loaded.forecast(rows, evaluated=True)
    assert not np.allclose(out["forecast"], kept["forecast"])
    for forecast, weight in ((out, share), (kept, 1.0)):  # each as a model logged with that share alone serves
        alone = ForecastModel()
        alone.load(steps.bundle(steps.PanelFit(shared=TrainResult(model=model)), preps, recorded.with_overrides(
            model={"theta_weight": weight})).save(tmp_path / f"alone-{weight}"))
        np.testing.assert_allclose(forecast["forecast"], alone.forecast(rows)["forecast"], rtol=1e-6)


def test_the_summary_names_the_scored_and_the_served_share() -> None:
    from pipeline.tracking.run_report import metrics_table, theta_summary

    both = {"test_rmse": 1.0, "theta_weight": 0.1, "theta_weight_served": 0.9}
    assert theta_summary(both) == ("Theta's share of the forecasts: 0.1 in the test scores (chosen on the validation "
                                   "origins); the logged model serves 0.9 (chosen on the test origins)")
    assert theta_summary(both) in metrics_table(both)  # the run's description too
    assert theta_summary({"theta_weight": 0.4, "theta_weight_served": 0.4}).endswith("0.4 (scored and served)")
    assert theta_summary({"theta_weight": 0.3}).endswith("0.3 (scored and served)")  # a run logged before the setting
    assert theta_summary({"theta_weight": 0.0, "theta_weight_served": 0.0}) is None
    assert theta_summary({"test_rmse": 1.0}) is None
