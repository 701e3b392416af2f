"""The benchmark suite: M3 yearly, quarterly and monthly and M4 Hourly, the product and its peers in one command.

For each set the product is trained through `pipeline train` and forecast through `pipeline predict`
(the CLI, as a user runs it: `bench/m4.py`'s `run_seed`) on the training file only, with a config
that names only the columns, the horizon and the held-out tail (everything else `auto`:
`minimal_config`); on M4 Hourly the hand-tuned `configs/m4_hourly.yaml` runs too, as a reference.
statsforecast's AutoETS, AutoTheta, AutoARIMA, SeasonalNaive and Naive run on the same training
series in the same command, with their 80 and 95 % intervals. Everything is scored against the
held-out files the M4 way (`bench/m4.py`'s `score_m4`: sMAPE, MASE with the set's season, MSIS of
the 95 % interval, coverage) plus the 80 % coverage, averaged over series. Wall and CPU time
(this process and its children) are measured for every method.

    .venv/bin/python bench/suite.py                                   # everything, 3 seeds (hours on 2 cores)
    .venv/bin/python bench/suite.py --sets m3-yearly --series 50      # a quick look
    .venv/bin/python bench/suite.py --render                          # docs/benchmarks.md from the results file

A set the product refuses (a config `auto` cannot serve) is recorded with the refusal message as
its result, and the suite goes on. Each finished method is written at once to the results CSV
(`bench/results/suite.csv`; `suite-sample.csv` with `--series`), whose rows of the methods run replace
the earlier ones on their sets; runs of whole sets also regenerate docs/benchmarks.md between the suite's markers.
The peers run in their own environment (statsforecast pins pandas < 3; `make bench-deps` makes .venv-bench with
the `bench` extra's pin) through bench/peers.py; the data stay in `../shared/data/` (converted or subsampled
copies go to a temporary work folder, never into the project).
"""

from __future__ import annotations

import argparse
import fcntl
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT / "src"), str(ROOT)) if p not in sys.path]

from bench.m4 import (  # noqa: E402
    SERIES,
    TIME,
    VALUE,
    CommandFailed,
    bands_to_wide,
    forecasts_to_wide,
    long_to_wide,
    read_wide,
    run_seed,
    score_m4,
    stderr_tail,
    wide_to_long,
)
from bench.peers import MODELS as PEERS  # noqa: E402
from pipeline.evaluation.metrics import coverage  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- suite:begin (bench/suite.py writes this part) -->", "<!-- suite:end -->"
LEVELS = (80, 95)
TRIO = ("AutoETS", "AutoTheta", "AutoARIMA")
COMBINED = "mean of AutoETS, AutoTheta, AutoARIMA"
SLOW_PEERS = ("AutoARIMA",)  # run after every set's other methods: hours of CPU on the long seasonal series
PRODUCT_AUTO = "product, auto config"
PRODUCT_TUNED = "product, configs/m4_hourly.yaml"


@dataclass(frozen=True)
class BenchSet:
    """One benchmark: where its files are, its horizon, season and calendar."""

    name: str
    title: str
    folder: str        # under the data folder
    train_file: str
    test_file: str
    horizon: int
    season: int
    freq: str          # the calendar as a pandas offset alias (statsforecast's `freq`)
    wide: bool = False  # M4: wide files without dates (bench/m4.py converts them)
    tuned_config: str | None = None  # a hand-tuned config run beside the auto one


SETS = {s.name: s for s in (
    BenchSet("m3-yearly", "M3 yearly", "m3", "yearly-train.csv", "yearly-test.csv", 6, 1, "YS"),
    BenchSet("m3-quarterly", "M3 quarterly", "m3", "quarterly-train.csv", "quarterly-test.csv", 8, 4, "QS"),
    BenchSet("m3-monthly", "M3 monthly", "m3", "monthly-train.csv", "monthly-test.csv", 18, 12, "MS"),
    BenchSet("m4-hourly", "M4 Hourly", "m4", "Hourly-train.csv", "Hourly-test.csv", 48, 24, "h", wide=True,
             tuned_config="configs/m4_hourly.yaml"),
)}

