"""Many series: the saved model (format 2), serving a long frame, per-series scores by hand, the portfolio gate."""

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
from pipeline.errors import DataError, ModelFormatError
from pipeline.evaluation.metrics import Forecasts
from pipeline.features.windows import SplitBounds
from pipeline.model.training import TrainResult, init_model
from pipeline.serving.forecast import ForecastModel
from pipeline.serving.model_format import ForecastBundle
from pipeline.tracking import promotion
from pipeline.training import steps
from tests.conftest import long_config_dict, make_long


@pytest.fixture
def prepared(tmp_path: Path):
    path = tmp_path / "long.csv"
    make_long("ABC", n=40, short={"C": 10}).to_csv(path, index=False)
    cfg = parse_config(long_config_dict(str(path)))
    data = panel.validate_panel(load_prices(str(path)), cfg, min_rows=6)
    return cfg, data, steps.prepare_panel(data, cfg), path


def network(cfg, seed: int):
    model = init_model(cfg.with_overrides(train={"seed": seed}), n_features=1)
    return model.eval()


def test_format_2_saves_every_series_and_serves_the_long_frame(prepared, tmp_path) -> None:
    cfg, data, preps, path = prepared
    fit = steps.PanelFit(shared=TrainResult(model=network(cfg, 1)))
    saved = steps.bundle(fit, preps, cfg).save(tmp_path / "forecaster")
    assert json.loads((saved / "format.json").read_text())["format_version"] == 6
    series = json.loads((saved / "series.json").read_text())
    assert series["series_column"] == "id" and series["strategy"] == "global"
    assert sorted(series["preprocessors"]) == ["A", "B", "C"]  # C, too short to train on, still served
    served = ForecastModel()
    served.load(saved)
    raw = pd.read_csv(path, dtype=str)
    out = served.forecast(raw)
    assert list(out.columns) == ["id", "origin", "step", "date", "forecast"]
    assert out.groupby("id").size().to_dict() == {"A": 4, "B": 4, "C": 4}
    # each series forecast with its own preprocessor: A alone gives A's numbers
    alone = served.forecast(raw[raw["id"] == "A"])
    np.testing.assert_array_equal(alone["forecast"], out[out["id"] == "A"]["forecast"])
    # errors name the series and the row of the frame (0-based), unknown series are refused
    broken = raw.copy()
    broken.loc[45, "y"] = "oops"
    with pytest.raises(DataError, match=r"series 'B'.*\n.*rule 'a number': row 45 \('oops'\)"):
        served.forecast(broken)
    with pytest.raises(DataError, match=r"series 'Z' in column 'id' were not among the 3 series"):
        served.forecast(raw[raw["id"] == "A"].assign(id="Z"))


def test_format_2_local_keeps_one_network_per_series(prepared, tmp_path) -> None:
    cfg, data, preps, path = prepared
    fit = steps.PanelFit(local={"A": TrainResult(model=network(cfg, 1)), "B": TrainResult(model=network(cfg, 2))})
    saved = steps.bundle(fit, preps, cfg).save(tmp_path / "forecaster")
    loaded = ForecastBundle.load(saved)
    assert loaded.series.strategy == "local" and sorted(loaded.series.state_dicts) == ["A", "B"]
    served = ForecastModel()
    served.load(saved)
    raw = pd.read_csv(path, dtype=str)
    out = served.forecast(raw[raw["id"].isin(["A", "B"])])
    # B's forecasts come from B's own network: the same rows under A's network differ
    b_rows = raw[raw["id"] == "B"]
    b_with_a = served.forecast(b_rows.assign(id="A"))
    assert not np.allclose(out[out["id"] == "B"]["forecast"], b_with_a["forecast"])
    torch.save({"A": {"w": torch.zeros(1)}}, saved / "series_weights.pt")  # weights not matching the series
    with pytest.raises(ModelFormatError, match="not a valid format-6 model directory"):
        ForecastBundle.load(saved)


def test_one_series_and_many_share_one_format(prepared, tmp_path) -> None:
    """Format 6 for both: a model of one series writes series.json too, its series column null (a panel of one), and
    loads back as a model of one series (no series column in its input or output)."""
    cfg, data, preps, _ = prepared
    bundle = steps.bundle(steps.PanelFit(shared=TrainResult(model=network(cfg, 1))), preps, cfg)
    many = bundle.save(tmp_path / "many")
    bundle.series = None
    one = bundle.save(tmp_path / "one")
    for saved in (one, many):
        assert json.loads((saved / "format.json").read_text())["format_version"] == 6
    listed = json.loads((one / "series.json").read_text())
    assert listed["series_column"] is None and list(listed["preprocessors"]) == [panel.ONE_SERIES]
    assert json.loads((many / "series.json").read_text())["series_column"] == "id"
    assert ForecastBundle.load(one).series is None and ForecastBundle.load(many).series.column == "id"
    assert "series_column" not in ForecastBundle.load(one).contract()


