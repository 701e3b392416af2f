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
