"""MkDocs hook: the configuration reference, generated from the typed parameter blocks.

``docs/configuration.md`` holds the marker below; at build time it is replaced by one section per
block of ``qsight_pipeline.config.QSightParameters``: every key with its type, default, allowed
range and description. Types, defaults and ranges come from the pydantic models themselves (the
one source of the defaults); a description is the key's comment in ``conf/base/parameters*.yml``,
or, for a key that file does not spell out, the comment above the field in ``config/``. Nothing is
written by hand, so the page cannot drift from the code.

Registered in ``mkdocs.yml`` under ``hooks:``. ``python tools/docs_config_reference.py`` prints
the generated Markdown.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import yaml

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- qsight:configuration-reference -->"
CONF = ROOT / "conf" / "base"


def _import_config():
    """The configuration package of this checkout (not another copy installed in the venv)."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    import qsight_pipeline.config as config

    where = Path(config.__file__).resolve()
    if ROOT / "src" not in where.parents:
        raise RuntimeError(f"qsight_pipeline.config was imported from {where}, not {ROOT / 'src'}")
    return config


# --- descriptions: the comments of conf/base/parameters*.yml --------------------------------------

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")


def _comment_of(rest: str) -> str:
    """The comment after a YAML value (``#`` outside quotes)."""
    quote = None
    for index, char in enumerate(rest):
        if char in "\"'" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (index == 0 or rest[index - 1] in " \t"):
            return rest[index + 1:].strip()
    return ""


def yaml_comments(path: Path) -> dict[str, str]:
    """``dotted.key -> comment``: the key's own comment, its continuation lines (comment-only lines
    indented past the key) and the comment block right above it."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    last: str | None = None
    last_indent = -1
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            above, last = [], None
            continue
        if stripped.startswith("#"):
            indent = len(line) - len(line.lstrip())
            if last is not None and indent > last_indent:
                comments[last] = f"{comments[last]} {stripped.lstrip('#').strip()}".strip()
            else:
                above.append(stripped.lstrip("#").strip())
                last = None
            continue
        match = _KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        key = ".".join(name for _, name in stack)
        text = " ".join(part for part in (" ".join(above), _comment_of(match["rest"])) if part)
        comments[key] = text
        above, last, last_indent = [], key, indent
    return comments


def conf_comments() -> tuple[dict[str, str], dict[str, str]]:
    """Every key's comment, and which conf/base file holds each top-level block."""
    comments: dict[str, str] = {}
    files: dict[str, str] = {}
    for path in sorted(CONF.glob("parameters*.yml")):
        comments.update(yaml_comments(path))
        for block in yaml.safe_load(path.read_text()) or {}:
            files[block] = f"conf/base/{path.name}"
    return comments, files


# --- descriptions from the code: the comment right above a field ---------------------------------


def source_comments(model: type) -> dict[str, str]:
    """``field -> comment`` for the comment lines right above each field of ``model``'s class."""
    lines, start = inspect.getsourcelines(model)
    tree = ast.parse(inspect.cleandoc("\n" + "".join(lines)) if lines[0][0] == " " else "".join(lines))
    found: dict[str, str] = {}
    for node in tree.body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above = []
            index = node.lineno - 2
            while index >= 0 and lines[index].strip().startswith("#"):
                above.insert(0, lines[index].strip().lstrip("#").strip())
                index -= 1
            if above:
                found[node.target.id] = " ".join(above)
    return found


# --- types, defaults and ranges from the models ---------------------------------------------------


def _is_block(annotation: Any, base: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, base)


