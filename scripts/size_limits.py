"""The code's size limits, checked: every module over MODULE_LIMIT lines and every function over
FUNCTION_LIMIT lines (its def line to its last line, through ast) in the given files or folders.
`tox -e lint` runs it over the package; exit 1 when anything is over.

    python scripts/size_limits.py .      # the package: the checkout less tests, benchmarks, scripts...
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MODULE_LIMIT = 400
FUNCTION_LIMIT = 50
# Folders of a checkout that are not the package (the root is the package: pyproject's package-dir).
NOT_PACKAGE = {"tests", "benchmarks", "scripts", "results", "build", "dist", "__pycache__"}


def over_limits(root: Path) -> list[str]:
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*.py")
        if not any(part in NOT_PACKAGE or part.startswith(".") for part in p.relative_to(root).parts[:-1]))
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MODULE_LIMIT:
            found.append(f"{path}: {len(text.splitlines())} lines (module limit {MODULE_LIMIT})")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > FUNCTION_LIMIT:
                    found.append(f"{path}:{node.lineno}: {node.name} {lines} lines (function limit {FUNCTION_LIMIT})")
    return found


if __name__ == "__main__":
    report = [line for arg in sys.argv[1:] for line in over_limits(Path(arg))]
    print("\n".join(report) or f"no module over {MODULE_LIMIT} lines, no function over {FUNCTION_LIMIT}")
    sys.exit(1 if report else 0)
