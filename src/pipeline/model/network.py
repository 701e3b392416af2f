"""The forecaster: an LSTM whose head reads the last layer's output at the last time step.

Optionally the network handles its windows itself (what one global model of many series needs):
`input_chunk` rows per LSTM step; `window_norm="log_mean"` feeds log(value / window mean) per
column and predicts the target in those units (instance normalisation, as RevIN or ES-RNN do);
`residual_season` adds the window's last season, repeated, to the head's output, so the head
learns the correction to seasonal naive. Training compares `model(x)` with
`model.target_space(x, y)`; `model.to_units(x, out)` turns outputs back into the preprocessor's
units. Without these options both are the identity and the network is the plain one.

With `quantiles` (probabilities, e.g. 0.1 and 0.9) the head also predicts those quantiles of each step
(trained with the pinball loss beside the point loss): `model(x, with_quantiles=True)` gives
(batch, 1 + Q, horizon), the point forecast first; `model(x)` keeps giving the point forecast alone.

With `calendar` inputs (k columns known ahead, pipeline.features.calendar) each window is
(batch, lookback + lead + horizon - 1, n_features + k): the LSTM reads the features of the first
`lookback` rows, and each step of the horizon adds a linear effect of its own calendar row (k weights
per output, shared by every step: a holiday or an hour of the day counts alike at step 1 and step 48)
to what the head predicts. The features of the rows after the lookback are never read (NaN at
forecast time). Feeding the calendar to the LSTM too, or the horizon's whole calendar to the head,
did worse on validation (docs/bring-your-own-series.md, "Calendar inputs").

`LSTMEnsemble` holds several such networks of one shape (`model.ensemble` members, each from its own seed and
possibly its own loss weighting and residual season) and
answers with the elementwise median of their outputs, quantile heads included: the same interface, one module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pipeline.config.settings import FLAT_FLOOR, FLAT_WINDOW, ModelConfig, member_season, settled
from pipeline.runtime import denormals_flushed, without_denormals

if TYPE_CHECKING:
    from pipeline.features.windows import Preprocessor

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}
MEMBER_SEASONS = "residual_seasons"  # an ensemble's init_args: each member's residual season, where they differ
WINDOW_NORMS = ("none", "log_mean", "standard")


def window_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each window's mean and scale per column (batch, 1, columns): the scale is the sd, or 1 for a flat window
    (sd at most `FLAT_WINDOW` of the mean's size, or `FLAT_FLOOR`), whose values then pass on as changes in their own units."""
    mean = x.mean(dim=1, keepdim=True)
    sd = x.std(dim=1, keepdim=True, unbiased=False)
    flat = sd <= torch.clamp(FLAT_WINDOW * mean.abs(), min=FLAT_FLOOR)
    return mean, torch.where(flat, torch.ones_like(sd), sd)


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
        input_chunk: int = 1,
        window_norm: str = "none",
        residual_season: int = 0,
        target_index: int = 0,
        quantiles: tuple[float, ...] | list[float] = (),
        calendar: int = 0,
        lookback: int = 0,
    ) -> None:
        super().__init__()
        if window_norm not in WINDOW_NORMS:
            raise ValueError(f"unknown window_norm {window_norm!r} (known: {', '.join(WINDOW_NORMS)})")
        self.init_args: dict[str, Any] = {
            "n_features": n_features,
            "horizon": horizon,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "dropout": dropout,
            "head_hidden": list(head_hidden),
            "head_activation": head_activation,
        }
        # the window options are saved only when used: a plain network's saved form stays what it always was
        if calendar and lookback < 1:
            raise ValueError("calendar inputs need the window's lookback (the rows the LSTM reads)")
        options = {"input_chunk": input_chunk, "window_norm": window_norm, "residual_season": residual_season,
                   "target_index": target_index, "quantiles": [float(q) for q in quantiles], "calendar": calendar,
                   "lookback": lookback if calendar else 0}
        defaults = {"input_chunk": 1, "window_norm": "none", "residual_season": 0, "target_index": 0, "quantiles": [],
                    "calendar": 0, "lookback": 0}
        self.init_args.update({k: v for k, v in options.items() if v != defaults[k]})
        self.quantiles = tuple(float(q) for q in quantiles)
        self.input_chunk, self.window_norm = input_chunk, window_norm
        self.residual_season, self.target_index, self.horizon = residual_season, target_index, horizon
        self.n_features, self.calendar, self.lookback = n_features, calendar, lookback
        self.lstm = nn.LSTM(
            input_size=n_features * input_chunk,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        layers: list[nn.Module] = []
        width = hidden_size
        for size in (*head_hidden, horizon * (1 + len(self.quantiles))):
            if head_activation != "none":
                layers.append(_ACTIVATIONS[head_activation]())
            elif dropout > 0 and layers:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(width, size))
            width = size
        self.head = nn.Sequential(*layers)
        if calendar:  # each horizon step's calendar row -> its effect on the point forecast and each quantile
            self.calendar_head = nn.Linear(calendar, 1 + len(self.quantiles), bias=False)

    @property
    def handles_windows(self) -> bool:
        """True when the network normalises its windows or adds a seasonal base (see the module docstring)."""
        return self.window_norm != "none" or self.residual_season > 0

    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        """Each window's mean per column (batch, 1, n_features), kept above zero."""
        return x.mean(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)

    def past(self, x: torch.Tensor) -> torch.Tensor:
        """What the LSTM reads of windows x: all of them, but the lookback's features alone with calendar inputs."""
        return x[:, :self.lookback, :self.n_features] if self.calendar else x

    def forward(self, x: torch.Tensor, with_quantiles: bool = False) -> torch.Tensor:
        """The point forecast (batch, horizon) of windows x (batch, lookback, n_features), or with calendar inputs
        (see the module docstring); `with_quantiles`: everything the head predicts, (batch, 1 + Q, horizon), the
        point forecast, then each of `quantiles`."""
        future = x[:, -self.horizon:, self.n_features:] if self.calendar else None  # (batch, horizon, k)
        x = self.past(x)
        if self.window_norm == "log_mean":
            x = torch.log(x.clamp_min(torch.finfo(x.dtype).tiny) / self._levels(x))
        elif self.window_norm == "standard":
            mean, scale = window_moments(x)
            x = (x - mean) / scale
        steps = x.reshape(x.shape[0], x.shape[1] // self.input_chunk, self.input_chunk * x.shape[2])
        out, _ = self.lstm(steps)  # (batch, steps, hidden): the last layer's output at every step
        forecast = self.head(out[:, -1, :]).reshape(x.shape[0], 1 + len(self.quantiles), self.horizon)
        if future is not None:
            forecast = forecast + self.calendar_head(future).transpose(1, 2)  # (batch, 1 + Q, horizon)
        if self.residual_season:
            season = x[:, -self.residual_season:, self.target_index]
            repeats = -(-self.horizon // self.residual_season)
            forecast = forecast + season.repeat(1, repeats)[:, None, : self.horizon]
        return forecast if with_quantiles else forecast[:, 0]

    def target_space(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Targets y (batch, horizon) in the units `forward` predicts, for the windows x they follow."""
        if self.window_norm == "log_mean":
            level = self._levels(self._target_past(x))[:, :, 0]
            return torch.log(y.clamp_min(torch.finfo(y.dtype).tiny) / level)
        if self.window_norm == "standard":
            mean, scale = window_moments(self._target_past(x))
            return (y - mean[:, :, 0]) / scale[:, :, 0]
        return y

    def to_units(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Outputs of `forward` (batch, horizon), or (batch, 1 + Q, horizon) with quantiles, for windows x back in the units
        of the targets (the inverse of `target_space`)."""
        if self.window_norm == "log_mean":
            level = self._levels(self._target_past(x))  # (batch, 1, 1)
            return torch.exp(out) * level.reshape(-1, *([1] * (out.dim() - 1)))
        if self.window_norm == "standard":
            mean, scale = (m.reshape(-1, *([1] * (out.dim() - 1))) for m in window_moments(self._target_past(x)))
            return out * scale + mean
        return out

    def _target_past(self, x: torch.Tensor) -> torch.Tensor:
        """The target's column of what the LSTM reads, (batch, lookback, 1)."""
        return self.past(x)[:, :, self.target_index: self.target_index + 1]

    @classmethod
    def from_config(cls, cfg: ModelConfig, n_features: int, horizon: int, season: int | None = None,
                    target_index: int = 0, calendar: int = 0, lookback: int = 0) -> LSTMForecaster:
        """The network `cfg` describes; `season` (evaluate.season_length, unless `cfg.residual_season` names
        another) and `target_index` (the target's position among the features) serve the window options, `calendar` inputs need the `lookback`."""
        season = member_season(cfg.residual_season, 0) or season  # a list's first; `member_config` gives each its own
        if cfg.residual_to == "seasonal_naive" and not season:
            raise ValueError("model.residual_to seasonal_naive needs a season length")
        return cls(
            n_features=n_features,
            horizon=horizon,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout,
            head_hidden=cfg.head_hidden,
            head_activation=cfg.head_activation,
            input_chunk=settled(cfg.input_chunk, 1),
            window_norm=settled(cfg.window_norm, "none"),
            residual_season=int(season or 0) if cfg.residual_to == "seasonal_naive" else 0,
            target_index=target_index,
            quantiles=cfg.quantiles,
            calendar=calendar,
            lookback=lookback,
        )

    def checkpoint(self) -> dict[str, Any]:
        """Constructor arguments beside the weights, enough to rebuild the model anywhere (`from_checkpoint`)."""
        return checkpoint_of(self, self.init_args)


class LSTMEnsemble(nn.Module):
    """Networks of one shape trained apart (each from its own seed), combined by the elementwise median of their
    outputs: one module, so every forecast path (evaluation, intervals, serving) takes it as it takes one network.

    The median is taken in the units `forward` predicts (a window-normalised network's log ratios), where every
    member's output means the same thing; `target_space` and `to_units` are the members' own (they share their
    window options). With an even number of members the median is the mean of the middle two.
    """

    def __init__(self, members: list[LSTMForecaster] | nn.ModuleList) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble holds 2 members or more (got {len(members)})")
        shapes = {repr(sorted((k, v) for k, v in m.init_args.items() if k != "residual_season")) for m in members}
        if len(shapes) > 1:
            raise ValueError("an ensemble's members share their constructor arguments (only their weights and the "
                             "season they correct differ)")
        seasons = [m.residual_season for m in members]
        if len(set(seasons)) > 1 and 0 in seasons:
            raise ValueError("an ensemble's members all correct a season or none does")
        self.members = nn.ModuleList(members)
        first = self.members[0]
        self.init_args: dict[str, Any] = {**first.init_args, "members": len(members)}
        if len(set(seasons)) > 1:  # members correcting different seasons (model.residual_season as a list)
            self.init_args[MEMBER_SEASONS] = seasons
        self.quantiles, self.horizon = first.quantiles, first.horizon

    @property
    def handles_windows(self) -> bool:
        return self.members[0].handles_windows

    def forward(self, x: torch.Tensor, with_quantiles: bool = False) -> torch.Tensor:
        """The elementwise median of the members' outputs (`LSTMForecaster.forward`'s shapes)."""
        return median_of(torch.stack([m(x, with_quantiles=with_quantiles) for m in self.members]))

    def target_space(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.members[0].target_space(x, y)

    def to_units(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self.members[0].to_units(x, out)

    def checkpoint(self) -> dict[str, Any]:
        """Constructor arguments (the members' own plus `members`, their count) beside every member's weights."""
        return checkpoint_of(self, self.init_args)


Network = LSTMForecaster | LSTMEnsemble


def checkpoint_of(model: nn.Module, init_args: dict[str, Any]) -> dict[str, Any]:
    """A network's constructor arguments beside its weights (on the CPU): what `from_checkpoint` rebuilds."""
    return {"init_args": dict(init_args), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def median_of(stacked: torch.Tensor) -> torch.Tensor:
    """The median over the first dimension; with an even count, the mean of the middle two."""
    ordered = stacked.sort(dim=0).values
    middle = len(stacked) // 2
    return ordered[middle] if len(stacked) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def build_network(init_args: dict[str, Any]) -> Network:
    """The network (untrained) that saved constructor arguments describe: an ensemble when they name `members`."""
    args = dict(init_args)
    members = args.pop("members", None)
    if members is None:
        return LSTMForecaster(**args)
    if isinstance(members, bool) or not isinstance(members, int) or members < 2:
        raise ValueError(f"members must be a whole number of 2 or more (got {members!r})")
    seasons = args.pop(MEMBER_SEASONS, None)
    if seasons is None:
        return LSTMEnsemble([LSTMForecaster(**args) for _ in range(members)])
    if not isinstance(seasons, list) or len(seasons) != members:
        raise ValueError(f"{MEMBER_SEASONS} must list one season per member ({members}; got {seasons!r})")
    return LSTMEnsemble([LSTMForecaster(**{**args, "residual_season": int(s)}) for s in seasons])


def from_checkpoint(checkpoint: dict[str, Any]) -> Network:
    """The trained network (one, or an ensemble) of a checkpoint (`checkpoint()`'s form), in eval mode."""
    model = build_network(checkpoint["init_args"])
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


# ---------------------------------------------------------------- inference
# Windows per forward pass when scoring (validation loss, predictions): bounds the LSTM's
# activations (batch x lookback x hidden per layer) whatever the size of the data.
EVAL_BATCH = 8192


def as_batch(windows: np.ndarray) -> torch.Tensor:
    """A contiguous, writable float32 copy of some windows (a slice of the views) as a tensor."""
    return torch.from_numpy(np.array(windows, dtype=np.float32, order="C", copy=True))


def predict(model: Network, X: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """Point forecasts (n, horizon) for windows X (n, lookback, n_features), in the preprocessor's (scaled) space
    (`predict_outputs`' first channel)."""
    return predict_outputs(model, X, batch)[:, 0]


def predict_levels(model: Network, pre: Preprocessor, X: np.ndarray,
                   anchors: np.ndarray) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Forecasts of windows X in original units: the point forecasts (n, horizon), and a quantile head's
    forecasts (n, horizon) per probability ({} without a head)."""
    outputs = predict_outputs(model, X)
    tails = {q: pre.to_levels(outputs[:, 1 + i], anchors) for i, q in enumerate(model.quantiles)}
    return pre.to_levels(outputs[:, 0], anchors), tails


def predict_outputs(model: Network, X: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """Everything the head predicts, (n, 1 + Q, horizon) for windows X (n, lookback, n_features), in the
    preprocessor's (scaled) space: the point forecast, then each of the model's `quantiles`.

    `batch` windows per forward pass, so time and memory grow linearly with the windows; run
    with denormal floats flushed (weights decayed below float32's normal range otherwise make
    every multiply slow), and on a copy without denormal weights where flush mode cannot cover
    every thread.
    """
    model.eval()
    if len(X) == 0:
        return np.empty((0, 1 + len(model.quantiles), model.init_args["horizon"]), dtype=np.float32)
    with torch.no_grad(), denormals_flushed() as flushed:
        if not flushed or torch.get_num_threads() > 1:
            model = without_denormals(model)
        parts = []
        for i in range(0, len(X), batch):
            xb = as_batch(X[i:i + batch])
            parts.append(model.to_units(xb, model(xb, with_quantiles=True)).numpy())
    return np.concatenate(parts)
