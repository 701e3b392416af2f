"""Writing result files (the batch forecasts) without harming what lies around them.

An existing file is replaced only when asked; the tracking store (the SQLite file, its
journal/WAL/lock siblings and the artifact folder `mlruns/`), the tracking server's folder (its
PostgreSQL cluster and artifacts), Prefect's home and database (named by the caller: this module
imports no Prefect) and the project's own files are never written over, whatever is asked. Files are written to a temporary file beside the target
and renamed over it, so a failure leaves nothing half-written, and get the permissions any
new file gets (0666 less the umask), not the 0600 of a temporary file.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from pipeline.errors import OutputError

log = logging.getLogger(__name__)

SQLITE_SIBLINGS = ("-journal", "-wal", "-shm", ".lock")  # SQLite's files beside a database, and our store lock
ARTIFACT_DIR = "mlruns"  # the local store's artifact folder (MLflow's default), beside the database or here
PROJECT_FILES = ("pyproject.toml",)
PROJECT_DIRS = ("configs", "data", "src", "flows", "tests", ".git")
OVERWRITE_HINT = "--overwrite (CLI) or overwrite=true (flow parameter)"
# `make tracking-server`'s folder (pipeline.tracking.server --dir): $TRACKING_DIR, as the Makefile reads it, else
# `.tracking` in the working directory or the project; and any folder laid out as one (its PostgreSQL cluster
# in postgres/, artifacts beside it), wherever it was started.
TRACKING_DIR_ENV = "TRACKING_DIR"
DEFAULT_TRACKING_DIR = ".tracking"
POSTGRES_MARKS = ("PG_VERSION", "postgres/PG_VERSION")  # a PostgreSQL cluster, or a tracking server's folder


@dataclass(frozen=True)
class Guarded:
    """A file or folder that no output goes into, whatever is asked: `path` and what it is, for the message."""

    path: Path
    what: str


def tracking_server_dirs(cwd: Path) -> list[Guarded]:
    """The tracking server's folders this command can name: $TRACKING_DIR, else `.tracking` here and in the project."""
    named = os.environ.get(TRACKING_DIR_ENV)
    if named:
        return [Guarded(cwd / Path(named).expanduser(), f"the tracking server's folder (${TRACKING_DIR_ENV})")]
    return [Guarded(root / DEFAULT_TRACKING_DIR, "the tracking server's folder (make tracking-server)")
            for root in dict.fromkeys([cwd, *filter(None, [git_root(cwd)])])]


def server_folder_above(path: Path) -> Guarded | None:
    """The nearest folder holding `path` that is a PostgreSQL cluster or a tracking server's folder, if any."""
    for folder in [path, *path.parents]:
        for mark in POSTGRES_MARKS:
            try:
                found = (folder / mark).is_file()
            except OSError:  # a cluster we may not look into is not ours to write into either
                found = False
            if found:
                return Guarded(folder, "a PostgreSQL cluster" if mark == "PG_VERSION" else "a tracking server's folder")
    return None


def store_paths(tracking_uris: list[str], cwd: Path) -> tuple[list[Path], list[Path]]:
    """Files (a SQLite store and its siblings) and folders (artifacts) that belong to the tracking stores."""
    files, folders = [], [cwd / ARTIFACT_DIR]
    for uri in tracking_uris:
        parsed = urlparse(uri)
        if parsed.scheme == "sqlite" and uri.startswith("sqlite:///"):
            db = Path(unquote(uri.removeprefix("sqlite:///")).split("?")[0])
            db = db if db.is_absolute() else cwd / db
            files += [db, *(db.with_name(db.name + s) for s in SQLITE_SIBLINGS)]
            folders.append(db.parent / ARTIFACT_DIR)
        elif parsed.scheme in ("file", ""):
            folders.append(Path(unquote(parsed.path)) if parsed.path else cwd / ARTIFACT_DIR)
    return files, folders


