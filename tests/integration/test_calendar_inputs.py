"""A model with calendar inputs and holidays (issue 25, item 5) through `pipeline train` and `pipeline predict`: the
user sends only the rows; the horizon's calendar comes from the model's recorded frequency."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.cli.main import main
from tests.conftest import make_prices

pytestmark = pytest.mark.timeout(300)


def test_a_model_with_calendar_inputs_trains_and_predicts_through_the_cli(prefect_harness, mlflow_store, write_config,
                                                                           tmp_path):
    prices = make_prices(80)
    prices["Date"] = pd.date_range("2024-07-02 09:00", periods=80, freq="h").strftime("%Y-%m-%d %H:%M:%S")
    csv = tmp_path / "hours.csv"
    prices.to_csv(csv, index=False)
    config = write_config(data={"source": str(csv), "calendar": ["day", "week"], "holidays": "US"},
                          window={"lookback": 5, "horizon": 3},
                          registry={"min_gain_over_persistence": -0.5, "min_gain_over_champion": -0.5})
    assert main(["train", "--config", config]) == 0

    model = mlflow.pyfunc.load_model("models:/tiny-forecaster/1")  # the logged code: the serving closure alone
    bundle = model.unwrap_python_model().bundle
    assert (bundle.preprocessor.calendar, bundle.preprocessor.holidays) == (["day", "week"], "US")
    assert bundle.checkpoint["init_args"]["calendar"] == 5  # day and week as sine and cosine, the holiday flag

    out = tmp_path / "forecast.csv"
    assert main(["predict", "--model", "models:/tiny-forecaster/1", "--data", str(csv), "--out", str(out)]) == 0
    written = pd.read_csv(out)
    assert written["date"].tolist() == ["2024-07-05 17:00:00", "2024-07-05 18:00:00", "2024-07-05 19:00:00"]
    assert np.isfinite(written["forecast"]).all()
    np.testing.assert_allclose(written["forecast"], model.predict(prices)["forecast"], rtol=1e-6)
