"""The layering the design rests on: the rooms of src/pipeline import only the rooms below them, no module
imports itself in a cycle, MLflow stays in `tracking` (and the logged model in `serving`), Prefect in `cli` and
flows/, and what a logged model carries reaches nothing of training, tracking, tuning or the CLI."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from pipeline.tracking.code_closure import copy_serving_code, module_graph, serving_closure
from tests.conftest import ROOT

PACKAGE = ROOT / "src" / "pipeline"
# The rooms from the bottom up (pipeline/__init__.py says the same): a module may import its own room and the rooms
# below it; the CLI sits on the flows it runs. The foundation modules (errors, dates, runtime) are rank 0; `pipeline.pyfunc` is the old models' path
# to the serving room's class.
RANK = {"errors": 0, "dates": 0, "runtime": 0, "config": 1, "features": 2, "data": 3, "model": 4, "evaluation": 5,
        "serving": 6, "pyfunc": 6, "training": 7, "tuning": 8, "tracking": 9, "flows": 10, "cli": 11}
MLFLOW_ROOMS = {"tracking", "serving"}  # tracking logs and registers; serving is the logged MLflow model
PREFECT_ROOMS = {"cli", "flows"}


def room(module: str) -> str:
    """`pipeline.data.panel` -> `data`; `flows.training` -> `flows`; `pipeline` -> `pipeline`."""
    parts = module.split(".")
    return "flows" if parts[0] == "flows" else parts[1] if len(parts) > 1 else parts[0]


def imported_roots(path: Path) -> set[str]:
    """Top-level package names a module imports, at any depth of its code."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_mlflow_only_in_tracking_and_serving_and_prefect_only_in_the_cli(path: Path) -> None:
    roots = imported_roots(path)
    where = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if where not in MLFLOW_ROOMS:
        assert "mlflow" not in roots, f"{path.name} imports MLflow; MLflow calls belong in {sorted(MLFLOW_ROOMS)}"
    if where not in PREFECT_ROOMS:
        assert "prefect" not in roots and "flows" not in roots, f"{path.name} imports Prefect or flows/"


def test_the_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from mlflow.exceptions import MlflowException\n    import prefect.artifacts\n")
    assert imported_roots(module) == {"mlflow", "prefect"}


FLOW_FUNCTION_MAX_LINES = 40  # a flow function longer than this is doing a step's job


