"""Scalers fit on the training rows only (standard and min-max), and their JSON form in a model.

They hold the same fitted attributes as scikit-learn's `StandardScaler` and `MinMaxScaler`
(tested against them), in plain numpy so that a served model needs no scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from pipeline.config.settings import ScalerKind
from pipeline.errors import ConfigError


@dataclass(frozen=True, eq=False)
class StandardScaling:
    """A fitted standard scaler as plain numbers (scikit-learn's StandardScaler attribute names).

    Fitted and applied here with scikit-learn's arithmetic (the same numbers, bit for bit; a test
    checks), so a saved model needs only these numbers, never a pickled scikit-learn object.
    """

    mean_: np.ndarray
    scale_: np.ndarray
    var_: np.ndarray
    n_samples_seen_: np.ndarray

    kind: ClassVar[str] = "standard"

    def transform(self, values: np.ndarray) -> np.ndarray:
        out = _float_copy(values)
        out -= self.mean_
        out /= self.scale_
        return out

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        out = _float_copy(values)
        out *= self.scale_
        out += self.mean_
        return out


@dataclass(frozen=True, eq=False)
class MinMaxScaling:
    """A fitted min-max scaler as plain numbers (scikit-learn's MinMaxScaler attribute names)."""

    min_: np.ndarray
    scale_: np.ndarray
    data_min_: np.ndarray
    data_max_: np.ndarray
    data_range_: np.ndarray
    n_samples_seen_: np.ndarray
    feature_range: tuple[float, float] = (0.0, 1.0)

    kind: ClassVar[str] = "minmax"

    def transform(self, values: np.ndarray) -> np.ndarray:
        out = _float_copy(values)
        out *= self.scale_
        out += self.min_
        return out

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        out = _float_copy(values)
        out -= self.min_
        out /= self.scale_
        return out


Scaling = StandardScaling | MinMaxScaling
_SCALINGS: dict[str, type[StandardScaling] | type[MinMaxScaling]] = {"standard": StandardScaling, "minmax": MinMaxScaling}


def _float_copy(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return values.astype(values.dtype if values.dtype.kind == "f" else np.float64, copy=True)


def _nonzero_scale(scale: np.ndarray) -> np.ndarray:
    """A scale near 0 (a constant column) becomes 1, so it is not divided by (scikit-learn's rule)."""
    scale = np.array(scale, dtype=np.float64)
    scale[scale < 10 * np.finfo(scale.dtype).eps] = 1.0
    return scale


def _fit_standard(values: np.ndarray) -> StandardScaling:
    """scikit-learn StandardScaler's fit, the same float64 arithmetic (so the same numbers, bit for bit).

    Computed here: importing scikit-learn costs every command about a second of start-up.
    NaN cells are ignored, per column.
    """
    x = np.asarray(values)
    nan = np.isnan(x)
    total = np.nansum(x, axis=0, dtype=np.float64)
    count = x.shape[0] - np.sum(nan, axis=0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / count
        centred = x - mean
        centred[nan] = 0.0
        correction = np.sum(centred, axis=0, dtype=np.float64)
        unnormalised = np.sum(centred**2, axis=0, dtype=np.float64) - correction**2 / count
        var = unnormalised / count
    seen = count.astype(np.int64)
    return StandardScaling(mean_=mean, scale_=_nonzero_scale(np.sqrt(var)), var_=var,
                           n_samples_seen_=np.asarray(seen[0] if np.ptp(seen) == 0 else seen))


def _fit_minmax(values: np.ndarray, feature_range: tuple[float, float] = (0.0, 1.0)) -> MinMaxScaling:
    """scikit-learn MinMaxScaler's fit, the same arithmetic (NaN cells ignored)."""
    x = np.asarray(values)
    data_min, data_max = np.nanmin(x, axis=0), np.nanmax(x, axis=0)
    data_range = data_max - data_min
    scale = (feature_range[1] - feature_range[0]) / _nonzero_scale(data_range)
    return MinMaxScaling(min_=feature_range[0] - data_min * scale, scale_=scale, data_min_=data_min,
                         data_max_=data_max, data_range_=data_range, n_samples_seen_=np.asarray(x.shape[0]),
                         feature_range=feature_range)


def fit_scaler(kind: ScalerKind, values: np.ndarray) -> Scaling | None:
    """Fit a scaler of `kind` on (rows, columns) values, taken as float64; None for "none"."""
    if kind == "none":
        return None
    if kind not in _SCALINGS:
        raise ConfigError(f"unknown scaler {kind!r}")
    values = np.asarray(values, dtype=np.float64)
    return _fit_standard(values) if kind == "standard" else _fit_minmax(values)


def scaler_to_dict(scaler: Scaling | None) -> dict[str, Any]:
    """{"kind": ..., and each fitted number as a list}: what a saved model stores."""
    if scaler is None:
        return {"kind": "none"}
    out: dict[str, Any] = {"kind": scaler.kind}
    for name in (f.name for f in fields(scaler)):
        value = getattr(scaler, name)
        out[name] = list(value) if name == "feature_range" else np.asarray(value).tolist()
    return out


def scaler_from_dict(data: dict[str, Any]) -> Scaling | None:
    """The scaler `scaler_to_dict` wrote (float64 numbers, exactly as fitted)."""
    kind = data.get("kind")
    if kind == "none":
        return None
    if kind not in _SCALINGS:
        raise ValueError(f"unknown scaler kind {kind!r} (known: none, {', '.join(_SCALINGS)})")
    scaling = _SCALINGS[kind]
    values: dict[str, Any] = {}
    for name in (f.name for f in fields(scaling)):
        if name == "feature_range":
            values[name] = tuple(float(v) for v in data.get(name, (0.0, 1.0)))
        else:
            values[name] = np.asarray(data[name], dtype=np.int64 if name == "n_samples_seen_" else np.float64)
    return scaling(**values)
