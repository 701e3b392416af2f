"""Benchmark: the product with a config naming only its columns vs a plain hand-written PyTorch LSTM.

    .venv/bin/python bench/vs_handwritten.py [--seeds 0 1] [--data-seeds 0 1 2] [--series weekly yearly]

Two series unlike stock prices, generated deterministically (no such real data is on this
machine): (a) `weekly`, 520 weeks of sales, a trend, a yearly season of 52 weeks and noise;
(b) `yearly`, 80 years of counts, intermittent (zeros) at first and trending up. Both are split
70/15/15 by time. The hand-written model is what a user writes: the level min-max scaled on the
training rows, a lookback of about a season, one LSTM layer of 32, Adam (lr 1e-3) on MSE, a fixed
number of epochs, no validation. The product runs its own steps (validate, `resolve_auto`,
prepare, fit, evaluate) on a CSV with a config naming the columns, plus the season where a user
would know it. Both forecast every test row one step ahead from actual history; the score is
RMSE over persistence's RMSE on the same test rows (< 1 beats persistence; lower is better),
averaged over three draws of each series (`--data-seeds`) and two training seeds (`--seeds`).
Exit status 0 when the product's mean is lower on every series.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import print_table  # noqa: F401  (sets sys.path to the project)

SPLIT = (0.7, 0.15, 0.15)


# ---------------------------------------------------------------- the series
def weekly_series(n: int = 520, seed: int = 0) -> pd.DataFrame:
    """Weekly sales: level 200, a trend of +0.25 a week, a yearly season (amplitude 40) and noise (sd 8)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    season = 40 * np.sin(2 * np.pi * t / 52) + 15 * np.sin(4 * np.pi * t / 52 + 1)
    values = 200 + 0.25 * t + season + rng.normal(0, 8, n)
    return pd.DataFrame({"week": pd.date_range("2014-01-05", periods=n, freq="W-SUN").strftime("%Y-%m-%d"),
                         "sales": np.round(values, 1)})


def yearly_series(n: int = 80, seed: int = 0) -> pd.DataFrame:
    """Yearly counts: Poisson around a rate rising from 0.3 to about 12, so the early years are mostly zeros."""
    rng = np.random.default_rng(seed)
    rate = 0.3 * np.exp(np.linspace(0, np.log(40), n)) * (1 + 0.3 * np.sin(np.arange(n) / 3))
    counts = rng.poisson(rate).astype(float)
    return pd.DataFrame({"year": pd.date_range("1940-01-01", periods=n, freq="YS").strftime("%Y-%m-%d"),
                         "events": counts})


# What a user writes for each: the columns, and the season where they know it.
SERIES = {
    "weekly": (weekly_series, {"date_column": "week", "target": "sales", "features": ["sales"]},
               {"evaluate": {"season_length": 52}}, 52),
    "yearly": (yearly_series, {"date_column": "year", "target": "events", "features": ["events"]}, {}, 5),
}


