"""The README and docs/ as a new user reads them: every command marked runnable works as written.

A fenced block opened with ```` ```bash runnable ```` is run line by line, in page order, in a
fresh temporary copy of the project for each page (tracked and new files, modification times kept, the project's
`.venv` linked in), with no MLflow or Prefect variables set and a home of its own. A block opened
with ```` ```bash runnable server=URL ```` starts a server: it runs in the background until URL
answers, and is stopped when the page is done.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.processes import stop_groups

pytestmark = pytest.mark.integration

FENCE = re.compile(r"^```bash runnable(?: server=(?P<server>\S+))?\s*\n(?P<body>.*?)^```\s*$", re.M | re.S)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_TIMEOUT_S = 600
SERVER_TIMEOUT_S = 180


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    body: str
    server: str | None = None


def runnable_blocks(text: str, page: str) -> list[Block]:
    return [Block(page, text.count("\n", 0, m.start()) + 1, m.group("body"), m.group("server"))
            for m in FENCE.finditer(text)]


def test_the_fence_grammar() -> None:
    text = "intro\n```bash runnable\nmake run\n```\n```bash\nnot me\n```\n```bash runnable server=http://x/y\nmake ui\n```\n"
    blocks = runnable_blocks(text, "p")
    assert [(b.line, b.body, b.server) for b in blocks] == [(2, "make run\n", None), (8, "make ui\n", "http://x/y")]


def project_copy(dest: Path) -> Path:
    """Tracked and untracked-but-not-ignored files, with their modification times, and the venv linked."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    stamp = ROOT / ".venv" / ".installed"
    if stamp.exists():  # `make` in the copy must use the linked venv as it is, never reinstall into it
        before = stamp.stat().st_mtime - 1
        for name in ("pyproject.toml", "requirements.lock"):
            os.utime(dest / name, (before, before))
    return dest


def test_each_page_starts_from_a_fresh_copy(tmp_path: Path) -> None:
    """A page's blocks run in order on a copy with no state of earlier runs (a first run, as a reader's): the
    checkout's own store, models and outputs (ignored files) stay behind, so an order fault such as asking for
    an alias the first run never sets fails its page."""
    work = project_copy(tmp_path / "project")
    assert (work / "README.md").exists() and (work / "configs" / "default.yaml").exists()
    for state in ("mlflow.db", "mlruns", "forecasts.csv", ".prefect"):
        assert not (work / state).exists(), f"{state} of the checkout leaked into the page's copy"


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "PREFECT_", "PIPELINE_", "PYTEST", "MAKE")) and k != "PYTHONPATH"}
    env.update({"HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})  # no network here
    return env


def answers(url: str) -> bool:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    return False


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p.read_text(encoding="utf-8"), p.name)],
                         ids=lambda p: p.name)
@pytest.mark.slow
def test_runnable_commands_work_as_written(page: Path, tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "pipeline").exists():
        pytest.skip("the project's .venv is not installed here (run `make setup`)")
    work = project_copy(tmp_path / "project")
    (tmp_path / "home").mkdir()
    env = clean_env(tmp_path / "home")
    servers: list[subprocess.Popen] = []
    try:
        for block in runnable_blocks(page.read_text(encoding="utf-8"), page.name):
            where = f"{block.page} line {block.line}"
            if block.server:
                log = (tmp_path / f"server-{block.line}.log").open("w")
                proc = subprocess.Popen(["bash", "-c", block.body], cwd=work, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                servers.append(proc)
                deadline = time.monotonic() + SERVER_TIMEOUT_S
                while not answers(block.server):
                    assert proc.poll() is None, f"{where}: the server exited {proc.returncode}:\n" + \
                        (tmp_path / f"server-{block.line}.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, f"{where}: {block.server} did not answer in {SERVER_TIMEOUT_S} s"
                    time.sleep(0.5)
                continue
            for command in (c for c in block.body.splitlines() if c.strip() and not c.lstrip().startswith("#")):
                done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=work, env=env,
                                      capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
                assert done.returncode == 0, (f"{where}: `{command}` exited {done.returncode}\n"
                                              f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}")
                assert "Traceback" not in done.stderr, f"{where}: `{command}` printed a traceback:\n{done.stderr[-3000:]}"
    finally:
        stop_groups(servers, timeout=20)
