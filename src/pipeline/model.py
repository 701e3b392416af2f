"""The forecaster: an LSTM whose head reads the last layer's output at the last time step."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.config import ModelConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class LSTMForecaster(nn.Module):
    """LSTM encoder + MLP head predicting `horizon` values at once (direct multi-step).

    With `head_activation` set, the activation is applied to the LSTM output before each
    linear layer of the head (the tutorial's `relu -> Linear(2,128) -> relu -> Linear(128,1)`).
    """

    def __init__(
        self,
        n_features: int,
        horizon: int = 1,
        hidden_size: int = 32,
        num_layers: int = 1,
        dropout: float = 0.0,
        head_hidden: tuple[int, ...] | list[int] = (),
        head_activation: str = "none",
    ) -> None:
        super().__init__()
        self.init_args: dict[str, Any] = {
            "n_features": n_features,
            "horizon": horizon,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "dropout": dropout,
            "head_hidden": list(head_hidden),
            "head_activation": head_activation,
        }
        self.lstm = nn.LSTM(
            input_size=n_features,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        layers: list[nn.Module] = []
        width = hidden_size
        for size in (*head_hidden, horizon):
            if head_activation != "none":
                layers.append(_ACTIVATIONS[head_activation]())
            elif dropout > 0 and layers:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(width, size))
            width = size
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, lookback, n_features)
        out, _ = self.lstm(x)  # (batch, lookback, hidden): the last layer's output at every step
        return self.head(out[:, -1, :])  # (batch, horizon)

    @classmethod
    def from_config(cls, cfg: ModelConfig, n_features: int, horizon: int) -> LSTMForecaster:
        return cls(
            n_features=n_features,
            horizon=horizon,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout,
            head_hidden=cfg.head_hidden,
            head_activation=cfg.head_activation,
        )

    def checkpoint(self) -> dict[str, Any]:
        """Constructor arguments beside the weights, enough to rebuild the model anywhere."""
        return {"init_args": dict(self.init_args), "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> LSTMForecaster:
        model = cls(**checkpoint["init_args"])
        model.load_state_dict(checkpoint["state_dict"])
        model.eval()
        return model


def weights_digest(state_dict: dict[str, Any]) -> str:
    """sha256 (first 16 hex digits) over every tensor's name, dtype, shape and bytes: equal weights, equal digests."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for name in sorted(state_dict):
        array = np.ascontiguousarray(state_dict[name].detach().cpu().numpy())
        h.update(f"{name}:{array.dtype}:{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()[:16]
