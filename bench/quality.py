"""Quality benchmark: the default config's test split and walk-forward backtest on each series,
and the seed config against the tutorial's own figures. Prints tables; tracks nothing.

    .venv/bin/python bench/quality.py                       # data/SBUX.csv only
    .venv/bin/python bench/quality.py ../shared/data/*.csv  # SBUX plus every CSV given

It runs the same step functions the flows wrap (ingest, validate, split/scale, train, evaluate,
backtest), without Prefect or MLflow, on one thread by default so it stays polite on a shared
machine. Exit status 1 when the default config is worse than persistence on a series.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from pipeline.config.settings import PipelineConfig, load_config  # noqa: E402
from pipeline.data.contract import validate_prices  # noqa: E402
from pipeline.data.reading import load_prices  # noqa: E402
from pipeline.evaluation.metrics import forecast_split, score  # noqa: E402
from pipeline.features.windows import min_rows_needed, prepare  # noqa: E402
from pipeline.model.training import fit, init_model  # noqa: E402
from pipeline.training import backtest  # noqa: E402

# The tutorial's own code (scalers fit on all 253 rows) over three seeds, and its naive figure.
TUTORIAL_RMSE = (2.34e6, 2.66e6)
TUTORIAL_NAIVE = 2.80e6


def load_frame(cfg: PipelineConfig):
    raw = load_prices(cfg.data.source)
    data = validate_prices(raw.frame, cfg.data, raw.source, min_rows=min_rows_needed(cfg))
    return raw.digest, data.frame


def split_scores(cfg: PipelineConfig, frame) -> tuple[dict[str, float], float, int]:
    """Train once on the config's split; test metrics, training seconds, epochs run."""
    pre, _, windows = prepare(frame, cfg)
    model = init_model(cfg, n_features=windows["train"].X.shape[2])
    val = windows["val"] if len(windows["val"]) else None
    result = fit(model, windows["train"], val, cfg.train)
    fc = forecast_split(result.model, pre, frame, windows["test"], cfg.evaluate)
    return score(fc).flat(), result.seconds, result.epochs_run


def quality(paths: list[str], cfg0: PipelineConfig, folds: int, window: str, run_backtest: bool) -> bool:
    header = (f"{'series':<8}{'rows':>6}  {'split: model':>13}{'persist.':>10}{'ratio':>8}{'train s':>8}"
              + (f"  {'folds':>5}{'bt: model':>11}{'persist.':>10}{'ratio':>8}{'mean±std ratio':>17}{'train s':>8}"
                 if run_backtest else ""))
    print(f"default config ({cfg0.name}): next-day {cfg0.data.target}, {cfg0.preprocess.target_transform} target, "
          f"seed {cfg0.train.seed}" + (f"; backtest {folds} {window} folds" if run_backtest else ""))
    print(header)
    print("-" * len(header))
    ok, seen = True, set()
    for path in paths:
        cfg = cfg0.with_overrides(data={"source": path})
        digest, frame = load_frame(cfg)
        if digest in seen:
            continue
        seen.add(digest)
        name = Path(path).stem
        s, seconds, _ = split_scores(cfg, frame)
        ok &= s["test_rmse_ratio"] <= 1.0
        line = (f"{name:<8}{len(frame):>6}  {s['test_rmse']:>13.5g}{s['test_naive_rmse']:>10.5g}"
                f"{s['test_rmse_ratio']:>8.4f}{seconds:>8.1f}")
        if run_backtest:
            plan = backtest.plan_folds(len(frame), cfg, folds, window)
            results = [backtest.run_fold(frame, cfg, fold) for fold in plan]
            b = backtest.summarize(results)
            line += (f"  {len(plan):>5}{b['backtest_rmse']:>11.5g}{b['backtest_naive_rmse']:>10.5g}"
                     f"{b['backtest_rmse_ratio']:>8.4f}{b['test_rmse_ratio_mean']:>10.4f}±{b['test_rmse_ratio_std']:<6.4f}"
                     f"{b['train_seconds_total']:>8.1f}")
        print(line + ("" if s["test_rmse_ratio"] <= 1.0 else "  <- WORSE THAN PERSISTENCE"), flush=True)
    print("ratio = model RMSE / persistence RMSE (< 1: better than 'tomorrow = today'); "
          "bt = all fold forecasts pooled; train s = training seconds (all folds for bt)")
    return ok


def seed_table(seed_cfg: PipelineConfig, seeds: list[int]) -> None:
    _, frame = load_frame(seed_cfg)
    print(f"\nseed config ({seed_cfg.name}): same-day {seed_cfg.data.target}, {int(seed_cfg.split.train)} training rows, "
          f"scalers fit on them only")
    print(f"{'seed':>6}{'test RMSE':>14}{'persistence':>14}{'ratio':>8}{'train s':>9}")
    values = []
    for seed in seeds:
        s, seconds, _ = split_scores(seed_cfg.with_overrides(train={"seed": seed}), frame)
        values.append(s["test_rmse"])
        print(f"{seed:>6}{s['test_rmse'] / 1e6:>13.4f}M{s['test_naive_rmse'] / 1e6:>13.4f}M"
              f"{s['test_rmse_ratio']:>8.4f}{seconds:>9.1f}", flush=True)
    print(f"{'range':>6}{min(values) / 1e6:>9.4f}M to {max(values) / 1e6:.4f}M (mean {np.mean(values) / 1e6:.4f}M)")
    print(f"tutorial (scalers fit on all rows): {TUTORIAL_RMSE[0] / 1e6:.2f}M to {TUTORIAL_RMSE[1] / 1e6:.2f}M over "
          f"three seeds; naive {TUTORIAL_NAIVE / 1e6:.2f}M")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="*", help="more series (Yahoo-format CSVs); data/SBUX.csv always runs first")
    parser.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    parser.add_argument("--seed-config", default=str(ROOT / "configs/seed.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 1])
    parser.add_argument("--folds", type=int, default=None, help="default: backtest.folds of the config")
    parser.add_argument("--window", choices=["expanding", "rolling"], default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    parser.add_argument("--no-backtest", action="store_true")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    cfg = load_config(args.config).with_overrides(train={"num_threads": args.threads})
    paths = [str(ROOT / cfg.data.source), *args.csv]
    ok = quality(paths, cfg, args.folds or cfg.backtest.folds, args.window or cfg.backtest.window, not args.no_backtest)
    seed_cfg = load_config(args.seed_config)
    seed_cfg = seed_cfg.with_overrides(data={"source": str(ROOT / seed_cfg.data.source)},
                                       train={"num_threads": args.threads})
    seed_table(seed_cfg, args.seeds)
    print(f"\ntotal {time.perf_counter() - started:.0f}s on {args.threads} thread(s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
