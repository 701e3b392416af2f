"""The run's figures say what a reader needs: persistence beside the model, readable axes, distinct colours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import plots
from pipeline.evaluate import Forecasts


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
