"""Functions a newcomer can read: none in src/ over 60 lines or over 6 parameters.

Read from the source with ``ast``; a decorator counts as part of its function.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qsight_pipeline"
MAX_LINES = 60
MAX_PARAMETERS = 6
# scikit-learn needs every hyperparameter explicit in an estimator's __init__ (get_params).
ESTIMATORS = "models/estimators.py"


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path.relative_to(PACKAGE).as_posix(), node


def _parameters(node: ast.FunctionDef) -> list[str]:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [f"*{a.arg}" for a in (args.vararg, args.kwarg) if a is not None]
    return [name for name in names if name not in ("self", "cls")]


def test_no_function_is_over_sixty_lines():
    long = []
    for path, node in _functions():
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        lines = node.end_lineno - first + 1
        if lines > MAX_LINES:
            long.append(f"{path}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_no_function_takes_more_than_six_parameters():
    wide = set()
    for path, node in _functions():
        if len(_parameters(node)) > MAX_PARAMETERS:
            if path == ESTIMATORS and node.name == "__init__":
                continue
            wide.add(f"{path}:{node.name}")
    assert not wide, f"over {MAX_PARAMETERS} parameters: {sorted(wide)}"
