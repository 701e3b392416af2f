"""Helpers shared by the benchmarks: data sets, windows, repeat statistics and table printing."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path[:0] = [p for p in (str(ROOT / "src"), str(ROOT)) if p not in sys.path]

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def data_path(name: str) -> Path | None:
    """`data/NAME.csv` in the repo, else `../shared/data/NAME.csv`, else None (the bench skips it)."""
    for folder in (ROOT / "data", SHARED_DATA):
        path = folder / f"{name}.csv"
        if path.is_file():
            return path
    return None


def synthetic_prices(n: int, seed: int = 0, freq: str = "B"):
    """A Yahoo-format frame of `n` rows a `freq` apart (business days by default; "min" for the
    large sizes, whose days would run past the year 2261): a geometric random walk that obeys the
    data contract."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0002, 0.015, n)))
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0, 0.004, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0.001, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0.001, 0.01, n))
    dates = pd.bdate_range("1900-01-01", periods=n) if freq == "B" else pd.date_range("2000-01-01", periods=n, freq=freq)
    return pd.DataFrame({
        "Date": dates.strftime("%Y-%m-%d" if freq == "B" else "%Y-%m-%d %H:%M:%S"), "Open": open_, "High": high, "Low": low, "Close": close,
        "Adj Close": close, "Volume": rng.integers(1_000_000, 9_000_000, n).astype(float),
    })


def load_frame(source: str | Path | None, cfg, rows: int | None = None, freq: str = "B"):
    """Validated, date-indexed rows from a CSV (or `rows` synthetic ones `freq` apart), as the flow gets them."""
    from pipeline.data.contract import validate_prices
    from pipeline.data.reading import load_prices
    from pipeline.features.windows import min_rows_needed

    if source is None:
        raw, name = synthetic_prices(rows or 40_000, freq=freq).astype(str), f"synthetic-{rows}"  # text, as a CSV reads
    else:
        raw, name = load_prices(str(source)).frame, str(source)
    return validate_prices(raw, cfg.data, name, min_rows=min_rows_needed(cfg)).frame


def prepare(frame, cfg):
    """Preprocessor, split bounds and windows, as the flow's split/scale stage makes them."""
    from pipeline.features import windows

    return windows.prepare(frame, cfg)


def default_config(**sections):
    from pipeline.config.settings import load_config

    cfg = load_config(ROOT / "configs" / "default.yaml")
    return cfg.with_overrides(**sections) if sections else cfg


def timeit(call: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    out = call()
    return time.perf_counter() - started, out


def stats(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def fmt_range(values: Sequence[float], digits: int = 3, scale: float = 1.0) -> str:
    med, lo, hi = stats([v * scale for v in values])
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain-text table; first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print(line)
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print(line)
    print(line)


def machine_note() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = "load %.2f %.2f %.2f" % os.getloadavg()
    except (AttributeError, OSError):
        load = "load n/a"
    import torch

    return f"{cores} cores, {load}, torch {torch.__version__}, default threads {torch.get_num_threads()}"


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group we started (a server and its children), then SIGKILL."""
    from pipeline.tracking.server import stop_process_group

    stop_process_group(process, timeout=15)
