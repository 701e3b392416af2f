"""Walk-forward backtesting: folds, per-fold refits on past rows only, and their summary.

Each fold has a cutoff. Its scalers and its model are fit on rows before the cutoff only
(training rows, then the last pre-cutoff rows for early stopping), and it forecasts the block
of rows that starts at the cutoff. Rows after the block are not even handed to the fold.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import get_args

import numpy as np
import pandas as pd

from pipeline.config.settings import BacktestWindow, PipelineConfig
from pipeline.data import panel
from pipeline.data.panel import Panel
from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import (
    Forecasts,
    SplitScores,
    beats_persistence,
    score,
    verdict,
    worse_than_persistence,
)
from pipeline.features.windows import Preprocessor, prepare
from pipeline.model.network import weights_digest
from pipeline.model.training import EpochCallback, TrainResult, fit_network
from pipeline.training import steps
from pipeline.training.steps import PanelScores

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Fold:
    """Row positions of one fold: [start, val_start) trains, [val_start, cutoff) validates,
    [cutoff, end) is forecast."""

    index: int
    start: int
    val_start: int
    cutoff: int
    end: int

    @property
    def train_rows(self) -> int:
        return self.val_start - self.start

    @property
    def val_rows(self) -> int:
        return self.cutoff - self.val_start

    @property
    def test_rows(self) -> int:
        return self.end - self.cutoff


@dataclass
class FoldResult:
    fold: Fold
    preprocessor: Preprocessor
    train: TrainResult
    forecasts: Forecasts
    scores: SplitScores  # of the fold's test block
    seconds: float


def _rows(value: float, total: int) -> int:
    """A fraction of `total` (value < 1) or a row count."""
    return int(round(total * value)) if value < 1 else int(value)


def validation_share(cfg: PipelineConfig) -> float:
    """The part of each fold's pre-cutoff rows kept for early stopping: backtest.val, else as in split."""
    if cfg.backtest.val is not None:
        return cfg.backtest.val
    split = cfg.split
    if split.train_end is not None:
        return 0.15 if cfg.train.patience is not None else 0.0
    if split.train is not None and split.train < 1 and split.val < 1:
        return split.val / (split.train + split.val)
    return split.val


def plan_folds(n_rows: int, cfg: PipelineConfig, folds: int | None = None,
               window: BacktestWindow | None = None) -> list[Fold]:
    """The folds of a walk-forward backtest over `n_rows` rows; ConfigError when they do not fit.

    The last fold ends at the last row; the folds' test blocks are consecutive and equal in size.
    """
    bt = cfg.backtest
    k = folds or bt.folds
    window = window or bt.window
    if k < 1:
        raise ConfigError(f"backtest needs at least one fold (got {k})")
    if window not in get_args(BacktestWindow):
        raise ConfigError(f"backtest window must be one of {list(get_args(BacktestWindow))} (got {window!r})")
    initial = _rows(bt.initial, n_rows)
    test_size = bt.test_size or (n_rows - initial) // k
    pre = Preprocessor(cfg)
    first_cutoff = n_rows - k * test_size
    history = first_cutoff  # rows before the first cutoff; a rolling window keeps this many
    val_share = validation_share(cfg)
    # Two training windows and one validation window need these many rows at least.
    min_train = pre.min_input_rows + pre.lead + pre.horizon
    min_val = pre.horizon if (val_share > 0) else 0
    plan: list[Fold] = []
    for i in range(k):
        cutoff = first_cutoff + i * test_size
        start = 0 if window == "expanding" else cutoff - history
        val_rows = _rows(val_share, cutoff - start) if val_share else 0
        if val_share and val_rows < min_val:
            val_rows = min_val
        plan.append(Fold(index=i, start=start, val_start=cutoff - val_rows, cutoff=cutoff, end=cutoff + test_size))
    problems = []
    if test_size < pre.horizon:
        problems.append(f"each test block has {test_size} rows but the horizon is {pre.horizon}")
    if first_cutoff <= 0 or plan[0].train_rows < min_train:
        problems.append(f"the first fold trains on {max(plan[0].train_rows, 0)} rows; it needs at least {min_train} "
                        f"(lookback {pre.lookback} + warm-up {pre.warmup} + lead {pre.lead} + horizon {pre.horizon})")
    if problems:
        raise ConfigError(
            f"backtest of {k} {window} folds does not fit {n_rows} rows (backtest.initial={bt.initial}, "
            f"test_size={test_size}): " + "; ".join(problems) + ". Use fewer folds, a smaller "
            "backtest.initial or backtest.test_size, or more data."
        )
    if cfg.train.patience is not None and plan[0].val_rows == 0:
        raise ConfigError("backtest: early stopping (train.patience) needs validation rows in every fold; "
                          "set backtest.val > 0 or train.patience: null")
    return plan


