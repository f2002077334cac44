"""Imports inside functions are kept only where they have a reason, and each says which.

A function-body import is justified when:
- it imports an optional dependency (an extra of pyproject.toml, e.g. qiskit, wandb, onnx), or
  sits in ``try: ... except ImportError`` (a guard for one);
- its module is loaded at ``kedro`` start-up and the import would load something start-up does
  not (measured in a fresh interpreter: ``import settings``, then ``register_pipelines()``, then
  the run's catalog);
- or hoisting it would close an import cycle: the module it imports imports this one back.

Every such import carries a ``# lazy: <reason>`` comment, on its line or above its block.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "qsight_pipeline"
MARK = "# lazy:"
# Distribution names whose import name differs from the name with "-" as "_".
IMPORT_NAMES = {"grad-cam": "pytorch_grad_cam"}

START_UP = """
import json, sys
import qsight_pipeline.settings  # noqa: F401
phases = {"settings": sorted(sys.modules)}
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
bootstrap_project(sys.argv[1])
from kedro.framework.project import pipelines
dict(pipelines)
phases["registry"] = sorted(sys.modules)
with KedroSession.create(project_path=sys.argv[1]) as session:
    catalog = session.load_context().catalog
    for name in catalog.keys():
        catalog[name]  # Kedro creates datasets lazily: import every dataset's class now
phases["run"] = sorted(sys.modules)
print(json.dumps(phases))
"""


@dataclass(frozen=True)
class LazyImport:
    path: Path
    module: str
    function: str
    node: ast.Import | ast.ImportFrom
    in_import_guard: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.node.lineno} ({self.function})"

    def targets(self) -> list[str]:
        """The modules this import loads (``from pkg import sub`` loads ``pkg.sub``)."""
        if isinstance(self.node, ast.Import):
            return [alias.name for alias in self.node.names]
        base = _absolute(self.module, self.path.name == "__init__.py", self.node.level,
                         self.node.module or "")
        return [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base
                for a in self.node.names]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def _absolute(module: str, is_package: bool, level: int, name: str) -> str:
    if level == 0:
        return name
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, name] if name else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _guards_import_error(handler: ast.ExceptHandler) -> bool:
    names = [handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
               for n in names)


def lazy_imports() -> list[LazyImport]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            guarded: set[int] = set()
            for node in ast.walk(function):
                if isinstance(node, ast.Try) and any(map(_guards_import_error, node.handlers)):
                    guarded |= {id(n) for n in ast.walk(ast.Module(body=node.body, type_ignores=[]))}
            for node in _own_statements(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    found.append(LazyImport(path, _module_name(path), function.name, node,
                                            id(node) in guarded))
    return found


def _own_statements(function: ast.AST):
    """The statements of ``function``, not those of the functions nested in it."""
    for child in ast.iter_child_nodes(function):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        yield child
        yield from _own_statements(child)


def reason(item: LazyImport) -> str | None:
    """The ``# lazy:`` reason of an import: on its first line, or the comment above its block
    (the import statements and blank lines directly above it)."""
    lines = item.path.read_text(encoding="utf-8").splitlines()
    first = lines[item.node.lineno - 1]
    if MARK in first:
        return first.split(MARK, 1)[1].strip()
    import_lines = {n for other in ALL if other.path == item.path
                    for n in range(other.node.lineno, other.node.end_lineno + 1)}
    row = item.node.lineno - 1  # 1-based: the line above
    while row >= 1 and (row in import_lines or not lines[row - 1].strip()):
        row -= 1
    above = lines[row - 1].strip() if row >= 1 else ""
    return above[len(MARK):].strip() if above.startswith(MARK) else None


ALL = lazy_imports()


def optional_packages() -> set[str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = set()
    for extra, requirements in extras.items():
        if extra in ("dev", "all"):
            continue
        for requirement in requirements:
            name = re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0]
            if name != "qsight_pipeline":
                names.add(IMPORT_NAMES.get(name, name.replace("-", "_")))
    return names


def test_the_optional_packages_are_read_from_pyproject():
    optional = optional_packages()
    assert {"qiskit", "qiskit_aer", "wandb", "onnx", "onnxruntime", "pytorch_grad_cam"} <= optional
    assert not {"torch", "numpy", "pandas", "mlflow", "matplotlib", "kedro"} & optional


def test_every_function_body_import_says_why():
    assert len(ALL) > 50  # the walk finds them (a broken walk would pass with none)
    unexplained = [item.where for item in ALL if not reason(item)]
    assert unexplained == [], f"function-body imports without a `{MARK} <reason>` comment"


def _imports_back(target: str, module: str) -> bool:
    """``target``'s own top-level imports load ``module`` (or a submodule of that package)."""
    path = PACKAGE.parent.joinpath(*target.split("."))
    path = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == module or node.module.startswith(module + "."):
                return True
    return False


@pytest.mark.slow
def test_each_function_body_import_has_a_real_reason():
    out = subprocess.run([sys.executable, "-c", START_UP, str(ROOT)], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    phases = {name: set(modules) for name, modules in json.loads(out.splitlines()[-1]).items()}
    # Start-up, the run's catalog and its datasets included, loads neither torch nor matplotlib.
    assert not {"torch", "matplotlib", "timm", "qiskit"} & phases["run"]
    optional = optional_packages()
    unjustified = []
    for item in ALL:
        loaded_with = next((p for p in ("settings", "registry", "run") if item.module in phases[p]), None)
        for target in item.targets():
            if item.in_import_guard or target.split(".")[0] in optional:
                continue
            if loaded_with and target not in phases[loaded_with]:
                continue  # start-up: kedro loads this module, and the import would load more
            if "import cycle" in (reason(item) or "") and _imports_back(target, item.module):
                continue
            unjustified.append(f"{item.where}: {target}")
    assert unjustified == [], "move these imports to the top of their module"
