"""`data.floor`: forecasts and interval bounds raised to the target's least value, in evaluation and serving alike,
saved as format 11; `auto` finds 0 where every training value is >= 0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config.settings import parse_config
from pipeline.data import panel
from pipeline.data.auto import target_floor
from pipeline.data.reading import load_prices
from pipeline.errors import ModelFormatError
from pipeline.evaluation.intervals import IntervalState
from pipeline.features.windows import Preprocessor
from pipeline.model.training import TrainResult, init_model
from pipeline.serving.forecast import ForecastModel
from pipeline.serving.model_format import FLOOR_VERSION, ForecastBundle
from pipeline.training import steps
from tests.conftest import long_config_dict


def rainfall(path: Path, series: str = "AB", n: int = 48, low: float = 0.0) -> Path:
    """Zero-inflated daily series (most days dry, a few wet), their least value `low`."""
    rng = np.random.default_rng(3)
    rows = []
    for sid in series:
        values = np.where(rng.random(n) < 0.6, 0.0, rng.exponential(8.0, n)) + low
        dates = pd.date_range("2024-01-01", periods=n, freq="D").strftime("%Y-%m-%d")
        rows += [(sid, d, f"{v:.3f}") for d, v in zip(dates, values)]
    pd.DataFrame(rows, columns=["id", "ts", "y"]).to_csv(path, index=False)
    return path


def config(path: Path, **data):
    return parse_config(long_config_dict(str(path), data={"price_columns": [], **data},
                                         evaluate={"season_length": 7}, intervals={"served": "validation"}))


def prepared(path: Path, **data):
    cfg = config(path, **data)
    source = load_prices(str(path))
    cfg, frames = panel.resolve_panel(source, cfg, panel.validate_panel(source, cfg, min_rows=6))
    return cfg, frames, steps.prepare_panel(frames, cfg)


def test_auto_finds_zero_where_every_training_value_is_at_least_zero(tmp_path: Path) -> None:
    cfg, frames, _ = prepared(rainfall(tmp_path / "rain.csv"))
    assert cfg.data.floor == 0.0
    frames = [f.copy() for f in frames.series.values()]
    assert target_floor(cfg, frames) == 0.0
    frames[1].iloc[-1, frames[1].columns.get_loc("y")] = -1.0  # in the test part: not read
    assert target_floor(cfg, frames) == 0.0
    frames[1].iloc[0, frames[1].columns.get_loc("y")] = -1.0  # a training row below zero: no floor
    assert target_floor(cfg, frames) is None
    shifted, _, _ = prepared(rainfall(tmp_path / "temps.csv", low=-3.0))
    assert shifted.data.floor is None


def test_forecasts_and_bounds_are_raised_to_the_floor_and_served_as_evaluated(tmp_path: Path) -> None:
    path = rainfall(tmp_path / "rain.csv")
    model = init_model(config(path), n_features=1).eval()  # untrained: wide intervals around a rough forecast

    def test_forecasts(cfg, frames, preps):
        forecasts, calibration = steps.forecast_splits(lambda sid: model, frames, preps, cfg, ("test",))
        return forecasts["test"], calibration

    bare = test_forecasts(*prepared(path, floor=None))[0]
    assert min(float(fc.bands["lower_95"].min()) for fc in bare.values()) < 0  # what the floor is there for
    cfg, frames, preps = prepared(path)
    floored, calibration = test_forecasts(cfg, frames, preps)
    for sid, fc in floored.items():
        assert fc.predicted.min() >= 0 and all(bound.min() >= 0 for bound in fc.bands.values())
        np.testing.assert_allclose(fc.predicted, np.fmax(bare[sid].predicted, 0.0))
        assert all(bound.min() >= 0 for bands in fc.baseline_bands.values() for bound in bands.values())

    saved = steps.bundle(steps.PanelFit(shared=TrainResult(model=model)), preps, cfg, calibration).save(
        tmp_path / "forecaster")
    assert json.loads((saved / "format.json").read_text())["format_version"] == FLOOR_VERSION
    served = ForecastModel()
    served.load(saved)
    a = pd.read_csv(path, dtype=str)
    out = served.forecast(a[a["id"] == "A"].iloc[:-4])  # up to A's last row before its test part
    np.testing.assert_allclose(out["forecast"], floored["A"].predicted[0], rtol=1e-6)
    np.testing.assert_allclose(out["lower_95"], floored["A"].bands["lower_95"][0], rtol=1e-6)
    assert out[["forecast", "lower_80", "lower_95"]].min().min() >= 0

    (saved / "format.json").write_text(json.dumps({"format": "lstm-forecaster", "format_version": 10}))
    with pytest.raises(ModelFormatError, match=f"floor, which needs format {FLOOR_VERSION}"):
        ForecastBundle.load(saved)


def test_bands_below_the_floor_are_raised_to_it() -> None:
    state = IntervalState((80,), {80: (2.0, 3.0)}, windows=20)
    point = np.array([[1.0, 5.0]])
    assert state.bands(point)["lower_80"].tolist() == [[-1.0, 2.0]]
    bands = state.bands(point, floor=0.0)
    assert bands["lower_80"].tolist() == [[0.0, 2.0]] and bands["upper_80"].tolist() == [[3.0, 8.0]]


def test_a_saved_floor_must_be_a_number(tmp_path: Path) -> None:
    cfg, _, preps = prepared(rainfall(tmp_path / "rain.csv"))
    saved = next(iter(preps.values())).pre.to_dict()
    assert saved["floor"] == 0.0 and Preprocessor.from_dict(saved).floor == 0.0
    with pytest.raises(ValueError, match="floor must be a finite number"):
        Preprocessor.from_dict({**saved, "floor": "zero"})
    del saved["floor"]
    assert Preprocessor.from_dict(saved).floor is None  # a model saved before the setting: no floor