# Figures not run here, quoted beside the tables: ../shared/data/m3/README.md (statsforecast 2.1.1 measured on the
# same files with the M4 definitions; N-BEATS' Table 14 with M3's own sMAPE) and m4_hourly_published.csv (below).
M3_REFERENCES = {
    "m3-yearly": "README (statsforecast, M4 definitions): AutoETS 16.190 / 2.695 (95 % coverage 0.836), "
                 "AutoTheta 16.618 / 2.598, mean of three 15.738 / 2.601, naive 17.880 / 3.172; published sMAPE "
                 "(M3 definition): Theta 16.90, ForecastPro 17.14, N-BEATS-I+G 15.93",
    "m3-quarterly": "README (statsforecast, M4 definitions): AutoETS 9.447 / 1.143 (95 % coverage 0.857), "
                    "AutoTheta 9.264 / 1.103, mean of three 9.118 / 1.075; published sMAPE (M3 definition): "
                    "Theta 8.96, ForecastPro 9.77, N-BEATS-I+G 8.84",
    "m3-monthly": "README (statsforecast, M4 definitions): AutoETS 14.164 / 0.863 (95 % coverage 0.897), "
                  "AutoTheta 14.973 / 0.861, AutoARIMA 15.224 / 0.876, mean of three 13.856 / 0.829, seasonal naive "
                  "17.239 / 1.146; published sMAPE (M3 definition): Theta 13.85, ForecastPro 13.86, N-BEATS-I+G 13.11",
}
M4_REFERENCE_ROWS = ("238 Doornik", "118 Smyl", "sNaive", "Naive1", "ARIMA", "ETS")


# ---------------------------------------------------------------- data
@dataclass(frozen=True)
class BenchData:
    """One set's series: the long training table the product reads, and {series: values} for scoring."""

    spec: BenchSet
    long: pd.DataFrame                  # columns series, timestamp, value
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    source: Path | None                 # the training file as it is, when the product can read it directly


def read_long(path: Path) -> pd.DataFrame:
    """An M3 file (`series,date,value`) as (series, timestamp, value) with parsed dates."""
    frame = pd.read_csv(path, dtype={"series": str})
    missing = {"series", "date", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: columns {sorted(missing)} missing (expected series,date,value)")
    frame = frame.rename(columns={"series": SERIES, "date": TIME, "value": VALUE})
    return frame.assign(**{TIME: pd.to_datetime(frame[TIME])})


def spread_series(values: dict[str, np.ndarray], n: int) -> list[str]:
    """n series ids evenly spread over the file (all with n <= 0): the files are grouped by kind and length
    (M3 monthly opens with its shortest series), so the first n would be no sample of the set."""
    ids = list(values)
    if n <= 0 or n >= len(ids):
        return ids
    return [ids[i] for i in np.linspace(0, len(ids) - 1, n).round().astype(int)]


def load_set(spec: BenchSet, data_dir: Path, series: int = 0) -> BenchData:
    """Read a set's training and held-out files; with `series` only N of them, spread over the training file."""
    folder = data_dir / spec.folder
    if spec.wide:
        train, test = read_wide(folder / spec.train_file), read_wide(folder / spec.test_file)
        keep = spread_series(train, series)
        train, test = {k: train[k] for k in keep}, {k: test[k] for k in keep}
        return BenchData(spec, wide_to_long(train, freq=spec.freq), train, test, None)
    long, held = read_long(folder / spec.train_file), read_long(folder / spec.test_file)
    train, test = long_to_wide(long), long_to_wide(held)
    keep = spread_series(train, series)
    if series > 0:
        long = long[long[SERIES].isin(keep)]
    lost = [k for k in keep if k not in test]
    if lost:
        raise ValueError(f"{folder / spec.test_file}: no held-out values for series {lost[:5]}")
    return BenchData(spec, long.reset_index(drop=True), {k: train[k] for k in keep}, {k: test[k] for k in keep},
                     None if series > 0 else folder / spec.train_file)


def date_column(spec: BenchSet) -> str:
    """The date column of the set's long table as a user has it: M3's `date`, bench/m4.py's `timestamp`."""
    return TIME if spec.wide else "date"


def minimal_config(spec: BenchSet, name: str) -> dict:
    """The config a user writes who names only the columns, the horizon and the held-out tail; all else `auto`.

    The tail is docs/many-series.md's `split: {val: H, test: H}` (a split counted from the end needs both);
    the M3 files name their date column `date`, bench/m4.py's long M4 table `timestamp`."""
    return {
        "name": name,
        "data": {"series_column": SERIES, "date_column": date_column(spec),
                 "target": VALUE, "features": [VALUE]},
        "window": {"horizon": spec.horizon},
        "split": {"val": spec.horizon, "test": spec.horizon},
    }


# ---------------------------------------------------------------- scoring
@dataclass(frozen=True)
class Scores:
    smape: float
    mase: float
    msis: float
    cov80: float
    cov95: float


def score_forecasts(forecasts: dict[str, np.ndarray], bands: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]],
                    train: dict[str, np.ndarray], test: dict[str, np.ndarray], season: int) -> Scores:
    """bench/m4.py's M4 scores (sMAPE, MASE, 95 % MSIS and coverage) and the 80 % coverage, means over series.
    Missing intervals score NaN; a series without a full forecast is an error."""
    m4 = score_m4(forecasts, train, test, season=season, intervals=bands.get(95) or None)
    cov80 = float("nan")
    if bands.get(80):
        per_series = []
        for sid, actual in test.items():
            lower, upper = bands[80].get(sid, (np.empty(0), np.empty(0)))
            if len(lower) != len(actual):
                raise ValueError(f"series {sid}: expected {len(actual)} 80 % intervals, got {len(lower)}")
            per_series.append(coverage(actual, lower, upper))
        cov80 = float(np.mean(per_series))
    return Scores(m4.smape, m4.mase, m4.msis, cov80, m4.coverage)