def test_flow_functions_only_wire_the_stages() -> None:
    long = []
    for path in sorted((ROOT / "flows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > FLOW_FUNCTION_MAX_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "move the work into src/pipeline: " + ", ".join(long)


# ---------------------------------------------------------------- the import graph
def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan): each is an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(graph[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


PROJECT = {"pipeline": PACKAGE, "flows": ROOT / "flows"}


def test_no_module_of_src_or_flows_imports_itself_in_a_cycle() -> None:
    assert import_cycles(module_graph(PROJECT)) == []


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.c import g\n")  # a lazy import closes the loop too
    (package / "c.py").write_text("import pkg.a\ndef g():\n    pass\n")
    (package / "d.py").write_text("from pkg import a\n")
    assert import_cycles(module_graph({"pkg": package})) == [["pkg.a", "pkg.b", "pkg.c"]]


def layering_breaches(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module in a higher room than the importer's (`RANK`)."""
    return sorted(f"{module} -> {dep}" for module, deps in graph.items() for dep in deps
                  if room(module) in RANK and RANK.get(room(dep), 0) > RANK[room(module)])


def test_every_room_imports_only_the_rooms_below_it() -> None:
    graph = module_graph(PROJECT)
    assert set(RANK) - {"flows"} == {room(m) for m in graph if "." in m and not m.startswith("flows")}
    assert layering_breaches(graph) == []


def test_an_import_against_the_rule_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pipeline"
    for folder in ("data", "tracking"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "data" / "panel.py").write_text("def f():\n    from pipeline.tracking import store\n")
    (package / "tracking" / "store.py").write_text("from pipeline.data import panel\n")
    graph = module_graph({"pipeline": package})
    assert layering_breaches(graph) == ["pipeline.data.panel -> pipeline.tracking.store"]
    assert import_cycles(graph) == [["pipeline.data.panel", "pipeline.tracking.store"]]


# What a logged model's code may reach (`code_closure.serving_closure`; `store.log_model` ships exactly it, checked by
# tests/integration/test_model_code.py): the serving room and what it stands on; never the training loop, the road's
# steps, scoring, tracking, tuning, the CLI or flows.
NOT_FOR_SERVING = ("pipeline.model.training", "pipeline.training", "pipeline.tuning", "pipeline.tracking", "pipeline.cli",
                   "pipeline.evaluation.metrics", "pipeline.evaluation.plots", "pipeline.evaluation.monitoring", "flows")


def test_serving_reaches_nothing_of_training_tracking_tuning_or_the_cli() -> None:
    reached = serving_closure(module_graph(PROJECT))
    assert "pipeline.serving.pyfunc" in reached and "pipeline.model.network" in reached
    assert not [m for m in reached if m.startswith(NOT_FOR_SERVING)], sorted(reached)


def test_the_serving_code_imports_only_what_the_logged_model_requires() -> None:
    """The logged model runs where only its requirements.txt is installed: every third-party package its code
    imports must be among them (`store.MODEL_REQUIREMENTS`)."""
    import sys
    from importlib.metadata import packages_distributions

    from pipeline.tracking.code_closure import module_files
    from pipeline.tracking.store import MODEL_REQUIREMENTS

    files = module_files({"pipeline": PACKAGE})
    roots = set().union(*(imported_roots(files[m]) for m in serving_closure(module_graph({"pipeline": PACKAGE}))))
    third_party = roots - set(sys.stdlib_module_names) - {"pipeline"}
    required = {name.lower() for name in MODEL_REQUIREMENTS}
    distributions = packages_distributions()
    assert "torch" in third_party and "mlflow" in third_party
    assert not [r for r in third_party if not {d.lower() for d in distributions.get(r, [])} & required], third_party


def test_the_closure_takes_relative_imports_and_the_packages_on_the_way(tmp_path: Path) -> None:
    """Importing `pipeline.serving.x` runs `pipeline/__init__.py` and `pipeline/serving/__init__.py` (and what they
    import); a relative import is an import like any other."""
    package = tmp_path / "pipeline"
    for folder in ("serving", "model", "tracking"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("")
    (package / "model" / "__init__.py").write_text("from pipeline import errors\n")
    (package / "serving" / "pyfunc.py").write_text("from ..model.network import Net\n")
    (package / "model" / "network.py").write_text("class Net:\n    pass\n")
    (package / "model" / "training.py").write_text("from pipeline.model.network import Net\n")
    (package / "tracking" / "store.py").write_text("from pipeline.serving import pyfunc\n")
    reached = serving_closure(module_graph({"pipeline": package}))
    assert reached == {"pipeline", "pipeline.serving", "pipeline.serving.pyfunc", "pipeline.model",
                       "pipeline.model.network", "pipeline.errors"}
    copied = copy_serving_code(tmp_path / "code", package)
    assert copied == tmp_path / "code" / "pipeline"
    assert sorted(p.relative_to(copied).as_posix() for p in copied.rglob("*") if p.is_file()) == [
        "__init__.py", "errors.py", "model/__init__.py", "model/network.py", "serving/__init__.py", "serving/pyfunc.py"]


def test_the_design_page_names_every_module() -> None:
    """docs/design.md's layout cannot go stale: it names each module of src/pipeline and flows/ by its path, and
    no module that is not there."""
    layout = (ROOT / "docs" / "design.md").read_text(encoding="utf-8").split("## Layout", 1)[1].split("\n## ", 1)[0]
    files = {str(p.relative_to(ROOT / "src")) for p in PACKAGE.rglob("*.py") if p.stem != "__init__"}
    files |= {f"flows/{p.name}" for p in (ROOT / "flows").glob("*.py") if p.stem != "__init__"}

    named = set(re.findall(r"`((?:pipeline|flows)/[\w/]+\.py)`", layout))
    assert not files - named, f"docs/design.md's layout does not name {sorted(files - named)}"
    assert not named - files, f"docs/design.md's layout names modules that do not exist: {sorted(named - files)}"


# ---------------------------------------------------------------- names
# A name is imported from the module that defines it, under its own name: no module passes on another's names
# (`registry.TestWindow` was `promotion.TestWindow`), no alias keeps a module's old name alive (`store as tracking`).
# A module passes on only what its `__all__` declares (`pipeline.pyfunc`: the serving class, where models logged before
# the rooms existed load it; `pipeline.serving.forecast`: the serving API).
SCANNED = ("src", "flows", "tests", "bench")


def module_path(module: str, roots: dict[str, Path]) -> Path | None:
    """The file of a module of the packages under `roots` (`pipeline.tracking.store` -> .../tracking/store.py)."""
    head, *rest = module.split(".")
    if head not in roots:
        return None
    base = roots[head].joinpath(*rest)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.cache
def imported_names(path: Path) -> frozenset[str]:
    """The names a module binds by importing them, outside its functions and classes, and does not declare in its
    `__all__`: names it would pass on by accident."""
    names: set[str] = set()
    declared: set[str] = set()
    todo = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            declared |= set(ast.literal_eval(node.value))
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))
    return frozenset(names - declared)


def name_breaches(paths: list[Path], roots: dict[str, Path], base: Path) -> list[str]:
    """Imports under another name, and names taken from a module that only imports them, in `paths`."""
    found = []
    for path in paths:
        where = path.relative_to(base)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules: dict[str, str] = {}  # a name bound to a module of ours -> that module
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [f"{where}:{node.lineno} imports {a.name} as {a.asname}" for a in node.names
                          if a.asname and a.name.split(".")[0] in roots]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and module_path(node.module or "", roots):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if alias.asname and alias.asname != alias.name:
                        found.append(f"{where}:{node.lineno} imports {full} as {alias.asname}")
                    if module_path(full, roots):
                        modules[alias.asname or alias.name] = full
                    elif alias.name in imported_names(module_path(node.module, roots)):
                        found.append(f"{where}:{node.lineno} imports {alias.name} from {node.module}, "
                                     "which only imports it")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                module = modules[node.value.id]
                if node.attr in imported_names(module_path(module, roots)):
                    found.append(f"{where}:{node.lineno} reads {node.value.id}.{node.attr}, which {module} only imports")
    return found


def test_names_come_from_the_module_that_defines_them_under_their_own_name() -> None:
    paths = sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py")
                   if "fixtures" not in p.relative_to(ROOT).parts)  # tests/fixtures: old models' code, as saved
    assert name_breaches(paths, PROJECT, ROOT) == []


def test_a_passed_on_name_and_an_alias_are_found(tmp_path: Path) -> None:
    package = tmp_path / "pipeline"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "promotion.py").write_text("def decide():\n    pass\n")
    (package / "registry.py").write_text("from pipeline.promotion import decide\n\ndef f():\n    from os import sep\n")
    (package / "api.py").write_text("from pipeline.promotion import decide\n\n__all__ = ['decide']\n")
    user = tmp_path / "user.py"
    user.write_text("from pipeline.registry import decide, f\nfrom pipeline import registry\n"
                    "from pipeline import promotion as gate\nimport pipeline.registry as reg\n"
                    "registry.decide()\nregistry.f()\ngate.decide()\nregistry.sep\nfrom pipeline.api import decide\n")
    assert name_breaches([user], {"pipeline": package}, tmp_path) == [
        "user.py:1 imports decide from pipeline.registry, which only imports it",
        "user.py:3 imports pipeline.promotion as gate",
        "user.py:4 imports pipeline.registry as reg",
        "user.py:5 reads registry.decide, which pipeline.registry only imports",
    ]
