"""The house rules that keep the package readable, checked on every test run.

* Size: every module of ``routewise/`` is under :data:`MAX_MODULE_LINES` lines and every
  function (``def`` / ``async def``: methods and nested functions included) is under
  :data:`MAX_FUNCTION_LINES` lines, counted from its ``def`` line to its last line (decorators
  excluded, docstring included).
* Layers: the import-linter contracts of ``pyproject.toml`` (``[tool.importlinter]``) hold, so
  ``pytest`` alone also checks that no module imports upward — not even inside a function
  body or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "routewise"

MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


def module_too_long(path: Path, limit: int = MAX_MODULE_LINES) -> str | None:
    """``"<file>: N lines"`` when the file has ``limit`` lines or more, else ``None``."""
    n = len(path.read_text(encoding="utf-8").splitlines())
    return f"{_name(path)}: {n} lines (limit: under {limit})" if n >= limit else None


def functions_too_long(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``"<file>:<line> <qualified name>: N lines"`` for each function of ``limit`` lines or
    more (``def`` line through ``end_lineno``; decorators are not part of the count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qualname = f"{prefix}{child.name}"
                assert child.end_lineno is not None
                n = child.end_lineno - child.lineno + 1
                if n >= limit:
                    found.append(f"{_name(path)}:{child.lineno} {qualname}: {n} lines")
                visit(child, f"{qualname}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def test_modules_are_under_800_lines() -> None:
    too_long = [m for p in _modules() if (m := module_too_long(p)) is not None]
    assert not too_long, "modules of 800 lines or more:\n" + "\n".join(too_long)


def test_functions_are_under_80_lines() -> None:
    too_long = [f for p in _modules() for f in functions_too_long(p)]
    assert not too_long, (
        f"functions of {MAX_FUNCTION_LINES} lines or more (def line to last line):\n"
        + "\n".join(too_long)
    )


def test_the_size_checks_count_methods_nested_functions_and_docstrings(tmp_path: Path) -> None:
    body = [f"x{i} = {i}" for i in range(76)]
    lines = [
        "import functools",  # 1
        "",
        "",
        "class C:",  # 4
        "    @functools.cache",  # 5: decorators are not counted
        "    async def method(self):",  # 6
        '        """Doc."""',  # 7
        "        def inner():",  # 8
        *(f"            {b}" for b in body),  # 9-84
        "            return 0",  # 85: inner is lines 8-85 = 78 lines
        "        return inner",  # 86: method is lines 6-86 = 81 lines
        "",
        "",
        "def short():",  # 89
        '    """Docstrings count."""',  # 90
        *(f"    {b}" for b in body),  # 91-166: short is lines 89-166 = 78 lines
    ]
    path = tmp_path / "scratch.py"
    path.write_text("\n".join(lines) + "\n")
    assert functions_too_long(path) == ["scratch.py:6 C.method: 81 lines"]
    assert functions_too_long(path, limit=78) == [
        "scratch.py:6 C.method: 81 lines",
        "scratch.py:8 C.method.<locals>.inner: 78 lines",
        "scratch.py:89 short: 78 lines",
    ]
    assert functions_too_long(path, limit=79) == ["scratch.py:6 C.method: 81 lines"]
    assert module_too_long(path) is None
    assert module_too_long(path, limit=166) == "scratch.py: 166 lines (limit: under 166)"
    assert module_too_long(path, limit=167) is None


def _lint_imports() -> list[str]:
    """The command that runs import-linter in this interpreter's environment."""
    script = Path(sys.executable).with_name("lint-imports")
    if script.is_file():
        return [str(script)]
    found = shutil.which("lint-imports")
    if found is None:
        pytest.fail("import-linter is not installed: pip install -e '.[dev]'")
    return [found]


def test_import_layers_hold() -> None:
    proc = subprocess.run(
        [*_lint_imports(), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (
        "import-linter contracts broken (see [tool.importlinter] in pyproject.toml):\n"
        + proc.stdout
        + proc.stderr
    )