def product_output(frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[int, dict]]:
    """Point forecasts and {level: bands} of `pipeline predict`'s output (series column already `series`)."""
    return forecasts_to_wide(frame), {level: bands_to_wide(frame, level) for level in LEVELS}


def peer_output(frame: pd.DataFrame, alias: str) -> tuple[dict[str, np.ndarray], dict[int, dict]]:
    """Point forecasts and {level: bands} of one statsforecast model in `StatsForecast.forecast`'s frame
    (`unique_id, ds, <alias>, <alias>-lo-80, <alias>-hi-80, ...`), through the product's output shape."""
    renamed = {"unique_id": SERIES, alias: "forecast"}
    for level in LEVELS:
        renamed |= {f"{alias}-lo-{level}": f"lower_{level}", f"{alias}-hi-{level}": f"upper_{level}"}
    ordered = frame.sort_values(["unique_id", "ds"], kind="stable").rename(columns=renamed)
    ordered = ordered.assign(**{SERIES: ordered[SERIES].astype(str), "step": ordered.groupby(SERIES).cumcount() + 1})
    return product_output(ordered)


def combine(outputs: Sequence[tuple[dict[str, np.ndarray], dict[int, dict]]]) -> tuple[dict, dict]:
    """The mean of several methods' forecasts and of their interval bounds, series by series."""
    points = {sid: np.mean([o[0][sid] for o in outputs], axis=0) for sid in outputs[0][0]}
    bands = {}
    for level in LEVELS:
        if all(o[1].get(level) for o in outputs):
            bands[level] = {sid: (np.mean([o[1][level][sid][0] for o in outputs], axis=0),
                                  np.mean([o[1][level][sid][1] for o in outputs], axis=0))
                            for sid in outputs[0][1][level]}
    return points, bands


# ---------------------------------------------------------------- rows and timing
@dataclass(frozen=True)
class Row:
    """One line of the results: a method (and seed) on a set, or its refusal in `note`."""

    set: str
    method: str
    seed: str = ""          # product rows: the seed, or `mean` over the seeds
    series: int = 0
    smape: float = math.nan
    mase: float = math.nan
    msis: float = math.nan
    cov80: float = math.nan
    cov95: float = math.nan
    wall_s: float = math.nan
    cpu_s: float = math.nan
    note: str = ""
    run_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"))
    load: float = field(default_factory=lambda: round(os.getloadavg()[0], 2))  # the machine's 1-minute load then


COLUMNS = [f.name for f in fields(Row)]


@dataclass
class Took:
    wall: float = 0.0
    cpu: float = 0.0


