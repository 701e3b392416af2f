"""`make tracking-server` (pipeline.tracking.server) as a process: who may connect to its PostgreSQL, and
what is left when it or its `mlflow server` is killed.

One cluster for the module (initdb once), started and stopped by each test. Skips with the reason
only where PostgreSQL cannot start (binaries or psycopg2 missing).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.processes import free_port, postgres_folder

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("tracking-server")]  # one folder, in order

UP = "MLflow tracking server on PostgreSQL is up"


@dataclass
class Setup:
    folder: Path
    pg_port: int
    port: int

    @property
    def data_dir(self) -> Path:
        return self.folder / "postgres"

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"


@pytest.fixture(scope="module")
def setup():
    """A tracking folder the postgres user can reach (under /tmp) and two free ports, for the module."""
    with postgres_folder("pipeline-tracking-") as folder:
        yield Setup(folder, free_port(), free_port())


def start(setup: Setup, out: Path) -> subprocess.Popen:
    """`python -m pipeline.tracking.server` on the module's folder, once it says it is up."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.tracking.server", "--dir", str(setup.folder),
                             "--pg-port", str(setup.pg_port), "--port", str(setup.port), "--workers", "1"],
                            stdout=out.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 400
    while UP not in out.read_text():
        assert proc.poll() is None, f"the tracking server exited {proc.returncode}:\n{out.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the tracking server not up in 400 s:\n{out.read_text()[-3000:]}"
        time.sleep(0.5)
    return proc


def serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def pg_running(setup: Setup) -> bool:
    from pipeline.tracking.server import running_pid

    return running_pid(setup.data_dir) is not None


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of each live child of `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(") ", 1)[-1].split()[1] == str(pid):
                found.append((int(stat.parent.name), (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:
            continue
    return found


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} after {timeout:.0f} s"
        time.sleep(0.5)


def stop(proc: subprocess.Popen, setup: Setup) -> None:
    """SIGTERM: a clean stop, exit 0, PostgreSQL stopped too."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    assert not serving(setup.health) and not pg_running(setup)


def test_only_the_mlflow_role_connects_with_its_password_and_it_is_no_superuser(setup: Setup, tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch):
    import psycopg2
    from psycopg2 import errors

    from pipeline.tracking.server import PASSWORD_FILE, owner_name, service_user

    out = tmp_path / "server.out"
    proc = start(setup, out)
    try:
        password_file = setup.folder / PASSWORD_FILE
        assert password_file.stat().st_mode & 0o777 == 0o600
        assert setup.data_dir.stat().st_mode & 0o777 == 0o700  # the socket's folder: no other account reaches it
        password = password_file.read_text().strip()
        assert len(password) >= 32

        monkeypatch.delenv("PGPASSWORD", raising=False)
        monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))  # no ~/.pgpass either
        tcp = {"host": "127.0.0.1", "port": setup.pg_port, "connect_timeout": 10}
        with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
            psycopg2.connect(user="mlflow", dbname="mlflow", **tcp)
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(user="mlflow", dbname="mlflow", password="mlflow", **tcp)
        superuser = owner_name(service_user())  # the cluster's own superuser: never over TCP
        for user, dbname in [(superuser, "postgres"), (superuser, "mlflow"), ("mlflow", "postgres")]:
            with pytest.raises(psycopg2.OperationalError, match="no pg_hba.conf entry"):
                psycopg2.connect(user=user, dbname=dbname, password=password, **tcp)

        with psycopg2.connect(user="mlflow", dbname="mlflow", password=password, **tcp) as conn, conn.cursor() as cur:
            cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles "
                        "WHERE rolname = current_user")
            assert cur.fetchone() == (False, False, False, False, False)
            cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mlflow'")
            assert cur.fetchone() == ("mlflow",)
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'experiments'")
            assert cur.fetchone() == (1,)  # mlflow server made its tables as the owner
            with pytest.raises(errors.InsufficientPrivilege):
                cur.execute("COPY (SELECT 1) TO PROGRAM 'id'")

        if os.geteuid() == 0:  # another local account cannot even reach the superuser's socket
            done = subprocess.run(["runuser", "-u", "nobody", "--", "psql", "-h", str(setup.data_dir), "-p",
                                   str(setup.pg_port), "-U", "postgres", "-d", "postgres", "-w", "-c", "SELECT 1"],
                                  capture_output=True, text=True, cwd="/")
            assert done.returncode != 0 and "Permission denied" in done.stderr, done.stderr

        # The password is in no log and on no command line (every account reads those).
        for log in [out, setup.folder / "mlflow-server.log", setup.data_dir / "server.log"]:
            assert password not in log.read_text(errors="replace"), log
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert password.encode() not in cmdline.read_bytes(), cmdline
            except OSError:
                continue
    finally:
        stop(proc, setup)


def test_a_killed_server_leaves_nothing_serving_and_the_next_start_works(setup: Setup, tmp_path: Path):
    proc = start(setup, tmp_path / "first.out")
    assert serving(setup.health) and pg_running(setup)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    wait_for(lambda: not serving(setup.health), 60, "mlflow server still serving after its wrapper was killed")
    wait_for(lambda: not pg_running(setup), 60, "PostgreSQL still running after the wrapper was killed")
    assert "exited without stopping its servers" in (tmp_path / "first.out").read_text()

    proc = start(setup, tmp_path / "second.out")
    try:
        assert serving(setup.health)
    finally:
        stop(proc, setup)


def test_a_start_stops_its_own_cluster_left_running(setup: Setup, caplog: pytest.LogCaptureFixture):
    """A cluster left running (its watchdog killed too) is stopped and started again, not refused."""
    from pipeline.tracking.server import Postgres, running_pid, service_user

    Postgres(setup.data_dir, setup.pg_port, service_user()).init()
    left = Postgres(setup.data_dir, setup.pg_port, service_user())
    left.start()
    first = running_pid(setup.data_dir)
    again = Postgres(setup.data_dir, setup.pg_port, service_user())
    try:
        with caplog.at_level("WARNING"):
            again.start()
        assert running_pid(setup.data_dir) not in (None, first)
        assert f"still running (pid {first})" in caplog.text
    finally:
        again.stop()


def test_a_postgres_start_that_fails_names_its_log_and_the_fix(setup: Setup):
    from pipeline.tracking.server import Postgres, PostgresUnavailable, service_user

    pg = Postgres(setup.data_dir, free_port(), service_user())
    pg.init()
    with socket.socket() as taken:  # the port held by someone else
        taken.bind(("127.0.0.1", pg.port))
        taken.listen()
        with pytest.raises(PostgresUnavailable) as failed:
            pg.start()
    message = str(failed.value)
    assert f"Its log, {setup.data_dir / 'server.log'}, ends:" in message
    assert "could not bind" in message or "Address already in use" in message
    assert f"If port {pg.port} is taken, choose another (--pg-port" in message
    assert not pg_running(setup)


def test_the_server_exits_non_zero_when_its_mlflow_server_dies(setup: Setup, tmp_path: Path):
    out = tmp_path / "server.out"
    proc = start(setup, out)
    try:
        children = [pid for pid, cmdline in children_of(proc.pid) if "mlflow" in cmdline and "server" in cmdline]
        assert len(children) == 1, children_of(proc.pid)
        os.kill(children[0], signal.SIGKILL)
        assert proc.wait(timeout=120) == 2
    finally:
        if proc.poll() is None:
            stop(proc, setup)
    text = out.read_text()
    assert f"error: mlflow server (pid {children[0]}) exited with status -9; its log, " in text
    assert "Stopping PostgreSQL." in text
    wait_for(lambda: not serving(setup.health), 30, "uvicorn still serving after the mlflow CLI was killed")
    assert not pg_running(setup)
