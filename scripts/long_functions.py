"""Every function over LIMIT lines (its def line to its last line, through ast) in the given files
or folders: python scripts/long_functions.py matrix config.py"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIMIT = 60


def long_functions(root: Path) -> list[str]:
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    found.append(f"{path}:{node.lineno}: {node.name} {lines} lines")
    return found


if __name__ == "__main__":
    report = [line for arg in sys.argv[1:] for line in long_functions(Path(arg))]
    print("\n".join(report) or f"no function over {LIMIT} lines")
    sys.exit(1 if report else 0)
