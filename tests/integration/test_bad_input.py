"""Every kind of bad input through the real `pipeline train` command: exit code 2, a message naming
file, column, line and rule, a FAILED MLflow run carrying the report (where a run was started),
and a registry left exactly as it was. Tolerated quirks train normally.

The cases run in-process (`pipeline.cli.main.main`) against one Prefect test harness and one MLflow
store that already holds a champion; two go through a real subprocess to prove the exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from pipeline.cli.main import main
from tests.conftest import OHLCV, ROOT, make_prices
from tests.integration.registry_support import closed_port, registry_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.xdist_group("bad-input")]  # one worker builds the module's store

MODEL = "tiny-forecaster"


@pytest.fixture(scope="module")
def store(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One MLflow store for the module, already holding a champion trained from good data."""
    folder = tmp_path_factory.mktemp("bad-input")
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    (folder / "mlruns").mkdir()
    good = folder / "good.csv"
    make_prices(80).to_csv(good, index=False)
    base = {
        "name": "tiny", "data": {"source": str(good), "features": list(OHLCV)},
        "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "window": {"lookback": 5, "horizon": 1},
        "model": {"hidden_size": 8, "num_layers": 1}, "train": {"epochs": 2, "batch_size": 16, "patience": 5},
        "tracking": {"experiment": "good"}, "registry": {"model_name": MODEL},
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.chdir(folder)
        config = folder / "base.yaml"
        config.write_text(yaml.safe_dump(base))
        assert main(["train", "--config", str(config)]) == 0
        client = MlflowClient(uri, registry_uri=uri)
        assert set(registry_state(client)[MODEL][1].values()) == {"1"}  # @champion, or @challenger by the gate
        yield {"folder": folder, "uri": uri, "base": base, "client": client}


def write_config(store: dict, name: str, **sections: dict) -> str:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in store["base"].items()}
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    path = store["folder"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def with_cells(frame: pd.DataFrame, **cells: object) -> pd.DataFrame:
    frame = frame.astype(object)
    for key, value in cells.items():
        column, row = key.rsplit("__", 1)
        frame.loc[int(row), column] = value
    return frame


def csv_file(frame: pd.DataFrame, **to_csv: object) -> Callable[[Path], str]:
    def build(path: Path) -> str:
        frame.to_csv(path, index=False, **to_csv)
        return str(path)
    return build


def text_file(text: str) -> Callable[[Path], str]:
    def build(path: Path) -> str:
        path.write_text(text, encoding="utf-8")
        return str(path)
    return build


P = make_prices(80)
SALES = pd.DataFrame({"Date": P["Date"], "sales": np.where(np.arange(80) % 9 == 4, 0.0, 10 + np.arange(80) % 7)})
SALES.loc[30, "sales"] = -1.0
DAY_FIRST = P.assign(Date=pd.to_datetime(P["Date"]).dt.strftime("%d/%m/%Y"))
zones = [f"{d} 09:30:00{'+00:00' if i < 70 else '-05:00'}" for i, d in enumerate(P["Date"])]

# case -> (build the data file in a folder -> its path or URL, config overrides, words the message holds)
# File lines are the frame's row + 2 (line 1 is the header).
BAD_DATA: dict[str, tuple[Callable[[Path], str], dict, list[str]]] = {
    "missing file": (lambda folder: str(folder / "absent.csv"), {}, ["absent.csv", "data file not found"]),
    "unreachable URL": (lambda folder: f"http://127.0.0.1:{closed_port()}/x.csv", {},
                        ["x.csv", "cannot download", "reachable"]),
    "empty file": (text_file(""), {}, ["the file is empty"]),
    "header only": (text_file("Date,Open,High,Low,Close,Adj Close,Volume\n"), {}, ["line 1", "no data rows"]),
    "wrong delimiter": (csv_file(P, sep=";"), {}, ["single column", "comma-separated", "';'"]),
    "missing column": (csv_file(P.drop(columns=["Volume"])), {},
                       ["'Volume'", "named by data.features", "every column the config names"]),
    "text in a number column": (csv_file(with_cells(P, Open__3="n/a.")), {}, ["'Open'", "line 5", "a number"]),
    "NaN value": (csv_file(with_cells(P, Close__9=np.nan)), {}, ["'Close'", "line 11", "not empty"]),
    "infinite value": (csv_file(with_cells(P, High__9=np.inf)), {}, ["'High'", "line 11", "finite"]),
    "duplicate dates": (csv_file(with_cells(P, Date__4=P["Date"][3])), {},
                        ["'Date'", "line 5", "line 6", "unique dates"]),
    "unparseable dates": (csv_file(with_cells(P, Date__6="2021-02-30")), {}, ["'Date'", "line 8", "a date"]),
    "mixed time zones": (csv_file(P.assign(Date=zones)), {}, ["'Date'", "line 72", "one time zone"]),
    "zero price": (csv_file(with_cells(P, Close__12=0.0)), {}, ["'Close'", "line 14", "price > 0"]),
    "negative price": (csv_file(with_cells(P, Open__12=-3.0)), {}, ["'Open'", "line 14", "price > 0"]),
    "High below Low": (csv_file(with_cells(P, High__15=P["Low"][15] - 1)), {}, ["'High', 'Low'", "line 17", "High >= Low"]),
    "negative volume": (csv_file(with_cells(P, Volume__20=-100.0)), {}, ["'Volume'", "line 22", "volume >= 0"]),
    "too few rows": (csv_file(P.head(8)), {}, ["8 rows", "at least", "lookback"]),
    "zeros under log_return": (csv_file(SALES), {"data": {"target": "sales", "features": ["sales"]},
                                                 "preprocess": {"target_transform": "log_return"}},
                               ["'sales'", "line 6", "line 15", "line 32", "log_return transform", "difference"]),
    "lowercase close below zero": (csv_file(with_cells(P.rename(columns=str.lower), close__12=-5.0)),
                                   {"data": {"date_column": "date", "target": "close",
                                             "features": ["open", "high", "low", "close", "volume"]}},
                                   ["'close'", "line 14", "price > 0"]),
    "day-first dates": (csv_file(DAY_FIRST), {}, ["'Date'", "line 2", "'04/01/2021'", "data.dayfirst"]),
    "config names absent columns": (csv_file(P), {"data": {"features": ["Open", "Close", "Turnover"]}},
                                    ["'Turnover'", "named by data.features"]),
}

BAD_CONFIG: dict[str, tuple[dict, list[str]]] = {
    "negative lookback": ({"window": {"lookback": -5}}, ["window.lookback", "greater than or equal to 1", "-5"]),
    "split fractions do not sum to 1": ({"split": {"train": 0.7, "val": 0.2, "test": 0.3}}, ["split", "sum to 1"]),
    "unknown target transform": ({"preprocess": {"target_transform": "sqrt"}},
                                 ["preprocess.target_transform", "'sqrt'", "log_return"]),
    "unknown config key": ({"train": {"epochz": 3}}, ["train.epochz", "unknown key", "epochs"]),
}


def run_cli(store: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, config: str,
            experiment: str) -> tuple[int, str]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.chdir(store["folder"])
    capsys.readouterr()
    code = main(["train", "--config", config, "--experiment", experiment])
    return code, capsys.readouterr().err


def assert_failed_runs_only(client: MlflowClient, experiment: str, words: list[str]) -> int:
    """Every run of the experiment FAILED, with the failure report (holding `words`) as an artifact."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    for run in runs:
        assert run.info.status == "FAILED"
        report = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/failure/report.txt")
        for word in words:
            assert word in report, f"{word!r} not in the run's report:\n{report}"
        assert not client.list_artifacts(run.info.run_id, "model")
    return len(runs)


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_exits_2_with_a_clear_message_and_changes_nothing(store, monkeypatch, capsys, case: str) -> None:
    build, overrides, words = BAD_DATA[case]
    source = build(store["folder"] / f"{case.replace(' ', '_')}.csv")
    client, before = store["client"], registry_state(store["client"])
    experiment = f"bad-{case.replace(' ', '-')}"
    config = write_config(store, case.replace(" ", "_"), data={"source": source, **overrides.get("data", {})},
                          **{k: v for k, v in overrides.items() if k != "data"})

    code, err = run_cli(store, monkeypatch, capsys, config, experiment)

    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    message = err.removeprefix("error: ")
    assert Path(source).name in message.splitlines()[0]  # the file, first
    for word in words:
        assert word in message, f"{case}: {word!r} not in\n{message}"
    assert "\n\n" not in message.strip()  # one paragraph
    runs = assert_failed_runs_only(client, experiment, words)
    assert runs == (0 if case in {"missing file", "unreachable URL", "empty file", "header only", "wrong delimiter"} else 1)
    assert registry_state(client) == before


@pytest.mark.parametrize("case", BAD_CONFIG)
def test_impossible_config_exits_2_naming_the_field(store, monkeypatch, capsys, case: str) -> None:
    overrides, words = BAD_CONFIG[case]
    client, before = store["client"], registry_state(store["client"])
    experiment = f"bad-config-{case.replace(' ', '-')}"
    config = write_config(store, f"config_{case.replace(' ', '_')}", **overrides)

    code, err = run_cli(store, monkeypatch, capsys, config, experiment)

    assert code == 2, err
    assert err.startswith("error: invalid config") and config in err and "Traceback" not in err
    for word in words:
        assert word in err, f"{case}: {word!r} not in\n{err}"
    assert client.get_experiment_by_name(experiment) is None  # refused before any run
    assert registry_state(client) == before


def test_tolerated_quirks_train_normally(store, monkeypatch, capsys) -> None:
    """Reversed date order, a UTF-8 BOM and padded headers: sorted, noted, trained, registered."""
    text = P.iloc[::-1].to_csv(index=False).replace("Date,Open,High,Low", " Date , Open ,High  ,Low", 1)
    path = store["folder"] / "quirks.csv"
    path.write_bytes(("\ufeff" + text).encode("utf-8"))
    config = write_config(store, "quirks", data={"source": str(path)}, registry={"model_name": "quirks"})

    code, err = run_cli(store, monkeypatch, capsys, config, "quirks")

    assert code == 0, err
    client = store["client"]
    run = client.search_runs([client.get_experiment_by_name("quirks").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.tags["data_rows"] == "80"
    assert run.data.tags["data_start"] == P["Date"].iloc[0]
    notes = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/data/validation_notes.txt")
    assert "sorted ascending" in notes
    assert set(registry_state(client)["quirks"][1].values()) == {"1"}


@pytest.mark.parametrize("policy", ["drop", "ffill"])
def test_nan_policy_and_a_long_gap(store, monkeypatch, capsys, policy: str) -> None:
    """NaN in a feature column with an explicit policy: the run goes on and records the rows touched;
    a gap far longer than usual is a warning in the run, not an error."""
    dates = pd.to_datetime(P["Date"])
    dates.iloc[40:] += pd.Timedelta(days=90)
    frame = with_cells(P.assign(Date=dates.dt.strftime("%Y-%m-%d")), Volume__10=np.nan, Open__30=np.nan)
    path = store["folder"] / f"nan_{policy}.csv"
    frame.to_csv(path, index=False)
    config = write_config(store, f"nan_{policy}", data={"source": str(path), "nan_policy": policy},
                          registry={"enabled": False})

    code, err = run_cli(store, monkeypatch, capsys, config, f"nan-{policy}")

    assert code == 0, err
    client = store["client"]
    run = client.search_runs([client.get_experiment_by_name(f"nan-{policy}").experiment_id])[0]
    assert run.info.status == "FINISHED"
    touched = "rows_dropped" if policy == "drop" else "rows_filled"
    assert run.data.tags[touched] == "2"
    assert run.data.tags["data_rows"] == ("78" if policy == "drop" else "80")
    notes = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/data/validation_notes.txt")
    assert f"nan_policy={policy}" in notes and "lines 12, 32" in notes
    assert "warning: gap of 93 day(s)" in notes


def test_nan_without_a_policy_stops_and_names_the_policy(store, monkeypatch, capsys) -> None:
    path = store["folder"] / "nan_default.csv"
    with_cells(P, Volume__10=np.nan).to_csv(path, index=False)
    config = write_config(store, "nan_default", data={"source": str(path)})
    code, err = run_cli(store, monkeypatch, capsys, config, "nan-default")
    assert code == 2 and "'Volume'" in err and "line 12" in err and "data.nan_policy" in err


@pytest.mark.parametrize("case", ["text in a number column", "negative lookback"])
def test_the_real_command_exits_2(store, case: str) -> None:
    """The same through a real process: the exit status a scheduler sees."""
    from prefect.settings import PREFECT_API_URL

    if case in BAD_DATA:
        build, _, words = BAD_DATA[case]
        config = write_config(store, "subprocess", data={"source": build(store["folder"] / "sub.csv")})
    else:
        overrides, words = BAD_CONFIG[case]
        config = write_config(store, "subprocess", **overrides)
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_REGISTRY_URI"},
           "MLFLOW_TRACKING_URI": store["uri"], "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--config", config],
                          cwd=store["folder"], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr
