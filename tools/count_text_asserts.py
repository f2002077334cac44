"""Count the test assertions that check free text (issue 32, item 6).

Free text is a string literal of two or more words (it holds white space once regex escapes are
undone): a sentence or a fragment of one, as opposed to a key name, file name or value. Counted:

- ``pytest.raises(..., match=TEXT)``, ``pytest.warns(..., match=TEXT)``, ``excinfo.match(TEXT)``;
- in an ``assert``, where ``x`` is a message, a log or a command's output (its source names
  ``str(...)``, ``message``, ``caplog``, ``stderr``, ``output``, ``error``, ``reasons``, ...: see
  ``MESSAGE``; a report page, a table or a returned value is not counted): ``TEXT in x`` /
  ``TEXT not in x``; ``x.startswith(TEXT)`` / ``.endswith``; ``x == TEXT`` where TEXT has four
  words or more; ``re.search(TEXT, ...)`` / ``re.match``.

A check on a key name (``match="dataset.root"``, ``"run.seed" in str(err)``) is not counted.

    python tools/count_text_asserts.py [tests or files ...] [--list]

Issue 32, item 6: 277 before (at tip bf58f2b), 136 after (branch asserts).
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


# The other side is a message, a log or a command's output (not a page, a table or a value).
MESSAGE = re.compile(r"str\(|repr\(|messages?\b|msg|caplog|\.text\b|std(err|out)|output|\bout\b|"
                     r"\berr\b|error|\.value\b|caught|excinfo|records?\b|getMessage|\blog|lines?\b|"
                     r"\.args\b|warn|reasons?\b|_chain")


def _message(node: ast.AST) -> bool:
    return bool(MESSAGE.search(ast.unparse(node)))


def _in_assert(node: ast.AST) -> list[ast.AST]:
    hits = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Compare):
            left = sub.left
            for op, right in zip(sub.ops, sub.comparators, strict=True):
                if isinstance(op, (ast.In, ast.NotIn)) and _free(left) and _message(right):
                    hits.append(sub)
                elif isinstance(op, (ast.Eq, ast.NotEq)) and (
                        (_free(left, 4) and _message(right)) or (_free(right, 4) and _message(left))):
                    hits.append(sub)
                left = right
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
            name = sub.func.attr
            if (name in ("startswith", "endswith") and sub.args and _free(sub.args[0])
                    and _message(sub.func.value)):
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
    roots = [Path(a) for a in argv if not a.startswith("--")] or [Path("tests")]
    paths = [p for r in roots for p in ([r] if r.is_file() else sorted(r.rglob("*.py")))]
    total = 0
    per_file = []
    for path in paths:
        hits = count(path)
        total += len(hits)
        if hits:
            per_file.append((len(hits), path, hits))
    for n, path, hits in sorted(per_file, reverse=True):
        sys.stdout.write(f"{n:4d} {path}\n")
        if "--list" in argv:
            for line, kind in hits:
                text = path.read_text(encoding="utf-8").splitlines()[line - 1].strip()
                sys.stdout.write(f"       {path}:{line} {kind}: {text[:150]}\n")
    sys.stdout.write(f"total {total}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