def _cpu_seconds() -> float:
    """User + system CPU of this process and of its children that ended (the product's commands)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def measured() -> Iterator[Took]:
    """Wall and CPU seconds (this process and its children) of the block, filled in when it ends."""
    took, wall0, cpu0 = Took(), time.perf_counter(), _cpu_seconds()
    try:
        yield took
    finally:
        took.wall, took.cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0


def scored_row(data: BenchData, method: str, output: tuple[dict, dict], took: Took, seed: str = "") -> Row:
    s = score_forecasts(*output, data.train, data.test, data.spec.season)
    return Row(data.spec.name, method, seed, len(data.test), s.smape, s.mase, s.msis, s.cov80, s.cov95,
               took.wall, took.cpu)


def mean_row(rows: Sequence[Row]) -> Row:
    """The mean over seeds of every figure (and of wall and CPU time)."""
    means = {k: float(np.mean([getattr(r, k) for r in rows])) for k in
             ("smape", "mase", "msis", "cov80", "cov95", "wall_s", "cpu_s")}
    return Row(rows[0].set, rows[0].method, "mean", rows[0].series, **means, note=f"{len(rows)} seeds")


# ---------------------------------------------------------------- methods
def run_product(data: BenchData, method: str, config: dict, seeds: Sequence[int], work: Path,
                parallel: int = 1) -> Iterator[Row]:
    """Each seed through `pipeline train` / `pipeline predict`, then the mean; a refusal ends the method as a row
    whose note is the product's message (the other seeds would be refused alike). `parallel` > 1 trains an
    ensemble's members in that many processes (`pipeline train --parallel`)."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    source = data.source or long_csv(data, work)
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    done: list[Row] = []
    for seed in seeds:
        try:
            with measured() as took:
                output, _, _ = run_seed(config_path, source, seed, work, name=data.spec.name, parallel=parallel)
        except CommandFailed as failed:
            yield Row(data.spec.name, method, str(seed), len(data.test), wall_s=took.wall, cpu_s=took.cpu,
                      note=f"refused (exit {failed.code}): {failed.message}")
            return
        row = scored_row(data, method, product_output(output), took, str(seed))
        done.append(row)
        yield row
    if len(done) > 1:
        yield mean_row(done)


def long_csv(data: BenchData, work: Path) -> Path:
    """The set's training table (series, date column, value) written once under `work` (never into the project)."""
    path = work / f"{data.spec.name}-train-long.csv"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        table = data.long.rename(columns={TIME: date_column(data.spec)})
        table.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S" if data.spec.wide else "%Y-%m-%d")
    return path


def run_peers(data: BenchData, names: Sequence[str], jobs: int, python: Path, work: Path,
              outputs: dict[str, tuple[tuple[dict, dict], Took]] | None = None) -> Iterator[Row]:
    """Each named statsforecast model through bench/peers.py in the benchmark environment (one child per model, so
    each is timed alone, import included), with its 80 and 95 % intervals; then the mean of AutoETS, AutoTheta and
    AutoARIMA once all three ran (`outputs` keeps the set's forecasts across calls). A model that fails is a row
    with its message."""
    source, spec = long_csv(data, work), data.spec
    outputs = {} if outputs is None else outputs
    for name in names:
        if name == "SeasonalNaive" and spec.season == 1:
            continue  # the same as Naive
        out = work / f"{spec.name}-{name}.csv"
        cmd = [str(python), str(ROOT / "bench" / "peers.py"), "--model", name, "--season", str(spec.season),
               "--freq", spec.freq, "--horizon", str(spec.horizon), "--jobs", str(jobs), "--data", str(source),
               "--date-column", date_column(spec),
               "--out", str(out)]
        with measured() as took:
            done = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            sys.stderr.write(done.stderr)
            yield Row(spec.name, f"statsforecast {name}", series=len(data.test), wall_s=took.wall, cpu_s=took.cpu,
                      note=f"failed (exit {done.returncode}): {stderr_tail(done.stderr)}")
            continue
        output = peer_output(pd.read_csv(out, dtype={"unique_id": str}), name)
        outputs[name] = (output, took)
        yield scored_row(data, f"statsforecast {name}", output, took)
    if all(n in outputs for n in TRIO) and any(n in names for n in TRIO):
        took = Took(sum(outputs[n][1].wall for n in TRIO), sum(outputs[n][1].cpu for n in TRIO))
        yield scored_row(data, f"statsforecast {COMBINED}", combine([outputs[n][0] for n in TRIO]), took)


# ---------------------------------------------------------------- results and docs
def merge_rows(old: pd.DataFrame, new: Sequence[Row]) -> pd.DataFrame:
    """The earlier results without the (set, method) pairs run now, then this run's rows: a run of some methods
    (`--peers AutoARIMA --no-product`) replaces theirs and keeps the rest."""
    fresh = pd.DataFrame([asdict(r) for r in new], columns=COLUMNS)
    if not len(old):
        return fresh
    ran = set(zip(fresh["set"], fresh["method"]))
    kept = old[[pair not in ran for pair in zip(old["set"], old["method"])]]
    return pd.concat([kept, fresh], ignore_index=True)[COLUMNS] if len(fresh) else kept.reset_index(drop=True)


