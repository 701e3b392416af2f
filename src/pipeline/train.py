"""The training loop: a pure function of model, data and config. No MLflow, no Prefect."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pipeline.config import ModelConfig, TrainConfig
from pipeline.errors import TrainingError
from pipeline.features import Windows
from pipeline.model import LSTMForecaster

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, float, float | None], None]
# Multiply-adds of one LSTM time step over one batch (parameters x batch rows): the width a second
# thread can split. Below it the hand-off per small matmul costs more than it saves (measured on
# 2 cores: hidden 32 at batch 64, 0.9 M, gains nothing; hidden 32 at batch 1024, 14 M, gains 1.6x).
THREADS_WORK_THRESHOLD = 10_000_000


@dataclass
class TrainResult:
    model: LSTMForecaster  # holds the best weights, in eval mode, on the CPU
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    device: str = "cpu"
    threads: int = 1

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def init_model(model_cfg: ModelConfig, train_cfg: TrainConfig, n_features: int, horizon: int) -> LSTMForecaster:
    """A fresh model whose initial weights depend on the seed alone, not on earlier use of the RNGs."""
    seed_everything(train_cfg.seed)
    return LSTMForecaster.from_config(model_cfg, n_features=n_features, horizon=horizon)


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pick_threads(model: nn.Module, batch_rows: int, lookback: int, requested: int | None) -> int:
    """Threads for CPU training: one unless each step is wide enough to split across cores.

    A time step's matmuls are as wide as parameters x batch rows; the `lookback` steps run one
    after another and add nothing a second thread could share. On a busy machine a second
    thread waits on a core someone else holds: the seed config took 45 s with two threads
    against 1.2 s with one. The choice depends on the work and the machine only, never on the
    momentary load, so the same config on the same machine always trains with the same threads
    (float reductions, and so the weights, depend on the thread count); `train.num_threads` pins it.
    """
    if requested is not None:
        return requested
    work = sum(p.numel() for p in model.parameters()) * batch_rows
    return 1 if work < THREADS_WORK_THRESHOLD else usable_cores()


def fit(
    model: LSTMForecaster,
    train: Windows,
    val: Windows | None,
    cfg: TrainConfig,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Adam on MSE with mini-batches, gradient clipping and early stopping on validation loss.

    The best weights (lowest validation loss, or the last epoch without validation) are kept.
    Raises TrainingError when the loss stops being finite.
    """
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    batch = cfg.batch_size or len(train)
    threads = pick_threads(model, min(batch, len(train)), train.X.shape[1], cfg.num_threads)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _fit(model, train, val, cfg, device, batch, threads, on_epoch_end)
    finally:
        torch.set_num_threads(previous_threads)


def _fit(
    model: LSTMForecaster,
    train: Windows,
    val: Windows | None,
    cfg: TrainConfig,
    device: torch.device,
    batch: int,
    threads: int,
    on_epoch_end: EpochCallback | None,
) -> TrainResult:
    started = time.perf_counter()
    model.to(device)
    X = torch.from_numpy(train.X).to(device)  # (n, lookback, n_features)
    y = torch.from_numpy(train.y).to(device)  # (n, horizon)
    has_val = val is not None and len(val) > 0
    if has_val:
        Xv = torch.from_numpy(val.X).to(device)
        yv = torch.from_numpy(val.y).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    loss_fn = nn.MSELoss()
    generator = torch.Generator().manual_seed(cfg.seed)
    n = len(X)
    full_batch = batch >= n
    result = TrainResult(model=model, device=str(device), threads=threads)
    best_loss, best_state, since_best = math.inf, None, 0

    for epoch in range(cfg.epochs):
        model.train()
        if full_batch:
            batches = [(X, y)]
        else:
            order = torch.randperm(n, generator=generator).to(device)
            batches = [(X[idx], y[idx]) for idx in order.split(batch)]
        total = torch.zeros((), dtype=torch.float64, device=device)
        for xb, yb in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            total += loss.detach().double() * len(xb)  # no .item() per batch: one device sync per epoch
        train_loss = total.item() / n
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"training diverged at epoch {epoch + 1}: loss is {train_loss} "
                f"(try a lower train.learning_rate than {cfg.learning_rate} or train.grad_clip)"
            )
        val_loss = None
        if has_val:
            model.eval()
            with torch.no_grad():
                val_loss = loss_fn(model(Xv), yv).item()
        result.train_loss.append(train_loss)
        if val_loss is not None:
            result.val_loss.append(val_loss)
        if on_epoch_end is not None:
            on_epoch_end(epoch, train_loss, val_loss)

        monitored = val_loss if val_loss is not None else train_loss
        if monitored < best_loss - cfg.min_delta:
            best_loss, since_best, result.best_epoch = monitored, 0, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        if has_val and cfg.patience is not None and since_best >= cfg.patience:
            result.stopped_early = True
            log.info("early stop at epoch %d; best epoch %d (val loss %.6f)", epoch + 1, result.best_epoch + 1, best_loss)
            break

    if not has_val or cfg.patience is None:
        best_state = model.state_dict()  # no validation to choose by: keep the final weights
        result.best_epoch = result.epochs_run - 1
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    result.seconds = time.perf_counter() - started
    log.info("trained %d epochs in %.2fs on %s (%d thread(s))", result.epochs_run, result.seconds, device, threads)
    return result


def predict(model: LSTMForecaster, X: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Model outputs (n, horizon) for windows X (n, lookback, n_features), in scaled space."""
    model.eval()
    if len(X) == 0:
        return np.empty((0, model.init_args["horizon"]), dtype=np.float32)
    with torch.no_grad():
        parts = [model(torch.from_numpy(np.ascontiguousarray(X[i:i + batch], dtype=np.float32))).numpy()
                 for i in range(0, len(X), batch)]
    return np.concatenate(parts)
