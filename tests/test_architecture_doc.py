"""docs/architecture.md names only modules, classes and names that exist.

The page writes code in backticks. Three kinds of it are checked against the source, read with
``ast`` (nothing is imported, so the test takes well under a second):

- paths: ``training/stages.py``, ``models/quantum/`` (relative to ``src/qsight_pipeline/``), and
  ``tests/...``, ``conf/...``, ``benchmarks/...`` (relative to the repository);
- dotted names whose first part is a module of the package: ``training.stages``,
  ``config.root.validate_parameters``, ``qsight_pipeline.errors.UserError``;
- names of classes and constants, alone or with a member: ``RunSettings``, ``RUN_ORDER``,
  ``NpyDataset.load``, ``Stage(name, ...)``.

A class name is any name defined in ``src/`` or a Python builtin; a name from another library is
written dotted with its package (``torch.nn.Module``), which the test leaves alone.
"""

from __future__ import annotations

import ast
import builtins
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "qsight_pipeline"
DOC = ROOT / "docs" / "architecture.md"

CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
PATH = re.compile(r"^[A-Za-z0-9_.*-]+(?:/[A-Za-z0-9_.*-]+)*/?$")
CHAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
CLASS_LIKE = re.compile(r"^[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*$")
CONSTANT = re.compile(r"^[A-Z][A-Z0-9]*_[A-Z0-9_]+$")
FILE_SUFFIXES = {"json", "yml", "yaml", "csv", "pth", "pkl", "npy", "onnx", "png", "html", "py"}
ROOT_FOLDERS = ("tests/", "conf/", "benchmarks/", "docs/", "src/", ".ci/", "notebooks/")


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _defined(body: list[ast.stmt]) -> set[str]:
    """Names a module or class body defines (imports count: a module may re-export a name)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.If | ast.Try):
            names |= _defined(node.body) | _defined(getattr(node, "orelse", []))
    return names


@cache
def _classes() -> dict[str, list[ast.ClassDef]]:
    """Every class defined in the package, by name."""
    found: dict[str, list[ast.ClassDef]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append(node)
    return found


@cache
def _top_level_names() -> set[str]:
    """Every name some module of the package defines at its top level."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        names |= _defined(_tree(path).body)
    return names


def _module_file(parts: list[str]) -> Path | None:
    base = PACKAGE.joinpath(*parts)
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    return None


def _class_has(name: str, member: str) -> bool:
    """``member`` is defined in class ``name`` or in one of its bases named in the package."""
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in _classes().get(current, []):
            if member in _defined(node.body):
                return True
            pending += [base.id for base in node.bases if isinstance(base, ast.Name)]
            pending += [base.value.id for base in node.bases
                        if isinstance(base, ast.Subscript) and isinstance(base.value, ast.Name)]
    return False


def check_path(text: str) -> str | None:
    relative = text.rstrip("/")
    base = ROOT if text.startswith(ROOT_FOLDERS) else PACKAGE
    if "*" in relative:
        return None if list(base.glob(relative)) else f"`{text}`: no such file"
    target = base / relative
    if text.endswith("/") and not target.is_dir():
        return f"`{text}`: no such folder"
    if not target.exists():
        return f"`{text}`: no such file"
    return None


def check_dotted(parts: list[str]) -> str | None:
    """``parts`` starts with a module of the package; the rest must be defined in it."""
    if parts[0] == "qsight_pipeline":
        parts = parts[1:]
    for split in range(len(parts), 0, -1):
        module = _module_file(parts[:split])
        if module is None:
            continue
        rest = parts[split:]
        if not rest:
            return None
        if rest[0] not in _defined(_tree(module).body):
            return f"`{'.'.join(parts)}`: {'.'.join(parts[:split])} defines no {rest[0]}"
        if len(rest) > 1 and rest[0] in _classes() and not _class_has(rest[0], rest[1]):
            return f"`{'.'.join(parts)}`: {rest[0]} has no {rest[1]}"
        return None
    return f"`{'.'.join(parts)}`: no such module"


def check_name(parts: list[str]) -> str | None:
    name = parts[0]
    if hasattr(builtins, name):
        return None
    if name not in _classes() and name not in _top_level_names():
        return f"`{'.'.join(parts)}`: nothing named {name} in src/qsight_pipeline"
    if len(parts) > 1 and name in _classes() and not _class_has(name, parts[1]):
        return f"`{'.'.join(parts)}`: {name} has no {parts[1]}"
    return None


