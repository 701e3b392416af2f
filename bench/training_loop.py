"""Benchmark 1: the project's training loop against a plain PyTorch loop, and cost as data grows.

    .venv/bin/python bench/training_loop.py [--repeats 5] [--quick]

Table 1 runs `pipeline.train.fit` and a plain loop (the same model, initial weights, data,
batch size, epochs, optimiser, clipping and shuffling order) in one process, alternating which
goes first, and reports the median ratio of their times over the repeats. The plain loop runs
with the threads `fit` picked (the loop's own overhead) and with torch's default threads (what
a plain script gets). Both end on the same weights, which the table checks.
Table 2 gives samples per second of `fit` on SBUX (253 rows), WMT (4,029 rows, from
../shared/data, skipped when absent) and a 40,000-row synthetic series: flat samples/s means
cost linear in the data.
"""

from __future__ import annotations

import argparse
import copy

from _common import (data_path, default_config, fmt_range, load_frame, machine_note, prepare, print_table,
                     stats, timeit)


def plain_loop(model, train, val, cfg, threads: int | None) -> list[float]:
    """What a user writes by hand: shuffled mini-batches of Adam on MSE, clipping, a validation pass."""
    import torch
    from torch import nn

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(cfg.seed)  # the same dropout masks as fit(), which seeds the same way
        X, y = torch.from_numpy(train.X), torch.from_numpy(train.y)
        Xv, yv = torch.from_numpy(val.X), torch.from_numpy(val.y)
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

    from pipeline.model import LSTMForecaster

    torch.manual_seed(cfg.train.seed)
    return LSTMForecaster.from_config(cfg.model, n_features=n_features, horizon=cfg.window.horizon)


def same_weights(a, b) -> bool:
    import torch

    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def compare(label: str, cfg, windows, repeats: int) -> list[object]:
    """One row of table 1: fit vs the plain loop at fit's threads and at torch's default threads."""
    import torch

    from pipeline.train import fit, pick_threads

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
    from pipeline.train import fit

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats (a smoke run)")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    print(f"machine: {machine_note()}")

    from pipeline.config import load_config
    from _common import ROOT

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
