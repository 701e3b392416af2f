"""Writing the forecasts CSV: refusals (existing file, tracking store, project files) and permissions."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import OutputError, PipelineError
from pipeline.tracking.forecast_files import Guarded, check_output, write_forecasts

FRAME = pd.DataFrame({"origin": ["2024-01-02"], "step": [1], "date": ["2024-01-03"], "forecast": [1.5]})


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a local store: ./store/mlflow.db, artifacts in ./store/mlruns and ./mlruns."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "store" / "mlruns" / "1").mkdir(parents=True)
    (tmp_path / "store" / "mlflow.db").write_bytes(b"SQLite format 3\x00store")
    (tmp_path / "mlruns").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return tmp_path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def umask():
    def _set(mask: int) -> None:
        os.umask(mask)

    previous = os.umask(0o022)
    yield _set
    os.umask(previous)


def test_refused_paths_are_pipeline_errors_with_exit_2() -> None:
    assert issubclass(OutputError, PipelineError) and OutputError.exit_code == 2


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_usual_permissions(work: Path, umask, mask: int, mode: int) -> None:
    umask(mask)
    path = write_forecasts(FRAME, "out/f.csv")
    assert path == work / "out" / "f.csv"
    assert stat.S_IMODE(path.stat().st_mode) == mode  # not mkstemp's 0600
    pd.testing.assert_frame_equal(pd.read_csv(path, dtype={"origin": str, "date": str}), FRAME)
    assert [p.name for p in path.parent.iterdir()] == ["f.csv"]  # no temporary file left


def test_an_existing_file_is_replaced_only_with_overwrite(work: Path, umask) -> None:
    old = work / "f.csv"
    old.write_text("keep me\n")
    old.chmod(0o640)
    with pytest.raises(OutputError, match=r"f\.csv: already exists.*--overwrite"):
        write_forecasts(FRAME, "f.csv")
    assert old.read_text() == "keep me\n"
    write_forecasts(FRAME, "f.csv", overwrite=True)
    assert old.read_text().startswith("origin,step,date,forecast")
    assert stat.S_IMODE(old.stat().st_mode) == 0o640  # a replaced file keeps its permissions


@pytest.mark.parametrize("name", ["store/mlflow.db", "store/mlflow.db-journal", "store/mlflow.db-wal",
                                  "store/mlflow.db-shm", "store/mlflow.db.lock"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_the_tracking_store_is_never_written_over(work: Path, name: str, overwrite: bool) -> None:
    before = digest(work / "store" / "mlflow.db")
    with pytest.raises(OutputError, match=rf"{name}: refused, it is a file of the MLflow tracking store.*even with --overwrite"):
        write_forecasts(FRAME, name, overwrite=overwrite)
    assert digest(work / "store" / "mlflow.db") == before
    assert not (work / name).exists() or name == "store/mlflow.db"


def test_the_default_store_in_the_working_directory_is_protected(work: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    (work / "mlflow.db").write_bytes(b"SQLite format 3\x00default")
    with pytest.raises(OutputError, match="mlflow.db: refused, it is a file of the MLflow tracking store"):
        write_forecasts(FRAME, "mlflow.db", overwrite=True)
    assert (work / "mlflow.db").read_bytes() == b"SQLite format 3\x00default"


@pytest.mark.parametrize("name", ["store/mlruns/1/f.csv", "store/mlruns/new.csv", "mlruns/f.csv", "mlruns"])
def test_nothing_goes_into_the_artifact_folders(work: Path, name: str) -> None:
    with pytest.raises(OutputError, match="artifact folder"):
        write_forecasts(FRAME, name, overwrite=True)
    assert list((work / "store" / "mlruns" / "1").iterdir()) == []


def test_a_link_to_the_store_is_refused(work: Path) -> None:
    (work / "link.csv").symlink_to(work / "store" / "mlflow.db")
    with pytest.raises(OutputError, match="tracking store"):
        write_forecasts(FRAME, "link.csv", overwrite=True)
    assert (work / "link.csv").is_symlink()


def test_a_remote_store_leaves_the_local_artifact_folder_protected(work: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with pytest.raises(OutputError, match="artifact folder"):
        check_output("mlruns/x.csv")
    assert check_output("store/other.csv") == work / "store" / "other.csv"


@pytest.mark.parametrize("name", ["pyproject.toml", "configs/default.yaml", "data/SBUX.csv", "src/pipeline/x.py",
                                  "flows/training.py", "tests/test_x.py"])
def test_the_projects_own_files_are_never_written_over(work: Path, name: str) -> None:
    path = work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("project\n")
    with pytest.raises(OutputError, match=r"refused, it is one of the project's own files.*even with --overwrite"):
        write_forecasts(FRAME, name, overwrite=True)
    assert path.read_text() == "project\n"


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_files_tracked_by_git_are_never_written_over(work: Path) -> None:
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "notes.csv").write_text("tracked\n")
    (work / "gone.csv").write_text("tracked, then deleted\n")
    (work / "scratch.csv").write_text("untracked\n")
    subprocess.run(["git", "-C", str(work), "add", "notes.csv", "gone.csv"], check=True)
    (work / "gone.csv").unlink()
    for name in ("notes.csv", "gone.csv"):
        with pytest.raises(OutputError, match=rf"{name}: refused, git tracks this"):
            write_forecasts(FRAME, name, overwrite=True)
    assert (work / "notes.csv").read_text() == "tracked\n" and not (work / "gone.csv").exists()
    write_forecasts(FRAME, "scratch.csv", overwrite=True)  # untracked: the user's own file
    assert (work / "scratch.csv").read_text().startswith("origin")


def test_a_directory_is_refused(work: Path) -> None:
    (work / "outdir").mkdir()
    with pytest.raises(OutputError, match="outdir: is a directory"):
        write_forecasts(FRAME, "outdir", overwrite=True)


def test_a_failed_write_leaves_nothing_behind(work: Path) -> None:
    class Broken(pd.DataFrame):
        def to_csv(self, *args, **kwargs):  # noqa: ANN002, ANN003
            raise OSError("disk full")

    (work / "f.csv").write_text("old\n")
    with pytest.raises(OSError, match="disk full"):
        write_forecasts(Broken(FRAME), "f.csv", overwrite=True)
    assert (work / "f.csv").read_text() == "old\n"
    assert sorted(p.name for p in work.iterdir()) == ["f.csv", "mlruns", "store"]


@pytest.mark.parametrize("name", [".tracking/postgres/base/1/1259", ".tracking/postgres/postgresql.conf",
                                  ".tracking/artifacts/1/model/weights.pt", ".tracking/mlflow-server.log"])
def test_the_tracking_servers_default_folder_is_never_written_into(work: Path, monkeypatch, name: str) -> None:
    """`make tracking-server` keeps its PostgreSQL cluster and artifacts in ./.tracking: with an http tracking URI
    the local-store rules do not see them."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.delenv("TRACKING_DIR", raising=False)
    path = work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"server data")
    with pytest.raises(OutputError, match=rf"{name}: refused, it lies in the tracking server's folder "
                                          rf"\(make tracking-server\) {work / '.tracking'}; rule: .*even with --overwrite"):
        write_forecasts(FRAME, name, overwrite=True)
    assert path.read_bytes() == b"server data"


