"""Which origins the served model's share of Theta should be chosen on (`model.theta_weight_served`), measured as
the suite runs the product, on validation carved from the training files only (no test file is read).

Each series' last H rows of a `*-train.csv` are the held-out rows. The product sees the rest with
`split: {val: H, test: H}`: it trains on the rows before its validation part, chooses Theta's share on the validation
origins (`model.theta_weight: auto`, what its test scores use), scores its test part, is refit on every row it saw
(`train.refit`, for the epochs early stopping chose) and, once served, forecasts the held-out rows from the end of
what it saw. Its share there is the validation one (`validation`) or one chosen again on the test origins (`test`,
`steps.served_theta_weight`):

    python bench/served_theta.py m3-yearly m3-quarterly m3-monthly --seeds 1,2
    python bench/served_theta.py m4-hourly --series 100
    python bench/served_theta.py SBUX AAPL NFLX WMT --split '{"val": 60, "test": 60}' --origins 5
    python bench/served_theta.py m3-yearly --origins 3 --theta-methods dynamic,dynamic+damped

Prints, per set, seed and Theta method, the share each choice gives and the sMAPE and MASE of the held-out forecasts with it (the
same refit network for both), then those of every share. Series with no row before their held-out part are left out
(`data.on_bad_series: skip`). Figures: docs/bring-your-own-series.md, "Combined with Theta".
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
from pipeline.features.windows import input_rows_needed  # noqa: E402
from pipeline.model import theta  # noqa: E402
from pipeline.model.training import fit_network  # noqa: E402
from pipeline.training import steps  # noqa: E402


def prepared(frame, cfg: PipelineConfig, name: str):
    """The frame's panel and each series' preparation under `cfg` (its `auto` settings resolved on this frame)."""
    source = RawData(frame=frame.reset_index(drop=True), source=name, digest="")
    cfg, data = panel.resolve_panel(source, cfg, panel.validate_panel(source, cfg, min_rows=input_rows_needed(cfg)))
    return cfg, data, steps.prepare_panel(data, cfg)


def run(name: str, seed: int, series: int | None, split: dict | None = None, cut: int = 0,
        methods: tuple[str, ...] = ()) -> dict:
    frame, data_section = load_set(name, series, seed)
    if "series_column" not in data_section:  # a price CSV: a panel of one
        frame, data_section = frame.assign(series=name), {**data_section, "series_column": "series"}
    h = horizon_of(name, None)
    key = data_section["series_column"]
    frame = frame[frame.groupby(key).cumcount(ascending=False) >= cut]  # an earlier origin: `cut` rows fewer
    seen = frame[frame.groupby(key).cumcount(ascending=False) >= h]  # all but each series' held-out rows
    asked = PipelineConfig.model_validate({"name": f"served-{name}", "data": {"source": name, **data_section,
                                                                               "on_bad_series": "skip"},
                                           "window": {"horizon": h}, "split": split or {"val": h, "test": h},
                                           "train": {"seed": seed}, "model": {"theta_weight_served": "test"}})
    asked, data, preps = prepared(seen, asked, name)
    fit = steps.fit_panel(preps, asked)
    every_row = steps.refit_panel(data, asked)
    refit = fit_network(asked, steps.stacked(every_row)["train"], None, epochs=fit.best_epochs()["*"])
    # the held-out rows are the test part of the whole frame: its one window per series forecasts them from the end
    # of what the product saw (the same resolved settings; the refit network reads only the rows before them)
    resolved = asked.with_overrides(split={"val": h, "test": h}, window={"lookback": asked.window.lookback})
    _, whole, whole_preps = prepared(frame[frame[key].isin(list(preps))], resolved, name)
    for sid, prep in whole_preps.items():  # the refit's preprocessing (its scalers fitted on every row it saw)
        pre = every_row[sid].pre
        whole_preps[sid] = replace(prep, pre=pre, windows=pre.windows(whole.series[sid], prep.bounds))
    season = resolved.evaluate.season_length if isinstance(resolved.evaluate.season_length, int) else 1
    out = {"set": name, "seed": seed, "cut": cut}
    for method in methods or (asked.model.theta_method,):  # one network, each Theta method's shares
        config = asked.with_overrides(model={"theta_method": method})
        evaluated = steps.with_theta_weight(fit.model_for, data, preps, config)
        recorded = steps.served_theta_weight(fit.model_for, data, preps, config, evaluated)
        by_share = {w: steps.forecast_panel(lambda _: refit.model, whole, whole_preps, resolved.with_overrides(
                        model={"theta_method": method, "theta_weight": w}), "test")
                    for w in theta.CHOICES}

        def scores(w: float) -> list[float]:
            smape, mase = [], []
            for sid, fc in by_share[w].items():
                y, yhat = fc.actual[-1], fc.predicted[-1]
                smape.append(metrics.smape(y, yhat))
                mase.append(metrics.mase(y, yhat, metrics.mase_scale(whole.series[sid][resolved.data.target].to_numpy(
                    dtype=float)[:-h], season)))
            return [round(float(np.nanmean(smape)), 3), round(float(np.nanmean(mase)), 4)]

        chosen = {"validation": evaluated.model.theta_weight, "test": recorded.model.theta_weight_served}
        out[method] = {"series": len(by_share[0.0]), **{k: [w, *scores(w)] for k, w in chosen.items()},
                       "every share": {w: scores(w) for w in theta.CHOICES}}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", help="m3-yearly, m3-quarterly, m3-monthly, m4-hourly, or a price CSV's name "
                                           "(AAPL: one series, Close, horizon 5)")
    p.add_argument("--seeds", default="1")
    p.add_argument("--series", type=int, default=None, help="a random subset of this many series")
    p.add_argument("--split", type=json.loads, default=None, help='the split the product sees, as JSON, e.g. '
                                                                  '{"val": 60, "test": 60} (default: H and H)')
    p.add_argument("--theta-methods", default="", help="model.theta_method values to compare on the same network, "
                                                       "e.g. dynamic,dynamic+damped (default: the config's default)")
    p.add_argument("--origins", type=int, default=1, help="forecast the held-out rows from this many origins, each H "
                                                          "rows before the next (one series: more than one window)")
    args = p.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.ERROR)
    methods = tuple(m for m in args.theta_methods.split(",") if m)
    for name in args.sets:
        for seed in (int(s) for s in args.seeds.split(",")):
            for k in range(args.origins):
                print(json.dumps(run(name, seed, args.series, args.split, k * horizon_of(name, None), methods)),
                      flush=True)


if __name__ == "__main__":
    main()