def type_name(annotation: Any) -> str:
    """A short, readable type: ``int``, ``'fail' | 'skip'``, ``list[int] | null``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(f"'{value}'" if isinstance(value, str) else str(value) for value in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin in (list, tuple, set, dict):
        return f"{origin.__name__}[{', '.join(type_name(arg) for arg in args)}]"
    if annotation is type(None):
        return "null"
    if annotation is typing.Any:
        return "any"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_BOUNDS = (
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.MinLen, "min_length", "at least {} items"),
    (annotated_types.MaxLen, "max_length", "at most {} items"),
)


def _bounds_of(metadata: list[Any]) -> list[str]:
    found = []
    for item in metadata:
        for kind, attribute, symbol in _BOUNDS:
            if isinstance(item, kind):
                value = getattr(item, attribute)
                found.append(symbol.format(value) if "{}" in symbol else f"{symbol} {value}")
    return found


def bounds(field: Any) -> str:
    """The field's range, from its own constraints and those inside its annotation."""
    found = _bounds_of(list(field.metadata))
    pending = [field.annotation]
    while pending:
        annotation = pending.pop()
        if typing.get_origin(annotation) is typing.Annotated:
            inner, *metadata = typing.get_args(annotation)
            found += [f"items {text}" if typing.get_origin(field.annotation) is list else text
                      for text in _bounds_of(metadata)]
            pending.append(inner)
        else:
            pending.extend(typing.get_args(annotation))
    return ", ".join(dict.fromkeys(found))


_UNSET = object()


def default_text(field: Any, value: Any = _UNSET) -> str:
    """The default as YAML would spell it; ``value`` is the default its enclosing block gives."""
    if value is _UNSET:
        if field.is_required():
            return "required"
        value = field.get_default(call_default_factory=True)
    if hasattr(value, "model_dump"):
        return "(block)"
    if isinstance(value, Path):
        value = str(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


# --- the page ------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _own_doc(model: type) -> str:
    """The class's own docstring (not one inherited from ParamsBlock)."""
    return inspect.cleandoc(model.__dict__.get("__doc__") or "")


def _rows(model: type, prefix: str, base: type, comments: dict[str, str],
          instance: Any = None) -> list[str]:
    """One row per key of ``model``; ``instance``: the block's default as its parent gives it."""
    rows = []
    from_code = source_comments(model)
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}"
        annotation = field.annotation
        blocks = [arg for arg in (typing.get_args(annotation) or (annotation,))
                  if _is_block(arg, base)]
        text = field.description or comments.get(key) or from_code.get(name, "")
        if blocks:
            block = blocks[0]
            doc = _own_doc(block)
            optional = type(None) in typing.get_args(annotation)
            summary = " ".join(part for part in (text, doc.split("\n\n")[0]) if part)
            if optional:
                rows.append(f"| `{key}` | `{_cell(type_name(annotation))}` | "
                            f"`{_cell(default_text(field))}` | | {_cell(summary)} |")
            elif summary:
                rows.append(f"| `{key}` | block | | | {_cell(summary)} |")
            nested = getattr(instance, name) if instance is not None else (
                None if field.is_required() else field.get_default(call_default_factory=True))
            rows += _rows(block, key, base, comments, nested)
            continue
        default = default_text(field) if instance is None else default_text(
            field, getattr(instance, name))
        rows.append(
            f"| `{key}` | `{_cell(type_name(annotation))}` | `{_cell(default)}` | "
            f"{_cell(bounds(field))} | {_cell(text)} |"
        )
    return rows


def render() -> str:
    """The reference: one section per block of QSightParameters, in the model's order."""
    config = _import_config()
    comments, files = conf_comments()
    base = config.ParamsBlock
    parts = []
    for name, field in config.QSightParameters.model_fields.items():
        model = field.annotation
        module = model.__module__.removeprefix("qsight_pipeline.").replace(".", "/") + ".py"
        doc = _own_doc(model)
        where = files.get(name, "conf/base/parameters*.yml")
        parts += [
            f"### `{name}`",
            "",
            f"`{model.__name__}` in `src/qsight_pipeline/{module}`; written in `{where}`.",
            "",
            *([doc, ""] if doc else []),
            "| key | type | default | range | description |",
            "|---|---|---|---|---|",
            *_rows(model, name, base, comments, field.get_default(call_default_factory=True)),
            "",
        ]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: fill in the reference where the page asks for it."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())


if __name__ == "__main__":
    print(render())  # noqa: T201