def test_the_tracking_dir_named_in_the_environment_is_never_written_into(work: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRACKING_DIR", str(work / "srv"))
    (work / "srv" / "artifacts").mkdir(parents=True)
    with pytest.raises(OutputError, match=r"refused, it lies in the tracking server's folder \(\$TRACKING_DIR\)"):
        check_output("srv/artifacts/new.csv", overwrite=True)
    assert not (work / "srv" / "artifacts" / "new.csv").exists()


@pytest.mark.parametrize("mark, what", [("elsewhere/postgres/PG_VERSION", "a tracking server's folder"),
                                        ("elsewhere/PG_VERSION", "a PostgreSQL cluster")])
def test_a_tracking_server_folder_is_known_by_its_layout_wherever_it_is(work: Path, monkeypatch, mark: str,
                                                                         what: str) -> None:
    """Started with another --dir in another shell: its PostgreSQL cluster gives it away."""
    monkeypatch.delenv("TRACKING_DIR", raising=False)
    (work / mark).parent.mkdir(parents=True)
    (work / mark).write_text("15\n")
    (work / "elsewhere" / "artifacts").mkdir(exist_ok=True)
    with pytest.raises(OutputError, match=rf"refused, it lies in {what} {work / 'elsewhere'}"):
        check_output("elsewhere/artifacts/f.csv", overwrite=True)
    assert check_output("f.csv") == work / "f.csv"  # beside it is fine


def test_guarded_paths_named_by_the_caller_are_never_written_into(work: Path) -> None:
    home = work / "prefect-home"
    home.mkdir()
    (home / "prefect.db").write_bytes(b"SQLite format 3\x00prefect")
    guarded = [Guarded(home, "Prefect's home (PREFECT_HOME)")]
    for name in ("prefect-home/prefect.db", "prefect-home/new.csv"):
        with pytest.raises(OutputError, match=rf"{name}: refused, it lies in Prefect's home \(PREFECT_HOME\) {home}; "
                                              r"rule: .*even with --overwrite"):
            write_forecasts(FRAME, name, overwrite=True, guarded=guarded)
    assert (home / "prefect.db").read_bytes() == b"SQLite format 3\x00prefect"
    assert write_forecasts(FRAME, "f.csv", guarded=guarded) == work / "f.csv"


def test_prefects_home_and_database_come_from_prefects_settings(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_HOME, temporary_settings

    from flows.tasks import prefect_files

    with temporary_settings({PREFECT_HOME: str(tmp_path / "home"),
                             PREFECT_API_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{tmp_path / 'db' / 'p.db'}"}):
        guarded = {g.path: g.what for g in prefect_files()}
    assert guarded[tmp_path / "home"] == "Prefect's home (PREFECT_HOME)"
    assert guarded[tmp_path / "db" / "p.db"] == guarded[tmp_path / "db" / "p.db-wal"] == "Prefect's database"
