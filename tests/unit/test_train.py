import numpy as np
import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.errors import TrainingError
from pipeline.features import Windows
from pipeline.model import LSTMForecaster
from pipeline.train import fit, predict


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


def test_cuda_request_without_cuda_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(TrainingError, match="no CUDA device"):
        fit(model(), sine_windows(8), None, TrainConfig(epochs=1, device="cuda"))