def fold_config(cfg: PipelineConfig, fold: Fold) -> PipelineConfig:
    """The config of one fold: its rows split into train / validation / test by row counts."""
    return cfg.with_overrides(split={"train": float(fold.train_rows), "val": float(fold.val_rows), "test": None,
                                     "train_end": None, "val_end": None})


def fold_frame(frame: pd.DataFrame, fold: Fold) -> pd.DataFrame:
    """The rows a fold may see: its training and validation rows and its test block, nothing later."""
    return frame.iloc[fold.start:fold.end]


def run_fold(frame: pd.DataFrame, cfg: PipelineConfig, fold: Fold,
             on_epoch_end: EpochCallback | None = None) -> FoldResult:
    """Refit scalers and model on the fold's pre-cutoff rows, then forecast its test block."""
    started = time.perf_counter()
    part = fold_frame(frame, fold)
    fcfg = fold_config(cfg, fold)
    pre, bounds, windows = prepare(part, fcfg)
    assert bounds.test_start == fold.cutoff - fold.start, "fold split disagrees with the plan"
    val = windows["val"] if len(windows["val"]) else None
    result = fit_network(fcfg, windows["train"], val, on_epoch_end=on_epoch_end)
    # The fold's intervals come from its own validation part's errors (none without validation windows), as in
    # training: one series is a panel of one.
    one = Panel(column=None, series={panel.ONE_SERIES: part})
    preps = {panel.ONE_SERIES: steps.SeriesPrep(pre, bounds, windows, trainable=True)}
    settled = steps.with_theta_weight(lambda _: result.model, one, preps, cfg)  # chosen per fold, as in training
    fc = steps.forecast_splits(lambda _: result.model, one, preps, settled, ("test",))[0]["test"][panel.ONE_SERIES]
    scores = score(fc, prefix="test")
    seconds = time.perf_counter() - started
    log.info("fold %d: cutoff %s, %d train rows, test RMSE %.6g (persistence %.6g)", fold.index + 1,
             frame.index[fold.cutoff].date(), fold.train_rows, scores.model["rmse"], scores.baselines["naive"]["rmse"])
    return FoldResult(fold=fold, preprocessor=pre, train=result, forecasts=fc, scores=scores, seconds=seconds)


def concat_forecasts(parts: list[Forecasts]) -> Forecasts:
    """All folds' forecasts as one (their test blocks never overlap)."""
    names = set.intersection(*(set(p.baselines) for p in parts)) if parts else set()
    return Forecasts(
        dates=pd.DatetimeIndex(np.concatenate([p.dates.to_numpy() for p in parts])),
        actual=np.vstack([p.actual for p in parts]),
        predicted=np.vstack([p.predicted for p in parts]),
        anchor=np.concatenate([p.anchor for p in parts]),
        baselines={n: np.vstack([p.baselines[n] for p in parts]) for n in sorted(names)},
        scale=float(np.mean([p.scale for p in parts])) if parts else float("nan"),
        bands=_stacked([p.bands for p in parts]),
        baseline_bands={n: b for n in sorted(set.intersection(*(set(p.baseline_bands) for p in parts)))
                        if (b := _stacked([p.baseline_bands[n] for p in parts]))} if parts else {},
    )


