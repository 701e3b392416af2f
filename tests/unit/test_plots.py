"""The run's figures say what a reader needs: persistence beside the model, readable axes, distinct colours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import plots
from pipeline.evaluation.metrics import Forecasts


@pytest.fixture
def series_and_forecasts() -> tuple[pd.Series, dict[str, Forecasts]]:
    rng = np.random.default_rng(0)
    index = pd.bdate_range("2022-01-03", periods=60, name="Date")
    series = pd.Series(100 + np.cumsum(rng.normal(0, 1, 60)), index=index, name="Close")
    values = series.to_numpy()

    def part(start: int, stop: int, horizon: int = 1) -> Forecasts:
        positions = np.arange(start, stop - horizon + 1)[:, None] + np.arange(horizon)[None, :]
        return Forecasts(dates=index[positions[:, 0]], actual=values[positions],
                         predicted=values[positions] + rng.normal(0, 0.5, positions.shape), anchor=values[positions[:, 0] - 1])

    return series, {"train": part(1, 40), "val": part(40, 50), "test": part(50, 60)}


def test_forecast_plot_shows_persistence_beside_the_model_on_the_test_part(series_and_forecasts) -> None:
    series, forecasts = series_and_forecasts
    fig = plots.plot_forecasts(series, forecasts, {"test": series.index[50]}, "t")
    zoom = fig.axes[1]
    labels = [line.get_label() for line in zoom.get_lines()]
    assert labels[0] == "actual" and labels[1].startswith("model (RMSE") and labels[2].startswith("persistence (RMSE")
    np.testing.assert_allclose(zoom.get_lines()[2].get_ydata(), forecasts["test"].anchor)
    plots.close(fig)


def test_loss_axis_reads_as_plain_numbers() -> None:
    fig = plots.plot_losses([0.9, 0.6, 0.45, 0.3], [1.0, 0.7, 0.65, 0.66], best_epoch=2)
    fig.canvas.draw()
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_yticklabels(minor=False) + ax.get_yticklabels(minor=True) if t.get_text()]
    assert texts and not any("10^" in t or "times" in t for t in texts)
    assert "0.6" in texts or "0.5" in texts
    plots.close(fig)


def test_residual_histograms_have_distinct_colours(series_and_forecasts) -> None:
    _, forecasts = series_and_forecasts
    fig = plots.plot_residuals(forecasts["test"], "USD")
    hist = fig.axes[1]
    colours = {tuple(np.round(p.get_edgecolor()[:3], 3)) for p in hist.patches}
    assert len(colours) == 2
    assert hist.get_ylabel() and hist.get_xlabel() == "USD"
    plots.close(fig)


def test_horizon_figures_label_both_axes(series_and_forecasts) -> None:
    series, _ = series_and_forecasts
    values = series.to_numpy()
    positions = np.arange(50, 57)[:, None] + np.arange(3)[None, :]
    fc = Forecasts(dates=series.index[positions[:, 0]], actual=values[positions], predicted=values[positions] + 0.3,
                   anchor=values[positions[:, 0] - 1])
    for fig in (plots.plot_horizon_paths(series, fc), plots.plot_horizon({"model": [1.0, 1.2, 1.5]}, "rmse", "USD")):
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel()
        plots.close(fig)


def test_the_full_history_is_one_thin_line_and_a_long_test_part_is_shown_by_its_end() -> None:
    rng = np.random.default_rng(1)
    index = pd.date_range("2024-01-01", periods=3000, freq="30min", name="time")
    series = pd.Series(50 + np.cumsum(rng.normal(0, 1, 3000)), index=index, name="load")
    values = series.to_numpy()
    positions = np.arange(2400, 3000)
    test = Forecasts(dates=index[positions], actual=values[positions, None], predicted=values[positions, None] + 0.3,
                     anchor=values[positions - 1], bands={"lower_80": values[positions, None] - 2,
                                                          "upper_80": values[positions, None] + 2})
    fig = plots.plot_forecasts(series, {"test": test}, {"test": index[2400]}, "t")
    full, zoom = fig.axes
    assert len(full.get_lines()) == 1  # the actual series alone: no overlapping prediction lines
    assert zoom.get_title().startswith(f"Last {plots.ZOOM_WINDOWS} of 600 test windows")
    model = [line for line in zoom.get_lines() if line.get_label().startswith("model")][0]
    assert len(model.get_xdata()) == plots.ZOOM_WINDOWS
    fig.canvas.draw()
    for ax in (full, zoom):  # dates written briefly and few enough to stand apart
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert 2 <= len(labels) <= 9
        boxes = [t.get_window_extent() for t in labels]
        assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
    plots.close(fig)


def test_horizon_and_loss_tick_labels_do_not_overlap() -> None:
    scores = {"model": list(np.linspace(1, 3, 48)), "naive": list(np.linspace(1.2, 3.5, 48))}
    losses = list(np.geomspace(2.0, 0.004, 300))
    for fig in (plots.plot_horizon(scores, "rmse", "MW"), plots.plot_losses(losses, losses[::-1], best_epoch=150)):
        fig.canvas.draw()
        ax = fig.axes[0]
        for labels in (ax.get_xticklabels(), ax.get_yticklabels() + ax.get_yticklabels(minor=True)):
            shown = [t for t in labels if t.get_text()]
            boxes = sorted((t.get_window_extent() for t in shown), key=lambda b: (b.x0, b.y0))
            assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in shown]
        assert len([t for t in ax.get_xticklabels() if t.get_text()]) <= 13
        plots.close(fig)


def panel_of(n_series: int, horizon: int = 7) -> tuple[dict[str, pd.Series], dict[str, Forecasts], pd.DataFrame]:
    rng = np.random.default_rng(2)
    histories, forecasts, rows = {}, {}, []
    for i in range(n_series):
        index = pd.date_range("2024-01-01", periods=120, freq="D", name="date")
        values = 100 + 10 * np.sin(np.arange(120) * 2 * np.pi / 7) + rng.normal(0, 1 + i, 120)
        histories[f"s{i}"] = pd.Series(values, index=index, name="sales")
        first = np.arange(106, 120 - horizon + 1)
        pos = first[:, None] + np.arange(horizon)[None, :]
        forecasts[f"s{i}"] = Forecasts(dates=index[first], actual=values[pos], predicted=values[pos] + 1.0,
                                       anchor=values[first - 1], baselines={"seasonal_naive": values[pos - 7]},
                                       bands={"lower_80": values[pos] - 3, "upper_80": values[pos] + 3})
        rows.append({"store": f"s{i}", "windows": len(first), "model__mase": 0.5 + 0.2 * i,
                     "naive__mase": 1.5, "seasonal_naive__mase": 1.0, "model__smape": 3.0})
    return histories, forecasts, pd.DataFrame(rows)


def test_a_many_series_run_draws_its_loss_worst_or_chosen_series_and_mase_distribution() -> None:
    histories, forecasts, table = panel_of(6)
    figures = plots.panel_figures(histories, forecasts, table, "store", (), 3, ([1.0, 0.5], [1.1, 0.6], 1, "Loss"))
    assert set(figures) == {"plots/loss.png", "plots/series_forecasts.png", "plots/series_mase.png"}
    worst = [ax.get_title() for ax in figures["plots/series_forecasts.png"].axes]
    assert [t.split(":")[0] for t in worst] == ["store s5", "store s4", "store s3"]  # highest MASE first
    assert "test MASE 1.5 (seasonal naive 1)" in worst[0]
    ax = figures["plots/series_forecasts.png"].axes[0]
    assert {"model", "seasonal naive", "80 % interval", "actual"} <= {h.get_label() for h in ax.get_legend_handles_labels()[0]}
    model = [line for line in ax.get_lines() if line.get_label() == "model"][0]
    assert len(model.get_xdata()) == 14  # two 7-step paths end to end cover the 14 test days
    scatter, cdf = figures["plots/series_mase.png"].axes
    assert "Model better on 50% of series" in cdf.get_title()  # ratios 0.5 .. 1.5: three of six below 1
    chosen = plots.panel_figures(histories, forecasts, table, "store", ("s1", "nope"), 3, None)
    assert "plots/loss.png" not in chosen
    assert [a.get_title().split(":")[0] for a in chosen["plots/series_forecasts.png"].axes] == ["store s1"]
    for fig in (*figures.values(), *chosen.values()):
        plots.close(fig)
