"""`auto` settings measured on validation carved from training files only (no test file is read).

Each series' last H rows of a `*-train.csv` are held out as the target (the product's own `test` part with
`split: {val: H, test: H}`); the config names only the columns and the horizon, everything else is the code's
`auto`. The steps run in-process (no MLflow, no Prefect), so a screening run takes seconds to minutes:

    python bench/auto_validation.py m3-yearly --series 200 --epochs 20
    python bench/auto_validation.py m4-hourly --series 60 --set model.hidden_size=64
    python bench/auto_validation.py m3-quarterly --set model.ensemble=5   # five members (docs/benchmarks.md)
    python bench/auto_validation.py m3-quarterly --shift mean             # every series through zero: read MASE
    python bench/auto_validation.py m4-hourly --series 30 --each --split '{}'  # each series alone, as one user's

Prints the model's sMAPE, MASE and 80/95 % coverage on the held-out tail beside naive and seasonal naive.

Measured with the `auto` recipe (seed 1, 2 shared cores; before: the code before it, where a yearly
series too short for the old lookback was not scored; quarterly, monthly and hourly as sMAPE / MASE):

| set | before | after | naive | seasonal naive | coverage 80 / 95 after |
|---|---|---|---|---|---|
| M3 yearly, 645 series | 40.94 / 7.771 (327 scored) | 20.19 / 3.596 (645) | 21.45 / 3.779 | - | 0.748 / 0.909 |
| M3 quarterly, 756 | 10.68 / 1.297 (663) | 9.01 / 1.103 (756) | 10.77 / 1.460 | 11.65 / 1.583 | 0.738 / 0.884 |
| M3 monthly, 300 drawn | 13.60 / 1.126 (222) | 14.90 / 0.956 (300) | 18.76 / 1.269 | 18.11 / 1.195 | 0.783 / 0.937 |
| M4 Hourly, 20 drawn, 30 epochs | 14.26 / 2.718 | 11.34 / 1.084 | 41.90 / 13.04 | 12.40 / 1.069 | 0.789 / 0.923 |
| AAPL, h 5, split {val: 60, test: 60} | 2.780 / 2.867 | 2.793 / 2.882 | 2.755 / 2.836 | 3.733 / 3.858 | 0.821 / 1.000 |
| SBUX, same | 2.024 / 0.594 | 2.024 / 0.594 | 2.036 / 0.598 | 2.801 / 0.819 | 0.754 / 0.971 |

The naive figures of the "after" rows are over every series; "before" scored fewer series.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT / "src"), str(ROOT)) if p not in sys.path]

from pipeline.config.settings import PipelineConfig  # noqa: E402
from pipeline.data import panel  # noqa: E402
from pipeline.data.reading import RawData  # noqa: E402
from pipeline.errors import DataError  # noqa: E402
from pipeline.training import steps

DATA = ROOT.parent / "shared" / "data"
SETS = {  # name: (training file, horizon)
    "m3-yearly": (DATA / "m3" / "yearly-train.csv", 6),
    "m3-quarterly": (DATA / "m3" / "quarterly-train.csv", 8),
    "m3-monthly": (DATA / "m3" / "monthly-train.csv", 18),
    "m4-hourly": (DATA / "m4" / "Hourly-train.csv", 48),
}


def shifted(frame: pd.DataFrame, column: str, by: str | None) -> pd.DataFrame:
    """Each series' `column` minus its own mean (`by` "mean": every series crosses zero) or its minimum ("min": every
    series touches zero once): data the positive-only recipe cannot take, scored where it counts (MASE and coverage
    do not change under a shift; sMAPE does)."""
    if not by:
        return frame
    values = frame[column].astype(float)
    groups = frame["series"] if "series" in frame else pd.Series(0, index=frame.index)
    return frame.assign(**{column: values - values.groupby(groups).transform(by)})


def load_set(name: str, series: int | None, seed: int, shift: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The set as a long frame and the data section naming its columns (a price CSV: one series, Close), each series
    moved to a mean of 0 with `shift` "mean", to a minimum of 0 with "min"."""
    frame, data = _load_set(name, series, seed)
    return shifted(frame, data["target"], shift).astype(str), data


def _load_set(name: str, series: int | None, seed: int) -> tuple[pd.DataFrame, dict]:
    if name in SETS:
        path, _ = SETS[name]
        if name == "m4-hourly":
            from bench.m4 import read_wide, wide_to_long
            frame = wide_to_long(read_wide(path))
            data = {"series_column": "series", "date_column": "timestamp", "target": "value", "features": ["value"]}
        else:
            frame = pd.read_csv(path)
            data = {"series_column": "series", "date_column": "date", "target": "value", "features": ["value"]}
        ids = frame["series"].unique()
        if series and series < len(ids):
            keep = np.random.default_rng(seed).choice(ids, series, replace=False)
            frame = frame[frame["series"].isin(keep)]
        return frame, data
    frame = pd.read_csv(DATA / f"{name}.csv")[["Date", "Close"]]
    return frame, {"date_column": "Date", "target": "Close", "features": ["Close"]}


def horizon_of(name: str, given: int | None) -> int:
    return given or (SETS[name][1] if name in SETS else 5)


