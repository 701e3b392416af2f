"""Metrics against values computed by hand."""

import numpy as np
import pytest

from pipeline.evaluation.metrics import Forecasts, direction_accuracy, mae, mape, rmse, score


def test_metrics_match_hand_computed_values() -> None:
    actual = np.array([10.0, 12.0, 11.0, 13.0])
    pred = np.array([11.0, 11.0, 11.0, 15.0])
    # errors -1, 1, 0, -2: squared 1, 1, 0, 4 -> mean 1.5
    assert rmse(actual, pred) == pytest.approx(np.sqrt(1.5))
    assert mae(actual, pred) == pytest.approx(1.0)
    assert mape(actual, pred) == pytest.approx((1 / 10 + 1 / 12 + 0 + 2 / 13) / 4 * 100)
    anchor = np.array([10.5, 11.0, 12.0, 12.0])
    # actual moves: -, +, -, +   predicted moves: +, 0, -, +  -> right on rows 3 and 4
    assert direction_accuracy(actual.reshape(-1, 1), pred.reshape(-1, 1), anchor) == pytest.approx(0.5)


def test_mape_skips_zero_actuals() -> None:
    assert mape(np.array([0.0, 10.0]), np.array([5.0, 11.0])) == pytest.approx(10.0)


def test_score_sets_model_beside_persistence_and_their_ratio() -> None:
    fc = Forecasts(
        dates=np.array(["2021-01-05", "2021-01-06"], dtype="datetime64[ns]"),
        actual=np.array([[11.0], [12.0]]),
        predicted=np.array([[10.5], [12.5]]),
        anchor=np.array([10.0, 11.0]),
    )
    s = score(fc).flat()
    assert s["test_rmse"] == pytest.approx(0.5)
    assert s["test_naive_rmse"] == pytest.approx(1.0)
    assert s["test_rmse_ratio"] == pytest.approx(0.5)
    # persistence never moves: its direction accuracy is undefined (NaN: n/a in tables, not logged), not 0
    assert np.isnan(s["test_naive_direction_acc"]) and s["test_direction_acc"] == 1.0


def test_direction_accuracy_is_undefined_only_for_a_forecast_that_never_moves() -> None:
    anchor = np.array([10.0, 11.0])
    actual = np.array([[11.0], [10.0]])
    assert np.isnan(direction_accuracy(actual, np.array([[10.0], [11.0]]), anchor))
    assert direction_accuracy(actual, np.array([[10.0], [10.5]]), anchor) == pytest.approx(0.5)


def test_near_zero_flags_mape_where_actuals_cross_or_near_zero() -> None:
    from pipeline.evaluation.metrics import near_zero

    assert near_zero(np.array([100.0, 101.0, 99.0])) is None
    assert "change sign" in near_zero(np.array([3.0, -1.0, 2.0]))
    assert "near zero" in near_zero(np.array([100.0, 0.5, 99.0]))
    assert near_zero(np.array([])) is None
