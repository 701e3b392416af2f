"""The configuration reference (docs/configuration.md), generated from the config models so it cannot drift.

    python -m pipeline.config.reference            # rewrite docs/configuration.md
    python -m pipeline.config.reference --check    # exit 1 when the file is out of date
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import typing
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pipeline.config import settings
from pipeline.config.settings import PipelineConfig

DEFAULT_PATH = Path("docs/configuration.md")
HEADER = """# Configuration reference

Generated from the config models in `src/pipeline/config/settings.py` by `python -m pipeline.config.reference`
(`make docs`); a test fails when this page and the code disagree. A config file is YAML with these
sections; every key is optional and takes the default shown. Unknown keys are errors.
"""


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: `int`, `float or null`, `one of: a, b`, `list of str`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:  # an item with its own limits, as in `levels: tuple[Annotated[int, Field(gt=0)], ...]`
        limits = ", ".join(filter(None, (bounds(m) for m in args[1:] if isinstance(m, FieldInfo))))
        return type_name(args[0]) + (f" ({limits})" if limits else "")
    if origin is typing.Literal:
        return "one of: " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin in (tuple, list):
        inner = type_name(args[0]) if args else "value"
        return f"list of {inner}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if isinstance(annotation, type):
        return {"str": "text", "bool": "true/false", "date": "date (YYYY-MM-DD)"}.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def bounds(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for key, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, key, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, tuple):
        value = list(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)) and not value:
        return "[]" if isinstance(value, list) else "{}"
    return f"`{value}`" if not isinstance(value, (list, dict)) else f"`{value}`".replace("'", "")


@cache
def field_docs() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the docstring written under the field in config/settings.py."""
    tree = ast.parse(Path(inspect.getfile(settings)).read_text(encoding="utf-8"))
    docs: dict[tuple[str, str], str] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        body = node.body
        for field, after in zip(body, body[1:]):
            if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[(node.name, field.target.id)] = inspect.cleandoc(after.value.value)
    return docs


def describe(model: type[BaseModel], key: str) -> str:
    """A field's meaning: its docstring in config/settings.py, else its pydantic description."""
    return field_docs().get((model.__name__, key)) or model.model_fields[key].description or ""


def section_doc(model: type[BaseModel]) -> str:
    doc = inspect.getdoc(model) or ""
    return "" if doc.startswith(("Usage docs", "!!! abstract")) else doc


def render() -> str:
    """The whole reference as markdown."""
    lines = [HEADER]
    top = [(name, f) for name, f in PipelineConfig.model_fields.items()
           if not (isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel))]
    lines += ["## Top level", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{name}` | {type_name(f.annotation)} | {default_text(f)} | {describe(PipelineConfig, name)} |"
              for name, f in top]
    for name, field in PipelineConfig.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        lines += ["", f"## `{name}`", ""]
        doc = section_doc(model)
        if doc:
            lines += [doc, ""]
        lines += ["| key | type | default | limits | meaning |", "|---|---|---|---|---|"]
        for key, sub in model.model_fields.items():
            meaning = describe(model, key).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{name}.{key}` | {type_name(sub.annotation)} | {default_text(sub)} | {bounds(sub)} | {meaning} |")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 when --out differs from the code")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run `python -m pipeline.config.reference`", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
