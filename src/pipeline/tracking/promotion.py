"""The promotion gate: may a new model version become `@champion`? Numbers in, a verdict out.

A challenger must beat the strongest baseline its run computed (persistence, seasonal naive,
drift, moving average: the lowest test score, unless `registry.baseline` names one) and the
current champion (re-scored on the same test window with its own logged preprocessing), each by
a configurable relative margin. The metric is the test RMSE for one series; for a portfolio of
series (`data.series_column`) it is the mean MASE over the series. The metric and the baseline
are named in every tag and message (`gate.metric`, `gate.challenger`, `gate.baseline`, ...).
Plain functions and frozen values, no MLflow or Prefect: the registry module does the reading
and writing around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.evaluation.baselines import BASELINE_WORDS, baseline_words

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class TestWindow:
    """The dates a run was scored on, and the data they came from."""

    __test__ = False  # not a pytest test class

    start: str
    end: str
    digest: str

    def tag(self) -> str:
        return f"{self.start}..{self.end}@{self.digest}"


@dataclass(frozen=True)
class Score:
    """A model's score on a set of test forecasts (the gate's measure: RMSE, or mean MASE for a
    portfolio), or why it could not be computed."""

    rmse: float | None
    count: int = 0
    error: str | None = None
    note: str | None = None  # what the reader should know about the score (`registry.in_sample_note`)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


STRONGEST = "best"  # registry.baseline: the strongest of the baselines computed


def gate_metric(many_series: bool) -> str:
    """The metric the gate compares: the test RMSE of one series, the mean test MASE of many."""
    return "mase" if many_series else "rmse"


def strongest_baseline(metrics: dict[str, float], metric: str, named: str = STRONGEST,
                       split: str = "test") -> tuple[str, float]:
    """The baseline a model is held to and its `{split}_{baseline}_{metric}`: `named`, or (`best`) the one with the
    lowest finite score among those computed; persistence (naive) when none has one."""
    if named != STRONGEST:
        return named, float(metrics.get(f"{split}_{named}_{metric}", float("nan")))
    found = {b: float(metrics[f"{split}_{b}_{metric}"]) for b in BASELINE_WORDS
             if math.isfinite(float(metrics.get(f"{split}_{b}_{metric}", float("nan"))))}
    if not found:
        return "naive", float(metrics.get(f"{split}_naive_{metric}", float("nan")))
    best = min(found, key=lambda b: found[b])
    return best, found[best]


@dataclass
class Decision:
    """The gate's verdict on a new version, with the numbers on both sides of each check."""

    version: str
    alias: str
    challenger: float  # the challenger's test `metric`
    baseline_score: float  # the baseline's test `metric`
    champion_version: str | None = None
    champion_score: float | None = None  # the champion's, re-scored on the same window
    checks: list[Check] = field(default_factory=list)
    margins: tuple[float, float] = (0.0, 0.0)
    metric: str = "rmse"  # the metric compared: rmse (one series) or mase (mean over series)
    baseline: str = "naive"  # the baseline (a metric id: naive, seasonal_naive, ...) beside the champion

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    @property
    def reason(self) -> str:
        verdict = "promoted to @champion" if self.promoted else "kept as @challenger"
        return f"{verdict}: " + "; ".join(f"{c.name} {'PASS' if c.passed else 'FAIL'}: {c.detail}" for c in self.checks)

    def tags(self) -> dict[str, str]:
        """Tags for the model version and the MLflow run: the metric, each side's score, the margins, each check."""
        out = {
            "gate.decision": "promoted" if self.promoted else "refused",
            "gate.metric": self.metric,
            "gate.challenger": repr(self.challenger),
            "gate.baseline": self.baseline,
            "gate.baseline_score": repr(self.baseline_score),
            "gate.min_gain_over_baseline": repr(self.margins[0]),
            "gate.min_gain_over_champion": repr(self.margins[1]),
        }
        if self.champion_version is not None:
            out["gate.champion_version"] = self.champion_version
        if self.champion_score is not None:
            out["gate.champion_score"] = repr(self.champion_score)
        for check in self.checks:
            out[f"gate.check.{check.name}"] = f"{'PASS' if check.passed else 'FAIL'}: {check.detail}"
        return out

    def description(self) -> str:
        lines = [f"Promotion gate: {'PROMOTED to @champion' if self.promoted else 'REFUSED, stays @challenger'}"]
        lines += [f"- {c.name}: {'PASS' if c.passed else 'FAIL'}: {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def markdown(self, name: str, run_id: str | None = None) -> str:
        """A report for Prefect's artifact page."""
        head = f"# Promotion gate: {name} v{self.version} {'promoted to `@champion`' if self.promoted else 'kept as `@challenger`'}"
        metric, baseline = self.metric.upper(), baseline_words(self.baseline)
        rows = [
            f"| model | test {metric} |", "|---|---|",
            f"| challenger v{self.version} | {self.challenger:.6g} |",
            f"| {baseline} | {self.baseline_score:.6g} |",
        ]
        if self.champion_version is not None:
            shown = "n/a" if self.champion_score is None else f"{self.champion_score:.6g}"
            rows.append(f"| champion v{self.champion_version} (re-scored, its own preprocessing) | {shown} |")
        checks = ["| check | result | detail |", "|---|---|---|"]
        checks += [f"| {c.name} | {'PASS' if c.passed else 'FAIL'} | {c.detail} |" for c in self.checks]
        margins = (f"Margins: at least {self.margins[0]:.2%} lower {metric} than {baseline}, "
                   f"{self.margins[1]:.2%} lower than the champion.")
        run = f"\n\nMLflow run `{run_id}`." if run_id else ""
        return "\n\n".join([head, "\n".join(rows), "\n".join(checks), margins]) + run


# Tags of versions registered before the gate named its metric, and what they mean today.
OLD_TAGS = {"gate.challenger_rmse": "gate.challenger", "gate.persistence_rmse": "gate.baseline_score",
            "gate.champion_rmse": "gate.champion_score", "gate.persistence": "gate.check.baseline",
            "gate.min_gain_over_persistence": "gate.min_gain_over_baseline"}


def recorded(tags: dict[str, str]) -> dict[str, str]:
    """A version's gate tags in today's names, whichever names it was registered with: old versions' `gate.*_rmse`
    tags read as the RMSE against persistence (or their `gate.metric` and `gate.baseline` words, MASE against seasonal
    naive, for an old portfolio)."""
    out = {k: v for k, v in tags.items() if k.startswith("gate.")}
    if "gate.challenger_rmse" not in tags:
        return out
    for old, new in OLD_TAGS.items():
        if old in tags:
            out[new] = tags[old]
    if tags.get("gate.champion", "").startswith(("PASS", "FAIL")):
        out["gate.check.champion"] = tags["gate.champion"]
    out["gate.metric"] = tags.get("gate.metric", "RMSE").lower()
    out["gate.baseline"] = {v: k for k, v in BASELINE_WORDS.items()}.get(tags.get("gate.baseline", "persistence"),
                                                                           "naive")
    return out


def recorded_line(tags: dict[str, str]) -> str | None:
    """The gate's figures of a version in one line (None when it was never gated): "test MASE 0.81 vs seasonal naive
    0.95; champion 0.83"."""
    gate_tags = recorded(tags)
    if "gate.challenger" not in gate_tags:
        return None
    line = (f"test {gate_tags.get('gate.metric', 'rmse').upper()} {float(gate_tags['gate.challenger']):.6g} vs "
            f"{baseline_words(gate_tags.get('gate.baseline', 'naive'))} {float(gate_tags.get('gate.baseline_score', 'nan')):.6g}")
    if "gate.champion_score" in gate_tags:
        line += f"; champion v{gate_tags.get('gate.champion_version', '?')} {float(gate_tags['gate.champion_score']):.6g}"
    return line


def table_rmse(table: pd.DataFrame, actual: pd.Series, first_dates: list[str], horizon: int) -> Score:
    """RMSE of a forecast table (origin, step, date, forecast) on the windows whose first target
    date is in `first_dates`, steps 1..horizon, against `actual` (level by date string)."""
    first = table[table["step"] == 1].set_index("origin")["date"]
    origins = first[first.isin(set(first_dates))].index
    rows = table[table["origin"].isin(origins) & (table["step"] <= horizon) & table["date"].isin(actual.index)]
    if rows.empty:
        return Score(None, 0, "no forecasts on the test window")
    errors = rows["forecast"].to_numpy(dtype=float) - actual.loc[rows["date"]].to_numpy(dtype=float)
    return Score(float(np.sqrt(np.mean(errors**2))), len(rows))


def covers_window(score: Score, first_dates: list[str], horizon: int) -> Score:
    """`score` when it covers every test forecast (each window, each step), else why not comparable."""
    expected = len(first_dates) * horizon
    if score.error is None and score.count != expected:
        return Score(None, score.count, f"covers {score.count} of the {expected} test forecasts "
                                        "(different horizon or lead): not comparable")
    return score


def scored_in_full(table: pd.DataFrame, actual: pd.Series, first_dates: list[str], horizon: int) -> Score:
    """The RMSE of one series' forecast table on its test windows (`table_rmse`), when it covers each of them in
    full (`covers_window`)."""
    return covers_window(table_rmse(table, actual, first_dates, horizon), first_dates, horizon)


def coverage_requirement(metrics: dict[str, float], max_coverage_error: float | None) -> tuple[float, float] | None:
    """The calibration check's inputs from a run's metrics: (its test ACD at 95 %, the largest allowed), or None
    when the check is off (registry.max_coverage_error null)."""
    if max_coverage_error is None:
        return None
    return float(metrics.get("test_acd_95", float("nan"))), max_coverage_error


def calibration_check(coverage_error: float, max_coverage_error: float) -> Check:
    """Do the challenger's 95 % test intervals cover what they claim, within `max_coverage_error` (ACD)?

    An unknown ACD (no intervals were fitted) fails: a model that cannot show calibration is not trusted with it.
    """
    ok = math.isfinite(coverage_error) and coverage_error <= max_coverage_error
    shown = f"{coverage_error:.4f}" if math.isfinite(coverage_error) else "unknown (no intervals)"
    return Check("calibration", ok, f"95 % interval coverage error (ACD) {shown}; needs <= {max_coverage_error:.4f} "
                                    "(registry.max_coverage_error)")


def decide(version: str, challenger: float, baseline_score: float, champion_version: str | None,
           champion: Score | None, margins: tuple[float, float], metric: str = "rmse", baseline: str = "naive",
           coverage: tuple[float, float] | None = None) -> Decision:
    """The promotion decision: `@champion` when the challenger passes every check, else `@challenger`.

    The checks: two margins (`margins`: 0.02 = 2 % lower `metric`), against `baseline` (a metric id: naive,
    seasonal_naive, ...) and against the champion (`champion`: its score re-scored on the same window, None when
    there is no champion) and, when `coverage` (the challenger's ACD at 95 %, the largest allowed) is given, the
    calibration of its intervals.
    """
    min_gain_over_baseline, min_gain_over_champion = margins
    bar = baseline_score * (1 - min_gain_over_baseline)
    ok = math.isfinite(challenger) and challenger < bar
    shown = metric.upper()
    checks = [Check("baseline", ok,
                    f"test {shown} {challenger:.6g} vs {baseline_words(baseline)} {baseline_score:.6g}; "
                    f"needs < {bar:.6g} (margin {min_gain_over_baseline:.2%})")]
    if champion_version is None:
        checks.append(Check("champion", True, "no champion yet"))
    elif champion is None or champion.rmse is None:
        why = champion.error if champion else "not scored"
        checks.append(Check("champion", False, f"champion v{champion_version} {why}"))
    else:
        bar = champion.rmse * (1 - min_gain_over_champion)
        ok = math.isfinite(challenger) and challenger < bar
        checks.append(Check("champion", ok,
                            f"test {shown} {challenger:.6g} vs champion v{champion_version} re-scored with its own "
                            f"preprocessing on the same window at {champion.rmse:.6g} ({champion.count} forecasts"
                            f"{'; ' + champion.note if champion.note else ''}); "
                            f"needs < {bar:.6g} (margin {min_gain_over_champion:.2%})"))
    if coverage is not None:
        checks.append(calibration_check(*coverage))
    alias = CHAMPION if all(c.passed for c in checks) else CHALLENGER
    return Decision(version, alias, challenger, baseline_score, champion_version,
                    champion.rmse if champion else None, checks, margins, metric, baseline)


def table_mase(table: pd.DataFrame, column: str, actual: pd.Series, first_dates: dict[str, list[str]],
               scales: dict[str, float], horizon: int) -> Score:
    """Mean over series of the MASE of a long forecast table (<column>, origin, step, date, forecast).

    Per series: the windows whose first target date is in `first_dates[series]`, steps 1..horizon,
    against `actual` (indexed by (series, date string)), MAE over `scales[series]`. Every series
    must be covered in full (each window, each step), or the score says why not comparable.
    """
    values, count = [], 0
    ids = table[column].astype(str)
    for sid, firsts in first_dates.items():
        rows = table[ids == sid]
        first = rows[rows["step"] == 1].set_index("origin")["date"]
        origins = first[first.isin(set(firsts))].index
        keep = rows[rows["origin"].isin(origins) & (rows["step"] <= horizon)]
        known = actual.loc[sid] if sid in actual.index.get_level_values(0) else pd.Series(dtype=float)
        keep = keep[keep["date"].isin(known.index)]
        if len(keep) != len(firsts) * horizon:
            return Score(None, count + len(keep), f"covers {len(keep)} of the {len(firsts) * horizon} test forecasts "
                                                  f"of series {sid!r}: not comparable")
        count += len(keep)
        mae = float(np.mean(np.abs(keep["forecast"].to_numpy(dtype=float) - known.loc[keep["date"]].to_numpy(dtype=float))))
        scale = scales.get(sid, float("nan"))
        if math.isfinite(scale) and scale > 0:
            values.append(mae / scale)
    if not values:
        return Score(None, count, "no series with a finite MASE on the test window")
    return Score(float(np.mean(values)), count)
