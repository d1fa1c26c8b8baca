"""The library's size against the limits it keeps to: functions over 40 lines, modules over 300 lines.

``python scripts/measure_structure.py [gptviz]`` — counts source lines (docstrings and comments
included) with the ast module; exits 0 either way, it reports and does not judge.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

FUNCTION_LINES, MODULE_LINES = 40, 300


def sizes(root: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    functions, modules = [], []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        modules.append((len(text.splitlines()), str(path)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))
    return sorted(functions, reverse=True), sorted(modules, reverse=True)


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else Path(__file__).resolve().parents[1] / "gptviz")
    functions, modules = sizes(root)
    long = [f for f in functions if f[0] > FUNCTION_LINES]
    big = [m for m in modules if m[0] > MODULE_LINES]
    print(f"{len(functions)} functions in {len(modules)} modules under {root}")
    print(f"longest function: {functions[0][0]} lines ({functions[0][1]})")
    print(f"functions over {FUNCTION_LINES} lines: {len(long)}", *[f"  {n:4d} {where}" for n, where in long], sep="\n")
    print(f"modules over {MODULE_LINES} lines: {len(big)}", *[f"  {n:4d} {where}" for n, where in big], sep="\n")
    print("largest modules:", *[f"  {n:4d} {where}" for n, where in modules[:6]], sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
