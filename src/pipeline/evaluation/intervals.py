"""Calibrated prediction intervals: split conformal per horizon step, fitted on out-of-sample errors.

After training, the validation windows' absolute errors (original units for one series; for many
series each divided by its series' scale, the in-sample seasonal-naive MAE of its training rows, so
one table fits every series) give per step h and level L the conformal quantile of the n errors of
step h at rank r = (n + 1) * L / 100 (1-based), by one of two rules (`QUANTILE_RULES`):

- `expected`: the r-th smallest, interpolated between neighbours when r is fractional (numpy's
  `quantile(method="weibull")`). With exchangeable errors the k-th smallest of n covers a new value
  with probability k / (n + 1), so the expected coverage is L % exactly: what ACD measures.
- `finite_sample`: the ceil(r)-th smallest, the classic split-conformal rank: coverage at least L %,
  at most L % + 1 / (n + 1): up to 4 points too wide with the 23 validation windows of a short series.

The interval of a forecast is forecast +- q[L][h] * scale.

Method `quantile` (conformalized quantile regression, Romano et al. 2019) starts from the quantile
head's own bounds instead: the score of a validation window is max(lo - y, y - hi) (negative inside
the head's interval), q[L][h] its conformal quantile by the same rule, and the interval
[lo - q * scale, hi + q * scale]: as wide as the head judged each window, then widened (or narrowed)
until it covers as often as it says.

With r > n (too few windows for the level) there is no finite conformal quantile: the largest error
seen is used and the state carries a note saying so. The fitted numbers are plain data (`to_dict`), saved beside the
weights (pipeline.serving.model_format's intervals.json) so a served model gives the intervals it was saved with
(`intervals.served`: the evaluation's, or fitted again on the test origins' errors).

Plain numpy, no torch, MLflow or Prefect.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.config.settings import tail_probabilities, windows_needed

log = logging.getLogger(__name__)

METHODS = ("conformal", "quantile")  # residual conformal; conformalized quantile regression on the head's quantiles
QUANTILE_RULES = ("expected", "finite_sample")  # the conformal rank: interpolated (expected coverage = nominal) or rounded up
SCALINGS = ("series", "window")  # what each error is divided by: its series' scale, or its window's recent change


def recent_scale(levels: np.ndarray, last_known: np.ndarray, span: int) -> np.ndarray:
    """Each window's recent variability: the mean |y[t] - y[t-1]| over the `span` changes up to position
    `last_known` (fewer near the start; NaN before two values are known). In the target's units; measured
    over a window's own input rows (span = lookback - 1 up to its origin), so serving, which has those
    rows, computes exactly what training did."""
    values = np.asarray(levels, dtype=float)
    changes = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(values)))]) if values.size else np.zeros(1)
    pos = np.asarray(last_known, dtype=int)
    safe = np.clip(pos, 0, max(values.size - 1, 0))
    start = np.maximum(safe - span, 0)
    count = safe - start
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (changes[safe] - changes[start]) / count
    return np.where((pos >= 1) & (count > 0), out, np.nan)


def tail_forecasts(level: int, tails: Mapping[float, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """The quantile forecasts (probability -> (n, H)) bounding the `level` % interval; ValueError when `tails`
    lacks them."""
    wanted = tail_probabilities(level)
    found = {round(float(p), 6): np.asarray(v, dtype=float) for p, v in (tails or {}).items()}
    if any(p not in found for p in wanted):
        raise ValueError(f"quantile intervals at {level} % need the head's {list(wanted)} quantiles; "
                         f"the forecasts carry {sorted(found)}")
    return found[wanted[0]], found[wanted[1]]


def band_columns(levels: Sequence[int]) -> list[str]:
    """The output columns of the intervals at `levels`: lower_80, upper_80, lower_95, upper_95, ..."""
    return [f"{side}_{level}" for level in levels for side in ("lower", "upper")]


def conformal_quantile(errors: np.ndarray, level: int, rule: str = "expected", signed: bool = False) -> tuple[float, bool]:
    """The split-conformal quantile of absolute errors (of signed scores with `signed`) at `level` % and whether it
    is finite.

    At rank (n + 1) * level / 100 among the n finite errors: interpolated between neighbours (`expected`)
    or rounded up (`finite_sample`). When the rank exceeds n the largest error is returned with False
    (too few errors for the level). NaN, False without errors.
    """
    if rule not in QUANTILE_RULES:
        raise ValueError(f"conformal quantile rule {rule!r} unknown (known: {', '.join(QUANTILE_RULES)})")
    values = np.asarray(errors, dtype=float)
    values = np.sort(values if signed else np.abs(values))
    values = values[np.isfinite(values)]
    n = values.size
    if n == 0:
        return float("nan"), False
    rounded_up = math.ceil((n + 1) * level / 100 - 1e-9)  # 1-based; the epsilon keeps 0.95 * 20 at 19, not 20
    if rounded_up > n:
        return float(values[-1]), False
    if rule == "finite_sample":
        return float(values[max(rounded_up, 1) - 1]), True
    return float(np.quantile(values, level / 100, method="weibull")), True


@dataclass(frozen=True)
class IntervalState:
    """Fitted intervals: per level, one half-width per horizon step, in units of each series' scale.

    One series: `scales` is None and the half-widths are in the target's units. Many series:
    `scales` maps each series id to the divisor its errors were scaled by; its interval is
    forecast +- half-width x scale.
    """

    levels: tuple[int, ...]
    quantiles: Mapping[int, tuple[float, ...]]  # level -> half-width per step h=1..H
    windows: int  # calibration windows behind each step's quantile
    method: str = "conformal"
    scales: Mapping[str, float] | None = None  # series id -> scale (many series, scaling "series")
    notes: tuple[str, ...] = ()
    scaling: str = "series"  # "window": half-widths in units of each window's `recent_scale` over `span` changes
    span: int = 0

    @property
    def horizon(self) -> int:
        return len(next(iter(self.quantiles.values()))) if self.quantiles else 0

    @property
    def columns(self) -> list[str]:
        return band_columns(self.levels)

    def factors(self, levels: np.ndarray, origins: np.ndarray, series: str | None = None) -> np.ndarray | float:
        """The multiplier of each window's half-widths: its inputs' recent change (scaling "window"), else its
        series' scale."""
        if self.scaling == "window":
            return recent_scale(levels, origins, self.span)
        return self.scale_of(series)

    def scale_of(self, series: str | None) -> float:
        """The multiplier of a series' half-widths: its scale (many series), 1 for one series."""
        if self.scales is None:
            return 1.0
        if series is None or series not in self.scales:
            return float("nan")
        return float(self.scales[series])

    def bands(self, point: np.ndarray, scale: float | np.ndarray = 1.0,
              tails: Mapping[float, np.ndarray] | None = None, floor: float | None = None) -> dict[str, np.ndarray]:
        """Column -> (n, H) bounds around point forecasts (n, H); `scale` a number or one per row (n,); bounds below
        `floor` (the target's least value, `data.floor`) raised to it.

        Method `quantile` widens the head's own bounds instead: `tails` maps each probability of
        `tail_probabilities(level)` to its quantile forecasts (n, H) in the target's units.
        """
        point = np.asarray(point, dtype=float)
        factor = np.broadcast_to(np.asarray(scale, dtype=float).reshape(-1, 1), (point.shape[0], 1))
        out: dict[str, np.ndarray] = {}
        for level in self.levels:
            half = np.asarray(self.quantiles[level], dtype=float)[None, :point.shape[1]] * factor  # (n, H)
            if self.method == "quantile":
                lo, hi = tail_forecasts(level, tails)
                lower, upper = lo - half, hi + half
                out[f"lower_{level}"], out[f"upper_{level}"] = np.minimum(lower, upper), np.maximum(lower, upper)
            else:
                out[f"lower_{level}"] = point - half
                out[f"upper_{level}"] = point + half
        if floor is not None:
            out = {name: np.fmax(bound, floor) for name, bound in out.items()}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "levels": list(self.levels), "windows": self.windows,
                "quantiles": {str(level): list(values) for level, values in self.quantiles.items()},
                "scales": None if self.scales is None else dict(self.scales), "notes": list(self.notes),
                "scaling": self.scaling, "span": self.span}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntervalState:
        method = str(data["method"])
        if method not in METHODS:
            raise ValueError(f"interval method {method!r} unknown (known: {', '.join(METHODS)})")
        levels = tuple(int(level) for level in data["levels"])
        quantiles = {int(level): tuple(float(v) for v in values) for level, values in data["quantiles"].items()}
        if set(quantiles) != set(levels) or len({len(v) for v in quantiles.values()}) > 1:
            raise ValueError("interval quantiles must give one list per level, all of the same length")
        scales = data.get("scales")
        scaling = str(data.get("scaling", "series"))
        if scaling not in SCALINGS:
            raise ValueError(f"interval scaling {scaling!r} unknown (known: {', '.join(SCALINGS)})")
        return cls(levels, quantiles, int(data["windows"]), method,
                   None if scales is None else {str(k): float(v) for k, v in scales.items()},
                   tuple(str(n) for n in data.get("notes", ())), scaling, int(data.get("span", 0)))


