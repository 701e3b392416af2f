"""Research script: which global-LSTM recipe reaches M4 Hourly's targets (MASE <= 0.95, sMAPE <= 10.5)?

Standalone (no MLflow, no Prefect): reads the wide M4 files, builds windows from every series,
trains one `pipeline.model.network.LSTMForecaster` on all of them and scores the official test part with
`pipeline.evaluation.metrics.smape` / `mase` (scale: in-sample seasonal naive, season 24), averaged over
series as M4 does. Each knob the product would expose is a flag; every run prints one line per
seed and a mean line, so results paste into bench/m4_results.md.

Splits, as the product's `split: {val: 48, test: 48}` would cut them per series: the training
file's last 48 rows are the validation part (early stopping only), the rows before it the
training part (scalers fit there), the official test file is scored once at the end.

Extensions beyond the plain family (each a proposed config option):
  --chunk 24            the lookback fed as lookback/24 steps of 24 values   (model.input_chunk)
  --residual seasonal   predict a correction to the seasonal-naive forecast  (model.residual_to)
  --window-norm mean    divide each window by its inputs' mean level (+log)  (preprocess.window_norm)
  --loss mae            mean absolute error instead of squared error          (train.loss)
  --ensemble K          median of K members trained with seeds s, s+1000, ...  (model.ensemble)

    PYTHONPATH=src python bench/m4_recipe.py --series 100 --seeds 1 --lookback 168 --chunk 24
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.evaluation.metrics import mase, mase_scale, smape
from pipeline.features.scalers import fit_scaler
from pipeline.features.transforms import apply_transform, invert_transform
from pipeline.model.network import LSTMForecaster

DATA = Path(os.environ.get("M4_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "m4"))
HORIZON, SEASON = 48, 24


def read_wide(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """Series ids and their values (padding cells dropped) from an M4 wide CSV."""
    ids, values = [], []
    with open(path) as fh:
        next(fh)  # header: "V1","V2",...
        for line in fh:
            cells = line.rstrip("\n").split(",")
            ids.append(cells[0].strip('"'))
            values.append(np.array([float(c.strip('"')) for c in cells[1:] if c.strip('"') != ""]))
    return ids, values


@dataclass
class Prepared:
    """Per-series normalised values for training and the bits needed to get back to levels."""

    norm: np.ndarray  # (n_series, max_len) normalised (transformed, scaled) train-file values, NaN padded
    raw: np.ndarray  # (n_series, max_len) raw values, NaN padded
    lengths: np.ndarray  # rows in each train file
    scalers: list


def prepare(train: list[np.ndarray], transform: str, scaler: str, window_norm: str) -> Prepared:
    """Transform + per-series scaler fit on each series' training part (its train file less the last 48)."""
    n, longest = len(train), max(len(v) for v in train)
    norm = np.full((n, longest), np.nan, dtype=np.float64)
    raw = np.full((n, longest), np.nan, dtype=np.float64)
    scalers = []
    for i, v in enumerate(train):
        raw[i, :len(v)] = v
        if window_norm != "none":  # normalisation happens per window, at batch time
            scalers.append(None)
            continue
        t = apply_transform(v, transform)
        fit_rows = t[: len(v) - HORIZON]
        fit_rows = fit_rows[np.isfinite(fit_rows)].reshape(-1, 1)
        sc = fit_scaler(scaler, fit_rows)
        scalers.append(sc)
        norm[i, :len(v)] = t if sc is None else sc.transform(t.reshape(-1, 1)).ravel()
    return Prepared(norm, raw, np.array([len(v) for v in train]), scalers)


