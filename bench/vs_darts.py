"""Benchmark 4: our training against Darts' RNNModel (LSTM) on the same next-day task and split.

    .venv/bin/python bench/vs_darts.py [--repeats 3]        # skips cleanly without Darts
    pip install 'lstm-forecast-pipeline[darts]'            # the optional extra that enables it

Both forecast tomorrow's Close on the default config's split (70/15/15 by time) from the last
30 days, with the same LSTM size (2 layers of 32, dropout 0.1), Adam at lr 1e-3, batch 64,
the target as log-returns scaled on the training rows only, the same seed and thread count.
Darts' RNNModel reads the target's own past (it takes no past covariates); ours reads all five
OHLCV columns, as the pipeline does. Two budgets: a fixed number of epochs (the loops' speed)
and the default config's early stopping (patience 20 on the validation loss, at most 200
epochs; Darts through Lightning's EarlyStopping). Test forecasts are one step ahead from
actual history (Darts: `historical_forecasts(retrain=False)`), scored in prices against
persistence (tomorrow = today) on the same dates.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings

import numpy as np
from _common import data_path, default_config, fmt_range, load_frame, machine_note, prepare, print_table, stats, timeit

FIXED_EPOCHS = 20


def ours(cfg, frame, windows, pre) -> tuple[float, float, int, int]:
    """(seconds, test RMSE, epochs run, threads) of the pipeline's own training and scoring."""
    from pipeline.evaluation import metrics
    from pipeline.model.training import fit, init_model

    model = init_model(cfg, n_features=windows["train"].X.shape[2])
    seconds, result = timeit(lambda: fit(model, windows["train"], windows["val"], cfg.train))
    fc = metrics.forecast_split(result.model, pre, frame, windows["test"])
    return seconds, metrics.rmse(fc.actual[:, 0], fc.predicted[:, 0]), result.epochs_run, result.threads


def darts_model(cfg, epochs: int, early_stop: bool, threads: int):
    import torch
    from darts.models import RNNModel
    from pytorch_lightning.callbacks import Callback, EarlyStopping

    class EpochCounter(Callback):
        epochs = 0

        def on_train_epoch_end(self, trainer, module) -> None:  # noqa: ARG002
            self.epochs += 1

    counter = EpochCounter()
    callbacks: list[Callback] = [counter]
    if early_stop:
        from pipeline.config.settings import ONE_SERIES_PATIENCE, settled  # ours reads `auto` as one series' patience

        patience = settled(cfg.train.patience, ONE_SERIES_PATIENCE)
        callbacks.append(EarlyStopping("val_loss", patience=patience, min_delta=cfg.train.min_delta))
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)  # Lightning sets its level when first imported
    torch.set_num_threads(threads)
    return counter, RNNModel(
        model="LSTM", input_chunk_length=cfg.window.lookback, training_length=cfg.window.lookback + 1,
        hidden_dim=cfg.model.hidden_size, n_rnn_layers=cfg.model.num_layers, dropout=cfg.model.dropout,
        batch_size=cfg.train.batch_size, n_epochs=epochs, optimizer_kwargs={"lr": cfg.train.learning_rate},
        random_state=cfg.train.seed, save_checkpoints=False, force_reset=True,
        pl_trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
                           "logger": False, "enable_checkpointing": False, "callbacks": callbacks,
                           "gradient_clip_val": cfg.train.grad_clip},
    )


