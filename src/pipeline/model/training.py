"""The training loop: a pure function of model, data and config. No MLflow, no Prefect."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config.settings import (
    EPOCH_WINDOWS,
    ONE_NETWORK_POWER,
    ONE_SERIES_PATIENCE,
    PipelineConfig,
    TrainConfig,
    member_power,
    member_season,
    settled,
)
from pipeline.errors import TrainingError
from pipeline.features.calendar import calendar_width
from pipeline.features.windows import Windows
from pipeline.model.network import EVAL_BATCH, LSTMEnsemble, LSTMForecaster, Network, as_batch
from pipeline.runtime import denormals_flushed, pick_threads, zero_denormals_

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, float, float | None], None]


@dataclass
class TrainResult:
    model: Network  # holds the best weights, in eval mode, on the CPU
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    device: str = "cpu"
    threads: int = 1
    members: list[TrainResult] = field(default_factory=list)  # an ensemble: each member's own training

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)

    def member_epochs(self) -> list[int]:
        """Epochs to each member's best validation loss (one network: its own), what a refit trains each for."""
        return [r.best_epoch + 1 for r in (self.members or [self])]

    def member_metrics(self) -> dict[str, float]:
        """An ensemble's per-member best epoch and best validation loss (MLflow metrics); {} for one network."""
        out: dict[str, float] = {}
        for i, r in enumerate(self.members):
            out[f"member_{i}_best_epoch"] = float(r.best_epoch + 1)
            if r.val_loss:
                out[f"member_{i}_val_loss"] = float(r.val_loss[r.best_epoch])
        return out


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def init_model(cfg: PipelineConfig, n_features: int) -> LSTMForecaster:
    """A fresh model for a resolved config, whose initial weights depend on the seed alone, not on earlier use of the RNGs.

    `n_features`: the windows' width (`Windows.X.shape[2]`), the config's calendar inputs included."""
    seed_everything(cfg.train.seed)
    season = cfg.evaluate.season_length if isinstance(cfg.evaluate.season_length, int) else None
    target = cfg.data.features.index(cfg.data.target) if cfg.data.target in cfg.data.features else 0
    calendar = calendar_width(cfg)
    return LSTMForecaster.from_config(cfg.model, n_features=n_features - calendar, horizon=cfg.window.horizon,
                                      season=season, target_index=target, calendar=calendar,
                                      lookback=int(cfg.window.lookback) if calendar else 0)


def member_runs(cfg: PipelineConfig, epochs: list[int] | None = None) -> list[int | None]:
    """One entry per network the config trains (`model.ensemble` members): None to stop early on validation, or
    `epochs` as given (a refit, each member for its own count)."""
    return [None] * cfg.model.ensemble if epochs is None else list(epochs)


def member_config(cfg: PipelineConfig, member: int, epochs: int | None = None) -> PipelineConfig:
    """The config member `member` of an ensemble trains with: seed `train.seed + member` and its entry of a
    `train.loss_weight_power` list and of a `model.residual_season` list; with `epochs`, a refit of that many epochs without validation to stop on.
    Member 0 of a single network with one power is `cfg` itself."""
    train: dict[str, Any] = {"seed": cfg.train.seed + member} if member else {}
    if isinstance(cfg.train.loss_weight_power, tuple):
        train["loss_weight_power"] = member_power(cfg.train.loss_weight_power, member)
    if epochs is not None:
        train.update(epochs=max(1, epochs), patience=None)
    model = ({"residual_season": member_season(cfg.model.residual_season, member)}
             if isinstance(cfg.model.residual_season, tuple) else {})
    changes = {k: v for k, v in (("train", train), ("model", model)) if v}
    return cfg.with_overrides(**changes) if changes else cfg


def fit_member(cfg: PipelineConfig, member: int, train: Windows, val: Windows | None, epochs: int | None = None,
               on_epoch_end: EpochCallback | None = None) -> TrainResult:
    """Train one network of an ensemble (member 0 of one network alone) from its own seed (`member_config`)."""
    own = member_config(cfg, member, epochs)
    return fit(init_model(own, n_features=train.X.shape[2]), train, val, own.train, on_epoch_end=on_epoch_end)


