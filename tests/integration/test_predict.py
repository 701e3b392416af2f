"""The batch forecast flow and `pipeline predict` against a registered champion."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from flows.forecast import forecast_flow
from pipeline.cli.main import main
from pipeline.errors import DataError, RegistryError
from tests.integration import registry_support as rs


@pytest.fixture
def champion(planted_champion_saved, restored):
    """v1 of `planted`, @champion: forecasts +1 % a day on a series growing 1 % a day (conftest.py: built once per
    session, the store restored for each test)."""
    saved, data = planted_champion_saved
    return rs.client_for(restored(saved)), data.copy()


def test_predict_writes_and_logs_the_next_forecast(prefect_harness, champion, tmp_path):
    client, data = champion
    csv = tmp_path / "recent.csv"
    data.to_csv(csv, index=False)
    summary = forecast_flow(model="models:/planted@champion", data=str(csv), out=str(tmp_path / "out" / "f.csv"))

    written = pd.read_csv(tmp_path / "out" / "f.csv", dtype={"origin": str, "date": str})
    expected = mlflow.pyfunc.load_model("models:/planted/1").predict(data)  # in-process, same rows
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    assert written["date"].iloc[0] == str((pd.Timestamp(data["Date"].iloc[-1]) + pd.offsets.BDay(1)).date())
    assert written["forecast"].iloc[0] == pytest.approx(data["Close"].iloc[-1] * np.exp(0.01), rel=1e-6)

    assert (summary.model.name, summary.model.version, summary.model.alias) == ("planted", "1", "champion")
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["model_version"] == "1" and run.data.params["model_uri"] == "models:/planted/1"
    assert run.data.metrics["forecast_step_1"] == pytest.approx(written["forecast"].iloc[0])
    logged = mlflow.artifacts.load_text(f"runs:/{summary.run_id}/forecasts/forecasts.csv")
    assert logged.splitlines()[0] == "origin,step,date,forecast"


def test_predict_on_too_short_input_fails_cleanly(prefect_harness, champion, tmp_path, capsys):
    client, data = champion
    csv = tmp_path / "short.csv"
    data.tail(4).to_csv(csv, index=False)
    out = tmp_path / "f.csv"
    with pytest.raises(DataError, match=r"(?s)short.csv.*at least 6 rows"):
        forecast_flow(model="models:/planted@champion", data=str(csv), out=str(out))
    assert not out.exists() and list(tmp_path.glob(".f.csv*")) == []
    runs = client.search_runs([client.get_experiment_by_name("batch-forecasts").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]

    # the same through the command line: exit 2, the reason on stderr
    assert main(["predict", "--model", "models:/planted@champion", "--data", str(csv), "--out", str(out)]) == 2
    assert "at least 6 rows" in capsys.readouterr().err and not out.exists()

    # and straight through the logged pyfunc: a clean MLflow error with the same reason
    with pytest.raises(MlflowException, match="at least 6 rows"):
        mlflow.pyfunc.load_model("models:/planted@champion").predict(data.tail(4))


def test_predict_refuses_unknown_models_before_any_run(prefect_harness, champion, tmp_path, capsys):
    client, data = champion
    csv = tmp_path / "recent.csv"
    data.to_csv(csv, index=False)
    with pytest.raises(RegistryError, match=r"no registered model named 'nope'.*known models: planted"):
        forecast_flow(model="models:/nope@champion", data=str(csv), out=None)
    assert main(["predict", "--model", "models:/planted@gold", "--data", str(csv)]) == 1
    assert "has no alias @gold; aliases: @champion -> v1" in capsys.readouterr().err
    assert client.get_experiment_by_name("batch-forecasts") is None
    assert not Path("forecasts.csv").exists()


def test_predict_command_prints_the_forecast(prefect_harness, champion, tmp_path, capsys):
    _, data = champion
    csv = tmp_path / "recent.csv"
    data.to_csv(csv, index=False)
    assert main(["predict", "--model", "models:/planted@champion", "--data", str(csv)]) == 0
    printed = capsys.readouterr().out
    assert "Model:       planted version 1 (@champion)" in printed
    assert Path("forecasts.csv").is_file()  # the default --out, in the working directory
    assert pd.read_csv("forecasts.csv")["date"].iloc[0] in printed


@pytest.fixture
def default_store_champion(tmp_path, monkeypatch):
    """MLflow's default layout, as users run it: ./mlflow.db in the working directory, no URI set,
    with v1 of `planted` as @champion."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = rs.client_for(uri)
    cfg = rs.config()
    data = rs.trend(growth=0.01)
    planted = rs.plant(data, cfg, 0.01)
    assert rs.register(client, planted, rs.window_of(planted.frame, cfg), planted.frame).alias == "champion"
    yield client, data
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def test_predict_never_writes_over_the_tracking_store(prefect_harness, default_store_champion, tmp_path, capsys):
    import hashlib

    client, data = default_store_champion
    csv = tmp_path / "recent.csv"
    data.to_csv(csv, index=False)
    store = tmp_path / "mlflow.db"
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    for extra in ([], ["--overwrite"]):
        code = main(["predict", "--model", "models:/planted@champion", "--data", str(csv), "--out", "mlflow.db", *extra])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "mlflow.db: refused, it is a file of the MLflow tracking store" in err and "--overwrite" in err
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before  # refused before any run was started
    assert client.get_registered_model("planted").aliases == {"champion": 1}
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs_before

    # an ordinary file: written once, then refused until --overwrite
    args = ["predict", "--model", "models:/planted@champion", "--data", str(csv), "--out", "f.csv"]
    assert main(args) == 0 and (tmp_path / "f.csv").is_file()
    assert oct((tmp_path / "f.csv").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    capsys.readouterr()
    assert main(args) == 2 and "f.csv: already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def _umask() -> int:
    from pipeline.tracking.forecast_files import current_umask

    return current_umask()


def test_predict_never_writes_into_prefects_home_or_database(prefect_harness, default_store_champion, tmp_path,
                                                              capsys):
    """`--out $PREFECT_HOME/prefect.db --overwrite` once ended with exit 0 and a broken Prefect database."""
    from prefect.settings import get_current_settings

    _, data = default_store_champion
    csv = tmp_path / "recent.csv"
    data.to_csv(csv, index=False)
    settings = get_current_settings()
    database = Path(settings.server.database.connection_url.get_secret_value().split(":///", 1)[1])
    home_db = Path(settings.home) / "prefect.db"
    before = home_db.stat().st_ino if home_db.exists() else None  # another Prefect process may have made it
    for out, rule in ((database, "Prefect's database"), (Path(settings.home) / "prefect.db", "Prefect's home")):
        code = main(["predict", "--model", "models:/planted@champion", "--data", str(csv), "--out", str(out),
                     "--overwrite"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"{out}: refused, it lies in {rule}" in err and "even with --overwrite" in err
    assert database.read_bytes().startswith(b"SQLite format 3\x00")  # the live server writes to it: no digest check
    # the refused write neither created the home's database nor replaced it (a write renames a new file over it)
    assert (home_db.stat().st_ino if home_db.exists() else None) == before or database == home_db
