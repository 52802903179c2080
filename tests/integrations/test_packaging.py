"""Import boundaries, and the examples run end to end."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_core_imports_no_framework() -> None:
    modules = imported_after("import rain_search; from rain_search.search import RainGenerator")
    assert not {"langchain_core", "llama_index"} & modules


def test_the_cli_and_the_adapters_import_no_server_framework() -> None:
    modules = imported_after("import rain_search.cli, rain_integrations.langchain")
    assert not {"fastapi", "uvicorn", "starlette"} & modules


def test_the_core_never_imports_its_adapters() -> None:
    """Not at run time, and not in its source (TYPE_CHECKING imports included)."""
    assert "rain_integrations" not in imported_after("import rain_search.cli, rain_search.spec")
    for path in sorted((ROOT / "rain_search").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            bad = [name for name in names if name.split(".")[0] == "rain_integrations"]
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_adapters_commands_join_the_rain_command() -> None:
    from rain_search.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"generate", "compare", "templates", "serve", "batch"} <= set(commands)


def test_each_adapter_imports_only_its_framework() -> None:
    assert "llama_index" not in imported_after("import rain_integrations.langchain")
    assert "langchain_core" not in imported_after("import rain_integrations.llama_index")


@pytest.mark.slow  # 30-40 s each on the embedded model; the docs pages cover the same calls
@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_example_runs(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
