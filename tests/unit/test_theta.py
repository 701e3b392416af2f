"""The Theta method and its combination with the network's forecasts (pipeline.model.theta)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from pipeline.model import theta


def deseasonalised(history: np.ndarray, horizon: int, season: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The history divided by its multiplicative seasonal indices where it is positive and seasonal, less its
    additive ones where it is seasonal and not positive; the forecast's factors and offsets."""
    x, factors, offsets = history.astype(float), np.ones(horizon), np.zeros(horizon)
    n = len(x)
    if season > 1 and theta.seasonal(x, season):
        positions = (n + np.arange(horizon)) % season
        if np.all(x > 0):
            idx = theta.seasonal_indices(x, season)
            x, factors = x / idx[np.arange(n) % season], idx[positions]
        else:
            idx = theta.additive_indices(x, season)
            x, offsets = x - idx[np.arange(n) % season], idx[positions]
    return x, factors, offsets


def reference(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The standard Theta method written out plainly for one history: one loop per smoothing weight."""
    x, factors, offsets = deseasonalised(history, horizon, season)
    n = len(x)
    t = np.arange(n)
    slope, intercept = np.polyfit(t, x, 1) if n > 1 else (0.0, x[0])
    z = 2 * x - (intercept + slope * t)
    best = (np.inf, z[0])
    for a in theta.ALPHAS:
        level, sse = z[0], 0.0
        for value in z[1:]:
            sse += (value - level) ** 2
            level = a * value + (1 - a) * level
        if sse < best[0]:
            best = (sse, level)
    line = intercept + slope * (n - 1 + np.arange(1, horizon + 1))
    return (0.5 * line + 0.5 * best[1]) * factors + offsets


def state_space(x: np.ndarray, horizon: int, alpha: float, theta_: float) -> tuple[float, np.ndarray]:
    """The dynamic Theta model (Fiorucci et al., 2016) at one alpha and theta, one row at a time: the squared
    one-step errors from row 2 on, and the forecasts that continue the recursion on themselves."""
    level, mean, a, b = alpha * x[0] + (1 - alpha) * x[0] / theta_, x[0], x[0], 0.0
    sse, out = 0.0, []
    for i in range(1, len(x) + horizon):
        mu = level + (1 - 1 / theta_) * (a * (1 - alpha) ** i + b * (1 - (1 - alpha) ** (i + 1)) / alpha)
        value = x[i] if i < len(x) else mu
        if i >= len(x):
            out.append(mu)
        elif i >= 2:
            sse += (value - mu) ** 2
        level = alpha * value + (1 - alpha) * level
        b = (i - 1) / (i + 2) * b + 6 * (value - mean) / ((i + 1) * (i + 2))  # least-squares slope, times 1..i+1
        mean = (i * mean + value) / (i + 1)
        a = mean - b * (i + 2) / 2
    return sse, np.array(out)


def dynamic_reference(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The dynamic optimised Theta model written out: for each smoothing weight, theta in [1, THETA_MAX] by a bounded
    scalar search of the loop's squared error; the pair with the least error forecasts."""
    x, factors, offsets = deseasonalised(history, horizon, season)
    best = (np.inf, 2.0, 0.5)
    for a in theta.ALPHAS:
        found = minimize_scalar(lambda th: state_space(x, horizon, a, th)[0], bounds=(1.0, theta.THETA_MAX),
                                method="bounded", options={"xatol": 1e-10})
        if found.fun < best[0]:
            best = (found.fun, found.x, a)
    return state_space(x, horizon, best[2], best[1])[1] * factors + offsets


def test_matches_the_method_written_out_for_every_origin_at_once() -> None:
    rng = np.random.default_rng(0)
    y = 50 + np.cumsum(rng.normal(0.3, 1, 700)) + 8 * np.sin(np.arange(700) * 2 * np.pi / 12)
    last = np.arange(5, 700, 2)  # more origins than one block holds
    assert len(last) > theta.BLOCK
    got = theta.theta_forecasts(y, last, 6, 12, "standard")
    for i in (0, 1, 3, 150, len(last) - 1):
        np.testing.assert_allclose(got[i], reference(y[:last[i] + 1], 6, 12), rtol=1e-9)


@pytest.mark.parametrize("drift", [0.0, 0.3, -0.5])
def test_the_dynamic_model_matches_the_state_space_written_out(drift: float) -> None:
    """With drift -0.5 the history falls through zero: additive seasonal indices from there on."""
    rng = np.random.default_rng(2)
    y = 80 + np.cumsum(rng.normal(drift, 1, 160)) + 6 * np.sin(np.arange(160) * 2 * np.pi / 4)
    last = np.array([2, 9, 40, 159])
    got = theta.theta_forecasts(y, last, 5, 4, "dynamic")
    for i, end in enumerate(last):
        np.testing.assert_allclose(got[i], dynamic_reference(y[:end + 1], 5, 4), rtol=1e-6)


def damped_reference(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Damped Holt written out plainly for one history: one loop over its rows per grid point, the point with the
    least one-step squared error forecasting."""
    x, factors, offsets = deseasonalised(history, horizon, season)
    first = max(1, min(len(x) - 1, theta.DAMPED_START))
    best = (np.inf, None)
    for alpha, beta, phi in theta.DAMPED_GRID:
        level, trend = x[0], (x[min(first, len(x) - 1)] - x[0]) / first
        sse = 0.0
        for value in x[1:]:
            error = value - (level + phi * trend)
            sse += error ** 2
            level, trend = level + phi * trend + alpha * error, phi * trend + alpha * beta * error
        if sse < best[0]:
            best = (sse, [level + sum(phi ** j for j in range(1, h + 1)) * trend for h in range(1, horizon + 1)])
    return np.array(best[1]) * factors + offsets


@pytest.mark.parametrize("drift", [0.3, -0.5])
def test_dynamic_damped_is_the_mean_of_the_dynamic_model_and_damped_holt_written_out(drift: float) -> None:
    rng = np.random.default_rng(5)
    y = 60 + np.cumsum(rng.normal(drift, 1, 120)) + 5 * np.sin(np.arange(120) * 2 * np.pi / 4)
    last = np.array([0, 1, 2, 7, 33, 119])
    got = theta.theta_forecasts(y, last, 6, 4, "dynamic+damped")
    alone = theta.theta_forecasts(y, last, 6, 4, "dynamic")
    for i, end in enumerate(last):
        np.testing.assert_allclose(2 * got[i] - alone[i], damped_reference(y[:end + 1], 6, 4), rtol=1e-9, atol=1e-9)


def test_damped_holt_continues_a_straight_line_and_a_level() -> None:
    """A line fits every grid point without error; a tie goes to the first, undamped."""
    X = np.array([[3.0, 5.0, 7.0, 9.0, 11.0], [4.0, 4.0, 4.0, 0.0, 0.0]])
    np.testing.assert_allclose(theta.damped(X, np.array([5, 3]), 3), [[13.0, 15.0, 17.0], [4.0, 4.0, 4.0]])


def test_the_dynamic_model_keeps_theta_in_its_range() -> None:
    y = np.r_[np.zeros(20), np.arange(1.0, 21.0) ** 2] + 100  # a trend that a theta beyond 10 would follow further
    capped = theta.theta_forecasts(y, np.array([39]), 3, None, "dynamic")[0]
    np.testing.assert_allclose(capped, dynamic_reference(y, 3, 1), rtol=1e-6)


def test_reads_no_row_past_its_origin() -> None:
    y = np.linspace(10, 30, 80) + np.tile([3.0, -1.0, -2.0, 0.0], 20)
    changed = y.copy()
    changed[50:] *= 3
    np.testing.assert_array_equal(theta.theta_forecasts(y, np.array([20, 49]), 4, 4),
                                  theta.theta_forecasts(changed, np.array([20, 49]), 4, 4))


def test_a_steady_multiplicative_season_is_forecast_exactly() -> None:
    y = 100 * np.tile([1.2, 0.8, 1.1, 0.9], 10)
    np.testing.assert_allclose(theta.theta_forecasts(y, np.array([39]), 6, 4)[0], 100 * np.array([1.2, 0.8, 1.1, 0.9, 1.2, 0.8]))


def test_a_steady_season_through_zero_is_forecast_exactly_with_additive_indices() -> None:
    """Rows not all positive have no multiplicative indices: by default they get additive ones (a steady season
    crossing zero is forecast exactly); `positive` leaves them as they are, as models logged before did."""
    y = np.tile([1.0, -1.0, 2.0, -2.0], 12)
    assert theta.seasonal(y, 4)
    got = theta.theta_forecasts(y, np.array([47]), 6, 4)[0]
    np.testing.assert_allclose(got, [1.0, -1.0, 2.0, -2.0, 1.0, -1.0], atol=1e-9)
    np.testing.assert_allclose(got, theta.theta_forecasts(y, np.array([47]), 6, 4, "dynamic", "any")[0])
    np.testing.assert_allclose(theta.theta_forecasts(y, np.array([47]), 4, 4, "dynamic", "positive"),
                               theta.theta_forecasts(y, np.array([47]), 4, None, "dynamic"))
    with pytest.raises(ValueError, match="unknown Theta seasonality"):
        theta.theta_forecasts(y, np.array([47]), 4, 4, "dynamic", "multiplicative")


def test_an_empty_or_broken_history_has_no_forecast() -> None:
    y = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    got = theta.theta_forecasts(y, np.array([-1, 1, 3]), 2, None, "dynamic")
    assert np.isnan(got[0]).all() and np.isnan(got[2]).all()
    np.testing.assert_allclose(got[1], [2.0, 2.0])  # two rows leave no error to fit theta on: the last row
    # damped Holt continues two rows' step, and one row is forecast as it is
    np.testing.assert_allclose(theta.theta_forecasts(y, np.array([1]), 2, None, "dynamic+damped")[0], [2.5, 3.0])
    np.testing.assert_allclose(theta.theta_forecasts(y, np.array([0]), 2, None, "dynamic+damped")[0], [1.0, 1.0])
    np.testing.assert_allclose(theta.theta_forecasts(y, np.array([1]), 2, None, "standard")[0], reference(y[:2], 2, 1))


def test_combine_weighs_the_two_and_moves_the_quantiles_alike() -> None:
    y = np.arange(1.0, 31.0)
    net = np.full((2, 3), 10.0)
    tails = {0.1: net - 2, 0.9: net + 2}
    alone = theta.theta_forecasts(y, np.array([-1, 29]), 3, None)
    mixed, moved = theta.combine(net, tails, y, np.array([-1, 29]), 0.25, None)
    np.testing.assert_allclose(mixed[0], net[0])  # no history: the network's
    np.testing.assert_allclose(mixed[1], 0.75 * net[1] + 0.25 * alone[1])
    np.testing.assert_allclose(moved[0.9] - moved[0.1], 4.0)
    np.testing.assert_allclose(moved[0.1], mixed - 2)
    assert theta.combine(net, tails, y, np.array([0, 29]), 0.0, None)[0] is net


@pytest.mark.parametrize("season", [None, 7])
@pytest.mark.parametrize("method", theta.METHODS)
def test_long_histories_stay_quick(season: int | None, method: str) -> None:
    y = 100 + np.random.default_rng(1).normal(0, 1, 5000).cumsum() ** 2 / 100
    got = theta.theta_forecasts(y, np.arange(4000, 5000), 14, season, method)
    assert got.shape == (1000, 14) and np.isfinite(got).all()


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown Theta method 'optimal'; one of dynamic, dynamic\\+damped, standard"):
        theta.theta_forecasts(np.arange(1.0, 9.0), np.array([7]), 2, None, "optimal")