def ensemble_result(members: list[TrainResult]) -> TrainResult:
    """The members' results as one: their networks combined (`LSTMEnsemble`; one member: its own result). The
    loss curves, best epoch and early stop shown are the first member's; the seconds are the members' sum."""
    if len(members) == 1:
        return members[0]
    first = members[0]
    return TrainResult(model=LSTMEnsemble([r.model for r in members]), train_loss=first.train_loss,
                       val_loss=first.val_loss, best_epoch=first.best_epoch, stopped_early=first.stopped_early,
                       seconds=sum(r.seconds for r in members), device=first.device, threads=first.threads,
                       members=list(members))


def fit_network(cfg: PipelineConfig, train: Windows, val: Windows | None, on_epoch_end: EpochCallback | None = None,
                epochs: list[int] | None = None) -> TrainResult:
    """The network `cfg` describes, trained: `model.ensemble` members one after another (`fit_member`), combined.
    `epochs` (one per member): a refit, each member for its own count. The flows train the members in parallel."""
    return ensemble_result([fit_member(cfg, i, train, val, n, on_epoch_end)
                            for i, n in enumerate(member_runs(cfg, epochs))])


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


# ---------------------------------------------------------------- batches
def gather(windows: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    """The windows at `idx` as one contiguous float32 tensor: a mini-batch copied out of the views.

    Indexing copies only the rows asked for; `np.take` would first copy the whole strided view
    into a contiguous array, every batch (quadratic in the rows).
    """
    return torch.from_numpy(np.ascontiguousarray(windows[idx]))


def batch_count(n: int, batch: int) -> int:
    return max(1, math.ceil(n / batch)) if n else 0


# ---------------------------------------------------------------- the plan, stated before training
@dataclass(frozen=True)
class TrainingPlan:
    """The size of a training job, known before it starts: rows, windows, batches and the time they take."""

    rows: int
    windows: dict[str, int]
    lookback: int
    n_features: int
    parameters: int
    batch: int
    batches_per_epoch: int
    epochs: int
    threads: int
    seconds_per_epoch: float  # measured on a few batches of this data on this machine
    long_after_s: float = 600.0

    @property
    def seconds_at_most(self) -> float:
        return self.seconds_per_epoch * self.epochs

    @property
    def long(self) -> bool:
        """Longer than `long_after_s` if every epoch runs: worth a warning, not a silent wait."""
        return self.seconds_at_most > self.long_after_s

    def describe(self) -> str:
        windows = ", ".join(f"{s} {n:,}" for s, n in self.windows.items())
        return (f"training on {self.rows:,} rows: windows {windows} (lookback {self.lookback} x "
                f"{self.n_features} features), {self.parameters:,} parameters; {self.batches_per_epoch:,} "
                f"batches of {self.batch:,} per epoch on {self.threads} thread(s), about "
                f"{_duration(self.seconds_per_epoch)} per epoch, at most {_duration(self.seconds_at_most)} for "
                f"{self.epochs} epochs (early stopping may end sooner)")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_training(model: LSTMForecaster, windows: dict[str, Windows], cfg: TrainConfig,
                  rows: int | None = None, calibration_batches: int = 3) -> TrainingPlan:
    """Rows, windows per split and the time per epoch, from a few timed batches on a copy of the model.

    The copy, its optimiser and its threads are those `fit` will use; `fit` reseeds, so this
    leaves its results unchanged. `rows` defaults to the rows the windows reach (the series'
    length when the test split ends on the last row).
    """
    train, val = windows["train"], windows.get("val")
    n = len(train)
    batch = min(cfg.batch_size or n, n) if n else 1
    steps = batch_count(n, batch)
    if rows is None:
        rows = max((int(w.target_positions.max()) + 1 for w in windows.values() if len(w)), default=0)
    device = pick_device(cfg.device)
    probe = copy.deepcopy(model).to(device).train()
    threads = pick_threads(probe, batch, train.X.shape[1], cfg.num_threads)
    per_step = per_val_window = 0.0
    if n:
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with denormals_flushed():
                per_step, per_val_window = _time_batches(probe, train, cfg, batch, calibration_batches, device)
        finally:
            torch.set_num_threads(previous_threads)
    n_val = len(val) if val is not None else 0
    return TrainingPlan(
        rows=rows, windows={s: len(w) for s, w in windows.items()}, lookback=train.X.shape[1],
        n_features=train.X.shape[2], parameters=sum(p.numel() for p in probe.parameters()), batch=batch,
        batches_per_epoch=steps, epochs=cfg.epochs, threads=threads,
        seconds_per_epoch=per_step * steps + per_val_window * n_val,
    )


def _time_batches(model: LSTMForecaster, train: Windows, cfg: TrainConfig, batch: int, count: int,
                  device: torch.device) -> tuple[float, float]:
    """Seconds per training step and per window of a validation pass, after one untimed warm-up step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    loss_fn = nn.MSELoss()
    idx = np.arange(min(batch, len(train)))
    yb = torch.from_numpy(train.y[idx]).to(device)

    def wait() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    for _ in range(count + 1):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(gather(train.X, idx).to(device)), yb).backward()  # the gather is part of each step
        optimizer.step()
        wait()
        times.append(time.perf_counter() - started)
    model.eval()
    with torch.no_grad():
        started = time.perf_counter()
        model(as_batch(train.X[:len(idx)]).to(device))
        wait()
        per_val_window = (time.perf_counter() - started) / len(idx)
    return float(np.median(times[1:])), per_val_window


# ---------------------------------------------------------------- training
def fit(
    model: LSTMForecaster,
    train: Windows,
    val: Windows | None,
    cfg: TrainConfig,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Adam on the configured loss (MSE or MAE, per-window weights when the windows carry them) with mini-batches,
    gradient clipping and early stopping on the validation loss (the same loss).

    The best weights (lowest validation loss, or the last epoch without validation) are kept.
    Raises TrainingError when there is no training window or the loss stops being finite. Mini-batches are gathered
    from the windows (views of the series) one at a time, so memory holds one batch, not every window.
    Runs with denormal floats flushed to zero (see `denormals_flushed`), then restores the mode.
    """
    if not len(train):
        raise TrainingError("no training window to train on (the data's checks, steps.prepare_panel, refuse such "
                            "data before training)")
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    batch = cfg.batch_size or len(train)
    threads = pick_threads(model, min(batch, len(train)), train.X.shape[1], cfg.num_threads)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with denormals_flushed() as flushed:
            # Flush mode covers this thread only: zero what other threads (or a CPU without the mode) leave.
            scrub = device.type == "cpu" and (not flushed or threads > 1)
            return _fit(model, train, val, cfg, device, batch, threads, scrub, on_epoch_end)
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
    scrub: bool,
    on_epoch_end: EpochCallback | None,
) -> TrainResult:
    started = time.perf_counter()
    model.to(device)
    y = torch.from_numpy(train.y).to(device)  # (n, horizon)
    has_val = val is not None and len(val) > 0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    loss_fn = window_loss(settled(cfg.loss, "mse"))
    power = float(settled(member_power(cfg.loss_weight_power, 0), ONE_NETWORK_POWER))
    weights = window_weights(train, power)
    weight_norm = None if weights is None or not len(weights) else float(np.mean(weights))
    w = None if weight_norm is None else torch.from_numpy(weights / weight_norm).float().to(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    n = len(train)
    per_epoch = min(n, settled(cfg.windows_per_epoch, EPOCH_WINDOWS) or n)
    full_batch = batch >= n and per_epoch == n
    X_full = as_batch(train.X).to(device) if full_batch else None
    result = TrainResult(model=model, device=str(device), threads=threads)
    best_loss, best_state, since_best = math.inf, None, 0
    patience = settled(cfg.patience, ONE_SERIES_PATIENCE)  # `auto` resolved with the data (data.auto); else one series'

    for epoch in range(cfg.epochs):
        model.train()
        if full_batch:
            batches = iter([(X_full, y, w)])
        else:
            order = torch.randperm(n, generator=generator)[:per_epoch]
            batches = ((gather(train.X, idx.numpy()).to(device), y[idx.to(device)], None if w is None else w[idx.to(device)])
                       for idx in order.split(batch))
        total = torch.zeros((), dtype=torch.float64, device=device)
        for xb, yb, wb in batches:  # xb (batch, lookback, n_features), yb (batch, horizon), wb (batch,) or None
            optimizer.zero_grad(set_to_none=True)
            loss = model_loss(model, xb, yb, wb, loss_fn)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            if scrub:
                zero_denormals_(params)
            total += loss.detach().double() * len(xb)  # no .item() per batch: one device sync per epoch
        train_loss = total.item() / per_epoch
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"training diverged at epoch {epoch + 1}: loss is {train_loss} "
                f"(try a lower train.learning_rate than {cfg.learning_rate} or train.grad_clip)"
            )
        val_loss = (validation_loss(model, val, device, loss=settled(cfg.loss, "mse"), weight_norm=weight_norm,
                                    power=power) if has_val else None)
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
        if has_val and patience is not None and since_best >= patience:
            result.stopped_early = True
            log.info("early stop at epoch %d; best epoch %d (val loss %.6f)", epoch + 1, result.best_epoch + 1, best_loss)
            break

    if not has_val or patience is None:
        best_state = model.state_dict()  # no validation to choose by: keep the final weights
        result.best_epoch = result.epochs_run - 1
    if best_state is None:  # the monitored loss was never a number: no epoch to keep
        raise TrainingError(
            f"the validation loss was not a finite number in any of the {result.epochs_run} epoch(s) run "
            f"(last: {result.val_loss[-1] if result.val_loss else 'none'}): the validation windows hold values the "
            "model cannot score (check the data's validation rows and the transforms' domains), or the model diverged "
            f"on them (try a lower train.learning_rate than {cfg.learning_rate})")
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    result.seconds = time.perf_counter() - started
    log.info("trained %d epochs in %.2fs on %s (%d thread(s))", result.epochs_run, result.seconds, device, threads)
    return result


