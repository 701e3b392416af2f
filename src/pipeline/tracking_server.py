"""A team-sized MLflow tracking server on one machine: PostgreSQL behind `mlflow server`.

    python -m pipeline.tracking_server [--dir .tracking] [--pg-port 5433] [--port 5000]

(`make tracking-server` runs it.) It creates a PostgreSQL cluster in a data directory under the
project on first use (`initdb`), starts `postgres` on the loopback interface only, creates the
`mlflow` database, and runs `mlflow server` on it with artifact serving, so clients need only the
`MLFLOW_TRACKING_URI` it prints. Ctrl-C (or SIGTERM) stops both. PostgreSQL refuses to run as
root: as root, the cluster runs as an unprivileged system user (`postgres`, else `nobody`) that
owns the data directory. Local trust authentication for the loopback interface only; a
production layout (managed PostgreSQL with a password, an object store for artifacts) is in
docs/scale-out.md.

The PostgreSQL binaries are found on PATH or in /usr/lib/postgresql/<version>/bin.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

DATABASE = "mlflow"
DB_USER = "mlflow"


class TrackingServerError(PipelineError):
    """PostgreSQL or the MLflow server could not be set up or started."""


class PostgresUnavailable(TrackingServerError):
    """PostgreSQL itself is missing or would not start (as opposed to the MLflow server on it)."""


def pg_binary(name: str) -> str:
    """Path of a PostgreSQL program (`initdb`, `pg_ctl`, ...), on PATH or in Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).is_file():
            return str(folder / name)
    raise PostgresUnavailable(f"PostgreSQL's `{name}` not found: install PostgreSQL (Debian: apt-get install postgresql)")


def service_user() -> str | None:
    """The user PostgreSQL runs as: None (ourselves) unless we are root, which it refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresUnavailable("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


def as_user(cmd: list[str], user: str | None) -> list[str]:
    """`cmd` run as `user` (through runuser/setpriv when we are root), else as is."""
    if user is None:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--", *cmd]
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", *cmd]


def reachable_by(path: Path, user: str) -> bool:
    """Whether `user` can reach `path`: every folder above it must let others through (x bit)."""
    entry = pwd.getpwnam(user)
    for folder in [*reversed(path.resolve().parents)]:
        st = folder.stat()
        if st.st_uid != entry.pw_uid and not st.st_mode & 0o001:
            return False
    return True


@dataclass
class Postgres:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port` only."""

    data_dir: Path
    port: int
    user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, cmd: list[str], what: str) -> str:
        done = subprocess.run(as_user(cmd, self.user), capture_output=True, text=True, check=False,
                              cwd=self.data_dir.parent)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")
        return done.stdout

    def init(self) -> bool:
        """Create the cluster unless `data_dir` holds one already; True when created."""
        if (self.data_dir / "PG_VERSION").is_file():
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            if not reachable_by(self.data_dir, self.user):
                raise PostgresUnavailable(f"{self.data_dir} is not reachable by user {self.user!r} that PostgreSQL must "
                                          "run as (a folder above it lacks o+x): choose another --dir")
            entry = pwd.getpwnam(self.user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        self._run([pg_binary("initdb"), "-D", str(self.data_dir), "-U", DB_USER, "--auth=trust", "--encoding=UTF8",
                   "--no-instructions"], "initdb")
        return True

    def start(self) -> None:
        """Start the server (loopback only, its socket in the data directory) and wait until it accepts."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir}"
        self._run([pg_binary("pg_ctl"), "-D", str(self.data_dir), "-o", options, "-l",
                   str(self.data_dir / "server.log"), "-w", "-t", "120", "start"], "pg_ctl start")

    def create_database(self) -> None:
        """The `mlflow` database, unless it exists."""
        listed = self._run([pg_binary("psql") if shutil.which("psql") else "psql", "-h", "127.0.0.1", "-p",
                            str(self.port), "-U", DB_USER, "-d", "postgres", "-tAc",
                            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"], "psql")
        if listed.strip() != "1":
            self._run([pg_binary("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", DB_USER, DATABASE],
                      "createdb")

    def stop(self) -> None:
        try:
            self._run([pg_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], "pg_ctl stop")
        except TrackingServerError as exc:
            log.warning("%s (data directory %s)", exc, self.data_dir)


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group `proc` leads (started with start_new_session=True), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrackingServerError(f"mlflow server exited with status {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise TrackingServerError(f"mlflow server at {url} not healthy after {timeout:.0f} s")


def mlflow_server_command(store_url: str, artifacts: Path, port: int, workers: int) -> list[str]:
    """`mlflow server` on the PostgreSQL store, serving artifacts from `artifacts` (clients need no access to it)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [str(mlflow) if mlflow.exists() else "mlflow", "server", "--backend-store-uri", store_url,
            "--artifacts-destination", str(artifacts), "--serve-artifacts", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers)]


@contextlib.contextmanager
def tracking_server(folder: Path, pg_port: int, port: int, workers: int = 2,
                    log_file: Path | None = None) -> Iterator[str]:
    """PostgreSQL and `mlflow server` running for the block; yields the tracking URI. Both stop on exit."""
    folder = folder.resolve()
    pg = Postgres(folder / "postgres", pg_port, service_user())
    if pg.init():
        log.info("created a PostgreSQL cluster in %s (user %s)", pg.data_dir, pg.user or "current")
    pg.start()
    proc: subprocess.Popen | None = None
    try:
        pg.create_database()
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        out = (log_file or folder / "mlflow-server.log").open("a")
        proc = subprocess.Popen(mlflow_server_command(pg.url, folder / "artifacts", port, workers), env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        yield url
    finally:
        try:
            if proc is not None:
                stop_process_group(proc)
        finally:
            pg.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tracking_server", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".tracking", help="folder for the PostgreSQL cluster, artifacts and logs (default: %(default)s)")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's loopback port (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5000, help="the MLflow server's loopback port (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="MLflow server worker processes (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    def on_term(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one shutdown: a second signal must not cut it short
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)  # stop both servers on SIGTERM as on Ctrl-C
    try:
        with tracking_server(Path(args.dir), args.pg_port, args.port, args.workers) as url:
            print(f"MLflow tracking server on PostgreSQL is up. In another shell:\n\n"
                  f"    export MLFLOW_TRACKING_URI={url}\n\nMLflow UI: {url}   (Ctrl-C stops both servers)", flush=True)
            while True:
                time.sleep(3600)
    except TrackingServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
