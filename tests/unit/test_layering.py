"""The layering the design rests on: steps import neither MLflow nor Prefect; MLflow stays in the
tracking modules, Prefect in flows/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "src" / "pipeline"
TRACKING_MODULES = {"tracking", "registry", "pyfunc", "model_code"}  # the only modules that may talk to MLflow
ENTRY_POINTS = {"cli"}  # wires commands to flows; imports them lazily


def imported_roots(path: Path) -> set[str]:
    """Top-level package names a module imports, at any depth of its code."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


MODULES = sorted(p for p in PACKAGE.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_mlflow_only_in_tracking_modules_and_prefect_only_in_flows(path: Path) -> None:
    roots = imported_roots(path)
    if path.stem not in TRACKING_MODULES:
        assert "mlflow" not in roots, f"{path.name} imports MLflow; MLflow calls belong in {sorted(TRACKING_MODULES)}"
    if path.stem not in ENTRY_POINTS:
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
def module_graph(roots: dict[str, Path]) -> dict[str, set[str]]:
    """Each module of the packages under `roots` (package name -> folder) -> the modules of those packages it imports,
    at any depth of its code (a lazy import inside a function is still a dependency)."""
    modules = {(pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"): path
               for pkg, folder in roots.items() for path in folder.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module in modules and node.module not in roots:
                    found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in modules}
        graph[name] = found - {name}
    return graph


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


# What a logged model's code may reach: serving, and what it stands on; never training, scoring, tracking, tuning,
# the CLI or the flows (tracking logs the model; the model must not need tracking to forecast).
NOT_FOR_SERVING = {"train", "steps", "evaluate", "backtest", "sweep", "tracking", "registry", "gate", "runs", "reports",
                   "reproduce", "monitoring", "plots", "cli", "pyfunc"}


def test_serving_reaches_nothing_of_training_tracking_tuning_or_the_cli() -> None:
    graph = module_graph(PROJECT)
    reached, todo = set(), ["pipeline.serving"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    assert not any(m.startswith("flows") for m in reached), sorted(reached)
    assert not {m.removeprefix("pipeline.") for m in reached} & NOT_FOR_SERVING, sorted(reached)


def test_the_design_page_names_every_module() -> None:
    """docs/design.md's layout cannot go stale: each module of src/pipeline and flows/ is named there."""
    layout = (ROOT / "docs" / "design.md").read_text(encoding="utf-8").split("## Layout", 1)[1]
    missing = [f"{folder.name}/{path.name}" for folder in (PACKAGE, ROOT / "flows") for path in sorted(folder.glob("*.py"))
               if path.stem != "__init__" and f"`{path.stem}`" not in layout]
    assert not missing, f"docs/design.md's layout does not name {missing}"
