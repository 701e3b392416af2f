"""The Theta method, the statistical forecast the network's can be combined with: by default the dynamic
optimised Theta model (Fiorucci, Pellegrini, Louzada, Petropoulos & Koehler, 2016), or the standard Theta
method (Assimakopoulos & Nikolopoulos, 2000) that won M3.

Each forecast reads only its series' rows up to its origin. Where the rows are seasonal (the autocorrelation
at the season's lag passes the 90 % test that the M4 competition's benchmarks used) and positive, they are
divided by classical multiplicative seasonal indices first, and the forecast multiplied back. Seasonal rows
that are not all positive (zeros, negative values) get classical additive indices instead, subtracted and
added back (`SEASONALITIES`: "any"); with "positive" they are forecast as they are, as before additive
indices came in.

`standard`: the deseasonalised rows x_0..x_{n-1} are split into two theta lines: theta 0, their least-squares
line, and theta 2, `2 x - line`. Simple exponential smoothing, its smoothing weight the one of `ALPHAS` with
the least one-step squared error, extrapolates theta 2; the forecast is the mean of the two lines'.

`dynamic`: the state-space form of the method, in which the least-squares line is refit at every row on the
rows up to it (A_t, B_t), so that the one-step fit reads no row ahead, and theta is optimised with the
smoothing weight. Row t (from 0) is forecast from the state after row t-1 as

    mu_t = l_{t-1} + (1 - 1/theta) * (A_{t-1} (1 - alpha)^t + B_{t-1} (1 - (1 - alpha)^(t+1)) / alpha),
    l_t = alpha x_t + (1 - alpha) l_{t-1},  l_{-1} = x_0 / theta,

and further steps continue the recursion on the forecasts themselves. The one-step errors from row 2 on are
linear in k = 1 - 1/theta for a given alpha, so their least-squares k is exact (theta from 1 to `THETA_MAX`);
alpha is the one of `ALPHAS` whose best theta leaves the least squared error. A history of two rows or fewer
has no error to fit: its forecast is its last row.

`dynamic+damped`: the mean of the dynamic model's forecast and damped Holt's (Gardner & McKenzie, 1985) of the same
deseasonalised rows, the two combined as the M4 competition's `Comb` benchmark combined its exponential smoothings.
Damped Holt forecasts row t from the state after row t-1 as

    mu_t = l_{t-1} + phi b_{t-1},  l_t = mu_t + alpha e_t,  b_t = phi b_{t-1} + alpha beta e_t,  e_t = x_t - mu_t,

from l_0 = x_0 and b_0 the mean step of the first rows (up to `DAMPED_START`); step h ahead of the last row is
l + (phi + ... + phi^h) b. (alpha, beta, phi) is the one of the grid `DAMPED_GRID` with the least one-step squared
error. A history of one row is forecast as that row.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

__all__ = ["CHOICES", "METHODS", "SEASONALITIES", "combine", "theta_forecasts"]

CHOICES = tuple(i / 10 for i in range(11))  # `model.theta_weight: auto` picks one of 0, 0.1, ..., 1 on validation
BLOCK = 256  # origins forecast at once (a block's rows matrix is BLOCK x the longest history) ...
BLOCK_CELLS = 2_000_000  # ... or fewer, so that the matrix stays within 16 MB on long histories

ALPHAS = np.concatenate([np.linspace(0.02, 0.3, 15), np.linspace(0.35, 1.0, 14)])
THETA_MAX = 10.0  # the dynamic model's theta lies in [1, THETA_MAX]
SCORED_FROM = 2  # the dynamic model's one-step errors count from the third row (two rows make the first line)
METHODS = ("dynamic", "dynamic+damped", "standard")
DAMPED_GRID = np.array([(a, b, p) for a in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)  # smoothing weight alpha ...
                        for b in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)  # ... the trend's beta (relative to alpha) ...
                        for p in (1.0, 0.98, 0.95, 0.9, 0.8)])  # ... and the damping phi (a tie: the first)
DAMPED_BLOCK = 64  # histories damped Holt runs at once (its states: grid points x histories)
DAMPED_START = 3  # damped Holt's first trend: the mean step of the first rows, up to this many steps
SEASONALITIES = ("any", "positive")  # seasonal rows deseasonalised: all (additive where not positive), positive only
SEASONAL_Z = 1.645  # the 90 % one-sided test of the M4 benchmarks' seasonality check


def seasonal(x: np.ndarray, season: int) -> bool:
    """Whether rows `x` are seasonal at lag `season`: three seasons of rows at least, and the autocorrelation at
    that lag beyond 1.645 standard errors (Bartlett's, from the lower lags)."""
    n = len(x)
    if season < 2 or n < 3 * season:
        return False
    d = x - x.mean()
    denom = float(d @ d)
    if denom <= 0:
        return False
    acf = np.array([float(d[:n - k] @ d[k:]) / denom for k in range(1, season + 1)])
    limit = SEASONAL_Z * np.sqrt((1 + 2 * np.sum(acf[:-1] ** 2)) / n)
    return bool(abs(acf[-1]) > limit)


def position_means(x: np.ndarray, season: int, multiplicative: bool) -> np.ndarray:
    """Per position in the season (the first the position of row 0), the mean ratio (`multiplicative`) or difference
    of each row to the centred moving average of `season` rows (2 x `season` for an even season)."""
    if season % 2:
        kernel = np.full(season, 1 / season)
    else:  # a 2 x season moving average, centred
        kernel = np.r_[0.5, np.ones(season - 1), 0.5] / season
    trend = np.convolve(x, kernel, mode="valid")
    start = season // 2
    rows = x[start:start + len(trend)]
    detrended = rows / trend if multiplicative else rows - trend
    positions = (np.arange(len(trend)) + start) % season
    return np.array([detrended[positions == p].mean() for p in range(season)])


def seasonal_indices(x: np.ndarray, season: int) -> np.ndarray:
    """Classical multiplicative seasonal indices of positive rows `x` (one per position in the season, the first
    the position of row 0, their mean 1): the mean ratio of each row to the centred moving average."""
    idx = position_means(x, season, multiplicative=True)
    return idx / idx.mean()


def additive_indices(x: np.ndarray, season: int) -> np.ndarray:
    """Classical additive seasonal indices of rows `x` (one per position in the season, the first the position of
    row 0, their mean 0): the mean difference of each row from the centred moving average."""
    idx = position_means(x, season, multiplicative=False)
    return idx - idx.mean()


def theta_forecasts(levels: np.ndarray, last_rows: np.ndarray, horizon: int, season: int | None,
                    method: str = "dynamic", seasonality: str = "any") -> np.ndarray:
    """Theta forecasts (len(last_rows), horizon) of `levels` by `method` (one of `METHODS`): row i from the rows up
    to last_rows[i] (inclusive), for the `horizon` rows after it; NaN where that history is empty or not finite.
    `seasonality` (one of `SEASONALITIES`): which seasonal histories are deseasonalised (the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"unknown Theta method {method!r}; one of {', '.join(METHODS)}")
    if seasonality not in SEASONALITIES:
        raise ValueError(f"unknown Theta seasonality {seasonality!r}; one of {', '.join(SEASONALITIES)}")
    y = np.asarray(levels, dtype=float)
    last_rows = np.asarray(last_rows, dtype=int)
    out = np.full((len(last_rows), horizon), np.nan)
    finite_upto = np.cumsum(~np.isfinite(y)) == 0  # row r: every row up to r is finite
    size = max(1, min(BLOCK, BLOCK_CELLS // max(1, int(last_rows.max(initial=0)) + 1)))
    for start in range(0, len(last_rows), size):
        block = last_rows[start:start + size]
        ok = (block >= 0) & finite_upto[np.clip(block, 0, None)] if len(y) else np.zeros(len(block), dtype=bool)
        if ok.any():
            out[start:start + size][ok] = block_forecasts(y, block[ok] + 1, horizon, int(season or 1), method,
                                                          seasonality == "any")
    return out


def block_forecasts(y: np.ndarray, lengths: np.ndarray, horizon: int, m: int, method: str,
                    additive: bool = True) -> np.ndarray:
    """Theta forecasts from the first lengths[i] rows of `y`, each for `horizon` rows (every history finite); a
    seasonal history not all positive gets additive indices with `additive`, none without."""
    steps = np.arange(1, horizon + 1)
    X = np.zeros((len(lengths), int(lengths.max())))  # each history (deseasonalised), zeros after its end
    factors = np.ones((len(lengths), horizon))
    offsets = np.zeros((len(lengths), horizon))
    for i, n in enumerate(lengths):
        x = y[:n]
        if m > 1 and seasonal(x, m):
            if np.all(x > 0):
                idx = seasonal_indices(x, m)
                x = x / idx[np.arange(n) % m]
                factors[i] = idx[(n - 1 + steps) % m]
            elif additive:
                idx = additive_indices(x, m)
                x = x - idx[np.arange(n) % m]
                offsets[i] = idx[(n - 1 + steps) % m]
        X[i, :n] = x
    lines = {"standard": standard, "dynamic": dynamic, "dynamic+damped": dynamic_damped}[method]
    return lines(X, lengths, horizon) * factors + offsets


def standard(X: np.ndarray, lengths: np.ndarray, horizon: int) -> np.ndarray:
    """The standard Theta method's forecasts of each row's history (X[i, :lengths[i]])."""
    steps = np.arange(1, horizon + 1)
    t = np.arange(X.shape[1], dtype=float)
    valid = t[None, :] < lengths[:, None]
    # theta 0: each history's least-squares line
    nn = lengths.astype(float)
    t_mean = (nn - 1) / 2
    x_mean = X.sum(axis=1) / nn
    dt = np.where(valid, t[None, :] - t_mean[:, None], 0.0)
    stt = np.sum(dt ** 2, axis=1)
    slope = np.divide(np.sum(dt * (X - x_mean[:, None]), axis=1), stt, out=np.zeros_like(stt), where=stt > 0)
    intercept = x_mean - slope * t_mean
    Z = np.where(valid, 2 * X - (intercept[:, None] + slope[:, None] * t[None, :]), 0.0)  # theta 2
    rows = np.arange(len(lengths))
    best_sse = np.full(len(lengths), np.inf)
    level = Z[:, 0].copy()
    for a in ALPHAS:  # SES levels at every row of every history at once, the first row starting the level
        lv = lfilter([a], [1, -(1 - a)], Z, axis=1, zi=(1 - a) * Z[:, :1])[0]
        sse = np.sum(np.where(valid[:, 1:], Z[:, 1:] - lv[:, :-1], 0.0) ** 2, axis=1)
        better = sse < best_sse
        best_sse = np.where(better, sse, best_sse)
        level = np.where(better, lv[rows, lengths - 1], level)
    line = intercept[:, None] + slope[:, None] * (lengths[:, None] - 1 + steps[None, :])
    return 0.5 * line + 0.5 * level[:, None]


def dynamic(X: np.ndarray, lengths: np.ndarray, horizon: int) -> np.ndarray:
    """The dynamic optimised Theta model's forecasts of each row's history (X[i, :lengths[i]])."""
    t = np.arange(X.shape[1], dtype=float)
    valid = t[None, :] < lengths[:, None]
    total, moment = np.cumsum(X, axis=1), np.cumsum(X * (t + 1), axis=1)  # running sums of x_t and (t + 1) x_t
    A, B = line(total, moment, t + 1)  # A_t, B_t at every row
    x0 = X[:, :1]
    scored = valid[:, 1:] & (t[None, 1:] >= SCORED_FROM)
    rows, last = np.arange(len(lengths)), lengths - 1
    k_max = 1 - 1 / THETA_MAX
    best_sse = np.where(lengths > SCORED_FROM, np.inf, 0.0)  # too short to score: alpha 1, theta 1 (the last row)
    alpha, k, level = np.ones(len(lengths)), np.zeros(len(lengths)), X[rows, last]
    for a in ALPHAS:
        # every row's smoothed level started at x_0; the start x_0 / theta adds -k x_0 (1 - a)^(t+1) to it
        lv = lfilter([a], [1, -(1 - a)], X, axis=1, zi=(1 - a) * x0)[0]
        decay = (1 - a) ** t[1:]
        r = np.where(scored, X[:, 1:] - lv[:, :-1], 0.0)  # the one-step error at k = 0 ...
        g = np.where(scored, decay * (A[:, :-1] - x0) + B[:, :-1] * (1 - decay * (1 - a)) / a, 0.0)  # ... less k g
        rg, gg = np.sum(r * g, axis=1), np.sum(g * g, axis=1)
        kk = np.clip(np.divide(rg, gg, out=np.zeros_like(rg), where=gg > 0), 0.0, k_max)
        sse = np.sum(r * r, axis=1) - 2 * kk * rg + kk * kk * gg
        better = sse < best_sse
        best_sse = np.where(better, sse, best_sse)
        alpha, k = np.where(better, a, alpha), np.where(better, kk, k)
        level = np.where(better, lv[rows, last] - kk * x0[:, 0] * (1 - a) ** lengths, level)
    a_, b_, total_, moment_ = A[rows, last], B[rows, last], total[rows, last], moment[rows, last]
    out = np.empty((len(lengths), horizon))
    for step in range(horizon):  # the recursion goes on, each forecast read as the next row
        i = (lengths + step).astype(float)
        mu = level + k * (a_ * (1 - alpha) ** i + b_ * (1 - (1 - alpha) ** (i + 1)) / alpha)
        out[:, step] = mu
        level = alpha * mu + (1 - alpha) * level
        total_, moment_ = total_ + mu, moment_ + (i + 1) * mu
        a_, b_ = line(total_, moment_, i + 1)
    return out


def dynamic_damped(X: np.ndarray, lengths: np.ndarray, horizon: int) -> np.ndarray:
    """The mean of the dynamic optimised Theta model's forecasts and damped Holt's of each row's history."""
    return 0.5 * dynamic(X, lengths, horizon) + 0.5 * damped(X, lengths, horizon)


def damped(X: np.ndarray, lengths: np.ndarray, horizon: int) -> np.ndarray:
    """Damped Holt's forecasts of each row's history (X[i, :lengths[i]]), its parameters the ones of `DAMPED_GRID`
    with the least one-step squared error on that history (the module docstring). Every grid point runs at once on
    `DAMPED_BLOCK` histories: the states are (grid points, histories), small enough to stay in the CPU's cache."""
    return np.concatenate([damped_block(X[i:i + DAMPED_BLOCK, :int(lengths[i:i + DAMPED_BLOCK].max())],
                                        lengths[i:i + DAMPED_BLOCK], horizon)
                           for i in range(0, len(lengths), DAMPED_BLOCK)])


def damped_block(X: np.ndarray, lengths: np.ndarray, horizon: int) -> np.ndarray:
    """`damped` on one block of histories."""
    alpha, beta, phi = (DAMPED_GRID[:, j, None] for j in range(3))
    gain = alpha * beta
    rows, last = np.arange(len(lengths)), lengths - 1
    first = np.clip(np.minimum(last, DAMPED_START), 1, None)
    level = np.tile(X[:, 0], (len(DAMPED_GRID), 1))
    trend = np.tile((X[rows, np.minimum(first, last)] - X[:, 0]) / first, (len(DAMPED_GRID), 1))
    sse = np.zeros_like(level)
    end_level, end_trend, end_sse = level.copy(), trend.copy(), sse.copy()
    ends = [np.flatnonzero(last == t) for t in range(X.shape[1])]  # the histories whose last row is row t
    damped_trend, error, scratch = (np.empty_like(level) for _ in range(3))
    for t in range(1, X.shape[1]):  # rows past a history's end change only states that are no longer read
        np.multiply(phi, trend, out=damped_trend)
        level += damped_trend  # now the forecast of row t
        np.subtract(X[:, t], level, out=error)
        sse += np.multiply(error, error, out=scratch)
        level += np.multiply(alpha, error, out=scratch)
        np.add(damped_trend, np.multiply(gain, error, out=scratch), out=trend)
        if len(ends[t]):
            end_level[:, ends[t]], end_trend[:, ends[t]], end_sse[:, ends[t]] = \
                level[:, ends[t]], trend[:, ends[t]], sse[:, ends[t]]
    best = np.argmin(end_sse, axis=0)  # one row: every sse 0, the first grid point, whose forecast is that row
    damping = np.cumsum(DAMPED_GRID[best, 2, None] ** np.arange(1, horizon + 1), axis=1)
    return end_level[best, rows, None] + end_trend[best, rows, None] * damping


def line(total: np.ndarray, moment: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intercept A and slope B of the least-squares line through `count` rows at times 1..count, from their sum
    `total` and their time-weighted sum `moment` (sum of time x value); the slope of one row is 0."""
    sxx = count * (count ** 2 - 1) / 12
    slope = np.divide(moment - (count + 1) / 2 * total, sxx, out=np.zeros(np.broadcast(total, sxx).shape),
                      where=sxx > 0)
    return total / count - slope * (count + 1) / 2, slope


def combine(values: np.ndarray, tails: dict[float, np.ndarray], levels: np.ndarray, last_rows: np.ndarray,
            weight: float, season: int | None, method: str = "dynamic",
            seasonality: str = "any") -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """The network's forecasts (n, horizon) from the histories ending at `last_rows`, combined with Theta's (`method`,
    `seasonality`):
    `(1 - weight) * network + weight * theta`, and a quantile head's forecasts moved as the point forecast moved.
    The network's alone where `weight` is 0 or Theta has no forecast (an empty or non-finite history)."""
    if weight <= 0 or len(values) == 0:
        return values, tails
    theta = theta_forecasts(levels, last_rows, values.shape[1], season, method, seasonality)
    mixed = np.where(np.isfinite(theta), (1 - weight) * values + weight * theta, values)
    return mixed, {q: tail + (mixed - values) for q, tail in tails.items()}