class Batcher:
    """Gathers (inputs, targets, seasonal base) for window origins, in the model's space."""

    def __init__(self, prep: Prepared, lookback: int, window_norm: str, residual: str, chunk: int,
                 transform: str = "level") -> None:
        self.p, self.L, self.wn, self.res, self.chunk = prep, lookback, window_norm, residual, chunk
        self.src = torch.tensor(prep.raw if window_norm != "none" else prep.norm, dtype=torch.float32)
        self.raw = torch.tensor(prep.raw, dtype=torch.float32)
        # MASE weighting: the in-sample seasonal-naive MAE of each series' training part (raw units) and the
        # factor from model units back to raw units for per-series scalers (std for standard, 1/scale_ for minmax)
        self.mase_scale = torch.tensor([mase_scale(prep.raw[i, : n - HORIZON], SEASON) for i, n in
                                        enumerate(prep.lengths)], dtype=torch.float32).clamp_min(1e-6)
        self.unit = torch.tensor([1.0 if sc is None else float(sc.scale_[0] if sc.kind == "standard" else
                                                                1.0 / sc.scale_[0]) for sc in prep.scalers],
                                 dtype=torch.float32)
        self.log_units = window_norm == "logmean" or transform == "log"
        self.weight_norm, self.weight_power = 1.0, 1.0

    def weights(self, series: np.ndarray, origin: np.ndarray, level) -> torch.Tensor:
        """Per-window loss weight so that an error in model units counts as its MASE contribution."""
        s = torch.as_tensor(series)
        if self.wn != "none":
            w = level[:, 0] / self.mase_scale[s]
        else:
            w = self.unit[s] / self.mase_scale[s]
            if self.log_units:  # d level = level * d log(level)
                cols = torch.as_tensor(origin - SEASON * 7)[:, None] + torch.arange(SEASON * 7)[None, :]
                w = w * self.raw[s[:, None].expand_as(cols), cols.clamp_min(0)].mean(dim=1)
        return w.pow(self.weight_power) / self.weight_norm

    def gather(self, series: np.ndarray, origin: np.ndarray, with_target: bool = True):
        """origin = index of the first forecast step: inputs rows [origin-L, origin), targets [origin, origin+48)."""
        span = self.L + (HORIZON if with_target else 0)
        cols = torch.as_tensor(origin - self.L)[:, None] + torch.arange(span)[None, :]
        rows = torch.as_tensor(series)[:, None].expand_as(cols)
        w = self.src[rows, cols]  # (B, span)
        x, y = w[:, : self.L], (w[:, self.L:] if with_target else None)
        level = None
        if self.wn != "none":
            level = x[:, -SEASON * 7 if self.L >= SEASON * 7 else 0:].mean(dim=1, keepdim=True).clamp_min(1e-6)
            x = x / level
            y = y / level if y is not None else None
            if self.wn == "logmean":
                x = torch.log(x.clamp_min(1e-6))
                y = torch.log(y.clamp_min(1e-6)) if y is not None else None
        base = None
        if self.res == "seasonal":
            base = x[:, -SEASON:].repeat(1, HORIZON // SEASON)  # (B, 48) seasonal naive in model space
            y = y - base if y is not None else None
        xin = x.reshape(x.shape[0], self.L // self.chunk, self.chunk)  # (B, steps, chunk)
        return xin, y, base, level


def to_levels(args, prep: Prepared, series: np.ndarray, origin: np.ndarray, out: np.ndarray,
              base, level) -> np.ndarray:
    """Model outputs (n, 48) back to original units."""
    if base is not None:
        out = out + base.numpy()
    if args.window_norm != "none":
        if args.window_norm == "logmean":
            out = np.exp(out)
        return out * level.numpy()
    levels = np.empty_like(out, dtype=float)
    for k, (i, o) in enumerate(zip(series, origin)):
        sc = prep.scalers[i]
        steps = out[k].reshape(-1, 1).astype(float)
        steps = steps if sc is None else sc.inverse_transform(steps)
        levels[k] = invert_transform(steps.reshape(1, -1), np.array([prep.raw[i, o - 1]]), args.transform)[0]
    return levels


def predict(model, batcher: Batcher, series: np.ndarray, origin: np.ndarray, bs: int = 2048):
    """Model outputs for the windows ending before `origin`, with the seasonal base and window levels."""
    model.eval()
    outs, bases, levels = [], [], []
    with torch.no_grad():
        for s in range(0, len(series), bs):
            x, _, base, level = batcher.gather(series[s:s + bs], origin[s:s + bs], with_target=False)
            outs.append(model(x).numpy())
            bases.append(base)
            levels.append(level)
    cat = lambda parts: None if parts[0] is None else torch.cat(parts)  # noqa: E731
    return np.concatenate(outs), cat(bases), cat(levels)


def train_one(args, prep: Prepared, batcher: Batcher, seed: int, train_s: np.ndarray, train_o: np.ndarray,
              val_s: np.ndarray, val_o: np.ndarray, epochs: int | None = None):
    """One member: Adam, clipping, fixed windows per epoch, early stopping on the validation loss."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = LSTMForecaster(n_features=args.chunk, horizon=HORIZON, hidden_size=args.hidden, num_layers=args.layers,
                           dropout=args.dropout, head_hidden=tuple(args.head_hidden), head_activation=args.head_act)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.wd)
    def loss_fn(pred, y, w=None):
        err = (pred - y).abs() if args.loss == "mae" else (pred - y) ** 2
        if w is None:
            return err.mean()
        return (err.mean(dim=1) * (w if args.loss == "mae" else w ** 2)).mean()

    def weights(s, o, level):
        return batcher.weights(s, o, level) if args.weight == "mase" else None

    if len(val_s):
        vx, vy, _, vlevel = batcher.gather(val_s, val_o)
        vw = weights(val_s, val_o, vlevel)
    else:
        vx = None
    best, best_state, best_epoch, bad = math.inf, None, 0, 0
    n_epochs = epochs or args.epochs
    per_epoch = min(args.windows, len(train_s))
    for epoch in range(1, n_epochs + 1):
        model.train()
        pick = rng.choice(len(train_s), size=per_epoch, replace=per_epoch > len(train_s))
        for b in range(0, per_epoch, args.batch):
            idx = pick[b:b + args.batch]
            x, y, _, level = batcher.gather(train_s[idx], train_o[idx])
            opt.zero_grad()
            loss = loss_fn(model(x), y, weights(train_s[idx], train_o[idx], level))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
        if args.lr_decay < 1.0:
            for g in opt.param_groups:
                g["lr"] *= args.lr_decay
        if epochs is not None or vx is None:
            continue
        model.eval()
        with torch.no_grad():
            v = float(loss_fn(model(vx), vy, vw))
        if v < best - 1e-6:
            best, best_state, best_epoch, bad = v, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            bad += 1
            if bad >= args.patience:
                break
        if args.verbose:
            print(f"    epoch {epoch} val {v:.4f}", file=sys.stderr)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, best_epoch or n_epochs


def score(forecasts: np.ndarray, test: list[np.ndarray], train: list[np.ndarray]) -> tuple[float, float]:
    """M4's way: sMAPE and MASE per series, then the mean over series."""
    s = [smape(a, f) for a, f in zip(test, forecasts)]
    m = [mase(a, f, mase_scale(tr, SEASON)) for a, f, tr in zip(test, forecasts, train)]
    return float(np.mean(s)), float(np.mean(m))


def run(args) -> None:
    torch.set_num_threads(args.threads)
    ids, train = read_wide(DATA / "Hourly-train.csv")
    _, test = read_wide(DATA / "Hourly-test.csv")
    if args.series:
        pick = np.random.default_rng(0).choice(len(train), size=args.series, replace=False)
        pick.sort()
        train, test = [train[i] for i in pick], [test[i] for i in pick]
    prep = prepare(train, args.transform, args.scaler, args.window_norm)
    batcher = Batcher(prep, args.lookback, args.window_norm, args.residual, args.chunk, args.transform)
    warm = 1 if args.transform in ("difference", "log_return") and args.window_norm == "none" else 0
    # training windows: inputs and targets inside the training part (train file less its last 48)
    tr_s, tr_o, all_s, all_o = [], [], [], []
    for i, n in enumerate(prep.lengths):
        first = args.lookback + warm
        o = np.arange(first, n - 2 * HORIZON + 1)
        tr_s.append(np.full(len(o), i)), tr_o.append(o)
        o_all = np.arange(first, n - HORIZON + 1)
        all_s.append(np.full(len(o_all), i)), all_o.append(o_all)
    tr_s, tr_o, all_s, all_o = map(np.concatenate, (tr_s, tr_o, all_s, all_o))
    batcher.weight_power = args.weight_power
    if args.weight == "mase":  # mean weight 1 over the training windows: the learning rate keeps its meaning
        probe = np.random.default_rng(0).choice(len(tr_s), size=min(20000, len(tr_s)), replace=False)
        batcher.weight_norm = float(batcher.weights(tr_s[probe], tr_o[probe],
                                                    batcher.gather(tr_s[probe], tr_o[probe])[3]).mean())
    val_s = np.arange(len(train))
    val_o = prep.lengths - HORIZON
    test_o = prep.lengths  # forecasts from the end of the train file
    load = os.getloadavg()[0]
    print(f"# {len(train)} series, {len(tr_s)} training windows; args {vars(args)}; load {load:.2f}", flush=True)
    rows = []
    for seed in args.seeds:
        t0, c0 = time.perf_counter(), time.process_time()
        val_preds, test_preds, stop_epochs = [], [], []
        for k in range(args.ensemble):
            model, best_epoch = train_one(args, prep, batcher, seed + 1000 * k, tr_s, tr_o, val_s, val_o)
            vp = to_levels(args, prep, val_s, val_o, *(predict(model, batcher, val_s, val_o)))
            if args.refit:  # the product's train.refit: same recipe on all rows, epochs from early stopping
                model, _ = train_one(args, prep, batcher, seed + 1000 * k, all_s, all_o, val_s[:0], val_o[:0],
                                     epochs=best_epoch)
            tp = to_levels(args, prep, val_s, test_o, *(predict(model, batcher, val_s, test_o)))
            val_preds.append(vp), test_preds.append(tp), stop_epochs.append(best_epoch)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        vp, tp = np.median(val_preds, axis=0), np.median(test_preds, axis=0)
        val_actual = [v[-HORIZON:] for v in train]
        v_smape, v_mase = score(vp, val_actual, [v[:-HORIZON] for v in train])
        t_smape, t_mase = score(tp, test, train)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append((t_smape, t_mase, secs))
        print(f"seed {seed}: test sMAPE {t_smape:.3f} MASE {t_mase:.3f} | val sMAPE {v_smape:.3f} MASE {v_mase:.3f} | "
              f"epochs {stop_epochs} | train {secs:.1f} s (cpu {cpu:.1f} s) | peak {peak:.0f} MiB | threads {args.threads} | "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    arr = np.array(rows)
    print(f"MEAN over {len(rows)} seeds: sMAPE {arr[:, 0].mean():.3f} MASE {arr[:, 1].mean():.3f} "
          f"train {arr[:, 2].mean():.1f} s | tag {args.tag}", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", type=int, default=0, help="random subset of this many series (0: all 414)")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1])
    p.add_argument("--lookback", type=int, default=168)
    p.add_argument("--chunk", type=int, default=1, help="values per LSTM step (24: one day per step)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--head-hidden", type=int, nargs="*", default=[])
    p.add_argument("--head-act", default="none", choices=["none", "relu", "tanh"])
    p.add_argument("--transform", default="level", choices=["level", "log", "difference", "log_return"])
    p.add_argument("--scaler", default="standard", choices=["standard", "minmax", "none"])
    p.add_argument("--window-norm", default="none", choices=["none", "mean", "logmean"])
    p.add_argument("--residual", default="none", choices=["none", "seasonal"])
    p.add_argument("--loss", default="mse", choices=["mse", "mae"])
    p.add_argument("--weight", default="none", choices=["none", "mase"],
                   help="mase: weight each window's loss by its series' MASE factor (train.loss_weight: mase)")
    p.add_argument("--weight-power", type=float, default=1.0, help="raise the MASE weights to this power "
                   "(0.5: halfway between sMAPE-like and MASE-like weighting)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-decay", type=float, default=1.0, help="multiply the lr by this after every epoch")
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--windows", type=int, default=20000, help="windows sampled per epoch")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--ensemble", type=int, default=1)
    p.add_argument("--refit", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    if args.lookback % args.chunk:
        p.error("--lookback must be a multiple of --chunk")
    return args


if __name__ == "__main__":
    run(parse())
