"""The baselines every model is held to (persistence, drift, moving average, seasonal naive) and their names.

Plain numpy from the values known at each origin; the gate and the reports name them with `baseline_words`.
"""

from __future__ import annotations

import numpy as np

from pipeline.config.settings import EvaluateConfig

BASELINE_WORDS = {"naive": "persistence", "seasonal_naive": "seasonal naive", "drift": "drift",
                  "moving_average": "moving average"}  # the baselines' metric ids -> their names in messages


def baseline_words(baseline: str) -> str:
    """A baseline's name in messages ("seasonal naive" for `seasonal_naive`)."""
    return BASELINE_WORDS.get(baseline, baseline.replace("_", " "))


def baseline_forecasts(
    levels: np.ndarray, last_known: np.ndarray, horizon: int, cfg: EvaluateConfig | None = None
) -> dict[str, np.ndarray]:
    """Each configured baseline's (n, horizon) forecasts, built only from values known at each origin.

    `last_known` (n,) is the position of the last known value of each window (its anchor); step h
    forecasts position `last_known + h`. Only `levels[: last_known + 1]` is ever read. Rows whose
    history is too short for a baseline get NaN (a position of -1 means nothing is known yet).
    """
    cfg = cfg or EvaluateConfig()
    levels = np.asarray(levels, dtype=float)
    pos = np.asarray(last_known, dtype=int)
    known = pos >= 0
    safe = np.where(known, pos, 0)
    steps = np.arange(1, horizon + 1)[None, :]  # (1, H)
    last = np.where(known, levels[safe], np.nan)[:, None]  # (n, 1)
    out: dict[str, np.ndarray] = {}
    for name in cfg.baselines:
        if name == "naive":
            fc = np.repeat(last, horizon, axis=1)
        elif name == "drift":
            # The line through the first and the last known value, extended h steps.
            with np.errstate(divide="ignore", invalid="ignore"):
                slope = np.where(safe > 0, (levels[safe] - levels[0]) / np.maximum(safe, 1), 0.0)
            fc = last + slope[:, None] * steps
        elif name == "moving_average":
            window = cfg.moving_average_window
            csum = np.concatenate([[0.0], np.cumsum(levels)])
            lo = np.maximum(safe + 1 - window, 0)
            mean = (csum[safe + 1] - csum[lo]) / (safe + 1 - lo)
            fc = np.repeat(np.where(known, mean, np.nan)[:, None], horizon, axis=1)
        elif name == "seasonal_naive":
            m = cfg.season_length
            if not isinstance(m, int):  # None: no season
                continue
            # The value one season before each target: position p + h - m * ceil(h / m) <= p.
            src = pos[:, None] + steps - m * np.ceil(steps / m).astype(int)
            fc = np.where(src >= 0, levels[np.maximum(src, 0)], np.nan)
        else:  # pragma: no cover - the config's Literal rules this out
            raise ValueError(f"unknown baseline {name!r}")
        out[name] = np.where(known[:, None], fc, np.nan)
    return out