def darts_run(cfg, frame, bounds, test_positions: np.ndarray, threads: int, early_stop: bool) -> tuple[float, float, int]:
    """(seconds, test RMSE, epochs run) of Darts' RNNModel on the same target, split and test dates."""
    from darts import TimeSeries
    from darts.dataprocessing.transformers import Scaler

    close = frame[cfg.data.target].to_numpy(dtype=float)
    returns = np.diff(np.log(close))  # returns[k - 1] is the log-return into row k
    series = TimeSeries.from_times_and_values(
        __import__("pandas").RangeIndex(1, len(close)), returns.astype(np.float32).reshape(-1, 1))
    train = series.drop_after(bounds.val_start)  # rows 1 .. val_start-1, as our scaler sees
    scaler = Scaler()
    train_s = scaler.fit_transform(train)
    full_s = scaler.transform(series)
    lookback = cfg.window.lookback
    val_s = full_s.slice(bounds.val_start - lookback, bounds.test_start - 1)
    epochs = cfg.train.epochs
    counter, model = darts_model(cfg, epochs, early_stop, threads)
    seconds, _ = timeit(lambda: model.fit(train_s, val_series=val_s if early_stop else None, verbose=False))
    start = int(test_positions[0])
    hist = model.historical_forecasts(full_s, start=start, forecast_horizon=1, stride=1, retrain=False,
                                      last_points_only=True, verbose=False)
    pred_returns = scaler.inverse_transform(hist).values().ravel()
    positions = hist.time_index.to_numpy()
    if not np.array_equal(positions, test_positions):
        raise RuntimeError("Darts forecast other dates than ours")
    predicted = close[positions - 1] * np.exp(pred_returns)
    rmse = float(np.sqrt(np.mean((close[positions] - predicted) ** 2)))
    return seconds, rmse, counter.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--series", nargs="*", default=["SBUX", "AAPL"])
    args = parser.parse_args()
    try:
        import darts  # noqa: F401
    except ImportError:
        print("Darts is not installed: skipping (pip install 'lstm-forecast-pipeline[darts]' to run this benchmark)")
        return
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "darts"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("PL_DISABLE_FORK", "1")
    print(f"machine: {machine_note()}, darts {darts.__version__}")

    rows = []
    for series_name in args.series:
        path = data_path(series_name)
        if path is None:
            print(f"(skipping {series_name}: no {series_name}.csv in data/ or ../shared/data)")
            continue
        for budget, early_stop in ((f"{FIXED_EPOCHS} epochs", False), ("early stop", True)):
            cfg = default_config() if early_stop else default_config(train={"epochs": FIXED_EPOCHS, "patience": None})
            frame = load_frame(path, cfg)
            pre, bounds, windows = prepare(frame, cfg)
            test_positions = windows["test"].target_positions[:, 0]
            levels = frame[cfg.data.target].to_numpy(dtype=float)
            naive = float(np.sqrt(np.mean((levels[test_positions] - levels[test_positions - 1]) ** 2)))
            o_s, o_r, o_e, d_s, d_r, d_e = [], [], [], [], [], []
            warm = default_config(train={"epochs": 2, "patience": None})  # one-off kernel and Trainer set-up
            threads = ours(warm, frame, windows, pre)[3]
            darts_run(warm, frame, bounds, test_positions, threads, early_stop=False)
            for r in range(args.repeats):
                for who in (("ours", "darts") if r % 2 == 0 else ("darts", "ours")):
                    if who == "ours":
                        seconds, rmse, epochs, threads = ours(cfg, frame, windows, pre)
                        o_s.append(seconds), o_r.append(rmse), o_e.append(epochs)
                    else:
                        seconds, rmse, epochs = darts_run(cfg, frame, bounds, test_positions, threads, early_stop)
                        d_s.append(seconds), d_r.append(rmse), d_e.append(epochs)
            speedup = [d / o for d, o in zip(d_s, o_s)]
            rows.append([f"{series_name} ({len(frame)} rows)", budget, threads,
                         f"{stats(o_e)[0]:.0f} / {stats(d_e)[0]:.0f}",
                         fmt_range(o_s, 2), fmt_range(d_s, 2), fmt_range(speedup, 1),
                         f"{stats([x / naive for x in o_r])[0]:.3f}", f"{stats([x / naive for x in d_r])[0]:.3f}"])
    print_table(f"Table 6: training time and test RMSE ratio to persistence, ours vs Darts RNNModel; median (min-max) of {args.repeats} alternating repeats",
                ["series", "budget", "threads", "epochs ours / darts", "ours s", "darts s", "darts/ours time",
                 "RMSE ratio ours", "RMSE ratio darts"], rows)
    print("target: darts/ours time >= 3 at an equal or better (lower) RMSE ratio for ours")


if __name__ == "__main__":
    main()
