"""Every function over LIMIT lines in the given Python files or folders (ast: def line to last line)."""
import ast, sys
from pathlib import Path
LIMIT = 60
def report(paths):
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for f in files:
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > LIMIT:
                        print(f"{f}:{node.lineno}: {node.name} {n} lines")
report([Path(p) for p in sys.argv[1:]])
