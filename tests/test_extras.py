"""Packaging: the version, optional parts named by their extra, the CLI's --version."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import rain_search
from rain_search.cli import main
from rain_search.errors import MissingExtra, RainError
from rain_search.extras import require
from tests.side_by_side import run_side_by_side

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_distributions(capsys) -> None:
    assert rain_search.__version__ == importlib.metadata.version("rain-search")
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"rain-search {rain_search.__version__}"


def test_package_data_ships_types_and_the_custom_generate_folder() -> None:
    folder = Path(rain_search.CUSTOM_GENERATE_DIR)
    assert (folder / "custom_generate" / "generate.py").is_file()
    assert (Path(rain_search.__file__).parent / "py.typed").is_file()


def test_a_missing_extra_names_the_pip_command() -> None:
    with pytest.raises(MissingExtra, match=r"pip install 'rain-search\[plot\]'") as caught:
        require("no_such_module_for_rain", "plot", "drawing")
    assert isinstance(caught.value, RainError) and isinstance(caught.value, ImportError)


MISSING = {
    # extra: (module made unimportable, as in an install without the extra; what then fails)
    "langchain": ("langchain_core", "import rain_integrations.langchain"),
    "llama-index": ("llama_index", "import rain_integrations.llama_index"),
    "agents": ("langchain", "from rain_integrations.langchain import RainGuardMiddleware"),
    "minilm": (
        "sentence_transformers",
        "from rain_search.embeddings import load_minilm; load_minilm()",
    ),
    "gguf": (
        "gguf",
        "from rain_search.models import _from_gguf, LoadOptions; from pathlib import "
        "Path; _from_gguf(Path('pyproject.toml'), LoadOptions())",
    ),
}


def without(blocked: str, statement: str) -> str:
    return (
        f"import sys\nsys.modules[{blocked!r}] = None\n"
        "import importlib.util\n_find = importlib.util.find_spec\n"
        f"importlib.util.find_spec = lambda n, *a: None if n == {blocked!r} else _find(n, *a)\n"
        f"{statement}\n"
    )


@pytest.fixture(scope="module")
def probes() -> dict[str, subprocess.CompletedProcess[str]]:
    return run_side_by_side({extra: without(*case) for extra, case in MISSING.items()}, cwd=ROOT)


@pytest.mark.parametrize("extra", MISSING)
def test_each_optional_part_names_its_extra(extra, probes) -> None:
    done = probes[extra]
    assert done.returncode != 0
    assert f"pip install 'rain-search[{extra}]'" in done.stderr


def test_explain_image_without_matplotlib_is_one_line(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["generate", "Hi", "--explain-image", str(tmp_path / "t.png"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("rain: error:")
    assert "pip install 'rain-search[plot]'" in err and "Traceback" not in err
