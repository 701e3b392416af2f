"""Figures of a run. Each function returns a matplotlib Figure; the caller decides where it goes."""

from __future__ import annotations

import matplotlib
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.evaluate import Forecasts

# Figures are built with matplotlib's object-oriented API, never pyplot: no display, no global
# figure registry to close, and 0.4 s less start-up than importing pyplot. Margins are fixed in
# inches rather than found by a layout engine: constrained layout measured every tick label of
# every axis again on each save, half of the plots' CPU time in a training run.
MARGINS_IN = {"left": 1.0, "right": 0.3, "bottom": 0.7, "top": 0.5, "between_rows": 0.9, "between_cols": 0.9}


def _figure(rows: int = 1, cols: int = 1, figsize: tuple[float, float] = (8, 4.5), **kwargs: object) -> tuple[Figure, object]:
    """A Figure and its axes, as `pyplot.subplots` would return them, with room for titles and tick labels."""
    width, height = figsize
    fig = Figure(figsize=figsize)
    axes = fig.subplots(rows, cols, **kwargs)
    panel_w = (width - MARGINS_IN["left"] - MARGINS_IN["right"] - (cols - 1) * MARGINS_IN["between_cols"]) / cols
    panel_h = (height - MARGINS_IN["bottom"] - MARGINS_IN["top"] - (rows - 1) * MARGINS_IN["between_rows"]) / rows
    fig.subplots_adjust(left=MARGINS_IN["left"] / width, right=1 - MARGINS_IN["right"] / width,
                        bottom=MARGINS_IN["bottom"] / height, top=1 - MARGINS_IN["top"] / height,
                        wspace=MARGINS_IN["between_cols"] / panel_w, hspace=MARGINS_IN["between_rows"] / panel_h)
    return fig, axes

SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
MODEL_COLOUR, PERSISTENCE_COLOUR = "tab:blue", "tab:red"


def _draw_bands(ax: object, dates: object, fc: Forecasts, colour: str, step: int = 0, label: bool = True) -> None:
    """The forecasts' intervals at one step as shaded bands, the widest level palest."""
    for i, level in enumerate(sorted(fc.levels, reverse=True)):
        ax.fill_between(dates, fc.bands[f"lower_{level}"][:, step], fc.bands[f"upper_{level}"][:, step],  # type: ignore[attr-defined]
                        color=colour, alpha=0.12 + 0.12 * i, linewidth=0, label=f"{level} % interval" if label else None)


def _rmse(actual: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean((actual - pred) ** 2))) if len(actual) else float("nan")


def plot_forecasts(
    series: pd.Series,
    forecasts: dict[str, Forecasts],
    boundaries: dict[str, pd.Timestamp],
    title: str,
) -> Figure:
    """Actual series vs one-step-ahead predictions of every split, split boundaries marked; below,
    the test part close up with persistence beside the model, so one glance says whether it adds anything."""
    test = forecasts.get("test")
    rows = 2 if test is not None and len(test.dates) else 1
    fig, axes = _figure(rows, 1, figsize=(12, 4.5 * rows), squeeze=False)
    ax = axes[0, 0]
    ax.plot(series.index, series.to_numpy(), color="black", linewidth=1.2, label="actual")
    for split, fc in forecasts.items():
        if len(fc.dates):
            ax.plot(fc.dates, fc.predicted[:, 0], color=SPLIT_COLOURS[split], linewidth=1.0,
                    label=f"predicted ({split})")
    for name, when in boundaries.items():
        ax.axvline(when, color="grey", linestyle="--", linewidth=1)
        ax.annotate(name, (when, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=9, color="grey")
    ax.set_title(title)
    ax.set_xlabel(series.index.name or "date")
    ax.set_ylabel(str(series.name))
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    if rows == 2:
        zoom = axes[1, 0]
        actual, model, naive = test.actual[:, 0], test.predicted[:, 0], test.persistence()[:, 0]
        _draw_bands(zoom, test.dates, test, MODEL_COLOUR)
        zoom.plot(test.dates, actual, color="black", linewidth=1.2, marker=".", label="actual")
        zoom.plot(test.dates, model, color=MODEL_COLOUR, linewidth=1.2,
                  label=f"model (RMSE {_rmse(actual, model):.4g})")
        zoom.plot(test.dates, naive, color=PERSISTENCE_COLOUR, linewidth=1.0, linestyle="--",
                  label=f"persistence (RMSE {_rmse(actual, naive):.4g})")
        bands = f", the model's {' and '.join(str(v) for v in test.levels)} % intervals shaded" if test.levels else ""
        zoom.set_title(f"Test part: one step ahead, model vs persistence (last known value){bands}")
        zoom.set_xlabel(series.index.name or "date")
        zoom.set_ylabel(str(series.name))
        zoom.legend(loc="best")
        zoom.grid(alpha=0.3)
    return fig


def plot_losses(train_loss: list[float], val_loss: list[float], best_epoch: int) -> Figure:
    """Training and validation loss per epoch, log scale, best epoch marked."""
    fig, ax = _figure(figsize=(8, 4.5))
    epochs = np.arange(1, len(train_loss) + 1)
    ax.plot(epochs, train_loss, label="train")
    if val_loss:
        ax.plot(epochs[: len(val_loss)], val_loss, label="validation")
    ax.axvline(best_epoch + 1, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch + 1}")
    ax.set_yscale("log")
    plain = mticker.FuncFormatter(lambda value, _: f"{value:g}")  # 0.6, not 6x10^-1
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled)")
    ax.set_title("Loss per epoch")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    return fig


