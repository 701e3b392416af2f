"""pipeline.tracking.server's checks that need no PostgreSQL: the access rules it writes, the password
file, a data directory left by the earlier trust layout, a cluster left running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.tracking.server import (
    PASSWORD_FILE,
    TrackingServerError,
    hba_rules,
    read_password,
    running_pid,
    tracking_server,
)


def test_the_access_rules_allow_the_mlflow_role_over_tcp_with_a_password_and_nothing_else():
    rules = [line.split() for line in hba_rules("postgres").splitlines() if not line.startswith("#")]
    assert rules == [["local", "all", "postgres", "peer"],
                     ["host", "mlflow", "mlflow", "127.0.0.1/32", "scram-sha-256"]]


def test_the_password_file_is_made_private_and_kept(tmp_path: Path):
    path = tmp_path / PASSWORD_FILE
    password = read_password(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(password) >= 32 and read_password(path) == password


def test_a_password_file_others_can_read_is_refused(tmp_path: Path):
    path = tmp_path / PASSWORD_FILE
    path.write_text("secret\n")
    path.chmod(0o644)
    with pytest.raises(TrackingServerError, match=f"{path} .* readable by other accounts: chmod 600 {path}"):
        read_password(path)


def test_a_cluster_made_with_trust_authentication_is_refused_saying_what_to_do(tmp_path: Path):
    """What the earlier code left: initdb --auth=trust, with `mlflow` as its superuser."""
    data_dir = tmp_path / "postgres"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("15\n")
    (data_dir / "pg_hba.conf").write_text("# TYPE  DATABASE        USER            ADDRESS                 METHOD\n"
                                          "local   all             all                                     trust\n"
                                          "host    all             all             127.0.0.1/32            trust\n")
    with pytest.raises(TrackingServerError) as refused:
        with tracking_server(tmp_path, 1, 2):
            pass
    message = str(refused.value)
    assert f"{data_dir} is a PostgreSQL cluster with trust authentication in {data_dir / 'pg_hba.conf'}" in message
    assert f"mv {data_dir} {data_dir}.trust-old" in message
    assert not (tmp_path / PASSWORD_FILE).exists()


def test_a_live_postmaster_pid_is_found_and_a_stale_one_is_not(tmp_path: Path):
    assert running_pid(tmp_path) is None
    postmaster = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); time.sleep(60)", "postgres"],
                                  stdout=subprocess.PIPE)
    try:
        postmaster.stdout.readline()  # started: its command line is its own
        (tmp_path / "postmaster.pid").write_text(f"{postmaster.pid}\n{tmp_path}\n")
        assert running_pid(tmp_path) == postmaster.pid
    finally:
        postmaster.kill()
        postmaster.wait()
    assert running_pid(tmp_path) is None  # its process is gone
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
    assert running_pid(tmp_path) is None  # a live pid, but not a postgres
