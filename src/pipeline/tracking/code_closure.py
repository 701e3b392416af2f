"""The code a logged model carries: the serving room and every module it imports, at any depth, and nothing else.

`module_graph` reads the import statements of a package's source; `serving_closure` follows them from the serving
room (and `pipeline.pyfunc`, the path that models logged before the rooms name); `copy_serving_code` writes exactly
those files, with the `__init__.py` of every package on their way, into a `pipeline/` tree that `store.log_model`
hands MLflow as the model's `code_paths`. tests/unit/test_layering.py holds the same closure to the layering rules.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/pipeline
# Where serving starts: the room itself and the old models' path to its class.
SERVING = ("pipeline.serving", "pipeline.pyfunc")


def module_files(roots: Mapping[str, Path]) -> dict[str, Path]:
    """Each module of the packages under `roots` (package name -> folder) -> its file; a package is its
    `__init__.py` (`pipeline.serving` -> src/pipeline/serving/__init__.py)."""
    return {".".join((pkg, *path.relative_to(folder).with_suffix("").parts)).removesuffix(".__init__"): path
            for pkg, folder in roots.items() for path in sorted(folder.rglob("*.py"))}


def imported_base(node: ast.ImportFrom, package: str) -> str | None:
    """The absolute module a `from ... import` names, relative imports resolved against `package`."""
    if node.level == 0:
        return node.module
    parts = package.split(".")
    if node.level > len(parts):
        return None
    base = ".".join(parts[:len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def module_graph(roots: Mapping[str, Path]) -> dict[str, set[str]]:
    """Each module of the packages under `roots` -> the modules of those packages it imports, at any depth of its
    code (a lazy import inside a function is still a dependency). `from pkg import mod` is an edge to `pkg.mod`, not
    to `pkg`'s `__init__`."""
    modules = module_files(roots)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and (base := imported_base(node, package)):
                if base in modules and modules[base].name != "__init__.py":
                    found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
        graph[name] = found - {name}
    return graph


def closure(graph: Mapping[str, set[str]], starts: Iterable[str]) -> set[str]:
    """`starts` and every module they import, at any depth, with the packages that hold them (importing `a.b.c`
    runs `a/__init__.py` and `a/b/__init__.py` first, and whatever those import)."""
    reached: set[str] = set()
    todo = list(starts)
    while todo:
        module = todo.pop()
        if module in reached or module not in graph:
            continue
        reached.add(module)
        todo.extend(graph[module])
        if "." in module:
            todo.append(module.rpartition(".")[0])
    return reached


def serving_closure(graph: Mapping[str, set[str]]) -> set[str]:
    """The serving room's modules (`SERVING`) and everything they import: what a logged model needs to load and
    predict without the project installed."""
    return closure(graph, [m for m in graph if any(m == s or m.startswith(s + ".") for s in SERVING)])


def copy_serving_code(dest: Path, package_dir: Path = PACKAGE_DIR) -> Path:
    """Write the serving closure of the package at `package_dir` into `dest/pipeline`, in the package's own layout;
    return that folder (MLflow copies it into the model as `code/pipeline`)."""
    files = module_files({"pipeline": package_dir})
    target = dest / "pipeline"
    for module in sorted(serving_closure(module_graph({"pipeline": package_dir}))):
        copy = target / files[module].relative_to(package_dir)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[module], copy)
    return target
