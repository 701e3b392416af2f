"""Benchmark 1: the project's training loop against a plain PyTorch loop, and cost as data grows.

    .venv/bin/python bench/training_loop.py [--repeats 5] [--quick] [--tables 1,2,3] [--sizes 2000,...]

Table 1 runs `pipeline.model.training.fit` and a plain loop (the same model, initial weights, data,
batch size, epochs, optimiser, clipping and shuffling order) in one process, alternating which
goes first, and reports the median ratio of their times over the repeats. The plain loop runs
with the threads `fit` picked (the loop's own overhead) and with torch's default threads (what
a plain script gets). Both end on the same weights, which the table checks.
Table 2 gives samples per second of `fit` on SBUX (253 rows), WMT (4,029 rows, from
../shared/data, skipped when absent) and a 40,000-row synthetic series: flat samples/s means
cost linear in the data.
Table 3 runs the training flow's steps on synthetic minute-bar random walks of 2k to 2M rows,
each size in a fresh process: read and validate the CSV, windows, the plan stated before
training, `fit` (validation included) and the evaluation of every split as the flow's evaluate
task does it. It prints microseconds per row for one epoch (the first and the last: they drift
apart when training slows as it runs), for evaluation, the plan's estimate against the measured
epoch, and the peak memory (ru_maxrss) above the process's size after its imports, per row.
Flat columns from 2k to 2M mean cost linear in the rows. The CPU columns (this process's CPU
seconds, all threads) hold on a busy machine, where wall time per row does not.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import data_path, default_config, fmt_range, load_frame, machine_note, prepare, print_table, stats, timeit


def plain_loop(model, train, val, cfg, threads: int | None) -> list[float]:
    """What a user writes by hand: shuffled mini-batches of Adam on MSE, clipping, a validation pass."""
    import torch
    from torch import nn

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(cfg.seed)  # the same dropout masks as fit(), which seeds the same way
        X, y = torch.from_numpy(train.X.copy()), torch.from_numpy(train.y)  # all windows, copied once
        Xv, yv = torch.from_numpy(val.X.copy()), torch.from_numpy(val.y)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        loss_fn = nn.MSELoss()
        generator = torch.Generator().manual_seed(cfg.seed)
        batch = cfg.batch_size or len(X)
        val_losses = []
        for _ in range(cfg.epochs):
            model.train()
            order = torch.randperm(len(X), generator=generator) if batch < len(X) else None
            for idx in (order.split(batch) if order is not None else [slice(None)]):
                optimizer.zero_grad()
                loss = loss_fn(model(X[idx]), y[idx])
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
            model.eval()
            with torch.no_grad():
                val_losses.append(loss_fn(model(Xv), yv).item())
        return val_losses
    finally:
        torch.set_num_threads(previous)


def fresh_model(cfg, n_features: int):
    import torch

    from pipeline.model.network import LSTMForecaster

    torch.manual_seed(cfg.train.seed)
    return LSTMForecaster.from_config(cfg.model, n_features=n_features, horizon=cfg.window.horizon)


def same_weights(a, b) -> bool:
    import torch

    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def compare(label: str, cfg, windows, repeats: int) -> list[object]:
    """One row of table 1: fit vs the plain loop at fit's threads and at torch's default threads."""
    import torch

    from pipeline.model.training import fit
    from pipeline.runtime import pick_threads

    train, val = windows["train"], windows["val"]
    if len(val) == 0:  # the seed config has no validation part: score the plain loop on the training rows
        val = train
        cfg = cfg.with_overrides(train={"patience": None})
    base = fresh_model(cfg, train.X.shape[2])
    threads = pick_threads(base, min(cfg.train.batch_size or len(train), len(train)), train.X.shape[1],
                           cfg.train.num_threads)
    default_threads = torch.get_num_threads()
    # torch's default threads can be 10-30x slower on a busy machine: a quarter of the epochs tells as much
    short = cfg.train.model_copy(update={"epochs": max(1, cfg.train.epochs // 4)})
    warm = cfg.train.model_copy(update={"epochs": 2})
    fit(copy.deepcopy(base), train, None, warm)  # first calls pay one-off kernel set-up: keep it out
    plain_loop(copy.deepcopy(base), train, val, warm, threads)
    ours, plain, plain_default, identical = [], [], [], True
    for r in range(repeats):
        runs = [("ours", None), ("plain", threads), ("default", default_threads)]
        if r % 2:
            runs.reverse()
        for name, th in runs:
            model = copy.deepcopy(base)
            if name == "ours":
                seconds, result = timeit(lambda: fit(model, train, windows["val"] if len(windows["val"]) else None,
                                                     cfg.train, on_epoch_end=lambda *_: None))
                ours.append(seconds / cfg.train.epochs)
                ours_model = result.model
            elif name == "plain":
                seconds, _ = timeit(lambda: plain_loop(model, train, val, cfg.train, th))
                plain.append(seconds / cfg.train.epochs)
                plain_model = model
            else:
                seconds, _ = timeit(lambda: plain_loop(model, train, val, short, th))
                plain_default.append(seconds / short.epochs)
        identical &= same_weights(ours_model, plain_model)
    ratios = [o / p for o, p in zip(ours, plain)]
    ratios_default = [o / p for o, p in zip(ours, plain_default)]
    return [label, f"{len(train)}x{cfg.train.epochs}", threads,
            fmt_range(ours, 2, 1000), fmt_range(plain, 2, 1000), fmt_range(ratios, 3),
            f"{fmt_range(plain_default, 1, 1000)} @{default_threads}", fmt_range(ratios_default, 3),
            "yes" if identical else "NO"]


def throughput(label: str, cfg, windows, repeats: int, epochs: int) -> list[object] | None:
    from pipeline.model.training import fit

    cfg = cfg.with_overrides(train={"epochs": epochs, "patience": None})
    train = windows["train"]
    times, threads = [], 1
    for _ in range(repeats):
        model = fresh_model(cfg, train.X.shape[2])
        seconds, result = timeit(lambda: fit(model, train, None, cfg.train))
        times.append(seconds)
        threads = result.threads
    med, lo, hi = stats(times)
    rate = len(train) * epochs / med
    return [label, len(train), epochs, threads, fmt_range(times, 2), f"{rate:,.0f}",
            f"{1e6 / rate:.1f}"]


# ---------------------------------------------------------------- table 3: cost per row, 2k to 2M rows
SCALE_SIZES = (2_000, 20_000, 200_000, 2_000_000)


def scale_epochs(rows: int) -> int:
    """Epochs per size: three where they are cheap (the third is where training slowed), one at 2M."""
    return 3 if rows <= 200_000 else 1


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one_size(csv: str, epochs: int, max_train_windows: int | None) -> dict[str, object]:
    """The flow's steps on one CSV, in this (fresh) process: times and peak memory after each stage."""
    import torch  # noqa: F401 - counted in the base, as the CLI imports it before reading data

    from pipeline.data.contract import validate_prices
    from pipeline.data.reading import load_prices
    from pipeline.evaluation import metrics
    from pipeline.features.windows import Windows, min_rows_needed
    from pipeline.model import training

    cfg = default_config(train={"epochs": epochs, "patience": None})
    out: dict[str, object] = {"base_mb": peak_mb()}
    started = time.perf_counter()
    raw = load_prices(csv)
    data = validate_prices(raw.frame, cfg.data, csv, min_rows=min_rows_needed(cfg))
    del raw
    frame = data.frame
    out.update(rows=len(frame), read_s=time.perf_counter() - started, read_mb=peak_mb())
    started = time.perf_counter()
    pre, _, windows = prepare(frame, cfg)
    out.update(prepare_s=time.perf_counter() - started, prepare_mb=peak_mb(),
               windows={s: len(w) for s, w in windows.items()})
    w = windows["train"]
    if max_train_windows is not None and len(w) > max_train_windows:  # fewer steps, the same data in memory
        k = max_train_windows
        windows = {**windows, "train": Windows(w.X[:k], w.y[:k], w.origins[:k], w.target_positions[:k])}
    model = training.init_model(cfg, n_features=w.X.shape[2])
    if hasattr(training, "plan_training"):
        plan = training.plan_training(model, windows, cfg.train, rows=len(frame))
        out.update(plan_s_per_epoch=plan.seconds_per_epoch, plan=plan.describe())
    # Wall and CPU seconds (this process's, all threads): CPU time per row holds on a busy machine.
    epoch_ends = [(time.perf_counter(), time.process_time())]
    result = training.fit(model, windows["train"], windows["val"] if len(windows["val"]) else None, cfg.train,
                       on_epoch_end=lambda *_: epoch_ends.append((time.perf_counter(), time.process_time())))
    out.update(epoch_s=[b[0] - a[0] for a, b in zip(epoch_ends, epoch_ends[1:])],
               epoch_cpu_s=[b[1] - a[1] for a, b in zip(epoch_ends, epoch_ends[1:])],
               train_windows=len(windows["train"]), threads=result.threads, fit_mb=peak_mb())
    # One validation pass alone, as fit() runs it after every epoch: the epoch minus it is training alone.
    started, cpu = time.perf_counter(), time.process_time()
    if len(windows["val"]):
        training.validation_loss(result.model, windows["val"], training.pick_device(cfg.train.device))
    out.update(val_pass_s=time.perf_counter() - started, val_pass_cpu_s=time.process_time() - cpu)
    started, cpu = time.perf_counter(), time.process_time()
    forecasts = {s: metrics.forecast_split(result.model, pre, frame, w, cfg.evaluate)
                 for s, w in windows.items() if len(w)}
    for split, fc in forecasts.items():
        metrics.score(fc, prefix=split)
    out.update(evaluate_s=time.perf_counter() - started, evaluate_cpu_s=time.process_time() - cpu,
               evaluate_mb=peak_mb())
    return out


