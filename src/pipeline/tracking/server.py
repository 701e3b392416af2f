"""A team-sized MLflow tracking server on one machine: PostgreSQL behind `mlflow server`.

    python -m pipeline.tracking.server [--dir .tracking] [--pg-port 5433] [--port 5000]

(`make tracking-server` runs it.) It creates a PostgreSQL cluster in a data directory under the
project on first use (`initdb`), starts `postgres` on the loopback interface only, creates the
`mlflow` role and database, and runs `mlflow server` on it with artifact serving, so clients need
only the `MLFLOW_TRACKING_URI` it prints. Ctrl-C (or SIGTERM) stops both; so does the death of the
`mlflow server` (the command then exits non-zero) and, through a watchdog process, the death of
this command however it is killed. PostgreSQL refuses to run as root: as root, the cluster runs as
an unprivileged system user (`postgres`, else `nobody`) that owns the data directory.

Security (docs/scale-out.md): the cluster's superuser is the account that owns it, reachable only
through the Unix socket in the 0700 data directory (peer authentication); over TCP only the
`mlflow` role may connect, to the `mlflow` database, with a SCRAM password generated at init into
the 0600 file `<dir>/mlflow-db-password`. The `mlflow` role owns its database and nothing more.

The PostgreSQL binaries are found on PATH or in /usr/lib/postgresql/<version>/bin.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

DATABASE = "mlflow"
DB_USER = "mlflow"
PASSWORD_FILE = "mlflow-db-password"  # in the tracking folder, beside the data directory
HBA_HEADER = "# Written by pipeline.tracking.server: see docs/scale-out.md (PostgreSQL security model).\n"


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


def owner_name(user: str | None) -> str:
    """The cluster's superuser: the OS account PostgreSQL runs as, so peer authentication maps it."""
    return user if user is not None else pwd.getpwuid(os.geteuid()).pw_name


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 secret for `password` (RFC 5802/7677), so the plain password never reaches the server."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    salt64, stored64, server64 = (base64.b64encode(raw).decode()
                                  for raw in (salt, hashlib.sha256(client_key).digest(), server_key))
    return f"SCRAM-SHA-256${iterations}:{salt64}${stored64}:{server64}"


def read_password(path: Path) -> str:
    """The `mlflow` role's password from its file, made at init (a new one where the file is missing)."""
    if not path.exists():
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        log.info("wrote the PostgreSQL password of role %s to %s (mode 0600)", DB_USER, path)
    if path.stat().st_mode & 0o077:
        raise TrackingServerError(f"{path} (the PostgreSQL password) is readable by other accounts: chmod 600 {path}")
    return path.read_text().strip()


def hba_rules(owner: str) -> str:
    """pg_hba.conf: the owner through the local socket only (peer), `mlflow` over loopback TCP with a SCRAM password."""
    return (f"{HBA_HEADER}# TYPE  DATABASE    USER        ADDRESS         METHOD\n"
            f"local   all         {owner:<11} {'':<15} peer\n"
            f"host    {DATABASE:<11} {DB_USER:<11} 127.0.0.1/32    scram-sha-256\n")


def running_pid(data_dir: Path) -> int | None:
    """The pid in `data_dir`/postmaster.pid when that process is alive and a postgres (our cluster still running)."""
    import psutil

    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        try:
            if "postgres" not in " ".join(psutil.Process(pid).cmdline()):
                return None  # a stale file whose pid another program now has
        except psutil.NoSuchProcess:  # gone, or a zombie
            return None
        except psutil.AccessDenied:  # alive, another user's, its command line hidden
            return pid
        return pid
    return None


