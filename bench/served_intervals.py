"""Which errors the served model's intervals should be fitted on (`intervals.served`), measured as the suite runs
the product, on validation carved from the training files only (no test file is read).

Each series' last H rows of a `*-train.csv` are the held-out rows. The product sees the rest with
`split: {val: H, test: H}`: it trains on the rows before its validation part, scores its test part, and once served
forecasts the held-out rows from the end of what it saw, 2H rows past its training rows. Its intervals there are
fitted on the errors from every validation origin (what its test scores use), from every validation and test
origin, or from every test origin (`steps.served_calibration`, what `intervals.served: test` logs):

    python bench/served_intervals.py m3-yearly m3-quarterly m3-monthly --seeds 1,2
    python bench/served_intervals.py m3-monthly m4-hourly --series 300

Prints, per set and seed, the share of held-out values inside the 80 and 95 % intervals for each choice, with the
sMAPE and MASE of the forecasts (the same network for all three). Series with no row before their held-out part
are left out (`data.on_bad_series: skip`). Figures: docs/intervals.md, "The served intervals".
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT / "src"), str(ROOT)) if p not in sys.path]

from bench.auto_validation import horizon_of, load_set  # noqa: E402
from pipeline.config.settings import PipelineConfig  # noqa: E402
from pipeline.data import panel  # noqa: E402
from pipeline.data.reading import RawData  # noqa: E402
from pipeline.evaluation import metrics  # noqa: E402
from pipeline.features.windows import SplitBounds, input_rows_needed  # noqa: E402
from pipeline.training import steps  # noqa: E402


def held_out_scores(test, data, cfg, horizon: int) -> dict[str, float]:
    """sMAPE, MASE and coverage of each series' last test window: its forecast from H rows before the end."""
    season = cfg.evaluate.season_length if isinstance(cfg.evaluate.season_length, int) else 1
    rows = {"smape": [], "mase": [], "cov80": [], "cov95": []}
    for sid, fc in test.items():
        y, yhat = fc.actual[-1], fc.predicted[-1]
        seen = data.series[sid][cfg.data.target].to_numpy(dtype=float)[:-horizon]
        rows["smape"].append(np.mean(200 * np.abs(y - yhat) / (np.abs(y) + np.abs(yhat))))
        rows["mase"].append(np.mean(np.abs(y - yhat)) / metrics.mase_scale(seen, season))
        for level in (80, 95):
            lo, hi = fc.bands[f"lower_{level}"][-1], fc.bands[f"upper_{level}"][-1]
            rows[f"cov{level}"].append(np.mean((y >= lo) & (y <= hi)))
    return {k: round(float(np.nanmean(v)), 4) for k, v in rows.items()}


def run(name: str, seed: int, series: int | None) -> dict:
    frame, data_section = load_set(name, series, seed)
    h = horizon_of(name, None)
    # the test part of 2H rows: its last window forecasts the held-out rows from the end of what the product saw
    cfg = PipelineConfig.model_validate({"name": f"served-{name}", "data": {"source": name, **data_section,
                                                                             "on_bad_series": "skip"},
                                         "window": {"horizon": h}, "split": {"val": h, "test": 2 * h},
                                         "train": {"seed": seed}})
    source = RawData(frame=frame.reset_index(drop=True), source=name, digest="")
    cfg, data = panel.resolve_panel(source, cfg, panel.validate_panel(source, cfg, min_rows=input_rows_needed(cfg)))
    preps = steps.prepare_panel(data, cfg)
    fit = steps.fit_panel(preps, cfg)
    cfg = steps.with_theta_weight(fit.model_for, data, preps, cfg)  # as training settles it
    forecasts, evaluated = steps.forecast_splits(fit.model_for, data, preps, cfg, splits=("test",))
    scales = steps.series_scales(data, preps, cfg)
    # the product's own view: its data ends H rows before each series' end (its test part is the first H of ours)
    seen = {sid: replace(p, bounds=SplitBounds(p.bounds.n_rows - h, p.bounds.val_start, p.bounds.test_start))
            for sid, p in preps.items()}
    both = {sid: replace(p, bounds=SplitBounds(p.bounds.n_rows, p.bounds.val_start, p.bounds.n_rows - h))
            for sid, p in preps.items()}
    choices = {
        "validation": evaluated,
        "validation_and_test": steps.calibrate_panel(steps.calibration_forecasts(fit.model_for, data, both, cfg),
                                                     scales, cfg),
        "test": steps.served_calibration(fit.model_for, data, seen, cfg.with_overrides(intervals={"served": "test"}),
                                         evaluated),
    }
    out: dict = {"set": name, "seed": seed, "series": len(forecasts["test"])}
    for choice, calibration in choices.items():
        scores = held_out_scores(steps.with_panel_intervals(forecasts["test"], calibration, scales), data, cfg, h)
        out.update(smape=scores["smape"], mase=scores["mase"])
        out[choice] = {"cov80": scores["cov80"], "cov95": scores["cov95"]}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", help="m3-yearly, m3-quarterly, m3-monthly, m4-hourly")
    p.add_argument("--seeds", default="1", help="comma-separated seeds (default 1)")
    p.add_argument("--series", type=int, default=None, help="a random subset of this many series")
    args = p.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.ERROR)
    for name in args.sets:
        for seed in (int(s) for s in args.seeds.split(",")):
            print(json.dumps(run(name, seed, args.series)), flush=True)


if __name__ == "__main__":
    main()
