"""Figures of a run. Each function returns a matplotlib Figure; the caller decides where it goes."""

from __future__ import annotations

import matplotlib
import matplotlib.dates as mdates
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.evaluation.metrics import Forecasts

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


ZOOM_WINDOWS = 120  # test windows shown close up: beyond that the points merge into a band of ink


def date_axis(ax: object) -> None:
    """Date ticks that never overlap: as many as fit (AutoDateLocator), each written as briefly as its
    neighbours allow (ConciseDateFormatter: "Mar", "2024", "14:30"); other axes get at most ~8 round ticks."""
    import matplotlib.dates as mdates

    axis = ax.xaxis  # type: ignore[attr-defined]
    if isinstance(axis.get_major_formatter(), mdates.AutoDateFormatter | mdates.ConciseDateFormatter):
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        axis.set_major_locator(locator)
        axis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    else:
        axis.set_major_locator(mticker.MaxNLocator(nbins=8, integer=True))


def plot_forecasts(
    series: pd.Series,
    forecasts: dict[str, Forecasts],
    boundaries: dict[str, pd.Timestamp],
    title: str,
) -> Figure:
    """Above, the whole series, thin, its splits shaded and the part shown below framed; below, the end of the
    test part close up: the model's one-step-ahead forecasts with their intervals beside persistence, so one
    glance says whether the model adds anything."""
    test = forecasts.get("test")
    rows = 2 if test is not None and len(test.dates) else 1
    fig, axes = _figure(rows, 1, figsize=(12, 4.0 * rows), squeeze=False,
                        gridspec_kw={"height_ratios": [2, 3][:rows]} if rows == 2 else None)
    ax = axes[0, 0]
    ax.plot(series.index, series.to_numpy(), color="black", linewidth=0.7, label="actual")
    edges = [series.index[0], *boundaries.values(), series.index[-1]]
    names = ["train", *("val" if n == "validation" else n for n in boundaries)]
    for name, (left, right) in zip(names, zip(edges[:-1], edges[1:])):
        ax.axvspan(left, right, color=SPLIT_COLOURS.get(name, "grey"), alpha=0.08, linewidth=0)
        ax.annotate({"val": "validation"}.get(name, name), (left, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", fontsize=9, color="dimgrey")
    if rows == 2:
        shown = test if len(test.dates) <= ZOOM_WINDOWS else last_windows(test, ZOOM_WINDOWS)
        ax.axvspan(shown.dates[0], shown.dates[-1], facecolor="none", edgecolor=MODEL_COLOUR, linewidth=1.2,
                   label="shown below")
        ax.legend(loc="upper left", bbox_to_anchor=(0, 0.9), fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(str(series.name))
    ax.grid(alpha=0.3)
    date_axis(ax)
    if rows == 2:
        zoom = axes[1, 0]
        actual, model, naive = shown.actual[:, 0], shown.predicted[:, 0], shown.persistence()[:, 0]
        context = series.iloc[max(0, series.index.searchsorted(shown.dates[0]) - len(shown.dates) // 4):
                              series.index.searchsorted(shown.dates[-1], side="right")]
        _draw_bands(zoom, shown.dates, shown, MODEL_COLOUR)
        dots = "." if len(shown.dates) <= 60 else None
        zoom.plot(context.index, context.to_numpy(), color="black", linewidth=1.0, marker=dots, label="actual")
        zoom.plot(shown.dates, model, color=MODEL_COLOUR, linewidth=1.3,
                  label=f"model (RMSE {_rmse(actual, model):.4g})")
        zoom.plot(shown.dates, naive, color=PERSISTENCE_COLOUR, linewidth=1.0, linestyle="--",
                  label=f"persistence (RMSE {_rmse(actual, naive):.4g})")
        bands = f", the model's {' and '.join(str(v) for v in test.levels)} % intervals shaded" if test.levels else ""
        part = "Test part" if shown is test else f"Last {len(shown.dates)} of {len(test.dates)} test windows"
        zoom.set_title(f"{part}: one step ahead, model vs persistence (last known value){bands}")
        zoom.set_xlabel(series.index.name or "date")
        zoom.set_ylabel(str(series.name))
        zoom.legend(loc="best", fontsize=8)
        zoom.grid(alpha=0.3)
        date_axis(zoom)
    return fig


def last_windows(fc: Forecasts, n: int) -> Forecasts:
    """The last `n` windows of `fc`: what a close-up draws (dates, actual, predicted, anchor, bands)."""
    cut = slice(max(0, len(fc.dates) - n), None)
    return Forecasts(dates=fc.dates[cut], actual=fc.actual[cut], predicted=fc.predicted[cut], anchor=fc.anchor[cut],
                     bands={k: v[cut] for k, v in fc.bands.items()})


def minor_log_label(ax: object, value: float) -> str:
    """A minor tick's label on a log y axis, as plain text, only where labels have room: every one within a
    decade, 2 and 5 within two, none beyond (the major labels then say enough)."""
    low, high = ax.get_ylim()  # type: ignore[attr-defined]
    decades = np.log10(high / low) if low > 0 and high > low else np.inf
    mantissa = round(value / 10 ** np.floor(np.log10(value)), 6) if value > 0 else 0
    keep = decades <= 1 or (decades <= 2 and mantissa in (2, 5))
    return f"{value:g}" if keep else ""


def plot_losses(train_loss: list[float], val_loss: list[float], best_epoch: int, title: str = "Loss per epoch") -> Figure:
    """Training and validation loss per epoch, log scale, best epoch marked."""
    fig, ax = _figure(figsize=(8, 4.5))
    epochs = np.arange(1, len(train_loss) + 1)
    ax.plot(epochs, train_loss, label="train")
    if val_loss:
        ax.plot(epochs[: len(val_loss)], val_loss, label="validation")
    ax.axvline(best_epoch + 1, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch + 1}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda value, _: f"{value:g}"))  # 0.6, not 6x10^-1
    ax.yaxis.set_minor_formatter(mticker.FuncFormatter(lambda value, _: minor_log_label(ax, value)))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.xaxis.set_major_locator(mticker.MaxNLocator(nbins=10, integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled)")
    ax.set_title(title)
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
    date_axis(ax_time)
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
    """Error per step ahead (h=1..H) of the model and each baseline; from `metrics.per_step`."""
    fig, ax = _figure(figsize=(8, 4.5))
    for name, values in scores_by_step.items():
        steps = np.arange(1, len(values) + 1)
        ax.plot(steps, values, marker="o" if len(values) <= 24 else None, linewidth=2.0 if name == "model" else 1.0,
                color="black" if name == "model" else None, label=name)
    ax.set_xlabel("steps ahead (h)")
    ax.set_ylabel(f"test {metric.upper()} ({unit})")
    ax.set_title(f"Test {metric.upper()} per step ahead")
    horizon = max((len(v) for v in scores_by_step.values()), default=1)
    if horizon <= 12:
        ax.set_xticks(np.arange(1, horizon + 1))
    else:  # 48 steps: every label would touch its neighbours
        ax.xaxis.set_major_locator(mticker.MaxNLocator(nbins=12, integer=True))
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
    date_axis(ax)
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
    date_axis(ax)
    return fig


def tiled_paths(series: pd.Series, fc: Forecasts) -> tuple[pd.Index, np.ndarray, dict[str, np.ndarray]]:
    """Whole H-step forecast paths from every H-th origin, end to end: one forecast per date of the scored part
    (the one-step forecasts when H is 1); their dates, values and bands."""
    n, horizon = fc.predicted.shape
    positions = series.index.searchsorted(fc.dates)
    rows, steps = [], []
    for i in range(0, n, horizon):
        k = np.arange(min(horizon, len(series) - positions[i]))
        rows.append(np.full(len(k), i))
        steps.append(k)
    row, step = (np.concatenate(rows), np.concatenate(steps)) if rows else (np.empty(0, int), np.empty(0, int))
    dates = series.index[positions[row] + step]
    return dates, fc.predicted[row, step], {name: band[row, step] for name, band in fc.bands.items()}


def plot_series_forecasts(history: dict[str, pd.Series], forecasts: dict[str, Forecasts],
                          captions: dict[str, str]) -> Figure:
    """One panel per series (those chosen or the worst few): its recent history and its test forecasts with their
    intervals, H-step paths end to end, beside the seasonal-naive (else naive) baseline; `captions` titles each."""
    fig, axes = _figure(len(history), 1, figsize=(12, 3.2 * len(history) + 0.6), squeeze=False)
    for ax, (sid, series) in zip(axes[:, 0], history.items()):
        fc = forecasts[sid]
        dates, predicted, bands = tiled_paths(series, fc)
        shown = series.iloc[max(0, len(series) - 4 * len(dates) - 1):]
        for i, level in enumerate(sorted(fc.levels, reverse=True)):
            ax.fill_between(dates, bands[f"lower_{level}"], bands[f"upper_{level}"], color=MODEL_COLOUR,
                            alpha=0.12 + 0.12 * i, linewidth=0, label=f"{level} % interval")
        ax.plot(shown.index, shown.to_numpy(), color="black", linewidth=1.0, label="actual")
        ax.plot(dates, predicted, color=MODEL_COLOUR, linewidth=1.4, marker="." if len(dates) <= 60 else None,
                label="model")
        baseline = "seasonal_naive" if "seasonal_naive" in fc.baselines else None
        values = tiled_paths(series, Forecasts(fc.dates, fc.actual, fc.baselines[baseline] if baseline
                                               else fc.persistence(), fc.anchor))[1]
        ax.plot(dates, values, color=PERSISTENCE_COLOUR, linewidth=1.0, linestyle="--",
                label=(baseline or "naive").replace("_", " "))
        ax.axvline(dates[0], color="grey", linestyle=":", linewidth=1) if len(dates) else None
        ax.set_title(captions.get(sid, sid), fontsize=10)
        ax.set_ylabel(str(series.name))
        ax.grid(alpha=0.3)
        date_axis(ax)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=5)
    return fig


def plot_mase_distribution(model: np.ndarray, baseline: np.ndarray, baseline_name: str = "seasonal naive") -> Figure:
    """Per-series test MASE of the model against a baseline's: a scatter (below the diagonal the model wins) and
    the distribution (ECDF) of the ratio model/baseline, with the share of series where the model wins."""
    model, baseline = np.asarray(model, dtype=float), np.asarray(baseline, dtype=float)
    ok = np.isfinite(model) & np.isfinite(baseline) & (baseline > 0)
    model, baseline = model[ok], baseline[ok]
    fig, (ax_xy, ax_cdf) = _figure(1, 2, figsize=(12, 4.8))
    ax_xy.scatter(baseline, model, s=14, color=MODEL_COLOUR, alpha=0.7)
    span = [min(model.min(initial=1), baseline.min(initial=1)) * 0.9, max(model.max(initial=1), baseline.max(initial=1)) * 1.1]
    ax_xy.plot(span, span, color="grey", linestyle="--", linewidth=1, label="equal")
    ax_xy.set_xlim(span)
    ax_xy.set_ylim(span)
    ax_xy.set_xlabel(f"{baseline_name} MASE")
    ax_xy.set_ylabel("model MASE")
    ax_xy.set_title(f"Test MASE per series ({len(model)}): below the line the model wins")
    ax_xy.legend(loc="upper left", fontsize=8)
    ax_xy.grid(alpha=0.3)
    ratio = np.sort(model / baseline)
    wins = float(np.mean(ratio < 1)) if len(ratio) else float("nan")
    ax_cdf.step(ratio, np.arange(1, len(ratio) + 1) / max(1, len(ratio)), where="post", color=MODEL_COLOUR)
    ax_cdf.axvline(1, color="grey", linestyle="--", linewidth=1)
    ax_cdf.set_xlabel(f"MASE ratio model / {baseline_name}")
    ax_cdf.set_ylabel("share of series at or below")
    ax_cdf.set_ylim(0, 1.02)
    median = float(np.median(ratio)) if len(ratio) else float("nan")
    ax_cdf.set_title(f"Model better on {wins:.0%} of series; median ratio {median:.3g}")
    ax_cdf.grid(alpha=0.3)
    return fig


def shown_series(table: pd.DataFrame, column: str, chosen: tuple[str, ...], worst: int) -> list[str]:
    """The series a many-series run draws: those `chosen` that have test scores, else the `worst` by test MASE."""
    ids = [str(v) for v in table[column]]
    picked = [sid for sid in chosen if sid in ids]
    if picked:
        return picked
    order = table.assign(_id=ids).sort_values("model__mase", ascending=False, na_position="last")
    return list(order["_id"][:worst])


def panel_figures(histories: dict[str, pd.Series], test: dict[str, Forecasts], table: pd.DataFrame, column: str,
                  chosen: tuple[str, ...], worst: int, losses: tuple[list[float], list[float], int, str] | None,
                  ) -> dict[str, Figure]:
    """The figures of a many-series run by artifact path: the loss curve (`losses`: train and validation losses,
    best epoch, title), chosen or worst series' forecasts, and per-series MASE against the seasonal naive."""
    figures: dict[str, Figure] = {}
    if losses is not None:
        figures["plots/loss.png"] = plot_losses(*losses)
    ids = [sid for sid in shown_series(table, column, chosen, worst) if sid in test]
    if ids:
        rows = table.assign(_id=[str(v) for v in table[column]]).set_index("_id")
        baseline = "seasonal_naive" if "seasonal_naive__mase" in table else "naive"
        captions = {sid: f"{column} {sid}: test MASE {rows.at[sid, 'model__mase']:.3g} "
                         f"({baseline.replace('_', ' ')} {rows.at[sid, baseline + '__mase']:.3g})" for sid in ids}
        figures["plots/series_forecasts.png"] = plot_series_forecasts({sid: histories[sid] for sid in ids},
                                                                      {sid: test[sid] for sid in ids}, captions)
    baseline = "seasonal_naive" if "seasonal_naive__mase" in table else "naive"
    if "model__mase" in table and f"{baseline}__mase" in table:
        figures["plots/series_mase.png"] = plot_mase_distribution(
            table["model__mase"].to_numpy(dtype=float), table[f"{baseline}__mase"].to_numpy(dtype=float),
            baseline.replace("_", " "))
    return figures


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


def plot_live(scored: pd.DataFrame, history: dict[str, pd.Series], series: list[str], levels: list[int]) -> Figure:
    """Live forecasts against the actuals that arrived, one panel per series (the worst first): the recent history,
    for each forecast date its nearest-step forecast with bands (the widest level palest), the latest origin's whole
    path dashed, and the actuals."""
    shown = series or sorted(scored["series"].unique())[:1]
    fig, axes = _figure(len(shown), 1, figsize=(11, 3.2 * len(shown) + 0.8), squeeze=False)
    for ax, sid in zip(axes[:, 0], shown):
        rows = scored[scored["series"] == sid].sort_values(["date", "step"])
        if rows.empty:
            continue
        first = rows["origin"].min()
        past = history.get(sid)
        if past is not None:
            span = max(rows["date"].max() - first, pd.Timedelta(0)) * 2
            recent = past[past.index >= first - span]
            ax.plot(recent.index, recent.to_numpy(), color="black", linewidth=1.0, label="actual")
        nearest = rows.drop_duplicates("date", keep="first")  # per date, the forecast from the latest origin
        for i, level in enumerate(sorted(levels, reverse=True)):
            ax.fill_between(nearest["date"], nearest[f"lower_{level}"], nearest[f"upper_{level}"], color=MODEL_COLOUR,
                            alpha=0.12 + 0.12 * i, linewidth=0, label=f"{level} % interval")
        steps = sorted(nearest["step"].unique())
        ax.plot(nearest["date"], nearest["forecast"], color=MODEL_COLOUR, linewidth=1.2,
                label="forecast, " + ("one step ahead" if steps == [1] else "nearest step per date"))
        latest = rows[rows["origin"] == rows["origin"].max()]
        if len(latest) > 1:
            ax.plot(latest["date"], latest["forecast"], color=MODEL_COLOUR, linewidth=1.0, linestyle="--",
                    label=f"latest origin's path ({latest['origin'].iloc[0]:%Y-%m-%d %H:%M})")
        ax.scatter(rows["date"].unique(), rows.drop_duplicates("date")["actual"], color="black", s=12, zorder=3,
                   label="actuals scored")
        ax.set_title(f"{sid}: live forecasts and the actuals that arrived")
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=8))
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    return fig