def test_series_scores_by_hand() -> None:
    """Two series, one window of two steps each: RMSE, sMAPE and MASE computed on paper."""
    cfg = parse_config(long_config_dict("x.csv", evaluate={"season_length": 2}, split={"val": 0, "test": 2},
                                        train={"patience": None}))
    idx = pd.date_range("2024-01-01", periods=6, freq="h")
    frames = {"A": pd.DataFrame({"y": [1.0, 3.0, 2.0, 4.0, 3.0, 5.0]}, index=idx),
              "B": pd.DataFrame({"y": [10.0, 10.0, 12.0, 12.0, 10.0, 14.0]}, index=idx)}
    data = panel.Panel("id", frames)
    preps = {s: steps.SeriesPrep(None, SplitBounds(6, 4, 4), {}, True) for s in frames}  # type: ignore[arg-type]
    fcs = {"A": Forecasts(idx[4:5], np.array([[3.0, 5.0]]), np.array([[4.0, 5.0]]), np.array([4.0]),
                          {"seasonal_naive": np.array([[2.0, 4.0]])}),
           "B": Forecasts(idx[4:5], np.array([[10.0, 14.0]]), np.array([[10.0, 10.0]]), np.array([12.0]),
                          {"seasonal_naive": np.array([[12.0, 12.0]])})}
    scores = steps.score_panel(fcs, data, preps, cfg, "test")
    row_a = scores.table.iloc[0]
    # A: in-sample |y[t] - y[t-2]| over 1,3,2,4 = (1 + 1) / 2 = 1; errors 1, 0
    assert row_a["model__mase"] == pytest.approx(0.5)
    assert row_a["model__smape"] == pytest.approx((200 * 1 / 7 + 0) / 2)
    assert row_a["model__rmse"] == pytest.approx(np.sqrt(0.5))
    assert row_a["seasonal_naive__mase"] == pytest.approx(1.0)
    row_b = scores.table.iloc[1]
    # B: in-sample |12-10|, |12-10| -> 2; errors 0, 4 -> MAE 2 -> MASE 1
    assert row_b["model__mase"] == pytest.approx(1.0)
    assert row_b["naive__mase"] == pytest.approx((2 + 2) / 2 / 2)
    means = scores.means()
    assert means["test_mase"] == pytest.approx(0.75) and means["test_seasonal_naive_mase"] == pytest.approx((1 + 1) / 2)
    assert means["test_series"] == 2 and means["test_windows"] == 2


def test_table_mase_scores_the_champion_per_series() -> None:
    table = pd.DataFrame({"id": ["A", "A", "B", "B", "B", "B"], "origin": ["t0", "t0", "t0", "t0", "t1", "t1"],
                          "step": [1, 2, 1, 2, 1, 2], "date": ["d1", "d2", "d1", "d2", "d2", "d3"],
                          "forecast": [1.0, 2.0, 5.0, 5.0, 9.0, 9.0]})
    actual = pd.concat({"A": pd.Series([2.0, 2.0], index=["d1", "d2"]),
                        "B": pd.Series([5.0, 7.0, 0.0], index=["d1", "d2", "d3"])})
    score = promotion.table_mase(table, "id", actual, {"A": ["d1"], "B": ["d1"]}, {"A": 0.5, "B": 2.0}, horizon=2)
    assert score.rmse == pytest.approx(((0.5 / 0.5) + (1.0 / 2.0)) / 2) and score.count == 4
    short = promotion.table_mase(table, "id", actual, {"A": ["d1"], "B": ["d1", "d9"]}, {"A": 1.0, "B": 1.0}, horizon=2)
    assert short.rmse is None and "series 'B'" in short.error


def test_the_portfolio_gate_speaks_mase_and_seasonal_naive() -> None:
    decision = promotion.decide("3", 0.9, 1.2, "2", promotion.Score(0.95, 10), (0.0, 0.0), "mase", "seasonal_naive")
    assert decision.promoted
    assert "test MASE 0.9 vs seasonal naive 1.2" in decision.reason and "champion v2" in decision.reason
    assert decision.tags()["gate.metric"] == "mase" and decision.tags()["gate.baseline"] == "seasonal_naive"
    assert "| seasonal naive | 1.2 |" in decision.markdown("m")
    refused = promotion.decide("3", 1.3, 1.2, None, None, (0.0, 0.0), "mase", "seasonal_naive")
    assert not refused.promoted and "baseline FAIL: test MASE 1.3" in refused.reason
