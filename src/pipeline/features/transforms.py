"""Target and feature transforms (level, log, difference, log return) and the values each one needs.

A transform is applied before scaling and inverted after the model; the differencing ones need
the last known level of each window as their anchor.
"""

from __future__ import annotations

import numpy as np

from pipeline.config.settings import PipelineConfig, Transform
from pipeline.errors import ConfigError

DIFFERENCING: frozenset[str] = frozenset({"difference", "log_return"})

LOGS: frozenset[str] = frozenset({"log", "log_return"})  # transforms defined for values > 0 only


def transform_domain(cfg: PipelineConfig) -> dict[str, str]:
    """Columns whose transform takes a log -> the rule their values must meet (> 0), naming a transform that works.

    Checked with the data contract, before anything is fit: a log of a value <= 0 would surface
    much later as infinities inside a scaler or as a diverging loss.
    """
    pre = cfg.preprocess
    wanted = [(c, pre.transform_for(c), f"preprocess.feature_transforms.{c}" if c in pre.feature_transforms
               else "preprocess.default_feature_transform") for c in cfg.data.features]
    wanted.insert(0, (cfg.data.target, pre.target_transform, "preprocess.target_transform"))
    out: dict[str, str] = {}
    for column, kind, key in wanted:
        if kind in LOGS and column not in out:
            out[column] = (f"> 0 for the {kind} transform ({key}): the log of a value <= 0 is undefined; "
                           "the difference transform works on any values")
    if cfg.model.window_norm == "log_mean":
        for column in cfg.data.features:
            out.setdefault(column, "> 0 for model.window_norm log_mean (the log of value / window mean); "
                                   "model.window_norm none with the difference transform works on any values")
    return out


def apply_transform(values: np.ndarray, kind: Transform) -> np.ndarray:
    """Transform a 1-d series; differencing transforms leave NaN in the first row."""
    values = np.asarray(values, dtype=float)
    if kind == "level":
        return values.copy()
    if kind == "log":
        return np.log1p(values)
    out = np.full_like(values, np.nan)
    if kind == "difference":
        out[1:] = np.diff(values)
    elif kind == "log_return":
        with np.errstate(divide="ignore", invalid="ignore"):
            out[1:] = np.diff(np.log(values))
    else:
        raise ConfigError(f"unknown transform {kind!r}")
    return out


def invert_transform(steps: np.ndarray, anchors: np.ndarray, kind: Transform) -> np.ndarray:
    """Rebuild levels from transformed values of H consecutive steps.

    `steps` is (n, H) in the transformed space; `anchors` (n,) the last known level before the
    first step. Exact inverse of `apply_transform` for every kind.
    """
    steps = np.asarray(steps, dtype=float)
    anchors = np.asarray(anchors, dtype=float).reshape(-1, 1)
    if kind == "level":
        return steps.copy()
    if kind == "log":
        return np.expm1(steps)
    if kind == "difference":
        return anchors + np.cumsum(steps, axis=1)
    if kind == "log_return":
        return anchors * np.exp(np.cumsum(steps, axis=1))
    raise ConfigError(f"unknown transform {kind!r}")
