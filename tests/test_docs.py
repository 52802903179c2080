"""Every ```python block in docs/ and README.md runs, page by page, so the docs cannot rot.

Blocks of one page share a namespace and run in order, like a reader typing
them. A block whose first line is ``# not run: <reason>`` is skipped (it needs
something the reader supplies). Model calls use the embedded SmolLM2, with
every answer capped at :data:`ANSWER_CAP` tokens: the test checks that the code
runs as written, not what it answers, and full-length self-judged answers on
every page took a quarter of an hour on two cores.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
ANSWER_CAP = 1  # token: one step of the search, which is all the test needs


def python_blocks(page: Path) -> list[str]:
    return [b for b in BLOCK.findall(page.read_text()) if not b.startswith("# not run:")]


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    cap_answers(monkeypatch)
    share_models(monkeypatch)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(python_blocks(page), start=1):
        try:
            exec(compile(block, f"{page.name}:block{number}", "exec"), namespace)
        except Exception as exc:  # report which block of which page broke
            raise AssertionError(f"{page.name}, python block {number} failed: {exc!r}") from exc


LOADED: dict[str, tuple[object, object]] = {}
"""Models the pages loaded, by how they were asked for: loaded once for the whole run."""


def share_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages load the same embedded model again and again; the run loads it once.

    A page only reads its model (generates, judges), so sharing cannot change
    what a block does; it only saves the repeated loads.
    """
    from rain_search import models, search

    load = models.load_model

    def shared(model: object = None, **options: object) -> tuple[object, object]:
        key = repr((model, sorted(options.items())))
        if key not in LOADED:
            LOADED[key] = load(model, **options)  # type: ignore[arg-type]
        return LOADED[key]

    monkeypatch.setattr(models, "load_model", shared)
    monkeypatch.setattr(search, "load_model", shared)


def cap_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer (searched or plain) ends after :data:`ANSWER_CAP` tokens."""
    from rain_search.search import RainGenerator

    fit_context = RainGenerator.fit_context

    def capped(self: RainGenerator, prompt_tokens: int, max_new_tokens: int):
        budget, warnings = fit_context(self, prompt_tokens, max_new_tokens)
        return min(budget, ANSWER_CAP), warnings

    monkeypatch.setattr(RainGenerator, "fit_context", capped)


def test_docs_build_strict(tmp_path: Path) -> None:
    """`make docs` builds without warnings (broken references fail the build)."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    os.chdir(ROOT)
    build(load_config(str(ROOT / "mkdocs.yml"), site_dir=str(tmp_path / "site"), strict=True))


def test_configuration_page_covers_every_field() -> None:
    from rain_search.config import PRESETS, RainConfig

    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in [*RainConfig.model_fields, *PRESETS] if f"`{name}`" not in page]
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_templates_page_shows_every_builtin_in_full() -> None:
    from rain_search.templates import builtin_names, load_template

    page = " ".join((ROOT / "docs" / "templates.md").read_text().split())
    for name in builtin_names():
        template = load_template(name)
        for text in (template.instruction, template.question, template.good_option):
            assert " ".join(text.split()) in page, f"{name}: {text[:40]!r} not on the page"
