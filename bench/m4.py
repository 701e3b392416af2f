"""M4 Hourly through the product: wide files -> long CSV -> `pipeline train` / `pipeline predict` -> M4 scores.

The product sees only the training file (converted to the long format: series id, an hourly
timestamp, value); `pipeline predict` forecasts the 48 hours after each series' last row, and
those forecasts are scored against the official test file with `pipeline.evaluation.metrics.smape` and
`mase` (scale: the training file's in-sample seasonal-naive error, season 24), per series and
then averaged over series, exactly as the competition does. The result is printed beside
reference rows of the published table (`m4_hourly_published.csv`) with our rank among its methods.
The 95 % prediction intervals of the same output (`lower_95`, `upper_95`) are scored the M4 way too:
MSIS (mean interval score over the same seasonal-naive scale) and coverage, beside the published
interval entries (Naive1 71.2, ETS 17.5, ARIMA 7.54, Smyl's hybrid 7.93, Doornik 6.14).

    python bench/m4.py                         # one run with the config's seed
    python bench/m4.py --seeds 1,2,3           # per-seed and mean figures, train wall time, peak memory
    python bench/m4.py --series 40 --seeds 1   # a quick look on a subset

The conversion and the scoring are plain functions (tested in tests/unit/test_m4_bench.py); the
CLI path needs the product's long-format support (`data.series_column`, per-series splits,
`model.strategy: global`), see configs/m4_hourly.yaml.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT / "src"), str(ROOT)) if p not in sys.path]

from pipeline.evaluation.metrics import coverage, mase, mase_scale, msis, smape  # noqa: E402

M4_DIR = ROOT.parent / "shared" / "data" / "m4"
HORIZON, SEASON = 48, 24
SERIES, TIME, VALUE = "series", "timestamp", "value"
REFERENCE_ROWS = ("sNaive", "RNN benchmark", "MLP benchmark", "118 Smyl", "238 Doornik")
INTERVAL_REFERENCE_ROWS = ("Naive1", "ETS", "ARIMA", "118 Smyl", "238 Doornik")  # entries with a published MSIS


# ---------------------------------------------------------------- conversion
def read_wide(path: str | Path) -> dict[str, np.ndarray]:
    """{series id: values in time order} from an M4 wide CSV (first column the id, empty cells padding)."""
    wide = pd.read_csv(path, index_col=0)
    return {str(sid): row.dropna().to_numpy(dtype=float) for sid, row in wide.iterrows()}


def wide_to_long(series: dict[str, np.ndarray], start: str = "2000-01-01 00:00", freq: str = "h") -> pd.DataFrame:
    """Long frame (series, timestamp, value): each series on a synthetic hourly calendar from `start`.

    M4 publishes no timestamps and scores values only, so any regular calendar works; every
    series starts at the same hour, which keeps the file readable.
    """
    parts = [
        pd.DataFrame({SERIES: sid, TIME: pd.date_range(start, periods=len(values), freq=freq), VALUE: values})
        for sid, values in series.items()
    ]
    return pd.concat(parts, ignore_index=True)


def long_to_wide(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The inverse of `wide_to_long`: {series id: values ordered by timestamp}."""
    ordered = frame.sort_values([SERIES, TIME], kind="stable")
    return {str(sid): g[VALUE].to_numpy(dtype=float) for sid, g in ordered.groupby(SERIES, sort=False)}


def forecasts_to_wide(frame: pd.DataFrame, series_column: str = SERIES) -> dict[str, np.ndarray]:
    """{series id: forecasts ordered by step} from `pipeline predict`'s long output
    (`<series column>, origin, step, date, forecast`)."""
    ordered = frame.sort_values([series_column, "step"], kind="stable")
    return {str(sid): g["forecast"].to_numpy(dtype=float) for sid, g in ordered.groupby(series_column, sort=False)}


