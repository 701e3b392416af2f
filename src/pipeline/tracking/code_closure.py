"""The code a logged model carries: the serving room and every module it imports, at any depth, and nothing else.

`module_graph` reads the import statements of a package's source; `serving_closure` follows them from the serving
room (and `pipeline.pyfunc`, the path that models logged before the rooms name); `copy_serving_code` writes exactly
those files, with the `__init__.py` of every package on their way, into a `pipeline/` tree that `store.log_model`
hands MLflow as the model's `code_paths`. tests/unit/test_layering.py holds the same closure to the layering rules.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Callable, Container, Iterable, Mapping
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


def imports_of(name: str, modules: Mapping[str, Path]) -> set[str]:
    """The modules of `modules` (name -> file) that module `name` imports, at any depth of its code (a lazy import
    inside a function is still a dependency). `from pkg import mod` is an edge to `pkg.mod`, not to `pkg`'s
    `__init__`."""
    path = modules[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and (base := imported_base(node, package)):
            if base in modules and modules[base].name != "__init__.py":
                found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
    return found - {name}


def module_graph(roots: Mapping[str, Path]) -> dict[str, set[str]]:
    """Each module of the packages under `roots` -> the modules of those packages it imports (`imports_of`)."""
    modules = module_files(roots)
    return {name: imports_of(name, modules) for name in modules}


def closure(starts: Iterable[str], imports: Callable[[str], Iterable[str]], modules: Container[str]) -> set[str]:
    """`starts` and every module of `modules` they import (`imports(module)`), at any depth, with the packages that
    hold them (importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` first, and whatever those import)."""
    reached: set[str] = set()
    todo = list(starts)
    while todo:
        module = todo.pop()
        if module in reached or module not in modules:
            continue
        reached.add(module)
        todo.extend(imports(module))
        if "." in module:
            todo.append(module.rpartition(".")[0])
    return reached


def serving_starts(modules: Iterable[str]) -> list[str]:
    return [m for m in modules if any(m == s or m.startswith(s + ".") for s in SERVING)]


def serving_closure(graph: Mapping[str, set[str]]) -> set[str]:
    """The serving room's modules (`SERVING`) and everything they import in `graph`: what a logged model needs to
    load and predict without the project installed."""
    return closure(serving_starts(graph), graph.__getitem__, graph)


def copy_serving_code(dest: Path, package_dir: Path = PACKAGE_DIR) -> Path:
    """Write the serving closure of the package at `package_dir` into `dest/pipeline`, in the package's own layout;
    return that folder (MLflow copies it into the model as `code/pipeline`)."""
    files = module_files({"pipeline": package_dir})
    target = dest / "pipeline"
    # the same closure as serving_closure(module_graph(...)), parsing only the modules it reaches
    for module in sorted(closure(serving_starts(files), lambda name: imports_of(name, files), files)):
        copy = target / files[module].relative_to(package_dir)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[module], copy)
    return target
