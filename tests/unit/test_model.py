import pytest
import torch

from pipeline.config.settings import ModelConfig
from pipeline.model.network import LSTMForecaster, from_checkpoint


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("horizon", [1, 5])
def test_output_shape_for_any_number_of_layers(layers: int, horizon: int) -> None:
    model = LSTMForecaster(n_features=4, horizon=horizon, hidden_size=6, num_layers=layers, dropout=0.2)
    out = model(torch.randn(7, 12, 4))  # (batch, lookback, n_features)
    assert out.shape == (7, horizon)


def test_head_reads_the_last_layers_output_at_the_last_step() -> None:
    torch.manual_seed(0)
    model = LSTMForecaster(n_features=2, hidden_size=4, num_layers=3).eval()
    x = torch.randn(3, 10, 2)
    _, (h_n, _) = model.lstm(x)  # h_n: (num_layers, batch, hidden)
    assert torch.allclose(model(x), model.head(h_n[-1]))
    assert not torch.allclose(model(x), model.head(h_n[0]))


def test_tutorial_head_is_relu_linear_relu_linear() -> None:
    cfg = ModelConfig(hidden_size=2, num_layers=1, head_hidden=(128,), head_activation="relu")
    model = LSTMForecaster.from_config(cfg, n_features=5, horizon=1)
    kinds = [type(m).__name__ for m in model.head]
    assert kinds == ["ReLU", "Linear", "ReLU", "Linear"]
    assert (model.head[1].in_features, model.head[1].out_features, model.head[3].out_features) == (2, 128, 1)


def test_checkpoint_round_trip_gives_identical_predictions() -> None:
    model = LSTMForecaster(n_features=3, horizon=2, hidden_size=5, num_layers=2, head_hidden=(4,), head_activation="tanh")
    model.eval()
    x = torch.randn(4, 6, 3)
    clone = from_checkpoint(model.checkpoint())
    assert torch.equal(model(x), clone(x))