def bands_to_wide(frame: pd.DataFrame, level: int = 95, series_column: str = SERIES) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{series id: (lower, upper) ordered by step} of one interval level of `pipeline predict`'s output;
    empty when the output carries no intervals."""
    lower, upper = f"lower_{level}", f"upper_{level}"
    if lower not in frame.columns or upper not in frame.columns:
        return {}
    ordered = frame.sort_values([series_column, "step"], kind="stable")
    return {str(sid): (g[lower].to_numpy(dtype=float), g[upper].to_numpy(dtype=float))
            for sid, g in ordered.groupby(series_column, sort=False)}


# ---------------------------------------------------------------- scoring
@dataclass(frozen=True)
class M4Score:
    """Per-series table and the M4 means (over series, not over points)."""

    per_series: pd.DataFrame  # index: series id; columns smape, mase (and msis, coverage with intervals)

    @property
    def smape(self) -> float:
        return float(self.per_series["smape"].mean())

    @property
    def mase(self) -> float:
        return float(self.per_series["mase"].mean())

    @property
    def msis(self) -> float:
        """Mean over series of the 95 % MSIS (NaN without intervals)."""
        return float(self.per_series["msis"].mean()) if "msis" in self.per_series else float("nan")

    @property
    def coverage(self) -> float:
        """Share of all test values inside their 95 % interval (every series has 48: the mean over series)."""
        return float(self.per_series["coverage"].mean()) if "coverage" in self.per_series else float("nan")

    @property
    def acd(self) -> float:
        """M4's absolute coverage difference |coverage - 0.95|."""
        return abs(self.coverage - 0.95)