def window_loss(kind: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """The training loss: mean squared or absolute error, each window's mean error times its weight when given.

    A squared error takes the square of the weight, so a weight converts the error's units either way.
    """
    def loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if weight is None:
            return nn.functional.mse_loss(pred, target) if kind == "mse" else nn.functional.l1_loss(pred, target)
        if kind == "mse":
            return ((pred - target).square().mean(dim=1) * weight.square()).mean()
        return ((pred - target).abs().mean(dim=1) * weight).mean()
    return loss


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: tuple[float, ...],
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean pinball (quantile) loss of predictions (batch, Q, horizon) of the `quantiles` of targets (batch, horizon):
    under-forecasts cost q x the miss, over-forecasts (1 - q) x; each window's mean times its weight when given."""
    taus = torch.tensor(quantiles, dtype=pred.dtype, device=pred.device).reshape(1, -1, 1)
    miss = target[:, None, :] - pred
    per_window = torch.maximum(taus * miss, (taus - 1) * miss).mean(dim=(1, 2))
    return (per_window * weight).mean() if weight is not None else per_window.mean()


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def outputs_loss(model: Network, out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                 loss_fn: LossFn) -> torch.Tensor:
    """The loss of everything the head predicted, `out` (batch, 1 + Q, horizon), against targets in its units: the
    point loss, plus the pinball loss of a quantile head's outputs."""
    point = loss_fn(out[:, 0], target, weight)
    return point + pinball_loss(out[:, 1:], target, model.quantiles, weight) if model.quantiles else point


def model_loss(model: LSTMForecaster, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor | None,
               loss_fn: LossFn) -> torch.Tensor:
    """The training loss of a batch (`outputs_loss` of the network's outputs for windows xb)."""
    return outputs_loss(model, model(xb, with_quantiles=True), model.target_space(xb, yb), wb, loss_fn)


def window_weights(windows: Windows, power: float) -> np.ndarray | None:
    """The windows' loss weights at `power` (`train.loss_weight_power`; the windows carry them at power 1); None
    without weights. Training divides them by the training windows' mean (mean 1: the learning rate keeps its
    meaning)."""
    return None if windows.weight is None else windows.weight ** power


def validation_loss(model: Network, val: Windows, device: torch.device, batch: int = EVAL_BATCH,
                    loss: str = "mse", weight_norm: float | None = None, power: float = 1.0) -> float:
    """The training loss over the validation windows, `batch` windows per forward pass.

    Memory holds one batch's activations, not those of every window (at 2M rows, gigabytes).
    Weights (the windows' `weight` at `power` over the training windows' `weight_norm`) apply when both are given.
    """
    model.eval()
    with torch.no_grad():
        preds, targets = [], []
        for i in range(0, len(val), batch):
            xb = as_batch(val.X[i:i + batch]).to(device)
            preds.append(model(xb, with_quantiles=True))
            targets.append(model.target_space(xb, torch.from_numpy(val.y[i:i + batch]).to(device)))
        weight = None
        if weight_norm is not None and val.weight is not None:
            weight = torch.from_numpy(window_weights(val, power) / weight_norm).float().to(device)
        return outputs_loss(model, torch.cat(preds), torch.cat(targets), weight, window_loss(loss)).item()


