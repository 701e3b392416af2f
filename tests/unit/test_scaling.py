"""Cost that grows linearly with the rows, checked by structure (views, calls, allocations), not by timing.

Timings belong to bench/training_loop.py; these tests pin down what makes them linear: windows are
views of one scaled feature matrix, batches are gathered one at a time, validation and scoring run
in bounded batches, and nothing in evaluation allocates more than a few values per window.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import torch
from numpy.lib.array_utils import byte_bounds

from pipeline.config.settings import parse_config
from pipeline.data.contract import validate_prices
from pipeline.evaluation import metrics
from pipeline.features.windows import prepare
from pipeline.model import network, training
from tests.conftest import OHLCV, make_prices

LOOKBACK, FEATURES, HORIZON = 30, 5, 3
PREPROCESS = {"target_transform": "log_return"}  # fixed, not resolved from the data


def config(**train_cfg):
    return parse_config({"data": {"features": list(OHLCV)}, "window": {"lookback": LOOKBACK, "horizon": HORIZON},
                         "preprocess": PREPROCESS,
                         "split": {"train": 0.2, "val": 0.1, "test": 0.7},
                         "model": {"hidden_size": 4, "num_layers": 1},
                         "train": {"epochs": 1, "batch_size": 64, **train_cfg}})


def prepared(n: int, cfg=None):
    cfg = cfg or config()
    frame = validate_prices(make_prices(n), cfg.data, "synthetic", min_rows=1).frame
    return frame, *prepare(frame, cfg)


def peak_bytes(call) -> int:
    """Peak bytes allocated through Python and NumPy while `call` runs, above what was held before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_windows_are_views_of_one_scaled_feature_matrix() -> None:
    frame, _, _, windows = prepared(600)
    train_, val, test = windows["train"], windows["val"], windows["test"]
    # A window's inputs reach back into the split before it: neighbours read the same memory.
    assert np.shares_memory(train_.X, val.X) and np.shares_memory(val.X, test.X)
    bounds = [byte_bounds(w.X) for w in windows.values()]
    span = max(high for _, high in bounds) - min(low for low, _ in bounds)
    assert span <= len(frame) * FEATURES * 4  # all of them inside one float32 (rows, features) matrix
    assert not train_.X.flags.writeable  # a view must not be written through
    for w in windows.values():
        assert w.X.shape == (len(w), LOOKBACK, FEATURES) and w.X.dtype == np.float32


def test_preparing_windows_costs_bytes_per_row_not_per_window_cell() -> None:
    """A copy of every window would cost lookback x features x 4 = 600 bytes per row; views cost the matrix."""
    small = peak_bytes(lambda: prepared(2000))
    large = peak_bytes(lambda: prepared(4000))
    per_row = (large - small) / 2000
    assert per_row < LOOKBACK * FEATURES * 4 / 2, per_row


def test_validation_runs_in_bounded_batches_with_the_one_pass_value() -> None:
    _, _, _, windows = prepared(400)
    val = windows["test"]  # 260-odd windows
    model = training.init_model(config(), n_features=FEATURES)
    sizes: list[int] = []
    model.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].shape[0]))
    loss = training.validation_loss(model, val, torch.device("cpu"), batch=50)
    assert len(sizes) == math.ceil(len(val) / 50) and max(sizes) <= 50
    whole = training.validation_loss(model, val, torch.device("cpu"), batch=len(val))
    assert loss == pytest.approx(whole, rel=1e-6)


def test_fit_gathers_each_batch_from_the_views() -> None:
    _, _, _, windows = prepared(400)
    cfg = config(batch_size=32)
    model = training.init_model(cfg, n_features=FEATURES)
    sizes: list[int] = []
    model.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].shape[0]) if mod.training else None)
    training.fit(model, windows["train"], None, cfg.train)
    assert len(sizes) == math.ceil(len(windows["train"]) / 32) and max(sizes) == 32


def evaluate_split(model, pre, frame, windows) -> None:
    fc = metrics.forecast_split(model, pre, frame, windows["test"], config().evaluate)
    metrics.score(fc)


def test_evaluation_calls_the_model_per_bounded_batch_and_allocates_linearly(monkeypatch) -> None:
    monkeypatch.setattr(training, "EVAL_BATCH", 512)  # several batches at a unit-test size
    monkeypatch.setattr(network.predict_outputs, "__defaults__", (512,))
    cfg = config()
    peaks, calls = {}, {}
    for n in (3000, 6000):
        frame, pre, _, windows = prepared(n)
        model = training.init_model(cfg, n_features=FEATURES)
        sizes: list[int] = []
        model.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].shape[0]))
        peaks[n] = peak_bytes(lambda: evaluate_split(model, pre, frame, windows)) / len(windows["test"])
        calls[n] = sizes
        assert len(sizes) == math.ceil(len(windows["test"]) / 512) and max(sizes) <= 512
    # Bytes per window stay flat as the windows double: no n x n intermediate (that would be
    # 4,000 x 4,000 x 8 bytes = 128 MB, here 2.5 KB per window at most).
    assert peaks[6000] < 2500, peaks
    assert peaks[6000] < 1.3 * peaks[3000], peaks


def test_a_batch_copies_its_own_windows_only() -> None:
    """Gathering a batch must not copy the whole view first (np.take does): per batch, O(batch) bytes."""
    _, _, _, windows = prepared(2000, parse_config({"window": {"lookback": LOOKBACK, "horizon": HORIZON},
                                                    "preprocess": PREPROCESS, "model": {"hidden_size": 4, "num_layers": 1},
                                                    "train": {"epochs": 1, "batch_size": 32}}))
    X = windows["train"].X
    all_windows = len(X) * LOOKBACK * FEATURES * 4
    idx = np.arange(0, len(X), 40)[:32]
    peak = peak_bytes(lambda: training.gather(X, idx))
    assert peak < 4 * 32 * LOOKBACK * FEATURES * 4 < all_windows / 4, (peak, all_windows)
    np.testing.assert_array_equal(training.gather(X, idx).numpy(), np.ascontiguousarray(X)[idx])
