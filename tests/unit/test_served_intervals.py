"""The served model's intervals (`intervals.served`): fitted again on the errors from every test origin, the only
ones no choice was made on (`auto`, refit or not); the evaluated (validation) ones where `validation` is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config.settings import parse_config
from pipeline.data import panel
from pipeline.data.reading import load_prices
from pipeline.model.training import init_model
from pipeline.training import steps
from tests.conftest import long_config_dict, make_long

TEST_ROWS = 8


def wilder_tail(path: Path) -> Path:
    """Six series whose last TEST_ROWS rows swing far more than the rows before them."""
    frame = make_long("ABCDEF", n=60)
    rng = np.random.default_rng(3)
    y = frame["y"].astype(float).to_numpy().copy()
    tail = frame.groupby("id").cumcount().to_numpy() >= 60 - TEST_ROWS
    y[tail] += rng.normal(0, 1.5, tail.sum())
    frame.assign(y=[f"{v:.4f}" for v in y]).to_csv(path, index=False)
    return path


def resolved(path: Path, **sections):
    raw = long_config_dict(str(path), split={"val": TEST_ROWS, "test": TEST_ROWS}, **sections)
    del raw["train"]["refit"]  # the code's default
    raw["intervals"] = {**raw.get("intervals", {}), **sections.get("intervals", {})}
    cfg = parse_config(raw)
    source = load_prices(str(path))
    return panel.resolve_panel(source, cfg, panel.validate_panel(source, cfg, min_rows=6))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    path = wilder_tail(tmp_path_factory.mktemp("served") / "long.csv")
    cfg, data = resolved(path)
    preps = steps.prepare_panel(data, cfg)
    model = init_model(cfg, n_features=1)  # the intervals are fitted on any network's errors: an untrained one
    forecasts, evaluated = steps.forecast_splits(lambda sid: model, data, preps, cfg)
    return path, cfg, data, preps, model, forecasts, evaluated


def coverage(forecasts, calibration, scales, level: int) -> float:
    banded = steps.with_panel_intervals(forecasts, calibration, scales)
    inside = [(fc.actual >= fc.bands[f"lower_{level}"]) & (fc.actual <= fc.bands[f"upper_{level}"])
              for fc in banded.values()]
    return float(np.mean(np.concatenate([i.ravel() for i in inside])))


def test_the_served_model_gets_intervals_fitted_on_its_test_errors(case) -> None:
    _, cfg, data, preps, model, forecasts, evaluated = case
    assert cfg.intervals.served == "test" and cfg.train.refit  # what `auto` resolves to, refit or not
    served = steps.served_calibration(lambda sid: model, data, preps, cfg, evaluated)
    assert served is not None and served is not evaluated
    assert served.model.windows == 6 * TEST_ROWS  # every test origin of every series
    assert evaluated.model.windows == 6 * TEST_ROWS  # every validation origin
    # the test rows swing more: the served half-widths are wider at every step and cover the test part as they say
    assert all(s > e for s, e in zip(served.model.quantiles[95], evaluated.model.quantiles[95]))
    scales = steps.series_scales(data, preps, cfg)
    assert coverage(forecasts["test"], evaluated, scales, 95) < 0.9 <= coverage(forecasts["test"], served, scales, 95)
    assert served.model.scales == evaluated.model.scales  # each series' scale as before


def test_given_validation_the_served_model_gets_the_evaluated_intervals(case) -> None:
    path, _, _, _, model, _, _ = case
    cfg, data = resolved(path, intervals={"served": "validation"})
    assert cfg.intervals.served == "validation"
    preps = steps.prepare_panel(data, cfg)
    _, evaluated = steps.forecast_splits(lambda sid: model, data, preps, cfg)
    assert steps.served_calibration(lambda sid: model, data, preps, cfg, evaluated) is evaluated