def package_modules() -> set[str]:
    return {path.stem if path.suffix else path.name for path in PACKAGE.iterdir()
            if (path.suffix == ".py" or (path / "__init__.py").exists())
            and not path.name.startswith("__")}


@cache
def parameter_blocks() -> set[str]:
    """The parameter blocks' names (``run``, ``tracking``, ...): ``run.seed`` is a key, not code."""
    root = next(node for node in _tree(PACKAGE / "config" / "root.py").body
                if isinstance(node, ast.ClassDef) and node.name == "QSightParameters")
    return {node.target.id for node in root.body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


@cache
def nested_modules() -> set[str]:
    """Names of modules inside the package's subpackages (``storage`` of ``files/storage.py``)."""
    return {path.stem for path in PACKAGE.glob("*/**/*.py") if path.stem != "__init__"} - {
        path.stem for path in PACKAGE.glob("*.py")}


def problems(text: str) -> list[str]:
    """What ``text`` names in code style that the source does not have."""
    top = package_modules() | {"qsight_pipeline"}
    found = []
    for span in CODE.findall(text):
        span = span.strip()
        if PATH.match(span) and ("/" in span or span.endswith(".py")):
            if span.endswith((".py", "/")) or span.startswith(ROOT_FOLDERS):
                found.append(check_path(span))
            continue
        if ":" in span and span.split(":", 1)[0].endswith(".py"):  # `config/run.py:RunSettings`
            path, name = span.split(":", 1)
            found.append(check_path(path) or check_dotted(
                [*path.removesuffix(".py").split("/"), name.strip()]))
            continue
        chain = CHAIN.match(span)
        if not chain or span[chain.end():].startswith(":"):  # a message: `Error: <msg>`
            continue
        parts = chain.group(0).split(".")
        if parts[0].startswith("QSIGHT_"):  # an environment variable
            continue
        if parts[0] in top and (len(parts) > 1 or parts[0] == "qsight_pipeline"):
            found.append(check_dotted(parts))
        elif (len(parts) > 1 and parts[0] in nested_modules() and parts[0] not in parameter_blocks()
              and parts[-1] not in FILE_SUFFIXES):
            found.append(f"`{span}`: write the module from the package (e.g. `files.storage.x`)")
        elif CLASS_LIKE.match(parts[0]) or CONSTANT.match(parts[0]):
            found.append(check_name(parts))
    return [problem for problem in found if problem]


def test_every_module_class_and_name_in_the_architecture_page_exists():
    assert problems(DOC.read_text()) == []


def test_every_parameter_block_is_named():
    """Each block of QSightParameters (and the models nested in them) is on the page."""
    text = DOC.read_text()
    tree = _tree(PACKAGE / "config" / "__init__.py")
    exported = next(node for node in tree.body if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in node.targets))
    blocks = [element.value for element in exported.value.elts
              if element.value.endswith(("Params", "Settings", "Config"))]
    missing = [block for block in blocks if f"`{block}`" not in text]
    assert not missing, f"docs/architecture.md does not name the parameter blocks {missing}"


def test_the_run_blocks_keys_are_all_listed():
    """The page's list of RunSettings' keys is the model's fields, no more and no fewer."""
    line = next(line for line in DOC.read_text().split("\n- ") if line.startswith("`RunSettings`"))
    listed = set(re.findall(r"`([a-z_]+)`", line.split(":", 1)[1]))
    run = next(node for node in _tree(PACKAGE / "config" / "run.py").body
               if isinstance(node, ast.ClassDef) and node.name == "RunSettings")
    fields = {node.target.id for node in run.body
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    assert listed == fields, (sorted(fields - listed), sorted(listed - fields))


def test_the_check_reports_names_that_do_not_exist():
    made_up = (
        "`NoSuchThingAnywhere` and `NO_SUCH_CONSTANT`, `training/no_such_module.py`,"
        " `no_such_folder/`, `config.run.no_such_function`, `training.no_such_module`,"
        " `RunSettings.no_such_member`, `conf/base/catalog_no_such_pipeline.yml`,"
        " `storage.recover`"
    )
    reported = problems(made_up)
    assert len(reported) == 9, reported
    assert problems("`RunSettings`, `training/stages.py`, `config.root.validate_parameters`,"
                    " `ValueError`, `conf/base/catalog_training.yml`") == []
