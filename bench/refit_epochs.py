"""How long the refit (`train.refit`) should train, measured on validation carved from the M3 training files only.

Each series' last H rows of a `*-train.csv` are held out; the product (a config naming only the columns and the
horizon, `split: {val: H, test: H}`, everything else `auto`) trains on the rest, settles Theta's share, then refits
on every row of the rest several ways from the same fit: for the epochs early stopping chose times each multiplier.
Each refit model forecasts the held-out rows from the end of the rest, as the suite's served model does (in-process:
no MLflow, no Prefect; the same forecasts as `bench/suite.py --data` on the carved files):

    python bench/refit_epochs.py yearly quarterly monthly --seeds 1,2,3 --multipliers 1,1.5,2

Prints, per set and seed, each multiplier's epochs, sMAPE and MASE (the set's season). Figures: docs/many-series.md,
"Refit".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT / "src"), str(ROOT)) if p not in sys.path]

from bench.auto_validation import horizon_of, load_set  # noqa: E402
from pipeline.config.settings import PipelineConfig  # noqa: E402
from pipeline.data import panel  # noqa: E402
from pipeline.data.reading import RawData  # noqa: E402
from pipeline.evaluation import metrics  # noqa: E402
from pipeline.features.windows import input_rows_needed  # noqa: E402
from pipeline.model.training import fit_network  # noqa: E402
from pipeline.serving.forecast import ForecastModel  # noqa: E402
from pipeline.training import steps  # noqa: E402
from pipeline.training.steps import PanelFit  # noqa: E402

SEASONS = {"yearly": 1, "quarterly": 4, "monthly": 12}


def carve(name: str, horizon: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The set's training file without each series' last `horizon` rows, and those rows."""
    full, _ = load_set(f"m3-{name}", None, 0)
    from_end = full.groupby("series").cumcount(ascending=False)
    return full[from_end >= horizon], full[from_end < horizon]


def scores(forecasts: pd.DataFrame, seen: pd.DataFrame, held: pd.DataFrame, horizon: int, season: int) -> dict:
    """Mean sMAPE and MASE (in-sample seasonal-naive scale of the rows seen), as the product scores them, over the
    series forecast."""
    truth = {sid: g["value"].astype(float).to_numpy() for sid, g in held.groupby("series")}
    past = {sid: g["value"].astype(float).to_numpy() for sid, g in seen.groupby("series")}
    smape, mase = [], []
    for sid, g in forecasts.groupby("series"):
        y, x = truth[str(sid)], past[str(sid)]
        yhat = g.sort_values("step")["forecast"].to_numpy()[:horizon]
        smape.append(metrics.smape(y, yhat))
        mase.append(metrics.mase(y, yhat, metrics.mase_scale(x, season)))
    return {"smape": round(float(np.nanmean(smape)), 3), "mase": round(float(np.nanmean(mase)), 4),
            "series": len(smape)}


def run(name: str, seed: int, multipliers: list[float]) -> dict:
    horizon, season = horizon_of(f"m3-{name}", None), SEASONS[name]
    rest, held = carve(name, horizon)
    cfg = PipelineConfig.model_validate({
        "name": f"refit-{name}", "data": {"source": name, "series_column": "series", "date_column": "date",
                                          "target": "value", "features": ["value"], "on_bad_series": "skip"},
        "window": {"horizon": horizon}, "split": {"val": horizon, "test": horizon}, "train": {"seed": seed}})
    source = RawData(frame=rest.reset_index(drop=True), source=name, digest="")
    cfg, data = panel.resolve_panel(source, cfg, panel.validate_panel(source, cfg, min_rows=input_rows_needed(cfg)))
    preps = steps.prepare_panel(data, cfg)
    fit = steps.fit_panel(preps, cfg)
    cfg = steps.with_theta_weight(fit.model_for, data, preps, cfg)  # as training settles it
    every = steps.refit_panel(data, cfg)
    chosen = fit.best_epochs()["*"]
    out: dict = {"set": name, "seed": seed, "theta_weight": cfg.model.theta_weight,
                 "windows": {"kept": len(steps.stacked(preps)["train"]), "refit": len(steps.stacked(every)["train"])}}
    for m in multipliers:
        epochs = [max(1, math.ceil(m * e)) for e in chosen]
        model = ForecastModel()
        model.use(steps.bundle(PanelFit(shared=fit_network(cfg, steps.stacked(every)["train"], None, epochs=epochs)),
                               every, cfg))
        served = model.forecast(rest[rest["series"].isin(list(every))])
        out[f"x{m:g}"] = {"epochs": epochs, **scores(served, rest, held, horizon, season)}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", choices=list(SEASONS))
    p.add_argument("--seeds", default="1", help="comma-separated seeds (default 1)")
    p.add_argument("--multipliers", default="1,1.5,2", help="of the epochs early stopping chose (default 1,1.5,2)")
    args = p.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.ERROR)
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.sets:
            print(json.dumps(run(name, seed, [float(m) for m in args.multipliers.split(",")])), flush=True)


if __name__ == "__main__":
    main()
