"""Size limits that keep gan/ readable (issue #33): no class over 200 lines, no function over 60, so a newcomer
can hold each one in their head. Declarative builders (the CLI's argument parser) are exempt."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_CLASS_LINES, MAX_FUNCTION_LINES = 200, 60
DECLARATIVE = {("gan/cli.py", "build_parser")}  # one add_argument per line: long, and reads fine


def oversized(path: Path) -> list[tuple[str, str, int]]:
    """(kind, name, lines) of every class and function in `path` over its limit."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        lines = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
        if isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
            out.append(("class", node.name, lines))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and lines > MAX_FUNCTION_LINES:
            out.append(("function", node.name, lines))
    return out


def test_no_class_or_function_in_gan_is_over_its_size_limit():
    found = [f"{rel}: {kind} {name} ({lines} lines)"
             for path in sorted((ROOT / "gan").glob("*.py")) for rel in [path.relative_to(ROOT).as_posix()]
             for kind, name, lines in oversized(path) if (rel, name) not in DECLARATIVE]
    assert not found, "split these by responsibility: " + "; ".join(found)


def test_the_measure_sees_a_long_function(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def long():\n" + "    x = 1\n" * 70 + "\n\ndef short():\n    return 1\n")
    assert oversized(f) == [("function", "long", 71)]
