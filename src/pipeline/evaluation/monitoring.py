"""How the champion does on the actuals that arrive: the forecasts that batch runs logged, joined with the rows
that have come in since, scored against what the registered version promised; the new rows tested for drift;
and the retraining policy's decision with its reasons.

Plain functions on frames (no MLflow, no Prefect): `flows/monitor.py` finds the logged forecasts and wires
these steps; docs/monitoring.md explains the definitions.

Frames used here:
- forecasts: `series, origin, step, date, forecast, [lower_L, upper_L ...], version, role, run_id, logged`
  (one row per logged forecast; `origin` and `date` are timestamps)
- actuals: `series, date, actual`
- scored: the forecasts that found their actual, with `actual` and `scale` (the series' MASE scale)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from pipeline.config.settings import MonitoringConfig
from pipeline.evaluation.metrics import mase_scale, smape

SERIES = "series"
KEY = ["version", SERIES, "origin", "step"]
_LOWER = re.compile(r"^lower_(\d+)$")


# ---------------------------------------------------------------- the forecast log
def forecast_rows(table: pd.DataFrame, series_column: str | None, one_series: str, *, version: str, role: str,
                  run_id: str, logged: pd.Timestamp) -> pd.DataFrame:
    """One logged forecasts CSV (`pipeline predict`'s columns) in the monitor's form: a `series` column (the id
    column of a model of many series; `one_series` for a model of one), parsed times, and where it came from."""
    out = table.copy()
    ids = out.pop(series_column).astype(str) if series_column and series_column in out.columns else one_series
    out.insert(0, SERIES, ids)
    out["origin"] = pd.to_datetime(out["origin"], format="ISO8601")
    out["date"] = pd.to_datetime(out["date"], format="ISO8601")
    out["step"] = out["step"].astype("int64")
    out["version"], out["role"], out["run_id"], out["logged"] = str(version), role, run_id, logged
    return out


def forecast_log(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Every logged forecast once: a forecast logged twice by the same version (a re-run of the same day) counts
    once, the newest."""
    frames = [p for p in parts if len(p)]
    if not frames:
        return pd.DataFrame(columns=[*KEY, "date", "forecast", "role", "run_id", "logged"])
    log = pd.concat(frames, ignore_index=True).sort_values("logged", kind="stable")
    return log.drop_duplicates(KEY, keep="last").sort_values([SERIES, "origin", "step"], ignore_index=True)


def levels_of(frame: pd.DataFrame) -> list[int]:
    """The interval levels a forecast frame carries (`lower_L` with its `upper_L`)."""
    found = [int(m.group(1)) for c in frame.columns if (m := _LOWER.match(str(c))) and f"upper_{m.group(1)}" in frame]
    return sorted(found)


# ---------------------------------------------------------------- actuals and scales
def actual_table(frames: Mapping[str, pd.DataFrame], target: str) -> pd.DataFrame:
    """The target of every series by date: `series, date, actual`."""
    parts = [pd.DataFrame({SERIES: sid, "date": f.index, "actual": f[target].to_numpy(dtype=float)})
             for sid, f in frames.items()]
    return (pd.concat(parts, ignore_index=True) if parts
            else pd.DataFrame({SERIES: pd.Series(dtype=str), "date": pd.Series(dtype="datetime64[ns]"),
                               "actual": pd.Series(dtype=float)}))


def mase_scales(frames: Mapping[str, pd.DataFrame], target: str, before: Mapping[str, pd.Timestamp],
                season: int) -> dict[str, float]:
    """Each series' MASE scale: the in-sample seasonal-naive MAE (M4's definition, the one training scores with)
    of its rows up to `before[series]` (its first scored origin), so every live error is scaled by history the
    forecast could see."""
    out: dict[str, float] = {}
    for sid, end in before.items():
        frame = frames.get(sid)
        if frame is None:
            continue
        scale = mase_scale(frame.loc[frame.index <= end, target].to_numpy(dtype=float), season)
        out[sid] = scale if np.isfinite(scale) and scale > 0 else float("nan")
    return out


def join_actuals(forecasts: pd.DataFrame, actuals: pd.DataFrame, scales: Mapping[str, float]) -> pd.DataFrame:
    """The forecasts whose date has arrived, with the actual and the series' MASE scale."""
    if forecasts.empty or actuals.empty:
        return forecasts.assign(actual=pd.Series(dtype=float), scale=pd.Series(dtype=float)).iloc[0:0]
    right = actuals.assign(date=pd.to_datetime(actuals["date"]).astype(forecasts["date"].dtype))
    scored = forecasts.merge(right, on=[SERIES, "date"], how="inner", validate="many_to_one")
    scored["scale"] = scored[SERIES].map(scales).astype(float)
    return scored.sort_values([SERIES, "date", "origin", "step"], ignore_index=True)


# ---------------------------------------------------------------- scores
def live_metrics(scored: pd.DataFrame, levels: Sequence[int]) -> dict[str, float]:
    """MAE, sMAPE (M4, percent), MASE (each error over its series' scale, then the mean) and the coverage of each
    level over the rows given, with their count."""
    actual = scored["actual"].to_numpy(dtype=float)
    pred = scored["forecast"].to_numpy(dtype=float)
    err = np.abs(actual - pred)
    scaled = err / scored["scale"].to_numpy(dtype=float)
    out = {"points": float(len(scored)),
           "mae": float(err.mean()) if len(err) else float("nan"),
           "smape": smape(actual, pred),
           "mase": float(np.nanmean(scaled)) if np.isfinite(scaled).any() else float("nan")}
    for level in levels:
        lower = scored[f"lower_{level}"].to_numpy(dtype=float)
        upper = scored[f"upper_{level}"].to_numpy(dtype=float)
        inside = (actual >= lower) & (actual <= upper)
        out[f"coverage_{level}"] = float(inside.mean()) if len(inside) else float("nan")
    return out


def grouped(scored: pd.DataFrame, by: str, levels: Sequence[int]) -> pd.DataFrame:
    """`live_metrics` per value of `by` (series, step or date), one row each."""
    rows = [{by: key, **live_metrics(part, levels)} for key, part in scored.groupby(by, sort=True)]
    return pd.DataFrame(rows, columns=[by, "points", "mae", "smape", "mase", *(f"coverage_{lv}" for lv in levels)])


def last_dates(scored: pd.DataFrame, window: int) -> pd.DataFrame:
    """The rows whose forecast date is among the last `window` dates scored."""
    if scored.empty:
        return scored
    kept = np.sort(scored["date"].unique())[-window:]
    return scored[scored["date"].isin(kept)]


@dataclass(frozen=True)
class Promise:
    """What the registered version's held-out test said: pooled metrics (`mae`, `smape`, `mase`, `coverage_L`) and,
    for a model of many series, each series' test MASE/MAE."""

    pooled: Mapping[str, float]
    per_series: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @staticmethod
    def from_run(metrics: Mapping[str, float], series_table: pd.DataFrame | None = None,
                 series_column: str | None = None) -> Promise:
        """From a training run's `test_*` metrics and its per-series test table (`evaluation/test_series_scores.csv`:
        `model__<metric>` columns), when it logged one."""
        pooled = {k.removeprefix("test_"): float(v) for k, v in metrics.items()
                  if re.fullmatch(r"test_(mae|smape|mase|rmse|coverage_\d+)", k)}
        per: dict[str, dict[str, float]] = {}
        if series_table is not None and series_column and series_column in series_table.columns:
            for _, row in series_table.iterrows():
                per[str(row[series_column])] = {c.removeprefix("model__"): float(row[c]) for c in series_table.columns
                                                if c in ("model__mase", "model__mae", "model__smape")}
        return Promise(pooled, per)

    def error_metric(self) -> str | None:
        """The metric degradation is judged on: MASE where the version recorded it, else MAE."""
        for name in ("mase", "mae"):
            if np.isfinite(self.pooled.get(name, float("nan"))):
                return name
        return None

    def of_series(self, series: str, metric: str) -> float:
        return float(self.per_series.get(series, {}).get(metric, self.pooled.get(metric, float("nan"))))


def ratio(live: float, promised: float) -> float:
    return live / promised if np.isfinite(live) and np.isfinite(promised) and promised > 0 else float("nan")


def series_table(scored: pd.DataFrame, levels: Sequence[int], promise: Promise, policy: MonitoringConfig,
                 drift: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per series: live metrics over the window, the promised figure, their ratio and whether it degraded,
    beside the drift tests' results."""
    table = grouped(last_dates(scored, policy.window), SERIES, levels)
    metric = promise.error_metric()
    if metric is not None:
        table["promised_" + metric] = [promise.of_series(s, metric) for s in table[SERIES]]
        table["ratio_" + metric] = [ratio(v, p) for v, p in zip(table[metric], table["promised_" + metric])]
        limit = policy.max_mase_ratio
        table["degraded"] = ((table["ratio_" + metric] > limit) & (table["points"] >= policy.min_points)
                             if limit is not None else False)
    else:
        table["degraded"] = False
    if drift is not None and not drift.empty:
        table = table.merge(drift, on=SERIES, how="outer")
        table["degraded"] = table["degraded"].fillna(False).astype(bool)
    return table.sort_values(SERIES, ignore_index=True)


# ---------------------------------------------------------------- drift of the inputs
def seen_until(forecasts: pd.DataFrame, series: Iterable[str], trained_end: pd.Timestamp | None) -> dict[str, pd.Timestamp]:
    """The last row each series' model had seen: its first logged forecast origin (the data as it stood when the
    version started forecasting), else the end of the day the training run's data ended (`data_end`, a date)."""
    firsts = forecasts.groupby(SERIES)["origin"].min().to_dict() if len(forecasts) else {}
    fallback = None if trained_end is None else trained_end.normalize() + pd.Timedelta(days=1) - pd.Timedelta(1)
    out = {sid: firsts.get(sid, fallback) for sid in series}
    return {sid: t for sid, t in out.items() if t is not None}


def drift_tests(frames: Mapping[str, pd.DataFrame], target: str, seen_until: Mapping[str, pd.Timestamp],
                season: int, policy: MonitoringConfig) -> pd.DataFrame:
    """Per series, the rows after `seen_until[series]` (the last row the model had seen: see `seen_until`)
    against the reference: the same number of rows just before it (at least two seasons and 8 rows).

    Level: Mann-Whitney U (two-sided) of the values, counted when p < alpha and the median moved by at least
    `drift_min_level_change` of the reference's. Variance: Brown-Forsythe (Levene's test about the median) of the
    first differences, counted when p < alpha and their spread changed by `drift_min_variance_ratio` or more.
    Series with fewer than 3 new rows are not tested.
    """
    from scipy import stats

    rows = []
    for sid, frame in frames.items():
        values = frame[target].to_numpy(dtype=float)
        until = seen_until.get(sid)
        split = len(values) if until is None else int(frame.index.searchsorted(until, side="right"))
        new = values[split:]
        ref = values[max(0, split - max(len(new), 2 * season, 8)):split]
        row: dict[str, object] = {SERIES: sid, "new_rows": len(new), "level_change": np.nan, "level_p": np.nan,
                                  "variance_ratio": np.nan, "variance_p": np.nan, "level_drift": False,
                                  "variance_drift": False}
        if len(new) >= 3 and len(ref) >= 3:
            base = abs(float(np.median(ref))) or float(np.mean(np.abs(ref))) or 1.0
            row["level_change"] = (float(np.median(new)) - float(np.median(ref))) / base
            row["level_p"] = float(stats.mannwhitneyu(new, ref, alternative="two-sided").pvalue)
            row["level_drift"] = bool(row["level_p"] < policy.drift_alpha
                                      and abs(row["level_change"]) >= policy.drift_min_level_change)
            d_new, d_ref = np.diff(new), np.diff(ref)
            spread_ref = float(np.std(d_ref))
            if len(d_new) >= 2 and spread_ref > 0:
                row["variance_ratio"] = float(np.std(d_new)) / spread_ref
                with np.errstate(all="ignore"):
                    p = float(stats.levene(d_new, d_ref, center="median").pvalue)
                row["variance_p"] = p
                r = row["variance_ratio"]
                row["variance_drift"] = bool(np.isfinite(p) and p < policy.drift_alpha
                                             and (r >= policy.drift_min_variance_ratio
                                                  or r <= 1 / policy.drift_min_variance_ratio))
        row["drift"] = bool(row["level_drift"] or row["variance_drift"])
        rows.append(row)
    return pd.DataFrame(rows, columns=[SERIES, "new_rows", "level_change", "level_p", "level_drift",
                                       "variance_ratio", "variance_p", "variance_drift", "drift"])


# ---------------------------------------------------------------- the decision
@dataclass(frozen=True)
class Verdict:
    """The policy's decision: retrain or not, and why; which series degraded, drifted or are new; and whether the
    shadow challenger earned promotion."""

    retrain: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = ()
    degraded: tuple[str, ...] = ()
    drifted: tuple[str, ...] = ()
    unseen: tuple[str, ...] = ()
    promote_challenger: bool = False
    challenger_reason: str | None = None

    @property
    def headline(self) -> str:
        return ("retrain: " + "; ".join(self.reasons)) if self.retrain else "keep the champion: nothing breached the policy"


def named(ids: Sequence[str], shown: int = 10) -> str:
    head = ", ".join(map(str, ids[:shown]))
    return head + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def decide(policy: MonitoringConfig, window_metrics: Mapping[str, float], promise: Promise, table: pd.DataFrame,
           unseen: Sequence[str], champion_age_days: float | None) -> Verdict:
    """Apply the retraining policy (`monitoring:`) to the live scores of the window, the drift tests and the age."""
    reasons: list[str] = []
    notes: list[str] = []
    points = window_metrics.get("points", 0.0)
    metric = promise.error_metric()
    enough = points >= policy.min_points
    if not enough:
        notes.append(f"{int(points)} point(s) scored in the window, fewer than monitoring.min_points "
                     f"({policy.min_points}): no verdict on the errors yet")
    if enough and metric and policy.max_mase_ratio is not None:
        live, promised = window_metrics.get(metric, float("nan")), promise.pooled.get(metric, float("nan"))
        r = ratio(live, promised)
        if np.isfinite(r) and r > policy.max_mase_ratio:
            reasons.append(f"live {metric.upper()} {live:.4g} is {r:.2f}x the promised {promised:.4g} over the last "
                           f"{int(points)} point(s) (limit {policy.max_mase_ratio:g}x)")
    if metric is None:
        notes.append("the registered version recorded no test MASE or MAE: live errors are reported, not judged")
    if enough and policy.coverage_tolerance is not None:
        for key, value in window_metrics.items():
            m = re.fullmatch(r"coverage_(\d+)", key)
            if m and np.isfinite(value) and value < int(m.group(1)) / 100 - policy.coverage_tolerance:
                reasons.append(f"the {m.group(1)} % intervals covered {value:.3f} of the last {int(points)} point(s) "
                               f"(limit {int(m.group(1)) / 100 - policy.coverage_tolerance:.3f})")
    degraded = tuple(table.loc[table["degraded"].astype(bool), SERIES].astype(str)) if len(table) else ()
    drifted = tuple(table.loc[table["drift"].fillna(False).astype(bool), SERIES].astype(str)) if "drift" in table else ()
    tested = int((table["new_rows"] >= 3).sum()) if "new_rows" in table else 0
    if policy.drift and drifted and tested and len(drifted) / tested >= policy.drift_share:
        reasons.append(f"the inputs drifted in {len(drifted)} of {tested} series (limit {policy.drift_share:.0%}): "
                       f"{named(list(drifted))}")
    if unseen and policy.retrain_on_new_series:
        reasons.append(f"{len(unseen)} series the model was never trained on: {named(list(unseen))}")
    if policy.retrain_every_days is not None and champion_age_days is not None \
            and champion_age_days > policy.retrain_every_days:
        reasons.append(f"the champion is {champion_age_days:.1f} days old (monitoring.retrain_every_days "
                       f"{policy.retrain_every_days:g})")
    return Verdict(bool(reasons), tuple(reasons), tuple(notes), degraded, drifted, tuple(unseen))


def compare_challenger(champion: pd.DataFrame, challenger: pd.DataFrame,
                       policy: MonitoringConfig) -> tuple[bool, str | None, dict[str, float]]:
    """Champion and shadow challenger on the same actuals (the (series, origin, step) both forecast): whether the
    challenger earned promotion under the `monitoring.*challenger*` settings, why (or why not), and the figures."""
    if champion.empty or challenger.empty:
        return False, None, {}
    key = [SERIES, "origin", "step"]
    both = champion.merge(challenger, on=key, suffixes=("", "_challenger"))
    if both.empty:
        return False, "the champion and the challenger share no scored forecast yet", {}
    err = np.abs(both["actual"] - both["forecast"]) / both["scale"]
    err_c = np.abs(both["actual"] - both["forecast_challenger"]) / both["scale"]
    origins = int(both["origin"].nunique())
    figures = {"shared_points": float(len(both)), "shared_origins": float(origins),
               "champion_mase": float(np.nanmean(err)), "challenger_mase": float(np.nanmean(err_c))}
    margin = policy.challenger_margin
    better = figures["challenger_mase"] <= (1 - margin) * figures["champion_mase"]
    detail = (f"challenger MASE {figures['challenger_mase']:.4g} vs champion {figures['champion_mase']:.4g} on "
              f"{len(both)} shared point(s) from {origins} origin(s)")
    if origins < policy.challenger_min_origins:
        return (False, f"{detail}: fewer origins than monitoring.challenger_min_origins "
                       f"({policy.challenger_min_origins})", figures)
    if not better:
        return False, f"{detail}: not better by the margin {margin:g}", figures
    return policy.promote_challenger, (f"{detail}: better by more than the margin {margin:g}" + (
        "" if policy.promote_challenger else " (monitoring.promote_challenger is off: reported only)")), figures


@dataclass(frozen=True)
class Assessment:
    """Everything the monitor concluded for one version: its scored forecasts, the window's live figures, the
    per-series table (live, promised, drift), the verdict, the challenger's figures and why nothing was scored."""

    scored: pd.DataFrame
    window: dict[str, float]
    table: pd.DataFrame
    verdict: Verdict
    challenger_figures: dict[str, float]
    nothing_to_score: str | None


def assess(frames: Mapping[str, pd.DataFrame], unseen: Sequence[str], forecasts: pd.DataFrame, promise: Promise,
           trained_end: pd.Timestamp | None, target: str, season: int, model: tuple[str, str],
           challenger: str | None, policy: MonitoringConfig, age_days: float | None) -> Assessment:
    """The monitor's steps for version `model` = (name, version): join the forecast log with the actuals, score
    it, test for drift, apply the policy, and compare the shadow `challenger` version on the same actuals."""
    name, version = model
    levels = levels_of(forecasts)
    actuals = actual_table(frames, target)
    own = forecasts[forecasts["version"] == version] if len(forecasts) else forecasts
    firsts = forecasts.groupby(SERIES)["origin"].min().to_dict() if len(forecasts) else {}
    scored = join_actuals(forecasts, actuals, mase_scales(frames, target, firsts, season))
    mine = scored[scored["version"] == version]
    theirs = scored[scored["version"] == challenger] if challenger else scored.iloc[0:0]
    drift = drift_tests(frames, target, seen_until(own, frames, trained_end), season, policy)
    window = live_metrics(last_dates(mine, policy.window), levels)
    table = series_table(mine, levels, promise, policy, drift)
    verdict = decide(policy, window, promise, table, unseen, age_days)
    promote, why, figures = compare_challenger(mine, theirs, policy)
    verdict = replace(verdict, promote_challenger=promote, challenger_reason=why)
    return Assessment(mine, window, table, verdict, figures, nothing_to_score(forecasts, own, mine, actuals, name,
                                                                               version, policy))


def nothing_to_score(forecasts: pd.DataFrame, own: pd.DataFrame, mine: pd.DataFrame, actuals: pd.DataFrame,
                     name: str, version: str, policy: MonitoringConfig) -> str | None:
    """Why nothing could be scored (no forecasts logged, none by this version, no actuals yet), or None."""
    if forecasts.empty:
        return (f"nothing to score: no forecasts of {name} were logged in experiment "
                f"{policy.forecast_experiment!r} (pipeline predict --model models:/{name}@champion logs them)")
    if own.empty:
        return f"nothing to score: no forecasts by {name} version {version} were logged yet"
    if mine.empty:
        latest = actuals["date"].max() if len(actuals) else None
        return (f"nothing to score: none of the {own['date'].nunique()} forecast date(s) of version {version} "
                f"(first {own['date'].min()}) has an actual in the data yet (its latest row: {latest})")
    return None


def metric_step(dates: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """An MLflow step for each forecast date, so the UI draws live metrics over time: days since 1970, or hours
    when any date has a time of day (sub-daily data)."""
    index = pd.DatetimeIndex(dates)
    seconds = index.as_unit("s").asi8
    return seconds // (3600 if (index != index.normalize()).any() else 86400)