def read_results(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(path, dtype={"seed": str, "note": str}, keep_default_na=False, na_values=[""])
    return frame.reindex(columns=COLUMNS)  # a file from before a column was added reads with it empty


def _fmt(value: float, digits: int) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _span(first: str, last: str) -> str:
    """`2026-12-06 09:34-10:12` for one day's times (`YYYY-MM-DD HH:MM`), else both in full."""
    return f"{first}-{last[11:]}" if first[:10] == last[:10] else f"{first} to {last}"


def render_set(results: pd.DataFrame, spec: BenchSet, references: str) -> str:
    """One set's markdown table (method, seed, sMAPE, MASE, MSIS, cov80, cov95, wall, CPU) and its references."""
    rows = results[results["set"] == spec.name]
    if not len(rows):
        return f"### {spec.title}\n\nNot run yet. For reference: {references}.\n"
    loads = rows["load"].dropna()
    load = f", 1-minute load {loads.min():.1f}-{loads.max():.1f}" if len(loads) else ""
    lines = [f"### {spec.title}", "",
             f"{int(rows['series'].max())} series, horizon {spec.horizon}, season {spec.season}; "
             f"run {_span(rows['run_at'].min(), rows['run_at'].max())} UTC{load}.", "",
             "| method | seed | sMAPE | MASE | MSIS | cov80 | cov95 | wall | CPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    order = [f"statsforecast {m}" for m in (*PEERS, COMBINED)] + [PRODUCT_AUTO, PRODUCT_TUNED]
    rank = {m: i for i, m in enumerate(order)}
    rows = rows.sort_values("method", key=lambda col: col.map(lambda m: rank.get(m, len(order))), kind="stable")
    for r in rows.itertuples(index=False):
        seed = "" if pd.isna(r.seed) else str(r.seed)
        if seed == "mean":
            seed = f"**mean of {str(r.note).split()[0]}**"
        elif isinstance(r.note, str) and r.note.startswith(("refused", "failed")):
            notes.append(f"- {r.method}{f' (seed {seed})' if seed else ''}: {r.note}")
            seed = f"{seed} ({r.note.split()[0]})".strip()
        lines.append(f"| {r.method} | {seed} | {_fmt(r.smape, 3)} | {_fmt(r.mase, 3)} | {_fmt(r.msis, 2)} | "
                     f"{_fmt(r.cov80, 3)} | {_fmt(r.cov95, 3)} | {_fmt(r.wall_s, 0)} s | {_fmt(r.cpu_s, 0)} s |")
    lines += ["", *notes, *([""] if notes else []), f"For reference (not run by the suite): {references}.", ""]
    return "\n".join(lines)


def m4_references(published: Path) -> str:
    """The published M4 Hourly entries quoted beside the table (sMAPE / MASE, MSIS where submitted)."""
    if not published.exists():
        return "the published M4 table (m4_hourly_published.csv) was not found"
    table = pd.read_csv(published).set_index("method")
    parts = []
    for name in M4_REFERENCE_ROWS:
        if name not in table.index:
            continue
        r = table.loc[name]
        point = f"{r['smape']:.3f} / {r['mase']:.3f}" if pd.notna(r["smape"]) else "no point scores"
        interval = f", MSIS {r['msis_95']:.3f} (ACD {r['acd_95']:.3f})" if pd.notna(r["msis_95"]) else ""
        parts.append(f"{name} {point}{interval}")
    return "published M4 entries (sMAPE / MASE): " + "; ".join(parts)


def render_results(results: pd.DataFrame, data_dir: Path) -> str:
    """Every set's section, in the suite's order."""
    refs = dict(M3_REFERENCES)
    refs["m4-hourly"] = m4_references(data_dir / "m4" / "m4_hourly_published.csv")
    return "\n".join(render_set(results, spec, refs[name]) for name, spec in SETS.items())


def replace_section(text: str, body: str) -> str:
    """`text` with everything between the suite's markers replaced by `body`; an error without both markers."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"the markers {BEGIN!r} and {END!r} are missing or out of order")
    return text[: start + len(BEGIN)] + "\n" + body.rstrip("\n") + "\n" + text[stop:]


def write_results(rows: Sequence[Row], path: Path, docs: Path | None, data_dir: Path) -> None:
    """Merge this run's rows into the results file and rewrite the docs' section, under a lock: two suites may run
    at once on different sets (`--sets m4-hourly` beside `--sets m3-monthly`) and share the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = merge_rows(read_results(path), rows)
        merged.to_csv(path, index=False, float_format="%.6g")
        if docs is not None:
            docs.write_text(replace_section(docs.read_text(), render_results(merged, data_dir)))


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", type=_list, default=list(SETS), help=f"comma-separated, of {', '.join(SETS)} (default: all)")
    p.add_argument("--series", type=int, default=0, help="only N series of each set, spread over its file (0: all)")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in _list(s)], default=[1, 2, 3],
                   help="the product's seeds (default: 1,2,3)")
    p.add_argument("--peers", type=_list, default=list(PEERS),
                   help=f"statsforecast models, of {', '.join(PEERS)}; '' for none (default: all)")
    p.add_argument("--no-product", action="store_true", help="run the peers only")
    p.add_argument("--bench-python", type=Path, default=ROOT / ".venv-bench" / "bin" / "python",
                   help="Python of the environment with statsforecast (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="statsforecast's n_jobs (default: 1)")
    p.add_argument("--parallel", type=int, default=1, help="`pipeline train --parallel`: an ensemble's members "
                   "(configs/m4_hourly.yaml has ten) in this many processes (default: 1, one after another)")
    p.add_argument("--data", type=Path, default=DATA, help="folder holding m3/ and m4/ (default: %(default)s)")
    p.add_argument("--results", type=Path, help="results CSV (default: bench/results/suite.csv, "
                   "suite-sample.csv with --series)")
    p.add_argument("--docs", type=Path, help="markdown file to update between the markers (default: "
                   "docs/benchmarks.md for whole sets, none with --series)")
    p.add_argument("--keep", type=Path, help="keep configs, MLflow stores and forecasts here")
    p.add_argument("--render", action="store_true", help="only rewrite the docs from the results file")
    args = p.parse_args(argv)
    unknown = [s for s in args.sets if s not in SETS] + [m for m in args.peers if m not in PEERS]
    if unknown:
        p.error(f"unknown set or peer: {', '.join(unknown)}")
    results = args.results or RESULTS / ("suite-sample.csv" if args.series else "suite.csv")
    docs = args.docs or (None if args.series else DOCS)
    if args.render:
        write_results([], results, docs or DOCS, args.data)
        return
    if args.peers and not args.bench_python.exists():  # fail before hours of training, not after
        p.error(f"{args.bench_python} not found: `make bench-deps` makes the peers' environment (or --peers '')")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-suite-"))
    rows: list[Row] = []

    def record(row: Row) -> None:
        rows.append(row)
        print(f"{row.set:13} {row.method:48} {row.seed:5} sMAPE {row.smape:7.3f}  MASE {row.mase:6.3f}  "
              f"MSIS {row.msis:7.3f}  cov80 {row.cov80:.3f}  cov95 {row.cov95:.3f}  wall {row.wall_s:7.1f} s  "
              f"CPU {row.cpu_s:7.1f} s  {row.note}", flush=True)
        write_results(rows, results, docs, args.data)

    # Two rounds: first every set's fast peers and the product with the auto config, then the slow peers and the
    # hand-tuned reference, so that a run cut short still has the product and its main peers on every set.
    loaded = {name: load_set(SETS[name], args.data, args.series) for name in args.sets}
    peer_outputs: dict[str, dict] = {name: {} for name in args.sets}
    for first_round in (True, False):
        for name, data in loaded.items():
            spec = data.spec
            peers = [m for m in args.peers if (m in SLOW_PEERS) != first_round]
            runs = [("statsforecast peers", lambda d=data, ps=peers, o=peer_outputs[name]:
                     run_peers(d, ps, args.jobs, args.bench_python, work, o))] if peers else []
            methods = [(PRODUCT_AUTO, lambda: minimal_config(spec, f"{name}-auto"), "auto")] if first_round else []
            if spec.tuned_config and not first_round:
                methods.append((PRODUCT_TUNED, lambda: _read_yaml(ROOT / spec.tuned_config), "tuned"))
            if not args.no_product:
                runs += [(method, lambda d=data, m=method, c=config, slug=slug:
                          run_product(d, m, c(), args.seeds, work / f"{d.spec.name}-{slug}", args.parallel))
                         for method, config, slug in methods]
            for method, rows_of in runs:
                try:
                    for row in rows_of():
                        record(row)
                except Exception as exc:  # noqa: BLE001 (one method's bug must not cost the hours of the others)
                    traceback.print_exc()
                    record(Row(name, method, series=len(data.test), note=f"failed: {type(exc).__name__}: {exc}"))
    print(f"\nresults: {results}" + (f"; tables: {docs}" if docs else "") + f"; work files: {work}")


if __name__ == "__main__":
    main()
