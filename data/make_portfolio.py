"""Write data/portfolio.csv: a tiny long-format sample of six daily store-sales series (deterministic).

    python data/make_portfolio.py

Columns `store, date, sales`; each store has its own level, weekly pattern, trend and noise, and
its own length (the last ends a month early and one starts late), as a portfolio's series do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "portfolio.csv"


def make_portfolio(seed: int = 2024) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    weekly = np.array([0.8, 0.9, 1.0, 1.0, 1.1, 1.4, 1.3])
    parts = []
    for k, (store, start, days) in enumerate([("north", "2024-01-01", 180), ("south", "2024-01-01", 180),
                                              ("east", "2024-01-01", 180), ("west", "2024-02-15", 135),
                                              ("harbour", "2024-01-01", 150), ("airport", "2024-01-01", 180)]):
        dates = pd.date_range(start, periods=days, freq="D")
        level = 100 * (k + 1) * (1 + 0.002 * (k - 2) * np.arange(days))
        sales = level * weekly[dates.day_of_week] * rng.lognormal(0, 0.15, days)
        parts.append(pd.DataFrame({"store": store, "date": dates.strftime("%Y-%m-%d"), "sales": sales.round(2)}))
    return pd.concat(parts, ignore_index=True)


if __name__ == "__main__":
    make_portfolio().to_csv(OUT, index=False)
    print(f"wrote {OUT}")
