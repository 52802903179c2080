"""Import boundaries, and the examples run end to end."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.side_by_side import run_side_by_side

ROOT = Path(__file__).resolve().parents[2]


PROBES = {
    # Each probe imports a superset of what its checks name, so "not imported here"
    # holds for every part of it.
    "core": "import rain_search, rain_search.cli, rain_search.spec; "
    "from rain_search.search import RainGenerator",
    "langchain": "import rain_search.cli, rain_integrations.langchain",
    "llama_index": "import rain_integrations.llama_index",
}


@pytest.fixture(scope="module")
def imported() -> dict[str, set[str]]:
    """Top-level packages each probe leaves in ``sys.modules`` (fresh interpreters)."""
    shown = "; import sys; print(' '.join(sorted(sys.modules)))"
    done = run_side_by_side({key: code + shown for key, code in PROBES.items()}, cwd=ROOT)
    for key, process in done.items():
        assert process.returncode == 0, f"{key}: {process.stderr[-2000:]}"
    return {key: {n.split(".")[0] for n in p.stdout.split()} for key, p in done.items()}


def test_core_imports_no_framework(imported) -> None:
    assert not {"langchain_core", "llama_index"} & imported["core"]


def test_the_cli_and_the_adapters_import_no_server_framework(imported) -> None:
    assert not {"fastapi", "uvicorn", "starlette"} & imported["langchain"]


def test_the_core_never_imports_its_adapters(imported) -> None:
    """Not at run time, and not in its source (TYPE_CHECKING imports included)."""
    assert "rain_integrations" not in imported["core"]
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


def test_each_adapter_imports_only_its_framework(imported) -> None:
    assert "llama_index" not in imported["langchain"]
    assert "langchain_core" not in imported["llama_index"]


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