def _stacked(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Bands of consecutive blocks as one; none unless every block has the same bands."""
    if not parts or any(set(p) != set(parts[0]) for p in parts):
        return {}
    return {name: np.vstack([p[name] for p in parts]) for name in parts[0]}


def summarize(results: list[FoldResult]) -> dict[str, float]:
    """Mean and spread over folds of every fold metric (`{key}_mean`, `{key}_std`, sample std),
    and the metrics of all fold forecasts pooled (`backtest_*`)."""
    out: dict[str, float] = {"folds": float(len(results))}
    flat = [r.scores.flat() for r in results]
    keys = set.intersection(*(set(f) for f in flat)) if flat else set()
    for key in sorted(keys):
        values = np.array([f[key] for f in flat], dtype=float)
        out[f"{key}_mean"] = float(np.mean(values))
        out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    if results:
        out.update(score(concat_forecasts([r.forecasts for r in results]), prefix="backtest").flat())
        out["train_seconds_total"] = float(sum(r.train.seconds for r in results))
    return out


def fold_table(frame: pd.DataFrame, results: list[FoldResult]) -> pd.DataFrame:
    """One row per fold: its dates, sizes, model and persistence RMSE, ratio, epochs, seconds."""
    rows = []
    for r in results:
        f = r.fold
        rows.append({
            "fold": f.index + 1,
            "train_start": str(frame.index[f.start].date()),
            "cutoff": str(frame.index[f.cutoff].date()),
            "test_end": str(frame.index[f.end - 1].date()),
            "train_rows": f.train_rows, "val_rows": f.val_rows, "test_rows": f.test_rows,
            "windows": r.scores.windows,
            "rmse": r.scores.model["rmse"], "naive_rmse": r.scores.baselines["naive"]["rmse"],
            "rmse_ratio": r.scores.rmse_ratio,
            **{key: value for key, value in r.scores.model.items() if key.startswith("coverage_")},
            "epochs": r.train.epochs_run, "seconds": round(r.seconds, 3),
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- what the runs record
@dataclass
class BacktestSummary:
    """What `pipeline backtest` prints: the parent run, the fold table and the summary metrics."""

    run_id: str
    experiment_id: str
    fold_run_ids: list[str]
    folds: pd.DataFrame
    metrics: dict[str, float]
    window: str
    notes: list[str] = field(default_factory=list)
    headline: str = ""  # the model against the baseline it is held to (the gate's), pooled over every fold
    series: pd.DataFrame | None = None  # many series: every fold's per-series scores


def _day(frame: pd.DataFrame, position: int) -> str:
    return str(frame.index[position].date())


def data_tags(frame: pd.DataFrame, digest: str) -> dict[str, str]:
    """The data a backtest ran on: digest, rows, first and last date."""
    return {"data_digest": digest, "data_rows": str(len(frame)), "data_start": _day(frame, 0), "data_end": _day(frame, -1)}


def fold_params(frame: pd.DataFrame, fold: Fold, window: BacktestWindow) -> dict[str, str]:
    """A fold run's params: its number, window, dates and sizes."""
    return {
        "fold": str(fold.index + 1), "window": window,
        "train_start": _day(frame, fold.start), "val_start": _day(frame, fold.val_start),
        "cutoff": _day(frame, fold.cutoff), "test_end": _day(frame, fold.end - 1),
        "train_rows": str(fold.train_rows), "val_rows": str(fold.val_rows), "test_rows": str(fold.test_rows),
    }


def fold_record(result: FoldResult) -> tuple[dict[str, str], dict[str, float]]:
    """A fold run's tags (weights digest, best epoch, a warning when it loses to persistence) and metrics."""
    tags = {"weights_digest": weights_digest(result.train.model.state_dict()),
            "best_epoch": str(result.train.best_epoch + 1)}
    warning = worse_than_persistence(result.scores.rmse_ratio, f"on fold {result.fold.index + 1}")
    if warning:
        tags["warning"] = warning
    metrics = {**result.scores.flat(), "epochs_run": result.train.epochs_run, "train_threads": result.train.threads,
               "time_fold_s": result.seconds}
    return tags, metrics


def summary_findings(metrics: dict[str, float], table: pd.DataFrame,
                     window: BacktestWindow) -> tuple[dict[str, str], list[str]]:
    """The parent run's tags (folds, window, a warning when the model loses to persistence) and notes.

    The verdict is the pooled RMSE ratio (all folds' forecasts scored together), the measure and
    threshold of the command's last line (`evaluation.metrics.verdict`), so the warning and that line never
    disagree; the mean of the fold ratios is shown beside it for information.
    """
    tags = {"folds": str(len(table)), "window": window}
    notes: list[str] = []
    mean_ratio = metrics.get("test_rmse_ratio_mean", float("nan"))
    pooled_ratio = metrics.get("backtest_rmse_ratio", float("nan"))
    warning = worse_than_persistence(pooled_ratio, "pooled over all folds",
                                     f"pooled RMSE ratio {pooled_ratio:.4f}; mean of the fold ratios {mean_ratio:.4f}")
    if warning:
        tags["warning"] = warning
        notes.append(warning)
    worse_folds = int((table["rmse_ratio"] > 1.0).sum())
    if worse_folds:
        notes.append(f"{worse_folds} of {len(table)} folds are worse than persistence")
    return tags, notes


# ---------------------------------------------------------------- many series
@dataclass(frozen=True)
class PanelFold:
    """One fold of a backtest of many series: each series' rows (`Fold`), counted from that series' end, every
    series with the same test block size (the step) and the same validation rows."""

    index: int
    folds: dict[str, Fold]  # series id -> its fold
    step: int  # test rows of each series (its test block)
    val_rows: int  # validation rows of each series, just before its cutoff


@dataclass
class PanelFoldResult:
    """A fold of many series: each series' test forecasts (with intervals) and scores beside the baselines."""

    fold: PanelFold
    scores: PanelScores  # one row per scored series: RMSE, MAE, sMAPE, MASE, coverage, width, MSIS, baselines
    forecasts: dict[str, Forecasts]
    epochs: int
    train_seconds: float
    seconds: float
    skipped: list[str] = field(default_factory=list)  # series too short for this fold

    def metrics(self) -> dict[str, float]:
        """The fold's pooled metrics (means over its series; `PanelScores.means`), MLflow's `test_*` names."""
        return {**self.scores.means(), "epochs_run": float(self.epochs), "time_fold_s": self.seconds}


def plan_panel_folds(data: Panel, cfg: PipelineConfig, folds: int | None = None,
                     window: BacktestWindow | None = None) -> tuple[list[PanelFold], list[str]]:
    """The folds of a walk-forward backtest of many series, counted from each series' end: `folds` test blocks
    of `backtest.test_size` rows (null: the most that fits every series, at least the horizon) per series; and
    the series too short for them (each a note). ConfigError when no series fits."""
    k = folds or cfg.backtest.folds
    lengths = {sid: len(f) for sid, f in data.series.items()}
    step = cfg.backtest.test_size or max(min((n - _rows(cfg.backtest.initial, n)) // max(k, 1) for n in lengths.values()),
                                         cfg.window.horizon)
    stepped = cfg.with_overrides(backtest={"test_size": step})
    planned: dict[str, list[Fold]] = {}
    notes: list[str] = []
    for sid, n in lengths.items():
        try:
            planned[sid] = plan_folds(n, stepped, k, window)
        except ConfigError as exc:
            notes.append(f"series {sid!r} left out of the backtest: {str(exc).splitlines()[0]}")
    if not planned:
        raise ConfigError(f"backtest of {k} folds of {step} rows fits no series: " + "; ".join(notes[:5]))
    out = []
    for i in range(k):
        by_series = {sid: plan[i] for sid, plan in planned.items()}
        val_rows = min(f.val_rows for f in by_series.values())
        out.append(PanelFold(i, {sid: replace(f, val_start=f.cutoff - val_rows) for sid, f in by_series.items()},
                             step, val_rows))
    return out, notes


def panel_fold_config(cfg: PipelineConfig, fold: PanelFold) -> PipelineConfig:
    """The config of one fold of many series: each series' rows split from its end (validation, then test)."""
    return cfg.with_overrides(split={"train": None, "val": float(fold.val_rows), "test": float(fold.step),
                                     "train_end": None, "val_end": None})


def run_panel_fold(data: Panel, cfg: PipelineConfig, fold: PanelFold,
                   on_epoch_end: EpochCallback | None = None) -> PanelFoldResult:
    """Refit every series' scalers and the model(s) on the fold's pre-cutoff rows, then forecast each series' test
    block, with intervals fitted on the fold's own validation errors; scores per series beside the baselines."""
    started = time.perf_counter()
    fcfg = panel_fold_config(cfg, fold)
    part = Panel(column=data.column, series={sid: fold_frame(data.series[sid], f) for sid, f in fold.folds.items()})
    preps = steps.prepare_panel(part, fcfg)
    fitted = steps.fit_panel(preps, fcfg, on_epoch_end)
    fcfg = steps.with_theta_weight(fitted.model_for, part, fitted.serves(preps), fcfg)  # per fold, as in training
    test = steps.forecast_splits(fitted.model_for, part, fitted.serves(preps), fcfg, ("test",))[0]["test"]
    scores = steps.score_panel(test, part, preps, fcfg, "test")
    results = [fitted.shared] if fitted.shared is not None else list(fitted.local.values())
    seconds = time.perf_counter() - started
    log.info("fold %d: %d series, test MASE %.4g (seasonal naive %.4g)", fold.index + 1, len(test),
             scores.means().get("test_mase", float("nan")), scores.means().get("test_seasonal_naive_mase", float("nan")))
    return PanelFoldResult(fold, scores, test, max(r.epochs_run for r in results), sum(r.seconds for r in results),
                           seconds, [sid for sid, p in preps.items() if not p.trainable])


def series_table(results: list[PanelFoldResult], column: str) -> pd.DataFrame:
    """Every fold's per-series scores in one table: fold, then the series id, windows and `<who>__<metric>`."""
    return pd.concat([r.scores.table.assign(fold=r.fold.index + 1) for r in results], ignore_index=True)[
        ["fold", *results[0].scores.table.columns]] if results else pd.DataFrame(columns=["fold", column])


def summarize_panel(results: list[PanelFoldResult], column: str) -> dict[str, float]:
    """Mean and spread over folds of each fold's pooled metric (`{key}_mean`, `{key}_std`), and every series' scores
    of every fold pooled (`backtest_*`: means over series and folds)."""
    out: dict[str, float] = {"folds": float(len(results))}
    flat = [r.metrics() for r in results]
    for key in sorted(set.intersection(*(set(f) for f in flat)) if flat else ()):
        values = np.array([f[key] for f in flat], dtype=float)
        out[f"{key}_mean"] = float(np.mean(values))
        out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    if results:
        pooled = series_table(results, column).drop(columns=["fold"])
        out.update(PanelScores("backtest", pooled).means())
        out["train_seconds_total"] = float(sum(r.train_seconds for r in results))
    return out


def panel_fold_table(results: list[PanelFoldResult]) -> pd.DataFrame:
    """One row per fold: its series, windows, pooled MASE, sMAPE and RMSE beside naive and seasonal naive,
    the 95 % coverage, epochs and seconds."""
    rows = []
    for r in results:
        m = r.scores.means()
        rows.append({"fold": r.fold.index + 1, "series": int(m.get("test_series", 0)), "windows": int(m.get("test_windows", 0)),
                     **{k: m.get(f"test_{k}", float("nan")) for k in (
                         "mase", "naive_mase", "seasonal_naive_mase", "smape", "seasonal_naive_smape", "rmse",
                         "coverage_95", "msis")},
                     "epochs": r.epochs, "seconds": round(r.seconds, 3)})
    return pd.DataFrame(rows)


def panel_findings(metrics: dict[str, float], table: pd.DataFrame, baseline: tuple[str, float],
                   window: BacktestWindow) -> tuple[dict[str, str], list[str]]:
    """The parent run's tags (folds, window, the verdict, a warning when the model loses to the baseline it is held
    to: pooled mean MASE) and notes."""
    from pipeline.evaluation.baselines import baseline_words

    name, baseline_score = baseline
    model = metrics.get("backtest_mase", float("nan"))
    ratio = model / baseline_score if baseline_score and np.isfinite(baseline_score) else float("nan")
    words = baseline_words(name)
    tags = {"folds": str(len(table)), "window": window, "backtest.metric": "mase", "backtest.baseline": name,
            "backtest.verdict": verdict(ratio, words)}
    notes: list[str] = []
    if not beats_persistence(ratio):
        tags["warning"] = (f"model is not better than {words} pooled over all folds and series "
                           f"(mean MASE {model:.4g} vs {baseline_score:.4g})")
        notes.append(tags["warning"])
    return tags, notes
