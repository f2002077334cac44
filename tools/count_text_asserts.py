"""Count the test assertions that check free text (issue 32, item 6).

Free text is a string literal of two or more words (it holds white space once regex escapes are
undone): a sentence or a fragment of one, as opposed to a key name, file name or value. Counted:

- ``pytest.raises(..., match=TEXT)``, ``pytest.warns(..., match=TEXT)``, ``excinfo.match(TEXT)``;
- in an ``assert``: ``TEXT in x`` / ``TEXT not in x``; ``x.startswith(TEXT)`` / ``.endswith``;
  ``re.search(TEXT, x)`` / ``re.match``; ``x == TEXT`` where TEXT has four words or more.

A check on a key name (``match="dataset.root"``, ``"run.seed" in str(err)``) is not counted.

    python tools/count_text_asserts.py [tests] [--list]
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path


def _text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):  # "a" + "b"
        left, right = _text(node.left), _text(node.right)
        return None if left is None or right is None else left + right
    return None


def _words(text: str) -> int:
    return len(re.sub(r"\\(.)", r"\1", text).split())


def _free(node: ast.AST, words: int = 2) -> bool:
    text = _text(node)
    return text is not None and _words(text) >= words


def _in_assert(node: ast.AST) -> list[ast.AST]:
    hits = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Compare):
            left = sub.left
            for op, right in zip(sub.ops, sub.comparators, strict=True):
                if isinstance(op, (ast.In, ast.NotIn)) and _free(left):
                    hits.append(sub)
                elif isinstance(op, (ast.Eq, ast.NotEq)) and (_free(left, 4) or _free(right, 4)):
                    hits.append(sub)
                left = right
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
            name = sub.func.attr
            if name in ("startswith", "endswith") and sub.args and _free(sub.args[0]):
                hits.append(sub)
            elif (name in ("search", "match", "fullmatch") and isinstance(sub.func.value, ast.Name)
                  and sub.func.value.id == "re" and sub.args and _free(sub.args[0])):
                hits.append(sub)
    return hits


def _match_kw(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name in ("raises", "warns", "deprecated_call"):
        return any(k.arg == "match" and _free(k.value) for k in node.keywords)
    if name == "match" and isinstance(func, ast.Attribute) and not (
            isinstance(func.value, ast.Name) and func.value.id == "re"):
        return bool(node.args) and _free(node.args[0])
    return False


def count(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            for hit in _in_assert(node.test):
                found.setdefault(hit.lineno * 1000 + hit.col_offset, "assert")
        elif isinstance(node, ast.Call) and _match_kw(node):
            found.setdefault(node.lineno * 1000 + node.col_offset, "match")
    return sorted((key // 1000, kind) for key, kind in found.items())


def main(argv: list[str]) -> int:
    root = Path(next((a for a in argv if not a.startswith("--")), "tests"))
    total = 0
    per_file = []
    for path in sorted(root.rglob("*.py")):
        hits = count(path)
        total += len(hits)
        if hits:
            per_file.append((len(hits), path, hits))
    for n, path, hits in sorted(per_file, reverse=True):
        print(f"{n:4d} {path}")
        if "--list" in argv:
            for line, kind in hits:
                print(f"       {path}:{line} {kind}")
    print(f"total {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