def tracked_by_git(path: Path, cwd: Path) -> bool:
    """Whether git tracks `path` in the repository that holds the working directory (False outside one)."""
    try:
        done = subprocess.run(["git", "-C", str(cwd), "ls-files", "--error-unmatch", "--", str(path)],
                              capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def git_root(cwd: Path) -> Path | None:
    try:
        done = subprocess.run(["git", "-C", str(cwd), "rev-parse", "--show-toplevel"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(out: str | os.PathLike[str], overwrite: bool = False, tracking_uris: list[str] | None = None,
                 cwd: Path | None = None, guarded: Sequence[Guarded] = ()) -> Path:
    """The path to write to, or OutputError naming the path and the rule that refuses it.

    `tracking_uris` defaults to the resolved tracking URI (and $MLFLOW_REGISTRY_URI when set).
    `guarded`: more files and folders never written into (the flows name Prefect's home and
    database); the tracking server's folders are always added. A symbolic link is judged by
    itself and by what it points to.
    """
    cwd = (cwd or Path.cwd()).absolute()
    if tracking_uris is None:
        from pipeline.tracking.store import resolve_tracking_uri

        tracking_uris = [resolve_tracking_uri(), *filter(None, [os.environ.get("MLFLOW_REGISTRY_URI")])]
    given = Path(out).expanduser()
    path = Path(os.path.abspath(cwd / given))
    candidates = {path, path.resolve()}
    files, folders = store_paths(tracking_uris, cwd)
    files = {Path(os.path.abspath(f)) for f in files} | {f.resolve() for f in files}
    folders = {Path(os.path.abspath(d)) for d in folders} | {d.resolve() for d in folders}
    guarded = [*guarded, *tracking_server_dirs(cwd)]
    for candidate in candidates:
        if candidate in files:
            raise OutputError(f"{given}: refused, it is a file of the MLflow tracking store ({candidate}); "
                              "rule: the tracking store is never written over, even with --overwrite")
        store_dir = next((d for d in folders if _within(candidate, d)), None)
        if store_dir is not None:
            raise OutputError(f"{given}: refused, it lies in the tracking store's artifact folder {store_dir}; "
                              "rule: nothing is written into the tracking store, even with --overwrite")
        _refuse_guarded(given, candidate, guarded)
    if path.is_dir():
        raise OutputError(f"{given}: is a directory; give a file path for the forecasts CSV")
    if path.exists() or path.is_symlink():
        _refuse_project_file(given, candidates, cwd)
        if not overwrite:
            raise OutputError(f"{given}: already exists; rule: an existing file is replaced only with {OVERWRITE_HINT}")
    elif any(tracked_by_git(c, cwd) for c in candidates):  # tracked, though deleted from the working tree
        raise OutputError(f"{given}: refused, git tracks this path in the project; rule: the project's own files "
                          "are never written over, even with --overwrite")
    return path


def _refuse_guarded(given: Path, candidate: Path, guarded: Sequence[Guarded]) -> None:
    for item in guarded:
        for folder in {Path(os.path.abspath(item.path)), item.path.resolve()}:
            if _within(candidate, folder):
                raise OutputError(f"{given}: refused, it lies in {item.what} {folder}; rule: nothing is written "
                                  f"into {item.what}, even with --overwrite")
    found = server_folder_above(candidate)
    if found is not None:
        raise OutputError(f"{given}: refused, it lies in {found.what} {found.path}; rule: nothing is written into "
                          "a database's or tracking server's files, even with --overwrite")


def _refuse_project_file(given: Path, candidates: set[Path], cwd: Path) -> None:
    roots = {cwd, *filter(None, [git_root(cwd)])}
    for candidate in candidates:
        for root in roots:
            named = [root / f for f in PROJECT_FILES]
            if candidate in named or any(_within(candidate, root / d) for d in PROJECT_DIRS):
                raise OutputError(
                    f"{given}: refused, it is one of the project's own files ({candidate.relative_to(root)} in "
                    f"{root}); rule: pyproject.toml and the files in {', '.join(d + '/' for d in PROJECT_DIRS)} are "
                    "never written over, even with --overwrite")
        if tracked_by_git(candidate, cwd):
            raise OutputError(f"{given}: refused, git tracks this file in the project; rule: the project's own "
                              "files are never written over, even with --overwrite")


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask sets while it reads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_forecasts(frame: pd.DataFrame, out: str | os.PathLike[str], overwrite: bool = False,
                    tracking_uris: list[str] | None = None, guarded: Sequence[Guarded] = ()) -> Path:
    """Write `frame` as CSV to `out` after `check_output`; through a temporary file and a rename.

    A new file gets 0666 less the umask; a replaced file keeps its permissions.
    """
    path = check_output(out, overwrite, tracking_uris, guarded=guarded)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            frame.to_csv(fh, index=False)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote %d rows to %s", len(frame), path)
    return path
