"""Imports only go down: every module of the package sits in one layer of :data:`LAYERS`, and imports
only from its own layer or a lower one.

Read from the source with ``ast``, as ``tests/test_layers.py`` reads the Kedro boundary: every
``import`` and ``from ... import`` counts, at module level, in a function body or under
``if TYPE_CHECKING:`` (none is exempt: an annotation-only import that goes up still ties the lower
layer to the upper one's names). The lazy exports of a package's ``__init__.py`` (module paths
written as strings for ``lazy_exports.lazy_getattr``) count too. docs/architecture.md ("Layers")
describes the same order.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qsight_pipeline"

# Bottom to top. A module belongs to the layer of the longest prefix that names it
# (``data.layouts`` before ``data``); a module may import its own layer and every layer below.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("constants", "threads", "lazy_exports"),
    ("files",),
    # The dataset layouts' registry: the ``dataset`` block validates ``dataset.type`` against it.
    ("data.layouts",),
    ("config",),
    ("data",),
    ("models",),
    ("training",),
    ("hardware",),
    ("study",),
    ("inference",),
    ("reporting",),
    # The Kedro layer (tests/test_layers.py: the core above never imports it).
    ("kedro_app",),
    ("pipelines",),
    ("settings", "pipeline_registry", "__main__"),
    # Front ends: the Streamlit page reads the project's config loader from settings.py, and the
    # package root exports the Python API lazily.
    ("app", ""),
]

# Old public paths kept for user code: each re-exports a name that moved up, and nothing in the
# package imports it. The module path and the documented name that it keeps working.
COMPATIBILITY_MODULES = {
    # README (before the documentation site): ``files.artifacts.load_complete_checkpoint``.
    "files.artifacts": "training.artifacts",
}

_MODULE_PATH = re.compile(r"qsight_pipeline(\.\w+)+")


def module_name(path: Path) -> str:
    """``data.ingest`` for ``src/qsight_pipeline/data/ingest.py``; ``""`` for the package root."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts).removesuffix("__init__").rstrip(".")


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of ``module`` (relative to the package, ``""`` the root)."""
    best, index = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == module or (prefix and module.startswith(prefix + ".")):
                if len(prefix) > best:
                    best, index = len(prefix), i
    if index is None:
        raise KeyError(f"{module or 'qsight_pipeline'} is in no layer: add it to LAYERS")
    return index


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split(".")) if name else PACKAGE
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(module: str, is_package: bool, source: str) -> list[tuple[int, str]]:
    """``(line, module)`` for every module of the package that ``source`` imports, relative to the
    package (``from pkg import sub`` imports ``pkg.sub`` when ``sub`` is a module)."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
            found += [(node.lineno, name) for name in names if name.split(".")[0] == "qsight_pipeline"]
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = ["qsight_pipeline", *filter(None, package.split("."))]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            if base.split(".")[0] != "qsight_pipeline":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if _is_module(sub.partition(".")[2]) else base))
        elif (is_package and isinstance(node, ast.Constant) and isinstance(node.value, str)
              and _MODULE_PATH.fullmatch(node.value)):
            found.append((node.lineno, node.value))  # a lazy export's module path
    return [(line, name.partition(".")[2]) for line, name in found]


def upward(module: str, imports: list[tuple[int, str]]) -> list[str]:
    """The ``imports`` of ``module`` that go to a higher layer."""
    own = layer_of(module)
    return [
        f"{module or 'qsight_pipeline'}:{line}: imports {target} "
        f"({'/'.join(LAYERS[layer_of(target)]) or 'root'} is above {'/'.join(LAYERS[own]) or 'root'})"
        for line, target in imports
        if layer_of(target) > own and module not in COMPATIBILITY_MODULES
    ]


def upward_imports(module: str, is_package: bool, source: str) -> list[str]:
    """The imports of ``source`` (the text of ``module``) that go to a higher layer."""
    return upward(module, imported_modules(module, is_package, source))


