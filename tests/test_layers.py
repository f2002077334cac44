"""The package's layout is its architecture: a Kedro layer on top of a core that never imports Kedro.

Read from the source with ``ast``, so an import hidden in a function body counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qsight_pipeline"

# The Kedro layer: the project's settings and registry, the pipelines, and kedro_app/.
KEDRO_LAYER = {"__main__.py", "settings.py", "pipeline_registry.py", "pipelines", "kedro_app"}
CORE = sorted(
    path.name
    for path in PACKAGE.iterdir()
    if path.name not in KEDRO_LAYER and path.name != "__pycache__"
    and (path.is_dir() or path.suffix == ".py")
)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``, at any depth; relative ones made absolute."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _python_files(name: str) -> list[Path]:
    path = PACKAGE / name
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def test_the_core_is_most_of_the_package_and_the_kedro_layer_is_named():
    assert {"data", "models", "training", "inference", "reporting", "study", "files", "config"} <= set(CORE)
    assert (PACKAGE / "kedro_app" / "hooks.py").is_file()
    # The package root holds only what Kedro or Python looks for there, and a few leaf modules.
    root_modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root_modules == [
        "__init__.py", "__main__.py", "constants.py", "errors.py", "lazy_exports.py",
        "pipeline_registry.py", "settings.py", "threads.py",
    ]


@pytest.mark.parametrize("name", CORE)
def test_the_core_never_imports_kedro_or_the_kedro_layer(name):
    offending = [
        f"{path.relative_to(PACKAGE)}:{line}: {module}"
        for path in _python_files(name)
        for line, module in _imports(path)
        if module == "kedro" or module.startswith(("kedro.", "kedro_datasets", "kedro_viz"))
        or module.startswith(("qsight_pipeline.kedro_app", "qsight_pipeline.pipelines"))
    ]
    assert offending == []


def test_no_node_module_imports_another_pipeline():
    offending = []
    for path in sorted((PACKAGE / "pipelines").rglob("*.py")):
        own = path.relative_to(PACKAGE / "pipelines").parts[0]
        for line, module in _imports(path):
            if module.startswith("qsight_pipeline.pipelines."):
                other = module.split(".")[2]
                if other != own:
                    offending.append(f"pipelines/{path.relative_to(PACKAGE / 'pipelines')}:{line}: {module}")
    assert offending == []
