"""The code stays as ARCHITECTURE.md describes it: tools declared once (the docs follow the
operation table), modules and functions of a readable size, honest ``__all__`` lists."""

from __future__ import annotations

import ast
import importlib
import re
import types
from pathlib import Path

import colaflow_mcp
from colaflow_mcp.domain.operations import OPERATIONS
from colaflow_mcp.domain.operations.docs import tool_tables

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(colaflow_mcp.__file__).parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
# Run by a tool, not imported: Alembic's environment script.
SCRIPTS = {"colaflow_mcp.store.migrations.env"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_docs_tool_tables_are_the_ones_the_operation_table_generates() -> None:
    text = (ROOT / "docs" / "mcp.md").read_text()
    found = re.search(r"<!-- tools:start -->\n(.*?)\n<!-- tools:end -->", text, re.S)
    assert found is not None, "docs/mcp.md lost its <!-- tools:start/end --> markers"
    assert found.group(1) == tool_tables(), (
        "docs/mcp.md's tool tables differ from the operation table: paste the output of "
        "`python -m colaflow_mcp.domain.operations.docs` between the markers")


def test_the_readme_names_exactly_the_tools_rest_adds_to_mcps() -> None:
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines()
               if line.startswith("| `POST /api/mcp/pending-changes` `{"))
    named = set(re.findall(r"`([a-z_]+)`", row.partition("plus")[2]))
    assert named == {op.name for op in OPERATIONS.values() if not op.mcp}


def test_no_module_or_function_is_too_long_to_read() -> None:
    too_long: list[str] = []
    for path in _modules():
        text = path.read_text()
        where = path.relative_to(PACKAGE.parent)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    too_long.append(f"{where}:{node.lineno} {node.name}(): {size} lines")
    assert too_long == [], "split by concern (STYLE.md point 9):\n" + "\n".join(too_long)


def test_all_lists_only_public_names_of_the_package() -> None:
    wrong: list[str] = []
    for path in _modules():
        name = _module_name(path)
        if name in SCRIPTS:
            continue
        module = importlib.import_module(name)
        for exported in getattr(module, "__all__", ()):
            value = getattr(module, exported, None)
            # A class or function must be ours (not an import such as ``timedelta``).
            defined_here = not isinstance(value, type | types.FunctionType) or (
                value.__module__.startswith("colaflow_mcp"))
            if (value is None or exported.startswith("_") or isinstance(value, types.ModuleType)
                    or not defined_here):
                wrong.append(f"{name}.__all__: {exported}")
    assert wrong == []