def overrides(pairs: list[str]) -> dict:
    out: dict = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        section, field = key.split(".", 1)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value  # plain text: a name such as log_mean
        out.setdefault(section, {})[field] = parsed
    return out


def run_each(name: str, series: int | None, seed: int, horizon: int | None, sets: list[str],
             split: dict | None = None, shift: str | None = None) -> dict[str, float]:
    """Every drawn series trained alone, as a user with one series would (no series column; `split` None: the
    one-series `auto` split), the scores averaged over the series."""
    frame, data = load_set(name, series, seed, shift)
    scores, refused = [], 0
    single = {k: v for k, v in data.items() if k != "series_column"}
    for _, one in frame.groupby("series", sort=True):
        try:
            scores.append(run(name, None, seed, horizon, sets, split, frame=(one.drop(columns="series"), single),
                              quiet=True))
        except DataError:  # too short to train alone (the same series for every setting)
            refused += 1
    keys = [k for k in scores[0] if k != "seconds"]
    out = {k: round(float(np.nanmean([s.get(k, np.nan) for s in scores])), 4) for k in keys}
    out.update(test_series=len(scores), refused=refused, seconds=round(sum(s["seconds"] for s in scores), 1))
    print(json.dumps({"set": name, "each": True, **out}), flush=True)
    return out


def run(name: str, series: int | None, seed: int, horizon: int | None, sets: list[str],
        split: dict | None = None, shift: str | None = None, frame: tuple[pd.DataFrame, dict] | None = None,
        quiet: bool = False) -> dict[str, float]:
    frame, data = frame or load_set(name, series, seed, shift)
    h = horizon_of(name, horizon)
    raw = {"name": f"auto-{name}", "data": {"source": name, **data}, "window": {"horizon": h},
           "split": {"val": h, "test": h} if split is None else split, "train": {"seed": seed}}
    if split == {}:  # the `auto` split
        del raw["split"]
    for section, values in overrides(sets).items():
        raw[section] = {**raw.get(section, {}), **values}
    cfg = PipelineConfig.model_validate(raw)
    source = RawData(frame=frame.reset_index(drop=True), source=name, digest="")
    started = time.perf_counter()
    if cfg.data.series_column is None:
        from pipeline.data.contract import validate_prices
        from pipeline.features.windows import min_rows_needed
        one = validate_prices(source.frame, cfg.data, name, min_rows=min_rows_needed(cfg))
        cfg, data_panel = panel.resolve_panel(source, cfg, panel.of_one(one))
    else:
        from pipeline.features.windows import input_rows_needed
        data_panel = panel.validate_panel(source, cfg, min_rows=input_rows_needed(cfg))
        cfg, data_panel = panel.resolve_panel(source, cfg, data_panel)
    preps = steps.prepare_panel(data_panel, cfg)
    fit = steps.fit_panel(preps, cfg)
    cfg = steps.with_theta_weight(fit.model_for, data_panel, preps, cfg)  # printed below
    forecasts, _ = steps.forecast_splits(fit.model_for, data_panel, preps, cfg)
    means = steps.score_panel(forecasts["test"], data_panel, preps, cfg, "test").means()
    keep = ["test_smape", "test_mase", "test_coverage_80", "test_coverage_95", "test_naive_smape", "test_naive_mase",
            "test_seasonal_naive_smape", "test_seasonal_naive_mase", "test_series"]
    out = {k: round(means[k], 4) for k in keep if k in means}
    out["seconds"] = round(time.perf_counter() - started, 1)
    resolved = {f"{s}.{k}": v for s, values in cfg.model_dump(mode="json").items() if s in ("window", "model", "train",
                "preprocess", "evaluate", "split") for k, v in values.items()}
    if quiet:
        return out
    print(json.dumps({"set": name, **out}), flush=True)
    print("  resolved:", {k: resolved[k] for k in ("window.lookback", "preprocess.target_transform", "model.window_norm",
                                                    "model.residual_to", "model.residual_season", "model.input_chunk", "train.loss",
                                                    "train.loss_weight", "train.epochs", "evaluate.season_length", "model.theta_weight",
                                                    "split.val") if k in resolved}, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", help="m3-yearly, m3-quarterly, m3-monthly, m4-hourly, or a price CSV's name (AAPL)")
    p.add_argument("--series", type=int, default=None, help="a random subset of this many series")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--horizon", type=int, default=None)
    p.add_argument("--set", dest="sets_", action="append", default=[], help="section.key=value overrides")
    p.add_argument("--shift", choices=["mean", "min"], default=None,
                   help="move each series to a mean of 0 (mean) or a minimum of 0 (min): data that is not all "
                        "positive; read MASE, not sMAPE")
    p.add_argument("--split", type=json.loads, default=None,
                   help='a split section as JSON, e.g. {"val": 24, "test": 6}; {} the `auto` split')
    p.add_argument("--each", action="store_true", help="train every drawn series alone (one series each); "
                   "the scores are means over the series")
    args = p.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.WARNING)
    for name in args.sets:
        try:
            (run_each if args.each else run)(name, args.series, args.seed, args.horizon, args.sets_, args.split,
                                             args.shift)
        except Exception as exc:  # report and go on to the next set
            print(json.dumps({"set": name, "error": f"{type(exc).__name__}: {str(exc)[:400]}"}), flush=True)


if __name__ == "__main__":
    main()
