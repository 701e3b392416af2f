"""Calibration of the prediction intervals on real prices: a walk-forward backtest of a config per series.

Each fold refits the scalers and the network on the rows before its cutoff (pipeline.training.backtest.run_fold),
fits its conformal intervals on its own validation part and forecasts its test block; the folds' test
forecasts are pooled per series and scored: achieved coverage at each level (targets: within 5 points of
80 %, within 3 points of 95 %), mean width, MSIS at 95 % and the same for the seasonal-naive (or naive)
baseline's intervals. No MLflow or Prefect: the library functions the backtest flow wires.

    python bench/intervals.py                                  # configs/default.yaml on SBUX, AAPL, NFLX, WMT
    python bench/intervals.py --series SBUX --folds 3 --plots /tmp/cal   # fewer folds; calibration PNGs
    python bench/intervals.py --method quantile                # a quantile head, conformalized (CQR)

M4 Hourly's interval figures (MSIS, coverage at 95 %) come from `python bench/m4.py`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT / "src"), str(ROOT)) if p not in sys.path]

from pipeline.config.settings import (
    load_config,  # noqa: E402
    tail_probabilities,  # noqa: E402
)
from pipeline.data.auto import resolve_auto  # noqa: E402
from pipeline.data.contract import validate_prices  # noqa: E402
from pipeline.data.reading import load_prices  # noqa: E402
from pipeline.evaluation import metrics, plots
from pipeline.features.windows import min_rows_needed
from pipeline.training import backtest  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SERIES = ("SBUX", "AAPL", "NFLX", "WMT")
TOLERANCE = {80: 0.05, 95: 0.03}  # the targets: |coverage - nominal| per series


def backtest_series(config: Path, source: Path, folds: int | None,
                    scaling: str | None = None, quantile: str | None = None,
                    method: str | None = None) -> tuple[metrics.Forecasts, pd.DataFrame, float]:
    """Every fold's test forecasts (with intervals) of one series pooled, the per-fold table, seconds taken."""
    started = time.perf_counter()
    cfg = load_config(config).with_overrides(data={"source": str(source)})
    overrides = {key: value for key, value in (("scaling", scaling), ("quantile", quantile), ("method", method)) if value}
    if method == "quantile":  # the head predicts the tails of every configured level
        tails = sorted({p for level in cfg.intervals.levels for p in tail_probabilities(level)})
        cfg = cfg.with_overrides(model={"quantiles": tails})
    if overrides:
        cfg = cfg.with_overrides(intervals=overrides)
    raw = load_prices(str(source))
    frame = validate_prices(raw.frame, cfg.data, raw.source, min_rows=min_rows_needed(cfg)).frame
    cfg = resolve_auto(cfg, frame)
    plan = backtest.plan_folds(len(frame), cfg, folds=folds)
    results = [backtest.run_fold(frame, cfg, fold) for fold in plan]
    return (backtest.concat_forecasts([r.forecasts for r in results]), backtest.fold_table(frame, results),
            time.perf_counter() - started)


def summary_row(name: str, fc: metrics.Forecasts, seconds: float) -> dict[str, object]:
    """Coverage, width and MSIS of the model's and the baseline's pooled intervals, and the verdict per level."""
    scores = metrics.score(fc, prefix="backtest")
    row: dict[str, object] = {"series": name, "windows": len(fc.actual)}
    for level in fc.levels:
        row[f"cov{level}"] = scores.model[f"coverage_{level}"]
        row[f"ok{level}"] = abs(scores.model[f"coverage_{level}"] - level / 100) <= TOLERANCE.get(level, 0.03)
        row[f"width{level}"] = scores.model[f"width_{level}"]
    row["msis"] = scores.model.get("msis", float("nan"))
    for baseline in fc.baseline_bands:
        row[f"{baseline}_cov95"] = scores.baselines[baseline].get("coverage_95", float("nan"))
        row[f"{baseline}_msis"] = scores.baselines[baseline].get("msis", float("nan"))
    row["seconds"] = round(seconds, 1)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    p.add_argument("--data", type=Path, default=DATA, help="folder with <SERIES>.csv (default: %(default)s)")
    p.add_argument("--series", type=lambda s: s.split(","), default=list(SERIES), help="comma-separated names")
    p.add_argument("--folds", type=int, default=None, help="folds per series (default: the config's backtest.folds)")
    p.add_argument("--plots", type=Path, help="write each series' calibration plot (PNG) here")
    p.add_argument("--scaling", choices=["series", "window"], help="override intervals.scaling")
    p.add_argument("--quantile", choices=["expected", "finite_sample"], help="override intervals.quantile")
    p.add_argument("--method", choices=["conformal", "quantile"],
                   help="override intervals.method (quantile: a quantile head on each level's tails, conformalized)")
    args = p.parse_args(argv)

    rows, folds = [], []
    for name in args.series:
        fc, table, seconds = backtest_series(args.config, args.data / f"{name}.csv", args.folds, args.scaling, args.quantile,
                                           args.method)
        rows.append(summary_row(name, fc, seconds))
        folds.append(table.assign(series=name))
        print(f"{name}: {rows[-1]}", flush=True)
        if args.plots:
            args.plots.mkdir(parents=True, exist_ok=True)
            fig = plots.plot_calibration(fc, f"{name}: walk-forward intervals, {len(table)} folds pooled")
            fig.savefig(args.plots / f"calibration_{name}.png", dpi=90)
            plots.close(fig)
    print("\nPer fold (coverage of each fold's own intervals on its test block):")
    print(pd.concat(folds, ignore_index=True).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    summary = pd.DataFrame(rows)
    print(f"\nWalk-forward backtest of {args.config.name} (intervals.scaling {args.scaling or 'as configured'}, "
          f"quantile {args.quantile or 'as configured'}, method {args.method or 'as configured'}), "
          "intervals fitted per fold on its validation part; "
          "targets: |coverage - 80 %| <= 5 points, |coverage - 95 %| <= 3 points per series\n")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    covs = {level: np.mean([r[f"cov{level}"] for r in rows]) for level in (80, 95) if f"cov{level}" in rows[0]}
    print("\nmean over series: " + ", ".join(f"coverage {level} % {v:.4f}" for level, v in covs.items()))


if __name__ == "__main__":
    main()