def python_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@functools.cache
def package_imports() -> dict[str, list[tuple[int, str]]]:
    """Every module of the package and what it imports (parsed once for all tests)."""
    return {
        module_name(path): imported_modules(module_name(path), path.name == "__init__.py",
                                            path.read_text(encoding="utf-8"))
        for path in python_files()
    }


def test_every_module_is_in_a_layer():
    unplaced = []
    for path in python_files():
        try:
            layer_of(module_name(path))
        except KeyError as error:
            unplaced.append(str(error))
    assert unplaced == []
    assert len(python_files()) > 150  # the walk finds the package


def test_imports_only_go_down():
    offending = [found for module, imports in package_imports().items()
                 for found in upward(module, imports)]
    assert offending == []


def test_the_check_catches_a_planted_upward_import():
    """Self-check: the same function flags an upward import wherever it hides."""
    planted = {
        "module level": "from qsight_pipeline.training.guards import LossGuard\n",
        "function body": "def f():\n    from qsight_pipeline.models import hybrid\n    return hybrid\n",
        "relative": "from ..training import artifacts\n",
        "plain import": "import qsight_pipeline.kedro_app.run_config\n",
        "type checking": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from qsight_pipeline.inference.graph import InferenceGraph\n",
    }
    for where, source in planted.items():
        assert upward_imports("data.ingest", False, source), where
    # A lazy export in a package's __init__.py is an import too.
    assert upward_imports("data", True, 'EXPORTS = {"x": "qsight_pipeline.training.trainer"}\n')
    # Downward and same-layer imports pass; so does the finer layer of data.layouts under config.
    assert upward_imports("training.trainer", False, "from qsight_pipeline.data import guards\n") == []
    assert upward_imports("config.dataset", False, "from qsight_pipeline.data.layouts import x\n") == []
    assert upward_imports("data.layouts.base", False, "from qsight_pipeline.data import ingest\n")


def test_the_compatibility_modules_only_re_export_and_nothing_imports_them():
    for old, new in COMPATIBILITY_MODULES.items():
        path = PACKAGE.joinpath(*old.split(".")).with_suffix(".py")
        targets = {t for _, t in imported_modules(old, False, path.read_text(encoding="utf-8"))}
        assert targets == {new}
    importers = [f"{module}: {target}" for module, imports in package_imports().items()
                 for _, target in imports if target in COMPATIBILITY_MODULES]
    assert importers == []


@pytest.mark.parametrize("module", ["hybrid", "config"])
def test_a_module_name_resolves_to_its_own_layer(module):
    # ``from qsight_pipeline.models import hybrid`` is models.hybrid (models), not the package root.
    found = imported_modules("training.trainer", False, f"from qsight_pipeline.models import {module}\n")
    expected = f"models.{module}" if _is_module(f"models.{module}") else "models"
    assert found == [(1, expected)]


def test_the_torch_executor_imports_the_compilers_public_interface_only():
    compiler = PACKAGE / "models" / "quantum" / "torch_compiler.py"
    executor = PACKAGE / "models" / "quantum" / "torch_executor.py"
    public = None
    for node in ast.parse(compiler.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            public = set(ast.literal_eval(node.value))
    assert public, "torch_compiler.py declares its public interface in __all__"
    assert not {name for name in public if name.startswith("_")}
    imported = {
        alias.name
        for node in ast.walk(ast.parse(executor.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("torch_compiler")
        for alias in node.names
    }
    assert imported and imported <= public


def test_node_modules_take_core_types_only():
    """A ``pipelines/*/nodes.py`` works on the core's types (``training.run_config.RunConfig``);
    only the wiring (``pipeline.py``) uses the Kedro layer's shared nodes (``kedro_app``)."""
    offending = [
        f"{module}:{line}: {target}"
        for module, imports in package_imports().items()
        if module.startswith("pipelines.") and module.endswith(".nodes")
        for line, target in imports
        if layer_of(target) >= layer_of("kedro_app")
        and not target.startswith(module.rpartition(".")[0])
    ]
    assert offending == []
