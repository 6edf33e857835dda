"""The notebooks' code, read without running it: notebooks hold parameters, calls and plots, so
every import is used, every name is defined, and the shared data folder's layout is spelled in one
place (``VocTree``), not in the notebooks."""

import io
import re

import nbformat
import pytest
from pyflakes.api import check
from pyflakes.reporter import Reporter

from samcam.reproduce import NOTEBOOKS

def _names() -> list[str]:
    return sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def _code(name: str, parameters: bool = True) -> str:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and (parameters or "parameters" not in c.metadata.get("tags", []))]
    return "\n\n".join(c.source for c in cells)


@pytest.mark.parametrize("name", _names())
def test_a_notebook_imports_only_what_it_uses_and_uses_only_what_it_defines(name):
    out, err = io.StringIO(), io.StringIO()
    check(_code(name), name, Reporter(out, err))
    problems = [line for line in (out.getvalue() + err.getvalue()).splitlines() if line.strip()]
    assert problems == []


@pytest.mark.parametrize("name", _names())
def test_a_notebook_leaves_the_data_folder_layout_to_voctree(name):
    """Outside the parameters cell (whose comments and strings document the defaults)."""
    code_lines = [line.split("#", 1)[0] for line in _code(name, parameters=False).splitlines()]
    spelled = [line.strip() for line in code_lines if re.search(r"voc2012|JPEGImages|SegmentationClass|ImageSets", line)]
    assert spelled == []


def test_the_lint_catches_an_unused_import():
    out = io.StringIO()
    check("import os\nx = 1\n", "probe", Reporter(out, out))
    assert "'os' imported but unused" in out.getvalue()
