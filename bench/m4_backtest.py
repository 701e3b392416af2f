"""A walk-forward backtest of M4 Hourly series through the product: `pipeline backtest` on a long table.

The first N series of the M4 Hourly training file (bench/m4.py's conversion: series id, an hourly
timestamp, value) are backtested with configs/m4_hourly.yaml: `--folds` folds of 48 hours counted
from each series' end, every fold refitting the scalers and the network on its own past, folds
`--parallel` at a time. Prints the command's output (the per-fold pooled MASE beside naive and
seasonal naive) and the wall time.

    python bench/m4_backtest.py                           # 48 series, 3 folds, 2 at a time
    python bench/m4_backtest.py --series 414 --folds 3 --parallel 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT / "src"), str(ROOT), str(ROOT / "bench")) if p not in sys.path]

from m4 import M4_DIR, _run, read_wide, wide_to_long  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    import yaml

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "m4_hourly.yaml")
    p.add_argument("--data", type=Path, default=M4_DIR, help="folder with Hourly-train.csv (default: %(default)s)")
    p.add_argument("--series", type=int, default=48, help="the first N series (default: %(default)s)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--parallel", type=int, default=2, help="folds at once (default: %(default)s)")
    args = p.parse_args(argv)

    train = read_wide(args.data / "Hourly-train.csv")
    chosen = dict(list(train.items())[: args.series])
    with tempfile.TemporaryDirectory(prefix="m4-backtest-") as tmp:
        work = Path(tmp)
        long_csv = work / "m4_hourly_train_long.csv"
        wide_to_long(chosen).to_csv(long_csv, index=False)
        cfg = yaml.safe_load(args.config.read_text())
        cfg["data"]["source"] = str(long_csv)
        cfg["backtest"] = {**cfg.get("backtest", {}), "test_size": 48, "val": 48}
        config = work / "m4_backtest.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        used = _run([sys.executable, "-m", "pipeline.cli", "backtest", "--config", str(config), "--folds",
                     str(args.folds), "--parallel", str(args.parallel)], env, work)
    print(f"{len(chosen)} series, {args.folds} folds, {args.parallel} at a time: {used.wall:.0f} s wall, "
          f"{used.cpu:.0f} s CPU (this process and its children), load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
