"""The M4 competition's point metrics, checked by hand on tiny series."""

import math

import numpy as np
import pytest

from pipeline.evaluation.metrics import mase, mase_scale, smape


def test_smape_by_hand():
    # |10-8|/(10+8) = 1/9, |20-25|/(20+25) = 1/9: mean 1/9, times 200
    assert smape(np.array([10.0, 20.0]), np.array([8.0, 25.0])) == pytest.approx(200 / 9)


def test_smape_both_zero_is_perfect_and_one_zero_is_the_maximum():
    assert smape(np.array([0.0, 0.0]), np.array([0.0, 0.0])) == 0.0
    assert smape(np.array([0.0]), np.array([5.0])) == pytest.approx(200.0)


def test_mase_scale_is_the_in_sample_seasonal_naive_error():
    insample = np.array([1.0, 2.0, 3.0, 5.0, 4.0, 7.0])
    # season 2: |3-1|, |5-2|, |4-3|, |7-5| -> mean 2.0
    assert mase_scale(insample, season=2) == pytest.approx(2.0)
    # season 1: 1, 1, 2, 1, 3 -> mean 1.6
    assert mase_scale(insample, season=1) == pytest.approx(1.6)


def test_mase_scale_falls_back_to_lag_one_on_a_series_shorter_than_a_season():
    assert mase_scale(np.array([1.0, 3.0, 4.0]), season=24) == pytest.approx(1.5)
    assert math.isnan(mase_scale(np.array([1.0]), season=1))


def test_mase_by_hand_and_undefined_on_a_flat_history():
    # MAE of the forecast: (1 + 3) / 2 = 2; scale 2 -> 1.0
    assert mase(np.array([10.0, 12.0]), np.array([11.0, 9.0]), scale=2.0) == pytest.approx(1.0)
    assert math.isnan(mase(np.array([1.0]), np.array([1.0]), scale=mase_scale(np.array([5.0, 5.0, 5.0]))))
