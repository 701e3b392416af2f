"""No private API of another library in src/ or flows/: a speed-up or shortcut that needs one breaks
silently on a minor upgrade (STYLE 16). The scan is syntactic (`ast`), so it errs towards flagging:
a private-looking name on anything that is not provably ours fails.

Flagged:
- an attribute whose name has one leading underscore (`os._exit`, `dataset._to_mlflow_entity()`),
  unless it is read from `self`/`cls`, from one of our own modules, classes or functions;
- `getattr`/`setattr`/`hasattr`/`delattr` with such a name as a literal string;
- `from lib import _name`, `import lib._private`, `from lib._private import name` for other libraries;
- monkeypatching: `setattr`/`delattr` on anything not provably ours, `module.attr = ...` on
  another library's module;
- Prefect's internal `PREFECT__*` environment variables (its settings are `PREFECT_*`).
NamedTuple's documented `_replace`, `_asdict`, `_fields`, `_make` and `_field_defaults` are public.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

OWN_PACKAGES = {"pipeline", "flows"}
PUBLIC_UNDERSCORED = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}
ATTR_BUILTINS = {"getattr", "setattr", "hasattr", "delattr"}
INTERNAL_ENV_PREFIXES = ("PREFECT__",)  # Prefect's own variables for its processes, not settings


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) \
        and name not in PUBLIC_UNDERSCORED


def is_own_module(module: str | None, level: int = 0) -> bool:
    return level > 0 or (module or "").split(".")[0] in OWN_PACKAGES


@dataclass(frozen=True)
class Finding:
    line: int
    what: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what}"


class Scanner(ast.NodeVisitor):
    """Collects imports first (which names are our own, which are other modules), then findings."""

    def __init__(self, tree: ast.Module) -> None:
        self.own: set[str] = {"self", "cls"}
        self.modules: set[str] = set()  # names bound to another library's module
        self.findings: list[Finding] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    (self.own if is_own_module(alias.name) else self.modules).add(bound)
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if is_own_module(node.module, node.level):
                        self.own.add(alias.asname or alias.name)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.own.add(node.name)
        self.visit(tree)

    def flag(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(getattr(node, "lineno", 0), what))

    @staticmethod
    def root(node: ast.expr) -> str | None:
        while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
            node = node.func if isinstance(node, ast.Call) else node.value
        return node.id if isinstance(node, ast.Name) else None

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not is_own_module(alias.name) and any(is_private(part) for part in alias.name.split(".")):
                self.flag(node, f"import of a private module: import {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if is_own_module(node.module, node.level):
            return
        if any(is_private(part) for part in (node.module or "").split(".")):
            self.flag(node, f"import from a private module: from {node.module} import ...")
        for alias in node.names:
            if is_private(alias.name):
                self.flag(node, f"private name imported: from {node.module} import {alias.name}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if is_private(node.attr) and self.root(node.value) not in self.own:
            self.flag(node, f"private attribute {node.attr!r} of {ast.unparse(node.value)}")
        if isinstance(node.ctx, ast.Store | ast.Del) and self.root(node.value) in self.modules:
            self.flag(node, f"monkeypatch: assignment to {ast.unparse(node)}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name in ATTR_BUILTINS and len(node.args) >= 2:
            target, attr = node.args[0], node.args[1]
            if (isinstance(attr, ast.Constant) and isinstance(attr.value, str) and is_private(attr.value)
                    and self.root(target) not in self.own):
                self.flag(node, f"private attribute {attr.value!r} through {name}()")
            if name in {"setattr", "delattr"} and self.root(target) not in self.own:
                self.flag(node, f"possible monkeypatch: {name}({ast.unparse(target)}, ...) on an object not ours")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and node.value.startswith(INTERNAL_ENV_PREFIXES):
            self.flag(node, f"a library's internal environment variable: {node.value!r}")


def scan(source: str) -> list[Finding]:
    return Scanner(ast.parse(source)).findings


def project_files() -> list[Path]:
    return sorted(p for folder in ("src", "flows") for p in (ROOT / folder).rglob("*.py"))


def test_the_scan_covers_the_project() -> None:
    names = {str(p.relative_to(ROOT)) for p in project_files()}
    assert {"src/pipeline/cli/main.py", "src/pipeline/tracking/store.py", "flows/early_server.py", "flows/training.py"} <= names


@pytest.mark.parametrize("path", project_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_third_party_api(path: Path) -> None:
    findings = scan(path.read_text(encoding="utf-8"))
    assert not findings, f"{path.relative_to(ROOT)}:\n" + "\n".join(map(str, findings))


CAUGHT = {
    "threading shutdown hook": "import threading\nthreading._shutdown()\n",
    "atexit's private runner": "import atexit\natexit._run_exitfuncs()\n",
    "os._exit": "import os\nos._exit(0)\n",
    "a private hook through getattr": "import threading\nshutdown = getattr(threading, '_shutdown', None)\n",
    "a copied private method's owner": ("from prefect.server.api.server import SubprocessASGIServer\n"
                                        "SubprocessASGIServer(port=1)._run_uvicorn_command()\n"),
    "MLflow dataset internals": ("import mlflow.data\n"
                                 "def f(frame):\n    return mlflow.data.from_pandas(frame)._to_mlflow_entity()\n"),
    "a private method on a returned object": "def f(dataset):\n    return dataset._to_mlflow_entity()\n",
    "a private name imported": "from mlflow.utils.requirements_utils import _check_requirement_satisfied\n",
    "a private module imported": "from prefect._internal.concurrency import api\n",
    "a private module, import form": "import prefect._internal.concurrency\n",
    "monkeypatch by setattr": ("import mlflow.utils.environment\n"
                               "setattr(mlflow.utils.environment, 'warn_dependency_requirement_mismatches', print)\n"),
    "monkeypatch by setattr on an alias": ("import mlflow.pyfunc as pf\n"
                                           "setattr(pf, 'warn_dependency_requirement_mismatches', print)\n"),
    "monkeypatch by assignment": "import mlflow.pyfunc\nmlflow.pyfunc.warn_dependency_requirement_mismatches = print\n",
    "monkeypatch through a loop variable": ("import mlflow.pyfunc\nimport mlflow.utils.environment\n"
                                            "for module in (mlflow.pyfunc, mlflow.utils.environment):\n"
                                            "    setattr(module, 'warn_dependency_requirement_mismatches', print)\n"),
    "Prefect's internal variables": "import os\nenv = {**os.environ, 'PREFECT__SERVER_EPHEMERAL': '1'}\n",
    "a private attribute deep in an expression": "import torch\nx = torch.nn.Module()._modules['a']\n",
}


@pytest.mark.parametrize("case", list(CAUGHT))
def test_the_scan_catches(case: str) -> None:
    assert scan(CAUGHT[case]), case


ALLOWED = {
    "our own private helper": "from pipeline import tracking\ntracking._short(ValueError())\n",
    "our own relative import": "from . import tracking\ntracking._short(ValueError())\n",
    "self and cls": "class A:\n    def f(self):\n        return self._x\n    @classmethod\n    def g(cls):\n        return cls._y\n",
    "a module-level helper of the same file": "def _helper():\n    pass\n_helper()\n",
    "a private function of our own, imported": "from pipeline.cli.main import _fmt\n_fmt(1.0)\n",
    "dunders": "import torch\nname = torch.__version__\nsubs = Exception.__subclasses__()\n",
    "namedtuple's public _replace": "import collections\nP = collections.namedtuple('P', 'a')\nP(1)._replace(a=2)\n",
    "setattr on our own objects": ("from pipeline import config\nsetattr(config, 'X', 1)\n"
                                   "class A:\n    def f(self):\n        setattr(self, 'x', 1)\n"),
    "Prefect's public settings": "import os\nos.environ['PREFECT_API_URL'] = 'http://127.0.0.1:1/api'\n",
    "public getattr": "import os\ngetattr(os, 'environ')\n",
}


@pytest.mark.parametrize("case", list(ALLOWED))
def test_the_scan_allows(case: str) -> None:
    assert not scan(ALLOWED[case]), case