def plot_residuals(fc: Forecasts, unit: str) -> Figure:
    """Test residuals (actual - predicted, first step) over time and their distribution."""
    residuals = fc.actual[:, 0] - fc.predicted[:, 0]
    naive = fc.actual[:, 0] - fc.anchor
    fig, (ax_time, ax_hist) = _figure(1, 2, figsize=(12, 4.5),
                                           gridspec_kw={"width_ratios": [2, 1]})
    ax_time.axhline(0, color="black", linewidth=0.8)
    ax_time.plot(fc.dates, residuals, marker="o", markersize=3, color=MODEL_COLOUR, label="model")
    ax_time.plot(fc.dates, naive, marker="x", markersize=3, alpha=0.7, color=PERSISTENCE_COLOUR, label="persistence")
    ax_time.set_title("Test residuals (actual - predicted)")
    ax_time.set_ylabel(unit)
    ax_time.legend()
    ax_time.grid(alpha=0.3)
    finite = np.concatenate([residuals, naive])
    finite = finite[np.isfinite(finite)]
    bins = np.histogram_bin_edges(finite, bins=min(30, max(5, len(residuals) // 3))) if len(finite) else 10
    # Same bins, two distinct colours with outlines, so overlapping bars stay readable.
    ax_hist.hist(residuals, bins=bins, color=MODEL_COLOUR, alpha=0.45, edgecolor=MODEL_COLOUR, label="model")
    ax_hist.hist(naive, bins=bins, histtype="step", linewidth=1.8, color=PERSISTENCE_COLOUR, label="persistence")
    ax_hist.set_title("Distribution")
    ax_hist.set_xlabel(unit)
    ax_hist.set_ylabel("windows")
    ax_hist.legend()
    return fig


def plot_horizon(scores_by_step: dict[str, list[float]], metric: str, unit: str) -> Figure:
    """Error per step ahead (h=1..H) of the model and each baseline; from `evaluate.per_step`."""
    fig, ax = _figure(figsize=(8, 4.5))
    for name, values in scores_by_step.items():
        steps = np.arange(1, len(values) + 1)
        ax.plot(steps, values, marker="o", linewidth=2.0 if name == "model" else 1.0,
                color="black" if name == "model" else None, label=name)
    ax.set_xlabel("steps ahead (h)")
    ax.set_ylabel(f"test {metric.upper()} ({unit})")
    ax.set_title(f"Test {metric.upper()} per step ahead")
    ax.set_xticks(np.arange(1, max((len(v) for v in scores_by_step.values()), default=1) + 1))
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def plot_horizon_paths(series: pd.Series, fc: Forecasts, every: int | None = None) -> Figure:
    """The actual test series with whole H-step forecast paths from a spread of origins."""
    n, horizon = fc.predicted.shape
    every = every or max(1, horizon, n // 12)
    fig, ax = _figure(figsize=(12, 5))
    start = series.index.searchsorted(fc.dates[0]) if n else 0
    shown = series.iloc[max(0, start - horizon):]
    ax.plot(shown.index, shown.to_numpy(), color="black", linewidth=1.2, label="actual")
    positions = series.index.searchsorted(fc.dates)
    for i in range(0, n, every):
        idx = series.index[positions[i]:positions[i] + horizon]
        ax.plot(idx, fc.predicted[i, :len(idx)], color="tab:green", marker=".", linewidth=1.0,
                label="forecast paths" if i == 0 else None)
    ax.set_title(f"{horizon}-step forecast paths on the test part (one origin in {every})")
    ax.set_xlabel(series.index.name or "date")
    ax.set_ylabel(str(series.name))
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def plot_backtest(series: pd.Series, folds: list[tuple[pd.Timestamp, Forecasts]], title: str) -> Figure:
    """The actual series against every fold's one-step-ahead forecasts, cutoffs marked."""
    fig, ax = _figure(figsize=(12, 5))
    ax.plot(series.index, series.to_numpy(), color="black", linewidth=1.0, label="actual")
    colours = matplotlib.colormaps["tab10"]
    for i, (cutoff, fc) in enumerate(folds):
        colour = colours(i % 10)
        ax.axvline(cutoff, color=colour, linestyle="--", linewidth=0.8)
        if len(fc.dates):
            _draw_bands(ax, fc.dates, fc, colour, label=i == 0)
            ax.plot(fc.dates, fc.predicted[:, 0], color=colour, linewidth=1.2, label=f"fold {i + 1}")
    ax.set_title(title)
    ax.set_xlabel(series.index.name or "date")
    ax.set_ylabel(str(series.name))
    ax.legend(loc="best", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return fig


def plot_fold_distribution(table: pd.DataFrame, metric: str, baselines: list[str], title: str) -> Figure:
    """The per-series error distribution of each fold (a box per fold; `table`: fold, `model__<metric>`, ...),
    the baselines' medians marked beside the model's boxes."""
    fig, ax = _figure(figsize=(9, 4.5))
    folds = sorted(table["fold"].unique())
    values = [table.loc[table["fold"] == f, f"model__{metric}"].dropna().to_numpy() for f in folds]
    ax.boxplot(values, positions=range(1, len(folds) + 1), widths=0.5, showfliers=True)
    colours = matplotlib.colormaps["tab10"]
    for i, name in enumerate(b for b in baselines if f"{b}__{metric}" in table.columns):
        medians = [table.loc[table["fold"] == f, f"{name}__{metric}"].median() for f in folds]
        ax.plot(range(1, len(folds) + 1), medians, marker="D", linestyle="--", color=colours(i + 1),
                label=f"{name.replace('_', ' ')} (median)")
    ax.set_xticks(range(1, len(folds) + 1), [f"fold {f}" for f in folds])
    ax.set_ylabel(f"{metric.upper()} per series")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_sweep(trials: list[tuple[int, str, float | None]], objective: str, best: int) -> Figure:
    """The objective of every trial of a sweep, in trial order, with the running best and the winner.

    `trials` holds (number, state, value); pruned and failed trials have no value and show as ticks
    along the bottom axis.
    """
    fig, ax = _figure()
    done = [(n, v) for n, state, v in trials if state == "complete" and v is not None and np.isfinite(v)]
    if done:
        numbers, values = zip(*done)
        ax.plot(numbers, values, "o", color=MODEL_COLOUR, label="complete")
        ax.step(numbers, np.minimum.accumulate(values), where="post", color="black", linewidth=1.0, label="best so far")
        ax.plot([best], [dict(done)[best]], "*", color="tab:green", markersize=14, label=f"winner (trial {best})")
    for state, marker in (("pruned", "x"), ("failed", "v")):
        stopped = [n for n, s, _ in trials if s == state]
        if stopped:
            ax.plot(stopped, [0] * len(stopped), marker, color=PERSISTENCE_COLOUR, clip_on=False,
                    transform=ax.get_xaxis_transform(), label=state)
    ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{objective} (lower is better)")
    ax.set_title(f"Sweep: {objective} across {len(trials)} trials")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_calibration(coverage: dict[int, list[float]] | Forecasts, title: str) -> Figure:
    """Achieved coverage per step ahead of each interval level against its nominal level (dashed).

    `coverage`: level -> achieved coverage at steps 1..H, or forecasts carrying bands (scored here).
    Points above their dashed line: intervals wider than they need be; below: they cover too little.
    """
    if isinstance(coverage, Forecasts):
        fc = coverage
        coverage = {level: [float(np.mean((fc.actual[:, k] >= fc.bands[f"lower_{level}"][:, k])
                                          & (fc.actual[:, k] <= fc.bands[f"upper_{level}"][:, k])))
                            for k in range(fc.actual.shape[1])] for level in fc.levels}
    fig, ax = _figure(figsize=(8, 4.5))
    colours = matplotlib.colormaps["tab10"]
    horizon = max((len(v) for v in coverage.values()), default=1)
    for i, (level, achieved) in enumerate(sorted(coverage.items())):
        steps = np.arange(1, len(achieved) + 1)
        ax.plot(steps, np.asarray(achieved) * 100, marker="o", color=colours(i), label=f"achieved, {level} % interval")
        ax.axhline(level, color=colours(i), linestyle="--", linewidth=1, label=f"nominal {level} %")
    ax.set_xlabel("steps ahead (h)")
    ax.set_ylabel("coverage (%)")
    ax.set_xlim(0.5, horizon + 0.5)
    if horizon <= 12:
        ax.set_xticks(np.arange(1, horizon + 1))
    else:
        ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    low = min([min(v) * 100 for v in coverage.values() if len(v)] + [min(coverage or [50])]) - 5
    ax.set_ylim(max(0, low), 101)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def close(fig: Figure) -> None:
    """Free a figure's artists once it is saved (no pyplot registry holds it)."""
    fig.clear()
