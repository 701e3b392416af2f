import numpy as np
import pytest
import torch

from pipeline import runtime
from pipeline.config.settings import TrainConfig
from pipeline.errors import TrainingError
from pipeline.features.windows import Windows
from pipeline.model import training
from pipeline.model.network import LSTMForecaster, predict
from pipeline.model.training import fit


def sine_windows(n: int, lookback: int = 8, offset: int = 0) -> Windows:
    t = np.arange(n + lookback + 1) + offset
    series = np.sin(t / 4).astype(np.float32)
    X = np.stack([series[i:i + lookback] for i in range(n)])[:, :, None]
    y = series[lookback:lookback + n].reshape(-1, 1)
    return Windows(X=X, y=y, origins=np.arange(n), target_positions=np.arange(n).reshape(-1, 1))


def model() -> LSTMForecaster:
    torch.manual_seed(0)
    return LSTMForecaster(n_features=1, hidden_size=8, num_layers=2)


def test_training_learns_a_sine_and_records_losses() -> None:
    calls = []
    cfg = TrainConfig(epochs=60, batch_size=16, learning_rate=0.01, patience=None)
    result = fit(model(), sine_windows(64), sine_windows(16, offset=64), cfg,
                 on_epoch_end=lambda e, tl, vl: calls.append((e, tl, vl)))
    assert result.epochs_run == 60 and len(calls) == 60 and calls[-1][0] == 59
    assert result.train_loss[-1] < result.train_loss[0] / 5
    assert len(result.val_loss) == 60


def test_early_stopping_keeps_the_best_weights() -> None:
    train, val = sine_windows(64), sine_windows(16, offset=64)
    cfg = TrainConfig(epochs=300, batch_size=16, learning_rate=0.05, patience=3)
    result = fit(model(), train, val, cfg)
    assert result.stopped_early and result.epochs_run < 300
    assert result.epochs_run == result.best_epoch + 1 + 3
    restored_val = float(np.mean((predict(result.model, val.X) - val.y) ** 2))
    assert restored_val == pytest.approx(min(result.val_loss), rel=1e-5)


def test_same_seed_gives_bit_identical_weights() -> None:
    cfg = TrainConfig(epochs=5, batch_size=8, seed=3)
    a = fit(model(), sine_windows(40), None, cfg).model.state_dict()
    b = fit(model(), sine_windows(40), None, cfg).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_divergence_is_a_clear_error() -> None:
    train = sine_windows(32)
    train.y[5, 0] = np.inf  # a poisoned target makes the loss non-finite
    with pytest.raises(TrainingError, match="diverged at epoch 1"):
        fit(model(), train, None, TrainConfig(epochs=3, batch_size=None))


def test_no_training_window_is_a_clear_error_not_a_division_by_zero() -> None:
    with pytest.raises(TrainingError, match="no training window to train on"):
        fit(model(), Windows(X=np.empty((0, 8, 1), dtype=np.float32), y=np.empty((0, 1), dtype=np.float32),
                             origins=np.empty(0, dtype=np.int64), target_positions=np.empty((0, 1), dtype=np.int64)),
            None, TrainConfig(epochs=3, batch_size=8))


def test_a_validation_loss_never_finite_is_a_clear_error_not_a_crash() -> None:
    val = sine_windows(16, offset=64)
    val.y[3, 0] = np.nan  # every epoch's validation loss is NaN: no best epoch exists
    with pytest.raises(TrainingError, match=r"validation loss was not a finite number in any of the 4 epoch\(s\)"):
        fit(model(), sine_windows(32), val, TrainConfig(epochs=10, batch_size=None, patience=4))


def test_cuda_request_without_cuda_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(TrainingError, match="no CUDA device"):
        fit(model(), sine_windows(8), None, TrainConfig(epochs=1, device="cuda"))


# ---------------------------------------------------------------- denormal floats
DENORMAL = 1e-39  # below float32's smallest normal value (1.18e-38)


def flush_supported() -> bool:
    return torch.set_flush_denormal(False)  # also leaves the mode off for the test


def model_with_denormal_weights(threads_hint: int = 1) -> LSTMForecaster:
    """A model whose input weights of feature 1 are denormal; feature 1 is always 0, so no gradient moves them."""
    m = LSTMForecaster(n_features=2, hidden_size=8, num_layers=1)
    with torch.no_grad():
        m.lstm.weight_ih_l0[:, 1] = DENORMAL
    assert runtime.has_denormals(m.parameters())
    return m


