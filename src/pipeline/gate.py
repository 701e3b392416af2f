"""The promotion gate: may a new model version become `@champion`? Numbers in, a verdict out.

A challenger must beat persistence and the current champion (re-scored on the same test window
with its own logged preprocessing), each by a configurable relative margin. The measure is the
test RMSE for one series; for a portfolio of series (`data.series_column`) it is the mean MASE
over the series, against seasonal naive's (naive's without a season). Plain functions and
frozen values, no MLflow or Prefect: the registry module does the reading and writing around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

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


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Decision:
    """The gate's verdict on a new version, with the numbers on both sides of each check."""

    version: str
    alias: str
    challenger_rmse: float
    persistence_rmse: float
    champion_version: str | None = None
    champion_rmse: float | None = None
    checks: list[Check] = field(default_factory=list)
    margins: tuple[float, float] = (0.0, 0.0)
    metric: str = "RMSE"  # the measure compared: RMSE, or MASE (mean over series) for a portfolio
    baseline: str = "persistence"  # what the challenger must beat besides the champion

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    @property
    def reason(self) -> str:
        verdict = "promoted to @champion" if self.promoted else "kept as @challenger"
        return f"{verdict}: " + "; ".join(f"{c.name} {'PASS' if c.passed else 'FAIL'}: {c.detail}" for c in self.checks)

    def tags(self) -> dict[str, str]:
        """Tags for the model version and the MLflow run."""
        out = {
            "gate.decision": "promoted" if self.promoted else "refused",
            "gate.challenger_rmse": repr(self.challenger_rmse),
            "gate.persistence_rmse": repr(self.persistence_rmse),
            "gate.min_gain_over_persistence": repr(self.margins[0]),
            "gate.min_gain_over_champion": repr(self.margins[1]),
        }
        if self.champion_version is not None:
            out["gate.champion_version"] = self.champion_version
        if self.champion_rmse is not None:
            out["gate.champion_rmse"] = repr(self.champion_rmse)
        if self.metric != "RMSE":
            out["gate.metric"], out["gate.baseline"] = self.metric, self.baseline
        for check in self.checks:
            out[f"gate.{check.name}"] = f"{'PASS' if check.passed else 'FAIL'}: {check.detail}"
        return out

    def description(self) -> str:
        lines = [f"Promotion gate: {'PROMOTED to @champion' if self.promoted else 'REFUSED, stays @challenger'}"]
        lines += [f"- {c.name}: {'PASS' if c.passed else 'FAIL'}: {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def markdown(self, name: str, run_id: str | None = None) -> str:
        """A report for Prefect's artifact page."""
        head = f"# Promotion gate: {name} v{self.version} {'promoted to `@champion`' if self.promoted else 'kept as `@challenger`'}"
        rows = [
            f"| model | test {self.metric} |", "|---|---|",
            f"| challenger v{self.version} | {self.challenger_rmse:.6g} |",
            f"| {self.baseline} | {self.persistence_rmse:.6g} |",
        ]
        if self.champion_version is not None:
            shown = "n/a" if self.champion_rmse is None else f"{self.champion_rmse:.6g}"
            rows.append(f"| champion v{self.champion_version} (re-scored, its own preprocessing) | {shown} |")
        checks = ["| check | result | detail |", "|---|---|---|"]
        checks += [f"| {c.name} | {'PASS' if c.passed else 'FAIL'} | {c.detail} |" for c in self.checks]
        margins = (f"Margins: at least {self.margins[0]:.2%} lower {self.metric} than {self.baseline}, "
                   f"{self.margins[1]:.2%} lower than the champion.")
        run = f"\n\nMLflow run `{run_id}`." if run_id else ""
        return "\n\n".join([head, "\n".join(rows), "\n".join(checks), margins]) + run


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


def gate(challenger_rmse: float, persistence_rmse: float, champion_version: str | None,
         champion: Score | None, min_gain_over_persistence: float, min_gain_over_champion: float,
         metric: str = "RMSE", baseline: str = "persistence",
         coverage: tuple[float, float] | None = None) -> list[Check]:
    """The checks a challenger must pass: two margins (0.02 = 2 % lower `metric`) and, when `coverage`
    (its ACD at 95 %, the largest allowed) is given, the calibration of its intervals.

    The first check is named `persistence` whatever the baseline (the registry's tag names rest on it).
    """
    bar = persistence_rmse * (1 - min_gain_over_persistence)
    ok = math.isfinite(challenger_rmse) and challenger_rmse < bar
    checks = [Check("persistence", ok,
                    f"test {metric} {challenger_rmse:.6g} vs {baseline} {persistence_rmse:.6g}; needs < {bar:.6g} "
                    f"(margin {min_gain_over_persistence:.2%})")]
    if champion_version is None:
        checks.append(Check("champion", True, "no champion yet"))
    elif champion is None or champion.rmse is None:
        why = champion.error if champion else "not scored"
        checks.append(Check("champion", False, f"champion v{champion_version} {why}"))
    else:
        bar = champion.rmse * (1 - min_gain_over_champion)
        ok = math.isfinite(challenger_rmse) and challenger_rmse < bar
        checks.append(Check("champion", ok,
                            f"test {metric} {challenger_rmse:.6g} vs champion v{champion_version} re-scored with its own "
                            f"preprocessing on the same window at {champion.rmse:.6g} ({champion.count} forecasts); "
                            f"needs < {bar:.6g} (margin {min_gain_over_champion:.2%})"))
    if coverage is not None:
        checks.append(calibration_check(*coverage))
    return checks


def judge(version: str, challenger_rmse: float, persistence_rmse: float, champion_version: str | None,
          champion: Score | None, margins: tuple[float, float], metric: str = "RMSE",
          baseline: str = "persistence", coverage: tuple[float, float] | None = None) -> Decision:
    """The gate's decision: `@champion` when every check passes, else `@challenger`."""
    checks = gate(challenger_rmse, persistence_rmse, champion_version, champion, *margins, metric=metric, baseline=baseline,
                  coverage=coverage)
    alias = CHAMPION if all(c.passed for c in checks) else CHALLENGER
    return Decision(version, alias, challenger_rmse, persistence_rmse, champion_version,
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
