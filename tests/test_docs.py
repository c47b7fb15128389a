"""Every Python block in the README and docs/ runs as written (blocks of a page share one
namespace, in order)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _pages_with_code():
    return [p for p in PAGES if p.exists() and BLOCK.search(p.read_text())]


def test_docs_have_runnable_snippets():
    names = {p.name for p in _pages_with_code()}
    assert {"timm.md", "dense.md", "distillation.md", "custom_adapters.md", "huggingface.md"} <= names


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: p.name)
def test_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(BLOCK.findall(page.read_text())):
        exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
