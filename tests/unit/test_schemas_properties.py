"""Property: valid frames corrupted at random either pass the contract or fail with a DataError report.

Nothing else may escape (no KeyError, TypeError, OutOfBoundsDatetime...), and whatever passes
really is clean: finite numbers, strictly increasing dates, positive prices, consistent bars.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipeline.config import DataConfig  # noqa: E402
from pipeline.errors import DataError  # noqa: E402
from pipeline.ingest import parse_csv  # noqa: E402
from pipeline.schemas import validate_prices  # noqa: E402
from tests.conftest import make_prices  # noqa: E402

COLUMNS = ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
ROWS = 30

cell_values = st.one_of(
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "abc", "1e400", "-0", "0", "-1", "N/A", "2021-02-30",
                     "2021-01-04T10:00:00+02:00", "2021-01-04 00:00:00Z", "9999-12-31", "0001-01-01",
                     "1,5", '"', "'", ";", "\ufeff", " 5 ", "True"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**20, 10**20).map(str),
    st.text(max_size=8),
    st.dates().map(str),
)


@st.composite
def corruption(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["cell", "cell", "cell", "drop_column", "duplicate_row", "swap_rows",
                                 "reverse", "truncate", "rename", "tz_suffix", "bytes"]))
    return (kind, draw(st.integers(0, ROWS - 1)), draw(st.integers(0, ROWS - 1)),
            draw(st.sampled_from(COLUMNS)), draw(cell_values))


def corrupt(frame: pd.DataFrame, changes: list[tuple]) -> bytes:
    df = frame.astype(object)
    edits: list[tuple[int, str]] = []
    for kind, i, j, column, value in changes:
        i, j = i % max(len(df), 1), j % max(len(df), 1)
        if kind == "cell" and len(df) and column in df.columns:
            df.iloc[i, df.columns.get_loc(column)] = value
        elif kind == "drop_column" and column in df.columns:
            df = df.drop(columns=[column])
        elif kind == "duplicate_row" and len(df):
            df = pd.concat([df.iloc[: i + 1], df.iloc[i : i + 1], df.iloc[i + 1 :]], ignore_index=True)
        elif kind == "swap_rows" and len(df):
            order = list(range(len(df)))
            order[i], order[j] = order[j], order[i]
            df = df.iloc[order].reset_index(drop=True)
        elif kind == "reverse":
            df = df.iloc[::-1].reset_index(drop=True)
        elif kind == "truncate":
            df = df.head(i)
        elif kind == "rename" and column in df.columns:
            df = df.rename(columns={column: value or column})
        elif kind == "tz_suffix" and "Date" in df.columns and len(df):
            df.iloc[i:, df.columns.get_loc("Date")] = df["Date"].iloc[i:].astype(str) + " 00:00:00" + value[:6]
        elif kind == "bytes":
            edits.append((i * 37 + j, value[:3]))
    text = df.to_csv(index=False)
    for position, insert in edits:
        position %= max(len(text), 1)
        text = text[:position] + insert + text[position:]
    return text.encode("utf-8", errors="surrogatepass")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(corruption(), min_size=1, max_size=4), seed=st.integers(0, 3),
       policy=st.sampled_from(["error", "drop", "ffill"]))
def test_corrupted_frames_pass_clean_or_fail_with_a_report(changes: list[tuple], seed: int, policy: str) -> None:
    cfg = DataConfig(features=("Open", "High", "Low", "Close", "Adj Close", "Volume"), nan_policy=policy)
    content = corrupt(make_prices(ROWS, seed=seed), changes)
    try:
        raw = parse_csv(content, "corrupt.csv")
        data = validate_prices(raw, cfg, "corrupt.csv", min_rows=10)
    except DataError as exc:
        assert exc.report and exc.report.startswith("corrupt.csv")
        return
    frame = data.frame
    assert len(frame) >= 10
    assert np.isfinite(frame.to_numpy(dtype=float)).all()
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert (frame[["Open", "High", "Low", "Close", "Adj Close"]] > 0).all().all()
    assert (frame["Volume"] >= 0).all()
    assert (frame["High"] >= frame["Low"]).all()
    assert (frame["High"] >= frame[["Open", "Close"]].max(axis=1)).all()
    assert (frame["Low"] <= frame[["Open", "Close"]].min(axis=1)).all()