def scale_table(sizes: list[int], max_train_windows: int | None, epochs: int | None) -> None:
    """Table 3: each size in a fresh process (so ru_maxrss is that size's peak), CSVs written first."""
    from _common import synthetic_prices

    rows_out, previous = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            csv = Path(tmp) / f"walk-{n}.csv"
            synthetic_prices(n, freq="min").to_csv(csv, index=False)
            cmd = [sys.executable, __file__, "--one-size", str(csv), "--epochs", str(epochs or scale_epochs(n))]
            if max_train_windows is not None:
                cmd += ["--max-train-windows", str(max_train_windows)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            csv.unlink()
            if done.returncode != 0:
                print(f"{n:,} rows: failed\n{done.stderr[-2000:]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            if "plan" in r:
                print(f"plan ({n:,} rows): {r['plan']}")
            rows, windows = r["rows"], r["train_windows"]
            per_epoch = [s / windows * 1e6 for s in r["epoch_s"]]  # per training window, so a capped run compares
            full_epoch = [p * r["windows"]["train"] / rows for p in per_epoch]  # a full epoch, per row of data
            # Training batches alone (the epoch minus its validation pass), per training window.
            batches_only = (r["epoch_s"][-1] - r.get("val_pass_s", 0.0)) / windows * 1e6
            batches_cpu = (r["epoch_cpu_s"][-1] - r["val_pass_cpu_s"]) / windows * 1e6
            above = (r["evaluate_mb"] - r["base_mb"]) * 2**20 / rows
            # Bytes per added row between this size and the one before: the slope, free of fixed costs.
            slope = (f"{(r['evaluate_mb'] - previous[1]) * 2**20 / (rows - previous[0]):,.0f}"
                     if previous and rows > previous[0] else "-")
            previous = (rows, r["evaluate_mb"])
            stage = max(("read", "prepare", "fit", "evaluate"), key=lambda k: r[f"{k}_mb"])
            rows_out.append([
                f"{rows:,}", f"{windows:,}", len(r["epoch_s"]), r["threads"],
                " / ".join(f"{s:.1f}" for s in r["epoch_s"]), f"{full_epoch[0]:.1f}", f"{full_epoch[-1]:.1f}",
                f"{r.get('val_pass_s', 0.0):.1f}", f"{batches_only:.1f}", f"{batches_cpu:.1f}",
                f"{r['evaluate_cpu_s'] / rows * 1e6:.1f}",
                f"{r['plan_s_per_epoch'] / r['epoch_s'][0]:.2f}" if "plan_s_per_epoch" in r else "-",
                f"{r['evaluate_s']:.1f}", f"{r['evaluate_s'] / rows * 1e6:.1f}",
                f"{r['read_s'] + r['prepare_s']:.1f}",
                f"{r['base_mb']:.0f}", f"{r['evaluate_mb']:.0f}", f"{above:,.0f}", slope, stage,
            ])
    print_table("Table 3: cost per row as the rows grow (default config, minute-bar random walk, fresh process per size)"
                + (f"; training capped at {max_train_windows:,} windows per epoch" if max_train_windows else ""),
                ["rows", "train windows", "epochs", "threads", "s per epoch", "us/row epoch 1", "us/row last epoch",
                 "val pass s", "us/train window, batches only", "CPU us/train window, batches only",
                 "CPU us/row evaluate",
                 "plan/measured", "evaluate s", "us/row evaluate", "read+prepare s", "base MB", "peak MB",
                 "peak bytes/row above base", "bytes per added row", "peak at"], rows_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats (a smoke run)")
    parser.add_argument("--tables", default="1,2,3", help="which tables to run (default: %(default)s)")
    parser.add_argument("--sizes", default=",".join(str(n) for n in SCALE_SIZES), help="rows for table 3")
    parser.add_argument("--epochs", type=int, help="table 3: epochs per size (default: 3 up to 200k rows, 1 above)")
    parser.add_argument("--max-train-windows", type=int, help="table 3: train on this many windows per epoch")
    parser.add_argument("--one-size", help=argparse.SUPPRESS)  # table 3's child process: one CSV
    args = parser.parse_args()
    if args.one_size:
        print(json.dumps(one_size(args.one_size, args.epochs or 1, args.max_train_windows)))
        return
    repeats = 2 if args.quick else args.repeats
    tables = {int(t) for t in args.tables.split(",")}
    print(f"machine: {machine_note()}")
    if 3 in tables:
        sizes = [int(n) for n in args.sizes.split(",")]
        scale_table(sizes[:3] if args.quick else sizes, args.max_train_windows, 1 if args.quick else args.epochs)
    if not tables & {1, 2}:
        return

    from _common import ROOT

    from pipeline.config.settings import load_config

    default = default_config(train={"epochs": 5 if args.quick else 40, "patience": None})
    seed = load_config(ROOT / "configs" / "seed.yaml")
    seed = seed.with_overrides(train={"epochs": 100 if args.quick else 1000})
    sbux = data_path("SBUX")
    rows = []
    for label, cfg in (("default (batch 64)", default), ("seed (full batch)", seed)):
        frame = load_frame(sbux, cfg)
        _, _, windows = prepare(frame, cfg)
        rows.append(compare(f"SBUX {label}", cfg, windows, repeats))
    print_table(
        f"Table 1: fit() vs a plain PyTorch loop, same model/data/batch/epochs; ms per epoch, median (min-max) of {repeats} alternating repeats",
        ["run", "windows x epochs", "threads", "fit ms/epoch", "plain ms/epoch", "fit/plain",
         "plain, default threads (1/4 epochs)", "fit/plain default", "same weights"], rows)

    sizes = [("SBUX", sbux, None, 3 if args.quick else 30), ("WMT", data_path("WMT"), None, 1 if args.quick else 3),
             ("synthetic", None, 40_000, 1 if args.quick else 2)]
    cfg = default_config()
    rows = []
    for label, path, n, epochs in sizes:
        if path is None and n is None:
            print(f"(skipping {label}: no {label}.csv in data/ or ../shared/data)")
            continue
        frame = load_frame(path, cfg, rows=n)
        _, _, windows = prepare(frame, cfg)
        rows.append(throughput(f"{label} ({len(frame):,} rows)", cfg, windows, max(1, repeats - 2), epochs))
    base = float(rows[0][5].replace(",", ""))
    for row in rows:
        row.append(f"{base / float(row[5].replace(',', '')):.2f}")
    print_table("Table 2: fit() throughput as the data grows (default config, batch 64, no early stop); seconds median (min-max)",
                ["series", "train windows", "epochs", "threads", "seconds", "samples/s", "us/sample",
                 "cost/sample vs SBUX"], rows)


if __name__ == "__main__":
    main()