def two_feature_windows(n: int) -> Windows:
    w = sine_windows(n)
    X = np.concatenate([w.X, np.zeros_like(w.X)], axis=2)  # feature 1 is always 0
    return Windows(X=X, y=w.y, origins=w.origins, target_positions=w.target_positions)


@pytest.mark.parametrize("threads", [1, 2])
def test_fit_flushes_denormals_and_restores_the_previous_mode(threads: int) -> None:
    if not flush_supported():
        pytest.skip("this CPU has no flush-to-zero mode")
    modes: list[bool] = []
    cfg = TrainConfig(epochs=2, batch_size=16, weight_decay=0.0, num_threads=threads)
    result = fit(model_with_denormal_weights(), two_feature_windows(48), None, cfg,
                 on_epoch_end=lambda *_: modes.append(runtime.flush_denormal_mode()))
    assert modes == [True, True]
    assert not runtime.flush_denormal_mode()  # the caller's mode (off) is back
    # The weights no gradient moves are 0 now, not denormal: nothing left to slow every multiply.
    assert not runtime.has_denormals(result.model.parameters())
    assert torch.count_nonzero(result.model.lstm.weight_ih_l0[:, 1]) == 0

    torch.set_flush_denormal(True)  # a caller that had it on keeps it on
    try:
        fit(model(), sine_windows(16), None, TrainConfig(epochs=1, batch_size=8))
        assert runtime.flush_denormal_mode()
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.parametrize("threads", [1, 2])
def test_predict_never_multiplies_denormal_weights(threads: int) -> None:
    if not flush_supported():
        pytest.skip("this CPU has no flush-to-zero mode")
    m = model_with_denormal_weights().eval()
    seen: list[tuple[bool, bool]] = []
    m.register_forward_hook(lambda mod, inp, out: seen.append(
        (runtime.flush_denormal_mode(), runtime.has_denormals(mod.parameters()))))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = predict(m, two_feature_windows(20).X, batch=8)
    finally:
        torch.set_num_threads(previous)
    assert out.shape == (20, 1) and len(seen) == 3
    # flush mode on this thread; with other threads too, a copy without the denormal weights
    assert all(flushed for flushed, _ in seen)
    assert all(not denormal for _, denormal in seen) or threads == 1
    assert not runtime.flush_denormal_mode()
    assert runtime.has_denormals(m.parameters())  # the caller's model is left as it was


def test_denormals_flushed_restores_either_mode() -> None:
    if not flush_supported():
        pytest.skip("this CPU has no flush-to-zero mode")
    for before in (False, True):
        torch.set_flush_denormal(before)
        with runtime.denormals_flushed() as supported:
            assert supported and runtime.flush_denormal_mode()
            assert torch.tensor([DENORMAL]).mul(1.0).item() == 0.0
        assert runtime.flush_denormal_mode() == before
    torch.set_flush_denormal(False)


# ---------------------------------------------------------------- the plan stated before training
def test_plan_states_rows_windows_and_time_without_changing_training(tiny_config) -> None:
    from pipeline.data.contract import validate_prices
    from pipeline.features.windows import prepare
    from pipeline.model.network import weights_digest
    from tests.conftest import make_prices

    frame = validate_prices(make_prices(90), tiny_config.data, "synthetic", min_rows=1).frame
    _, _, windows = prepare(frame, tiny_config)
    cfg = tiny_config.train

    def trained(with_plan: bool) -> str:
        m = training.init_model(tiny_config, n_features=windows["train"].X.shape[2])
        if with_plan:
            plan = training.plan_training(m, windows, cfg)
            assert plan.rows == 90 and plan.windows == {s: len(w) for s, w in windows.items()}
            assert plan.batches_per_epoch == -(-len(windows["train"]) // cfg.batch_size)
            assert 0 < plan.seconds_per_epoch < 5 and not plan.long
            line = plan.describe()
            assert "\n" not in line and "90 rows" in line and f"train {len(windows['train'])}" in line
            assert "per epoch" in line
        return weights_digest(fit(m, windows["train"], windows["val"], cfg).model.state_dict())

    assert trained(True) == trained(False)


def test_a_long_plan_says_so() -> None:
    plan = training.TrainingPlan(rows=3_000_000, windows={"train": 2_099_970, "val": 449_970, "test": 449_970},
                              lookback=30, n_features=5, parameters=13_473, batch=64, batches_per_epoch=32_812,
                              epochs=200, threads=1, seconds_per_epoch=230.0)
    assert plan.long
    assert "3,000,000 rows" in plan.describe() and "3.8 min per epoch" not in plan.describe()
    assert "about 4 min per epoch, at most 12.8 h for 200 epochs" in plan.describe()