def log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@dataclass
class Postgres:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port` only."""

    data_dir: Path
    port: int
    user: str | None = None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def store_uri(self, password: str) -> str:
        """The `mlflow server` backend store URI: it carries the password, so pass it by environment, never argv or logs."""
        return f"postgresql+psycopg2://{DB_USER}:{quote(password, safe='')}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, cmd: list[str], what: str, stdin: str | None = None) -> str:
        done = subprocess.run(as_user(cmd, self.user), capture_output=True, text=True, check=False,
                              cwd=self.data_dir.parent, input=stdin)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")
        return done.stdout

    def init(self) -> bool:
        """Create the cluster unless `data_dir` holds one already; True when created. Refuse a trust-authentication one."""
        if (self.data_dir / "PG_VERSION").is_file():
            self.refuse_trust()
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            if not reachable_by(self.data_dir, self.user):
                raise PostgresUnavailable(f"{self.data_dir} is not reachable by user {self.user!r} that PostgreSQL must "
                                          "run as (a folder above it lacks o+x): choose another --dir")
            entry = pwd.getpwnam(self.user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        self._run([pg_binary("initdb"), "-D", str(self.data_dir), "-U", owner_name(self.user), "--auth-local=peer",
                   "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-instructions"], "initdb")
        (self.data_dir / "pg_hba.conf").write_text(hba_rules(owner_name(self.user)))  # the file keeps its owner
        return True

    def refuse_trust(self) -> None:
        """An existing cluster that lets anyone in without a password (made by the earlier trust layout) is not started."""
        hba = self.data_dir / "pg_hba.conf"
        rules = [line.split() for line in hba.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if any(rule[-1] == "trust" for rule in rules):
            raise TrackingServerError(
                f"{self.data_dir} is a PostgreSQL cluster with trust authentication in {hba} (made by an earlier "
                f"`make tracking-server`: every local account could connect as a superuser); it is not started. If it "
                f"still runs, stop it (pg_ctl -D {self.data_dir} stop, as the account that owns it); move it aside "
                f"(mv {self.data_dir} {self.data_dir}.trust-old) and start again: a new cluster with password "
                "authentication is made (docs/scale-out.md, PostgreSQL security model)")

    def start(self) -> None:
        """Start the server (loopback only, its socket in the 0700 data directory) and wait until it accepts.

        A server of this data directory left running (the command that started it was killed) is stopped first.
        """
        left = running_pid(self.data_dir)
        if left is not None:
            log.warning("PostgreSQL of %s is still running (pid %d), left by an earlier start that did not stop it: "
                        "stopping it", self.data_dir, left)
            self.stop(quiet=False)
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir} -c unix_socket_permissions=0700 "
                   "-c password_encryption=scram-sha-256")
        try:
            self._run([pg_binary("pg_ctl"), "-D", str(self.data_dir), "-o", options, "-l", str(self.log_file), "-w",
                       "-t", "120", "start"], "pg_ctl start")
        except PostgresUnavailable as exc:
            raise PostgresUnavailable(
                f"PostgreSQL did not start: {exc}\nIts log, {self.log_file}, ends:\n{log_tail(self.log_file)}\n"
                f"If port {self.port} is taken, choose another (--pg-port, or PG_PORT= for make); if another "
                f"PostgreSQL runs on this data directory, stop it (pg_ctl -D {self.data_dir} stop, as the account that "
                "owns it)") from None

    def provision(self, password: str) -> None:
        """The `mlflow` role (login, password, no other right) and its database, which it owns; safe to repeat."""
        sql = (f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_USER}') THEN "
               f"CREATE ROLE {DB_USER}; END IF; END $$;\n"
               f"ALTER ROLE {DB_USER} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
               f"PASSWORD '{scram_verifier(password)}';\n"
               f"SELECT 'CREATE DATABASE {DATABASE} OWNER {DB_USER}' "
               f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')\\gexec\n"
               f"ALTER DATABASE {DATABASE} OWNER TO {DB_USER};\n"
               f"REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC;\n")
        self._run([pg_binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.data_dir), "-p",
                   str(self.port), "-U", owner_name(self.user), "-d", "postgres", "-f", "-"], "psql (creating the "
                  f"{DB_USER} role and database)", stdin=sql)

    def stop(self, quiet: bool = True) -> None:
        try:
            self._run([pg_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"],
                      "pg_ctl stop")
        except TrackingServerError as exc:
            if not quiet:
                raise PostgresUnavailable(f"{exc}\nIts log, {self.log_file}, ends:\n{log_tail(self.log_file)}") from None
            log.warning("%s (data directory %s)", exc, self.data_dir)


def kill_group(pgid: int, timeout: float = 30, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM process group `pgid`, then SIGKILL what is left after `timeout` (`proc`, its leader, is reaped)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            proc = None
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group `proc` leads (started with start_new_session=True), then SIGKILL.

    The whole group, even where its leader has exited: uvicorn outlives a killed `mlflow server` CLI.
    """
    kill_group(proc.pid, timeout, proc)


def wait_healthy(url: str, proc: subprocess.Popen, log_file: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrackingServerError(f"mlflow server exited with status {proc.returncode}; its log, {log_file}, "
                                      f"ends:\n{log_tail(log_file)}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise TrackingServerError(f"mlflow server at {url} not healthy after {timeout:.0f} s (its log: {log_file})")


def mlflow_server_command(artifacts: Path, port: int, workers: int) -> list[str]:
    """`mlflow server` serving artifacts from `artifacts` (clients need no access to it).

    The backend store URI carries the database password: it goes in MLFLOW_BACKEND_STORE_URI, which only
    this account can read, not on a command line that every account sees.
    """
    mlflow = Path(sys.executable).with_name("mlflow")
    return [str(mlflow) if mlflow.exists() else "mlflow", "server", "--artifacts-destination", str(artifacts),
            "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]


def start_watchdog(pg: Postgres) -> subprocess.Popen:
    """A process that outlives this one: when this one dies, however, it stops the groups it was told of and PostgreSQL.

    It reads process group ids on its stdin until "done" (a clean stop) or end of file (we are gone).
    """
    return subprocess.Popen([sys.executable, "-m", "pipeline.tracking.server", "--watch", str(pg.data_dir),
                             "--pg-port", str(pg.port)], stdin=subprocess.PIPE, text=True, start_new_session=True)


def watch(data_dir: Path, port: int) -> int:
    """The watchdog's body (see start_watchdog)."""
    groups = []
    for line in sys.stdin:
        if line.strip() == "done":
            return 0
        groups.append(int(line))
    print(f"pipeline.tracking.server exited without stopping its servers: stopping mlflow server and PostgreSQL "
          f"({data_dir})", file=sys.stderr, flush=True)
    for pgid in groups:
        kill_group(pgid, timeout=10)
    Postgres(data_dir, port, service_user()).stop()
    return 0


@dataclass
class Running:
    """PostgreSQL and `mlflow server` up: the tracking URI, and a check that the server is still there."""

    url: str
    mlflow: subprocess.Popen
    log_file: Path

    def check(self) -> None:
        """Raise when `mlflow server` has exited (the caller's exit then stops PostgreSQL)."""
        if self.mlflow.poll() is not None:
            raise TrackingServerError(f"mlflow server (pid {self.mlflow.pid}) exited with status "
                                      f"{self.mlflow.returncode}; its log, {self.log_file}, ends:\n"
                                      f"{log_tail(self.log_file)}\nStopping PostgreSQL.")


@contextlib.contextmanager
def tracking_server(folder: Path, pg_port: int, port: int, workers: int = 2,
                    log_file: Path | None = None) -> Iterator[Running]:
    """PostgreSQL and `mlflow server` running for the block; both stop on exit, or with this process if it is killed."""
    folder = folder.resolve()
    pg = Postgres(folder / "postgres", pg_port, service_user())
    if pg.init():
        log.info("created a PostgreSQL cluster in %s (superuser %s, local socket only)", pg.data_dir,
                 owner_name(pg.user))
    password = read_password(folder / PASSWORD_FILE)
    pg.start()
    watchdog = start_watchdog(pg)
    proc: subprocess.Popen | None = None
    try:
        pg.provision(password)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "MLFLOW_BACKEND_STORE_URI": pg.store_uri(password)}
        log_file = log_file or folder / "mlflow-server.log"
        with log_file.open("a") as out:
            proc = subprocess.Popen(mlflow_server_command(folder / "artifacts", port, workers), env=env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder)
        watchdog.stdin.write(f"{proc.pid}\n")
        watchdog.stdin.flush()
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, log_file)
        yield Running(url, proc, log_file)
    finally:
        try:
            if proc is not None:
                stop_process_group(proc)
        finally:
            pg.stop()
            with contextlib.suppress(OSError):
                watchdog.stdin.write("done\n")
                watchdog.stdin.close()
            watchdog.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tracking.server", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".tracking", help="folder for the PostgreSQL cluster, artifacts and logs (default: %(default)s)")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's loopback port (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5000, help="the MLflow server's loopback port (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="MLflow server worker processes (default: %(default)s)")
    parser.add_argument("--watch", type=Path, help=argparse.SUPPRESS)  # the watchdog (start_watchdog) of a data dir
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.watch is not None:
        return watch(args.watch, args.pg_port)
    def on_term(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one shutdown: a second signal must not cut it short
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)  # stop both servers on SIGTERM as on Ctrl-C
    try:
        with tracking_server(Path(args.dir), args.pg_port, args.port, args.workers) as server:
            print(f"MLflow tracking server on PostgreSQL is up. In another shell:\n\n"
                  f"    export MLFLOW_TRACKING_URI={server.url}\n\nMLflow UI: {server.url}   (Ctrl-C stops both "
                  "servers)", flush=True)
            while True:
                server.check()
                time.sleep(1)
    except TrackingServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
