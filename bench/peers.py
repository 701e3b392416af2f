"""One statsforecast model on a long table: the peers' half of bench/suite.py, run in the benchmark environment.

statsforecast 2.1.1 pins pandas < 3, so it lives in its own environment (`make bench-deps`: .venv-bench)
and never downgrades the product's; bench/suite.py starts this script there once per model (its wall and
CPU time are the child's) and scores what it writes. It imports only pandas and statsforecast.

    .venv-bench/bin/python bench/peers.py --model AutoETS --season 12 --freq MS --horizon 18 \\
        --data train_long.csv --out forecasts.csv            # series,<date column>,value in; statsforecast's frame out
"""

from __future__ import annotations

import argparse

MODELS = ("Naive", "SeasonalNaive", "AutoETS", "AutoTheta", "AutoARIMA")  # the suite runs them in this order


def build_model(name: str, season: int):
    """The statsforecast model behind a suite name, with the set's season."""
    from statsforecast import models

    if name == "Naive":
        return models.Naive()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
    return getattr(models, name)(season_length=season)


def main(argv: list[str] | None = None) -> None:
    import pandas as pd
    from statsforecast import StatsForecast

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--season", type=int, required=True)
    p.add_argument("--freq", required=True, help="pandas offset alias of the calendar")
    p.add_argument("--horizon", type=int, required=True)
    p.add_argument("--levels", default="80,95")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--data", required=True, help="long CSV: series, the date column, value")
    p.add_argument("--date-column", default="timestamp")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    frame = pd.read_csv(args.data, dtype={"series": str}, parse_dates=[args.date_column])
    frame = frame.rename(columns={"series": "unique_id", args.date_column: "ds", "value": "y"})
    sf = StatsForecast(models=[build_model(args.model, args.season)], freq=args.freq, n_jobs=args.jobs)
    forecast = sf.forecast(df=frame, h=args.horizon, level=[int(x) for x in args.levels.split(",")])
    if "unique_id" not in forecast.columns:
        forecast = forecast.reset_index()
    forecast.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