# ---------------------------------------------------------------- the hand-written LSTM
def handwritten(values: np.ndarray, lookback: int, seed: int, epochs: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(test targets, forecasts): a plain LSTM on min-max scaled levels, trained on the first 70 %."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    n = len(values)
    train_end, test_start = round(n * SPLIT[0]), round(n * (SPLIT[0] + SPLIT[1]))
    lo, hi = values[:train_end].min(), values[:train_end].max()
    scaled = (values - lo) / (hi - lo)

    def windows(targets: range) -> tuple[torch.Tensor, torch.Tensor]:
        X = np.stack([scaled[t - lookback:t] for t in targets])[:, :, None]
        return torch.tensor(X, dtype=torch.float32), torch.tensor(scaled[list(targets)], dtype=torch.float32)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(1, 32, batch_first=True)
            self.out = nn.Linear(32, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, _ = self.lstm(x)
            return self.out(h[:, -1]).squeeze(-1)

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    X, y = windows(range(lookback, train_end))
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(32):
            opt.zero_grad()
            loss = nn.functional.mse_loss(net(X[idx]), y[idx])
            loss.backward()
            opt.step()
    Xt, _ = windows(range(test_start, n))
    with torch.no_grad():
        pred = net(Xt).numpy() * (hi - lo) + lo
    return values[test_start:], pred


# ---------------------------------------------------------------- the product
def product(frame: pd.DataFrame, data: dict, extra: dict, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(test targets, forecasts, resolved settings) of the pipeline's steps on the CSV, with a config naming `data`."""
    from pipeline.config.settings import parse_config
    from pipeline.data.auto import resolve_auto
    from pipeline.data.contract import validate_prices
    from pipeline.data.reading import load_prices
    from pipeline.evaluation import metrics
    from pipeline.features import transforms
    from pipeline.features.windows import min_rows_needed, prepare
    from pipeline.model.training import fit, init_model

    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "series.csv"
        frame.to_csv(csv, index=False)
        cfg = parse_config({"name": "bench", "data": {"source": str(csv), **data}, "train": {"seed": seed}, **extra})
        raw = load_prices(str(csv))
        valid = validate_prices(raw.frame, cfg.data, raw.source, min_rows=min_rows_needed(cfg),
                                positive=transforms.transform_domain(cfg)).frame
    cfg = resolve_auto(cfg, valid)
    pre, _, windows = prepare(valid, cfg)
    model = init_model(cfg, n_features=windows["train"].X.shape[2])
    result = fit(model, windows["train"], windows["val"] if len(windows["val"]) else None, cfg.train)
    fc = metrics.forecast_split(result.model, pre, valid, windows["test"])
    settings = {"lookback": cfg.window.lookback, "transform": cfg.preprocess.target_transform,
                "season": cfg.evaluate.season_length, "epochs": result.epochs_run}
    return fc.actual[:, 0], fc.predicted[:, 0], settings


def ratio(actual: np.ndarray, pred: np.ndarray, previous: np.ndarray) -> float:
    rmse = float(np.sqrt(np.mean((actual - pred) ** 2)))
    return rmse / float(np.sqrt(np.mean((actual - previous) ** 2)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds of both models")
    parser.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="series drawn per kind: a test part of 12 yearly values is too small to judge on one draw")
    parser.add_argument("--series", nargs="+", choices=list(SERIES), default=list(SERIES))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows, wins = [], True
    for name in args.series:
        build, data, extra, lookback = SERIES[name]
        ours, theirs = [], []
        for data_seed in args.data_seeds:
            frame = build(seed=data_seed)
            values = frame[data["target"]].to_numpy(dtype=float)
            test_start = round(len(values) * (SPLIT[0] + SPLIT[1]))
            previous = values[test_start - 1:-1]
            for seed in args.seeds:
                started = time.perf_counter()
                actual, pred, settings = product(frame, data, extra, seed)
                assert np.allclose(actual, values[test_start:]), "the product's test rows are the last 15 %"
                ours.append(ratio(actual, pred, previous))
                product_s = time.perf_counter() - started
                started = time.perf_counter()
                actual_h, pred_h = handwritten(values, lookback, seed)
                theirs.append(ratio(actual_h, pred_h, previous))
                print(f"{name} data {data_seed} seed {seed}: product {ours[-1]:.3f} ({settings}, {product_s:.1f}s), "
                      f"hand-written {theirs[-1]:.3f} ({time.perf_counter() - started:.1f}s)", flush=True)
        won = np.mean(ours) < np.mean(theirs)
        wins &= won
        rows.append([name, len(values), len(previous), f"{np.mean(ours):.3f} ({min(ours):.3f}-{max(ours):.3f})",
                     f"{np.mean(theirs):.3f} ({min(theirs):.3f}-{max(theirs):.3f})", "product" if won else "hand-written"])
    print_table("RMSE / persistence RMSE on the last 15 % (mean (range) over series x seeds; lower is better)",
                ["series", "rows", "test rows", "product", "hand-written", "better"], rows)
    return 0 if wins else 1


if __name__ == "__main__":
    raise SystemExit(main())