def pooled_errors(table: np.ndarray, step: int) -> np.ndarray:
    """Every step's errors carried to `step` (0-based): step k's times sqrt((step + 1) / (k + 1)), the growth of a
    random walk's error with the horizon. The small-calibration fallback of `fit_conformal`."""
    growth = np.sqrt((step + 1) / np.arange(1, table.shape[1] + 1))[None, :]
    values = (table * growth).ravel()
    return values[np.isfinite(values)]


def fit_conformal(errors: np.ndarray | Mapping[int, np.ndarray], levels: Sequence[int],
                  scales: Mapping[str, float] | None = None, who: str = "the model", scaling: str = "series",
                  span: int = 0, rule: str = "expected", method: str = "conformal") -> IntervalState:
    """Per-step conformal half-widths from calibration errors (n, H) (already divided by each row's scale).

    Method `quantile`: `errors` maps each level to its signed scores max(lo - y, y - hi) (n, H) instead.
    Rows with a non-finite error in a step are left out of that step. The fallback when the calibration
    set is small: a step with fewer errors than a finite-sample quantile at a level needs
    (`windows_needed`) takes every step's errors, each carried to its horizon by `pooled_errors`
    (with a note); a level with too few errors even then gets the largest error, and a note naming `split.val`.
    A wider level's half-width is never below a narrower one's (a pooled 95 % can fall below a step's own 80 %).
    """
    signed = method == "quantile"
    table = {level: np.asarray(errors[level] if isinstance(errors, Mapping) else errors, dtype=float)
             for level in levels}
    n, horizon = next(iter(table.values())).shape if table else (0, 0)
    quantiles: dict[int, tuple[float, ...]] = {}
    notes: list[str] = []
    for level in levels:
        needed = windows_needed(level)
        counts = np.isfinite(table[level]).sum(axis=0) if horizon else np.zeros(0, dtype=int)
        pooled = [h for h in range(horizon) if counts[h] < needed]
        values, valid = zip(*(conformal_quantile(pooled_errors(table[level], h) if h in pooled else table[level][:, h],
                                                 level, rule, signed)
                              for h in range(horizon))) if horizon else ((), ())
        quantiles[level] = tuple(values)
        if not all(valid):
            notes.append(f"{who}'s {level} % intervals rest on {n} validation window(s), fewer than the "
                         f"{needed} a finite-sample conformal quantile needs: they use the widest "
                         f"error seen and may cover less than {level} %; enlarge split.val")
        elif pooled:
            notes.append(f"{who}'s {level} % intervals: steps {pooled[0] + 1}-{pooled[-1] + 1} have fewer than the "
                         f"{needed} validation errors a finite-sample conformal quantile needs: each takes every "
                         "step's errors, scaled by the square root of the horizon ratio; enlarge split.val for "
                         "a quantile of its own")
    if not signed:  # a level pooled for want of errors can come out below a narrower one read from its own step
        ordered = sorted(levels)
        for narrow, wide in zip(ordered, ordered[1:]):
            quantiles[wide] = tuple(np.fmax(quantiles[wide], quantiles[narrow]).tolist())
    for note in notes:
        log.warning(note)
    return IntervalState(tuple(levels), quantiles, n, method, scales, tuple(notes), scaling, span)


@dataclass(frozen=True)
class Calibration:
    """The intervals of the model and of the baseline that stands beside it (seasonal naive, else naive)."""

    model: IntervalState
    baseline: IntervalState
    baseline_name: str
    notes: tuple[str, ...] = field(default=())


def interval_baseline(names: Sequence[str]) -> str:
    """The baseline that gets intervals too: seasonal naive when scored, else naive (persistence)."""
    return "seasonal_naive" if "seasonal_naive" in names else "naive"