def score_m4(forecasts: dict[str, np.ndarray], train: dict[str, np.ndarray], test: dict[str, np.ndarray],
             season: int = SEASON, intervals: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> M4Score:
    """sMAPE and MASE of each series' forecast against its test values, MASE scaled by the
    training values' seasonal-naive error; with `intervals` ({series: (lower_95, upper_95)}) also
    MSIS (same scale) and coverage. A series without a full forecast (or interval) is an error."""
    rows = {}
    for sid, actual in test.items():
        pred = forecasts.get(sid)
        if pred is None or len(pred) != len(actual) or not np.all(np.isfinite(pred)):
            raise ValueError(f"series {sid}: expected {len(actual)} finite forecasts, got "
                             f"{'none' if pred is None else len(pred)}")
        scale = mase_scale(train[sid], season)
        rows[sid] = {"smape": smape(actual, pred), "mase": mase(actual, pred, scale)}
        if intervals is not None:
            lower, upper = intervals.get(sid, (np.empty(0), np.empty(0)))
            if len(lower) != len(actual) or not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
                raise ValueError(f"series {sid}: expected {len(actual)} finite 95 % intervals, got {len(lower)}")
            rows[sid].update(msis=msis(actual, lower, upper, scale), coverage=coverage(actual, lower, upper))
    return M4Score(pd.DataFrame.from_dict(rows, orient="index"))


def seasonal_naive(train: dict[str, np.ndarray], horizon: int = HORIZON, season: int = SEASON) -> dict[str, np.ndarray]:
    """The last season repeated: M4's sNaive benchmark, to check the scoring against the table."""
    return {sid: np.resize(v[-season:], horizon) for sid, v in train.items()}


def rank_among(published: pd.DataFrame, smape_value: float, mase_value: float) -> tuple[int, int]:
    """Our rank (1 = best) among the published methods by sMAPE and by MASE."""
    return (int((published["smape"] < smape_value).sum()) + 1, int((published["mase"] < mase_value).sum()) + 1)


def comparison_table(published: pd.DataFrame, ours: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Reference rows of the published table with our rows (name -> (sMAPE, MASE)), sorted by MASE."""
    ref = published[published["method"].isin(REFERENCE_ROWS)][["method", "smape", "mase"]]
    best_ml = published[published["type"].str.fullmatch(r"\s*(ML|Machine Learning)\s*", case=False, na=False)]
    if len(best_ml):
        ref = pd.concat([ref, best_ml.nsmallest(1, "mase")[["method", "smape", "mase"]].assign(
            method=lambda d: d["method"] + " (best pure ML)")])
    mine = pd.DataFrame([{"method": name, "smape": s, "mase": m} for name, (s, m) in ours.items()])
    table = pd.concat([ref, mine], ignore_index=True).sort_values("mase", kind="stable")
    table[["rank_smape", "rank_mase"]] = [rank_among(published, s, m) for s, m in zip(table["smape"], table["mase"])]
    return table.reset_index(drop=True)


def interval_table(published: pd.DataFrame, ours: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """The published entries with a 95 % MSIS (INTERVAL_REFERENCE_ROWS) and our rows (name -> (MSIS, coverage)),
    sorted by MSIS, with the rank by MSIS among every published entry that has one."""
    scored = published[published["msis_95"].notna()]
    ref = scored[scored["method"].isin(INTERVAL_REFERENCE_ROWS)][["method", "msis_95", "acd_95"]]
    ref = ref.rename(columns={"msis_95": "msis", "acd_95": "acd"}).assign(coverage=np.nan)
    mine = pd.DataFrame([{"method": name, "msis": m, "acd": abs(c - 0.95), "coverage": c} for name, (m, c) in ours.items()])
    table = pd.concat([ref, mine], ignore_index=True).sort_values("msis", kind="stable")
    table["rank_msis"] = [int((scored["msis_95"] < m).sum()) + 1 for m in table["msis"]]
    return table.reset_index(drop=True)


# ---------------------------------------------------------------- the product, end to end
@dataclass(frozen=True)
class Usage:
    """What one command took: wall seconds, CPU seconds (user + system: what a busy machine does not inflate
    much) and peak resident memory in MiB."""

    wall: float
    cpu: float
    mib: float

    def __str__(self) -> str:
        return f"{self.wall:.1f} s (CPU {self.cpu:.1f} s)"


class CommandFailed(SystemExit):
    """A product command exited non-zero; `message` is the tail of what it wrote to stderr (its refusal)."""

    def __init__(self, cmd: list[str], code: int, message: str):
        super().__init__(f"{' '.join(cmd)} failed with exit {code}: {message}")
        self.code, self.message = code, message


def stderr_tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of a command's stderr, joined: where the product writes its refusal."""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> Usage:
    """Run a command (its stderr passed on once it ends); what it took.
    Raises `CommandFailed` with the stderr's tail on failure."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    sys.stderr.write(text)
    if proc.returncode:
        raise CommandFailed(cmd, proc.returncode, stderr_tail(text))
    return Usage(time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def run_seed(config: Path, long_csv: Path, seed: int, work: Path,
             name: str = "m4-hourly", parallel: int = 1) -> tuple[pd.DataFrame, Usage, Usage]:
    """`pipeline train` then `pipeline predict` for one seed in a private MLflow store under `work`

    Each seed registers its own model name in that fresh store, so its version is 1 whether or not the
    gate made it @champion (the bench scores every seed, not only a promoted one). `parallel` > 1 trains an
    ensemble's members in that many worker processes (`pipeline train --parallel`).
    """
    import yaml

    cfg = yaml.safe_load(config.read_text())
    cfg.setdefault("train", {})["seed"] = seed
    cfg.setdefault("data", {})["source"] = str(long_csv)
    name = f"{name}-seed{seed}"
    cfg.setdefault("registry", {})["model_name"] = name
    seed_cfg = work / f"{name}.yaml"
    seed_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    pipeline = [sys.executable, "-m", "pipeline.cli"]
    train = _run([*pipeline, "train", "--config", str(seed_cfg), "--force",
                  *(["--parallel", str(parallel)] if parallel > 1 else [])], env, work)
    out = work / f"forecasts_seed{seed}.csv"
    predict = _run([*pipeline, "predict", "--model", f"models:/{name}/1", "--data", str(long_csv),
                         "--out", str(out), "--overwrite"], env, work)
    series_column = cfg.get("data", {}).get("series_column", SERIES)
    return pd.read_csv(out).rename(columns={series_column: SERIES}), train, predict


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "m4_hourly.yaml")
    p.add_argument("--data", type=Path, default=M4_DIR, help="folder with Hourly-train.csv, Hourly-test.csv, "
                   "m4_hourly_published.csv (default: %(default)s)")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="comma-separated seeds (default: the config's train.seed)")
    p.add_argument("--series", type=int, default=0, help="only the first N series (0: all 414)")
    p.add_argument("--keep", type=Path, help="keep the long CSV, configs, store and forecasts here")
    p.add_argument("--parallel", type=int, default=1,
                   help="train an ensemble's members in this many worker processes (default: one after another)")
    args = p.parse_args(argv)

    train, test = read_wide(args.data / "Hourly-train.csv"), read_wide(args.data / "Hourly-test.csv")
    if args.series:
        keep = list(train)[: args.series]
        train, test = {k: train[k] for k in keep}, {k: test[k] for k in keep}
    published = pd.read_csv(args.data / "m4_hourly_published.csv")
    ours: dict[str, tuple[float, float]] = {}
    snaive = score_m4(seasonal_naive(train), train, test)
    ours["seasonal naive (scored here)"] = (snaive.smape, snaive.mase)

    import yaml

    seeds = args.seeds or [int(yaml.safe_load(args.config.read_text()).get("train", {}).get("seed", 42))]
    work = args.keep or Path(tempfile.mkdtemp(prefix="m4-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    long_csv = work / "m4_hourly_train_long.csv"
    wide_to_long(train).to_csv(long_csv, index=False)
    per_seed = []
    ours_intervals: dict[str, tuple[float, float]] = {}
    for seed in seeds:
        output, trained, predicted = run_seed(args.config.resolve(), long_csv, seed, work, parallel=args.parallel)
        bands = bands_to_wide(output)
        score = score_m4(forecasts_to_wide(output), train, test, intervals=bands or None)
        per_seed.append((score.smape, score.mase, trained.wall, predicted.wall, trained.mib, score.msis, score.coverage))
        ours[f"ours, seed {seed}"] = (score.smape, score.mase)
        if bands:
            ours_intervals[f"ours, seed {seed}"] = (score.msis, score.coverage)
        print(f"seed {seed}: sMAPE {score.smape:.3f}  MASE {score.mase:.3f}  MSIS {score.msis:.3f}  "
              f"coverage95 {score.coverage:.4f}  train {trained}  predict {predicted}  peak {trained.mib:.0f} MiB  "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    arr = np.array(per_seed)
    if len(seeds) > 1:
        ours[f"ours, mean of {len(seeds)} seeds"] = (float(arr[:, 0].mean()), float(arr[:, 1].mean()))
        if ours_intervals:
            ours_intervals[f"ours, mean of {len(seeds)} seeds"] = (float(arr[:, 5].mean()), float(arr[:, 6].mean()))
    print(f"mean over {len(seeds)} seed(s): sMAPE {arr[:, 0].mean():.3f}  MASE {arr[:, 1].mean():.3f}  "
          f"MSIS {arr[:, 5].mean():.3f}  coverage95 {arr[:, 6].mean():.4f}  "
          f"train {arr[:, 2].mean():.0f} s (max {arr[:, 2].max():.0f})  predict {arr[:, 3].mean():.1f} s  "
          f"peak {arr[:, 4].max():.0f} MiB  (targets: MASE <= 0.95, sMAPE <= 10.5; train < 600 s; "
          "MSIS <= 7.5, |coverage95 - 0.95| <= 0.02)")
    print(f"\nM4 Hourly, {len(test)} series, horizon {HORIZON}; published ranks among {len(published)} methods\n")
    print(comparison_table(published, ours).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if ours_intervals:
        print(f"\n95 % prediction intervals (MSIS: M4's mean scaled interval score; ACD |coverage - 0.95|); "
              f"ranks among the {int(published['msis_95'].notna().sum())} published entries with an MSIS\n")
        print(interval_table(published, ours_intervals).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.keep is None:
        print(f"\n(work files in {work})")


if __name__ == "__main__":
    main()
